"""Read a gossip_store with Core Lightning's own reader (pyln-client's
``Gossmap``) and print what it sees as JSON, for tests/test_graph.py.

It runs under a separate interpreter that has ``pyln-client`` installed
(``make pyln``; pyln-proto's coincurve fork must stay out of the project's
venv, see tests/pyln_peer.py). Not collected by pytest, never imported by
the tests.

Usage::

    python gossmap_probe.py STORE_PATH

Prints one JSON object::

    {"channels": <count>, "nodes": <count>,
     "directions": [[scid, direction, fee_base_msat, fee_proportional_millionths,
                     cltv_expiry_delta, htlc_minimum_msat, htlc_maximum_msat,
                     disabled, timestamp], ...],
     "announced": [[node_id_hex, alias, rgb_color_hex, [address, ...]], ...]}

``directions`` has one row per half channel Gossmap knows (a channel_update
was read), ``announced`` one row per node with a node_announcement; the
alias is Gossmap's with trailing NUL bytes removed, addresses are Gossmap's
strings (``ip:port``, ``[ipv6]:port``, ``<base32>.onion:port``, ``host:port``).
"""

from __future__ import annotations

import json
import sys
from typing import Any


def probe(path: str) -> dict[str, Any]:
    """What ``Gossmap(path)`` reads, in the shape documented above."""
    from pyln.client import Gossmap

    gm = Gossmap(path)
    directions: list[list[Any]] = []
    for scid, channel in gm.channels.items():
        for d in (0, 1):
            half = channel.get_direction(d)
            if half is None:
                continue
            directions.append(
                [
                    scid.to_int(),
                    d,
                    half.fee_base_msat,
                    half.fee_proportional_millionths,
                    half.cltv_expiry_delta,
                    half.htlc_minimum_msat,
                    half.htlc_maximum_msat,
                    bool(half.disabled),
                    half.timestamp,
                ]
            )
    announced: list[list[Any]] = []
    for node_id, node in gm.nodes.items():
        if not node.announced:
            continue
        announced.append(
            [
                node_id.nodeid.hex(),
                node.alias.rstrip("\0"),
                bytes(node.rgb).hex(),
                list(node.addresses),
            ]
        )
    return {
        "channels": len(gm.channels),
        "nodes": len(gm.nodes),
        "directions": directions,
        "announced": announced,
    }


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    json.dump(probe(argv[0]), sys.stdout, separators=(",", ":"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
