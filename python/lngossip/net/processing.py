"""The driver of a node's processing loop: it admits what peers send into
the pipeline with backpressure, runs ``process`` in a thread a batch at a
time, and, once the node closes, sizes the last batches to end before the
close deadline.

The pipeline and this loop belong to the node, not to a connection: what a
peer got admitted is verified and stored after it disconnects (Core
Lightning #8055). When the pipeline answers ``queue_full`` for a peer, that
peer's reader waits here (:meth:`ProcessingLoop.wait_for_room`) until room
frees up, so TCP pushes back on the sender and nothing buffers without bound
(Core Lightning #7972). What a batch decided is booked by the node (its
``decided`` callback: spam counts, relay, ``on_accepted``) and its peers
sending invalid signatures punished (``punish``)."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lngossip.engine import PipelineLike
    from lngossip.net.config import NodeConfig

__all__ = ["ProcessingLoop"]

log = logging.getLogger(__name__)

#: Messages per batch at most once the node closes (see :meth:`ProcessingLoop.batch_size`).
CLOSING_BATCH = 256


class ProcessingLoop:
    """The pipeline's own loop.

    Args:
        pipeline: the node's pipeline.
        config: the node's settings (``batch``).
        counters: the node's counters.
        decided: books a processed batch (the pipeline's result); returns
            the invalid signatures per pipeline peer.
        punish: acts on ``n`` invalid signatures from a pipeline peer.
    """

    def __init__(
        self,
        pipeline: PipelineLike,
        config: NodeConfig,
        counters: Counter[str],
        decided: Callable[[Any], Counter[int]],
        punish: Callable[[int, int], Awaitable[None]],
    ) -> None:
        self.pipeline = pipeline
        self.config = config
        self.counters = counters
        self._decided = decided
        self._punish = punish
        self._work = asyncio.Event()
        self._room = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        #: set when the loop has nothing left to do
        self._idle = asyncio.Event()
        #: a batch is in its thread
        self.busy = False
        #: set by the node's close(): loop time by which the last batch must end
        self.close_deadline: float | None = None
        #: measured processing cost (seconds per message, moving average);
        #: the start value is a loaded two-core machine's channel_announcement
        self._seconds_per_message = 2e-4

    @property
    def _closing(self) -> bool:
        return self.close_deadline is not None

    def start(self) -> None:
        """Start the loop (idempotent)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="lngossip-process"
            )

    def wake(self) -> None:
        """Something was queued: have the loop process it."""
        self._idle.clear()
        self._work.set()

    async def admit(self, pid: int, msg: bytes) -> str:
        """Submit; on ``queue_full`` wait for room and submit again (the
        caller, a peer's reader, stops reading meanwhile). Returns the
        decision (``queued``, or final: ``rate_limited``, ``duplicate``...)."""
        a = self.pipeline.submit(pid, msg)
        while a.decision == "queue_full":
            await self.wait_for_room()
            a = self.pipeline.submit(pid, msg)
        if a.decision == "queued":
            self.wake()
        return str(a.decision)

    async def wait_for_room(self) -> None:
        """After a ``queue_full`` answer: wake the processing loop and wait
        for its next batch to free room. Returns at once when nothing is
        queued or in flight, since no batch would come to wake the caller (the
        last one may have ended while the caller awaited something else, e.g.
        a reply to a non-gossip message of the same read) and a retry gets in
        (an empty queue admits any message)."""
        self.counters["backpressure_waits"] += 1
        self.wake()
        async with self._room:
            if self.pipeline.queued or self.busy:
                await self._room.wait()

    async def _run(self) -> None:
        while True:
            if not self._closing:
                await self._work.wait()
                self._work.clear()
            while self.pipeline.queued:
                size = self.batch_size()
                if size == 0:  # closing, and no time left for another batch
                    break
                try:
                    await self._process_batch(size)
                except Exception:
                    # e.g. the output file or an on_accepted callback failed:
                    # count it, keep the loop alive, let waiting readers retry
                    self.counters["processing_errors"] += 1
                    log.exception("processing a batch failed")
                    async with self._room:
                        self._room.notify_all()
                    break
            self._idle.set()
            if self._closing:
                return

    def batch_size(self) -> int:
        """The next batch's size: the configured one; once closing, as many
        messages as fit a third of the time left before the close deadline at
        the measured cost per message (at most :data:`CLOSING_BATCH`, 0 when
        none fit), so the last batch ends before the node's close has to return."""
        if self.close_deadline is None:
            return self.config.batch
        left = self.close_deadline - asyncio.get_running_loop().time()
        per = self._seconds_per_message
        return max(0, min(CLOSING_BATCH, self.config.batch, int(left / 3 / per)))

    async def _process_batch(self, batch: int) -> None:
        self.busy = True
        self._idle.clear()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        done = loop.run_in_executor(None, self.pipeline.process, batch)
        try:
            # shielded: if close() cancels this task mid-batch, the thread's
            # result (already committed by the core) still reaches the
            # callback and the relay when it returns
            res = await asyncio.shield(done)
        except asyncio.CancelledError:
            done.add_done_callback(functools.partial(self._late_batch, t0))
            raise
        finally:
            self.busy = False
        bad = self._book(res, t0)
        async with self._room:
            self._room.notify_all()
        for pid, n in bad.items():
            await self._punish(pid, n)

    def _book(self, res: Any, t0: float) -> Counter[int]:
        """Book a processed batch: its cost per message (for close's batch
        sizes), then what it decided (the node's ``decided``)."""
        n = len(res.outcomes)
        if n:
            per = (asyncio.get_running_loop().time() - t0) / n
            self._seconds_per_message = 0.5 * self._seconds_per_message + 0.5 * per
        return self._decided(res)

    def _late_batch(self, t0: float, done: asyncio.Future[Any]) -> None:
        """A batch whose task was cancelled: book it when its thread returns."""
        if done.cancelled():
            return
        try:
            self._book(done.result(), t0)
        except Exception:
            self.counters["processing_errors"] += 1
            log.exception("processing a batch failed")

    async def drain(self) -> None:
        """Wait until every admitted message is decided.

        # Cancel safety
        Safe to cancel: the processing loop goes on.
        """
        while self.pipeline.queued or self.busy:
            if self._closing:  # close() runs the last batches: wait for it
                if self._task is not None:
                    await asyncio.wait({self._task})
                return
            self.wake()
            await self._idle.wait()

    async def finish(self, deadline: float) -> bool:
        """Once closing: run the last batches, sized to end before
        ``deadline`` (loop time), and return whether they did. A batch in
        flight is waited for, so what it accepted reaches ``decided`` too;
        one that overruns the deadline is cancelled, and booked when its
        thread returns."""
        loop = asyncio.get_running_loop()
        if self._task is not None and self._task.done():
            self._task = None  # closed before: run the loop again
        if self._task is None and self.pipeline.queued:
            self.start()
        if self._task is None:
            return True
        self._work.set()
        await asyncio.wait({self._task}, timeout=max(0.0, deadline - loop.time()))
        if self._task.done():
            return True
        self._task.cancel()  # a batch overran: cancel; its result is still booked
        await asyncio.wait({self._task}, timeout=max(0.0, deadline - loop.time()))
        return False
