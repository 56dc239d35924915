"""The engine seam (:mod:`lngossip.engine`) and the BOLT #7 lengths every
reader of raw messages shares (:mod:`lngossip.wire`)."""

from __future__ import annotations

import io

import pytest

from lngossip import _core, baseline, gen, readers
from lngossip.engine import ENGINES, make_pipeline, rust_pipeline
from lngossip.errors import MalformedMessage
from lngossip.wire import CHANNEL_ANNOUNCEMENT_MIN_LEN, MIN_LEN, parse_message


def test_make_pipeline_by_name() -> None:
    assert ENGINES == ("rust", "baseline")
    rust = make_pipeline("rust", policy="live", threads=1)
    python = make_pipeline("baseline", policy="live", threads=1)
    assert isinstance(rust, _core.Pipeline) and isinstance(python, baseline.Pipeline)
    assert rust.policy == python.policy == "live"
    with pytest.raises(ValueError, match="engine must be one of"):
        make_pipeline("cuda")  # type: ignore[arg-type]


def test_rust_pipeline_picks_the_core_only() -> None:
    """The node attaches a Rust codec to the core's pipeline only: never to
    the baseline or to a wrapper of either."""
    rust = make_pipeline("rust")
    assert rust_pipeline(rust) is rust
    assert rust_pipeline(make_pipeline("baseline")) is None

    class Wrapper:
        def __getattr__(self, name: str) -> object:
            return getattr(rust, name)

    assert rust_pipeline(Wrapper()) is None  # type: ignore[arg-type]


def test_channel_announcement_min_len_counts_the_type() -> None:
    """432 bytes with the 2-byte type (BOLT #7's 430 after it): the shortest
    generated announcement has exactly that many, and one byte less is too
    short for the Python parser, both engines and the GSP reader alike."""
    g = gen.synthetic_graph(2, 10)
    ann = next(m for m in g.messages() if m[:2] == b"\x01\x00")
    assert len(ann) == CHANNEL_ANNOUNCEMENT_MIN_LEN == MIN_LEN[256] == 432
    assert parse_message(ann).short_channel_id is not None
    short = ann[:-1]
    with pytest.raises(MalformedMessage, match="too_short"):
        parse_message(short)
    for engine in ENGINES:
        a = make_pipeline(engine).submit(0, short)
        assert (a.decision, a.reason) == ("malformed", "too_short"), engine
    for msg, plausible in ((ann, True), (short, False)):
        data = b"GSP\x01" + readers.bigsize_encode(len(msg)) + msg
        rep = readers.ReadReport(path="mem")
        assert (list(readers.read_gsp(io.BytesIO(data), rep)) == [msg]) is plausible
