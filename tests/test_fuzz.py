"""hypothesis: arbitrary bytes, and mutations of real messages, never crash
either engine and get the same decision from both."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from lngossip import Pipeline, baseline

TYPES = [b"\x01\x00", b"\x01\x01", b"\x01\x02", b"\x01\x03", b"\x00\x10"]


def _both(msgs: list[bytes]) -> None:
    r, b = Pipeline(threads=1), baseline.Pipeline()
    got_r = [(r.submit(0, m).decision, r.submit(1, m).decision) for m in msgs]
    got_b = [(b.submit(0, m).decision, b.submit(1, m).decision) for m in msgs]
    assert got_r == got_b
    out_r = [o[3:] for o in r.process().outcomes]
    out_b = [o[3:] for o in b.process().outcomes]
    assert out_r == out_b
    assert r.counters()["decisions"] == b.counters()["decisions"]
    assert r.counters()["malformed_reasons"] == b.counters()["malformed_reasons"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=600), max_size=8))
def test_arbitrary_bytes(msgs: list[bytes]) -> None:
    _both(msgs)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(TYPES), st.binary(min_size=0, max_size=700)).map(
            lambda t: t[0] + t[1]
        ),
        max_size=6,
    )
)
def test_typed_garbage(msgs: list[bytes]) -> None:
    _both(msgs)


@st.composite
def _plausible(draw: st.DrawFn) -> bytes:
    """Messages with plausible lengths and key prefixes, random otherwise."""
    t = draw(st.sampled_from([256, 257, 258]))
    mainnet = bytes.fromhex("6fe28c0ab6f1b372c1a6a246ae63f74f931e8365e15a089c68d6190000000000")
    key = st.tuples(st.sampled_from([2, 3, 4]), st.binary(min_size=32, max_size=32)).map(
        lambda k: bytes([k[0]]) + k[1]
    )
    if t == 256:
        flen = draw(st.integers(0, 4))
        body = (
            draw(st.binary(min_size=256, max_size=256))
            + flen.to_bytes(2, "big")
            + bytes(draw(st.integers(0, 4)))
            + mainnet
            + draw(st.binary(min_size=8, max_size=8))
            + b"".join(draw(key) for _ in range(4))
        )
    elif t == 257:
        flen = draw(st.integers(0, 3))
        body = (
            draw(st.binary(min_size=64, max_size=64))
            + flen.to_bytes(2, "big")
            + bytes(flen)
            + draw(st.binary(min_size=4, max_size=4))
            + draw(key)
            + bytes(35)
            + draw(st.integers(0, 3)).to_bytes(2, "big")
            + bytes(draw(st.integers(0, 3)))
        )
    else:
        body = (
            draw(st.binary(min_size=64, max_size=64))
            + mainnet
            + draw(st.binary(min_size=8, max_size=8))
            + draw(st.binary(min_size=4, max_size=4))
            + draw(st.binary(min_size=2, max_size=2))
            + draw(st.binary(min_size=18, max_size=26))
        )
    return t.to_bytes(2, "big") + body


@settings(max_examples=300, deadline=None)
@given(st.lists(_plausible(), max_size=6))
def test_plausible_messages(msgs: list[bytes]) -> None:
    _both(msgs)
