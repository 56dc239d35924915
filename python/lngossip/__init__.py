"""lngossip: fast, safe Lightning Network gossip (BOLT #7) ingestion.

The engine is :class:`Pipeline` (Rust, from ``lngossip._core``): submit raw
messages per peer, let it drop what it has seen before any signature check,
then ``process`` batches that it verifies on every core with the GIL
released. Accepted messages make up one graph (:class:`Graph` reads it),
kept on disk in Core Lightning's ``gossip_store`` format when the pipeline
has a ``store``. :mod:`lngossip.baseline` has the same API in pure Python.
"""

from __future__ import annotations

from lngossip._core import Admission, Pipeline, ProcessResult, verify_batch
from lngossip.errors import ConfigError, GossipError, InternalError, MalformedMessage, StoreError
from lngossip.graph import Graph
from lngossip.wire import MAINNET_CHAIN_HASH, Decision, Gossip, Outcome, Policy, parse_message

__all__ = [
    "MAINNET_CHAIN_HASH",
    "Admission",
    "ConfigError",
    "Decision",
    "Gossip",
    "GossipError",
    "Graph",
    "InternalError",
    "MalformedMessage",
    "Outcome",
    "Pipeline",
    "Policy",
    "ProcessResult",
    "StoreError",
    "__version__",
    "parse_message",
    "verify_batch",
]

__version__ = "0.1.0"
