"""lngossip._core.Codec, the BOLT #8 transport in the Rust core: the spec's
vectors (with the rotated messages), byte-for-byte agreement with the Python
reference, damage, and the pipeline path (gossip submitted in the core,
``queue_full`` pausing the read with a bounded buffer)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lngossip import Pipeline
from lngossip._core import Codec
from lngossip.errors import ConfigError, GossipError
from lngossip.gen import synthetic_graph
from lngossip.net import messages as bolt
from lngossip.net.transport import CipherState, TransportError
from tests.test_transport import CK, HELLO_FRAMES, ROTATION_2, SK


def rust_pair() -> tuple[Codec, Codec]:
    """A sender and a receiver with the vectors' keys (both directions the same)."""
    return Codec(SK, CK, SK, CK), Codec(SK, CK, SK, CK)


def py_frames(cs: CipherState, msgs: list[bytes]) -> bytes:
    out = b""
    for m in msgs:
        out += cs.encrypt(b"", len(m).to_bytes(2, "big")) + cs.encrypt(b"", m)
    return out


def test_vectors_and_rotations() -> None:
    """BOLT #8 "Message Encryption Tests": messages 0, 1, 500, 501, 1000, 1001."""
    send, recv = rust_pair()
    frames = [send.encode(b"hello") for _ in range(1002)]
    for i, want in HELLO_FRAMES.items():
        assert frames[i].hex() == want, f"message {i}"
    # one more after 2004 uses is the Python reference's 1003rd frame too
    ref = CipherState(SK, CK)
    py_frames(ref, [b"hello"] * 1002)
    assert ref.chaining_key == ROTATION_2[0] and ref.nonce == 4
    assert send.encode(b"x") == py_frames(ref, [b"x"])

    data = b"".join(frames)
    got: list[bytes] = []
    rng = random.Random(8)
    i = 0
    while i < len(data):
        n = rng.choice([1, 7, 18, 39, 100, 5000])
        f = recv.feed(data[i : i + n])
        got += f.messages
        i += n
    assert got == [b"hello"] * 1002
    assert recv.buffered == 0


def test_same_bytes_as_python_reference() -> None:
    rng = random.Random(1)
    msgs = [rng.randbytes(rng.choice([0, 1, 2, 100, 300, 4000])) for _ in range(1500)]
    msgs += [b"\xab" * 65535]
    rust = Codec(SK, CK, SK, CK)
    assert rust.encode_many(msgs) == py_frames(CipherState(SK, CK), msgs)
    # and each one on its own
    rust, ref = Codec(SK, CK, SK, CK), CipherState(SK, CK)
    for m in msgs[:50]:
        assert rust.encode(m) == py_frames(ref, [m])


def test_too_long_sends_nothing() -> None:
    send, _ = rust_pair()
    with pytest.raises(TransportError) as ei:
        send.encode_many([b"a", bytes(65536)])
    assert ei.value.reason == "too_long"
    with pytest.raises(TransportError):
        send.encode(bytes(65536))
    # nothing was sealed: the next frame is the spec's first
    assert send.encode(b"hello").hex() == HELLO_FRAMES[0]


@pytest.mark.parametrize("where", [3, 18 + 2])
def test_damage_returns_what_came_before_then_fails(where: int) -> None:
    send, recv = rust_pair()
    good = send.encode_many([b"one", b"two"])
    bad = bytearray(send.encode(b"three"))
    bad[where] ^= 0x40
    f = recv.feed(good + bytes(bad) + send.encode(b"four"))
    assert f.messages == [b"one", b"two"]
    reason = "length_mac" if where < 18 else "message_mac"
    assert f.error == reason
    assert recv.failed == reason
    again = recv.feed()
    assert (again.messages, again.error) == ([], reason)


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError):
        Codec(SK[:31], CK, SK, CK)
    with pytest.raises(ConfigError):
        Codec(SK, CK, SK, CK + b"\x00")
    with pytest.raises(ConfigError):
        Codec(SK, CK, SK, CK).feed(b"", limit=0)


def test_limit_keeps_the_rest_encrypted() -> None:
    send, recv = rust_pair()
    data = send.encode_many([b"a", b"b", b"c"])
    assert recv.feed(data, limit=1).messages == [b"a"]
    assert recv.buffered == len(data) - 35
    assert recv.feed(limit=2).messages == [b"b", b"c"]
    assert recv.buffered == 0


def gossip(n: int = 40) -> list[bytes]:
    return synthetic_graph(n, max(4, n // 3), seed=3).messages()


def test_attached_gossip_goes_to_the_pipeline() -> None:
    msgs = gossip()
    ping = bolt.encode_ping(4)
    send, recv = rust_pair()
    p = Pipeline(threads=1)
    recv.attach(p, 7)
    wire = send.encode_many([ping, *msgs, ping, msgs[0], b"\x01"])
    f = recv.feed(wire)
    # non-gossip comes back in order (a 1-byte message has no type: Python decides)
    assert f.messages == [ping, ping, b"\x01"]
    assert f.gossip == len(msgs) + 1
    assert f.frames == len(msgs) + 4
    assert f.bytes == len(wire)
    assert f.count("duplicate") == 1
    assert sum(f.decisions.values()) == f.gossip
    assert f.count("queued") + f.count("orphaned") == len(msgs)
    assert p.queued == f.count("queued")
    res = p.process(100_000)
    assert {o.peer for o in res.outcomes} == {7}
    assert p.counters()["decisions"]["channel_announcement"]["accepted"] > 0


def test_queue_full_pauses_with_a_bounded_buffer() -> None:
    """A peer whose share is full stops being read: the codec keeps the refused
    message and the rest of the read, refuses more data, and resumes in order."""
    msgs = gossip(300)
    send, recv = rust_pair()
    p = Pipeline(threads=1, max_queue_messages=64, per_peer_messages=16)
    recv.attach(p, 1)
    wire = send.encode_many(msgs)
    decided = 0
    f = recv.feed(wire)
    assert f.paused and recv.paused
    # what is held is the refused message and the rest of this one read
    assert 0 < recv.buffered < len(wire)
    with pytest.raises(GossipError):
        recv.feed(b"more")
    decided += f.gossip
    rounds = 0
    while recv.paused:
        assert p.queued <= 16
        p.process(1000)
        f = recv.feed()
        decided += f.gossip
        rounds += 1
    assert rounds >= len(msgs) // 16 - 1
    assert decided == len(msgs)
    assert recv.buffered == 0
    p.process(1000)
    # the same graph as submitting everything from Python with room to spare
    ref = Pipeline(threads=1)
    for m in msgs:
        ref.submit(1, m)
    ref.process(100_000)
    assert len(p.graph) == len(ref.graph)
    assert p.graph.node_count() == ref.graph.node_count()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000), st.lists(st.integers(1, 700), min_size=1, max_size=20))
def test_arbitrary_bytes_never_raise(data: bytes, cuts: list[int]) -> None:
    """Whatever a peer sends, in whatever reads: messages or a MAC error, never
    an exception, and nothing after the first error."""
    _, recv = rust_pair()
    p = Pipeline(threads=1)
    recv.attach(p, 3)
    i, failed = 0, None
    for n in cuts * (len(data) // max(sum(cuts), 1) + 1):
        if i >= len(data):
            break
        f = recv.feed(data[i : i + n])
        i += n
        if failed is not None:
            assert (f.messages, f.gossip, f.error) == ([], 0, failed)
        failed = failed or f.error
    assert recv.buffered <= len(data)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.binary(max_size=2000), max_size=30),
    st.lists(st.integers(1, 5000), min_size=1, max_size=10),
)
def test_round_trip_in_any_reads(msgs: list[bytes], cuts: list[int]) -> None:
    send, recv = rust_pair()
    wire = send.encode_many(msgs)
    got: list[bytes] = []
    i, k = 0, 0
    while i < len(wire):
        n = cuts[k % len(cuts)]
        got += recv.feed(wire[i : i + n]).messages
        i, k = i + n, k + 1
    assert got == msgs
    assert recv.buffered == 0
