"""Deterministic, signed, synthetic BOLT #7 gossip for ``lngossip demo`` and tests.

Every message is built byte by byte from the BOLT #7 layouts below and signed
with keys derived from fixed labels (:func:`private_key`), so a given
``seed`` gives the same bytes on every run and every machine (RFC 6979
signatures are deterministic too).

Layouts (BOLT #7, big-endian integers, each message starts with its 2-byte
type; offsets count from the first byte of the type):

* ``channel_announcement`` (256, BOLT #7 "The channel_announcement
  Message"): ``node_signature_1`` [64] ``node_signature_2`` [64]
  ``bitcoin_signature_1`` [64] ``bitcoin_signature_2`` [64] ``len`` [u16]
  ``features`` [len] ``chain_hash`` [32] ``short_channel_id`` [u64]
  ``node_id_1`` [33] ``node_id_2`` [33] ``bitcoin_key_1`` [33]
  ``bitcoin_key_2`` [33]. 432 bytes with empty ``features``. ``node_id_1``
  is lexicographically strictly below ``node_id_2``. The four signatures,
  by ``node_id_1``, ``node_id_2``, ``bitcoin_key_1``, ``bitcoin_key_2`` in
  that order, are over SHA256d of bytes ``258..`` (everything after the
  signatures).
* ``node_announcement`` (257, BOLT #7 "The node_announcement Message"):
  ``signature`` [64] ``flen`` [u16] ``features`` [flen] ``timestamp`` [u32,
  seconds since the Unix epoch] ``node_id`` [33] ``rgb_color`` [3] ``alias``
  [32] ``addrlen`` [u16] ``addresses`` [addrlen]. ``142 + flen + addrlen``
  bytes. Signed by ``node_id`` over SHA256d of bytes ``66..``.
* ``channel_update`` (258, BOLT #7 "The channel_update Message"):
  ``signature`` [64] ``chain_hash`` [32] ``short_channel_id`` [u64]
  ``timestamp`` [u32, seconds] ``message_flags`` [u8] ``channel_flags`` [u8]
  ``cltv_expiry_delta`` [u16, blocks] ``htlc_minimum_msat`` [u64, msat]
  ``fee_base_msat`` [u32, msat] ``fee_proportional_millionths`` [u32]
  ``htlc_maximum_msat`` [u64, msat]. 138 bytes: ``message_flags`` bit 0
  (``htlc_maximum_msat`` present) is always set here. ``channel_flags`` bit
  0 is the direction (0: sent by ``node_id_1``, 1: by ``node_id_2``), bit 1
  is ``disable``. Signed by the direction's node over SHA256d of bytes
  ``66..``.

Signatures are 64-byte compact ECDSA (``r || s``, 32 bytes each, low-S)
over the 32-byte SHA256d digest itself, which is not hashed again.

``MAINNET_CHAIN_HASH`` and ``SIGNED_FROM`` are defined here on purpose rather
than imported from :mod:`lngossip.wire`, so that this generator stays an
independent path for testing the parser.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from coincurve import PrivateKey

__all__ = [
    "CHANNEL_ANNOUNCEMENT",
    "CHANNEL_UPDATE",
    "MAINNET_CHAIN_HASH",
    "NODE_ANNOUNCEMENT",
    "SIGNED_FROM",
    "SyntheticGraph",
    "channel_announcement",
    "channel_update",
    "demo_stream",
    "flip_bit",
    "node_announcement",
    "node_id",
    "private_key",
    "scid",
    "synthetic_graph",
    "update_signer_for",
]

CHANNEL_ANNOUNCEMENT = 256
NODE_ANNOUNCEMENT = 257
CHANNEL_UPDATE = 258

#: Bitcoin mainnet genesis block hash in ``chain_hash`` byte order (32 bytes).
MAINNET_CHAIN_HASH = bytes.fromhex(
    "6fe28c0ab6f1b372c1a6a246ae63f74f931e8365e15a089c68d6190000000000"
)

#: Offset of the first signed byte, by message type. The signed range runs to
#: the end of the message and is hashed with SHA256d.
SIGNED_FROM = {CHANNEL_ANNOUNCEMENT: 258, NODE_ANNOUNCEMENT: 66, CHANNEL_UPDATE: 66}

#: Order of the secp256k1 group; a valid secret key is in ``1 .. _CURVE_ORDER - 1``.
_CURVE_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

# Offsets inside a channel_update (fixed layout, 138 bytes).
_CU_SCID = 2 + 64 + 32  # short_channel_id [u64] at 98..106
_CU_TIMESTAMP = _CU_SCID + 8  # timestamp [u32] at 106..110
_CU_CHANNEL_FLAGS = _CU_TIMESTAMP + 4 + 1  # channel_flags [u8] at 111

#: First block of the synthetic short_channel_ids (mainnet passed it in 2021).
_FIRST_BLOCK = 700_000
#: Spread of the synthetic timestamps after ``base_timestamp``, in seconds (4 h).
_TIMESTAMP_SPREAD = 4 * 3600
#: Default port of Lightning nodes (BOLT #1).
_LN_PORT = 9735
#: Label of the keys that sign the bad peer's forgeries; never used by a graph.
_FORGER = "forger"


def _u(value: int, size: int, name: str) -> bytes:
    """``value`` as a big-endian unsigned integer of ``size`` bytes."""
    if not 0 <= value < 1 << (8 * size):
        raise ValueError(f"{name}={value} does not fit in an unsigned {8 * size}-bit field")
    return value.to_bytes(size, "big")


def _sha256d(data: bytes) -> bytes:
    """SHA256(SHA256(data)), the 32-byte digest BOLT #7 signatures cover."""
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def _sign(key: PrivateKey, signed_part: bytes) -> bytes:
    """64-byte compact (``r || s``, low-S) ECDSA signature of SHA256d(``signed_part``).

    coincurve's ``sign`` returns DER; ``sign_recoverable`` returns the compact
    64 bytes followed by a 1-byte recovery id, with the same RFC 6979 nonce
    and the same low-S normalisation, so its first 64 bytes are exactly the
    compact signature.
    """
    return key.sign_recoverable(_sha256d(signed_part), hasher=None)[:64]


def private_key(label: str, index: int) -> PrivateKey:
    """Deterministic secp256k1 key number ``index`` of the family ``label``.

    The secret is ``sha256(f"lngossip-demo/{label}/{index}")``; in the
    (astronomically unlikely) case that it is not a valid secret (zero or not
    below the curve order), ``sha256(f"lngossip-demo/{label}/{index}/{n}")``
    for ``n = 1, 2, ...`` is tried instead. Demo keys only: never use them
    for funds.
    """
    seed = f"lngossip-demo/{label}/{index}"
    candidate = seed
    counter = 0
    while True:
        secret = hashlib.sha256(candidate.encode()).digest()
        if 0 < int.from_bytes(secret, "big") < _CURVE_ORDER:
            return PrivateKey(secret)
        counter += 1
        candidate = f"{seed}/{counter}"


def node_id(key: PrivateKey) -> bytes:
    """33-byte compressed public key (``0x02``/``0x03`` prefix + x) of ``key``."""
    return key.public_key.format(compressed=True)


def scid(block: int, txindex: int, output: int) -> int:
    """``short_channel_id`` (u64) of the funding output ``block:txindex:output``.

    BOLT #7: ``block << 40 | txindex << 16 | output`` with a 3-byte block
    height, a 3-byte transaction index and a 2-byte output index.
    """
    if not 0 <= block < 1 << 24:
        raise ValueError(f"block={block} does not fit in 24 bits")
    if not 0 <= txindex < 1 << 24:
        raise ValueError(f"txindex={txindex} does not fit in 24 bits")
    if not 0 <= output < 1 << 16:
        raise ValueError(f"output={output} does not fit in 16 bits")
    return block << 40 | txindex << 16 | output


def update_signer_for(direction: int, key_a: PrivateKey, key_b: PrivateKey) -> PrivateKey:
    """The key that signs a ``channel_update`` of the channel between ``key_a`` and ``key_b``.

    Direction 0 is signed by ``node_id_1`` (the lexicographically smaller
    compressed public key), direction 1 by ``node_id_2``.
    """
    if direction not in (0, 1):
        raise ValueError(f"direction must be 0 or 1, not {direction}")
    first, second = (key_a, key_b) if node_id(key_a) < node_id(key_b) else (key_b, key_a)
    return first if direction == 0 else second


def flip_bit(msg: bytes, byte_offset: int, bit: int = 0) -> bytes:
    """Copy of ``msg`` with bit ``bit`` (0 = least significant) of byte ``byte_offset`` flipped."""
    if not 0 <= byte_offset < len(msg):
        raise ValueError(f"byte_offset={byte_offset} outside a {len(msg)}-byte message")
    if not 0 <= bit < 8:
        raise ValueError(f"bit={bit} is not in 0..7")
    out = bytearray(msg)
    out[byte_offset] ^= 1 << bit
    return bytes(out)


def _channel_announcement_unordered(
    short_channel_id: int,
    node_key_1: PrivateKey,
    node_key_2: PrivateKey,
    bitcoin_key_1: PrivateKey,
    bitcoin_key_2: PrivateKey,
    chain_hash: bytes,
    features: bytes,
) -> bytes:
    """``channel_announcement`` with the keys in the given order, whatever it is.

    Used directly only to forge an announcement whose ``node_id_1`` is not
    below ``node_id_2``.
    """
    if len(chain_hash) != 32:
        raise ValueError(f"chain_hash must be 32 bytes, not {len(chain_hash)}")
    signed = b"".join(
        (
            _u(len(features), 2, "len(features)"),
            features,
            chain_hash,
            _u(short_channel_id, 8, "short_channel_id"),
            node_id(node_key_1),
            node_id(node_key_2),
            node_id(bitcoin_key_1),
            node_id(bitcoin_key_2),
        )
    )
    signatures = b"".join(
        _sign(k, signed) for k in (node_key_1, node_key_2, bitcoin_key_1, bitcoin_key_2)
    )
    return _u(CHANNEL_ANNOUNCEMENT, 2, "type") + signatures + signed


def channel_announcement(
    short_channel_id: int,
    node_key_a: PrivateKey,
    node_key_b: PrivateKey,
    bitcoin_key_a: PrivateKey,
    bitcoin_key_b: PrivateKey,
    *,
    chain_hash: bytes = MAINNET_CHAIN_HASH,
    features: bytes = b"",
) -> bytes:
    """Signed ``channel_announcement`` (type 256, BOLT #7) between two nodes.

    ``bitcoin_key_a`` is the funding key of ``node_key_a`` and
    ``bitcoin_key_b`` that of ``node_key_b``. The nodes are put in BOLT #7
    order (``node_id_1`` strictly below ``node_id_2``), each keeping its own
    bitcoin key. ``432 + len(features)`` bytes (type included); see the
    module docstring for the layout. Raises :class:`ValueError` if both node
    keys are the same.
    """
    id_a, id_b = node_id(node_key_a), node_id(node_key_b)
    if id_a == id_b:
        raise ValueError("a channel needs two distinct nodes")
    if id_a > id_b:
        node_key_a, node_key_b = node_key_b, node_key_a
        bitcoin_key_a, bitcoin_key_b = bitcoin_key_b, bitcoin_key_a
    return _channel_announcement_unordered(
        short_channel_id,
        node_key_a,
        node_key_b,
        bitcoin_key_a,
        bitcoin_key_b,
        chain_hash,
        features,
    )


def channel_update(
    short_channel_id: int,
    signer: PrivateKey,
    *,
    direction: int,
    timestamp: int,
    chain_hash: bytes = MAINNET_CHAIN_HASH,
    disabled: bool = False,
    cltv_expiry_delta: int = 144,
    htlc_minimum_msat: int = 1000,
    fee_base_msat: int = 1000,
    fee_proportional_millionths: int = 100,
    htlc_maximum_msat: int = 990_000_000,
) -> bytes:
    """Signed ``channel_update`` (type 258, BOLT #7) for one direction of a channel.

    ``signer`` must be the key of ``node_id_1`` for ``direction`` 0 and of
    ``node_id_2`` for ``direction`` 1 (see :func:`update_signer_for`); it is
    not checked, so a wrong key gives a well-formed update with a bad
    signature. ``timestamp`` is in seconds, ``cltv_expiry_delta`` in
    blocks, ``htlc_minimum_msat``, ``fee_base_msat`` and
    ``htlc_maximum_msat`` in millisatoshi, and the proportional fee in
    millionths of the amount. ``message_flags`` is always 1
    (``htlc_maximum_msat`` present), so the message is 138 bytes.
    """
    if direction not in (0, 1):
        raise ValueError(f"direction must be 0 or 1, not {direction}")
    if len(chain_hash) != 32:
        raise ValueError(f"chain_hash must be 32 bytes, not {len(chain_hash)}")
    channel_flags = direction | (0b10 if disabled else 0)
    signed = b"".join(
        (
            chain_hash,
            _u(short_channel_id, 8, "short_channel_id"),
            _u(timestamp, 4, "timestamp"),
            b"\x01",  # message_flags: bit 0 = htlc_maximum_msat present
            bytes((channel_flags,)),
            _u(cltv_expiry_delta, 2, "cltv_expiry_delta"),
            _u(htlc_minimum_msat, 8, "htlc_minimum_msat"),
            _u(fee_base_msat, 4, "fee_base_msat"),
            _u(fee_proportional_millionths, 4, "fee_proportional_millionths"),
            _u(htlc_maximum_msat, 8, "htlc_maximum_msat"),
        )
    )
    return _u(CHANNEL_UPDATE, 2, "type") + _sign(signer, signed) + signed


def node_announcement(
    signer: PrivateKey,
    *,
    timestamp: int,
    alias: str = "",
    rgb_color: bytes = b"\x00\x00\x00",
    features: bytes = b"",
    addresses: bytes = b"",
) -> bytes:
    """Signed ``node_announcement`` (type 257, BOLT #7) of ``signer``'s node.

    ``timestamp`` is in seconds. ``alias`` is encoded as UTF-8 and padded
    with NUL bytes to 32 bytes (:class:`ValueError` if longer).
    ``rgb_color`` is 3 bytes. ``addresses`` is the already-encoded list of
    address descriptors (BOLT #7: type byte, address, port [u16]), e.g.
    ``b"\\x01" + ipv4 (4 bytes) + port``. ``142 + len(features) +
    len(addresses)`` bytes.
    """
    alias_bytes = alias.encode()
    if len(alias_bytes) > 32:
        raise ValueError(f"alias is {len(alias_bytes)} bytes in UTF-8, at most 32 allowed")
    if len(rgb_color) != 3:
        raise ValueError(f"rgb_color must be 3 bytes, not {len(rgb_color)}")
    signed = b"".join(
        (
            _u(len(features), 2, "len(features)"),
            features,
            _u(timestamp, 4, "timestamp"),
            node_id(signer),
            rgb_color,
            alias_bytes.ljust(32, b"\x00"),
            _u(len(addresses), 2, "len(addresses)"),
            addresses,
        )
    )
    return _u(NODE_ANNOUNCEMENT, 2, "type") + _sign(signer, signed) + signed


@dataclass(frozen=True)
class SyntheticGraph:
    """Gossip of a synthetic network, as raw messages (each starting with its type)."""

    channel_announcements: list[bytes]
    """One ``channel_announcement`` per channel, in ascending ``short_channel_id`` order."""
    channel_updates: list[bytes]
    """Two per channel (direction 0 then 1), in the order of ``channel_announcements``."""
    node_announcements: list[bytes]
    """One per node."""

    def messages(self) -> list[bytes]:
        """All messages: announcements, then updates, then node announcements.

        That is the order in which a peer answering an initial sync sends them.
        """
        return [*self.channel_announcements, *self.channel_updates, *self.node_announcements]


def _preferential_channels(
    n_channels: int, n_nodes: int, rng: random.Random
) -> list[tuple[int, int]]:
    """Endpoints ``(a, b)`` of ``n_channels`` channels among ``n_nodes`` nodes, hub-heavy.

    Linear preferential attachment on a list holding each node once per
    channel end (plus a head start for hubs): the first ``max(2, n_nodes //
    50)`` nodes are hubs, hub ``h`` starting with a weight proportional to
    ``1 / (h + 1)``. Each node ``i >= 1`` first opens one channel to a node
    picked by weight (10% of the time: uniformly), so every node has a
    channel as long as ``n_channels >= n_nodes - 1`` (with fewer channels,
    only the first ``n_channels + 1`` nodes are sure to have one); the
    remaining channels are opened by a uniformly random node (or, 20% of the
    time, one picked by weight) towards a node picked by weight. No
    self-channels; parallel channels between the same two nodes may occur,
    as on mainnet.
    """
    n_hubs = max(2, n_nodes // 50)
    head_start = n_channels // 3
    pool: list[int] = []
    for hub in range(n_hubs):
        pool.extend([hub] * max(1, head_start // (2 * (hub + 1))))
    channels: list[tuple[int, int]] = []

    def add(a: int, b: int) -> None:
        channels.append((a, b))
        pool.append(a)
        pool.append(b)

    for node in range(1, min(n_nodes, n_channels + 1)):
        while True:
            peer = rng.choice(pool) if rng.random() < 0.9 else rng.randrange(n_nodes)
            if peer != node:
                break
        add(node, peer)
    while len(channels) < n_channels:
        a = rng.choice(pool) if rng.random() < 0.2 else rng.randrange(n_nodes)
        b = rng.choice(pool)
        if a != b:
            add(a, b)
    return channels


def _short_channel_ids(count: int, rng: random.Random) -> list[int]:
    """``count`` distinct, ascending ``short_channel_id`` values from block 700000 on."""
    out: list[int] = []
    block, txindex = _FIRST_BLOCK, 0
    for _ in range(count):
        step = rng.randrange(0, 20)
        if step == 0 and txindex < 3000:
            txindex += rng.randrange(1, 50)
        else:
            block += max(step, 1)
            txindex = rng.randrange(1, 3000)
        out.append(scid(block, txindex, rng.choice((0, 0, 0, 1, 1, 2))))
    return out


def _addresses(index: int, rng: random.Random) -> bytes:
    """Address descriptors of a synthetic node, from documentation ranges only.

    BOLT #7 descriptors: type 1 = IPv4 (4 bytes) + port [u16], type 2 = IPv6
    (16 bytes) + port [u16]. IPv4 comes from 203.0.113.0/24 (TEST-NET-3),
    IPv6 from 2001:db8::/32. About 40% of nodes announce no address.
    """
    out = b""
    roll = rng.random()
    port = _u(_LN_PORT, 2, "port")
    if roll < 0.6:
        out += b"\x01" + bytes((203, 0, 113, index % 254 + 1)) + port
    if roll < 0.2:
        out += b"\x02" + bytes.fromhex("20010db8") + _u(index, 12, "index") + port
    return out


def synthetic_graph(
    n_channels: int = 3000,
    n_nodes: int = 600,
    *,
    seed: int = 1,
    base_timestamp: int = 1_767_225_600,
) -> SyntheticGraph:
    """Signed gossip of a synthetic, hub-heavy network (see :func:`_preferential_channels`).

    Node ``i`` uses ``private_key("node", i)``; channel ``c`` (in
    ``short_channel_id`` order) is funded with ``private_key("bitcoin", 2 *
    c)`` and ``private_key("bitcoin", 2 * c + 1)``, so every channel end has
    its own bitcoin key. Short channel ids are distinct and ascending from
    block 700000. Timestamps (seconds) are ``base_timestamp`` (default
    2026-01-01T00:00:00Z) plus up to 4 hours. Channel updates draw a CLTV
    delta, fees and an ``htlc_maximum_msat`` below a random capacity; about
    3% of directions are disabled. Deterministic: the same arguments give
    the same bytes. Needs ``n_nodes >= 2`` and ``n_channels >= 1``. With
    ``n_channels >= n_nodes - 1`` every node has a channel, so every node
    announcement is relayable; with fewer channels the nodes left without one
    are still announced (a receiver should reject those as unknown nodes).
    """
    if n_nodes < 2:
        raise ValueError(f"n_nodes must be at least 2, not {n_nodes}")
    if n_channels < 1:
        raise ValueError(f"n_channels must be at least 1, not {n_channels}")
    rng = random.Random(seed)
    keys = [private_key("node", i) for i in range(n_nodes)]
    ids = [node_id(k) for k in keys]
    endpoints = _preferential_channels(n_channels, n_nodes, rng)
    scids = _short_channel_ids(n_channels, rng)

    announcements: list[bytes] = []
    updates: list[bytes] = []
    for c, ((a, b), short_channel_id) in enumerate(zip(endpoints, scids, strict=True)):
        announcements.append(
            channel_announcement(
                short_channel_id,
                keys[a],
                keys[b],
                private_key("bitcoin", 2 * c),
                private_key("bitcoin", 2 * c + 1),
            )
        )
        ordered = (keys[a], keys[b]) if ids[a] < ids[b] else (keys[b], keys[a])
        capacity_sat = rng.choice((500_000, 1_000_000, 2_000_000, 5_000_000, 16_777_215))
        for direction in (0, 1):
            updates.append(
                channel_update(
                    short_channel_id,
                    ordered[direction],
                    direction=direction,
                    timestamp=base_timestamp + rng.randrange(_TIMESTAMP_SPREAD),
                    disabled=rng.random() < 0.03,
                    cltv_expiry_delta=rng.choice((34, 40, 80, 144)),
                    htlc_minimum_msat=rng.choice((1, 1000)),
                    fee_base_msat=rng.choice((0, 0, 1, 1000)),
                    fee_proportional_millionths=rng.randrange(0, 2500),
                    htlc_maximum_msat=capacity_sat * 990,  # 99% of capacity, in msat
                )
            )

    node_msgs: list[bytes] = []
    for i, key in enumerate(keys):
        node_msgs.append(
            node_announcement(
                key,
                timestamp=base_timestamp + rng.randrange(_TIMESTAMP_SPREAD),
                alias=f"lngossip-demo-{i:05d}",
                rgb_color=ids[i][1:4],
                # Every third node: var_onion_optin (bit 9), gossip_queries (7),
                # upfront_shutdown_script (5), data_loss_protect (1), all optional.
                features=b"\x02\xa2" if i % 3 == 0 else b"",
                addresses=_addresses(i, rng),
            )
        )
    return SyntheticGraph(announcements, updates, node_msgs)


def _newer_timestamp_flip(timestamp: int, timestamp_offset: int) -> tuple[int, int]:
    """``(byte_offset, bit)`` that sets the lowest 0 bit of a u32 timestamp.

    Setting a 0 bit makes the forged timestamp newer than the genuine one, so
    the forgery is not discarded as stale before its signature is checked.
    """
    lowest_zero = ((~timestamp) & (timestamp + 1)).bit_length() - 1
    return timestamp_offset + 3 - lowest_zero // 8, lowest_zero % 8


def _bad_peer_messages(
    graph: SyntheticGraph, rng: random.Random
) -> list[tuple[bytes, bytes | None]]:
    """The bad peer's messages, each with the honest message it must follow (or ``None``)."""
    anns, upds, nodes = graph.channel_announcements, graph.channel_updates, graph.node_announcements
    if not anns or not upds or not nodes:
        raise ValueError("demo_stream needs a graph with channels, updates and nodes")
    known_scids = {int.from_bytes(u[_CU_SCID : _CU_SCID + 8], "big") for u in upds}
    # Distinct channels for the different forgeries, so they do not interact.
    picks = rng.sample(range(len(anns)), min(3, len(anns)))
    ann_i, upd_flip_c, upd_wrong_c = (picks * 3)[:3]
    upd_flip = upds[2 * upd_flip_c + rng.randrange(2)]
    upd_wrong = upds[2 * upd_wrong_c + rng.randrange(2)]
    node_i = rng.randrange(len(nodes))
    with_addresses = [n for n in nodes if len(n) > 142 + int.from_bytes(n[66:68], "big")]
    node_trunc = with_addresses[0] if with_addresses else nodes[node_i]

    out: list[tuple[bytes, bytes | None]] = []
    # Malformed 1-3: truncated copies.
    out.append((anns[ann_i][:-1], None))
    out.append((upd_flip[:100], None))
    out.append((node_trunc[:-1], None))
    # Malformed 4: unknown (odd) message type 0x0199.
    out.append((b"\x01\x99" + b"lngossip-unknown", None))
    # Malformed 5: validly signed channel_announcement with node_id_1 > node_id_2.
    f = [private_key(_FORGER, i) for i in range(5)]
    n1, n2 = (f[0], f[1]) if node_id(f[0]) > node_id(f[1]) else (f[1], f[0])
    fresh_scid = scid((max(known_scids) >> 40) + 1, 1, 0)
    out.append(
        (
            _channel_announcement_unordered(
                fresh_scid, n1, n2, f[2], f[3], MAINNET_CHAIN_HASH, b""
            ),
            None,
        )
    )
    # Forged 1: channel_announcement with a bit of short_channel_id flipped
    # (a new channel id whose four signatures are all invalid).
    ann = anns[ann_i]
    scid_offset = 260 + int.from_bytes(ann[258:260], "big") + 32
    bit = 0
    while True:
        forged_ann = flip_bit(ann, scid_offset + 7 - bit // 8, bit % 8)
        if int.from_bytes(forged_ann[scid_offset : scid_offset + 8], "big") not in known_scids:
            break
        bit += 1
    out.append((forged_ann, None))
    # Forged 2: channel_update with its timestamp made newer by one flipped bit.
    ts = int.from_bytes(upd_flip[_CU_TIMESTAMP : _CU_TIMESTAMP + 4], "big")
    out.append((flip_bit(upd_flip, *_newer_timestamp_flip(ts, _CU_TIMESTAMP)), upd_flip))
    # Forged 3: node_announcement with its timestamp made newer by one flipped bit.
    node = nodes[node_i]
    ts_offset = 68 + int.from_bytes(node[66:68], "big")
    ts = int.from_bytes(node[ts_offset : ts_offset + 4], "big")
    out.append((flip_bit(node, *_newer_timestamp_flip(ts, ts_offset)), node))
    # Forged 4: newer channel_update signed by a key that is not the channel's.
    ts = int.from_bytes(upd_wrong[_CU_TIMESTAMP : _CU_TIMESTAMP + 4], "big")
    out.append(
        (
            channel_update(
                int.from_bytes(upd_wrong[_CU_SCID : _CU_SCID + 8], "big"),
                f[4],
                direction=upd_wrong[_CU_CHANNEL_FLAGS] & 1,
                timestamp=ts + 60,
                chain_hash=upd_wrong[2 + 64 : _CU_SCID],
            ),
            upd_wrong,
        )
    )
    return out


def demo_stream(graph: SyntheticGraph, *, peers: int = 4, seed: int = 1) -> list[tuple[int, bytes]]:
    """``(peer_id, message)`` pairs replaying ``graph`` as an initial sync from ``peers`` peers.

    Honest peers ``0 .. peers - 1`` each send every message of
    :meth:`SyntheticGraph.messages`, in that order, so every message arrives
    ``peers`` times. They are interleaved round-robin: message ``i`` of peer
    ``p`` is scheduled at ``i + start_p + jitter`` where ``start_p`` is in
    ``[0, 5)`` per peer and ``jitter`` in ``[0, 0.9)`` per message, so each
    peer's own order is kept while the peers drift against each other.

    Peer ``peers`` (one extra id) is the bad peer. It sends 9 messages, each
    once, at random positions (a forgery of an existing message only after
    the first honest copy of it):

    Malformed (fail parsing or the BOLT #7 format rules):

    1. a ``channel_announcement`` missing its last byte (431 bytes, one
       short of the shortest valid one);
    2. a ``channel_update`` cut to its first 100 bytes;
    3. a ``node_announcement`` with addresses missing its last byte (so
       ``addrlen`` overruns the message), or any one if none has addresses;
    4. a message of unknown type ``0x0199`` (odd: BOLT #1 says ignore it);
    5. a ``channel_announcement`` of a new channel between two keys that are
       not in the graph, validly signed, but with ``node_id_1 > node_id_2``.

    Forged (well-formed, but a signature does not verify):

    6. a ``channel_announcement`` with one bit of its ``short_channel_id``
       flipped (a channel id the graph does not have);
    7. a ``channel_update`` with one 0 bit of its ``timestamp`` set (newer);
    8. a ``node_announcement`` with one 0 bit of its ``timestamp`` set (newer);
    9. a ``channel_update`` of an existing channel and direction, 60 s newer
       than the genuine one, signed by a key that is not the channel's.

    Deterministic for a given graph, ``peers`` and ``seed``.
    """
    if peers < 1:
        raise ValueError(f"peers must be at least 1, not {peers}")
    rng = random.Random(seed)
    messages = graph.messages()
    schedule: list[tuple[float, int, bytes]] = []
    for peer in range(peers):
        start = rng.uniform(0, 5)
        schedule.extend(
            (i + start + rng.uniform(0, 0.9), peer, msg) for i, msg in enumerate(messages)
        )
    schedule.sort(key=lambda item: (item[0], item[1]))
    honest = [(peer, msg) for _, peer, msg in schedule]

    first_seen: dict[bytes, int] = {}
    for position, (_, msg) in enumerate(honest):
        first_seen.setdefault(msg, position)
    inserts: list[tuple[int, int, bytes]] = []
    for order, (msg, after) in enumerate(_bad_peer_messages(graph, rng)):
        earliest = 0 if after is None else first_seen[after] + 1
        inserts.append((rng.randint(earliest, len(honest)), order, msg))
    inserts.sort()

    stream: list[tuple[int, bytes]] = []
    pending = iter(inserts)
    upcoming = next(pending, None)
    for position, item in enumerate([*honest, None]):
        while upcoming is not None and upcoming[0] == position:
            stream.append((peers, upcoming[2]))
            upcoming = next(pending, None)
        if item is not None:
            stream.append(item)
    return stream
