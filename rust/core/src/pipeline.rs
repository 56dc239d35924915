//! The gossip pipeline: cheap checks at [`Pipeline::submit`], batched
//! verification and graph updates at [`Pipeline::process`].
//!
//! Every message gets one final [`Decision`]. `submit` answers at once with
//! a terminal decision (duplicate, stale, malformed, …), `Queued` (decided
//! by a later `process`) or `Orphaned` (held until its channel is accepted;
//! a released orphan ends as accepted, stale or invalid_signature). The
//! checks run cheapest first and all of them before any signature check
//! (Core Lightning #7972): parse, `chain_hash`, exact duplicate, time
//! window (24 h ahead for every policy, 14 days behind for live), known
//! `short_channel_id` / stored timestamps, queue admission.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::graph::{Graph, Prior, Stored};
use crate::orphans::{
    Orphans, ARCHIVE_ORPHAN_CAPACITY, ARCHIVE_ORPHAN_MAX_BYTES, DEFAULT_ORPHAN_CAPACITY,
    DEFAULT_ORPHAN_MAX_BYTES,
};
use crate::queue::{Queue, QueueLimits};
use crate::ratelimit::{Key, RateLimit, RateLimiter, DEFAULT_RATE_LIMIT};
use crate::seen::{SeenSet, DEFAULT_SEEN_CAPACITY};
use crate::store::{self, OpenReport, Store, StoreError, FLAG_DELETED};
use crate::verify::{Job, Verdict, Verifier, DEFAULT_PUBKEY_CACHE_CAPACITY};
use crate::wire::{self, Gossip, Malformed, MsgKind, NodeId, MAINNET_CHAIN_HASH};

/// Every policy: reject timestamps more than this far ahead of "now" (24 h,
/// as Core Lightning and LDK do for live gossip). A message from the future
/// can never be right, and under the archive policy too an accepted
/// `channel_update` stamped years ahead (or `0xFFFFFFFF`) would make every
/// real update of its direction `stale` for ever.
pub const MAX_AHEAD_S: u64 = 24 * 3600;
/// Live policy: reject timestamps more than this far behind "now" (14 days,
/// the BOLT #7 pruning horizon).
pub const LIVE_MAX_BEHIND_S: u64 = 14 * 24 * 3600;

/// Which timestamps and nodes are accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Ingesting old dumps: no lower time bound (only [`MAX_AHEAD_S`], as
    /// for every policy), nodes without a known channel verified anyway.
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
    /// Timestamp more than 24 h ([`MAX_AHEAD_S`]) in the future (any policy).
    TooNew,
    /// The queue (or the peer's share) is full; the message was handed back.
    QueueFull,
    /// Live policy: over the spam limit of its channel direction or node
    /// (see [`crate::ratelimit`]); not stored, not relayed.
    RateLimited,
}

impl Decision {
    /// All decisions, in counter order.
    pub const ALL: [Decision; 13] = [
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
        Decision::RateLimited,
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
            Decision::RateLimited => "rate_limited",
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
    /// Fixed "now" in seconds since the epoch (tests); `None` reads the
    /// clock. Every policy rejects timestamps [`MAX_AHEAD_S`] past it.
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
    /// Spam limits per channel direction and node (`None`: off; the live
    /// policy's default is [`DEFAULT_RATE_LIMIT`]).
    pub rate_limit: Option<RateLimit>,
}

impl Config {
    /// The defaults for `policy`: the orphan cache holds Core Lightning's
    /// 10,000 updates (4 MB) under the live policy, and
    /// [`ARCHIVE_ORPHAN_CAPACITY`] / [`ARCHIVE_ORPHAN_MAX_BYTES`] under the
    /// archive policy, so the outcome of an archive ingest does not depend
    /// on the order of its files.
    pub fn for_policy(policy: Policy) -> Self {
        let (orphan_capacity, orphan_max_bytes) = match policy {
            Policy::Live => (DEFAULT_ORPHAN_CAPACITY, DEFAULT_ORPHAN_MAX_BYTES),
            Policy::Archive => (ARCHIVE_ORPHAN_CAPACITY, ARCHIVE_ORPHAN_MAX_BYTES),
        };
        Config {
            policy,
            orphan_capacity,
            orphan_max_bytes,
            rate_limit: (policy == Policy::Live).then_some(DEFAULT_RATE_LIMIT),
            ..Config::default()
        }
    }
}

impl Default for Config {
    /// The archive policy's defaults (see [`Config::for_policy`]).
    fn default() -> Self {
        Config {
            chain_hash: MAINNET_CHAIN_HASH,
            policy: Policy::Archive,
            now: None,
            queue: QueueLimits::default(),
            orphan_capacity: ARCHIVE_ORPHAN_CAPACITY,
            orphan_max_bytes: ARCHIVE_ORPHAN_MAX_BYTES,
            seen_capacity: DEFAULT_SEEN_CAPACITY,
            pubkey_cache_capacity: DEFAULT_PUBKEY_CACHE_CAPACITY,
            threads: 0,
            rate_limit: None,
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
    /// Writing the accepted records to the store failed (they stay pending
    /// and the next write retries them).
    pub store_error: Option<StoreError>,
}

/// What [`Pipeline::prune`] removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Channels removed.
    pub channels: usize,
    /// Node announcements removed.
    pub nodes: usize,
}

/// Counters of a pipeline.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    /// `decisions[kind][decision]`; `Queued` items are not counted until decided,
    /// `Orphaned` counts items orphaned now (released ones move to their final decision).
    pub decisions: [[u64; 13]; 4],
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
    /// Its seen-set hash, forgotten again when the decision is not final for
    /// these bytes (evicted orphan, live-policy unknown node), so a later copy
    /// gets another chance instead of being called a duplicate.
    hash: u128,
}

/// The gossip pipeline over messages of type `M` (owned bytes: `Vec<u8>`,
/// or a borrowed Python `bytes` in the binding).
pub struct Pipeline<M> {
    cfg: Config,
    seen: SeenSet,
    queue: Queue<Pending<M>>,
    orphans: Orphans<Pending<M>>,
    graph: Graph,
    counters: Counters,
    next_seq: u64,
    /// `short_channel_id`s with a `channel_announcement` in the queue, and how many.
    /// Updates of these channels are queued behind it rather than held as
    /// orphans, so a long queue of announcements cannot flush the orphan cache.
    pending_announcements: HashMap<u64, u32>,
    /// The durable store, when there is one.
    store: Option<Store>,
    /// Spam limits (live policy).
    limiter: Option<RateLimiter>,
}

impl<M: AsRef<[u8]> + Send + Sync> Pipeline<M> {
    /// A pipeline with `cfg` (its `threads` and `pubkey_cache_capacity` are
    /// for the [`Verifier`] the caller builds: `Verifier::new(cfg.threads,
    /// cfg.pubkey_cache_capacity)`).
    pub fn new(cfg: Config) -> Self {
        Pipeline {
            seen: SeenSet::new(cfg.seen_capacity),
            queue: Queue::new(cfg.queue),
            orphans: Orphans::new(cfg.orphan_capacity, cfg.orphan_max_bytes),
            graph: Graph::default(),
            counters: Counters::default(),
            next_seq: 0,
            pending_announcements: HashMap::new(),
            store: None,
            limiter: cfg.rate_limit.map(RateLimiter::new),
            cfg,
        }
    }

    /// Open (or create) the durable store at `path` and rebuild the graph
    /// and the seen-set from its records without verifying a signature
    /// (they were verified before they were written; the CRC guards the
    /// bytes). Damaged records are skipped (the channels and nodes they
    /// held are simply missing, to be fetched again; see [`crate::store`]).
    /// Records a rebuild finds superseded (a crash between writing
    /// a newer record and flagging the older one) are flagged deleted.
    /// From now on every accepted message is appended (see [`crate::store`]
    /// for the durability policy). Call it on a new pipeline.
    ///
    /// # Errors
    /// See [`Store::open`].
    pub fn open_store(&mut self, path: &Path) -> Result<OpenReport, StoreError> {
        self.open_store_with(path, None)
    }

    /// [`open_store`](Pipeline::open_store), verifying every signature of
    /// the store's gossip records with `verifier` first: for a store from a
    /// source that is not trusted (the CRC detects damage, not forgery; a
    /// store with valid CRCs and forged signatures is otherwise trusted, as
    /// Core Lightning trusts its own). A record that fails (bad signature,
    /// key not on the curve), and a `channel_update` whose channel has no
    /// valid announcement in the store, is not loaded and is flagged deleted;
    /// [`OpenReport::rejected_records`] counts them. Takes about 46 µs per
    /// signature per core (6.3 s for the topology dataset on 2 cores).
    ///
    /// # Errors
    /// See [`Store::open`].
    pub fn open_store_verified(
        &mut self,
        path: &Path,
        verifier: &mut Verifier,
    ) -> Result<OpenReport, StoreError> {
        self.open_store_with(path, Some(verifier))
    }

    fn open_store_with(
        &mut self,
        path: &Path,
        verifier: Option<&mut Verifier>,
    ) -> Result<OpenReport, StoreError> {
        let (mut st, buf, mut scan, mut report) = Store::open(path)?;
        if let Some(v) = verifier {
            let rejected = self.reject_unverified(&buf, &mut scan, v);
            report.verified = true;
            report.rejected_records = rejected.len() as u64;
            for r in rejected {
                st.delete(r.offset, r.end - r.start);
            }
        }
        for (off, n) in self.load_store_image(&buf, &scan) {
            st.delete(off, n);
        }
        st.flush(true)?;
        self.store = Some(st);
        Ok(report)
    }

    /// Verify the signatures of the live gossip records of `scan` (over the
    /// image `buf`); remove from `scan` and return those that fail, and the
    /// `channel_update`s without a valid announcement of their channel in
    /// the image (their key is unknown). Other records are left alone.
    fn reject_unverified(
        &mut self,
        buf: &[u8],
        scan: &mut store::Scan,
        verifier: &mut Verifier,
    ) -> Vec<store::Record> {
        /// Jobs per `verify` call: the pipeline's default batch.
        const CHUNK: usize = 4096;
        let mut bad = vec![false; scan.records.len()];
        let parsed: Vec<(usize, Gossip)> = scan
            .records
            .iter()
            .enumerate()
            .filter(|(_, r)| r.flags & FLAG_DELETED == 0)
            .filter_map(|(i, r)| wire::parse(&buf[r.start..r.end]).ok().map(|g| (i, g)))
            .collect();
        let msg = |i: usize| &buf[scan.records[i].start..scan.records[i].end];
        // Verify `jobs` (record index, job) in chunks; marks the failures
        // bad and returns whether each passed, in order.
        let mut run = |jobs: Vec<(usize, Job<'_>)>, bad: &mut [bool]| -> Vec<bool> {
            let mut out = Vec::with_capacity(jobs.len());
            for chunk in jobs.chunks(CHUNK) {
                let js: Vec<Job<'_>> = chunk.iter().map(|(_, j)| j.clone()).collect();
                for ((i, _), (v, calls)) in chunk.iter().zip(verifier.verify(&js)) {
                    self.counters.signatures_verified += u64::from(calls);
                    bad[*i] |= v != Verdict::Valid;
                    out.push(v == Verdict::Valid);
                }
            }
            out
        };
        // channel announcements first: their node ids are the updates' keys
        let mut anns = Vec::new();
        let mut channels = Vec::new();
        for (i, g) in &parsed {
            if let Gossip::ChannelAnnouncement {
                short_channel_id,
                node_id_1,
                node_id_2,
                bitcoin_key_1,
                bitcoin_key_2,
                ..
            } = g
            {
                let checks = vec![
                    (2, *node_id_1),
                    (66, *node_id_2),
                    (130, *bitcoin_key_1),
                    (194, *bitcoin_key_2),
                ];
                let job = Job {
                    msg: msg(*i),
                    signed_from: wire::CHANNEL_ANNOUNCEMENT_SIGNED_FROM,
                    checks,
                };
                anns.push((*i, job));
                channels.push((*short_channel_id, (*node_id_1, *node_id_2)));
            }
        }
        let mut keys: HashMap<u64, (NodeId, NodeId)> = HashMap::new();
        for (ok, (scid, ids)) in run(anns, &mut bad).into_iter().zip(channels) {
            if ok {
                keys.entry(scid).or_insert(ids);
            }
        }
        let mut rest = Vec::new();
        for (i, g) in &parsed {
            let key = match g {
                Gossip::ChannelUpdate {
                    short_channel_id,
                    channel_flags,
                    ..
                } => match keys.get(short_channel_id) {
                    Some(&(a, b)) => {
                        if channel_flags & 1 == 0 {
                            a
                        } else {
                            b
                        }
                    }
                    None => {
                        bad[*i] = true;
                        continue;
                    }
                },
                Gossip::NodeAnnouncement { node_id, .. } => *node_id,
                Gossip::ChannelAnnouncement { .. } => continue,
            };
            let job = Job {
                msg: msg(*i),
                signed_from: wire::SINGLE_SIGNED_FROM,
                checks: vec![(2, key)],
            };
            rest.push((*i, job));
        }
        run(rest, &mut bad);
        let records = std::mem::take(&mut scan.records);
        let (keep, rejected): (Vec<_>, Vec<_>) =
            records.into_iter().zip(bad).partition(|(_, b)| !*b);
        scan.records = keep.into_iter().map(|(r, _)| r).collect();
        rejected.into_iter().map(|(r, _)| r).collect()
    }

    /// Take the records [`store::scan`] found in a store image `buf` into
    /// the graph and the seen-set, without verifying (the store holds only
    /// what was verified when it was written); returns the `(offset, len)`
    /// of records superseded or of no use, to be marked deleted. Records
    /// that are not gossip (Core Lightning's internal ones) are left alone.
    ///
    /// Never panics, whatever `buf` holds, as long as `scan` is its scan.
    pub fn load_store_image(&mut self, buf: &[u8], scan: &store::Scan) -> Vec<(u64, usize)> {
        let mut dead: Vec<(u64, usize)> = Vec::new();
        let mut priors = Vec::new();
        // the channel a Core Lightning `channel_amount` record belongs to:
        // the announcement just before it
        let mut last_announcement = None;
        for r in &scan.records {
            if r.flags & FLAG_DELETED != 0 {
                // a superseded update: the policy a client may still have
                if let Ok(fields) = wire::update_fields(&buf[r.start..r.end]) {
                    priors.push(Prior {
                        seen: r.timestamp,
                        fields,
                    });
                }
                continue;
            }
            let msg = &buf[r.start..r.end];
            if let (Some(sat), Some(scid)) = (store::parse_channel_amount(msg), last_announcement) {
                self.graph.set_capacity(scid, sat);
                continue;
            }
            // internal records of Core Lightning's stores and anything not gossip stay as they are
            let Ok(g) = wire::parse(msg) else {
                continue;
            };
            last_announcement = match &g {
                Gossip::ChannelAnnouncement {
                    short_channel_id, ..
                } => Some(*short_channel_id),
                _ => None,
            };
            let keep = match &g {
                Gossip::ChannelAnnouncement {
                    chain_hash,
                    short_channel_id,
                    node_id_1,
                    node_id_2,
                    ..
                } => {
                    if *chain_hash != self.cfg.chain_hash {
                        continue;
                    }
                    let new = !self.graph.has_channel(*short_channel_id);
                    if new {
                        self.graph
                            .add_channel(*short_channel_id, *node_id_1, *node_id_2);
                    }
                    new
                }
                Gossip::ChannelUpdate {
                    chain_hash,
                    short_channel_id,
                    timestamp,
                    channel_flags,
                } => {
                    if *chain_hash != self.cfg.chain_hash {
                        continue;
                    }
                    let (scid, dir) = (*short_channel_id, (*channel_flags & 1) as usize);
                    let fresh = self.graph.has_channel(scid)
                        && !self.graph.update_is_stale(scid, dir, *timestamp);
                    if fresh {
                        self.graph.set_update_timestamp(scid, dir, *timestamp);
                    }
                    fresh
                }
                Gossip::NodeAnnouncement { node_id, timestamp } => {
                    let fresh = !self.graph.node_is_stale(node_id, *timestamp);
                    if fresh {
                        self.graph.set_node_timestamp(*node_id, *timestamp);
                    }
                    fresh
                }
            };
            if !keep {
                dead.push((r.offset, msg.len()));
                continue;
            }
            let at = r.timestamp;
            let old = self.graph.commit(msg, &g, at, |_| Some(r.offset));
            if let Some(o) = old.and_then(|o| o.offset.map(|off| (off, o.msg.len()))) {
                dead.push(o);
            }
            self.seen.insert(self.seen.hash(msg));
        }
        for p in priors {
            self.graph.add_prior(p);
        }
        dead
    }

    /// The store, when one is open.
    pub fn store(&self) -> Option<&Store> {
        self.store.as_ref()
    }

    /// The store, mutably (to set its sync interval).
    pub fn store_mut(&mut self) -> Option<&mut Store> {
        self.store.as_mut()
    }

    /// Write the live records into a new store file and swap it in
    /// atomically (see [`crate::store`]), the three phases of
    /// [`Pipeline::begin_compaction`] in one call; returns whether it
    /// compacted (false without a store, or while another compaction is in
    /// progress), as [`crate::shared::SharedPipeline::compact`] does.
    ///
    /// # Errors
    /// See [`Store::finish_compaction`]; the old store stays in use.
    pub fn compact(&mut self) -> Result<bool, StoreError> {
        let Some(mut plan) = self.begin_compaction()? else {
            return Ok(false);
        };
        plan.build_image();
        let written = store::write_compaction(&plan.tmp, &plan.image);
        self.finish_compaction(plan, written)?;
        Ok(true)
    }

    /// Whether the store's deleted records pass half of it (and no
    /// compaction is in progress): time for [`Pipeline::compact`].
    pub fn wants_compaction(&self) -> bool {
        self.store.as_ref().is_some_and(Store::wants_compaction)
    }

    /// Phase 1 of a compaction that does not stall `submit`: the live
    /// records, taken under the caller's lock as shared references (no
    /// copy). Phase 2 runs without the lock: [`CompactionPlan::build_image`],
    /// then [`store::write_compaction`] of `plan.image` to `plan.tmp`;
    /// phase 3, [`Pipeline::finish_compaction`], under it again carries
    /// over what changed meanwhile. `None`: no store, or a compaction
    /// already in progress.
    ///
    /// # Errors
    /// [`StoreError::Io`] when the store's pending records cannot be written.
    pub fn begin_compaction(&mut self) -> Result<Option<CompactionPlan>, StoreError> {
        let Some(st) = self.store.as_mut() else {
            return Ok(None);
        };
        let Some((end, tmp)) = st.begin_compaction()? else {
            return Ok(None);
        };
        // under the lock only the shared bytes are taken (one reference
        // count each); the image is built by `CompactionPlan::build_image`
        let mut records = Vec::new();
        self.graph.for_each_stored(|s, capacity_sat| {
            // a message the store never took (a failed write) stays out
            if let Some(o) = s.offset {
                records.push(Taken {
                    msg: Arc::clone(&s.msg),
                    seen: s.seen,
                    offset: o,
                    capacity_sat,
                });
            }
        });
        Ok(Some(CompactionPlan {
            image: Vec::new(),
            tmp,
            image_len: 0,
            end,
            records,
            old: Vec::new(),
            new: Vec::new(),
            len: Vec::new(),
            index: HashMap::new(),
        }))
    }

    /// Phase 3 of a compaction: point every kept message at its record in
    /// the new file (records appended since phase 1 follow the image), flag
    /// the image's records superseded or pruned meanwhile, and swap the new
    /// file in. `written` is phase 2's result; an error there abandons the
    /// compaction.
    ///
    /// # Errors
    /// Phase 2's error, or see [`Store::finish_compaction`]; the old store
    /// then stays in use and nothing moved.
    pub fn finish_compaction(
        &mut self,
        plan: CompactionPlan,
        written: Result<store::CompactionFile, StoreError>,
    ) -> Result<(), StoreError> {
        let Some(st) = self.store.as_mut() else {
            return Ok(());
        };
        let file = match written {
            Ok(f) => f,
            Err(e) => {
                st.abort_compaction();
                return Err(e);
            }
        };
        let (end, image_len) = (plan.end, plan.image_len);
        let mut offsets = Vec::with_capacity(plan.old.len());
        let mut referenced = vec![false; plan.old.len()];
        // the graph walks its records in the order phase 1 took them: the
        // next one is almost always the expected one, the index finds the
        // others (records superseded or pruned meanwhile are skipped)
        let mut next = 0;
        self.graph.for_each_stored(|s, _| {
            let new = s.offset.and_then(|o| {
                if o >= end {
                    return Some(image_len + (o - end));
                }
                let k = match plan.old.get(next) {
                    Some(&e) if e == o => next,
                    _ => *plan.index.get(&o)?,
                };
                next = k + 1;
                referenced[k] = true;
                Some(plan.new[k])
            });
            offsets.push(new);
        });
        let deleted: Vec<(u64, usize)> = (0..plan.old.len())
            .filter(|&k| !referenced[k])
            .map(|k| (plan.new[k], plan.len[k]))
            .collect();
        st.finish_compaction(file, &deleted)?;
        let mut it = offsets.into_iter();
        self.graph
            .for_each_stored_mut(|s| s.offset = it.next().flatten());
        Ok(())
    }

    /// Flush the store's pending writes and `fdatasync` it.
    ///
    /// # Errors
    /// See [`Store::flush`].
    pub fn sync_store(&mut self) -> Result<(), StoreError> {
        match self.store.as_mut() {
            Some(s) => s.flush(true),
            None => Ok(()),
        }
    }

    /// BOLT #7 pruning: remove channels whose newest updates in both
    /// directions are more than two weeks ([`LIVE_MAX_BEHIND_S`]) older
    /// than `now` (seconds since the epoch; `None`: the pipeline's now),
    /// and the announcements of nodes left without a channel; their store
    /// records are flagged deleted and their hashes forgotten (a peer may
    /// send them again). Meant for the live policy: an archive has old
    /// timestamps by design.
    ///
    /// # Errors
    /// Writing the deleted flags failed (the graph is pruned regardless).
    pub fn prune(&mut self, now: Option<u64>) -> Result<PruneReport, StoreError> {
        let now = now.unwrap_or_else(|| self.now());
        let horizon = u32::try_from(now.saturating_sub(LIVE_MAX_BEHIND_S)).unwrap_or(u32::MAX);
        let p = self.graph.prune(horizon);
        if let Some(l) = self.limiter.as_mut() {
            let g = &self.graph;
            l.retain(|k| match k {
                Key::Direction(scid, _) => g.has_channel(*scid),
                Key::Node(id) => g.node(id).is_some(),
            });
        }
        for s in &p.removed {
            self.seen.remove(self.seen.hash(&s.msg));
            self.delete_record(s);
        }
        let report = PruneReport {
            channels: p.channels,
            nodes: p.nodes,
        };
        self.after_write()?;
        Ok(report)
    }

    fn delete_record(&mut self, s: &Stored) {
        if let (Some(st), Some(off)) = (self.store.as_mut(), s.offset) {
            st.delete(off, s.msg.len());
        }
    }

    /// Write pending records (compaction is the caller's, outside its
    /// lock: see [`Pipeline::wants_compaction`]).
    fn after_write(&mut self) -> Result<(), StoreError> {
        match self.store.as_mut() {
            Some(st) => st.flush(false),
            None => Ok(()),
        }
    }

    /// Keep the accepted messages of a batch in the graph (and the store),
    /// all at once, so a reader sees all of the batch or none of it.
    fn commit_accepted(&mut self, accepted: &[M], gossip: &[Gossip]) -> Option<StoreError> {
        let now = u32::try_from(self.now()).unwrap_or(u32::MAX);
        let archive = self.cfg.policy == Policy::Archive;
        for (m, g) in accepted.iter().zip(gossip) {
            let msg = m.as_ref();
            let store = &mut self.store;
            // "seen": the clock, or under the archive policy a message's own
            // timestamp (a channel announcement has none: the clock)
            let seen = match g.timestamp() {
                Some(ts) if archive => ts,
                _ => now,
            };
            let old = self
                .graph
                .commit(msg, g, seen, |ts| store.as_mut().map(|s| s.append(ts, msg)));
            if let Some(old) = old {
                self.delete_record(&old);
            }
        }
        self.after_write().err()
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
    /// Switch to `policy` (a node that loaded archive files and now takes
    /// live peers): the time window and node rule of the new policy apply
    /// from the next `submit`, and the orphan cache takes the new policy's
    /// default bounds (evicting the oldest orphans if it shrinks).
    pub fn set_policy(&mut self, policy: Policy) {
        if policy == self.cfg.policy {
            return;
        }
        let d = Config::for_policy(policy);
        self.cfg.policy = policy;
        self.cfg.rate_limit = d.rate_limit;
        self.limiter = d.rate_limit.map(RateLimiter::new);
        self.cfg.orphan_capacity = d.orphan_capacity;
        self.cfg.orphan_max_bytes = d.orphan_max_bytes;
        // evicted orphans keep their `orphaned` decision
        let evicted = self
            .orphans
            .set_limits(d.orphan_capacity, d.orphan_max_bytes);
        self.forget_evicted(evicted);
    }

    /// Set (or clear, with `None`) the fixed "now" of the time window.
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
        self.submit_or_return(peer, msg).0
    }

    /// [`submit`](Pipeline::submit), handing `msg` back when the answer is
    /// `QueueFull` (so a caller that holds the only copy can retry it).
    pub fn submit_or_return(&mut self, peer: u64, msg: M) -> (Admission, Option<M>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let bytes = msg.as_ref();
        let len = bytes.len();
        let kind = MsgKind::of(bytes);
        let gossip = match wire::parse(bytes) {
            Ok(g) => g,
            Err(r) => return (self.reject(seq, kind, Decision::Malformed, Some(r)), None),
        };
        match &gossip {
            Gossip::ChannelAnnouncement { chain_hash, .. }
            | Gossip::ChannelUpdate { chain_hash, .. }
                if *chain_hash != self.cfg.chain_hash =>
            {
                return (self.reject(seq, kind, Decision::WrongChain, None), None);
            }
            _ => {}
        }
        let h = self.seen.hash(bytes);
        if self.seen.contains(h) {
            return (self.reject(seq, kind, Decision::Duplicate, None), None);
        }
        if let Some(ts) = gossip.timestamp() {
            let (ts, now) = (u64::from(ts), self.now());
            if ts > now.saturating_add(MAX_AHEAD_S) {
                return (self.reject(seq, kind, Decision::TooNew, None), None);
            }
            if self.cfg.policy == Policy::Live && ts.saturating_add(LIVE_MAX_BEHIND_S) < now {
                return (self.reject(seq, kind, Decision::TooOld, None), None);
            }
        }
        match &gossip {
            Gossip::ChannelAnnouncement {
                short_channel_id, ..
            } => {
                if self.graph.has_channel(*short_channel_id) {
                    return (self.reject(seq, kind, Decision::Duplicate, None), None);
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
                        hash: h,
                    };
                    let evicted = self.orphans.insert(scid, seq, len, p);
                    self.forget_evicted(evicted);
                    return (self.reject(seq, kind, Decision::Orphaned, None), None);
                }
                if self.graph.update_is_stale(scid, dir, ts) {
                    return (self.reject(seq, kind, Decision::Stale, None), None);
                }
                if !self.rate_allows(&Key::Direction(scid, dir as u8)) {
                    return (self.reject(seq, kind, Decision::RateLimited, None), None);
                }
            }
            Gossip::NodeAnnouncement { node_id, timestamp } => {
                if self.graph.node_is_stale(node_id, *timestamp) {
                    return (self.reject(seq, kind, Decision::Stale, None), None);
                }
                if !self.rate_allows(&Key::Node(*node_id)) {
                    return (self.reject(seq, kind, Decision::RateLimited, None), None);
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
            hash: h,
        };
        match self.queue.push(peer, len, p) {
            Ok(()) => {
                self.seen.insert(h);
                if let Some(scid) = announced {
                    *self.pending_announcements.entry(scid).or_insert(0) += 1;
                }
                (
                    Admission {
                        seq,
                        decision: Decision::Queued,
                        reason: None,
                    },
                    None,
                )
            }
            Err(p) => {
                self.counters.queue_full += 1;
                (
                    Admission {
                        seq,
                        decision: Decision::QueueFull,
                        reason: None,
                    },
                    Some(p.msg),
                )
            }
        }
    }

    /// Whether the spam limit lets `key` through now (spends nothing).
    fn rate_allows(&self, key: &Key) -> bool {
        // the clock is read only when there is a limiter (live policy)
        self.limiter
            .as_ref()
            .is_none_or(|l| l.allows(key, self.now()))
    }

    /// Spend a token of `key` (a verified message about to be stored).
    fn rate_spend(&mut self, key: Key) -> bool {
        if self.limiter.is_none() {
            return true;
        }
        let now = self.now();
        self.limiter.as_mut().is_none_or(|l| l.spend(key, now))
    }

    /// Count evicted orphans and forget their hashes: a peer that sends one
    /// again (after its channel is known) is not answered "duplicate".
    fn forget_evicted(&mut self, evicted: Vec<Pending<M>>) {
        self.counters.orphans_evicted += evicted.len() as u64;
        for e in evicted {
            self.seen.remove(e.hash);
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

    /// Take up to `max_messages` from the queue (round-robin between peers)
    /// for a split `process`: verify [`Batch::announcement_jobs`], then
    /// [`Pipeline::apply_announcements`], verify [`Batch::candidate_jobs`],
    /// then [`Pipeline::finish`]. The verifications need no access to the
    /// pipeline, so a caller can let `submit` go on while they run.
    pub fn begin(&mut self, max_messages: usize) -> Batch<M> {
        let mut b = Batch {
            anns: Vec::new(),
            rest: Vec::new(),
            candidates: Vec::new(),
            outcomes: Vec::new(),
            accepted: Vec::new(),
            accepted_gossip: Vec::new(),
            signatures_verified: 0,
        };
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
                    b.anns.push(p);
                }
                _ => b.rest.push(p),
            }
        }
        b
    }

    /// Decide the batch's channel announcements from their verification
    /// `results` (one per [`Batch::announcement_jobs`] entry), release the
    /// orphans of accepted channels, and run the cheap checks on the rest,
    /// leaving the survivors as [`Batch::candidate_jobs`].
    pub fn apply_announcements(&mut self, b: &mut Batch<M>, results: Vec<(Verdict, u32)>) {
        let mut released = Vec::new();
        let anns = std::mem::take(&mut b.anns);
        for (p, (v, calls)) in anns.into_iter().zip(results) {
            b.signatures_verified += u64::from(calls);
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
                    &mut b.outcomes,
                    &p,
                    Decision::Malformed,
                    Some(Malformed::BadPublicKey),
                ),
                Verdict::InvalidSignature => {
                    self.decide(&mut b.outcomes, &p, Decision::InvalidSignature, None)
                }
                Verdict::Valid if self.graph.has_channel(short_channel_id) => {
                    self.decide(&mut b.outcomes, &p, Decision::Duplicate, None)
                }
                Verdict::Valid => {
                    self.graph
                        .add_channel(short_channel_id, node_id_1, node_id_2);
                    self.decide(&mut b.outcomes, &p, Decision::Accepted, None);
                    let r = self.orphans.release(short_channel_id);
                    self.counters.orphans_released += r.len() as u64;
                    released.extend(r);
                    b.accepted.push(p.msg);
                    b.accepted_gossip.push(p.gossip);
                }
            }
        }
        // Released orphans (older) first, then this batch's updates and node announcements.
        let rest = std::mem::take(&mut b.rest);
        for mut p in released.into_iter().chain(rest) {
            let key = match &p.gossip {
                Gossip::ChannelUpdate {
                    short_channel_id,
                    timestamp,
                    channel_flags,
                    ..
                } => {
                    let (scid, dir) = (*short_channel_id, (*channel_flags & 1) as usize);
                    let Some(key) = self.graph.update_key(scid, dir) else {
                        // Queued behind an announcement that is not accepted (yet):
                        // hold it as an orphan until one is.
                        self.count(MsgKind::ChannelUpdate, Decision::Orphaned);
                        b.outcomes.push(Outcome {
                            seq: p.seq,
                            peer: p.peer,
                            kind: MsgKind::ChannelUpdate,
                            decision: Decision::Orphaned,
                            reason: None,
                        });
                        p.orphan = true;
                        let (seq, n) = (p.seq, p.msg.as_ref().len());
                        let evicted = self.orphans.insert(scid, seq, n, p);
                        self.forget_evicted(evicted);
                        continue;
                    };
                    if self.graph.update_is_stale(scid, dir, *timestamp) {
                        self.decide(&mut b.outcomes, &p, Decision::Stale, None);
                        continue;
                    }
                    key
                }
                Gossip::NodeAnnouncement { node_id, timestamp } => {
                    if self.cfg.policy == Policy::Live && !self.graph.node_has_channel(node_id) {
                        self.decide(&mut b.outcomes, &p, Decision::UnknownNode, None);
                        // its channel may still come: let a later copy in
                        self.seen.remove(p.hash);
                        continue;
                    }
                    if self.graph.node_is_stale(node_id, *timestamp) {
                        self.decide(&mut b.outcomes, &p, Decision::Stale, None);
                        continue;
                    }
                    *node_id
                }
                Gossip::ChannelAnnouncement { .. } => continue,
            };
            b.candidates.push((p, key));
        }
    }

    /// Decide the candidates from their verification `results` (one per
    /// [`Batch::candidate_jobs`] entry) and return what the batch decided.
    pub fn finish(&mut self, mut b: Batch<M>, results: Vec<(Verdict, u32)>) -> Processed<M> {
        let candidates = std::mem::take(&mut b.candidates);
        for ((p, _), (v, calls)) in candidates.into_iter().zip(results) {
            b.signatures_verified += u64::from(calls);
            let d = match v {
                Verdict::BadPublicKey => {
                    self.decide(
                        &mut b.outcomes,
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
                        } else if !self.rate_spend(Key::Direction(scid, dir as u8)) {
                            Decision::RateLimited
                        } else {
                            self.graph.set_update_timestamp(scid, dir, ts);
                            Decision::Accepted
                        }
                    }
                    Gossip::NodeAnnouncement { node_id, timestamp } => {
                        if self.graph.node_is_stale(node_id, *timestamp) {
                            Decision::Stale
                        } else if !self.rate_spend(Key::Node(*node_id)) {
                            Decision::RateLimited
                        } else {
                            self.graph.set_node_timestamp(*node_id, *timestamp);
                            Decision::Accepted
                        }
                    }
                    Gossip::ChannelAnnouncement { .. } => Decision::Duplicate,
                },
            };
            self.decide(&mut b.outcomes, &p, d, None);
            if d == Decision::Accepted {
                b.accepted.push(p.msg);
                b.accepted_gossip.push(p.gossip);
            }
        }
        self.counters.signatures_verified += b.signatures_verified;
        let store_error = self.commit_accepted(&b.accepted, &b.accepted_gossip);
        Processed {
            outcomes: b.outcomes,
            accepted: b.accepted,
            signatures_verified: b.signatures_verified,
            store_error,
        }
    }

    /// Take up to `max_messages` from the queue (round-robin between peers),
    /// verify them in parallel with `verifier` and apply them to the graph.
    ///
    /// Channel announcements go first; updates held as orphans for a channel
    /// accepted here are released and decided in the same call. Takes about
    /// 35-50 µs per signature per core: call it off the event loop.
    pub fn process(&mut self, verifier: &mut Verifier, max_messages: usize) -> Processed<M> {
        let mut b = self.begin(max_messages);
        let r = verifier.verify(&b.announcement_jobs());
        self.apply_announcements(&mut b, r);
        let r = verifier.verify(&b.candidate_jobs());
        let mut done = self.finish(b, r);
        if done.store_error.is_none() && self.wants_compaction() {
            done.store_error = self.compact().err();
        }
        done
    }
}

/// A compaction between its phases (see [`Pipeline::begin_compaction`]).
#[derive(Debug)]
pub struct CompactionPlan {
    /// The new file's bytes: the version byte and every live record (filled
    /// by [`CompactionPlan::build_image`]).
    pub image: Vec<u8>,
    /// Where phase 2 writes it (`PATH.compact`).
    pub tmp: std::path::PathBuf,
    image_len: u64,
    /// Where the store ended at phase 1.
    end: u64,
    /// The live records at phase 1, in graph order.
    records: Vec<Taken>,
    /// Per record (same order): its offset in the old file, in the image,
    /// and its message length.
    old: Vec<u64>,
    new: Vec<u64>,
    len: Vec<usize>,
    /// Old offset to record index, for records phase 3 finds out of order.
    index: HashMap<u64, usize>,
}

/// A live record taken at phase 1: its shared bytes, seen, offset in the
/// old file, and a channel announcement's funding amount.
#[derive(Debug)]
struct Taken {
    msg: Arc<[u8]>,
    seen: u32,
    offset: u64,
    capacity_sat: Option<u64>,
}

impl CompactionPlan {
    /// Build the image of the records taken at phase 1 (a memory copy,
    /// tens of milliseconds for the mainnet graph: the reason it runs
    /// without the pipeline's lock).
    pub fn build_image(&mut self) {
        let bytes: usize = self
            .records
            .iter()
            .map(|r| store::HEADER_LEN + r.msg.len())
            .sum();
        let n = self.records.len();
        let mut image = Vec::with_capacity(1 + bytes + 22 * n / 3);
        image.push(store::STORE_VERSION);
        self.index.reserve(n);
        for (k, r) in self.records.drain(..).enumerate() {
            self.old.push(r.offset);
            self.new.push(image.len() as u64);
            self.len.push(r.msg.len());
            self.index.insert(r.offset, k);
            store::encode_record(&mut image, 0, r.seen, &r.msg);
            if let Some(sat) = r.capacity_sat {
                store::encode_record(&mut image, 0, r.seen, &store::channel_amount(sat));
            }
        }
        self.image_len = image.len() as u64;
        self.image = image;
    }
}

/// A batch between the steps of a split [`Pipeline::process`].
pub struct Batch<M> {
    anns: Vec<Pending<M>>,
    rest: Vec<Pending<M>>,
    candidates: Vec<(Pending<M>, NodeId)>,
    outcomes: Vec<Outcome>,
    accepted: Vec<M>,
    /// The parsed form of each of `accepted`, for the graph commit.
    accepted_gossip: Vec<Gossip>,
    signatures_verified: u64,
}

impl<M: AsRef<[u8]>> Batch<M> {
    /// Signature checks of the batch's channel announcements (four each).
    pub fn announcement_jobs(&self) -> Vec<Job<'_>> {
        self.anns
            .iter()
            .map(|p| {
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
                    _ => Vec::new(),
                };
                Job {
                    msg: p.msg.as_ref(),
                    signed_from: wire::CHANNEL_ANNOUNCEMENT_SIGNED_FROM,
                    checks,
                }
            })
            .collect()
    }

    /// Signature checks of the updates and node announcements that passed
    /// the cheap checks (one each, key from the graph or the message).
    pub fn candidate_jobs(&self) -> Vec<Job<'_>> {
        self.candidates
            .iter()
            .map(|(p, key)| Job {
                msg: p.msg.as_ref(),
                signed_from: wire::SINGLE_SIGNED_FROM,
                checks: vec![(2, *key)],
            })
            .collect()
    }

    /// Messages taken from the queue and not decided yet.
    pub fn pending(&self) -> usize {
        self.anns.len() + self.rest.len() + self.candidates.len()
    }
}
