"""The engine seam: what the file driver (:mod:`lngossip.ingest`), the node
(:mod:`lngossip.net`) and the command line need of a pipeline, and how to
make one by name.

Two engines provide it: :class:`lngossip.Pipeline` (``lngossip._core``, the
Rust core) and :class:`lngossip.baseline.Pipeline` (pure Python, the
reference the parity tests hold the core to). :class:`PipelineLike` is the
structural type both satisfy (mypy checks it in :func:`make_pipeline`,
which returns each as one); its results are the types that already exist:
:class:`~lngossip.types.Counters`, :class:`~lngossip.types.StoreReport`,
:class:`~lngossip.graph.GraphReader`, :class:`~lngossip.wire.Outcome`.
"""

from __future__ import annotations

import os
from typing import Final, Literal, Protocol, TypeAlias, TypedDict, Unpack

from lngossip import _core
from lngossip.graph import GraphReader
from lngossip.types import Counters, StoreReport
from lngossip.wire import Decision, Outcome, Policy

__all__ = [
    "DEFAULT_BATCH",
    "ENGINES",
    "AdmissionLike",
    "Engine",
    "PipelineLike",
    "PipelineSettings",
    "ProcessResultLike",
    "make_pipeline",
    "rust_pipeline",
]

#: Engine names: ``"rust"`` (:class:`lngossip.Pipeline`) or ``"baseline"``
#: (:class:`lngossip.baseline.Pipeline`).
Engine: TypeAlias = Literal["rust", "baseline"]
ENGINES: Final[tuple[Engine, ...]] = ("rust", "baseline")

#: Messages per ``process`` call: big enough to keep every core busy
#: (about 0.1 s of verification), small enough to keep the queue short.
DEFAULT_BATCH: Final = 4096


class PipelineSettings(TypedDict, total=False):
    """Keyword arguments of both engines' constructors (documented in
    ``lngossip/_core.pyi`` ``Pipeline``); a key left out takes the engine's
    default. Sizes in bytes, times in seconds unless the name says ``_ms``.
    ``store`` and ``verify_store`` need the Rust engine."""

    chain_hash: bytes
    policy: Policy
    now: int
    max_queue_bytes: int
    max_queue_messages: int
    per_peer_bytes: int
    per_peer_messages: int
    orphan_capacity: int
    orphan_max_bytes: int
    seen_capacity: int
    pubkey_cache_capacity: int
    threads: int
    store: str | os.PathLike[str]
    store_sync_interval_ms: int
    verify_store: bool


class AdmissionLike(Protocol):
    """What ``submit`` returns in both engines (``_core.Admission``,
    ``baseline.Admission``)."""

    @property
    def seq(self) -> int: ...
    @property
    def decision(self) -> Decision: ...
    @property
    def reason(self) -> str | None: ...


class ProcessResultLike(Protocol):
    """What ``process`` returns in both engines (``_core.ProcessResult``,
    ``baseline.ProcessResult``)."""

    @property
    def outcomes(self) -> list[Outcome]: ...
    @property
    def accepted(self) -> list[bytes]: ...
    @property
    def signatures_verified(self) -> int: ...


class PipelineLike(Protocol):
    """What the file driver and the node need of an engine; both engines
    provide it (see ``lngossip/_core.pyi`` ``Pipeline`` for each method)."""

    def submit(self, peer: int, msg: bytes) -> AdmissionLike: ...
    def process(self, max_messages: int = ...) -> ProcessResultLike: ...
    def counters(self) -> Counters: ...
    @property
    def queued(self) -> int: ...
    @property
    def graph(self) -> GraphReader: ...
    @property
    def policy(self) -> Policy: ...
    def set_policy(self, policy: Policy) -> None: ...
    def prune(self, now: int | None = None) -> tuple[int, int]: ...
    def sync_store(self) -> None: ...
    def store_report(self) -> StoreReport | None: ...


def make_pipeline(engine: Engine = "rust", **settings: Unpack[PipelineSettings]) -> PipelineLike:
    """A new pipeline of ``engine`` with ``settings``.

    Raises:
        ValueError: for an engine name not in :data:`ENGINES`.
        ConfigError: for a setting out of its range (``LIMITS``), or a
            ``store`` with the baseline engine.
        StoreError: when the Rust engine cannot open the ``store``.
    """
    if engine == "rust":
        return _core.Pipeline(**settings)
    if engine == "baseline":
        from lngossip.baseline import Pipeline as BaselinePipeline

        return BaselinePipeline(**settings)
    raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")


def rust_pipeline(pipeline: PipelineLike) -> _core.Pipeline | None:
    """``pipeline`` itself when it is the Rust engine, else ``None`` (the
    baseline, or a wrapper such as a test double).

    A connection with the Rust codec can submit a whole socket read's gossip
    to a Rust pipeline in one call (``Connection.attach``); any other
    pipeline is fed one message at a time.
    """
    return pipeline if isinstance(pipeline, _core.Pipeline) else None
