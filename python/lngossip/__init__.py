"""lngossip: fast, safe Lightning Network gossip (BOLT #7) ingestion.

The engine is :class:`Pipeline` (Rust, from ``lngossip._core``): submit raw
messages per peer, let it drop what it has seen before any signature check,
then ``process`` batches that it verifies on every core with the GIL
released. :mod:`lngossip.baseline` has the same API in pure Python.
"""

from __future__ import annotations

from lngossip._core import Admission, Pipeline, ProcessResult, verify_batch
from lngossip.errors import ConfigError, GossipError, InternalError, MalformedMessage
from lngossip.wire import MAINNET_CHAIN_HASH, Decision, Gossip, parse_message

__all__ = [
    "MAINNET_CHAIN_HASH",
    "Admission",
    "ConfigError",
    "Decision",
    "Gossip",
    "GossipError",
    "InternalError",
    "MalformedMessage",
    "Pipeline",
    "ProcessResult",
    "__version__",
    "parse_message",
    "verify_batch",
]

__version__ = "0.1.0"
