"""Helpers shared by the tests and the benchmarks, one shape each: node
keys by label, a node of the test and the runner that cleans up after it,
``lngossip serve`` as a process (start, read its address, stop), a peer
that says hello, a hand-written peer on loopback, and the RSS of a
process. Fixtures and the shared data live in :mod:`tests.conftest`."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from lngossip import gen
from lngossip.engine import PipelineLike, make_pipeline
from lngossip.net import messages as bolt
from lngossip.net.node import GossipNode, NodeConfig
from lngossip.net.transport import Connection, Keys, TransportError, accept, connect
from lngossip.wire import MAINNET_CHAIN_HASH

#: The command line of ``lngossip`` in this interpreter.
LNGOSSIP = [sys.executable, "-m", "lngossip"]
MIB = 1 << 20


def keys(label: str) -> Keys:
    """The node keys of ``label`` (the same for the same label)."""
    return Keys(hashlib.sha256(label.encode()).digest())


def split(address: str) -> tuple[bytes, str, int]:
    """``NODE_ID@HOST:PORT`` as ``(node_id, host, port)``."""
    node_hex, hp = address.split("@")
    host, port = hp.rsplit(":", 1)
    return bytes.fromhex(node_hex), host, int(port)


# -- nodes in process ----------------------------------------------------------------


#: the nodes the running test made, closed by run() if the test fails
_made: list[GossipNode] = []


async def make_node(label: str, *, serves: PipelineLike | None = None, **cfg: Any) -> GossipNode:
    """A listening node (``node.addr``: its ``(host, port)``, ``node.address``:
    its ``NODE_ID@HOST:PORT``); ``serves``: a loaded pipeline (shared by
    serving nodes); ``pipeline``: keyword arguments of a new one; the rest
    is its :class:`NodeConfig`."""
    pipeline_kw = cfg.pop("pipeline", {})
    pipeline = serves or make_pipeline("rust", policy="archive", threads=2, **pipeline_kw)
    n = GossipNode(keys(label), pipeline, config=NodeConfig(**cfg))
    host, port = await n.listen("127.0.0.1", 0)
    n.addr = (host, port)  # type: ignore[attr-defined]
    n.address = f"{n.node_id.hex()}@{host}:{port}"  # type: ignore[attr-defined]
    _made.append(n)
    return n


def run(body: Callable[[], Awaitable[None]], timeout: float = 600.0) -> None:
    """Run the test's ``body`` in a new event loop within ``timeout``
    seconds; if it fails, the nodes it made with :func:`make_node` are
    closed (no sockets left to fail the next test); when it ends, nothing
    it started may be left running."""

    async def main() -> None:
        _made.clear()
        try:
            async with asyncio.timeout(timeout):
                await body()
        except BaseException:
            for n in _made:
                with contextlib.suppress(Exception):
                    await n.close(1)
            raise
        finally:
            _made.clear()
        # nothing of ours is left running
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert not others, others

    asyncio.run(main())


async def until(cond: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Wait until ``cond()`` holds; fail after ``timeout`` seconds."""
    t0 = asyncio.get_running_loop().time()
    while not cond():
        if asyncio.get_running_loop().time() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what or cond}")
        await asyncio.sleep(0.005)


# -- peers by hand -------------------------------------------------------------------


async def hello(
    address: str, label: str, init: bytes | None = None, *, src: str | None = None
) -> Connection:
    """Connect to ``address`` as the peer ``label`` (from address ``src``)
    and exchange ``init`` (``init``: ours, if not the default); the peer's
    init is read."""
    node_id, host, port = split(address)
    local = (src, 0) if src is not None else None
    conn = await connect(host, port, keys(label), node_id, local_addr=local)
    await conn.send(init or bolt.Init(networks=[MAINNET_CHAIN_HASH]).encode())
    while bolt.message_type(await conn.recv()) != bolt.INIT:
        pass
    return conn


async def send_and_confirm(address: str, msg: bytes) -> None:
    """Connect to ``address`` as a peer, send ``msg``, and wait until the
    node has read it (a pong to a later ping)."""
    conn = await hello(address, "attacker")
    try:
        await conn.send(msg)
        await conn.send(bolt.encode_ping(4))
        while bolt.message_type(await conn.recv()) != bolt.PONG:
            pass
    finally:
        await conn.close()


def forged_announcement(ann: bytes) -> bytes:
    """The same ``short_channel_id`` as the ``channel_announcement`` ``ann``,
    signed with four other valid keys."""
    (scid,) = struct.unpack_from(">Q", ann, 258 + 2 + 32)
    k = [gen.private_key("attacker", i) for i in range(4)]
    return gen.channel_announcement(scid, k[0], k[1], k[2], k[3])


async def closed_by_peer(conn: Connection, within: float = 30.0) -> list[int]:
    """Read until the peer closes the connection; the message types read."""
    msg_types: list[int] = []
    with contextlib.suppress(TransportError, OSError):
        async with asyncio.timeout(within):
            while True:
                msg_types.append(bolt.message_type(await conn.recv()))
    await conn.close()
    return msg_types


@contextlib.asynccontextmanager
async def fake_peer(
    server_keys: Keys, handle: Callable[[Connection], Awaitable[None]]
) -> AsyncIterator[int]:
    """A hand-written peer on loopback: ``handle`` gets each accepted
    connection; on exit every handler is cancelled and every socket closed.
    Yields the port."""
    tasks: set[asyncio.Task[None]] = set()

    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        me = asyncio.current_task()
        assert me is not None
        tasks.add(me)
        try:
            c = await accept(r, w, server_keys)
            await handle(c)
        except (TransportError, OSError, asyncio.CancelledError):
            pass
        finally:
            w.close()
            tasks.discard(me)

    srv = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield srv.sockets[0].getsockname()[1]
    finally:
        srv.close()
        for t in list(tasks):
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await srv.wait_closed()


# -- lngossip serve as a process -----------------------------------------------------


class Served:
    """A running ``lngossip serve``: its process, address and stderr, read
    as it comes (a log line per connection under a flood would otherwise
    fill the pipe and block the server)."""

    def __init__(self, proc: subprocess.Popen[str], address: str) -> None:
        self.proc, self.address, self._lines = proc, address, []
        assert proc.stderr is not None
        self._drain = threading.Thread(target=self._lines.extend, args=(proc.stderr,), daemon=True)
        self._drain.start()

    def stop(self, *, check: bool = True) -> str:
        """SIGTERM, wait for the exit (``check``: it must exit 0); returns
        the whole log."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)
        self._drain.join(10)
        log = "".join(self._lines)
        if check:
            assert self.proc.returncode == 0, (self.proc.returncode, log[-3000:])
        return log


@contextlib.contextmanager
def serving(*args: str) -> Iterator[Served]:
    """``lngossip -v serve --listen 127.0.0.1:0 ARGS...`` until the block
    ends, once it has printed its address; stopped with SIGTERM."""
    proc = subprocess.Popen(
        [*LNGOSSIP, "-v", "serve", "--listen", "127.0.0.1:0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    address = proc.stdout.readline().strip()
    if "@127.0.0.1:" not in address:
        proc.kill()
        raise AssertionError(proc.communicate()[1])
    served = Served(proc, address)
    failed = True
    try:
        yield served
        failed = False
    finally:
        served.stop(check=not failed)
        proc.stdout.close()
        proc.stderr.close()


def sync(address: str, *args: str) -> dict[str, object]:
    """``lngossip sync`` of everything from ``address`` until idle for a
    second, with ``args``; it must exit 0. Its JSON report."""
    out = subprocess.run(
        [*LNGOSSIP, "sync", address, "--policy", "archive", "--until-idle", "1", "--json", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    d: dict[str, object] = json.loads(out.stdout)
    return d


def honest_sync(address: str, out: list[dict[str, object]]) -> threading.Thread:
    """``lngossip sync`` of everything from ``address`` in a thread; its
    JSON report (or ``{"error": stderr}``) is appended to ``out``."""

    def go() -> None:
        r = subprocess.run(
            [*LNGOSSIP, "sync", address, "--policy", "archive", "--until-idle", "3", "--json"],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        out.append(json.loads(r.stdout) if r.returncode == 0 else {"error": r.stderr})

    t = threading.Thread(target=go)
    t.start()
    return t


# -- memory --------------------------------------------------------------------------


def rss(pid: int) -> int:
    """Resident set size of process ``pid`` now, in bytes (``VmRSS``)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class Sampler:
    """Samples a process's RSS every 20 ms in a thread; ``peak`` is the largest seen."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, rss(pid), threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            with contextlib.suppress(OSError, AssertionError):
                self.peak = max(self.peak, rss(self.pid))

    def stop(self) -> int:
        self._stop.set()
        self._t.join()
        return self.peak
