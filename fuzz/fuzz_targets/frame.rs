//! The BOLT #8 frame decoder on arbitrary bytes from a peer, split into
//! arbitrary reads; and encode/decode round trips of arbitrary messages.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lngossip_core::transport::{CipherState, Decoder, Encoder, HEADER_LEN, MAC_LEN};

const K: [u8; 32] = [0x96; 32];
const CK: [u8; 32] = [0x91; 32];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut dec = Decoder::new(CipherState::new(K, CK));
    if mode & 1 == 0 {
        // raw bytes: read sizes come from the low bits of `mode`
        let step = usize::from(mode >> 1).max(1);
        let mut n = 0;
        for chunk in rest.chunks(step) {
            dec.push(chunk);
            while let Ok(Some(m)) = dec.next_message() {
                n += HEADER_LEN + m.len() + MAC_LEN;
            }
            assert!(dec.buffered() <= rest.len());
        }
        assert!(n <= rest.len());
    } else {
        // messages separated by 0xff, framed, then read back in chunks
        let msgs: Vec<&[u8]> = rest.split(|b| *b == 0xff).collect();
        let mut enc = Encoder::new(CipherState::new(K, CK));
        let mut wire = Vec::new();
        for m in &msgs {
            enc.encode(m, &mut wire).unwrap();
        }
        let step = usize::from(mode >> 1).max(1);
        let mut got = Vec::new();
        for chunk in wire.chunks(step) {
            dec.push(chunk);
            while let Some(m) = dec.next_message().unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got.len(), msgs.len());
        assert!(got.iter().zip(&msgs).all(|(a, b)| a == b));
        assert_eq!(dec.buffered(), 0);
    }
});
