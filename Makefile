# One entry point: `make dev` sets up .venv and builds the extension,
# `make test` runs every test, `make lint` every gate, `make bench` the benchmarks.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: dev pyln build wheel wheel-test test test-rust test-python lint fmt bench bench-core demo fuzz fuzz-build interop

# pyln-proto (Core Lightning's independent BOLT #8 implementation) and
# pyln-client (its gossip_store reader, Gossmap) for the interop tests. They
# ship a fork of coincurve under the same import name, so they get a venv of
# their own; tests/pyln_peer.py and tests/gossmap_probe.py run there as
# subprocesses. pyln-client 26.6.9 is the release matching pyln-proto 26.6.9
# (it also pulls pyln-bolt7).
PYLN_VENV ?= .venv-pyln
export LNGOSSIP_PYLN_PYTHON ?= $(abspath $(PYLN_VENV))/bin/python

dev:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"

pyln:
	$(PY) -m venv $(PYLN_VENV)
	$(PYLN_VENV)/bin/pip install -q "pyln-proto==26.6.9" "pyln-client==26.6.9"

build:
	$(BIN)/maturin develop --release

# One abi3 wheel for every CPython >= 3.11 (pyo3's abi3-py311), in target/wheels.
wheel:
	rm -rf target/wheels
	$(BIN)/maturin build --release --locked -o target/wheels

# The wheel installed into a fresh venv and run with a PATH holding that venv
# only (no cargo, no rustc): what a user without a Rust toolchain gets.
WHEEL_VENV ?= target/wheel-venv
wheel-test: wheel
	rm -rf $(WHEEL_VENV)
	$(PY) -m venv $(WHEEL_VENV)
	$(WHEEL_VENV)/bin/pip install -q target/wheels/lngossip-*-abi3-*.whl
	env -i HOME="$$HOME" PATH="$(abspath $(WHEEL_VENV))/bin" /bin/sh -c '\
		! command -v cargo && ! command -v rustc && \
		lngossip ingest --no-progress --json ../shared/data/real/cln/cln_gossip_store-part1+2 \
			> target/wheel-ingest.json && \
		lngossip demo --in-process --no-progress --channels 500 > target/wheel-demo.txt'
	$(PY) -c 'import json, sys; d = json.load(open("target/wheel-ingest.json")); n = sum(v["accepted"] for v in d["decisions"].values()); print("wheel-test: ingest accepted", n); sys.exit(n == 0)'
	grep -q accepted target/wheel-demo.txt
	@echo "wheel-test: ok (no cargo on PATH)"

test: test-rust test-python

test-rust:
	cargo test -p lngossip-core --locked

test-python:
	$(BIN)/python -m pytest -q

# Coverage-guided fuzzing (libFuzzer, from the libfuzzer-sys crate) of every
# Rust parser of untrusted bytes: fuzz/fuzz_targets/{wire,frame,store,pipeline}.rs.
# Built on the stable toolchain: the SanitizerCoverage instrumentation that
# cargo-fuzz asks for is a stable codegen option (-C passes, -C llvm-args);
# only cargo-fuzz's AddressSanitizer needs nightly, and the core forbids
# unsafe code. With a nightly toolchain and cargo-fuzz, `cd fuzz && cargo
# +nightly fuzz run wire` runs the same targets under ASan.
# `make fuzz FUZZ_SECONDS=600` runs each target that long (default 60 s).
FUZZ_SECONDS ?= 60
FUZZ_HOST := $(shell rustc -vV | sed -n 's/^host: //p')
FUZZ_RUSTFLAGS := -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
	-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
	-Cllvm-args=-sanitizer-coverage-pc-table \
	-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing

fuzz-build:
	RUSTFLAGS="$(FUZZ_RUSTFLAGS)" cargo build --release --locked \
		--manifest-path fuzz/Cargo.toml --target-dir target/fuzz --target $(FUZZ_HOST)

fuzz: fuzz-build
	$(BIN)/python fuzz/run.py $(FUZZ_SECONDS)

# The LDK (rust-lightning) interop binaries: ldk-peer for
# tests/test_interop_ldk.py and rgs-apply (LDK's Rapid Gossip Sync consumer)
# for tests/test_rgs_reader.py. A Cargo project of its own (tests/interop/ldk,
# its own Cargo.lock), built once into target/interop; cargo keeps it cached.
interop:
	cargo build --release --locked --manifest-path tests/interop/ldk/Cargo.toml --target-dir target/interop

lint:
	cargo fmt --all --check
	cargo fmt --all --check --manifest-path fuzz/Cargo.toml
	cargo fmt --all --check --manifest-path tests/interop/ldk/Cargo.toml
	cargo clippy --workspace --all-targets --locked -- -D warnings
	cargo clippy --manifest-path fuzz/Cargo.toml --target-dir target/fuzz --locked -- -D warnings
	cargo clippy --manifest-path tests/interop/ldk/Cargo.toml --target-dir target/interop --release --locked -- -D warnings
	$(BIN)/ruff check python tests benches fuzz
	$(BIN)/ruff format --check python tests benches fuzz
	$(BIN)/mypy
	$(BIN)/python -m mypy.stubtest lngossip._core

fmt:
	cargo fmt --all
	$(BIN)/ruff format python tests benches fuzz
	$(BIN)/ruff check --fix python tests benches fuzz

bench:
	$(BIN)/python -m pytest benches --benchmark-enable -s -q -p no:randomly

bench-core:
	cargo bench -p lngossip-core --bench hot_paths

demo:
	$(BIN)/lngossip demo
