//! End-to-end tests of the core pipeline on messages signed here with
//! fixed test keys: dedup before verify, forgeries, orphans, staleness,
//! backpressure, and truncations that never panic.

use lngossip_core::pipeline::{Config, Decision, Pipeline, Policy, Processed};
use lngossip_core::queue::QueueLimits;
use lngossip_core::verify::{sha256d, Verifier};
use lngossip_core::wire::{Malformed, MAINNET_CHAIN_HASH};
use secp256k1::{Message, PublicKey, Secp256k1, SecretKey, SignOnly};

struct Keys {
    secp: Secp256k1<SignOnly>,
}

impl Keys {
    fn new() -> Self {
        Keys {
            secp: Secp256k1::signing_only(),
        }
    }
    fn secret(&self, i: u8) -> SecretKey {
        let mut b = [0x11u8; 32];
        b[31] = i;
        SecretKey::from_byte_array(b).expect("valid test key")
    }
    fn public(&self, i: u8) -> [u8; 33] {
        PublicKey::from_secret_key(&self.secp, &self.secret(i)).serialize()
    }
    fn sign(&self, i: u8, digest: [u8; 32]) -> [u8; 64] {
        self.secp
            .sign_ecdsa(Message::from_digest(digest), &self.secret(i))
            .serialize_compact()
    }

    /// A channel_announcement between nodes `a` and `b` (bitcoin keys `a + 100`, `b + 100`).
    fn announcement(&self, scid: u64, a: u8, b: u8) -> Vec<u8> {
        let (a, b) = if self.public(a) < self.public(b) {
            (a, b)
        } else {
            (b, a)
        };
        let mut tail = Vec::new();
        tail.extend_from_slice(&0u16.to_be_bytes());
        tail.extend_from_slice(&MAINNET_CHAIN_HASH);
        tail.extend_from_slice(&scid.to_be_bytes());
        for k in [a, b, a + 100, b + 100] {
            tail.extend_from_slice(&self.public(k));
        }
        let d = sha256d(&tail);
        let mut m = 256u16.to_be_bytes().to_vec();
        for k in [a, b, a + 100, b + 100] {
            m.extend_from_slice(&self.sign(k, d));
        }
        m.extend_from_slice(&tail);
        m
    }

    /// A channel_update of `scid` in direction `dir`, signed by `signer`.
    fn update(&self, scid: u64, dir: u8, timestamp: u32, signer: u8) -> Vec<u8> {
        let mut tail = MAINNET_CHAIN_HASH.to_vec();
        tail.extend_from_slice(&scid.to_be_bytes());
        tail.extend_from_slice(&timestamp.to_be_bytes());
        tail.extend_from_slice(&[1, dir]);
        tail.extend_from_slice(&144u16.to_be_bytes());
        tail.extend_from_slice(&1000u64.to_be_bytes());
        tail.extend_from_slice(&1000u32.to_be_bytes());
        tail.extend_from_slice(&100u32.to_be_bytes());
        tail.extend_from_slice(&990_000_000u64.to_be_bytes());
        let mut m = 258u16.to_be_bytes().to_vec();
        m.extend_from_slice(&self.sign(signer, sha256d(&tail)));
        m.extend_from_slice(&tail);
        m
    }

    /// Node index signing direction `dir` of a channel between `a` and `b`.
    fn signer(&self, a: u8, b: u8, dir: u8) -> u8 {
        let (lo, hi) = if self.public(a) < self.public(b) {
            (a, b)
        } else {
            (b, a)
        };
        if dir == 0 {
            lo
        } else {
            hi
        }
    }

    fn node(&self, i: u8, timestamp: u32) -> Vec<u8> {
        let mut tail = 0u16.to_be_bytes().to_vec();
        tail.extend_from_slice(&timestamp.to_be_bytes());
        tail.extend_from_slice(&self.public(i));
        tail.extend_from_slice(&[1, 2, 3]);
        tail.extend_from_slice(&[b'x'; 32]);
        tail.extend_from_slice(&0u16.to_be_bytes());
        let mut m = 257u16.to_be_bytes().to_vec();
        m.extend_from_slice(&self.sign(i, sha256d(&tail)));
        m.extend_from_slice(&tail);
        m
    }
}

/// A pipeline and its verifier, processed together.
struct Engine {
    p: Pipeline<Vec<u8>>,
    v: Verifier,
}

impl Engine {
    fn new(cfg: Config) -> Self {
        let v = Verifier::new(cfg.threads, cfg.pubkey_cache_capacity).expect("pool");
        Engine {
            p: Pipeline::new(cfg),
            v,
        }
    }
    fn process(&mut self, max: usize) -> Processed<Vec<u8>> {
        self.p.process(&mut self.v, max)
    }
}

impl std::ops::Deref for Engine {
    type Target = Pipeline<Vec<u8>>;
    fn deref(&self) -> &Self::Target {
        &self.p
    }
}

impl std::ops::DerefMut for Engine {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.p
    }
}

fn pipeline() -> Engine {
    Engine::new(Config {
        threads: 2,
        ..Config::default()
    })
}

#[test]
fn duplicates_from_many_peers_are_verified_once() {
    let k = Keys::new();
    let msgs = vec![
        k.announcement(1, 1, 2),
        k.update(1, 0, 1000, k.signer(1, 2, 0)),
        k.update(1, 1, 1000, k.signer(1, 2, 1)),
        k.node(1, 1000),
    ];
    let mut p = pipeline();
    for peer in 0..8 {
        for m in &msgs {
            let a = p.submit(peer, m.clone());
            // updates queue behind their channel's pending announcement
            let expected = if peer == 0 {
                Decision::Queued
            } else {
                Decision::Duplicate
            };
            assert_eq!(a.decision, expected);
        }
    }
    let out = p.process(100);
    assert_eq!(out.accepted.len(), 4);
    assert!(out
        .outcomes
        .iter()
        .all(|o| o.decision == Decision::Accepted));
    assert_eq!(p.counters().signatures_verified, 4 + 1 + 1 + 1);
    assert_eq!(p.counters().decisions[2][Decision::Orphaned as usize], 0);
}

#[test]
fn orphans_wait_for_their_announcement() {
    let k = Keys::new();
    let ann = k.announcement(3, 1, 2);
    let mut forged = ann.clone();
    forged[299] ^= 1; // another short_channel_id, signatures no longer valid
    let forged_scid = u64::from_be_bytes(forged[292..300].try_into().unwrap());
    let update = k.update(3, 0, 10, k.signer(1, 2, 0));
    let mut p = pipeline();
    // an update before any announcement: held in the orphan cache
    assert_eq!(p.submit(0, update).decision, Decision::Orphaned);
    assert_eq!(p.orphans(), 1);
    // an update queued behind a pending announcement that then fails
    let queued_behind = k.update(forged_scid, 1, 10, k.signer(1, 2, 1));
    assert_eq!(p.submit(0, forged).decision, Decision::Queued);
    assert_eq!(p.submit(0, queued_behind).decision, Decision::Queued);
    let out = p.process(10);
    let decisions: Vec<Decision> = out.outcomes.iter().map(|o| o.decision).collect();
    assert_eq!(
        decisions,
        vec![Decision::InvalidSignature, Decision::Orphaned]
    );
    assert_eq!(p.orphans(), 2);
    // the genuine announcement releases its orphan, verified in the same call
    assert_eq!(p.submit(1, ann).decision, Decision::Queued);
    let out = p.process(10);
    let decisions: Vec<Decision> = out.outcomes.iter().map(|o| o.decision).collect();
    assert_eq!(decisions, vec![Decision::Accepted, Decision::Accepted]);
    assert_eq!(p.orphans(), 1);
    assert_eq!(p.counters().decisions[2][Decision::Orphaned as usize], 1);
}

#[test]
fn forged_messages_do_not_suppress_genuine_ones() {
    let k = Keys::new();
    let ann = k.announcement(7, 3, 4);
    let mut forged = ann.clone();
    forged[299] ^= 1; // inside short_channel_id: same length, same keys
    let mut p = pipeline();
    let _ = p.submit(0, k.announcement(7, 3, 4));
    let _ = p.process(10);
    let good = k.update(7, 0, 2000, k.signer(3, 4, 0));
    let mut bad = k.update(7, 0, 3000, k.signer(3, 4, 0));
    bad[120] ^= 1; // fee field, timestamp 3000 looks newer
    assert_eq!(p.submit(1, bad).decision, Decision::Queued);
    let out = p.process(10);
    assert_eq!(out.outcomes[0].decision, Decision::InvalidSignature);
    // the stored timestamp did not move: the genuine older update is accepted
    assert_eq!(p.submit(2, good).decision, Decision::Queued);
    assert_eq!(p.process(10).outcomes[0].decision, Decision::Accepted);
    // a forged announcement of another channel fails too
    let mut q = pipeline();
    assert_eq!(q.submit(0, forged).decision, Decision::Queued);
    assert_eq!(
        q.process(10).outcomes[0].decision,
        Decision::InvalidSignature
    );
    // an update signed by the wrong node
    let wrong = k.update(7, 0, 4000, k.signer(3, 4, 1));
    assert_eq!(p.submit(0, wrong).decision, Decision::Queued);
    assert_eq!(
        p.process(10).outcomes[0].decision,
        Decision::InvalidSignature
    );
}

#[test]
fn stale_and_wrong_chain_are_decided_before_verification() {
    let k = Keys::new();
    let mut p = pipeline();
    let _ = p.submit(0, k.announcement(9, 5, 6));
    let _ = p.submit(0, k.update(9, 1, 5000, k.signer(5, 6, 1)));
    let _ = p.process(10);
    let verified = p.counters().signatures_verified;
    let older = k.update(9, 1, 4000, k.signer(5, 6, 1));
    assert_eq!(p.submit(0, older).decision, Decision::Stale);
    let same = k.update(9, 1, 5000, k.signer(5, 6, 1));
    assert_eq!(p.submit(0, same.clone()).decision, Decision::Duplicate);
    let mut other_chain = same;
    other_chain[70] ^= 0xff;
    assert_eq!(p.submit(0, other_chain).decision, Decision::WrongChain);
    assert_eq!(p.counters().signatures_verified, verified);
}

#[test]
fn live_policy_window() {
    let k = Keys::new();
    let now = 1_800_000_000u64;
    let mut p = Engine::new(Config {
        policy: Policy::Live,
        now: Some(now),
        threads: 1,
        ..Config::default()
    });
    let old = k.node(1, (now - 15 * 86_400) as u32);
    let future = k.node(1, (now + 2 * 86_400) as u32);
    let fresh = k.node(1, now as u32);
    assert_eq!(p.submit(0, old).decision, Decision::TooOld);
    assert_eq!(p.submit(0, future).decision, Decision::TooNew);
    assert_eq!(p.submit(0, fresh).decision, Decision::Queued);
    assert_eq!(p.process(10).outcomes[0].decision, Decision::UnknownNode);
}

#[test]
fn far_future_is_too_new_under_the_archive_policy_too() {
    let k = Keys::new();
    let now = 1_800_000_000u64;
    let mut p = Engine::new(Config {
        now: Some(now),
        threads: 1,
        ..Config::default()
    });
    assert_eq!(p.config().policy, Policy::Archive);
    p.submit(0, k.announcement(1 << 40, 1, 2));
    p.process(10);
    let ahead = lngossip_core::pipeline::MAX_AHEAD_S;
    for ts in [u32::MAX, (now + ahead + 1) as u32] {
        let forged = k.update(1 << 40, 0, ts, k.signer(1, 2, 0));
        assert_eq!(p.submit(1, forged).decision, Decision::TooNew, "{ts}");
        assert_eq!(p.submit(1, k.node(1, ts)).decision, Decision::TooNew);
    }
    // no lower bound under the archive policy; 24 h ahead is still in
    let old = k.update(1 << 40, 0, 1000, k.signer(1, 2, 0));
    assert_eq!(p.submit(0, old).decision, Decision::Queued);
    let edge = k.update(1 << 40, 1, (now + ahead) as u32, k.signer(1, 2, 1));
    assert_eq!(p.submit(0, edge).decision, Decision::Queued);
    let done: Vec<Decision> = p.process(10).outcomes.iter().map(|o| o.decision).collect();
    assert_eq!(done, vec![Decision::Accepted, Decision::Accepted]);
}

/// A 10,000-byte queue of which one peer may fill 3,000 bytes.
fn small_share_engine() -> Engine {
    Engine::new(Config {
        queue: QueueLimits {
            max_bytes: 10_000,
            max_messages: 100,
            per_peer_bytes: 3_000,
            per_peer_messages: 100,
        },
        threads: 1,
        ..Config::default()
    })
}

/// `n` channel announcements from `k`, `short_channel_id`s from `first_scid` on.
fn announcements(k: &Keys, first_scid: u64, n: u8) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| k.announcement(first_scid + u64::from(i), 10, 11 + i))
        .collect()
}

#[test]
fn per_peer_share_pushes_back_on_the_flooder_only() {
    let k = Keys::new();
    let anns = announcements(&k, 1000, 40);
    let mut p = small_share_engine();
    let decisions: Vec<Decision> = anns[..10]
        .iter()
        .map(|m| p.submit(1, m.clone()).decision)
        .collect();
    assert_eq!(&decisions[..6], &[Decision::Queued; 6]);
    assert_eq!(decisions[6], Decision::QueueFull);
    assert!(p.peer_queue_bytes(1) <= 3_000);
    assert_eq!(p.submit(2, anns[20].clone()).decision, Decision::Queued);
    assert!(p.queue_bytes() <= 10_000);
    // handed back, not remembered: accepted once there is room
    let _ = p.process(100);
    assert_eq!(p.submit(1, anns[6].clone()).decision, Decision::Queued);
}

#[test]
fn every_truncation_is_malformed_and_never_panics() {
    let k = Keys::new();
    let mut p = pipeline();
    for m in [k.announcement(5, 1, 2), k.update(5, 0, 1, 1), k.node(1, 1)] {
        for n in 0..m.len() {
            let a = p.submit(0, m[..n].to_vec());
            assert_eq!(a.decision, Decision::Malformed, "len {n}");
            assert!(matches!(
                a.reason,
                Some(Malformed::TooShort | Malformed::LengthOverrun)
            ));
        }
    }
    assert_eq!(p.queued(), 0);
}

fn temp_store(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("lngossip-core-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    let _ = std::fs::remove_file(&p);
    p
}

/// A small graph: channels 1 (nodes 1-2) and 2 (nodes 2-3), updates, node 2.
/// A closed store at `temp_store(name)` holding [`small_graph`] (timestamp
/// 1000), accepted in one batch; returns its path and the messages.
fn stored_small_graph(k: &Keys, name: &str) -> (std::path::PathBuf, Vec<Vec<u8>>) {
    let path = temp_store(name);
    let msgs = small_graph(k, 1000);
    let mut p = pipeline();
    p.open_store(&path).unwrap();
    for m in &msgs {
        p.submit(0, m.clone());
    }
    p.process(100);
    (path, msgs)
}

fn small_graph(k: &Keys, ts: u32) -> Vec<Vec<u8>> {
    vec![
        k.announcement(1 << 40, 1, 2),
        k.update(1 << 40, 0, ts, k.signer(1, 2, 0)),
        k.update(1 << 40, 1, ts, k.signer(1, 2, 1)),
        k.announcement(2 << 40, 2, 3),
        k.update(2 << 40, 0, ts, k.signer(2, 3, 0)),
        k.node(2, ts),
    ]
}

#[test]
fn graph_keeps_bytes_and_answers_queries_in_bolt7_order() {
    let k = Keys::new();
    let msgs = small_graph(&k, 1000);
    let mut p = pipeline();
    for m in &msgs {
        p.submit(0, m.clone());
    }
    p.process(100);
    let g = p.graph();
    assert_eq!((g.channel_count(), g.node_count()), (2, 3));
    let c = g.channel(1 << 40).expect("channel 1");
    assert_eq!(&*c.announcement.as_ref().unwrap().msg, &msgs[0][..]);
    assert_eq!(&*c.updates[1].as_ref().unwrap().msg, &msgs[2][..]);
    assert_eq!(g.channels_of(&k.public(2)), vec![1 << 40, 2 << 40]);
    // a full dump in pages of one: every message once, announcements first, node last
    let mut cursor = Some(lngossip_core::graph::Cursor::Start);
    let mut all = Vec::new();
    while let Some(c) = cursor {
        let (page, next) = g.gossip_after(c, 0, u32::MAX, 1);
        all.extend(page.into_iter().map(<[u8]>::to_vec));
        cursor = next;
    }
    assert_eq!(all, msgs);
    // a timestamp filter past every message: nothing
    assert!(g
        .gossip_after(lngossip_core::graph::Cursor::Start, 1001, 10, 100)
        .0
        .is_empty());
    assert_eq!(g.short_channel_ids_in_blocks(2, 1, None, 10), vec![2 << 40]);
    assert_eq!(g.short_channel_ids_in_blocks(0, 2, None, 10), vec![1 << 40]);
    let q = g.messages_for(&[2 << 40]);
    assert_eq!(q, vec![&msgs[3][..], &msgs[4][..], &msgs[5][..]]);
    assert_eq!(g.newest_timestamp(), Some(1000));
}

#[test]
fn store_reopens_without_verifying_and_flags_superseded_records() {
    let k = Keys::new();
    let path = temp_store("reopen.gs");
    let msgs = small_graph(&k, 1000);
    let newer = k.update(1 << 40, 0, 2000, k.signer(1, 2, 0));
    {
        let mut p = pipeline();
        p.open_store(&path).unwrap();
        for m in &msgs {
            p.submit(0, m.clone());
        }
        assert!(p.process(100).store_error.is_none());
        p.submit(0, newer.clone());
        p.process(100);
        assert_eq!(p.store().unwrap().stats().records_deleted, 1);
    }
    let image = std::fs::read(&path).unwrap();
    let scan = lngossip_core::store::scan(&image).unwrap();
    assert_eq!(scan.records.len(), 7);
    assert_eq!(scan.damage, None);
    let deleted: Vec<bool> = scan.records.iter().map(|r| r.flags & 0x8000 != 0).collect();
    // written in accepted order: both announcements, then updates, node, newer update
    assert_eq!(
        deleted,
        vec![false, false, true, false, false, false, false]
    );
    let mut p = pipeline();
    let rep = p.open_store(&path).unwrap();
    assert_eq!((rep.records, rep.truncated_bytes), (7, 0));
    assert_eq!(p.counters().signatures_verified, 0);
    assert_eq!(p.graph().channel_count(), 2);
    let c = p.graph().channel(1 << 40).unwrap();
    assert_eq!(&*c.updates[0].as_ref().unwrap().msg, &newer[..]);
    // the seen-set was rebuilt: a copy is a duplicate, an older one stale
    assert_eq!(p.submit(3, newer).decision, Decision::Duplicate);
    assert_eq!(p.submit(3, msgs[1].clone()).decision, Decision::Stale);
    assert_eq!(p.submit(3, msgs[0].clone()).decision, Decision::Duplicate);
}

#[test]
fn store_truncates_a_torn_tail_and_keeps_everything_before_it() {
    let k = Keys::new();
    let (path, msgs) = stored_small_graph(&k, "torn.gs");
    let whole = std::fs::read(&path).unwrap();
    for cut in [
        whole.len() - 1,
        whole.len() - 100,
        whole.len() - msgs[5].len() - 6,
    ] {
        std::fs::write(&path, &whole[..cut]).unwrap();
        let mut p = pipeline();
        let rep = p.open_store(&path).unwrap();
        assert_eq!(rep.records, 5, "cut at {cut}");
        assert!(rep.truncated_bytes > 0 && rep.damage.is_some());
        assert_eq!(p.graph().channel_count(), 2);
        assert!(p.graph().node(&k.public(2)).unwrap().announcement.is_none());
        drop(p);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len() as usize,
            whole.len() - msgs[5].len() - 12
        );
    }
}

#[test]
fn store_skips_a_damaged_record_in_the_middle_and_the_rest_is_kept() {
    let k = Keys::new();
    let (path, msgs) = stored_small_graph(&k, "middle.gs");
    let mut image = std::fs::read(&path).unwrap();
    let scan = lngossip_core::store::scan(&image).unwrap();
    // records in accepted order: announcements 1 and 2, updates, node 2
    let ann2 = scan.records[1];
    assert_eq!(&image[ann2.start..ann2.end], &msgs[3][..]);
    image[ann2.start + 300] ^= 0x01;
    std::fs::write(&path, &image).unwrap();
    let mut p = pipeline();
    let rep = p.open_store(&path).unwrap();
    assert_eq!((rep.skipped_regions, rep.truncated_bytes), (1, 0));
    assert_eq!(rep.skipped[0].offset, ann2.offset);
    assert_eq!(rep.skipped_bytes, (ann2.end as u64) - ann2.offset);
    assert_eq!(std::fs::read(rep.kept_original.unwrap()).unwrap(), image);
    // channel 2 is gone, channel 1 and node 2 are kept
    assert_eq!(p.graph().channel_count(), 1);
    assert!(p.graph().channel(2 << 40).is_none());
    assert!(p.graph().node(&k.public(2)).unwrap().announcement.is_some());
    assert_eq!(p.counters().signatures_verified, 0);
    // nothing of the lost channel is remembered: its messages are taken again
    assert_eq!(p.submit(1, msgs[1].clone()).decision, Decision::Duplicate);
    assert_eq!(p.submit(1, msgs[3].clone()).decision, Decision::Queued);
    assert_eq!(p.submit(1, msgs[4].clone()).decision, Decision::Queued);
    let done = p.process(100);
    let accepted: Vec<Decision> = done.outcomes.iter().map(|o| o.decision).collect();
    assert_eq!(accepted, vec![Decision::Accepted, Decision::Accepted]);
    assert_eq!(p.graph().channel_count(), 2);
}

#[test]
fn a_forged_record_with_a_valid_crc_is_trusted_unless_the_store_is_verified() {
    use lngossip_core::store::{record_crc, scan};
    let k = Keys::new();
    let (path, msgs) = stored_small_graph(&k, "forged.gs");
    let mut image = std::fs::read(&path).unwrap();
    let s = scan(&image).unwrap();
    // records in accepted order: announcements 1 and 2, then updates
    let r = s.records[2];
    assert_eq!(&image[r.start..r.end], &msgs[1][..]);
    let last = r.end - 1;
    image[last] ^= 0x01; // htlc_maximum_msat changed, signature now wrong
    let crc = record_crc(r.timestamp, &image[r.start..r.end]);
    image[r.start - 8..r.start - 4].copy_from_slice(&crc.to_be_bytes());
    let forged = image[r.start..r.end].to_vec();
    std::fs::write(&path, &image).unwrap();
    {
        // the CRC guards against damage, not forgery: trusted
        let mut p = pipeline();
        let rep = p.open_store(&path).unwrap();
        assert!(!rep.verified && rep.rejected_records == 0);
        let c = p.graph().channel(1 << 40).unwrap();
        assert_eq!(&*c.updates[0].as_ref().unwrap().msg, &forged[..]);
    }
    let mut p = pipeline();
    let mut v = Verifier::new(1, 16).unwrap();
    let rep = p.open_store_verified(&path, &mut v).unwrap();
    assert!(rep.verified);
    assert_eq!(rep.rejected_records, 1);
    // 2 announcements of 4 signatures, 3 updates and a node announcement
    assert_eq!(p.counters().signatures_verified, 2 * 4 + 4);
    assert!(p.graph().channel(1 << 40).unwrap().updates[0].is_none());
    assert_eq!(p.submit(0, msgs[1].clone()).decision, Decision::Queued);
    assert_eq!(p.process(10).outcomes[0].decision, Decision::Accepted);
    drop(p);
    // the forged record was flagged deleted
    let image = std::fs::read(&path).unwrap();
    let s = scan(&image).unwrap();
    assert!(s.records[2].flags & 0x8000 != 0);
}

#[test]
fn compaction_keeps_the_live_records_only() {
    let k = Keys::new();
    let path = temp_store("compact.gs");
    let mut p = pipeline();
    p.open_store(&path).unwrap();
    for m in small_graph(&k, 1000) {
        p.submit(0, m);
    }
    p.process(100);
    // newer updates of one direction until dead records pass half the file
    for ts in 1001..1040 {
        p.submit(0, k.update(1 << 40, 0, ts, k.signer(1, 2, 0)));
        p.process(100);
    }
    let st = p.store().unwrap();
    assert!(st.stats().compactions >= 1);
    assert!(!st.wants_compaction());
    drop(p);
    let image = std::fs::read(&path).unwrap();
    let scan = lngossip_core::store::scan(&image).unwrap();
    assert!(scan.damage.is_none());
    let mut p = pipeline();
    p.open_store(&path).unwrap();
    let c = p.graph().channel(1 << 40).unwrap();
    assert_eq!(c.updates[0].as_ref().unwrap().timestamp, 1039);
    assert_eq!(p.graph().channel_count(), 2);
}

#[test]
fn prune_removes_channels_with_old_updates_and_their_records() {
    let k = Keys::new();
    let path = temp_store("prune.gs");
    let now = 10_000_000u64;
    let mut p = Engine::new(Config {
        threads: 2,
        now: Some(now),
        ..Config::for_policy(Policy::Live)
    });
    p.open_store(&path).unwrap();
    let fresh = (now - 3600) as u32;
    let mut msgs = vec![
        k.announcement(1 << 40, 1, 2),
        k.update(1 << 40, 0, fresh, k.signer(1, 2, 0)),
        k.update(1 << 40, 1, fresh, k.signer(1, 2, 1)),
        k.announcement(2 << 40, 3, 4),
        k.update(2 << 40, 0, fresh, k.signer(3, 4, 0)),
        k.node(3, fresh),
    ];
    for m in &msgs {
        p.submit(0, m.clone());
    }
    p.process(100);
    // two weeks and a day later, channel 2 got no update; channel 1 did
    let later = now + 15 * 24 * 3600;
    p.set_now(Some(later));
    let t = (later - 60) as u32;
    msgs.push(k.update(1 << 40, 0, t, k.signer(1, 2, 0)));
    p.submit(0, msgs[6].clone());
    p.process(100);
    let r = p.prune(None).unwrap();
    assert_eq!((r.channels, r.nodes), (1, 1));
    assert!(p.graph().channel(2 << 40).is_none());
    assert!(p.graph().node(&k.public(3)).is_none());
    assert!(p.graph().channel(1 << 40).is_some());
    // the pruned announcement may come again (its hash was forgotten)
    assert_eq!(p.submit(0, msgs[3].clone()).decision, Decision::Queued);
    drop(p);
    let mut p = Engine::new(Config::for_policy(Policy::Live));
    p.open_store(&path).unwrap();
    assert_eq!(p.graph().channel_count(), 1);
}

#[test]
fn block_ranges_reach_the_last_block_without_overflow() {
    let k = Keys::new();
    let mut p = pipeline();
    let top = ((1u64 << 24) - 1) << 40;
    for m in [k.announcement(1 << 40, 1, 2), k.announcement(top, 2, 3)] {
        p.submit(0, m);
    }
    p.process(10);
    let g = p.graph();
    assert_eq!(
        g.short_channel_ids_in_blocks(0, u32::MAX, None, 10),
        vec![1 << 40, top]
    );
    assert_eq!(
        g.short_channel_ids_in_blocks(2, u32::MAX, None, 10),
        vec![top]
    );
    assert_eq!(
        g.short_channel_ids_in_blocks(0, u32::MAX, Some(1 << 40), 10),
        vec![top]
    );
    assert!(g.short_channel_ids_in_blocks(0, 0, None, 10).is_empty());
    assert!(g
        .short_channel_ids_in_blocks(u32::MAX, u32::MAX, None, 10)
        .is_empty());
}

#[test]
fn live_updates_over_the_spam_limit_are_rate_limited_and_forgeries_spend_nothing() {
    let k = Keys::new();
    let now = 10_000_000u64;
    let mut p = Engine::new(Config {
        threads: 2,
        now: Some(now),
        ..Config::for_policy(Policy::Live)
    });
    p.submit(0, k.announcement(1 << 40, 1, 2));
    p.process(10);
    let signer = k.signer(1, 2, 0);
    // forged updates (wrong signer) first: they fail verification and spend no token
    for i in 0..20u32 {
        p.submit(
            1,
            k.update(1 << 40, 0, now as u32 - 1000 + i, k.signer(1, 2, 1)),
        );
        p.process(10);
    }
    assert_eq!(
        p.counters().decisions[2][Decision::InvalidSignature as usize],
        20
    );
    let mut decided = Vec::new();
    for i in 0..12u32 {
        p.submit(0, k.update(1 << 40, 0, now as u32 - 500 + i, signer));
        decided.extend(p.process(10).outcomes.into_iter().map(|o| o.decision));
    }
    let accepted = decided.iter().filter(|d| **d == Decision::Accepted).count();
    assert_eq!(accepted, 10);
    // the 11th and 12th are turned away at submit, before paying for a signature check
    assert_eq!(p.counters().decisions[2][Decision::RateLimited as usize], 2);
    // a minute later one more gets in
    p.set_now(Some(now + 60));
    p.submit(0, k.update(1 << 40, 0, now as u32 - 100, signer));
    let out = p.process(10);
    assert_eq!(out.outcomes[0].decision, Decision::Accepted);
    // the other direction has its own bucket
    p.submit(0, k.update(1 << 40, 1, now as u32 - 100, k.signer(1, 2, 1)));
    assert_eq!(p.process(10).outcomes[0].decision, Decision::Accepted);
}

#[test]
fn frames_from_a_flooding_peer_wait_in_the_decoder_and_are_all_decided() {
    use lngossip_core::transport::{CipherState, Decoder, Encoder};
    let k = Keys::new();
    let anns = announcements(&k, 2000, 40);
    let mut p = small_share_engine();
    let (key, ck) = ([1u8; 32], [2u8; 32]);
    let mut enc = Encoder::new(CipherState::new(key, ck));
    let mut wire = Vec::new();
    for m in &anns {
        enc.encode(m, &mut wire).unwrap();
    }
    let mut dec = Decoder::new(CipherState::new(key, ck));
    dec.push(&wire);
    // what Codec.feed does: submit until queue_full, keep the refused message
    let (mut held, mut queued, mut rounds) = (None, 0, 0);
    loop {
        let msg = match held.take() {
            Some(m) => m,
            None => match dec.next_message().unwrap() {
                Some(m) => m,
                None => break,
            },
        };
        let (a, back) = p.submit_or_return(1, msg);
        if a.decision == Decision::QueueFull {
            // the same bytes come back, and nothing was remembered
            assert!(back.is_some());
            held = back;
            let _ = p.process(1000);
            rounds += 1;
            continue;
        }
        assert!(back.is_none());
        assert_eq!(a.decision, Decision::Queued);
        queued += 1;
    }
    let _ = p.process(1000);
    assert_eq!(queued, anns.len());
    assert!(
        rounds >= 5,
        "the 3,000-byte share must have filled: {rounds}"
    );
    assert_eq!(p.graph().channel_count(), anns.len());
    assert_eq!(dec.buffered(), 0);
}

/// A shared pipeline (`lngossip_core::shared`) with `threads` verifiers.
fn shared(threads: usize) -> lngossip_core::shared::SharedPipeline<Vec<u8>> {
    let cfg = Config {
        threads,
        ..Config::default()
    };
    let v = Verifier::new(cfg.threads, cfg.pubkey_cache_capacity).expect("pool");
    lngossip_core::shared::SharedPipeline::new(Pipeline::new(cfg), v)
}

#[test]
fn submit_and_read_from_another_thread_between_the_steps_of_process() {
    use lngossip_core::shared::Step;
    let k = Keys::new();
    let sp = shared(2);
    for m in small_graph(&k, 1000) {
        sp.submit(1, m).unwrap();
    }
    let later = announcements(&k, 3 << 40, 3);
    let mut steps = Vec::new();
    let done = sp
        .process_observed(100, |step| {
            // another thread submits and reads while this batch is between steps
            let (decision, channels) = std::thread::scope(|s| {
                s.spawn(|| {
                    let i = steps.len();
                    let a = sp.submit(2, later[i].clone()).unwrap();
                    (a.decision, sp.lock().unwrap().graph().channel_count())
                })
                .join()
                .unwrap()
            });
            steps.push((step, decision, channels));
        })
        .unwrap();
    assert_eq!(
        steps,
        vec![
            // a reader sees none of the batch until it is finished, then all of it
            (Step::Begun, Decision::Queued, 0),
            (Step::AnnouncementsApplied, Decision::Queued, 0),
            (Step::Finished, Decision::Queued, 2),
        ]
    );
    assert_eq!(done.accepted.len(), 6);
    // what was submitted meanwhile waits for the next batch, and is accepted then
    let next = sp.process(100).unwrap();
    assert_eq!(next.accepted.len(), 3);
    assert_eq!(sp.lock().unwrap().graph().channel_count(), 5);
}

#[test]
fn compaction_runs_while_batches_are_accepted_and_loses_nothing() {
    use lngossip_core::shared::Step;
    let k = Keys::new();
    let path = temp_store("shared-compact.gs");
    let sp = shared(2);
    sp.lock().unwrap().open_store(&path).unwrap();
    for m in small_graph(&k, 1000) {
        sp.submit(0, m).unwrap();
    }
    sp.process(100).unwrap();
    // superseded records (the single-threaded `process` compacts on its own,
    // the shared one only through `compact`)
    let ts = 1001;
    for t in ts..ts + 40 {
        sp.submit(0, k.update(2 << 40, 0, t, k.signer(2, 3, 0)))
            .unwrap();
        sp.submit(0, k.update(1 << 40, 1, t, k.signer(1, 2, 1)))
            .unwrap();
    }
    let before = sp.lock().unwrap().store().unwrap().stats().compactions;
    let mut during = Vec::new();
    let r = sp
        .compact_observed(|step| {
            // while the image is built and written: batches come in,
            // superseding records of the image and adding new ones
            std::thread::scope(|s| {
                s.spawn(|| {
                    let n = sp.process(100).unwrap().accepted.len();
                    let t = 5000 + during.len() as u32;
                    sp.submit(0, k.update(1 << 40, 0, t, k.signer(1, 2, 0)))
                        .unwrap();
                    sp.submit(0, k.announcement((9 << 40) + u64::from(t), 4, 5))
                        .unwrap();
                    let m = sp.process(100).unwrap().accepted.len();
                    during.push((step, n, m));
                });
            });
        })
        .unwrap()
        .unwrap();
    assert!(r);
    assert_eq!(during.len(), 2);
    assert_eq!(during[0].0, Step::CompactionImage);
    assert_eq!(
        during[0].1, 80,
        "the queued updates were accepted mid-compaction"
    );
    assert!(during.iter().all(|d| d.2 == 2));
    let live = sp.lock().unwrap();
    assert_eq!(live.store().unwrap().stats().compactions, before + 1);
    let expect: Vec<(u64, Vec<Option<u32>>)> = (1..=2)
        .chain([9])
        .flat_map(|b| {
            live.graph()
                .short_channel_ids_after(Some((b << 40) - 1), 100)
        })
        .map(|s| {
            let c = live.graph().channel(s).unwrap();
            (
                s,
                c.updates
                    .iter()
                    .map(|u| u.as_ref().map(|u| u.timestamp))
                    .collect(),
            )
        })
        .collect();
    let mut kept = 0;
    live.graph().for_each_stored(|_, _| kept += 1);
    drop(live);
    drop(sp);
    // the compacted file, reopened, holds exactly the live graph, no damage;
    // every record superseded during the compaction is flagged deleted
    let image = std::fs::read(&path).unwrap();
    let scan = lngossip_core::store::scan(&image).unwrap();
    assert!(scan.damage.is_none() && scan.skipped.is_empty());
    let flagged_live = scan
        .records
        .iter()
        .filter(|r| r.flags & lngossip_core::store::FLAG_DELETED == 0)
        .count();
    assert_eq!(flagged_live, kept);
    let mut p = pipeline();
    let rep = p.open_store(&path).unwrap();
    assert_eq!(rep.truncated_bytes, 0);
    assert_eq!(p.graph().channel_count(), 4);
    let c = p.graph().channel(1 << 40).unwrap();
    assert_eq!(c.updates[0].as_ref().unwrap().timestamp, 5001);
    assert_eq!(c.updates[1].as_ref().unwrap().timestamp, ts + 39);
    let got: Vec<(u64, Vec<Option<u32>>)> = expect
        .iter()
        .map(|(s, _)| {
            let c = p.graph().channel(*s).unwrap();
            (
                *s,
                c.updates
                    .iter()
                    .map(|u| u.as_ref().map(|u| u.timestamp))
                    .collect(),
            )
        })
        .collect();
    assert_eq!(got, expect);
}
