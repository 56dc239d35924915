//! A pipeline shared between threads: `submit` and the graph's readers run
//! while a batch verifies, and while the store compacts.
//!
//! The pipeline is locked only for the cheap steps; the expensive ones run
//! without it:
//! 1. `begin` (lock): take a batch off the queue, decide what needs no signature;
//! 2. verify the channel announcements (no lock; the verifier's own lock
//!    keeps one batch verifying at a time);
//! 3. `apply_announcements` (lock): accept channels, release their orphans;
//! 4. verify the rest (no lock);
//! 5. `finish` (lock): decide, commit the batch to the graph and the store;
//! 6. when the store's deleted records pass half of it, compact it: take
//!    the live records' shared bytes (lock), build the image, write and sync
//!    it (no lock), carry over what changed meanwhile and swap the file in
//!    (lock).
//!
//! A reader holding the lock between any two steps sees the graph before or
//! after the whole batch, never half of it ([`crate::graph`]).

use std::sync::{Mutex, MutexGuard};

use crate::pipeline::{Admission, Pipeline, Processed};
use crate::store::{self, StoreError};
use crate::verify::Verifier;

/// Where [`SharedPipeline::process_observed`] stands when it calls its observer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Step 1 done: the batch is off the queue.
    Begun,
    /// Step 3 done: channel announcements decided, not yet committed.
    AnnouncementsApplied,
    /// Step 5 done: the batch is in the graph (and the store).
    Finished,
    /// Compaction phase 1 done, and the image built (without the lock).
    CompactionImage,
    /// Compaction phase 2 done: the image is written, not yet swapped in.
    CompactionWritten,
}

/// A mutex was poisoned by a panic in another thread: the pipeline is unusable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Poisoned;

impl std::fmt::Display for Poisoned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the pipeline's lock was poisoned by a panic")
    }
}

impl std::error::Error for Poisoned {}

/// A pipeline and its verifier, for several threads.
pub struct SharedPipeline<M> {
    pipeline: Mutex<Pipeline<M>>,
    /// Held for a whole `process` (one batch verifies at a time); `submit`
    /// never waits for it.
    verifier: Mutex<Verifier>,
}

impl<M: AsRef<[u8]> + Send + Sync> SharedPipeline<M> {
    /// Share `pipeline`, verified by `verifier`.
    pub fn new(pipeline: Pipeline<M>, verifier: Verifier) -> Self {
        SharedPipeline {
            pipeline: Mutex::new(pipeline),
            verifier: Mutex::new(verifier),
        }
    }

    /// The pipeline's mutex (to lock it in a caller's own way, e.g. without
    /// holding an interpreter lock while waiting).
    pub fn mutex(&self) -> &Mutex<Pipeline<M>> {
        &self.pipeline
    }

    /// Lock the pipeline.
    ///
    /// # Errors
    /// [`Poisoned`] after a panic while it was locked.
    pub fn lock(&self) -> Result<MutexGuard<'_, Pipeline<M>>, Poisoned> {
        self.pipeline.lock().map_err(|_| Poisoned)
    }

    /// Queue a message from `peer` ([`Pipeline::submit`]); waits only for
    /// the cheap steps of a running `process`.
    ///
    /// # Errors
    /// [`Poisoned`].
    pub fn submit(&self, peer: u64, msg: M) -> Result<Admission, Poisoned> {
        Ok(self.lock()?.submit(peer, msg))
    }

    /// Process one batch of up to `max_messages` (see the module's steps),
    /// then compact the store if it wants to.
    ///
    /// # Errors
    /// [`Poisoned`].
    pub fn process(&self, max_messages: usize) -> Result<Processed<M>, Poisoned> {
        self.process_observed(max_messages, |_| {})
    }

    /// [`SharedPipeline::process`], calling `at` after each step without
    /// holding the pipeline's lock (tests submit and read between steps).
    ///
    /// # Errors
    /// [`Poisoned`].
    pub fn process_observed(
        &self,
        max_messages: usize,
        mut at: impl FnMut(Step),
    ) -> Result<Processed<M>, Poisoned> {
        let mut v = self.verifier.lock().map_err(|_| Poisoned)?;
        let mut b = self.lock()?.begin(max_messages);
        at(Step::Begun);
        let r = v.verify(&b.announcement_jobs());
        self.lock()?.apply_announcements(&mut b, r);
        at(Step::AnnouncementsApplied);
        let r = v.verify(&b.candidate_jobs());
        let mut done = self.lock()?.finish(b, r);
        at(Step::Finished);
        drop(v);
        if done.store_error.is_none() {
            done.store_error = self.compact_if_wanted(&mut at)?.err();
        }
        Ok(done)
    }

    /// Compact the store now, without holding the lock while the new file
    /// is written; returns whether there was a store (`Ok(false)` too when
    /// another compaction is in progress).
    ///
    /// # Errors
    /// [`Poisoned`]; the inner result is the store's.
    pub fn compact(&self) -> Result<Result<bool, StoreError>, Poisoned> {
        self.compact_observed(|_| {})
    }

    fn compact_if_wanted(
        &self,
        at: &mut impl FnMut(Step),
    ) -> Result<Result<bool, StoreError>, Poisoned> {
        if !self.lock()?.wants_compaction() {
            return Ok(Ok(false));
        }
        self.compact_observed(at)
    }

    /// [`SharedPipeline::compact`], calling `at` between its phases.
    ///
    /// # Errors
    /// [`Poisoned`].
    pub fn compact_observed(
        &self,
        mut at: impl FnMut(Step),
    ) -> Result<Result<bool, StoreError>, Poisoned> {
        let mut plan = match self.lock()?.begin_compaction() {
            Ok(Some(plan)) => plan,
            Ok(None) => return Ok(Ok(false)),
            Err(e) => return Ok(Err(e)),
        };
        plan.build_image();
        at(Step::CompactionImage);
        let image = std::mem::take(&mut plan.image);
        let written = store::write_compaction(&plan.tmp, &image);
        drop(image);
        at(Step::CompactionWritten);
        Ok(self.lock()?.finish_compaction(plan, written).map(|()| true))
    }
}
