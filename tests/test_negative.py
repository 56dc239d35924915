"""Negative controls: a flipped bit in the signed range gives
invalid_signature, a changed chain_hash gives wrong_chain, every truncation
gives malformed, and verify_batch agrees with coincurve (an independent
oracle) on valid and forged signatures."""

from __future__ import annotations

import hashlib

import coincurve
import numpy as np
import pytest

from lngossip import verify_batch
from lngossip.wire import parse_message
from tests.conftest import CLN_STORE, LNRESEARCH, decide_all, needs_data, read_all, single_peer

pytestmark = needs_data
ENGINES = ["rust", "baseline"]


def _flip(msg: bytes, offset: int) -> bytes:
    b = bytearray(msg)
    b[offset] ^= 0x01
    return bytes(b)


@pytest.fixture(scope="module")
def samples() -> dict[str, bytes]:
    """A real channel_announcement, one of its channel_updates, and a node_announcement."""
    cln = read_all(CLN_STORE)
    anns = {parse_message(m).short_channel_id: m for m in cln if m[:2] == b"\x01\x00"}
    upd = next(m for m in cln if m[:2] == b"\x01\x02" and parse_message(m).short_channel_id in anns)
    ca = anns[parse_message(upd).short_channel_id]
    na = next(m for m in read_all(LNRESEARCH[0]) if m[:2] == b"\x01\x01")
    return {"channel_announcement": ca, "channel_update": upd, "node_announcement": na}


def _offsets(msg: bytes) -> list[int]:
    """Offsets inside the signed range whose flip keeps the message parsable
    and on mainnet: ``short_channel_id`` of an announcement, fee and limit
    fields of an update, timestamp / ``rgb_color`` / ``alias`` of a node."""
    t = int.from_bytes(msg[:2], "big")
    if t == 256:
        flen = int.from_bytes(msg[258:260], "big")
        scid_at = 260 + flen + 32
        return [scid_at + 3, scid_at + 7]
    if t == 258:
        return [110, 122, len(msg) - 1]  # timestamp, fee_base_msat, last byte
    flen = int.from_bytes(msg[66:68], "big")
    p = 68 + flen
    return [p + 3, p + 37, p + 50]  # timestamp, rgb_color, alias


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("kind", ["channel_announcement", "channel_update", "node_announcement"])
def test_flipped_bit_gives_invalid_signature(
    engine: str, kind: str, samples: dict[str, bytes]
) -> None:
    for off in _offsets(samples[kind]):
        forged = _flip(samples[kind], off)
        prefix = [samples["channel_announcement"]] if kind == "channel_update" else []
        decisions, _, _ = decide_all(engine, single_peer([*prefix, forged]))
        assert decisions[-1] == "invalid_signature", (kind, off)
        # the genuine message is still accepted after the forgery
        decisions, _, _ = decide_all(engine, single_peer([*prefix, forged, samples[kind]]))
        assert decisions[-2:] == ["invalid_signature", "accepted"]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("kind", ["channel_announcement", "channel_update"])
def test_changed_chain_hash_gives_wrong_chain(
    engine: str, kind: str, samples: dict[str, bytes]
) -> None:
    msg = samples[kind]
    off = msg.index(bytes.fromhex("6fe28c0ab6f1b372"))
    decisions, _, _ = decide_all(engine, single_peer([_flip(msg, off)]))
    assert decisions == ["wrong_chain"]


@pytest.mark.parametrize("engine", ENGINES)
def test_every_truncation_is_malformed(engine: str, samples: dict[str, bytes]) -> None:
    stream = [(0, msg[:n]) for msg in samples.values() for n in range(len(msg))]
    decisions, c, _ = decide_all(engine, stream)
    assert decisions == ["malformed"] * len(stream)
    assert c["signatures_verified"] == 0


def _columns(msgs: list[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sigs: list[bytes] = []
    keys: list[bytes] = []
    digests: list[bytes] = []
    for m in msgs:
        g = parse_message(m)
        if g.type == 257:
            digest = hashlib.sha256(hashlib.sha256(m[66:]).digest()).digest()
            sigs.append(m[2:66])
            keys.append(g.keys[0])
            digests.append(digest)
        elif g.type == 256:
            digest = hashlib.sha256(hashlib.sha256(m[258:]).digest()).digest()
            for i, k in enumerate(g.keys):
                sigs.append(m[2 + 64 * i : 66 + 64 * i])
                keys.append(k)
                digests.append(digest)
    arr = [
        np.frombuffer(b"".join(c), dtype=np.uint8).reshape(len(c), -1)
        for c in (sigs, keys, digests)
    ]
    return arr[0], arr[1], arr[2]


def _coincurve_verify(sig: bytes, key: bytes, digest: bytes) -> bool:
    from coincurve.ecdsa import cdata_to_der, deserialize_compact

    try:
        der = cdata_to_der(deserialize_compact(sig))
        return bool(coincurve.PublicKey(key).verify(der, digest, hasher=None))
    except (ValueError, TypeError):
        return False


def test_verify_batch_agrees_with_coincurve() -> None:
    msgs = [m for m in read_all(LNRESEARCH[0], CLN_STORE) if m[:2] in (b"\x01\x00", b"\x01\x01")]
    sigs, keys, digests = _columns(msgs[:300])
    n = len(sigs)
    rng = np.random.default_rng(7)
    forged = rng.random(n) < 0.5
    sigs = sigs.copy()
    digests = digests.copy()
    for i in np.flatnonzero(forged):
        if i % 2:
            digests[i, rng.integers(32)] ^= 1 << rng.integers(8)
        else:
            sigs[i, 32 + rng.integers(32)] ^= 1 << rng.integers(8)
    got = verify_batch(sigs, keys, digests)
    assert got.dtype == np.bool_ and got.shape == (n,)
    oracle = np.array(
        [
            _coincurve_verify(bytes(s), bytes(k), bytes(d))
            for s, k, d in zip(sigs, keys, digests, strict=True)
        ]
    )
    assert (got == oracle).all()
    assert oracle[~forged].all() and not oracle[forged].any()


def test_verify_batch_rejects_wrong_shapes() -> None:
    from lngossip import ConfigError

    z = np.zeros
    with pytest.raises(ConfigError):
        verify_batch(z((2, 64), np.uint8), z((2, 32), np.uint8), z((2, 32), np.uint8))
    with pytest.raises(ConfigError):
        verify_batch(z((2, 64), np.uint8), z((3, 33), np.uint8), z((2, 32), np.uint8))
    assert not verify_batch(z((1, 64), np.uint8), z((1, 33), np.uint8), z((1, 32), np.uint8))[0]
