"""Run lngossip's libFuzzer targets (built by ``make fuzz-build``) for a given
time each, seeded from ``../shared/data``, and print what they did.

Usage: ``python fuzz/run.py SECONDS [TARGET ...]`` (all four by default).

For each target this:

1. writes seeds made from the real gossip in ``../shared/data`` (never
   copied into the repository) into ``target/fuzz-corpus/seeds/TARGET``;
2. replays every input in ``fuzz/regressions/TARGET`` (crashes found
   earlier, kept as regression tests): each must run clean;
3. fuzzes for SECONDS with the corpus in ``target/fuzz-corpus/TARGET``
   (kept between runs, so coverage accumulates);
4. prints executions, executions per second, edges covered (libFuzzer's
   ``cov``), features (``ft``), corpus size and peak RSS.

A crash leaves its input in ``target/fuzz-artifacts/TARGET/`` and makes the
run exit 1: minimise it, add it to ``fuzz/regressions/TARGET`` and fix it.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("LNGOSSIP_DATA", ROOT.parent / "shared" / "data"))
TARGETS = ("wire", "frame", "store", "pipeline")
# the frame target's fixed keys (fuzz_targets/frame.rs)
FRAME_KEY, FRAME_CK = b"\x96" * 32, b"\x91" * 32


@functools.cache
def _host() -> str:
    out = subprocess.run(["rustc", "-vV"], capture_output=True, text=True, check=True).stdout
    return out.split("host: ")[1].split()[0]


def binary(target: str) -> Path:
    return ROOT / "target" / "fuzz" / _host() / "release" / target


@functools.cache
def real_messages(limit: int) -> list[bytes]:
    """Distinct real messages of every type from the lnresearch and CLN files."""
    from lngossip.readers import iter_messages

    files = sorted((DATA / "real" / "lnresearch").glob("*.gsp"))[:3]
    files.append(DATA / "real" / "cln" / "cln_gossip_store-part1")
    by_type: dict[bytes, list[bytes]] = {}
    seen: set[bytes] = set()
    for f in files:
        for m in iter_messages(f):
            if m not in seen and len(by_type.setdefault(m[:2], [])) < limit // 3:
                seen.add(m)
                by_type[m[:2]].append(m)
    return [m for ms in by_type.values() for m in ms]


def write_seeds(target: str, out: Path) -> int:
    from lngossip.net.transport import CipherState

    out.mkdir(parents=True, exist_ok=True)
    msgs = real_messages(300)
    seeds: list[bytes] = []
    if target == "wire":
        seeds = msgs
    elif target == "frame":
        # [read size][messages separated by 0xff] 0xfe [garbage: frames made
        # with another key]
        other = CipherState(b"\x01" * 32, FRAME_CK)
        for i in range(0, 40, 4):
            seed = bytes([1 + i * 6]) + b"\xff".join(msgs[i : i + 4])
            if i % 8:
                m = msgs[i]
                seed += b"\xfe" + other.encrypt(b"", len(m).to_bytes(2, "big"))
                seed += other.encrypt(b"", m)
            seeds.append(seed)
    elif target == "store":
        cln = DATA / "real" / "cln"
        seeds = [p.read_bytes() for p in sorted(cln.iterdir())]
        from lngossip import Pipeline

        with tempfile.TemporaryDirectory() as d:
            p = Pipeline(threads=1, store=Path(d) / "gossip_store")
            for m in msgs:
                p.submit(0, m)
            p.process(100_000)
            p.sync_store()
            del p
            seeds.append((Path(d) / "gossip_store").read_bytes())
    elif target == "pipeline":
        for start in range(0, len(msgs), 40):
            recs = bytearray(b"\x00")
            for j, m in enumerate(msgs[start : start + 40]):
                recs += bytes([j % 3]) + len(m).to_bytes(2, "big") + m
                if j % 10 == 9:
                    recs += b"\xff\x00\x00"
            seeds.append(bytes(recs))
    for i, s in enumerate(seeds):
        (out / f"seed-{i:04d}").write_bytes(s)
    return len(seeds)


STATUS = re.compile(r"#(\d+)\s+(?:DONE|pulse|NEW|REDUCE|INITED)\s+cov: (\d+) ft: (\d+) corp: (\d+)")


def run(target: str, seconds: int) -> dict[str, str]:
    exe = binary(target)
    if not exe.exists():
        sys.exit(f"{exe} is missing: run `make fuzz-build` first")
    seeds = ROOT / "target" / "fuzz-corpus" / "seeds" / target
    corpus = ROOT / "target" / "fuzz-corpus" / target
    artifacts = ROOT / "target" / "fuzz-artifacts" / target
    corpus.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    n_seeds = write_seeds(target, seeds)
    regressions = sorted((ROOT / "fuzz" / "regressions" / target).glob("*"))
    if regressions:
        r = subprocess.run([str(exe), *map(str, regressions)], capture_output=True, text=True)
        if r.returncode != 0:
            sys.stderr.write(r.stderr[-4000:])
            sys.exit(f"{target}: a regression input fails again")
    r = subprocess.run(
        [
            str(exe),
            f"-max_total_time={seconds}",
            "-print_final_stats=1",
            "-rss_limit_mb=2048",
            "-max_len=70000",
            f"-artifact_prefix={artifacts}/",
            str(corpus),
            str(seeds),
        ],
        capture_output=True,
        text=True,
    )
    log = r.stderr
    if r.returncode != 0:
        sys.stderr.write(log[-6000:])
        sys.exit(f"{target}: the fuzzer found a crash (input in {artifacts})")
    last = STATUS.findall(log)[-1]
    stats = dict(re.findall(r"stat::(\w+):\s+(\d+)", log))
    edges = re.search(r"Loaded \d+ modules\s+\((\d+) inline 8-bit counters\)", log)
    return {
        "target": target,
        "seconds": str(seconds),
        "seeds": str(n_seeds),
        "regressions": str(len(regressions)),
        "execs": stats.get("number_of_executed_units", last[0]),
        "execs/s": stats.get("average_exec_per_sec", "?"),
        "cov": last[1],
        "of edges": edges.group(1) if edges else "?",
        "ft": last[2],
        "corpus": last[3],
        "peak MB": stats.get("peak_rss_mb", "?"),
    }


def main() -> None:
    if len(sys.argv) < 2 or not sys.argv[1].isdigit():
        sys.exit(__doc__)
    seconds = int(sys.argv[1])
    targets = sys.argv[2:] or list(TARGETS)
    rows = [run(t, seconds) for t in targets]
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for row in rows:
        print("| " + " | ".join(row[c] for c in cols) + " |")


if __name__ == "__main__":
    main()
