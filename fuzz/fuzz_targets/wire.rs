//! BOLT #7 parsing of one message from a peer: never panics, and what it
//! accepts is self-consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lngossip_core::wire::{self, MsgKind};

fuzz_target!(|data: &[u8]| {
    let kind = MsgKind::of(data);
    if let Ok(g) = wire::parse(data) {
        // only the three gossip types parse, and the kind agrees
        assert_ne!(kind, MsgKind::Unknown);
        let _ = g.timestamp();
    }
});
