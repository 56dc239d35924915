"""Run one ingest of the topology dataset in a fresh process and print its
peak RSS: ``python -m benches.rss_probe ENGINE PEERS`` (used by B3).

Streams the compressed file (nothing preloaded), so the figure is what
``lngossip ingest --peers PEERS`` needs.
"""

from __future__ import annotations

import json
import sys

from lngossip import readers
from lngossip.engine import make_pipeline
from lngossip.ingest import replay_as_peers, run

if __name__ == "__main__":
    engine, peers, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    report = run(
        make_pipeline(engine),
        replay_as_peers(readers.iter_messages(path), peers),
        engine=engine,
    )
    print(json.dumps(report.to_json()))
