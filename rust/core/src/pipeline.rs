//! The gossip pipeline: cheap checks at [`Pipeline::submit`], batched
//! verification and graph updates at [`Pipeline::process`].
//!
//! Every message gets one final [`Decision`]. `submit` answers at once with
//! a terminal decision (duplicate, stale, malformed, …), `Queued` (decided
//! by a later `process`) or `Orphaned` (held until its channel is accepted;
//! a released orphan ends as accepted, stale or invalid_signature). The
//! checks run cheapest first and all of them before any signature check
//! (Core Lightning #7972): parse, `chain_hash`, exact duplicate, live time
//! window, known `short_channel_id` / stored timestamps, queue admission.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::graph::Graph;
use crate::orphans::{Orphans, DEFAULT_ORPHAN_CAPACITY, DEFAULT_ORPHAN_MAX_BYTES};
use crate::queue::{Queue, QueueLimits};
use crate::seen::{SeenSet, DEFAULT_SEEN_CAPACITY};
use crate::verify::{Job, Verdict, Verifier, DEFAULT_PUBKEY_CACHE_CAPACITY};
use crate::wire::{self, Gossip, Malformed, MsgKind, MAINNET_CHAIN_HASH};

/// Live policy: reject timestamps more than this far ahead of "now" (24 h,
/// as Core Lightning and LDK do).
pub const LIVE_MAX_AHEAD_S: u64 = 24 * 3600;
/// Live policy: reject timestamps more than this far behind "now" (14 days,
/// the BOLT #7 pruning horizon).
pub const LIVE_MAX_BEHIND_S: u64 = 14 * 24 * 3600;

/// Which timestamps and nodes are accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Ingesting old dumps: no wall-clock window, nodes without a known channel verified anyway.
    Archive,
    /// Gossip from live peers: 24 h ahead / 14 days behind window, node
    /// announcements need a known channel (BOLT #7).
    Live,
}

/// What happened to a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Admitted to the queue; the final decision comes from `process`.
    Queued,
    /// `channel_update` of an unknown channel, held in the orphan cache.
    Orphaned,
    /// Verified and applied to the graph.
    Accepted,
    /// Already seen: same bytes, or a `channel_announcement` of a known channel.
    Duplicate,
    /// Not strictly newer than the stored timestamp.
    Stale,
    /// Could not be parsed (see [`Malformed`]).
    Malformed,
    /// `chain_hash` of another chain.
    WrongChain,
    /// A signature did not verify.
    InvalidSignature,
    /// Live policy: `node_announcement` of a node without a known channel.
    UnknownNode,
    /// Live policy: timestamp more than 14 days old.
    TooOld,
    /// Live policy: timestamp more than 24 h in the future.
    TooNew,
    /// The queue (or the peer's share) is full; the message was handed back.
    QueueFull,
}

impl Decision {
    /// All decisions, in counter order.
    pub const ALL: [Decision; 12] = [
        Decision::Queued,
        Decision::Orphaned,
        Decision::Accepted,
        Decision::Duplicate,
        Decision::Stale,
        Decision::Malformed,
        Decision::WrongChain,
        Decision::InvalidSignature,
        Decision::UnknownNode,
        Decision::TooOld,
        Decision::TooNew,
        Decision::QueueFull,
    ];

    /// Stable snake_case name used in counters and in Python.
    pub fn name(self) -> &'static str {
        match self {
            Decision::Queued => "queued",
            Decision::Orphaned => "orphaned",
            Decision::Accepted => "accepted",
            Decision::Duplicate => "duplicate",
            Decision::Stale => "stale",
            Decision::Malformed => "malformed",
            Decision::WrongChain => "wrong_chain",
            Decision::InvalidSignature => "invalid_signature",
            Decision::UnknownNode => "unknown_node",
            Decision::TooOld => "too_old",
            Decision::TooNew => "too_new",
            Decision::QueueFull => "queue_full",
        }
    }
}

/// Pipeline settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Accepted `chain_hash` (default: Bitcoin mainnet).
    pub chain_hash: [u8; 32],
    /// Archive or live policy.
    pub policy: Policy,
    /// Fixed "now" in seconds since the epoch (tests); `None` reads the clock.
    pub now: Option<u64>,
    /// Queue caps.
    pub queue: QueueLimits,
    /// Orphan cache entry bound.
    pub orphan_capacity: usize,
    /// Orphan cache byte bound.
    pub orphan_max_bytes: usize,
    /// Seen-set hash bound.
    pub seen_capacity: usize,
    /// Parsed public key cache bound.
    pub pubkey_cache_capacity: usize,
    /// Verification threads (0: one per core).
    pub threads: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            chain_hash: MAINNET_CHAIN_HASH,
            policy: Policy::Archive,
            now: None,
            queue: QueueLimits::default(),
            orphan_capacity: DEFAULT_ORPHAN_CAPACITY,
            orphan_max_bytes: DEFAULT_ORPHAN_MAX_BYTES,
            seen_capacity: DEFAULT_SEEN_CAPACITY,
            pubkey_cache_capacity: DEFAULT_PUBKEY_CACHE_CAPACITY,
            threads: 0,
        }
    }
}

/// The answer to [`Pipeline::submit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admission {
    /// Sequence number given to the message (increasing per pipeline).
    pub seq: u64,
    /// The decision: terminal, `Queued` or `Orphaned`.
    pub decision: Decision,
    /// Why it was malformed, for `Malformed`.
    pub reason: Option<Malformed>,
}

/// The decision `process` took on a message that was queued or orphaned:
/// final, or `Orphaned` for a `channel_update` that was queued behind its
/// channel's announcement and now waits in the orphan cache because that
/// announcement was not accepted (yet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Sequence number from its [`Admission`].
    pub seq: u64,
    /// Peer that submitted it.
    pub peer: u64,
    /// Message kind.
    pub kind: MsgKind,
    /// Final decision, or `Orphaned` (see above); never `Queued` or `QueueFull`.
    pub decision: Decision,
    /// Set for `Malformed` (`BadPublicKey`: a key not on the curve).
    pub reason: Option<Malformed>,
}

/// What one [`Pipeline::process`] call decided.
pub struct Processed<M> {
    /// Final decisions, in the order they were made.
    pub outcomes: Vec<Outcome>,
    /// Accepted messages in dependency order (announcement before its updates).
    pub accepted: Vec<M>,
    /// ECDSA verifications run by this call.
    pub signatures_verified: u64,
}

/// Counters of a pipeline.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    /// `decisions[kind][decision]`; `Queued` items are not counted until decided,
    /// `Orphaned` counts items orphaned now (released ones move to their final decision).
    pub decisions: [[u64; 12]; 4],
    /// Malformed messages by reason.
    pub malformed_reasons: [u64; 5],
    /// ECDSA verifications run.
    pub signatures_verified: u64,
    /// Times a message was handed back because a cap was reached.
    pub queue_full: u64,
    /// Orphans evicted before their channel arrived (they stay `orphaned`).
    pub orphans_evicted: u64,
    /// Orphans released because their channel was accepted.
    pub orphans_released: u64,
}

struct Pending<M> {
    seq: u64,
    peer: u64,
    gossip: Gossip,
    msg: M,
    /// Released from the orphan cache (its `Orphaned` count moves on decision).
    orphan: bool,
}

/// The gossip pipeline over messages of type `M` (owned bytes: `Vec<u8>`,
/// or a borrowed Python `bytes` in the binding).
pub struct Pipeline<M> {
    cfg: Config,
    seen: SeenSet,
    queue: Queue<Pending<M>>,
    orphans: Orphans<Pending<M>>,
    graph: Graph,
    verifier: Verifier,
    counters: Counters,
    next_seq: u64,
    /// `short_channel_id`s with a `channel_announcement` in the queue, and how many.
    /// Updates of these channels are queued behind it rather than held as
    /// orphans, so a long queue of announcements cannot flush the orphan cache.
    pending_announcements: HashMap<u64, u32>,
}

impl<M: AsRef<[u8]> + Send + Sync> Pipeline<M> {
    /// A pipeline with `cfg`.
    ///
    /// # Errors
    /// Returns a description when the verification thread pool cannot be built.
    pub fn new(cfg: Config) -> Result<Self, String> {
        Ok(Pipeline {
            seen: SeenSet::new(cfg.seen_capacity),
            queue: Queue::new(cfg.queue),
            orphans: Orphans::new(cfg.orphan_capacity, cfg.orphan_max_bytes),
            graph: Graph::default(),
            verifier: Verifier::new(cfg.threads, cfg.pubkey_cache_capacity)?,
            counters: Counters::default(),
            next_seq: 0,
            pending_announcements: HashMap::new(),
            cfg,
        })
    }

    /// The settings in force.
    pub fn config(&self) -> &Config {
        &self.cfg
    }
    /// Counters so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
    /// The queue (for its byte counts).
    pub fn queue_bytes(&self) -> usize {
        self.queue.bytes()
    }
    /// Messages waiting for `process`.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }
    /// Highest queued byte count reached.
    pub fn queue_high_water_bytes(&self) -> usize {
        self.queue.high_water_bytes()
    }
    /// Bytes `peer` has queued.
    pub fn peer_queue_bytes(&self, peer: u64) -> usize {
        self.queue.peer_bytes(peer)
    }
    /// Held orphans.
    pub fn orphans(&self) -> usize {
        self.orphans.len()
    }
    /// Hashes in the seen-set.
    pub fn seen_entries(&self) -> usize {
        self.seen.len()
    }
    /// The graph state.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }
    /// Verification threads.
    pub fn threads(&self) -> usize {
        self.verifier.threads()
    }
    /// Set (or clear, with `None`) the fixed "now" used by the live policy.
    pub fn set_now(&mut self, now: Option<u64>) {
        self.cfg.now = now;
    }

    fn now(&self) -> u64 {
        self.cfg.now.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        })
    }

    fn count(&mut self, kind: MsgKind, d: Decision) {
        self.counters.decisions[kind as usize][d as usize] += 1;
    }

    fn reject(
        &mut self,
        seq: u64,
        kind: MsgKind,
        d: Decision,
        reason: Option<Malformed>,
    ) -> Admission {
        self.count(kind, d);
        if let Some(r) = reason {
            self.counters.malformed_reasons[r as usize] += 1;
        }
        Admission {
            seq,
            decision: d,
            reason,
        }
    }

    /// Run the cheap checks on `msg` from `peer` and queue it if it needs verifying.
    ///
    /// Takes microseconds; never verifies a signature. A `QueueFull` answer
    /// means nothing was kept: submit the same message again once `process`
    /// has freed room (the seen-set does not remember it).
    pub fn submit(&mut self, peer: u64, msg: M) -> Admission {
        let seq = self.next_seq;
        self.next_seq += 1;
        let bytes = msg.as_ref();
        let len = bytes.len();
        let kind = MsgKind::of(bytes);
        let gossip = match wire::parse(bytes) {
            Ok(g) => g,
            Err(r) => return self.reject(seq, kind, Decision::Malformed, Some(r)),
        };
        match &gossip {
            Gossip::ChannelAnnouncement { chain_hash, .. }
            | Gossip::ChannelUpdate { chain_hash, .. }
                if *chain_hash != self.cfg.chain_hash =>
            {
                return self.reject(seq, kind, Decision::WrongChain, None);
            }
            _ => {}
        }
        let h = self.seen.hash(bytes);
        if self.seen.contains(h) {
            return self.reject(seq, kind, Decision::Duplicate, None);
        }
        if self.cfg.policy == Policy::Live {
            if let Some(ts) = gossip.timestamp() {
                let (ts, now) = (u64::from(ts), self.now());
                if ts > now.saturating_add(LIVE_MAX_AHEAD_S) {
                    return self.reject(seq, kind, Decision::TooNew, None);
                }
                if ts.saturating_add(LIVE_MAX_BEHIND_S) < now {
                    return self.reject(seq, kind, Decision::TooOld, None);
                }
            }
        }
        match &gossip {
            Gossip::ChannelAnnouncement {
                short_channel_id, ..
            } => {
                if self.graph.has_channel(*short_channel_id) {
                    return self.reject(seq, kind, Decision::Duplicate, None);
                }
            }
            Gossip::ChannelUpdate {
                short_channel_id,
                timestamp,
                channel_flags,
                ..
            } => {
                let (scid, ts, dir) =
                    (*short_channel_id, *timestamp, (*channel_flags & 1) as usize);
                if !self.graph.has_channel(scid) && !self.pending_announcements.contains_key(&scid)
                {
                    self.seen.insert(h);
                    let p = Pending {
                        seq,
                        peer,
                        gossip,
                        msg,
                        orphan: true,
                    };
                    let evicted = self.orphans.insert(scid, seq, len, p);
                    self.counters.orphans_evicted += evicted.len() as u64;
                    return self.reject(seq, kind, Decision::Orphaned, None);
                }
                if self.graph.update_is_stale(scid, dir, ts) {
                    return self.reject(seq, kind, Decision::Stale, None);
                }
            }
            Gossip::NodeAnnouncement { node_id, timestamp } => {
                if self.graph.node_is_stale(node_id, *timestamp) {
                    return self.reject(seq, kind, Decision::Stale, None);
                }
            }
        }
        let announced = match &gossip {
            Gossip::ChannelAnnouncement {
                short_channel_id, ..
            } => Some(*short_channel_id),
            _ => None,
        };
        let p = Pending {
            seq,
            peer,
            gossip,
            msg,
            orphan: false,
        };
        match self.queue.push(peer, len, p) {
            Ok(()) => {
                self.seen.insert(h);
                if let Some(scid) = announced {
                    *self.pending_announcements.entry(scid).or_insert(0) += 1;
                }
                Admission {
                    seq,
                    decision: Decision::Queued,
                    reason: None,
                }
            }
            Err(_) => {
                self.counters.queue_full += 1;
                Admission {
                    seq,
                    decision: Decision::QueueFull,
                    reason: None,
                }
            }
        }
    }

    fn decide(
        &mut self,
        out: &mut Vec<Outcome>,
        p: &Pending<M>,
        d: Decision,
        reason: Option<Malformed>,
    ) {
        let kind = p.gossip.kind();
        if p.orphan {
            self.counters.decisions[kind as usize][Decision::Orphaned as usize] -= 1;
        }
        self.count(kind, d);
        if let Some(r) = reason {
            self.counters.malformed_reasons[r as usize] += 1;
        }
        out.push(Outcome {
            seq: p.seq,
            peer: p.peer,
            kind,
            decision: d,
            reason,
        });
    }

    fn job<'a>(&self, p: &'a Pending<M>) -> Job<'a> {
        let msg = p.msg.as_ref();
        let checks = match &p.gossip {
            Gossip::ChannelAnnouncement {
                node_id_1,
                node_id_2,
                bitcoin_key_1,
                bitcoin_key_2,
                ..
            } => vec![
                (2, *node_id_1),
                (66, *node_id_2),
                (130, *bitcoin_key_1),
                (194, *bitcoin_key_2),
            ],
            Gossip::NodeAnnouncement { node_id, .. } => vec![(2, *node_id)],
            Gossip::ChannelUpdate {
                short_channel_id,
                channel_flags,
                ..
            } => {
                let dir = (*channel_flags & 1) as usize;
                // The channel is known: updates are queued only then, and
                // orphans are released only after their announcement.
                let key = self
                    .graph
                    .update_key(*short_channel_id, dir)
                    .unwrap_or([0; 33]);
                vec![(2, key)]
            }
        };
        Job {
            msg,
            signed_from: wire::signed_from(p.gossip.kind()),
            checks,
        }
    }

    fn verify(&mut self, items: &[Pending<M>]) -> Vec<Verdict> {
        let jobs: Vec<Job<'_>> = items.iter().map(|p| self.job(p)).collect();
        let results = self.verifier.verify(&jobs);
        let calls: u64 = results.iter().map(|(_, c)| u64::from(*c)).sum();
        self.counters.signatures_verified += calls;
        results.into_iter().map(|(v, _)| v).collect()
    }

    /// Take up to `max_messages` from the queue (round-robin between peers),
    /// verify them in parallel and apply them to the graph.
    ///
    /// Channel announcements go first; updates held as orphans for a channel
    /// accepted here are released and decided in the same call. Takes about
    /// 46 µs per signature per core: call it off the event loop.
    pub fn process(&mut self, max_messages: usize) -> Processed<M> {
        let mut anns = Vec::new();
        let mut rest = Vec::new();
        for _ in 0..max_messages {
            let Some((_, p)) = self.queue.pop() else {
                break;
            };
            match p.gossip {
                Gossip::ChannelAnnouncement {
                    short_channel_id, ..
                } => {
                    if let Some(n) = self.pending_announcements.get_mut(&short_channel_id) {
                        *n -= 1;
                        if *n == 0 {
                            self.pending_announcements.remove(&short_channel_id);
                        }
                    }
                    anns.push(p);
                }
                _ => rest.push(p),
            }
        }
        let before = self.counters.signatures_verified;
        let mut outcomes = Vec::with_capacity(anns.len() + rest.len());
        let mut accepted = Vec::new();
        let mut released = Vec::new();

        let verdicts = self.verify(&anns);
        for (p, v) in anns.into_iter().zip(verdicts) {
            let Gossip::ChannelAnnouncement {
                short_channel_id,
                node_id_1,
                node_id_2,
                ..
            } = p.gossip
            else {
                continue;
            };
            match v {
                Verdict::BadPublicKey => self.decide(
                    &mut outcomes,
                    &p,
                    Decision::Malformed,
                    Some(Malformed::BadPublicKey),
                ),
                Verdict::InvalidSignature => {
                    self.decide(&mut outcomes, &p, Decision::InvalidSignature, None)
                }
                Verdict::Valid if self.graph.has_channel(short_channel_id) => {
                    self.decide(&mut outcomes, &p, Decision::Duplicate, None)
                }
                Verdict::Valid => {
                    self.graph
                        .add_channel(short_channel_id, node_id_1, node_id_2);
                    self.decide(&mut outcomes, &p, Decision::Accepted, None);
                    let r = self.orphans.release(short_channel_id);
                    self.counters.orphans_released += r.len() as u64;
                    released.extend(r);
                    accepted.push(p.msg);
                }
            }
        }

        // Released orphans (older) first, then this batch's updates and node announcements.
        let mut candidates = Vec::with_capacity(released.len() + rest.len());
        for mut p in released.into_iter().chain(rest) {
            let pre = match &p.gossip {
                Gossip::ChannelUpdate {
                    short_channel_id, ..
                } if !self.graph.has_channel(*short_channel_id) => {
                    // Queued behind an announcement that is not accepted (yet):
                    // hold it as an orphan until one is.
                    let scid = *short_channel_id;
                    self.count(MsgKind::ChannelUpdate, Decision::Orphaned);
                    outcomes.push(Outcome {
                        seq: p.seq,
                        peer: p.peer,
                        kind: MsgKind::ChannelUpdate,
                        decision: Decision::Orphaned,
                        reason: None,
                    });
                    p.orphan = true;
                    let (seq, n) = (p.seq, p.msg.as_ref().len());
                    let evicted = self.orphans.insert(scid, seq, n, p);
                    self.counters.orphans_evicted += evicted.len() as u64;
                    continue;
                }
                Gossip::ChannelUpdate {
                    short_channel_id,
                    timestamp,
                    channel_flags,
                    ..
                } => self
                    .graph
                    .update_is_stale(*short_channel_id, (*channel_flags & 1) as usize, *timestamp)
                    .then_some(Decision::Stale),
                Gossip::NodeAnnouncement { node_id, timestamp } => {
                    if self.cfg.policy == Policy::Live && !self.graph.node_has_channel(node_id) {
                        Some(Decision::UnknownNode)
                    } else {
                        self.graph
                            .node_is_stale(node_id, *timestamp)
                            .then_some(Decision::Stale)
                    }
                }
                Gossip::ChannelAnnouncement { .. } => None,
            };
            match pre {
                Some(d) => self.decide(&mut outcomes, &p, d, None),
                None => candidates.push(p),
            }
        }
        let verdicts = self.verify(&candidates);
        for (p, v) in candidates.into_iter().zip(verdicts) {
            let d = match v {
                Verdict::BadPublicKey => {
                    self.decide(
                        &mut outcomes,
                        &p,
                        Decision::Malformed,
                        Some(Malformed::BadPublicKey),
                    );
                    continue;
                }
                Verdict::InvalidSignature => Decision::InvalidSignature,
                Verdict::Valid => match &p.gossip {
                    Gossip::ChannelUpdate {
                        short_channel_id,
                        timestamp,
                        channel_flags,
                        ..
                    } => {
                        let (scid, ts, dir) =
                            (*short_channel_id, *timestamp, (*channel_flags & 1) as usize);
                        if self.graph.update_is_stale(scid, dir, ts) {
                            Decision::Stale
                        } else {
                            self.graph.set_update_timestamp(scid, dir, ts);
                            Decision::Accepted
                        }
                    }
                    Gossip::NodeAnnouncement { node_id, timestamp } => {
                        if self.graph.node_is_stale(node_id, *timestamp) {
                            Decision::Stale
                        } else {
                            self.graph.set_node_timestamp(*node_id, *timestamp);
                            Decision::Accepted
                        }
                    }
                    Gossip::ChannelAnnouncement { .. } => Decision::Duplicate,
                },
            };
            self.decide(&mut outcomes, &p, d, None);
            if d == Decision::Accepted {
                accepted.push(p.msg);
            }
        }
        Processed {
            outcomes,
            accepted,
            signatures_verified: self.counters.signatures_verified - before,
        }
    }
}
