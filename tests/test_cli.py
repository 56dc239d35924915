"""The command line as a user runs it: ``ingest`` on the real files,
``demo`` (TCP and in process), ``serve`` + ``sync`` between two processes,
and clear errors for bad input."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from lngossip import readers
from lngossip.net.transport import Keys
from tests.conftest import CLN_STORE, LNRESEARCH, needs_data, topology

LNGOSSIP = [sys.executable, "-m", "lngossip"]


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LNGOSSIP, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@needs_data
def test_ingest_real_files_json() -> None:
    out = _run("ingest", *map(str, LNRESEARCH), str(CLN_STORE), "--json")
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert d["decisions"]["channel_announcement"]["accepted"] == 115
    assert d["signatures_verified"] > 0
    assert d["resyncs"] == 13 and d["skipped_bytes"] > 0
    for key in ("elapsed_s", "peak_rss_bytes", "queue_high_water_bytes"):
        assert d[key] > 0
    assert all(v["invalid_signature"] == 0 for v in d["decisions"].values())


@needs_data
def test_ingest_table_peers_and_out(tmp_path: Path) -> None:
    out_file = tmp_path / "accepted.gsp"
    out = _run("ingest", str(LNRESEARCH[0]), "--peers", "3", "--out", str(out_file))
    assert out.returncode == 0, out.stderr
    assert "channel_update" in out.stdout and "duplicate" in out.stdout
    written = list(readers.iter_messages(out_file))
    assert written and len(written) == len(set(written))


def test_demo_tcp_and_in_process() -> None:
    for extra in ([], ["--in-process"]):
        out = _run("demo", "--channels", "300", "--json", *extra)
        assert out.returncode == 0, out.stderr
        d = json.loads(out.stdout)["decisions"]
        assert d["channel_announcement"]["accepted"] == 300
        assert d["channel_update"]["accepted"] == 600
        assert d["channel_announcement"]["invalid_signature"] == 1
        assert d["channel_update"]["invalid_signature"] == 2
        assert sum(v["malformed"] for v in d.values()) >= 4


def test_errors_are_clear() -> None:
    out = _run("ingest", "/nonexistent/file.gsp")
    assert out.returncode == 2 and "no such file" in out.stderr
    assert "Traceback" not in out.stderr
    out = _run("sync", "not-a-peer")
    assert out.returncode == 2 and "NODE_ID@HOST:PORT" in out.stderr
    out = _run("sync", "02" + "11" * 32 + "@127.0.0.1:1")  # not a point on the curve
    assert out.returncode == 2 and "NODE_ID@HOST:PORT" in out.stderr
    out = _run("sync", Keys().node_id.hex() + "@127.0.0.1:1", "--until-idle", "1")
    assert out.returncode == 2 and "no peer could be reached" in out.stderr


@needs_data
def test_serve_and_sync_between_two_processes(tmp_path: Path) -> None:
    msgs = topology(20_000)
    src = tmp_path / "subset.gsp"
    with readers.GspWriter(src) as w:
        w.write_all(msgs)
    key = tmp_path / "node.key"
    serve = subprocess.Popen(
        [
            *LNGOSSIP,
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--gossip",
            str(src),
            "--key-file",
            str(key),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert serve.stdout is not None
        address = serve.stdout.readline().strip()
        assert "@127.0.0.1:" in address, serve.stderr.read() if serve.stderr else ""
        assert key.exists() and oct(key.stat().st_mode & 0o777) == "0o600"
        synced = tmp_path / "synced.gsp"
        out = _run(
            "sync",
            address,
            "--policy",
            "archive",
            "--until-idle",
            "1",
            "--out",
            str(synced),
            "--json",
        )
        assert out.returncode == 0, out.stderr
        d = json.loads(out.stdout)
        assert d["signatures_verified"] == sum(4 if m[:2] == b"\x01\x00" else 1 for m in msgs)
        assert set(readers.iter_messages(synced)) == set(msgs)
    finally:
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=30) == 0
        if serve.stdout:
            serve.stdout.close()
        if serve.stderr:
            serve.stderr.close()
