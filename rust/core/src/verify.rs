//! Batched secp256k1 ECDSA verification on a rayon pool, with a bounded
//! cache of parsed public keys.
//!
//! BOLT #7 signatures are 64-byte compact ECDSA signatures over the SHA256d
//! of the signed range. Parsing a compressed key costs about 6 µs against
//! 46 µs for a verify (DESIGN.md), and hub `node_id`s recur thousands of
//! times, so parsed keys are cached. Keys missing from the cache are parsed
//! once per batch, in parallel, before the signatures are checked.

use std::collections::{HashMap, HashSet};

use rayon::prelude::*;
use secp256k1::{ecdsa::Signature, Message, PublicKey, Secp256k1, VerifyOnly};
use sha2::{Digest, Sha256};

use crate::wire::NodeId;

/// Default bound on cached parsed public keys (about 100 bytes each).
///
/// Mainnet has about 17k nodes and 100k bitcoin keys; 2^16 entries keep the
/// node keys (the ones that recur) in 6.5 MB. When full the cache is cleared.
pub const DEFAULT_PUBKEY_CACHE_CAPACITY: usize = 1 << 16;

/// SHA256d (double SHA-256) of `data`, the digest BOLT #7 signatures sign.
pub fn sha256d(data: &[u8]) -> [u8; 32] {
    let once = Sha256::digest(data);
    Sha256::digest(once).into()
}

/// One message's signature checks: up to four `(signature offset, key)` pairs
/// over the SHA256d of `msg[signed_from..]`.
#[derive(Clone, Debug)]
pub struct Job<'a> {
    /// The whole raw message.
    pub msg: &'a [u8],
    /// Start of the signed range.
    pub signed_from: usize,
    /// `(offset of the 64-byte signature in msg, public key)`, checked in order.
    pub checks: Vec<(usize, NodeId)>,
}

/// Result of one [`Job`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every signature verified.
    Valid,
    /// A signature failed to parse or to verify (checking stops there).
    InvalidSignature,
    /// A public key is not a point on the curve.
    BadPublicKey,
}

/// A verification engine: context, thread pool and key cache.
pub struct Verifier {
    secp: Secp256k1<VerifyOnly>,
    pool: rayon::ThreadPool,
    cache: HashMap<NodeId, Option<PublicKey>>,
    cache_capacity: usize,
}

impl Verifier {
    /// A verifier with `threads` workers (0: one per core) and a key cache of
    /// `cache_capacity` entries.
    ///
    /// # Errors
    /// Returns the rayon error text when the thread pool cannot be built.
    pub fn new(threads: usize, cache_capacity: usize) -> Result<Self, String> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("lngossip-verify-{i}"))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Verifier {
            secp: Secp256k1::verification_only(),
            pool,
            cache: HashMap::new(),
            cache_capacity: cache_capacity.max(1),
        })
    }

    /// Number of worker threads.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Number of cached parsed keys.
    pub fn cached_keys(&self) -> usize {
        self.cache.len()
    }

    fn fill_cache(&mut self, jobs: &[Job<'_>]) {
        let mut missing: HashSet<NodeId> = HashSet::new();
        for j in jobs {
            for (_, k) in &j.checks {
                if !self.cache.contains_key(k) {
                    missing.insert(*k);
                }
            }
        }
        if missing.is_empty() {
            return;
        }
        if self.cache.len() + missing.len() > self.cache_capacity {
            self.cache.clear();
            missing = jobs
                .iter()
                .flat_map(|j| j.checks.iter().map(|(_, k)| *k))
                .collect();
        }
        let missing: Vec<NodeId> = missing.into_iter().collect();
        let parsed: Vec<Option<PublicKey>> = self.pool.install(|| {
            missing
                .par_iter()
                .map(|k| PublicKey::from_slice(k).ok())
                .collect()
        });
        self.cache.extend(missing.into_iter().zip(parsed));
    }

    /// Verify a batch in parallel; returns one `(verdict, verify calls)` per job.
    ///
    /// Verify calls count the ECDSA verifications actually run (a job stops at
    /// its first failing signature).
    pub fn verify(&mut self, jobs: &[Job<'_>]) -> Vec<(Verdict, u32)> {
        self.fill_cache(jobs);
        let cache = &self.cache;
        let secp = &self.secp;
        self.pool
            .install(|| jobs.par_iter().map(|j| check_job(secp, cache, j)).collect())
    }

    /// Verify `n` independent `(signature, public key, digest)` triples in parallel.
    pub fn verify_raw(
        &self,
        signatures: &[[u8; 64]],
        public_keys: &[[u8; 33]],
        digests: &[[u8; 32]],
    ) -> Vec<bool> {
        let secp = &self.secp;
        self.pool.install(|| {
            signatures
                .par_iter()
                .zip(public_keys.par_iter())
                .zip(digests.par_iter())
                .map(|((s, k), d)| {
                    let (Ok(sig), Ok(pk)) = (Signature::from_compact(s), PublicKey::from_slice(k))
                    else {
                        return false;
                    };
                    secp.verify_ecdsa(Message::from_digest(*d), &sig, &pk)
                        .is_ok()
                })
                .collect()
        })
    }
}

/// Calibration: seconds `threads` threads (0: one per core) take to verify
/// the triples, keys and signatures parsed beforehand (so the figure is the
/// bare libsecp256k1 verify cost, the floor of throughput), and how many
/// verified. Triples that fail to parse are skipped.
///
/// # Errors
/// Returns the rayon error text when the thread pool cannot be built.
pub fn time_bare_verify(
    signatures: &[[u8; 64]],
    public_keys: &[[u8; 33]],
    digests: &[[u8; 32]],
    threads: usize,
) -> Result<(f64, usize), String> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| e.to_string())?;
    let secp = Secp256k1::verification_only();
    let parsed: Vec<(Signature, PublicKey, Message)> = signatures
        .iter()
        .zip(public_keys)
        .zip(digests)
        .filter_map(|((s, k), d)| {
            Some((
                Signature::from_compact(s).ok()?,
                PublicKey::from_slice(k).ok()?,
                Message::from_digest(*d),
            ))
        })
        .collect();
    let t0 = std::time::Instant::now();
    let ok = pool.install(|| {
        parsed
            .par_iter()
            .filter(|(s, k, m)| secp.verify_ecdsa(*m, s, k).is_ok())
            .count()
    });
    Ok((t0.elapsed().as_secs_f64(), ok))
}

fn check_job(
    secp: &Secp256k1<VerifyOnly>,
    cache: &HashMap<NodeId, Option<PublicKey>>,
    j: &Job<'_>,
) -> (Verdict, u32) {
    let Some(signed) = j.msg.get(j.signed_from..) else {
        return (Verdict::InvalidSignature, 0);
    };
    let digest = Message::from_digest(sha256d(signed));
    let mut calls = 0;
    for (off, key) in &j.checks {
        let Some(Some(pk)) = cache.get(key) else {
            return (Verdict::BadPublicKey, calls);
        };
        let Some(sig) = j
            .msg
            .get(*off..off + 64)
            .and_then(|s| Signature::from_compact(s).ok())
        else {
            return (Verdict::InvalidSignature, calls);
        };
        calls += 1;
        if secp.verify_ecdsa(digest, &sig, pk).is_err() {
            return (Verdict::InvalidSignature, calls);
        }
    }
    (Verdict::Valid, calls)
}
