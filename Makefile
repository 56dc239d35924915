# One entry point: `make dev` sets up .venv and builds the extension,
# `make test` runs every test, `make lint` every gate, `make bench` the benchmarks.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: dev pyln build test test-rust test-python lint fmt bench bench-core demo

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

test: test-rust test-python

test-rust:
	cargo test -p lngossip-core --locked

test-python:
	$(BIN)/python -m pytest -q

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
	$(BIN)/ruff check python tests benches
	$(BIN)/ruff format --check python tests benches
	$(BIN)/mypy
	$(BIN)/python -m mypy.stubtest lngossip._core

fmt:
	cargo fmt --all
	$(BIN)/ruff format python tests benches
	$(BIN)/ruff check --fix python tests benches

bench:
	$(BIN)/python -m pytest benches --benchmark-enable -s -q -p no:randomly

bench-core:
	cargo bench -p lngossip-core --bench hot_paths

demo:
	$(BIN)/lngossip demo
