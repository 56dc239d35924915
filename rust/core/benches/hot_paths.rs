//! Core hot paths without libpython: parsing, the exact-duplicate check,
//! `submit` of a message already seen (the cost every duplicate of an
//! initial sync pays), and the same arriving over BOLT #8: decrypting its
//! frame then submitting it (what `_core.Codec.feed` does per message).
//! Run with `cargo bench -p lngossip-core` (or `make bench-core`).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use lngossip_core::pipeline::{Config, Pipeline};
use lngossip_core::seen::SeenSet;
use lngossip_core::transport::{CipherState, Decoder, Encoder};
use lngossip_core::wire::{self, MAINNET_CHAIN_HASH};

/// A well-formed (unsigned) channel_update: parsing and dedup do not look
/// at the signature.
fn channel_update(scid: u64) -> Vec<u8> {
    let mut m = 258u16.to_be_bytes().to_vec();
    m.extend_from_slice(&[7u8; 64]);
    m.extend_from_slice(&MAINNET_CHAIN_HASH);
    m.extend_from_slice(&scid.to_be_bytes());
    m.extend_from_slice(&1_767_225_600u32.to_be_bytes());
    m.extend_from_slice(&[1, 0]);
    m.extend_from_slice(&[0u8; 26]);
    m
}

fn hot_paths(c: &mut Criterion) {
    let msg = channel_update(42);
    c.bench_function("parse channel_update", |b| {
        b.iter(|| wire::parse(black_box(&msg)))
    });

    let mut seen = SeenSet::new(1 << 21);
    seen.insert(seen.hash(&msg));
    c.bench_function("seen-set hash + lookup (138 bytes)", |b| {
        b.iter(|| seen.contains(seen.hash(black_box(&msg))))
    });

    // a duplicate: parse, chain check, hash, lookup, answer
    let mut p: Pipeline<&[u8]> = Pipeline::new(Config::default());
    let _ = p.submit(0, &msg);
    c.bench_function("submit duplicate channel_update", |b| {
        b.iter(|| p.submit(1, black_box(&msg)))
    });

    // over the wire: a read's worth of frames of that duplicate (frames are
    // made outside the clock; each iteration decrypts one frame and submits
    // the message, as Codec.feed does: copy out of the read buffer, open the
    // length and the body, then submit the owned bytes)
    let (k, ck) = ([0x96u8; 32], [0x91u8; 32]);
    let mut p: Pipeline<Vec<u8>> = Pipeline::new(Config::default());
    let _ = p.submit(0, msg.clone());
    let mut dec = Decoder::new(CipherState::new(k, ck));
    let mut enc = Encoder::new(CipherState::new(k, ck));
    let mut cs = CipherState::new(k, ck);
    let mut buf = msg.clone();
    c.bench_function("seal 138 bytes (ChaCha20-Poly1305, ring)", |b| {
        b.iter(|| cs.seal(black_box(&mut buf)))
    });
    // the RustCrypto crate, for comparison (see transport.rs)
    {
        use chacha20poly1305::aead::AeadInPlace;
        use chacha20poly1305::{ChaCha20Poly1305, KeyInit};
        let aead = ChaCha20Poly1305::new(&k.into());
        let mut n = 0u64;
        c.bench_function(
            "seal 138 bytes (ChaCha20-Poly1305, chacha20poly1305 crate)",
            |b| {
                b.iter(|| {
                    n += 1;
                    let mut nonce = [0u8; 12];
                    nonce[4..].copy_from_slice(&n.to_le_bytes());
                    aead.encrypt_in_place_detached(&nonce.into(), &[], black_box(&mut buf))
                })
            },
        );
    }
    c.bench_function("decrypt frame + submit duplicate channel_update", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            let mut wire = Vec::new();
            while left > 0 {
                let n = left.min(256); // 256 frames of 172 bytes: a 44 KB read
                wire.clear();
                for _ in 0..n {
                    enc.encode(&msg, &mut wire).unwrap();
                }
                let t0 = Instant::now();
                dec.push(&wire);
                for _ in 0..n {
                    let m = dec.next_message().unwrap().unwrap();
                    black_box(p.submit(1, m));
                }
                total += t0.elapsed();
                left -= n;
            }
            total
        })
    });
}

criterion_group!(benches, hot_paths);
criterion_main!(benches);
