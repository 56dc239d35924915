"""Rapid Gossip Sync (RGS) snapshots over HTTP, for LDK-based wallets.

An LDK wallet fetches the gossip it missed as one snapshot, at the paths
the reference server (``lightningdevkit/rapid-gossip-sync-server``) publishes
its snapshot files under:

=========================  ==================================================
``GET /snapshot/{T}``      snapshot of serialization version 1
``GET /snapshot/v2/{T}``   snapshot of serialization version 2
=========================  ==================================================

``T`` is the ``latest_seen`` timestamp (seconds since the epoch) the
wallet's previous snapshot carried, 0 for a full snapshot: a decimal
integer of at most 10 digits, no sign, a multiple of ``interval`` (the
snapshot grid, 3 hours as the reference server's
``SYMLINK_GRANULARITY_INTERVAL``) and not after ``now()``. ``HEAD`` is
answered like ``GET`` without the body.

Answers:

* 200 ``application/octet-stream`` with ``Content-Length`` and
  ``Cache-Control: public, max-age=<interval>``: the snapshot bytes;
* 400 (one line of plain text) for a ``T`` that is not such a number,
  off the grid, or in the future; 404 for every other path; 405 (with
  ``Allow``) for other methods;
* 503 (with ``Retry-After``) when a limit refuses the request, and
  500 ("internal error building the snapshot") when the builder raised:
  the server's fault, logged; never a traceback in a body.

No file system path is built from the URL: the path is split into its
segments and ``T`` is parsed as a number.

Which snapshot ``T`` gets (``max_scope``): like the reference server, a
request is served the snapshot of the smallest *scope* that covers it,
``since = reference - scope`` with ``reference`` = ``now()`` rounded down
to the grid and the scopes ``interval``, ``2*interval``, ``4*interval``,
... up to the first at or past ``max_scope`` (21 days: the last scope is
256 intervals, 32 days); ``T`` older than that gets the full snapshot
(``since = 0``), and ``T == reference`` gets ``since = T``. A snapshot
from an earlier ``since`` is a superset the wallet applies the same way,
and the server builds at most eleven distinct snapshots per version and
graph generation whatever ``T`` the clients send (``max_scope=None``
builds each ``T`` exactly: up to one build per grid point since 1970).

Caching: snapshots are cached by ``(version, since, generation())`` in an
LRU bounded in entries and bytes; concurrent requests for one key share
one build (single flight); a build that raised is not cached (the next
request builds again). Builds run on a dedicated thread pool of
``max_builds`` threads (the Rust builder releases the GIL), further
builds wait for a thread, and a queued build whose every waiter left is
cancelled.

Memory and slow clients. A snapshot is one shared ``bytes`` object: the
cache, the single flight and every response writing it hold the same
object. A response writes it in 64 KiB ``memoryview`` slices and waits
after each until the socket's buffer is below its high-water mark, so a
connection holds at most about 128 KiB of copied bytes however slowly its
client reads. :meth:`RgsServer.stats` reports three figures:

* ``pinned_bytes``: the distinct snapshot bodies that responses being
  written keep alive, each counted once (200 clients reading one 5 MB
  snapshot count 5 MB). This is what ``max_response_bytes_in_flight``
  bounds: a response that would pin a new body past it gets a 503;
* ``owed_bytes``: per response, the bytes of its body the kernel has not
  taken yet, summed over responses (the figure if nothing were shared;
  200 such clients count up to 1 GB of it while using 5 MB);
* ``buffered_bytes``: the bytes copied into the sockets' user-space
  buffers, summed over connections (bounded by about 128 KiB each).

Below those, the kernel's send buffer of each connection holds up to
``send_buffer`` bytes (doubled by Linux) instead of the up to 4 MB its
autotuning would give a slow reader.

Every request must be answered within ``request_timeout`` of the end of
its headers, build wait and body included: one still waiting for its
build then gets a 503, one still writing its body is aborted (its
buffered bytes dropped). A connection must send a complete request
within ``request_timeout`` of being opened or of its previous response,
or it is aborted. When ``max_connections`` connections are open, a new one
evicts the idle (or still-sending-headers) connection that was quiet
longest, else the response that is reading slowest among those writing
for over a second; if there is none, the new connection gets a 503. When
``max_concurrent_requests`` are in progress, a new request likewise
evicts the slowest reader, else gets a 503. So slow readers pin neither
unbounded memory nor the slots honest clients need.

Logging (``logging.getLogger(__name__)``): at most one line a minute per
class of refused or failed request (with the number since the last line),
none per request. Metrics: :meth:`RgsServer.collector` is a
``prometheus_client`` collector to register on a registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import socket
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from lngossip.errors import ConfigError
from lngossip.rgs import MAX_SCOPE_S, SNAPSHOT_INTERVAL_S, scope_since

__all__ = ["RgsCollector", "RgsServer"]

log = logging.getLogger(__name__)

#: aiohttp's own protocol errors (a malformed request line, ...) go here,
#: at most one line a minute per message
_http_log = logging.getLogger(f"{__name__}.http")

#: the snapshot grid (s), :data:`lngossip.rgs.SNAPSHOT_INTERVAL_S`
DEFAULT_INTERVAL = SNAPSHOT_INTERVAL_S
#: older ``T`` get the full snapshot (s), :data:`lngossip.rgs.MAX_SCOPE_S`
DEFAULT_MAX_SCOPE = MAX_SCOPE_S

#: bytes a response hands the socket at a time
_CHUNK = 64 * 1024
#: a response writing for less than this (s) is not evicted for being slow
_EVICT_GRACE = 1.0
#: period (s) of the rate limit of log lines, per class
_LOG_PERIOD = 60.0
#: ``T``: ASCII digits only (``str.isdigit`` takes other scripts' digits too)
_DIGITS = re.compile(r"[0-9]{1,10}")
_ALLOWED = ("GET", "HEAD")

_BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 28\r\n"
    b"Retry-After: 5\r\n"
    b"Connection: close\r\n"
    b"\r\n"
    b"too many connections, retry\n"
)


class _RateLimit(logging.Filter):
    """Lets one record a minute through per message format."""

    def __init__(self, period: float = _LOG_PERIOD) -> None:
        super().__init__()
        self.period = period
        self.last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        key = str(record.msg)
        last = self.last.get(key)
        if last is not None and now - last < self.period:
            return False
        if len(self.last) > 1000:
            self.last.clear()
        self.last[key] = now
        return True


_http_log.addFilter(_RateLimit())


class _LogLimiter:
    """One log line per ``period`` seconds per class, with the count of the
    lines left out since the last one."""

    def __init__(self, logger: logging.Logger, period: float = _LOG_PERIOD) -> None:
        self.logger = logger
        self.period = period
        self.last: dict[str, float] = {}
        self.skipped: dict[str, int] = {}

    def __call__(self, level: int, cls: str, msg: str, *, exc_info: Any = None) -> None:
        now = time.monotonic()
        last = self.last.get(cls)
        if last is not None and now - last < self.period:
            self.skipped[cls] = self.skipped.get(cls, 0) + 1
            return
        self.last[cls] = now
        skipped = self.skipped.pop(cls, 0)
        more = f" ({skipped} more since the last line)" if skipped else ""
        self.logger.log(level, "rgs %s: %s%s", cls, msg, more, exc_info=exc_info)


class _BuildFailed(Exception):
    """The builder raised (logged once per build by the flight)."""


class _Closing(Exception):
    """The server is closing: the build a request waited for was cancelled."""


_Key = tuple[int, int, int]  # (version, since, generation)


@dataclass(eq=False)
class _Flight:
    """One build shared by every request for its key."""

    task: asyncio.Task[bytes] | None = None
    waiters: int = 0
    #: set by the pool thread as the build starts (a queued build can be cancelled)
    started: bool = False


@dataclass(eq=False)
class _Request:
    """A request being handled (the admission slot of ``max_concurrent_requests``)."""

    conn: _Conn | None
    #: loop time the body began to be written, None before
    writing_since: float | None = None
    size: int = 0
    #: bytes handed to the transport
    written: int = 0

    def delivered(self) -> int:
        """Bytes the kernel took (handed to the transport less its buffer)."""
        buffered = self.conn.buffered() if self.conn is not None else 0
        return max(self.written - buffered, 0)


@dataclass(eq=False)
class _Conn:
    transport: asyncio.Transport
    #: loop time of the last activity: opened, or the end of a response
    last: float
    served: int = 0
    req: _Request | None = None
    timer: asyncio.TimerHandle | None = None
    dropped: bool = False

    def buffered(self) -> int:
        try:
            return int(self.transport.get_write_buffer_size())
        except Exception:  # a closed transport
            return 0


@dataclass(eq=False)
class _Cache:
    """LRU of snapshot bodies, bounded in entries and bytes."""

    max_entries: int
    max_bytes: int
    entries: OrderedDict[_Key, bytes] = field(default_factory=OrderedDict)
    size: int = 0

    def get(self, key: _Key) -> bytes | None:
        body = self.entries.get(key)
        if body is not None:
            self.entries.move_to_end(key)
        return body

    def put(self, key: _Key, body: bytes) -> None:
        if len(body) > self.max_bytes:
            return
        # a new generation: the older ones are never asked for again
        for k in [k for k in self.entries if k[2] != key[2]]:
            self.size -= len(self.entries.pop(k))
        old = self.entries.pop(key, None)
        if old is not None:
            self.size -= len(old)
        self.entries[key] = body
        self.size += len(body)
        while len(self.entries) > self.max_entries or self.size > self.max_bytes:
            _, dropped = self.entries.popitem(last=False)
            self.size -= len(dropped)


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


def _positive_float(name: str, value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigError(f"{name} must be a positive finite number of seconds, got {value!r}")
    return float(value)


def _wall_clock() -> int:
    return int(time.time())


class _Protocol(web.RequestHandler):
    """aiohttp's connection, answering a request it could not parse (or a
    handler that raised: a bug) with one line, never a traceback or the
    client's bytes echoed."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            _http_log.error("handler failed: answered %s", status, exc_info=exc)
        else:
            _http_log.info("malformed request: answered %s", status)
        if request.writer.output_size > 0:
            raise ConnectionError("response already started: cannot send an error")
        try:
            phrase = HTTPStatus(status).phrase.lower()
        except ValueError:
            phrase = "error"
        resp = web.Response(
            status=status,
            text=f"{phrase}\n",
            headers={"Cache-Control": "no-store", "Server": "lngossip"},
        )
        resp.force_close()
        return resp


class _HttpServer(web.Server):
    """aiohttp's low-level server, telling the owner of each connection."""

    def __init__(self, owner: RgsServer, **kwargs: Any) -> None:
        # a client that leaves cancels its handler: it stops waiting (a queued
        # build nobody waits for is dropped) and frees its request slot at once
        super().__init__(owner._handle, handler_cancellation=True, **kwargs)
        self._owner = owner
        #: the keyword arguments of each connection's RequestHandler
        self._protocol_kwargs = kwargs

    def __call__(self) -> web.RequestHandler:
        return _Protocol(self, loop=asyncio.get_running_loop(), **self._protocol_kwargs)

    def connection_made(self, handler: web.RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        self._owner._on_connect(handler, transport)

    def connection_lost(
        self, handler: web.RequestHandler, exc: BaseException | None = None
    ) -> None:
        super().connection_lost(handler, exc)
        self._owner._on_disconnect(handler)


class RgsServer:
    """HTTP server of RGS snapshots (see the module docstring for the
    routes, answers, caching and the memory model).

    Args:
        build: ``build(since, version) -> bytes``: the snapshot of the gossip
            since ``since`` (seconds since the epoch, 0 for all of it) in
            serialization ``version`` 1 or 2. CPU-heavy (hundreds of ms): it
            runs on a dedicated pool of ``max_builds`` threads and should
            release the GIL. Anything it raises is a 500, logged; a result
            that is not ``bytes`` too.
        generation: returns a number that changes when the graph changed;
            part of the cache key. Called on the event loop once per
            request: it must be cheap. Every change makes the next request
            of each key build again, so it should change at most about as
            often as a snapshot is worth rebuilding.
        now: the clock, seconds since the epoch (``T > now()`` is a 400).
        interval: the snapshot grid (s), 10800 as the reference server's
            ``SYMLINK_GRANULARITY_INTERVAL``: ``T`` must be a multiple of it;
            also the ``max-age`` responses may be cached for.
        max_scope: widest incremental scope (s) before a request gets the
            full snapshot, 21 days as the reference server's
            ``MAX_SNAPSHOT_SCOPE``; bounds the distinct builds to eleven
            per version and generation. ``None``: build each ``T`` exactly
            (up to one build per grid point since 1970).
        max_concurrent_requests: requests in progress (waiting for a build
            or writing), 256: each may pin a snapshot and a socket buffer.
        max_builds: builds running at once (threads of the pool), 2: each
            takes a core for hundreds of ms; more wait for a thread.
        max_response_bytes_in_flight: bytes (256 MiB) of the distinct
            snapshot bodies that responses being written keep alive, each
            counted once; past it a response of another body gets a 503
            (a body alone larger than it is still served).
        max_cache_entries: snapshots cached, 64 (at most eleven per version
            per generation are asked for).
        max_cache_bytes: bytes of snapshots cached, 256 MiB (a larger one
            is served but not cached).
        request_timeout: seconds (120) a request has from the end of its
            headers to its last byte handed to the kernel (build included:
            past it a request still waiting gets a 503, a body being
            written is aborted), and a connection to send a whole request
            after opening or after its previous response (then aborted).
            120 s let a 6 MB full snapshot reach a 1 Mbit/s client; slow
            readers cost at most 128 KiB each meanwhile, and are evicted
            first when full.
        max_connections: open connections, 512 (a file descriptor and up to
            about 128 KiB of socket buffer each); a new one evicts an idle
            one or the slowest reader, else gets a 503.
        send_buffer: the kernel send buffer (``SO_SNDBUF``, bytes; Linux
            doubles it) of each connection, 256 KiB: without it the kernel
            grows a slow reader's buffer up to ``tcp_wmem`` (4 MB), kernel
            memory pinned per connection; 256 KiB still carry 20 Mbit/s at
            a 100 ms round trip. ``None``: the kernel's autotuning.

    Raises:
        ConfigError: a limit is not a positive number (the value is named),
            or ``build``, ``generation`` or ``now`` is not callable.
    """

    def __init__(
        self,
        build: Callable[[int, int], bytes],
        *,
        generation: Callable[[], int],
        now: Callable[[], int] = _wall_clock,
        interval: int = DEFAULT_INTERVAL,
        max_scope: int | None = DEFAULT_MAX_SCOPE,
        max_concurrent_requests: int = 256,
        max_builds: int = 2,
        max_response_bytes_in_flight: int = 256 * 1024 * 1024,
        max_cache_entries: int = 64,
        max_cache_bytes: int = 256 * 1024 * 1024,
        request_timeout: float = 120.0,
        max_connections: int = 512,
        send_buffer: int | None = 256 * 1024,
    ) -> None:
        for name, fn in (("build", build), ("generation", generation), ("now", now)):
            if not callable(fn):
                raise ConfigError(f"{name} must be callable, got {fn!r}")
        self._build = build
        self._generation = generation
        self._now = now
        self.interval = _positive_int("interval", interval)
        self.max_scope = None if max_scope is None else _positive_int("max_scope", max_scope)
        self.max_concurrent_requests = _positive_int(
            "max_concurrent_requests", max_concurrent_requests
        )
        self.max_builds = _positive_int("max_builds", max_builds)
        self.max_response_bytes_in_flight = _positive_int(
            "max_response_bytes_in_flight", max_response_bytes_in_flight
        )
        self.max_connections = _positive_int("max_connections", max_connections)
        self.request_timeout = _positive_float("request_timeout", request_timeout)
        self.send_buffer = (
            None if send_buffer is None else _positive_int("send_buffer", send_buffer)
        )
        self._cache = _Cache(
            _positive_int("max_cache_entries", max_cache_entries),
            _positive_int("max_cache_bytes", max_cache_bytes),
        )
        self._flights: dict[_Key, _Flight] = {}
        self._conns: dict[web.RequestHandler, _Conn] = {}
        #: connections open and not being aborted (what ``max_connections`` bounds)
        self._live = 0
        self._requests: set[_Request] = set()
        #: id(body) -> [body, responses writing it]
        self._pinned: dict[int, list[Any]] = {}
        self._pinned_bytes = 0
        self._pool: ThreadPoolExecutor | None = None
        self._runner: web.ServerRunner | None = None
        self._closing = False
        self._note = _LogLimiter(log)
        #: monotonically increasing counts, by name (see :meth:`stats`)
        self.counters: dict[str, int] = {}

    # -- lifecycle -----------------------------------------------------------

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen on ``host:port`` (port 0: any free port); returns the bound
        address.

        Raises:
            OSError: the address cannot be bound.
            RuntimeError: started twice, or after :meth:`close`.
        """
        if self._runner is not None or self._closing:
            raise RuntimeError("RgsServer.start: already started or closed")
        self._pool = ThreadPoolExecutor(self.max_builds, thread_name_prefix="rgs-build")
        server = _HttpServer(
            self,
            access_log=None,  # no line per request
            logger=_http_log,
            keepalive_timeout=self.request_timeout,
            lingering_time=0,  # an unread request body closes the connection
            max_line_size=4096,
            max_field_size=8190,
        )
        self._runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, backlog=min(self.max_connections, 1024))
        try:
            await site.start()
        except BaseException:
            await self._runner.cleanup()
            self._pool.shutdown(wait=False)
            self._runner = None
            self._pool = None
            raise
        addr = self._runner.addresses[0]
        return str(addr[0]), int(addr[1])

    async def close(self) -> None:
        """Stop listening, abort every connection, cancel the builds' waiters
        (they get a 503) and queued builds, and shut the thread pool down
        without waiting for a running build (a build stuck in the builder
        keeps its thread, not this call). Idempotent; returns within about
        a second."""
        if self._closing:
            return
        self._closing = True
        tasks = [f.task for f in self._flights.values() if f.task is not None]
        for task in tasks:
            task.cancel()
        for conn in list(self._conns.values()):
            self._cancel_timer(conn)
            conn.transport.abort()
        if self._runner is not None:
            await self._runner.cleanup()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        # the handlers' tasks end once their connections are lost
        deadline = time.monotonic() + 1.0
        while self._conns and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for _ in range(3):
            await asyncio.sleep(0)

    # -- figures -------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        """The gauges now, with :attr:`counters`: ``connections`` (open,
        not counting ``closing_connections``: aborted, their socket about
        to be released), ``requests`` (in progress), ``builds_in_flight`` (running or
        queued), ``cache_entries``, ``cache_bytes``, ``pinned_bytes``,
        ``owed_bytes`` and ``buffered_bytes`` (bytes; see the module
        docstring)."""
        writing = [r for r in self._requests if r.writing_since is not None]
        out = {
            "connections": self._live,
            "closing_connections": len(self._conns) - self._live,
            "requests": len(self._requests),
            "builds_in_flight": len(self._flights),
            "cache_entries": len(self._cache.entries),
            "cache_bytes": self._cache.size,
            "pinned_bytes": self._pinned_bytes,
            "owed_bytes": sum(r.size - r.delivered() for r in writing),
            "buffered_bytes": sum(c.buffered() for c in self._conns.values()),
        }
        out.update(self.counters)
        return out

    def collector(self) -> RgsCollector:
        """A ``prometheus_client`` collector of :meth:`stats` (register it on
        the registry that serves ``/metrics``)."""
        return RgsCollector(self)

    def _count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    # -- connections ---------------------------------------------------------

    def _loop_time(self) -> float:
        return asyncio.get_running_loop().time()

    def _arm(self, conn: _Conn) -> None:
        """The connection must complete a request within the timeout."""
        self._cancel_timer(conn)
        if not self._closing and not conn.dropped:
            conn.timer = asyncio.get_running_loop().call_later(
                self.request_timeout, self._on_quiet, conn
            )

    @staticmethod
    def _cancel_timer(conn: _Conn) -> None:
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None

    def _on_quiet(self, conn: _Conn) -> None:
        conn.timer = None
        if conn.req is not None or conn.dropped:
            return
        if conn.served:
            self._drop(conn, "idle")  # keep-alive: a normal end
        else:
            self._drop(conn, "header_timeout")
            self._note(
                logging.INFO,
                "header_timeout",
                f"closed a connection that sent no whole request in {self.request_timeout:g} s",
            )

    def _on_connect(self, handler: web.RequestHandler, transport: asyncio.Transport) -> None:
        if self._closing:
            transport.abort()
            return
        conn = _Conn(transport, self._loop_time())
        self._conns[handler] = conn
        sock = transport.get_extra_info("socket")
        if self.send_buffer is not None and sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.send_buffer)
        self._arm(conn)
        self._live += 1
        if self._live <= self.max_connections:
            return
        victim = self._victim(exclude=conn, idle_first=True)
        if victim is not None:
            self._drop(victim, "evicted")
            self._note(
                logging.WARNING,
                "evicted",
                f"{self.max_connections} connections open: closed the quietest or slowest",
            )
            return
        self._retire(conn)
        self._count("refused:connections")
        self._note(
            logging.WARNING,
            "connections_full",
            f"refused a connection: {self.max_connections} open, none idle or slow",
        )
        with contextlib.suppress(Exception):
            transport.write(_BUSY_RESPONSE)
        transport.close()

    def _on_disconnect(self, handler: web.RequestHandler) -> None:
        conn = self._conns.pop(handler, None)
        if conn is not None:
            self._retire(conn)

    def _retire(self, conn: _Conn) -> None:
        """``conn`` no longer counts as open (aborted, or lost)."""
        self._cancel_timer(conn)
        if not conn.dropped:
            conn.dropped = True
            self._live -= 1

    def _drop(self, conn: _Conn, reason: str) -> None:
        """Abort ``conn`` now (its buffered bytes dropped) and free its
        request slot."""
        if conn.dropped:
            return
        self._retire(conn)
        if conn.req is not None:
            self._requests.discard(conn.req)
        self._count(f"closed:{reason}")
        conn.transport.abort()

    def _victim(self, *, exclude: _Conn | None, idle_first: bool) -> _Conn | None:
        """The connection to evict: with ``idle_first`` the one without a
        request in progress that was quiet longest, else the one reading
        slowest among those writing a body for over a second."""
        live = [c for c in self._conns.values() if c is not exclude and not c.dropped]
        if idle_first:
            idle = [c for c in live if c.req is None]
            if idle:
                return min(idle, key=lambda c: c.last)
        now = self._loop_time()
        slow: list[tuple[float, _Conn]] = []
        for c in live:
            r = c.req
            if r is not None and r.writing_since is not None and r in self._requests:
                elapsed = now - r.writing_since
                if elapsed >= _EVICT_GRACE:
                    slow.append((r.delivered() / elapsed, c))
        if not slow:
            return None
        return min(slow, key=lambda rc: rc[0])[1]

    # -- requests ------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        conn = self._conns.get(request.protocol)
        if conn is not None:
            self._cancel_timer(conn)
        req = _Request(conn)
        if conn is not None:
            conn.req = req
        resp: web.StreamResponse | None = None
        try:
            resp = await self._respond(request, req)
            return resp
        finally:
            self._requests.discard(req)
            if conn is not None:
                conn.req = None
                conn.served += 1
                conn.last = self._loop_time()
                self._arm(conn)
            self._count(f"status:{resp.status if resp is not None else 'aborted'}")

    def _route(self, request: web.BaseRequest) -> tuple[int, str] | web.Response:
        """``(version, T digits)`` or the error response."""
        parts = request.rel_url.raw_path.split("/")
        if len(parts) == 3 and parts[1] == "snapshot":
            version, t = 1, parts[2]
        elif len(parts) == 4 and parts[1] == "snapshot" and parts[2] == "v2":
            version, t = 2, parts[3]
        else:
            return self._refuse(
                404, "not_found", "not found: the paths are /snapshot/{T} and /snapshot/v2/{T}"
            )
        if request.method not in _ALLOWED:
            resp = self._refuse(405, "bad_method", "method not allowed: use GET")
            resp.headers["Allow"] = ", ".join(_ALLOWED)
            return resp
        return version, t

    async def _respond(self, request: web.BaseRequest, req: _Request) -> web.StreamResponse:
        route = self._route(request)
        if isinstance(route, web.Response):
            return route
        version, digits = route
        if _DIGITS.fullmatch(digits) is None:
            return self._refuse(
                400,
                "bad_request",
                "bad timestamp: T must be a decimal integer of at most 10 digits",
            )
        t = int(digits)
        if t % self.interval:
            return self._refuse(
                400,
                "bad_request",
                f"bad timestamp: {t} is not a multiple of {self.interval} s (the snapshot grid)",
            )
        try:
            now = int(self._now())
            gen = int(self._generation())
        except Exception:
            self._note(
                logging.ERROR, "internal_error", "now() or generation() raised", exc_info=True
            )
            return self._error(500, "internal error")
        if t > now:
            return self._refuse(400, "bad_request", f"bad timestamp: {t} is in the future")
        if self._closing:
            return self._busy("shutting_down", "shutting down, retry")
        if len(self._requests) >= self.max_concurrent_requests:
            victim = self._victim(exclude=req.conn, idle_first=False)
            if victim is None:
                return self._busy(
                    "requests_full", f"{self.max_concurrent_requests} requests in progress, retry"
                )
            self._drop(victim, "evicted")
            self._note(
                logging.WARNING,
                "evicted",
                f"{self.max_concurrent_requests} requests in progress: closed the slowest reader",
            )
        self._requests.add(req)
        key = (version, self.since(t, now), gen)
        resp: web.StreamResponse | None = None
        try:
            async with asyncio.timeout(self.request_timeout):
                try:
                    body = await self._snapshot(key)
                except _BuildFailed:
                    return self._error(500, "internal error building the snapshot")
                except _Closing:
                    return self._busy("shutting_down", "shutting down, retry")
                if req not in self._requests:  # evicted while it waited
                    return self._busy("evicted", "evicted, retry")
                if not self._pin(body):
                    return self._busy(
                        "bytes_full",
                        f"{self.max_response_bytes_in_flight} bytes of snapshots being "
                        "written, retry",
                    )
                try:
                    resp = web.StreamResponse(
                        headers={
                            "Content-Type": "application/octet-stream",
                            "Cache-Control": f"public, max-age={self.interval}",
                            "Server": "lngossip",
                        }
                    )
                    resp.content_length = len(body)
                    await resp.prepare(request)
                    if request.method != "HEAD":
                        await self._write(request, resp, body, req)
                    return resp
                finally:
                    self._unpin(body)
        except TimeoutError:
            if resp is None or not resp.prepared:
                self._note(
                    logging.WARNING,
                    "timeout",
                    f"no snapshot within {self.request_timeout:g} s: answered 503",
                )
                return self._busy("timeout", "timed out waiting for the snapshot, retry")
            self._note(
                logging.INFO,
                "slow_reader",
                f"closed a response not read within {self.request_timeout:g} s",
            )
            if req.conn is not None:
                self._drop(req.conn, "timeout")
            else:
                with contextlib.suppress(Exception):
                    request.transport.abort()  # type: ignore[union-attr]
            return resp
        except ConnectionError:
            # the client left (or was evicted) in the middle of the body
            return resp if resp is not None else self._error(503, "connection lost")

    async def _write(
        self, request: web.BaseRequest, resp: web.StreamResponse, body: bytes, req: _Request
    ) -> None:
        """Write ``body`` in slices, each after the socket's buffer drained
        below its high-water mark."""
        req.size = len(body)
        req.writing_since = self._loop_time()
        view = memoryview(body)
        writer = request.writer
        for off in range(0, len(body), _CHUNK):
            chunk = view[off : off + _CHUNK]
            await resp.write(chunk)
            req.written += len(chunk)
            await writer.drain()

    def _pin(self, body: bytes) -> bool:
        entry = self._pinned.get(id(body))
        if entry is not None:
            entry[1] += 1
            return True
        if self._pinned and self._pinned_bytes + len(body) > self.max_response_bytes_in_flight:
            return False
        self._pinned[id(body)] = [body, 1]
        self._pinned_bytes += len(body)
        return True

    def _unpin(self, body: bytes) -> None:
        entry = self._pinned[id(body)]
        entry[1] -= 1
        if entry[1] == 0:
            del self._pinned[id(body)]
            self._pinned_bytes -= len(body)

    def _refuse(self, status: int, cls: str, reason: str) -> web.Response:
        self._note(logging.INFO, cls, f"answered {status}: {reason}")
        return self._error(status, reason)

    def _busy(self, cls: str, reason: str) -> web.Response:
        self._count(f"refused:{cls}")
        if cls != "evicted":
            self._note(logging.WARNING, cls, f"answered 503: {reason}")
        resp = self._error(503, reason)
        resp.headers["Retry-After"] = "5"
        resp.force_close()
        return resp

    @staticmethod
    def _error(status: int, reason: str) -> web.Response:
        return web.Response(
            status=status,
            text=reason + "\n",
            headers={"Cache-Control": "no-store", "Server": "lngossip"},
        )

    def since(self, t: int, now: int) -> int:
        """The ``since`` a request for ``T`` is built from (see
        ``max_scope``): ``t`` itself for 0, for the latest grid point and
        without ``max_scope``; else ``reference - scope``, or 0."""
        return scope_since(t, now - now % self.interval, self.interval, self.max_scope)

    # -- builds --------------------------------------------------------------

    async def _snapshot(self, key: _Key) -> bytes:
        """The cached body of ``key``, or the result of its (shared) build.

        Raises:
            _BuildFailed: the build raised.
            _Closing: the build was cancelled by :meth:`close`.
        """
        body = self._cache.get(key)
        if body is not None:
            self._count("cache_hits")
            return body
        flight = self._flights.get(key)
        if flight is None:
            self._count("cache_misses")
            flight = _Flight()
            flight.task = asyncio.get_running_loop().create_task(self._run_build(key, flight))
            flight.task.add_done_callback(self._build_done)
            self._flights[key] = flight
        else:
            self._count("builds_joined")
        task = flight.task
        assert task is not None
        flight.waiters += 1
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and (current is None or not current.cancelling()):
                raise _Closing from None
            raise
        except Exception as e:
            raise _BuildFailed from e
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.started and not task.done():
                # nobody waits for a build that has not started: drop it
                task.cancel()
                if self._flights.get(key) is flight:
                    del self._flights[key]
                self._count("builds_cancelled")

    async def _run_build(self, key: _Key, flight: _Flight) -> bytes:
        version, since, gen = key
        build = self._build

        def job() -> bytes:
            flight.started = True
            return build(since, version)

        assert self._pool is not None
        try:
            body = await asyncio.get_running_loop().run_in_executor(self._pool, job)
        finally:
            if self._flights.get(key) is flight:
                del self._flights[key]
        if not isinstance(body, bytes):
            raise TypeError(f"build returned {type(body).__name__}, not bytes")
        self._count("builds_ok")
        try:
            current = int(self._generation())
        except Exception:
            current = None
        if current == gen and not self._closing:
            self._cache.put(key, body)
        return body

    def _build_done(self, task: asyncio.Task[bytes]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._count("build_failures")
            self._note(
                logging.ERROR,
                "build_failed",
                "the snapshot builder raised: answered 500",
                exc_info=exc,
            )


class RgsCollector(Collector):
    """Prometheus figures of an :class:`RgsServer`, read at each scrape:

    ==========================================  ===============================
    ``lngossip_rgs_responses_total``            by ``status`` (counter)
    ``lngossip_rgs_refused_total``              503s by ``reason`` (counter)
    ``lngossip_rgs_closed_total``               connections aborted by
                                                ``reason`` (counter)
    ``lngossip_rgs_builds_total``               builds, by ``result`` (counter)
    ``lngossip_rgs_cache_total``                lookups by ``result``: ``hit``,
                                                ``miss``, ``joined`` (counter)
    ``lngossip_rgs_connections``                open connections (gauge)
    ``lngossip_rgs_requests``                   in progress (gauge)
    ``lngossip_rgs_cache_bytes``                bytes cached (gauge)
    ``lngossip_rgs_pinned_bytes``               snapshot bytes responses keep
                                                alive, shared counted once (gauge)
    ``lngossip_rgs_buffered_bytes``             socket buffer bytes (gauge)
    ==========================================  ===============================
    """

    def __init__(self, server: RgsServer) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        s = self.server.stats()
        by: dict[str, CounterMetricFamily] = {
            "status": CounterMetricFamily(
                "lngossip_rgs_responses", "Responses by status", labels=["status"]
            ),
            "refused": CounterMetricFamily(
                "lngossip_rgs_refused", "Requests refused with a 503", labels=["reason"]
            ),
            "closed": CounterMetricFamily(
                "lngossip_rgs_closed", "Connections aborted", labels=["reason"]
            ),
        }
        for name, count in sorted(self.server.counters.items()):
            prefix, _, label = name.partition(":")
            if label and prefix in by:
                by[prefix].add_metric([label], count)
        yield from by.values()
        builds = CounterMetricFamily("lngossip_rgs_builds", "Snapshot builds", labels=["result"])
        builds.add_metric(["ok"], s.get("builds_ok", 0))
        builds.add_metric(["failed"], s.get("build_failures", 0))
        builds.add_metric(["cancelled"], s.get("builds_cancelled", 0))
        yield builds
        cache = CounterMetricFamily("lngossip_rgs_cache", "Cache lookups", labels=["result"])
        cache.add_metric(["hit"], s.get("cache_hits", 0))
        cache.add_metric(["miss"], s.get("cache_misses", 0))
        cache.add_metric(["joined"], s.get("builds_joined", 0))
        yield cache
        for name, doc in (
            ("connections", "Open connections"),
            ("requests", "Requests in progress"),
            ("cache_bytes", "Bytes cached"),
            ("pinned_bytes", "Snapshot bytes kept alive by responses, shared counted once"),
            ("buffered_bytes", "Bytes in socket buffers"),
        ):
            yield GaugeMetricFamily(f"lngossip_rgs_{name}", doc, value=s[name])
