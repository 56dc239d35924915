//! The BOLT #8 frame decoder on what a peer sends, split into arbitrary
//! reads: frames of arbitrary messages (made with the session's key), then
//! arbitrary bytes. Every message before the garbage comes out intact and in
//! order, nothing more comes out of the garbage (it fails a MAC or stays an
//! incomplete frame), and nothing panics.
//!
//! Input: `[read size][messages separated by 0xff] 0xfe [garbage]`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lngossip_core::transport::{CipherState, Decoder, Encoder};

const K: [u8; 32] = [0x96; 32];
const CK: [u8; 32] = [0x91; 32];

fuzz_target!(|data: &[u8]| {
    let Some((&step, rest)) = data.split_first() else {
        return;
    };
    let (head, garbage) = match rest.iter().position(|b| *b == 0xfe) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let msgs: Vec<&[u8]> = head.split(|b| *b == 0xff).collect();
    let mut enc = Encoder::new(CipherState::new(K, CK));
    let mut wire = Vec::new();
    for m in &msgs {
        enc.encode(m, &mut wire).unwrap();
    }
    wire.extend_from_slice(garbage);
    let mut dec = Decoder::new(CipherState::new(K, CK));
    let mut got = Vec::new();
    let mut failed = false;
    for chunk in wire.chunks(usize::from(step).max(1)) {
        dec.push(chunk);
        while !failed {
            match dec.next_message() {
                Ok(Some(m)) => got.push(m),
                Ok(None) => break,
                Err(_) => failed = true,
            }
        }
        assert!(dec.buffered() <= wire.len());
    }
    assert_eq!(got.len(), msgs.len());
    assert!(got.iter().zip(&msgs).all(|(a, b)| a == b));
    if garbage.is_empty() {
        assert!(!failed);
        assert_eq!(dec.buffered(), 0);
    }
});
