//! Core hot paths without libpython: parsing, the exact-duplicate check,
//! and `submit` of a message already seen (the cost every duplicate of an
//! initial sync pays). Run with `cargo bench -p lngossip-core`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use lngossip_core::pipeline::{Config, Pipeline};
use lngossip_core::seen::SeenSet;
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
}

criterion_group!(benches, hot_paths);
criterion_main!(benches);
