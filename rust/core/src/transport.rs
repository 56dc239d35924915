//! BOLT #8 message encryption after the handshake: the cipher state of each
//! direction, the frame [`Encoder`] and the incremental frame [`Decoder`].
//!
//! A frame is the 2-byte big-endian message length sealed into 18 bytes
//! (ChaCha20-Poly1305 with an empty associated data, 16-byte MAC), then the
//! message sealed into `len + 16` bytes (BOLT #8 "Encrypting and Sending
//! Messages"). Each seal or open uses nonce `n` (4 zero bytes then `n` as 8
//! little-endian bytes) and increments it; after the 1000th use of a key,
//! `ck, k = HKDF(ck, k)` and `n` restarts at 0 ("Lightning Message Key
//! Rotation"), so keys rotate every 500 messages.
//!
//! The handshake (Noise_XK) stays in Python (`lngossip.net.transport`); it
//! hands the two 32-byte keys and the final chaining key here.
//!
//! ChaCha20-Poly1305 (RFC 8439) comes from `ring` (BoringSSL's assembly):
//! on gossip-sized messages it seals in 0.23 us where the RustCrypto
//! `chacha20poly1305` crate takes 1.85 us (its AVX2 Poly1305 recomputes key
//! powers for every message; `make bench-core` measures both). HKDF-SHA256
//! is the `hkdf` and `sha2` crates.

use hkdf::Hkdf;
use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, CHACHA20_POLY1305};
use sha2::Sha256;

/// The longest message a frame carries (the length prefix is 2 bytes).
pub use crate::wire::MAX_MESSAGE_LEN;
/// Bytes of the sealed length prefix: 2 bytes of length and a 16-byte MAC.
pub const HEADER_LEN: usize = 18;
/// Bytes of a Poly1305 MAC.
pub const MAC_LEN: usize = 16;
/// Uses of one key before it rotates.
pub const ROTATE_AFTER: u64 = 1000;

/// Why a received frame cannot be opened. Either way the connection must be
/// dropped (BOLT #8: "MUST fail the connection" on a MAC failure).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The MAC of the 18-byte length prefix did not verify.
    LengthMac,
    /// The MAC of the message body did not verify.
    MessageMac,
}

impl FrameError {
    /// The reason's name, as `lngossip.net.transport.TransportError` spells it.
    pub fn name(self) -> &'static str {
        match self {
            FrameError::LengthMac => "length_mac",
            FrameError::MessageMac => "message_mac",
        }
    }
}

/// A MAC did not verify: the sealed data was not made with this key and
/// nonce, or was changed on the way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadMac;

/// `HKDF(salt, ikm)` of BOLT #8: RFC 5869 HKDF-SHA256 with an empty info,
/// 64 bytes of output split into two 32-byte keys.
pub fn hkdf2(salt: &[u8; 32], ikm: &[u8; 32]) -> ([u8; 32], [u8; 32]) {
    let mut okm = [0u8; 64];
    Hkdf::<Sha256>::new(Some(salt), ikm)
        .expand(&[], &mut okm)
        .expect("64 bytes is a valid HKDF-SHA256 output length");
    let (a, b) = okm.split_at(32);
    (a.try_into().unwrap(), b.try_into().unwrap())
}

/// One direction of an established session: key `k`, nonce counter `n`,
/// chaining key `ck`.
#[derive(Clone)]
pub struct CipherState {
    aead: LessSafeKey,
    key: [u8; 32],
    ck: [u8; 32],
    n: u64,
}

impl std::fmt::Debug for CipherState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never print key material
        write!(f, "CipherState {{ n: {} }}", self.n)
    }
}

impl CipherState {
    /// A state at nonce 0 with `key` and chaining key `ck`.
    pub fn new(key: [u8; 32], ck: [u8; 32]) -> Self {
        CipherState {
            aead: LessSafeKey::new(
                UnboundKey::new(&CHACHA20_POLY1305, &key).expect("a 32-byte ChaCha20 key"),
            ),
            key,
            ck,
            n: 0,
        }
    }

    /// The current chaining key.
    pub fn chaining_key(&self) -> &[u8; 32] {
        &self.ck
    }

    /// Uses of the current key so far (0 to 999): the next nonce.
    pub fn nonce(&self) -> u64 {
        self.n
    }

    fn nonce_bytes(&self) -> Nonce {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&self.n.to_le_bytes());
        // unique: n counts up and the key changes before it repeats
        Nonce::assume_unique_for_key(n)
    }

    fn advance(&mut self) {
        self.n += 1;
        if self.n == ROTATE_AFTER {
            let (ck, k) = hkdf2(&self.ck, &self.key);
            *self = CipherState::new(k, ck);
        }
    }

    /// Seal `buf` in place and return its MAC; advances the nonce.
    pub fn seal(&mut self, buf: &mut [u8]) -> [u8; MAC_LEN] {
        let tag: Tag = self
            .aead
            .seal_in_place_separate_tag(self.nonce_bytes(), Aad::empty(), buf)
            .expect("ChaCha20-Poly1305 seals any buffer under 256 GiB");
        self.advance();
        tag.as_ref().try_into().expect("a 16-byte tag")
    }

    /// Open `buf` in place against `mac`; advances the nonce on success and
    /// leaves the state (and, in effect, the meaning of `buf`) unchanged on
    /// failure.
    pub fn open(&mut self, buf: &mut [u8], mac: &[u8; MAC_LEN]) -> Result<(), BadMac> {
        self.aead
            .open_in_place_separate_tag(self.nonce_bytes(), Aad::empty(), Tag::from(*mac), buf, 0..)
            .map_err(|_| BadMac)?;
        self.advance();
        Ok(())
    }
}

/// The sending side: turns messages into frames.
#[derive(Clone, Debug)]
pub struct Encoder {
    cs: CipherState,
}

/// A message longer than [`MAX_MESSAGE_LEN`] cannot be framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooLong(pub usize);

impl Encoder {
    /// An encoder sending with `cs`.
    pub fn new(cs: CipherState) -> Self {
        Encoder { cs }
    }

    /// The cipher state (for tests and key-rotation checks).
    pub fn cipher(&self) -> &CipherState {
        &self.cs
    }

    /// Append the frame of `msg` (`18 + msg.len() + 16` bytes) to `out`.
    /// A message over 65,535 bytes is refused and nothing is appended.
    pub fn encode(&mut self, msg: &[u8], out: &mut Vec<u8>) -> Result<(), TooLong> {
        if msg.len() > MAX_MESSAGE_LEN {
            return Err(TooLong(msg.len()));
        }
        let mut len = (msg.len() as u16).to_be_bytes();
        let mac = self.cs.seal(&mut len);
        out.reserve(HEADER_LEN + msg.len() + MAC_LEN);
        out.extend_from_slice(&len);
        out.extend_from_slice(&mac);
        let start = out.len();
        out.extend_from_slice(msg);
        let mac = self.cs.seal(&mut out[start..]);
        out.extend_from_slice(&mac);
        Ok(())
    }
}

/// The receiving side: takes bytes as they arrive from the socket and yields
/// whole decrypted messages.
///
/// The bytes held are what [`push`](Decoder::push) was given minus the
/// frames already taken: at most one partial frame (under 65,569 bytes)
/// plus the last push. After a [`FrameError`] the decoder stays failed.
#[derive(Debug)]
pub struct Decoder {
    cs: CipherState,
    buf: Vec<u8>,
    start: usize,
    /// The decrypted length of the frame whose body is awaited.
    body_len: Option<usize>,
    failed: Option<FrameError>,
}

impl Decoder {
    /// A decoder receiving with `cs`.
    pub fn new(cs: CipherState) -> Self {
        Decoder {
            cs,
            buf: Vec::new(),
            start: 0,
            body_len: None,
            failed: None,
        }
    }

    /// The cipher state (for tests and key-rotation checks).
    pub fn cipher(&self) -> &CipherState {
        &self.cs
    }

    /// Append bytes read from the socket.
    pub fn push(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if self.start > 0 && (self.start >= self.buf.len() / 2 || self.start > 1 << 20) {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Bytes held that are not yet returned as messages.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Bytes a complete next frame still needs (0 when a frame is ready,
    /// or once failed).
    pub fn wanted(&self) -> usize {
        if self.failed.is_some() {
            return 0;
        }
        let need = match self.body_len {
            None => HEADER_LEN,
            Some(n) => n + MAC_LEN,
        };
        need.saturating_sub(self.buffered())
    }

    /// The error the decoder failed with, if it did.
    pub fn failed(&self) -> Option<FrameError> {
        self.failed
    }

    /// The next complete message: `Ok(None)` when more bytes are needed.
    /// A MAC failure fails the decoder for good.
    pub fn next_message(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let mut out = Vec::new();
        Ok(self.next_into(&mut out)?.then_some(out))
    }

    /// Like [`next_message`](Decoder::next_message), decrypting into `out`
    /// (cleared first): `Ok(true)` when a message was written.
    pub fn next_into(&mut self, out: &mut Vec<u8>) -> Result<bool, FrameError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let n = match self.body_len {
            Some(n) => n,
            None => {
                let Some(h) = self.buf.get(self.start..self.start + HEADER_LEN) else {
                    return Ok(false);
                };
                let mut len = [h[0], h[1]];
                let mac: [u8; MAC_LEN] = h[2..].try_into().unwrap();
                if self.cs.open(&mut len, &mac).is_err() {
                    self.failed = Some(FrameError::LengthMac);
                    return Err(FrameError::LengthMac);
                }
                self.start += HEADER_LEN;
                let n = u16::from_be_bytes(len) as usize;
                self.body_len = Some(n);
                n
            }
        };
        let Some(body) = self.buf.get(self.start..self.start + n + MAC_LEN) else {
            return Ok(false);
        };
        out.clear();
        out.extend_from_slice(&body[..n]);
        let mac: [u8; MAC_LEN] = body[n..].try_into().unwrap();
        if self.cs.open(out, &mac).is_err() {
            out.clear();
            self.failed = Some(FrameError::MessageMac);
            return Err(FrameError::MessageMac);
        }
        self.start += n + MAC_LEN;
        self.body_len = None;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h32(s: &str) -> [u8; 32] {
        let v: Vec<u8> = (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect();
        v.try_into().unwrap()
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    // BOLT #8 Appendix A, "Message Encryption Tests"
    const CK: &str = "919219dbb2920afa8db80f9a51787a840bcf111ed8d588caf9ab4be716e42b01";
    const SK: &str = "969ab31b4d288cedf6218839b27a3e2140827047f2c0f01bf5c04435d43511a9";
    const FRAMES: [(usize, &str); 6] = [
        (
            0,
            "cf2b30ddf0cf3f80e7c35a6e6730b59fe802473180f396d88a8fb0db8cbcf25d2f214cf9ea1d95",
        ),
        (
            1,
            "72887022101f0b6753e0c7de21657d35a4cb2a1f5cde2650528bbc8f837d0f0d7ad833b1a256a1",
        ),
        (
            500,
            "178cb9d7387190fa34db9c2d50027d21793c9bc2d40b1e14dcf30ebeeeb220f48364f7a4c68bf8",
        ),
        (
            501,
            "1b186c57d44eb6de4c057c49940d79bb838a145cb528d6e8fd26dbe50a60ca2c104b56b60e45bd",
        ),
        (
            1000,
            "4a2f3cc3b5e78ddb83dcb426d9863d9d9a723b0337c89dd0b005d89f8d3c05c52b76b29b740f09",
        ),
        (
            1001,
            "2ecd8c8a5629d0d02ab457a0fdd0f7b90a192cd46be5ecb6ca570bfc5e268338b1a16cf4ef2d36",
        ),
    ];

    fn hello_frames() -> Vec<Vec<u8>> {
        let mut enc = Encoder::new(CipherState::new(h32(SK), h32(CK)));
        (0..1002)
            .map(|_| {
                let mut out = Vec::new();
                enc.encode(b"hello", &mut out).unwrap();
                out
            })
            .collect()
    }

    #[test]
    fn vectors_with_rotations() {
        let frames = hello_frames();
        for (i, want) in FRAMES {
            assert_eq!(hex(&frames[i]), want, "message {i}");
        }
        let mut dec = Decoder::new(CipherState::new(h32(SK), h32(CK)));
        // one byte at a time, then everything at once
        for b in frames[..10].concat() {
            dec.push(&[b]);
        }
        for i in 0..10 {
            assert_eq!(
                dec.next_message().unwrap().as_deref(),
                Some(&b"hello"[..]),
                "{i}"
            );
        }
        dec.push(&frames[10..].concat());
        let mut n = 10;
        while let Some(m) = dec.next_message().unwrap() {
            assert_eq!(m, b"hello");
            n += 1;
        }
        assert_eq!(n, 1002);
        assert_eq!(dec.buffered(), 0);
        // 2004 uses: two rotations, 4 uses into the third key
        assert_eq!(
            hex(dec.cipher().chaining_key()),
            "728366ed68565dc17cf6dd97330a859a6a56e87e2beef3bd828a4c4a54d8df06"
        );
        assert_eq!(dec.cipher().nonce(), 4);
    }

    #[test]
    fn rotation_keys() {
        let (ck, k) = hkdf2(&h32(CK), &h32(SK));
        assert_eq!(
            hex(&ck),
            "cc2c6e467efc8067720c2d09c139d1f77731893aad1defa14f9bf3c48d3f1d31"
        );
        assert_eq!(
            hex(&k),
            "3fbdc101abd1132ca3a0ae34a669d8d9ba69a587e0bb4ddd59524541cf4813d8"
        );
    }

    #[test]
    fn tampering_fails_for_good() {
        let frames = hello_frames();
        for (at, want) in [(3, FrameError::LengthMac), (20, FrameError::MessageMac)] {
            let mut f = frames[0].clone();
            f[at] ^= 1;
            let mut dec = Decoder::new(CipherState::new(h32(SK), h32(CK)));
            dec.push(&f);
            dec.push(&frames[1]);
            assert_eq!(dec.next_message(), Err(want));
            assert_eq!(dec.next_message(), Err(want));
            assert_eq!(dec.wanted(), 0);
        }
    }

    #[test]
    fn too_long_and_empty() {
        let mut enc = Encoder::new(CipherState::new(h32(SK), h32(CK)));
        let mut out = Vec::new();
        assert_eq!(enc.encode(&vec![0; 65_536], &mut out), Err(TooLong(65_536)));
        assert!(out.is_empty());
        assert_eq!(enc.cipher().nonce(), 0);
        let big = vec![7u8; MAX_MESSAGE_LEN];
        enc.encode(&big, &mut out).unwrap();
        enc.encode(b"", &mut out).unwrap();
        let mut dec = Decoder::new(CipherState::new(h32(SK), h32(CK)));
        dec.push(&out[..100]);
        assert_eq!(dec.next_message(), Ok(None));
        assert_eq!(dec.wanted(), MAX_MESSAGE_LEN + MAC_LEN - (100 - HEADER_LEN));
        dec.push(&out[100..]);
        assert_eq!(dec.next_message().unwrap().unwrap(), big);
        assert_eq!(dec.next_message().unwrap().unwrap(), b"");
        assert_eq!(dec.next_message(), Ok(None));
    }
}
