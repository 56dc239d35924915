"""Checks of :mod:`lngossip.gen` through an independent path.

Signatures are verified with the ``secp256k1`` package (not coincurve, which
signs them), and messages are parsed with the small helpers below rather
than with :mod:`lngossip.wire` or the Rust core.
"""

from __future__ import annotations

import hashlib
import statistics
from collections import Counter
from dataclasses import dataclass

import pytest
import secp256k1

from lngossip import gen

# ---------------------------------------------------------------------------
# Data-independent helpers: BOLT #7 layouts, written out again on purpose.
# ---------------------------------------------------------------------------

CHANNEL_ANNOUNCEMENT, NODE_ANNOUNCEMENT, CHANNEL_UPDATE = 256, 257, 258
SIGNED_FROM = {CHANNEL_ANNOUNCEMENT: 258, NODE_ANNOUNCEMENT: 66, CHANNEL_UPDATE: 66}
MAINNET = bytes.fromhex("6fe28c0ab6f1b372c1a6a246ae63f74f931e8365e15a089c68d6190000000000")


def sha256d(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def u(msg: bytes, off: int, size: int) -> int:
    return int.from_bytes(msg[off : off + size], "big")


def verify(pubkey33: bytes, sig64: bytes, signed: bytes) -> bool:
    """Compact ECDSA signature check of SHA256d(signed) with libsecp256k1 (rejects high-S)."""
    pub = secp256k1.PublicKey(pubkey33, raw=True)
    sig = pub.ecdsa_deserialize_compact(sig64)
    return bool(pub.ecdsa_verify(sha256d(signed), sig, raw=True))


@dataclass
class Ann:
    msg: bytes
    sigs: list[bytes]
    features: bytes
    chain_hash: bytes
    scid: int
    keys: list[bytes]  # node_id_1, node_id_2, bitcoin_key_1, bitcoin_key_2


def parse_ann(msg: bytes) -> Ann:
    assert u(msg, 0, 2) == CHANNEL_ANNOUNCEMENT
    sigs = [msg[2 + 64 * i : 66 + 64 * i] for i in range(4)]
    flen = u(msg, 258, 2)
    p = 260 + flen
    keys = [msg[p + 40 + 33 * i : p + 73 + 33 * i] for i in range(4)]
    assert len(msg) == p + 40 + 4 * 33
    return Ann(msg, sigs, msg[260:p], msg[p : p + 32], u(msg, p + 32, 8), keys)


def ann_valid(a: Ann) -> bool:
    signed = a.msg[258:]
    return all(verify(k, s, signed) for k, s in zip(a.keys, a.sigs, strict=True))


@dataclass
class Upd:
    msg: bytes
    chain_hash: bytes
    scid: int
    timestamp: int
    message_flags: int
    channel_flags: int


def parse_upd(msg: bytes) -> Upd:
    assert u(msg, 0, 2) == CHANNEL_UPDATE
    return Upd(msg, msg[66:98], u(msg, 98, 8), u(msg, 106, 4), msg[110], msg[111])


@dataclass
class NodeAnn:
    msg: bytes
    features: bytes
    timestamp: int
    node_id: bytes
    alias: bytes
    addresses: bytes


def parse_node(msg: bytes) -> NodeAnn:
    assert u(msg, 0, 2) == NODE_ANNOUNCEMENT
    flen = u(msg, 66, 2)
    p = 68 + flen
    addrlen = u(msg, p + 72, 2)
    assert len(msg) == p + 74 + addrlen
    return NodeAnn(
        msg, msg[68:p], u(msg, p, 4), msg[p + 4 : p + 37], msg[p + 40 : p + 72], msg[p + 74 :]
    )


def node_valid(n: NodeAnn) -> bool:
    return verify(n.node_id, n.msg[2:66], n.msg[66:])


def upd_valid(upd: Upd, anns: dict[int, Ann]) -> bool:
    """Signed by the node of ``upd``'s direction in the channel's announcement."""
    ann = anns.get(upd.scid)
    if ann is None:
        return False
    return verify(ann.keys[upd.channel_flags & 1], upd.msg[2:66], upd.msg[66:])


def truncated(msg: bytes) -> bool:
    """Shorter than its fixed layout (known types only), or not ending where its lengths say."""
    kind = u(msg, 0, 2)
    if kind == CHANNEL_ANNOUNCEMENT:
        return len(msg) < 432 or len(msg) != 432 + u(msg, 258, 2)
    if kind == CHANNEL_UPDATE:
        return len(msg) < 138
    if len(msg) < 142:
        return True
    flen = u(msg, 66, 2)
    return len(msg) != 142 + flen + u(msg, 68 + flen + 72, 2)


# ---------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def graph() -> gen.SyntheticGraph:
    return gen.synthetic_graph(300, 80)


@pytest.fixture(scope="module")
def anns(graph: gen.SyntheticGraph) -> dict[int, Ann]:
    return {a.scid: a for a in map(parse_ann, graph.channel_announcements)}


# ---------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------


def test_constants() -> None:
    assert gen.MAINNET_CHAIN_HASH == MAINNET
    assert gen.SIGNED_FROM == SIGNED_FROM


def test_private_key_derivation() -> None:
    key = gen.private_key("node", 7)
    assert key.secret == hashlib.sha256(b"lngossip-demo/node/7").digest()
    assert gen.private_key("node", 7).secret == key.secret
    assert gen.private_key("bitcoin", 7).secret != key.secret
    nid = gen.node_id(key)
    assert len(nid) == 33 and nid[0] in (2, 3)
    assert secp256k1.PrivateKey(key.secret, raw=True).pubkey.serialize() == nid


def test_scid() -> None:
    assert gen.scid(700_000, 1234, 1) == (700_000 << 40) | (1234 << 16) | 1
    assert gen.scid(0, 0, 0) == 0
    assert gen.scid(2**24 - 1, 2**24 - 1, 2**16 - 1) == 2**64 - 1
    for bad in ((2**24, 0, 0), (0, 2**24, 0), (0, 0, 2**16), (-1, 0, 0)):
        with pytest.raises(ValueError):
            gen.scid(*bad)


def test_flip_bit() -> None:
    assert gen.flip_bit(b"\x00\x10", 1, 4) == b"\x00\x00"
    assert gen.flip_bit(b"\x00\x00", 0) == b"\x01\x00"
    assert gen.flip_bit(b"\x00\x00", 0, 7) == b"\x80\x00"
    with pytest.raises(ValueError):
        gen.flip_bit(b"\x00", 1)
    with pytest.raises(ValueError):
        gen.flip_bit(b"\x00", 0, 8)


def test_channel_announcement_orders_nodes_with_their_bitcoin_keys() -> None:
    n = [gen.private_key("t-node", i) for i in range(2)]
    b = [gen.private_key("t-btc", i) for i in range(2)]
    sid = gen.scid(800_000, 5, 0)
    one = gen.channel_announcement(sid, n[0], n[1], b[0], b[1])
    other = gen.channel_announcement(sid, n[1], n[0], b[1], b[0])
    assert one == other
    a = parse_ann(one)
    assert len(one) == 432  # 430-byte payload + 2-byte type, empty features
    assert a.keys[0] < a.keys[1]
    owner = {gen.node_id(n[i]): gen.node_id(b[i]) for i in range(2)}
    assert owner[a.keys[0]] == a.keys[2] and owner[a.keys[1]] == a.keys[3]
    assert a.scid == sid and a.chain_hash == MAINNET and a.features == b""
    assert ann_valid(a)
    with_features = parse_ann(gen.channel_announcement(sid, *n, *b, features=b"\x01\x00"))
    assert len(with_features.msg) == 434 and with_features.features == b"\x01\x00"
    assert ann_valid(with_features)
    with pytest.raises(ValueError):
        gen.channel_announcement(sid, n[0], n[0], b[0], b[1])


def test_channel_update_fields_and_signer() -> None:
    n = [gen.private_key("t-node", i) for i in range(2)]
    sid = gen.scid(800_000, 5, 1)
    ids = sorted(gen.node_id(k) for k in n)
    for direction in (0, 1):
        signer = gen.update_signer_for(direction, n[0], n[1])
        assert gen.node_id(signer) == ids[direction]
        assert gen.update_signer_for(direction, n[1], n[0]) is signer
        msg = gen.channel_update(
            sid,
            signer,
            direction=direction,
            timestamp=1_700_000_000,
            disabled=True,
            cltv_expiry_delta=40,
            htlc_minimum_msat=1,
            fee_base_msat=2,
            fee_proportional_millionths=3,
            htlc_maximum_msat=4,
        )
        assert len(msg) == 138
        upd = parse_upd(msg)
        assert (upd.scid, upd.timestamp, upd.chain_hash) == (sid, 1_700_000_000, MAINNET)
        assert upd.message_flags == 1 and upd.channel_flags == direction | 2
        assert (u(msg, 112, 2), u(msg, 114, 8), u(msg, 122, 4), u(msg, 126, 4)) == (40, 1, 2, 3)
        assert u(msg, 130, 8) == 4
        assert verify(ids[direction], msg[2:66], msg[66:])
        assert not verify(ids[1 - direction], msg[2:66], msg[66:])


def test_node_announcement_layout() -> None:
    key = gen.private_key("t-node", 0)
    addr = b"\x01" + bytes((203, 0, 113, 9)) + (9735).to_bytes(2, "big")
    msg = gen.node_announcement(
        key, timestamp=1_700_000_000, alias="héllo", rgb_color=b"\x01\x02\x03", addresses=addr
    )
    assert len(msg) == 142 + len(addr)
    n = parse_node(msg)
    assert n.node_id == gen.node_id(key) and n.timestamp == 1_700_000_000
    assert n.alias == "héllo".encode().ljust(32, b"\x00") and n.addresses == addr
    assert node_valid(n)
    with pytest.raises(ValueError):
        gen.node_announcement(key, timestamp=0, alias="x" * 33)


# ---------------------------------------------------------------------------
# The synthetic graph
# ---------------------------------------------------------------------------


def test_graph_sizes_and_order(graph: gen.SyntheticGraph) -> None:
    assert len(graph.channel_announcements) == 300
    assert len(graph.channel_updates) == 600
    assert len(graph.node_announcements) == 80
    assert graph.messages() == [
        *graph.channel_announcements,
        *graph.channel_updates,
        *graph.node_announcements,
    ]


def test_every_channel_announcement_verifies(anns: dict[int, Ann]) -> None:
    assert len(anns) == 300  # distinct short_channel_ids
    bitcoin_keys: list[bytes] = []
    for a in anns.values():
        assert len(a.msg) == 432 and a.features == b"" and a.chain_hash == MAINNET
        assert a.keys[0] < a.keys[1]  # also excludes self-channels
        assert ann_valid(a)
        bitcoin_keys += a.keys[2:]
    assert len(set(bitcoin_keys)) == len(bitcoin_keys)


def test_every_channel_update_verifies(graph: gen.SyntheticGraph, anns: dict[int, Ann]) -> None:
    directions: Counter[int] = Counter()
    for msg in graph.channel_updates:
        assert len(msg) == 138
        upd = parse_upd(msg)
        assert upd.message_flags == 1 and upd.chain_hash == MAINNET
        assert upd_valid(upd, anns)
        directions[upd.scid] += 1 << (upd.channel_flags & 1)
    assert directions == dict.fromkeys(anns, 3)  # both directions of every channel


def test_every_node_announcement_verifies(graph: gen.SyntheticGraph, anns: dict[int, Ann]) -> None:
    with_channel = {k for a in anns.values() for k in a.keys[:2]}
    ids = []
    for msg in graph.node_announcements:
        n = parse_node(msg)
        assert len(msg) == 142 + len(n.features) + len(n.addresses)
        assert node_valid(n)
        ids.append(n.node_id)
    assert len(set(ids)) == 80
    assert set(ids) == with_channel


def test_graph_is_deterministic(graph: gen.SyntheticGraph) -> None:
    assert gen.synthetic_graph(300, 80) == graph
    assert gen.synthetic_graph(300, 80, seed=2) != graph


def test_graph_is_hub_heavy(anns: dict[int, Ann]) -> None:
    degree = Counter(k for a in anns.values() for k in a.keys[:2])
    assert len(degree) == 80
    assert max(degree.values()) >= 10 * statistics.median(degree.values())


def test_timestamps_are_near_base(graph: gen.SyntheticGraph) -> None:
    base = 1_767_225_600
    stamps = [parse_upd(m).timestamp for m in graph.channel_updates]
    stamps += [parse_node(m).timestamp for m in graph.node_announcements]
    assert all(base <= t < base + 86_400 for t in stamps)


@pytest.mark.parametrize("kind", ["channel_announcement", "channel_update", "node_announcement"])
def test_flip_bit_in_signed_range_breaks_signature(
    graph: gen.SyntheticGraph, anns: dict[int, Ann], kind: str
) -> None:
    msg = getattr(graph, kind + "s")[5]
    start = SIGNED_FROM[u(msg, 0, 2)]

    def valid(m: bytes) -> bool:
        if kind == "channel_announcement":
            # Check against the genuine keys: a flip inside a key changes the key.
            sigs = [m[2 + 64 * i : 66 + 64 * i] for i in range(4)]
            return all(
                verify(k, s, m[258:]) for k, s in zip(parse_ann(msg).keys, sigs, strict=True)
            )
        if kind == "channel_update":
            return upd_valid(parse_upd(m), anns) and parse_upd(m).scid == parse_upd(msg).scid
        return verify(parse_node(msg).node_id, m[2:66], m[66:])

    assert valid(msg)
    offsets = sorted({start, start + 1, (start + len(msg)) // 2, len(msg) - 1})
    for off in offsets:
        for bit in (0, 7):
            flipped = gen.flip_bit(msg, off, bit)
            assert not valid(flipped), (kind, off, bit)
            assert gen.flip_bit(flipped, off, bit) == msg


# ---------------------------------------------------------------------------
# The demo stream
# ---------------------------------------------------------------------------


def test_demo_stream(graph: gen.SyntheticGraph, anns: dict[int, Ann]) -> None:
    peers = 3
    stream = gen.demo_stream(graph, peers=peers, seed=5)
    assert stream == gen.demo_stream(graph, peers=peers, seed=5)
    messages = graph.messages()
    for peer in range(peers):  # every honest peer sends everything, in order
        assert [m for p, m in stream if p == peer] == messages
    bad = [(i, m) for i, (p, m) in enumerate(stream) if p == peers]
    assert len(bad) == 9
    assert len(stream) == peers * len(messages) + len(bad)
    first_seen: dict[bytes, int] = {}
    for i, (_, m) in enumerate(stream):
        first_seen.setdefault(m, i)

    outcomes: Counter[str] = Counter()
    genuine = set(messages)
    for position, msg in bad:
        assert msg not in genuine
        kind = u(msg, 0, 2)
        if kind not in (CHANNEL_ANNOUNCEMENT, NODE_ANNOUNCEMENT, CHANNEL_UPDATE):
            outcomes["unknown_type"] += 1
            assert kind == 0x0199
        elif truncated(msg):
            outcomes["truncated"] += 1
        elif kind == CHANNEL_ANNOUNCEMENT:
            a = parse_ann(msg)
            if a.keys[0] >= a.keys[1]:
                outcomes["node_id_order"] += 1
                assert ann_valid(a) and a.scid not in anns
            else:
                outcomes["bad_signature"] += 1
                assert not ann_valid(a) and a.scid not in anns
        elif kind == CHANNEL_UPDATE:
            upd = parse_upd(msg)
            assert not upd_valid(upd, anns)
            assert first_seen[anns[upd.scid].msg] < position
            genuine_upd = next(
                parse_upd(m)
                for m in graph.channel_updates
                if parse_upd(m).scid == upd.scid
                and parse_upd(m).channel_flags & 1 == upd.channel_flags & 1
            )
            assert upd.timestamp > genuine_upd.timestamp
            assert first_seen[genuine_upd.msg] < position
            outcomes["bad_signature"] += 1
        else:
            n = parse_node(msg)
            assert not node_valid(n)
            genuine_node = next(
                parse_node(m)
                for m in graph.node_announcements
                if parse_node(m).node_id == n.node_id
            )
            assert n.timestamp > genuine_node.timestamp
            assert first_seen[genuine_node.msg] < position
            outcomes["bad_signature"] += 1
    assert outcomes == {"truncated": 3, "unknown_type": 1, "node_id_order": 1, "bad_signature": 4}
