"""The BOLT #8 encrypted and authenticated transport, on asyncio streams.

Lightning nodes talk over TCP through ``Noise_XK_secp256k1_ChaChaPoly_SHA256``
(BOLT #8, ``08-transport.md``): a three-act handshake (50, 50 and 66 bytes)
in which the initiator must already know the responder's node id (its
33-byte compressed secp256k1 static public key) and the responder learns the
initiator's, followed by a stream of frames::

    2-byte big-endian length, encrypted  | 16-byte MAC   (18 bytes)
    message, encrypted                   | 16-byte MAC   (len + 16 bytes)

each half sealed with ChaCha20-Poly1305 under a per-direction key whose
64-bit nonce counts up by one per seal and which is rotated after 1000 uses.

Layers, from the bottom:

* :class:`Keys`: a node's static (or an ephemeral) secp256k1 key pair.
* :class:`CipherState`: one direction's key, nonce and chaining key, with the
  BOLT #8 key rotation.
* :class:`Handshake`: the three acts as a pure state machine (no I/O), which
  the BOLT #8 test vectors drive directly.
* :class:`Connection`, :func:`connect`, :func:`accept`: an established
  connection over an :class:`asyncio.StreamReader` / :class:`asyncio.StreamWriter`
  pair, with bounded read and write buffers.

Every failure the peer can cause is a :class:`TransportError` whose
``reason`` names it; after one, the connection is unusable and should be
closed. Misuse of the API (a malformed key handed in by the caller, acts
called out of order) raises :class:`~lngossip.errors.ConfigError` or
:class:`~lngossip.errors.GossipError`.

The primitives come from well-kept libraries: ChaCha20-Poly1305 (RFC 8439)
and HKDF-SHA256 (RFC 5869) from ``cryptography``, secp256k1 and its ECDH
(SHA-256 of the compressed shared point, exactly BOLT #8's ``ECDH``) from
``coincurve`` (libsecp256k1).

Sources:

* BOLT #8 (``08-transport.md``): "Handshake State", "Handshake State
  Initialization", "Handshake Exchange" (acts one to three), "Lightning
  Message Specification", "Lightning Message Key Rotation" and "Appendix A:
  Transport Test Vectors".
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import socket
import struct
import tempfile
import termios
from collections.abc import Callable
from pathlib import Path
from typing import Final, Literal

from coincurve import PrivateKey, PublicKey
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from lngossip import _core, wire
from lngossip.errors import ConfigError, GossipError, TransportError, TransportReason

__all__ = [
    "MAX_MESSAGE_LEN",
    "CipherState",
    "CodecName",
    "Connection",
    "Handshake",
    "Keys",
    "TransportError",
    "accept",
    "connect",
]

MAX_MESSAGE_LEN: Final = wire.MAX_MESSAGE_LEN
"""BOLT #8 "Lightning Message Specification": the largest plaintext message,
in bytes (the length prefix is a 2-byte big-endian integer)."""

_PROTOCOL_NAME: Final = b"Noise_XK_secp256k1_ChaChaPoly_SHA256"
_PROLOGUE: Final = b"lightning"
_VERSION: Final = 0
_ACT_ONE_LEN: Final = 50  # version (1) || e.pub (33) || MAC (16)
_ACT_TWO_LEN: Final = 50  # version (1) || e.pub (33) || MAC (16)
_ACT_THREE_LEN: Final = 66  # version (1) || encrypted s.pub (33 + 16) || MAC (16)
_PUBKEY_LEN: Final = 33
_KEY_LEN: Final = 32
_MAC_LEN: Final = 16
_HEADER_LEN: Final = 2 + _MAC_LEN  # encrypted length prefix
_ROTATE_AFTER: Final = 1000  # BOLT #8 "Lightning Message Key Rotation"

# StreamReader limit for connections that connect() opens: the transport
# pauses reading once more than 2 * limit = 64 KiB (about one maximum frame,
# 18 + 65535 + 16 = 65569 bytes) is buffered ahead of the consumer; one socket
# read can overshoot that by at most its size (256 KiB in CPython 3.11).
_READ_LIMIT: Final = 32 * 1024
# Linux's TCP_QUICKACK (None elsewhere): see Connection._quickack.
_TCP_QUICKACK: Final = getattr(socket, "TCP_QUICKACK", None)
# Write buffer high-water mark: drain() in send() blocks above it.
_WRITE_HIGH_WATER: Final = 256 * 1024

# BOLT #8 "Handshake State Initialization", steps 1-3 (shared by both roles).
_CK_INIT: Final = hashlib.sha256(_PROTOCOL_NAME).digest()
_H_INIT: Final = hashlib.sha256(_CK_INIT + _PROLOGUE).digest()


def _hkdf(salt: bytes, ikm: bytes) -> tuple[bytes, bytes]:
    """BOLT #8 ``HKDF(salt, ikm)``: RFC 5869 HKDF-SHA256 with an empty
    ``info``, 64 bytes of output split into two 32-byte keys."""
    okm = HKDF(algorithm=hashes.SHA256(), length=2 * _KEY_LEN, salt=salt, info=b"").derive(ikm)
    return okm[:_KEY_LEN], okm[_KEY_LEN:]


def _nonce(n: int) -> bytes:
    """The 12-byte ChaCha20-Poly1305 nonce for counter ``n``: 4 zero bytes,
    then ``n`` as a 64-bit little-endian integer (the Noise convention)."""
    return b"\x00\x00\x00\x00" + n.to_bytes(8, "little")


def _sha256(*parts: bytes) -> bytes:
    return hashlib.sha256(b"".join(parts)).digest()


def _encrypt_with_ad(key: bytes, n: int, ad: bytes, plaintext: bytes) -> bytes:
    """BOLT #8 ``encryptWithAD(k, n, ad, plaintext)``: ciphertext || 16-byte MAC."""
    return ChaCha20Poly1305(key).encrypt(_nonce(n), plaintext, ad)


def _decrypt_with_ad(key: bytes, n: int, ad: bytes, ciphertext: bytes) -> bytes:
    """BOLT #8 ``decryptWithAD``; a MAC failure raises
    ``TransportError("handshake_mac")`` (only the handshake uses this)."""
    try:
        return ChaCha20Poly1305(key).decrypt(_nonce(n), ciphertext, ad)
    except InvalidTag:
        raise TransportError("handshake_mac", "handshake MAC check failed") from None


def _parse_pubkey(data: bytes, what: str) -> bytes:
    """Check that ``data`` is a 33-byte compressed secp256k1 point (prefix 02
    or 03, on the curve); returns it. Raises ``TransportError("bad_pubkey")``."""
    if len(data) != _PUBKEY_LEN or data[0] not in (2, 3):
        raise TransportError("bad_pubkey", f"{what} is not a compressed public key")
    try:
        PublicKey(bytes(data))
    except ValueError:
        raise TransportError("bad_pubkey", f"{what} is not a point on secp256k1") from None
    return bytes(data)


class Keys:
    """A secp256k1 key pair: a node's static identity or a handshake's
    ephemeral key.

    ``secret`` is the 32-byte big-endian private scalar (0 < secret < n, the
    curve order); ``None`` draws a fresh one from the OS's CSPRNG. A secret
    of the wrong length or out of range raises
    :class:`~lngossip.errors.ConfigError`.
    """

    __slots__ = ("_key", "_node_id")

    def __init__(self, secret: bytes | None = None) -> None:
        if secret is None:
            key = PrivateKey()
        else:
            if not isinstance(secret, bytes | bytearray) or len(secret) != _KEY_LEN:
                raise ConfigError("a secret key must be 32 bytes")
            try:
                key = PrivateKey(bytes(secret))
            except ValueError:
                raise ConfigError("secret key out of range (must be 0 < key < n)") from None
        self._key = key
        self._node_id = key.public_key.format(compressed=True)

    @property
    def secret(self) -> bytes:
        """The 32-byte private key. Keep it secret."""
        return bytes(self._key.secret)

    @property
    def node_id(self) -> bytes:
        """The 33-byte compressed public key (the node id, for static keys)."""
        return self._node_id

    @property
    def private_key(self) -> PrivateKey:
        """The underlying :class:`coincurve.PrivateKey`."""
        return self._key

    def ecdh(self, pubkey: bytes) -> bytes:
        """BOLT #8 ``ECDH(pubkey, self.priv)``: the 32-byte SHA-256 of the
        compressed shared point. ``pubkey`` must already have been checked
        (a bad one raises :class:`ValueError`)."""
        return bytes(self._key.ecdh(pubkey))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Keys:
        """Load keys written by :meth:`to_file`: a text file holding the
        secret as 64 hex digits (surrounding whitespace ignored).

        Raises :class:`OSError` if the file cannot be read and
        :class:`~lngossip.errors.ConfigError` if it does not hold a valid
        secret.
        """
        text = Path(path).read_text(encoding="ascii", errors="replace").strip()
        if len(text) != 2 * _KEY_LEN:
            raise ConfigError(f"{os.fspath(path)}: expected 64 hex digits")
        try:
            secret = bytes.fromhex(text)
        except ValueError:
            raise ConfigError(f"{os.fspath(path)}: expected 64 hex digits") from None
        return cls(secret)

    def to_file(self, path: str | os.PathLike[str]) -> None:
        """Write the secret as 64 hex digits and a newline to ``path``, with
        file mode 0600 (owner read/write only).

        The file is written to a temporary file in the same directory and
        renamed over ``path``, so a crash never leaves a partial key and an
        existing file with looser permissions is replaced, not reused.
        Raises :class:`OSError` on I/O errors.
        """
        target = Path(path)
        # mkstemp creates the file with mode 0600
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="ascii") as f:
                f.write(self.secret.hex() + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def __repr__(self) -> str:
        return f"Keys(node_id={self._node_id.hex()})"


class CipherState:
    """One direction of an established BOLT #8 session: a 32-byte
    ChaCha20-Poly1305 key ``k``, a nonce counter ``n`` and a 32-byte chaining
    key ``ck`` for key rotation.

    Every :meth:`encrypt` or :meth:`decrypt` uses nonce ``n`` (as 4 zero bytes
    then 8 little-endian bytes) and then increments it; after the 1000th use
    of a key, ``ck, k = HKDF(ck, k)`` and ``n`` restarts at 0 (BOLT #8
    "Lightning Message Key Rotation"). A frame costs two uses (length prefix
    and body), so keys rotate every 500 messages. Both directions start with
    the ``ck`` reached at the end of act three.

    A state belongs to one direction of one connection: using it for anything
    else reuses nonces.
    """

    __slots__ = ("_aead", "_ck", "_key", "_n")

    def __init__(self, key: bytes, chaining_key: bytes) -> None:
        if len(key) != _KEY_LEN or len(chaining_key) != _KEY_LEN:
            raise ConfigError("key and chaining_key must be 32 bytes each")
        self._key = bytes(key)
        self._ck = bytes(chaining_key)
        self._n = 0
        self._aead = ChaCha20Poly1305(self._key)

    @property
    def key(self) -> bytes:
        """The current 32-byte key."""
        return self._key

    @property
    def chaining_key(self) -> bytes:
        """The current 32-byte chaining key (changes at each rotation)."""
        return self._ck

    @property
    def nonce(self) -> int:
        """Uses of the current key so far, 0 to 999: the next nonce."""
        return self._n

    def encrypt(self, ad: bytes, plaintext: bytes) -> bytes:
        """Seal ``plaintext`` with associated data ``ad`` (empty for
        messages); returns ``len(plaintext) + 16`` bytes (ciphertext then
        MAC) and advances the nonce, rotating the key after its 1000th use."""
        out = self._aead.encrypt(_nonce(self._n), plaintext, ad)
        self._advance()
        return out

    def decrypt(self, ad: bytes, ciphertext: bytes) -> bytes:
        """Open ``ciphertext`` (ciphertext then 16-byte MAC) with associated
        data ``ad``; returns ``len(ciphertext) - 16`` bytes and advances the
        nonce like :meth:`encrypt`.

        A MAC failure (or fewer than 16 bytes) raises
        ``TransportError("message_mac")`` and leaves the state unchanged.
        """
        try:
            out = self._aead.decrypt(_nonce(self._n), ciphertext, ad)
        except InvalidTag:
            raise TransportError("message_mac", "message MAC check failed") from None
        self._advance()
        return out

    def _advance(self) -> None:
        self._n += 1
        if self._n == _ROTATE_AFTER:
            self._ck, self._key = _hkdf(self._ck, self._key)
            self._n = 0
            self._aead = ChaCha20Poly1305(self._key)

    def __repr__(self) -> str:
        return f"CipherState(nonce={self._n})"


class Handshake:
    """The BOLT #8 ``Noise_XK`` handshake as a pure state machine (no I/O).

    Make one with :meth:`initiator` or :meth:`responder`, then call, in
    order::

        initiator: act_one() -> read_act_two(m) -> act_three()
        responder: read_act_one(m) -> act_two() -> read_act_three(m)

    and take the session keys from :meth:`result`. ``read_*`` methods raise
    :class:`TransportError` (``eof`` for input of the wrong length,
    ``handshake_version``, ``bad_pubkey``, ``handshake_mac``), after which the
    handshake is dead: any further call raises
    :class:`~lngossip.errors.GossipError`, as does a call out of order.
    """

    __slots__ = (
        "_ck",
        "_e",
        "_failed",
        "_h",
        "_initiator",
        "_local",
        "_re",
        "_result",
        "_rs",
        "_step",
        "_temp_k2",
    )

    def __init__(
        self,
        *,
        initiator: bool,
        local: Keys,
        remote_node_id: bytes | None,
        ephemeral: Keys | None,
    ) -> None:
        """Use :meth:`initiator` or :meth:`responder` instead."""
        self._initiator = initiator
        self._local = local
        self._e = ephemeral if ephemeral is not None else Keys()
        self._rs = remote_node_id
        self._re = b""
        self._temp_k2 = b""
        self._step = 0
        self._failed = False
        self._result: tuple[CipherState, CipherState] | None = None
        # "Handshake State Initialization": mix in the responder's static key.
        responder_static = remote_node_id if initiator else local.node_id
        assert responder_static is not None
        self._ck = _CK_INIT
        self._h = _sha256(_H_INIT, responder_static)

    @classmethod
    def initiator(
        cls, local: Keys, remote_node_id: bytes, ephemeral: Keys | None = None
    ) -> Handshake:
        """The initiator's side: ``local`` is our static key,
        ``remote_node_id`` the responder's 33-byte node id (which the
        initiator must know, BOLT #8 "Authenticated Key Agreement
        Handshake"), ``ephemeral`` the act-one key (random if ``None``; fix
        it only for test vectors). An invalid ``remote_node_id`` raises
        :class:`~lngossip.errors.ConfigError`."""
        try:
            rs = _parse_pubkey(remote_node_id, "remote_node_id")
        except TransportError:
            raise ConfigError(
                "remote_node_id must be a 33-byte compressed secp256k1 public key"
            ) from None
        return cls(initiator=True, local=local, remote_node_id=rs, ephemeral=ephemeral)

    @classmethod
    def responder(cls, local: Keys, ephemeral: Keys | None = None) -> Handshake:
        """The responder's side: ``local`` is our static key (the node id the
        initiator dials), ``ephemeral`` the act-two key (random if ``None``)."""
        return cls(initiator=False, local=local, remote_node_id=None, ephemeral=ephemeral)

    @property
    def remote_node_id(self) -> bytes | None:
        """The peer's 33-byte node id: known from the start by the initiator,
        learnt from act three by the responder (``None`` until then)."""
        return self._rs

    @property
    def done(self) -> bool:
        """Whether the three acts completed and :meth:`result` is available."""
        return self._result is not None

    def _expect(self, initiator: bool, step: int, name: str) -> None:
        if self._failed:
            raise GossipError(f"Handshake.{name}(): the handshake already failed")
        if self._initiator != initiator or self._step != step:
            raise GossipError(f"Handshake.{name}() called out of order or by the wrong role")

    def _read_version_and_key(self, m: bytes, length: int, act: str) -> bytes:
        if len(m) != length:
            raise TransportError("eof", f"act {act} is {len(m)} bytes, expected {length}")
        if m[0] != _VERSION:
            raise TransportError("handshake_version", f"act {act} has version {m[0]}")
        return _parse_pubkey(m[1 : 1 + _PUBKEY_LEN], f"act {act} ephemeral key")

    # -- act one: -> e, es ---------------------------------------------------

    def act_one(self) -> bytes:
        """Initiator, BOLT #8 "Act One" sender actions: returns the 50-byte
        act one (version 0 || 33-byte ephemeral key || 16-byte MAC)."""
        self._expect(True, 0, "act_one")
        assert self._rs is not None
        e_pub = self._e.node_id
        h = _sha256(self._h, e_pub)
        self._ck, temp_k1 = _hkdf(self._ck, self._e.ecdh(self._rs))
        c = _encrypt_with_ad(temp_k1, 0, h, b"")
        self._h = _sha256(h, c)
        self._step = 1
        return bytes([_VERSION]) + e_pub + c

    def read_act_one(self, m: bytes) -> None:
        """Responder, BOLT #8 "Act One" receiver actions on the 50-byte act.

        Raises :class:`TransportError`: ``eof`` (not 50 bytes),
        ``handshake_version``, ``bad_pubkey``, ``handshake_mac`` (the
        initiator does not know our node id).
        """
        self._expect(False, 0, "read_act_one")
        try:
            re = self._read_version_and_key(m, _ACT_ONE_LEN, "one")
            c = bytes(m[1 + _PUBKEY_LEN :])
            h = _sha256(self._h, re)
            ck, temp_k1 = _hkdf(self._ck, self._local.ecdh(re))
            _decrypt_with_ad(temp_k1, 0, h, c)
        except TransportError:
            self._failed = True
            raise
        self._re, self._ck, self._h = re, ck, _sha256(h, c)
        self._step = 1

    # -- act two: <- e, ee ---------------------------------------------------

    def act_two(self) -> bytes:
        """Responder, BOLT #8 "Act Two" sender actions: returns the 50-byte
        act two (version 0 || 33-byte ephemeral key || 16-byte MAC)."""
        self._expect(False, 1, "act_two")
        e_pub = self._e.node_id
        h = _sha256(self._h, e_pub)
        self._ck, self._temp_k2 = _hkdf(self._ck, self._e.ecdh(self._re))
        c = _encrypt_with_ad(self._temp_k2, 0, h, b"")
        self._h = _sha256(h, c)
        self._step = 2
        return bytes([_VERSION]) + e_pub + c

    def read_act_two(self, m: bytes) -> None:
        """Initiator, BOLT #8 "Act Two" receiver actions on the 50-byte act.

        Raises :class:`TransportError`: ``eof`` (not 50 bytes),
        ``handshake_version``, ``bad_pubkey``, ``handshake_mac``.
        """
        self._expect(True, 1, "read_act_two")
        try:
            re = self._read_version_and_key(m, _ACT_TWO_LEN, "two")
            c = bytes(m[1 + _PUBKEY_LEN :])
            h = _sha256(self._h, re)
            ck, temp_k2 = _hkdf(self._ck, self._e.ecdh(re))
            _decrypt_with_ad(temp_k2, 0, h, c)
        except TransportError:
            self._failed = True
            raise
        self._re, self._ck, self._temp_k2, self._h = re, ck, temp_k2, _sha256(h, c)
        self._step = 2

    # -- act three: -> s, se -------------------------------------------------

    def act_three(self) -> bytes:
        """Initiator, BOLT #8 "Act Three" sender actions: returns the 66-byte
        act three (version 0 || our node id encrypted, 33 + 16 bytes ||
        16-byte MAC) and completes the handshake (see :meth:`result`)."""
        self._expect(True, 2, "act_three")
        c = _encrypt_with_ad(self._temp_k2, 1, self._h, self._local.node_id)
        h = _sha256(self._h, c)
        ck, temp_k3 = _hkdf(self._ck, self._local.ecdh(self._re))
        t = _encrypt_with_ad(temp_k3, 0, h, b"")
        sk, rk = _hkdf(ck, b"")
        self._finish(ck, h, send=sk, recv=rk)
        return bytes([_VERSION]) + c + t

    def read_act_three(self, m: bytes) -> bytes:
        """Responder, BOLT #8 "Act Three" receiver actions on the 66-byte act;
        completes the handshake and returns the initiator's 33-byte node id.

        Raises :class:`TransportError`: ``eof`` (not 66 bytes),
        ``handshake_version``, ``handshake_mac`` (either MAC), ``bad_pubkey``
        (the decrypted static key is not a valid point).
        """
        self._expect(False, 2, "read_act_three")
        try:
            if len(m) != _ACT_THREE_LEN:
                raise TransportError("eof", f"act three is {len(m)} bytes, expected 66")
            if m[0] != _VERSION:
                raise TransportError("handshake_version", f"act three has version {m[0]}")
            c = bytes(m[1 : 1 + _PUBKEY_LEN + _MAC_LEN])
            t = bytes(m[1 + _PUBKEY_LEN + _MAC_LEN :])
            rs = _parse_pubkey(
                _decrypt_with_ad(self._temp_k2, 1, self._h, c), "act three static key"
            )
            h = _sha256(self._h, c)
            ck, temp_k3 = _hkdf(self._ck, self._e.ecdh(rs))
            _decrypt_with_ad(temp_k3, 0, h, t)
        except TransportError:
            self._failed = True
            raise
        rk, sk = _hkdf(ck, b"")
        self._rs = rs
        self._finish(ck, h, send=sk, recv=rk)
        return rs

    def _finish(self, ck: bytes, h: bytes, *, send: bytes, recv: bytes) -> None:
        self._ck, self._h = ck, h
        self._result = (CipherState(send, ck), CipherState(recv, ck))
        self._temp_k2 = b""
        self._step = 3

    def result(self) -> tuple[CipherState, CipherState]:
        """``(send, recv)``: the session's cipher states, both starting at
        nonce 0 with the final chaining key. The initiator sends with ``sk``
        and receives with ``rk`` of ``sk, rk = HKDF(ck, zero)``; the responder
        the other way round. Always the same two objects (never use them
        twice). Raises :class:`~lngossip.errors.GossipError` before the
        handshake completed."""
        if self._result is None:
            raise GossipError("Handshake.result(): the handshake is not complete")
        return self._result

    def __repr__(self) -> str:
        role = "initiator" if self._initiator else "responder"
        state = "failed" if self._failed else ("done" if self.done else f"step {self._step}")
        return f"Handshake({role}, {state})"


async def _read_exactly(reader: asyncio.StreamReader, n: int) -> bytes:
    """``reader.readexactly(n)``, with end of stream or a reset as
    ``TransportError("eof")``.

    # Cancel safety
    Safe: ``readexactly`` consumes nothing until all ``n`` bytes are buffered.
    """
    try:
        return await reader.readexactly(n)
    except asyncio.IncompleteReadError as exc:
        raise TransportError(
            "eof", f"connection closed after {len(exc.partial)} of {n} bytes"
        ) from None
    except OSError as exc:  # a reset or other socket error recorded by the reader
        raise TransportError("eof", f"connection lost: {exc!r}") from exc


CodecName = Literal["rust", "python"]
"""Which implementation frames and encrypts an established connection:
``"rust"`` (:class:`lngossip._core.Codec`: one call per socket read, gossip
submitted to the pipeline without returning to Python per message) or
``"python"`` (:class:`CipherState` on ``cryptography``: the reference)."""

_CODECS: Final = ("rust", "python")
# Bytes asked of the socket per read by the Rust codec path.
_READ_CHUNK: Final = 64 * 1024


class Connection:
    """An established BOLT #8 connection over an asyncio stream pair.

    Made by :func:`connect` or :func:`accept` (or, low-level, from a
    completed :class:`Handshake`'s :meth:`~Handshake.result`). One task may
    receive (:meth:`recv`, :meth:`read_batch`) while others :meth:`send`;
    concurrent receives are not supported. The writer's transport gets a
    256 KiB write-buffer high-water mark, so :meth:`send` applies
    back-pressure; reading is bounded by the reader's ``limit`` (see
    :func:`accept`). Call :meth:`close` when done.

    ``codec`` picks the frame implementation (:data:`CodecName`); both write
    the same bytes. With ``"rust"``, :meth:`attach` makes the connection
    hand gossip straight to a :class:`lngossip.Pipeline`, and
    :meth:`read_batch` reads the socket in chunks of up to 64 KiB.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        send: CipherState,
        recv: CipherState,
        remote_node_id: bytes,
        *,
        codec: CodecName = "rust",
    ) -> None:
        if codec not in _CODECS:
            raise ConfigError(f"codec must be 'rust' or 'python', got {codec!r}")
        self._reader = reader
        self._writer = writer
        self._send = send
        self._recv = recv
        self._codec: _core.Codec | None = None
        if codec == "rust":
            if send.nonce or recv.nonce:
                raise ConfigError("the Rust codec starts from fresh cipher states (nonce 0)")
            self._codec = _core.Codec(send.key, send.chaining_key, recv.key, recv.chaining_key)
        self._remote_node_id = bytes(remote_node_id)
        self._pending_len: int | None = None  # decrypted length of a half-read frame
        self._recv_failed: TransportReason | None = None
        self._bytes_sent = 0
        self._bytes_received = 0
        self._sock = writer.get_extra_info("socket") if _TCP_QUICKACK is not None else None
        self._messages_sent = 0
        self._messages_received = 0
        writer.transport.set_write_buffer_limits(high=_WRITE_HIGH_WATER)

    @property
    def codec(self) -> CodecName:
        """Which implementation frames this connection."""
        return "python" if self._codec is None else "rust"

    @property
    def remote_node_id(self) -> bytes:
        """The peer's 33-byte node id (authenticated by the handshake)."""
        return self._remote_node_id

    @property
    def bytes_sent(self) -> int:
        """Bytes of frames written (18 + len + 16 per message; handshake
        acts not counted)."""
        return self._bytes_sent

    def bytes_delivered(self) -> int:
        """Bytes of our frames that the peer's TCP stack has taken:
        :attr:`bytes_sent` less what still waits in this connection's write
        buffer and in the kernel's send queue (``SIOCOUTQ``; on systems
        without it the kernel queue is not subtracted). Once the socket
        buffers are full it grows only as the peer reads, so it tells a slow
        reader (it grows, however slowly) from a dead one (it stops)."""
        unsent = self._writer.transport.get_write_buffer_size()
        sock = self._writer.get_extra_info("socket")
        if sock is not None:
            try:
                out = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
                unsent += struct.unpack("i", out)[0]
            except (OSError, ValueError):
                pass
        return max(self._bytes_sent - unsent, 0)

    @property
    def bytes_received(self) -> int:
        """Bytes of complete frames read (18 + len + 16 per message)."""
        return self._bytes_received

    @property
    def messages_sent(self) -> int:
        """Messages handed to the transport by :meth:`send` and :meth:`send_many`."""
        return self._messages_sent

    @property
    def messages_received(self) -> int:
        """Messages received: returned by :meth:`recv`, or decrypted by
        :meth:`read_batch` (gossip handed to the pipeline included)."""
        return self._messages_received

    def _frames(self, msgs: list[bytes]) -> bytes:
        if self._codec is not None:
            return self._codec.encode_many(msgs)  # checks the lengths itself
        for m in msgs:
            if len(m) > MAX_MESSAGE_LEN:
                raise TransportError("too_long", f"{len(m)} bytes > {MAX_MESSAGE_LEN}")
        enc = self._send.encrypt
        return b"".join(enc(b"", len(m).to_bytes(2, "big")) + enc(b"", m) for m in msgs)

    async def send(self, msg: bytes) -> None:
        """Encrypt and send one message of 0 to :data:`MAX_MESSAGE_LEN`
        bytes (BOLT #8 "Encrypting and Sending Messages"): the 2-byte
        big-endian length sealed into 18 bytes, then the body sealed into
        ``len(msg) + 16`` bytes, written as one piece; then waits for the
        write buffer to drain below its high-water mark.

        Raises ``TransportError("too_long")`` for a longer message (nothing
        is sent, the connection stays usable) and ``TransportError("eof")``
        if the connection is closed or lost.

        # Cancel safety
        Safe: the whole frame is encrypted and handed to the transport
        before the first ``await``; cancelling while waiting for the drain
        does not unsend it (it still counts as sent) and never leaves a
        partial frame.
        """
        await self.send_many([msg])

    async def send_many(self, msgs: list[bytes]) -> None:
        """:meth:`send` for several messages at once: all frames are
        encrypted into one buffer (one call into the Rust codec), written
        with one ``write`` and drained once. If any message is too long,
        ``TransportError("too_long")`` is raised and nothing is sent.

        # Cancel safety
        As :meth:`send`: all or none of the frames are handed to the
        transport.
        """
        if self._writer.is_closing():
            raise TransportError("eof", "connection is closed")
        if not msgs:
            return
        data = self._frames(msgs)
        self._writer.write(data)
        self._bytes_sent += len(data)
        self._messages_sent += len(msgs)
        try:
            await self._writer.drain()
        except OSError as exc:  # connection lost or reset
            raise TransportError("eof", f"connection lost: {exc!r}") from exc

    def attach(self, pipeline: _core.Pipeline, peer: int) -> None:
        """Rust codec only: from now on, gossip (BOLT #7 types 256, 257 and
        258) that this connection receives is submitted to ``pipeline`` as
        peer ``peer`` inside :meth:`read_batch` (and :meth:`recv`), without
        coming back to Python per message. Raises
        :class:`~lngossip.errors.ConfigError` on a ``"python"`` connection."""
        if self._codec is None:
            raise ConfigError("attach() needs the Rust codec")
        self._codec.attach(pipeline, peer)

    def _take(self, f: _core.Feed) -> None:
        self._bytes_received += f.bytes
        self._messages_received += f.frames
        if f.error is not None:
            self._fail(f.error)

    def _fail(self, reason: TransportReason) -> None:
        self._recv_failed = reason
        if reason != "eof":
            self._writer.transport.abort()

    def _quickack(self) -> None:
        """Have the kernel ACK what arrives next at once (Linux
        ``TCP_QUICKACK``, which does not stick: set again after each read). A
        peer whose Nagle's algorithm holds a small message until its data is
        ACKed would otherwise wait for our delayed ACK, about 40 ms each
        time: LDK sends a ``ping`` after every 32 gossip messages and waits
        for the ``pong``, and ``lightning-net-tokio`` leaves Nagle on, so a
        sync from LDK took 227 s instead of 14 s."""
        if self._sock is not None:
            try:
                self._sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
            except OSError:
                self._sock = None

    async def _read_chunk(self) -> bytes:
        try:
            data = await self._reader.read(_READ_CHUNK)
            self._quickack()
        except OSError as exc:
            self._fail("eof")
            raise TransportError("eof", f"connection lost: {exc!r}") from exc
        if not data:
            self._fail("eof")
            assert self._codec is not None
            raise TransportError(
                "eof", f"connection closed with {self._codec.buffered} bytes of a frame read"
            )
        return data

    async def read_batch(self) -> _core.Feed:
        """Rust codec only: read what the socket has (up to 64 KiB; waits
        for at least one byte), decrypt every complete frame, submit gossip
        to the attached pipeline and return the :class:`lngossip._core.Feed`:
        the other messages in order, counts of the pipeline's decisions, and
        ``paused`` when the pipeline answered ``queue_full`` for this peer
        (then call :meth:`resume` once room frees up, before reading again).

        A frame that fails its MAC gives a feed with ``error`` set
        (``length_mac`` or ``message_mac``) after the messages before it;
        the transport is then aborted and every later call raises
        :class:`TransportError` with that reason, as does end of stream
        (``eof``).

        # Cancel safety
        Safe: bytes are only taken from the socket inside the call's one
        ``await``; once read they are fed before returning.
        """
        codec = self._codec
        if codec is None:
            raise ConfigError("read_batch() needs the Rust codec")
        if self._recv_failed is not None:
            raise TransportError(self._recv_failed, "connection already failed")
        if codec.paused:
            return self.resume()
        if codec.buffered:
            # frames left by recv() (the init exchange) come first
            f = codec.feed()
            if f.frames or f.paused or f.error is not None:
                self._take(f)
                return f
        f = codec.feed(await self._read_chunk())
        self._take(f)
        return f

    def resume(self) -> _core.Feed:
        """Rust codec only: submit again what the pipeline refused with
        ``queue_full`` and go on with the frames already read (no socket
        read). Returns a :class:`lngossip._core.Feed` like :meth:`read_batch`."""
        if self._codec is None:
            raise ConfigError("resume() needs the Rust codec")
        f = self._codec.feed()
        self._take(f)
        return f

    async def recv(self) -> bytes:
        """Read, authenticate and decrypt the next message (BOLT #8
        "Receiving and Decrypting Messages"): reads exactly 18 bytes,
        decrypts the length ``l``, reads exactly ``l + 16`` bytes and
        decrypts them. Returns the 0 to 65535-byte plaintext (after
        :meth:`attach`: the next message that is not gossip).

        Raises :class:`TransportError`: ``length_mac`` or ``message_mac``
        (the transport is then aborted, as BOLT #8 requires), ``eof`` (the
        peer closed or reset the connection, at or inside a frame). Once it
        has raised, every later call raises the same reason.

        # Cancel safety
        Safe: nothing is lost if the call is cancelled. The Python codec
        consumes the 18-byte prefix only once complete and keeps the
        decrypted length if cancelled while waiting for the body; the Rust
        codec keeps every byte read until its frame is complete.
        """
        if self._recv_failed is not None:
            raise TransportError(self._recv_failed, "connection already failed")
        if self._codec is not None:
            return await self._recv_rust(self._codec)
        try:
            if self._pending_len is None:
                header = await _read_exactly(self._reader, _HEADER_LEN)
                try:
                    plain = self._recv.decrypt(b"", header)
                except TransportError:
                    raise TransportError("length_mac", "length prefix MAC check failed") from None
                self._pending_len = int.from_bytes(plain, "big")
            n = self._pending_len
            body = await _read_exactly(self._reader, n + _MAC_LEN)
            self._quickack()
            self._pending_len = None
            msg = self._recv.decrypt(b"", body)
        except TransportError as exc:
            self._fail(exc.reason)
            raise
        self._bytes_received += _HEADER_LEN + n + _MAC_LEN
        self._messages_received += 1
        return msg

    async def _recv_rust(self, codec: _core.Codec) -> bytes:
        data: bytes | None = None
        while True:
            f = codec.feed(data, limit=1)
            self._take(f)
            if f.messages:
                return f.messages[0]
            if f.error is not None:
                raise TransportError(f.error, f"{f.error.replace('_', ' ')} check failed")
            if f.paused:
                raise GossipError(
                    "recv() on an attached connection whose pipeline is full: use read_batch()"
                )
            data = await self._read_chunk()

    async def close(self, flush_timeout: float = 1.0) -> None:
        """Close the connection, flushing what :meth:`send` buffered for at
        most ``flush_timeout`` seconds, then dropping it (a peer that does
        not read cannot hold the socket open), and wait until the socket is
        closed. Idempotent; errors of a connection that was already lost are
        ignored.

        # Cancel safety
        Safe: the close is started before the first ``await``; cancelling
        only stops waiting for it to finish.
        """
        self._writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(flush_timeout):
                await self._writer.wait_closed()
            return
        self._writer.transport.abort()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()

    def __repr__(self) -> str:
        return (
            f"Connection(remote_node_id={self._remote_node_id.hex()}, "
            f"sent={self._messages_sent}, received={self._messages_received})"
        )


def _check_args(timeout: float, codec: str) -> None:
    if not timeout > 0:
        raise ConfigError(f"timeout must be > 0 seconds, got {timeout!r}")
    if codec not in _CODECS:
        raise ConfigError(f"codec must be 'rust' or 'python', got {codec!r}")


async def connect(
    host: str,
    port: int,
    local: Keys,
    remote_node_id: bytes,
    *,
    timeout: float = 10.0,
    codec: CodecName = "rust",
    local_addr: tuple[str, int] | None = None,
) -> Connection:
    """Open a TCP connection to ``host:port`` (from ``local_addr``, a
    ``(host, port)`` to bind, when given) and run the BOLT #8 handshake
    as initiator, with our static ``local`` keys, to the node whose 33-byte
    id is ``remote_node_id``.

    The TCP connect and all three acts together must finish within
    ``timeout`` seconds, else ``TransportError("timeout")``. Handshake
    failures raise :class:`TransportError` (``eof``, ``handshake_version``,
    ``bad_pubkey``, ``handshake_mac``: a responder that does not hold
    ``remote_node_id``'s key fails the act-two MAC); a refused or
    unreachable TCP connection raises the :class:`OSError` from
    :func:`asyncio.open_connection`. An invalid ``remote_node_id`` or
    ``timeout`` or ``codec`` raises :class:`~lngossip.errors.ConfigError`.
    On any failure the socket is closed. ``codec`` picks who frames the
    established connection (:data:`CodecName`).

    # Cancel safety
    Safe: if cancelled, the half-open connection is aborted and nothing
    leaks; no :class:`Connection` is returned.
    """
    _check_args(timeout, codec)
    handshake = Handshake.initiator(local, remote_node_id)
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                host, port, limit=_READ_LIMIT, local_addr=local_addr
            )
            writer.write(handshake.act_one())
            handshake.read_act_two(await _read_exactly(reader, _ACT_TWO_LEN))
            writer.write(handshake.act_three())
            await writer.drain()
            send, recv = handshake.result()
            return Connection(reader, writer, send, recv, remote_node_id, codec=codec)
    except TimeoutError as exc:
        if writer is not None:
            writer.transport.abort()
        raise TransportError("timeout", f"handshake not done within {timeout} s") from exc
    except BaseException:
        if writer is not None:
            writer.transport.abort()
        raise


async def accept(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    local: Keys,
    *,
    timeout: float = 10.0,
    codec: CodecName = "rust",
    on_act_one: Callable[[], object] | None = None,
) -> Connection:
    """Run the BOLT #8 handshake as responder on a freshly accepted stream
    pair (e.g. inside an :func:`asyncio.start_server` callback), with our
    static ``local`` keys; the initiator's node id is in the result's
    :attr:`Connection.remote_node_id`.

    Pass ``limit=32768`` to :func:`asyncio.start_server` to bound the read
    buffer to about one maximum frame, as :func:`connect` does.

    All three acts must finish within ``timeout`` seconds, else
    ``TransportError("timeout")``. Handshake failures raise
    :class:`TransportError` (``eof``, ``handshake_version``, ``bad_pubkey``,
    ``handshake_mac``: the initiator does not know our node id). On any
    failure, including cancellation, ``writer``'s transport is aborted.
    ``codec`` picks who frames the established connection
    (:data:`CodecName`). ``on_act_one`` is called once a valid act one has
    been read and act two sent (the node ranks connections in the
    handshake by how far they got).

    # Cancel safety
    Safe: if cancelled, the connection is aborted and no
    :class:`Connection` is returned.
    """
    _check_args(timeout, codec)
    handshake = Handshake.responder(local)
    try:
        async with asyncio.timeout(timeout):
            handshake.read_act_one(await _read_exactly(reader, _ACT_ONE_LEN))
            writer.write(handshake.act_two())
            if on_act_one is not None:
                on_act_one()
            remote = handshake.read_act_three(await _read_exactly(reader, _ACT_THREE_LEN))
            send, recv = handshake.result()
            return Connection(reader, writer, send, recv, remote, codec=codec)
    except TimeoutError as exc:
        writer.transport.abort()
        raise TransportError("timeout", f"handshake not done within {timeout} s") from exc
    except BaseException:
        writer.transport.abort()
        raise
