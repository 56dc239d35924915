"""Tests of :mod:`lngossip.net.transport` (BOLT #8).

* the BOLT #8 "Appendix A: Transport Test Vectors": handshake acts, session
  keys, the "hello" message encryptions at 0, 1, 500, 501, 1000 and 1001
  (two key rotations), and every failure vector;
* loopback connections on 127.0.0.1: thousands of messages both ways, the
  65535-byte limit, corrupted and truncated frames, timeouts, cancellation;
* interop with pyln-proto (Core Lightning's Python implementation), run as a
  subprocess under its own interpreter (see ``tests/pyln_peer.py``).

Every test runs its own event loop with :func:`asyncio.run` (no plugin).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from lngossip.errors import ConfigError, GossipError
from lngossip.net.transport import (
    MAX_MESSAGE_LEN,
    CipherState,
    CodecName,
    Connection,
    Handshake,
    Keys,
    TransportError,
    accept,
    connect,
)
from tests.conftest import pyln_interpreter
from tests.helpers import run
from tests.pyln_peer import make_message

H = bytes.fromhex
CODECS: list[CodecName] = ["rust", "python"]

# -- BOLT #8 Appendix A -------------------------------------------------------

INIT_LS = Keys(b"\x11" * 32)
INIT_E = Keys(b"\x12" * 32)
RESP_LS = Keys(b"\x21" * 32)
RESP_E = Keys(b"\x22" * 32)
INIT_LS_PUB = H("034f355bdcb7cc0af728ef3cceb9615d90684bb5b2ca5f859ab0f0b704075871aa")
INIT_E_PUB = H("036360e856310ce5d294e8be33fc807077dc56ac80d95d9cd4ddbd21325eff73f7")
RESP_LS_PUB = H("028d7500dd4c12685d1f568b4c2b5048e8534b873319f3a8daa612b469132ec7f7")
RESP_E_PUB = H("02466d7fcae563e5cb09a0d1870bb580344804617879a14949cf22285f1bae3f27")

ACT_ONE = H(
    "00036360e856310ce5d294e8be33fc807077dc56ac80d95d9cd4ddbd21325eff73f7"
    "0df6086551151f58b8afe6c195782c6a"
)
ACT_TWO = H(
    "0002466d7fcae563e5cb09a0d1870bb580344804617879a14949cf22285f1bae3f27"
    "6e2470b93aac583c9ef6eafca3f730ae"
)
ACT_THREE = H(
    "00b9e3a702e93e3a9948c2ed6e5fd7590a6e1c3a0344cfc9d5b57357049aa22355361aa02e"
    "55a8fc28fef5bd6d71ad0c38228dc68b1c466263b47fdf31e560e139ba"
)
CK = H("919219dbb2920afa8db80f9a51787a840bcf111ed8d588caf9ab4be716e42b01")
SK = H("969ab31b4d288cedf6218839b27a3e2140827047f2c0f01bf5c04435d43511a9")
RK = H("bb9020b8965f4df047e07f955f3c4b88418984aadc5cdb35096b9ea8fa5c3442")

# "Message Encryption Tests": the initiator sends "hello" 1001+ times
HELLO_FRAMES = {
    0: "cf2b30ddf0cf3f80e7c35a6e6730b59fe802473180f396d88a8fb0db8cbcf25d2f214cf9ea1d95",
    1: "72887022101f0b6753e0c7de21657d35a4cb2a1f5cde2650528bbc8f837d0f0d7ad833b1a256a1",
    500: "178cb9d7387190fa34db9c2d50027d21793c9bc2d40b1e14dcf30ebeeeb220f48364f7a4c68bf8",
    501: "1b186c57d44eb6de4c057c49940d79bb838a145cb528d6e8fd26dbe50a60ca2c104b56b60e45bd",
    1000: "4a2f3cc3b5e78ddb83dcb426d9863d9d9a723b0337c89dd0b005d89f8d3c05c52b76b29b740f09",
    1001: "2ecd8c8a5629d0d02ab457a0fdd0f7b90a192cd46be5ecb6ca570bfc5e268338b1a16cf4ef2d36",
}
# the key rotations the same section spells out: (ck', k') = HKDF(ck, k)
ROTATION_1 = (
    H("cc2c6e467efc8067720c2d09c139d1f77731893aad1defa14f9bf3c48d3f1d31"),
    H("3fbdc101abd1132ca3a0ae34a669d8d9ba69a587e0bb4ddd59524541cf4813d8"),
)
ROTATION_2 = (
    H("728366ed68565dc17cf6dd97330a859a6a56e87e2beef3bd828a4c4a54d8df06"),
    H("9e0477f9850dca41e42db0e4d154e3a098e5a000d995e421849fcd5df27882bd"),
)


def vector_initiator() -> Handshake:
    return Handshake.initiator(INIT_LS, RESP_LS_PUB, ephemeral=INIT_E)


def vector_responder() -> Handshake:
    return Handshake.responder(RESP_LS, ephemeral=RESP_E)


def test_vector_keys() -> None:
    assert INIT_LS.node_id == INIT_LS_PUB
    assert INIT_E.node_id == INIT_E_PUB
    assert RESP_LS.node_id == RESP_LS_PUB
    assert RESP_E.node_id == RESP_E_PUB


def test_vector_initiator_handshake() -> None:
    hs = vector_initiator()
    assert hs.remote_node_id == RESP_LS_PUB
    assert hs.act_one() == ACT_ONE
    hs.read_act_two(ACT_TWO)
    assert not hs.done
    assert hs.act_three() == ACT_THREE
    assert hs.done
    send, recv = hs.result()
    assert (send.key, recv.key) == (SK, RK)
    assert send.chaining_key == recv.chaining_key == CK
    assert send.nonce == recv.nonce == 0
    assert hs.result() == (send, recv)  # the same objects every time


def test_vector_responder_handshake() -> None:
    hs = vector_responder()
    assert hs.remote_node_id is None
    hs.read_act_one(ACT_ONE)
    assert hs.act_two() == ACT_TWO
    assert hs.read_act_three(ACT_THREE) == INIT_LS_PUB
    assert hs.remote_node_id == INIT_LS_PUB
    send, recv = hs.result()
    # "rk,sk=0x969a...,0xbb90...": the responder receives with the initiator's sk
    assert (recv.key, send.key) == (SK, RK)
    assert send.chaining_key == recv.chaining_key == CK


def hello_frames(cs: CipherState, count: int) -> list[bytes]:
    return [
        cs.encrypt(b"", (5).to_bytes(2, "big")) + cs.encrypt(b"", b"hello") for _ in range(count)
    ]


def test_vector_message_encryption_and_rotation() -> None:
    send, _ = vector_initiator_done()
    frames = hello_frames(send, 1002)
    for i, expected in HELLO_FRAMES.items():
        assert frames[i].hex() == expected, f"message {i}"
    # 1002 messages = 2004 uses: rotated twice, 4 uses into the third key
    assert (send.chaining_key, send.nonce) == (ROTATION_2[0], 4)

    _, recv = vector_responder_done()
    for i, frame in enumerate(frames):
        assert recv.decrypt(b"", frame[:18]) == b"\x00\x05", f"message {i}"
        assert recv.decrypt(b"", frame[18:]) == b"hello", f"message {i}"
    assert (recv.key, recv.chaining_key, recv.nonce) == (send.key, send.chaining_key, 4)


def test_cipher_state_rotation_steps() -> None:
    cs = CipherState(SK, CK)
    for _ in range(999):
        cs.encrypt(b"", b"")
    assert (cs.key, cs.chaining_key, cs.nonce) == (SK, CK, 999)
    cs.encrypt(b"", b"")  # the 1000th use rotates
    assert (cs.chaining_key, cs.key, cs.nonce) == (*ROTATION_1, 0)
    for _ in range(1000):
        cs.encrypt(b"", b"")
    assert (cs.chaining_key, cs.key, cs.nonce) == (*ROTATION_2, 0)


def test_cipher_state_bad_mac_leaves_state_unchanged() -> None:
    enc, dec = CipherState(SK, CK), CipherState(SK, CK)
    good = enc.encrypt(b"", b"payload")
    bad = bytearray(good)
    bad[0] ^= 1
    for wrong in (bytes(bad), good[:-1], b"", good[:15]):
        with pytest.raises(TransportError) as ei:
            dec.decrypt(b"", wrong)
        assert ei.value.reason == "message_mac"
        assert dec.nonce == 0
    assert dec.decrypt(b"", good) == b"payload"
    assert dec.nonce == 1
    with pytest.raises(ConfigError):
        CipherState(b"\x00" * 31, CK)


def vector_initiator_done() -> tuple[CipherState, CipherState]:
    hs = vector_initiator()
    hs.act_one()
    hs.read_act_two(ACT_TWO)
    hs.act_three()
    return hs.result()


def vector_responder_done() -> tuple[CipherState, CipherState]:
    hs = vector_responder()
    hs.read_act_one(ACT_ONE)
    hs.act_two()
    hs.read_act_three(ACT_THREE)
    return hs.result()


def _flip_last(b: bytes) -> bytes:
    return b[:-1] + bytes([b[-1] ^ 1])


# (name, act two input, expected reason): "transport-initiator" failure vectors
INITIATOR_FAILURES = [
    ("act2 short read", ACT_TWO[:-1], "eof"),
    ("act2 bad version", b"\x01" + ACT_TWO[1:], "handshake_version"),
    ("act2 bad key serialization", b"\x00\x04" + ACT_TWO[2:], "bad_pubkey"),
    ("act2 bad MAC", _flip_last(ACT_TWO), "handshake_mac"),
]

# (name, act one input, act three input or None, expected reason): "transport-responder"
BAD_RS_ACT_THREE = H(
    "00bfe3a702e93e3a9948c2ed6e5fd7590a6e1c3a0344cfc9d5b57357049aa2235536ad09a8ee"
    "351870c2bb7f78b754a26c6cef79a98d25139c856d7efd252c2ae73c"
)
RESPONDER_FAILURES = [
    ("act1 short read", ACT_ONE[:-1], None, "eof"),
    ("act1 bad version", b"\x01" + ACT_ONE[1:], None, "handshake_version"),
    ("act1 bad key serialization", b"\x00\x04" + ACT_ONE[2:], None, "bad_pubkey"),
    ("act1 bad MAC", _flip_last(ACT_ONE), None, "handshake_mac"),
    ("act3 bad version", ACT_ONE, b"\x01" + ACT_THREE[1:], "handshake_version"),
    ("act3 short read", ACT_ONE, ACT_THREE[:-1], "eof"),
    ("act3 bad MAC for ciphertext", ACT_ONE, b"\x00\xc9" + ACT_THREE[2:], "handshake_mac"),
    ("act3 bad rs", ACT_ONE, BAD_RS_ACT_THREE, "bad_pubkey"),
    ("act3 bad MAC", ACT_ONE, _flip_last(ACT_THREE), "handshake_mac"),
]


@pytest.mark.parametrize(("name", "act_two", "reason"), INITIATOR_FAILURES)
def test_vector_initiator_failures(name: str, act_two: bytes, reason: str) -> None:
    hs = vector_initiator()
    assert hs.act_one() == ACT_ONE
    with pytest.raises(TransportError) as ei:
        hs.read_act_two(act_two)
    assert ei.value.reason == reason, name
    assert isinstance(ei.value, ConnectionError) and isinstance(ei.value, GossipError)
    with pytest.raises(GossipError, match="already failed"):
        hs.act_three()
    with pytest.raises(GossipError, match="not complete"):
        hs.result()


@pytest.mark.parametrize(("name", "act_one", "act_three", "reason"), RESPONDER_FAILURES)
def test_vector_responder_failures(
    name: str, act_one: bytes, act_three: bytes | None, reason: str
) -> None:
    hs = vector_responder()
    with pytest.raises(TransportError) as ei:
        hs.read_act_one(act_one)
        assert hs.act_two() == ACT_TWO
        assert act_three is not None
        hs.read_act_three(act_three)
    assert ei.value.reason == reason, name
    assert hs.remote_node_id is None
    assert not hs.done


def test_handshake_misuse() -> None:
    with pytest.raises(ConfigError):
        Handshake.initiator(INIT_LS, b"\x04" + RESP_LS_PUB[1:])
    with pytest.raises(ConfigError):
        Handshake.initiator(INIT_LS, RESP_LS_PUB[:32])
    hs = vector_initiator()
    with pytest.raises(GossipError, match="out of order"):
        hs.read_act_two(ACT_TWO)
    with pytest.raises(GossipError, match="out of order"):
        hs.read_act_one(ACT_ONE)  # a responder's method
    hs.act_one()
    with pytest.raises(GossipError, match="out of order"):
        hs.act_one()
    resp = vector_responder()
    with pytest.raises(GossipError, match="out of order"):
        resp.act_two()


def test_transport_error() -> None:
    e = TransportError("length_mac", "detail")
    assert (e.reason, e.detail, str(e), e.errno) == (
        "length_mac",
        "detail",
        "length_mac: detail",
        None,
    )
    assert isinstance(e, OSError)
    with pytest.raises(ValueError):
        TransportError("nonsense")


# -- Keys ----------------------------------------------------------------------


def test_keys(tmp_path: Path) -> None:
    k = Keys()
    assert len(k.secret) == 32 and len(k.node_id) == 33 and k.node_id[0] in (2, 3)
    assert Keys().node_id != k.node_id
    assert k.secret.hex() not in repr(k)
    path = tmp_path / "node.key"
    k.to_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == k.secret.hex() + "\n"
    assert Keys.from_file(path).node_id == k.node_id
    # overwriting a world-readable file leaves it 0600
    path.chmod(0o644)
    INIT_LS.to_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Keys.from_file(str(path)).node_id == INIT_LS_PUB
    assert [p.name for p in tmp_path.iterdir()] == ["node.key"]  # no temp file left


@pytest.mark.parametrize(
    "secret", [b"", b"\x01" * 31, b"\x01" * 33, b"\x00" * 32, b"\xff" * 32], ids=repr
)
def test_keys_bad_secret(secret: bytes) -> None:
    with pytest.raises(ConfigError):
        Keys(secret)


@pytest.mark.parametrize("text", ["", "zz" * 32, "11" * 31, "00" * 32])
def test_keys_bad_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.key"
    path.write_text(text)
    with pytest.raises(ConfigError):
        Keys.from_file(path)


# -- loopback helpers ------------------------------------------------------------

LOCAL = "127.0.0.1"


@contextlib.asynccontextmanager
async def listening(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[int]:
    """A server on 127.0.0.1 running ``handler`` per connection; yields its
    port. On exit every accepted stream is closed, whatever its handler did
    (an unclosed one is a ResourceWarning, an error here)."""
    writers: list[asyncio.StreamWriter] = []

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await handler(reader, writer)

    server = await asyncio.start_server(tracked, LOCAL, 0, limit=32 * 1024)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in writers:
            await close_writer(writer)
        await server.wait_closed()


@contextlib.asynccontextmanager
async def bolt8_server(
    keys: Keys, timeout: float = 5.0, codec: CodecName = "rust"
) -> AsyncIterator[tuple[int, asyncio.Future[Connection]]]:
    """A server that runs :func:`accept` on its first connection; yields
    (port, future of the accepted Connection or of accept's exception)."""
    fut: asyncio.Future[Connection] = asyncio.get_running_loop().create_future()
    accepted: list[Connection] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            conn = await accept(reader, writer, keys, timeout=timeout, codec=codec)
        except Exception as e:
            if not fut.done():
                fut.set_exception(e)
            return
        accepted.append(conn)
        if not fut.done():
            fut.set_result(conn)

    async with listening(handler) as port:
        try:
            yield port, fut
        finally:
            for conn in accepted:
                await conn.close()
            if fut.done() and not fut.cancelled():
                fut.exception()  # retrieved: no "never retrieved" log


@contextlib.asynccontextmanager
async def bolt8_pair(
    client_keys: Keys | None = None,
    server_keys: Keys | None = None,
    codec: CodecName = "rust",
    server_codec: CodecName | None = None,
) -> AsyncIterator[tuple[Connection, Connection]]:
    """(client, server) Connections over loopback TCP."""
    ck, sk = client_keys or Keys(), server_keys or Keys()
    async with bolt8_server(sk, codec=server_codec or codec) as (port, fut):
        client = await connect(LOCAL, port, ck, sk.node_id, timeout=5.0, codec=codec)
        try:
            server = await asyncio.wait_for(fut, 5.0)
            assert client.remote_node_id == sk.node_id
            assert server.remote_node_id == ck.node_id
            yield client, server
        finally:
            await client.close()


async def close_writer(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def raw_initiator(
    port: int, server_id: bytes
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, CipherState, CipherState]:
    """Handshake by hand (to craft frames): reader, writer, send, recv."""
    reader, writer = await asyncio.open_connection(LOCAL, port)
    hs = Handshake.initiator(Keys(), server_id)
    writer.write(hs.act_one())
    hs.read_act_two(await reader.readexactly(50))
    writer.write(hs.act_three())
    send, recv = hs.result()
    return reader, writer, send, recv


def frame(cs: CipherState, msg: bytes) -> tuple[bytes, bytes]:
    return cs.encrypt(b"", len(msg).to_bytes(2, "big")), cs.encrypt(b"", msg)


# -- loopback tests --------------------------------------------------------------


def loopback_messages(seed: int, n: int) -> list[bytes]:
    msgs = []
    for i in range(n):
        size = (i * 7919 + seed) % 3000
        if i % 400 == 7:
            size = 40000 + i  # a few big ones
        msgs.append(bytes([(i + seed) & 0xFF]) * size)
    return msgs


@pytest.mark.parametrize("codec", CODECS)
def test_loopback_round_trip(codec: CodecName) -> None:
    a_msgs, b_msgs = loopback_messages(1, 3000), loopback_messages(2, 3000)

    async def send_all(conn: Connection, msgs: list[bytes]) -> None:
        for m in msgs:
            await conn.send(m)

    async def recv_all(conn: Connection, n: int) -> list[bytes]:
        return [await conn.recv() for _ in range(n)]

    async def main() -> None:
        async with bolt8_pair(codec=codec) as (client, server):
            assert (client.codec, server.codec) == (codec, codec)
            # bounded write buffer (a private detail, checked here once)
            assert client._writer.transport.get_write_buffer_limits()[1] == 256 * 1024
            _, _, got_b, got_a = await asyncio.gather(
                send_all(client, a_msgs),
                send_all(server, b_msgs),
                recv_all(client, len(b_msgs)),
                recv_all(server, len(a_msgs)),
            )
            assert got_a == a_msgs
            assert got_b == b_msgs
            a_bytes = sum(34 + len(m) for m in a_msgs)
            assert (client.messages_sent, client.bytes_sent) == (3000, a_bytes)
            assert (server.messages_received, server.bytes_received) == (3000, a_bytes)
            assert server.messages_sent == client.messages_received == 3000
            assert server.bytes_sent == client.bytes_received

            biggest = bytes(range(256)) * 255 + bytes(255)
            assert len(biggest) == MAX_MESSAGE_LEN
            await client.send(biggest)
            assert await server.recv() == biggest
            await server.send(biggest)
            assert await client.recv() == biggest
            await client.send(b"")
            assert await server.recv() == b""

            with pytest.raises(TransportError) as ei:
                await client.send(bytes(MAX_MESSAGE_LEN + 1))
            assert ei.value.reason == "too_long"
            assert client.messages_sent == 3002  # nothing was sent
            await client.send(b"still fine")
            assert await server.recv() == b"still fine"

    run(main)


def test_wrong_remote_node_id() -> None:
    """A responder that is not the node we dial fails act one's MAC and hangs up."""

    async def main() -> None:
        async with bolt8_server(Keys()) as (port, fut):
            with pytest.raises(TransportError) as ei:
                await connect(LOCAL, port, Keys(), Keys().node_id, timeout=5.0)
            assert ei.value.reason == "eof"
            with pytest.raises(TransportError) as ei:
                await fut
            assert ei.value.reason == "handshake_mac"

    run(main)


def test_accept_bad_version_over_network() -> None:
    async def main() -> None:
        keys = Keys()
        async with bolt8_server(keys) as (port, fut):
            reader, writer = await asyncio.open_connection(LOCAL, port)
            try:
                act_one = Handshake.initiator(Keys(), keys.node_id).act_one()
                writer.write(b"\x01" + act_one[1:])
                with pytest.raises(TransportError) as ei:
                    await fut
                assert ei.value.reason == "handshake_version"
                assert await reader.read() == b""  # aborted without a reply
            finally:
                await close_writer(writer)

    run(main)


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("where", ["length", "body"])
def test_corrupted_frame(where: str, codec: CodecName) -> None:
    async def main() -> None:
        keys = Keys()
        async with bolt8_server(keys, codec=codec) as (port, fut):
            reader, writer, send, _ = await raw_initiator(port, keys.node_id)
            try:
                conn = await fut
                header, body = frame(send, b"first")
                writer.write(header + body)
                assert await conn.recv() == b"first"
                header, body = frame(send, b"second")
                if where == "length":
                    header = _flip_last(header)
                else:
                    body = _flip_last(body)
                writer.write(header + body)
                reason = "length_mac" if where == "length" else "message_mac"
                for _ in range(2):  # and again: the connection stays failed
                    with pytest.raises(TransportError) as ei:
                        await conn.recv()
                    assert ei.value.reason == reason
                assert conn.messages_received == 1
                assert await reader.read() == b""  # the receiver hung up
            finally:
                await close_writer(writer)

    run(main)


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("cut", [0, 5, 18, 20])
def test_eof_mid_frame(cut: int, codec: CodecName) -> None:
    """The peer closes after ``cut`` bytes of a frame (0: at a frame boundary)."""

    async def main() -> None:
        keys = Keys()
        async with bolt8_server(keys, codec=codec) as (port, fut):
            _, writer, send, _ = await raw_initiator(port, keys.node_id)
            try:
                conn = await fut
                header, body = frame(send, b"some message")
                writer.write((header + body)[:cut])
                writer.write_eof()
                with pytest.raises(TransportError) as ei:
                    await conn.recv()
                assert ei.value.reason == "eof"
                with pytest.raises(TransportError):
                    await conn.recv()
            finally:
                await close_writer(writer)

    run(main)


@pytest.mark.parametrize("codec", CODECS)
def test_recv_is_cancel_safe(codec: CodecName) -> None:
    async def main() -> None:
        keys = Keys()
        async with bolt8_server(keys, codec=codec) as (port, fut):
            _, writer, send, _ = await raw_initiator(port, keys.node_id)
            try:
                conn = await fut
                # cancelled while waiting for the length prefix
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(conn.recv(), 0.05)
                header, body = frame(send, b"one")
                writer.write(header + body[:2])
                await asyncio.sleep(0.05)
                writer.write(body[2:])
                assert await conn.recv() == b"one"
                # cancelled while waiting for the body: the length is kept
                header, body = frame(send, b"two" * 100)
                writer.write(header + body[:10])
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(conn.recv(), 0.05)
                writer.write(body[10:])
                assert await conn.recv() == b"two" * 100
                assert conn.messages_received == 2
            finally:
                await close_writer(writer)

    run(main)


def test_connect_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            await reader.read()
        await close_writer(writer)

    async def main() -> None:
        async with listening(silent) as port:
            start = time.monotonic()
            with pytest.raises(TransportError) as ei:
                await connect(LOCAL, port, Keys(), Keys().node_id, timeout=0.3)
            elapsed = time.monotonic() - start
            assert ei.value.reason == "timeout"
            assert 0.25 <= elapsed < 5.0

    run(main)


def test_accept_timeout() -> None:
    async def main() -> None:
        async with bolt8_server(Keys(), timeout=0.3) as (port, fut):
            reader, writer = await asyncio.open_connection(LOCAL, port)
            try:
                start = time.monotonic()
                with pytest.raises(TransportError) as ei:
                    await fut
                assert ei.value.reason == "timeout"
                assert time.monotonic() - start < 5.0
                assert await reader.read() == b""  # the responder hung up
            finally:
                await close_writer(writer)

    run(main)


def test_timeout_must_be_positive() -> None:
    async def main() -> None:
        with pytest.raises(ConfigError):
            await connect(LOCAL, 9, Keys(), Keys().node_id, timeout=0)

    run(main)


@pytest.mark.parametrize("codec", CODECS)
def test_connection_frames_match_vectors(codec: CodecName) -> None:
    """Connection.send writes exactly the spec's frames; Connection.recv reads them."""

    async def main() -> None:
        a, b = socket.socketpair()
        c, d = socket.socketpair()
        ra, wa = await asyncio.open_connection(sock=a)
        rb, wb = await asyncio.open_connection(sock=b)
        _, wc = await asyncio.open_connection(sock=c)
        rd, wd = await asyncio.open_connection(sock=d)
        try:
            send, recv = vector_initiator_done()
            sender = Connection(ra, wa, send, recv, RESP_LS_PUB, codec=codec)
            for _ in range(1002):
                await sender.send(b"hello")
            frames = [await rb.readexactly(39) for _ in range(1002)]  # 18 + 5 + 16
            for i, expected in HELLO_FRAMES.items():
                assert frames[i].hex() == expected, f"message {i}"

            send, recv = vector_responder_done()
            receiver = Connection(rd, wd, send, recv, INIT_LS_PUB, codec=codec)
            wc.write(b"".join(frames))
            for _ in range(1002):
                assert await receiver.recv() == b"hello"
            assert receiver.bytes_received == 39 * 1002
        finally:
            for w in (wa, wb, wc, wd):
                await close_writer(w)

    run(main)


# -- interop with pyln-proto ---------------------------------------------------------

PYLN_PEER = Path(__file__).with_name("pyln_peer.py")
INTEROP_COUNT = 1100  # 2200 nonces each way: two key rotations per direction


@pytest.fixture
def pyln_python() -> str:
    """The interpreter with pyln-proto (``make pyln``)."""
    return pyln_interpreter("import pyln.proto.wire")


async def _finish(proc: asyncio.subprocess.Process) -> tuple[str, str]:
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return out.decode(), err.decode()


@pytest.mark.parametrize("codec", CODECS)
def test_interop_pyln_responder(pyln_python: str, codec: CodecName) -> None:
    """Our initiator -> pyln-proto's LightningServerSocket."""
    ours, theirs = Keys(), Keys()

    async def main() -> None:
        proc = await asyncio.create_subprocess_exec(
            pyln_python,
            str(PYLN_PEER),
            "server",
            theirs.secret.hex(),
            str(INTEROP_COUNT),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None
            line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
            assert line.startswith("PORT "), line
            conn = await connect(LOCAL, int(line.split()[1]), ours, theirs.node_id, codec=codec)
            try:
                for i in range(INTEROP_COUNT):
                    msg = make_message(i)
                    await conn.send(msg)
                    assert await conn.recv() == b"pyln:" + msg, f"message {i}"
                with pytest.raises(TransportError) as ei:
                    await conn.recv()  # pyln hung up after COUNT messages
                assert ei.value.reason == "eof"
            finally:
                await conn.close()
        finally:
            out, err = await _finish(proc)
        assert proc.returncode == 0, err
        assert f"REMOTE {ours.node_id.hex()}" in out.splitlines(), out
        assert "DONE" in out.splitlines(), out

    run(main)


@pytest.mark.parametrize("codec", CODECS)
def test_interop_pyln_initiator(pyln_python: str, codec: CodecName) -> None:
    """pyln-proto's connect() -> our accept()."""
    ours, theirs = Keys(), Keys()

    async def main() -> None:
        async with bolt8_server(ours, timeout=30, codec=codec) as (port, fut):
            proc = await asyncio.create_subprocess_exec(
                pyln_python,
                str(PYLN_PEER),
                "client",
                theirs.secret.hex(),
                ours.node_id.hex(),
                str(port),
                str(INTEROP_COUNT),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            try:
                conn = await asyncio.wait_for(fut, 60)
                assert conn.remote_node_id == theirs.node_id
                for i in range(INTEROP_COUNT):
                    msg = await conn.recv()
                    assert msg == make_message(i), f"message {i}"
                    await conn.send(b"ours:" + msg)
                with pytest.raises(TransportError) as ei:
                    await conn.recv()
                assert ei.value.reason == "eof"
            finally:
                out, err = await _finish(proc)
            assert proc.returncode == 0, err
            assert "DONE" in out.splitlines(), out

    run(main)
