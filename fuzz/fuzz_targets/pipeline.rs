//! `Pipeline::submit` on arbitrary bytes from arbitrary peers, with
//! `process` batches in between: no panic, and one final decision per
//! message: every queued message is decided exactly once, and a decision
//! comes only for a message that was queued or held as an orphan.
//!
//! Input: records of `[peer: u8][len: u16 BE][len bytes]`; a record whose
//! peer byte is 0xff runs a `process` instead.
#![no_main]

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use lngossip_core::pipeline::{Config, Decision, Pipeline, Policy};
use lngossip_core::verify::Verifier;

fn verifier() -> &'static Mutex<Verifier> {
    static V: OnceLock<Mutex<Verifier>> = OnceLock::new();
    V.get_or_init(|| Mutex::new(Verifier::new(1, 1024).unwrap()))
}

fuzz_target!(|data: &[u8]| {
    let mut cfg = Config::for_policy(if data.first() == Some(&1) {
        Policy::Live
    } else {
        Policy::Archive
    });
    cfg.now = Some(1_700_000_000);
    cfg.queue.max_messages = 8;
    cfg.queue.per_peer_messages = 4;
    let mut p: Pipeline<Vec<u8>> = Pipeline::new(cfg);
    let mut v = verifier().lock().unwrap();
    // sequence numbers waiting for a decision: queued (must get one) and
    // orphaned (get one only if their channel comes)
    let (mut queued, mut orphaned) = (HashSet::new(), HashSet::new());
    let mut run =
        |p: &mut Pipeline<Vec<u8>>, queued: &mut HashSet<u64>, orphaned: &mut HashSet<u64>| {
            for o in p.process(&mut v, usize::MAX).outcomes {
                assert!(!matches!(
                    o.decision,
                    Decision::Queued | Decision::QueueFull
                ));
                assert!(queued.remove(&o.seq) || orphaned.remove(&o.seq), "{o:?}");
            }
        };
    let mut rest = data.get(1..).unwrap_or(&[]);
    while rest.len() >= 3 {
        let peer = rest[0];
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]]));
        let end = (3 + len).min(rest.len());
        let msg = rest[3..end].to_vec();
        rest = &rest[end..];
        if peer == 0xff {
            run(&mut p, &mut queued, &mut orphaned);
            continue;
        }
        let a = p.submit(u64::from(peer), msg);
        match a.decision {
            Decision::Queued => assert!(queued.insert(a.seq)),
            Decision::Orphaned => assert!(orphaned.insert(a.seq)),
            _ => {}
        }
    }
    run(&mut p, &mut queued, &mut orphaned);
    assert!(queued.is_empty(), "queued but never decided: {queued:?}");
    assert_eq!(p.queued(), 0);
});
