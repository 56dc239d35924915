//! lngossip-core: the hot path of lngossip, in pure Rust.
//!
//! [`wire`] parses BOLT #7 `channel_announcement`, `node_announcement` and
//! `channel_update` without copying; [`seen`] drops exact duplicates;
//! [`queue`] bounds work in bytes with a per-peer share; [`verify`] checks
//! secp256k1 signatures in parallel batches; [`graph`] keeps which channels
//! and nodes are known, their newest verified timestamps and the accepted
//! bytes; [`store`] keeps them on disk in Core Lightning's `gossip_store` format;
//! [`transport`] frames and encrypts messages after the BOLT #8 handshake; [`pipeline`]
//! ties them together in the order DESIGN.md gives (every cheap check before
//! any signature check); [`limits`] bounds every numeric argument of the API;
//! [`shared`] runs a pipeline for several threads, the expensive steps
//! (verification, writing a compacted store) without its lock;
//! [`columns`] and [`rgs`] give the graph out as columns and as Rapid Gossip
//! Sync snapshots.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod columns;
pub mod graph;
pub mod limits;
pub mod orphans;
pub mod pipeline;
pub mod queue;
pub mod ratelimit;
pub mod rgs;
pub mod seen;
pub mod shared;
pub mod store;
pub mod transport;
pub mod verify;
pub mod wire;

pub use pipeline::{
    Admission, Config, Counters, Decision, Outcome, Pipeline, Policy, Processed, PruneReport,
};
pub use wire::{Malformed, MsgKind};
