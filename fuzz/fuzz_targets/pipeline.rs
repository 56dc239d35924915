//! `Pipeline::submit` on arbitrary bytes from arbitrary peers, with
//! `process` batches in between: no panic, and one final decision per
//! message: every queued message is decided exactly once, and a decision
//! comes only for a message that was queued or held as an orphan.
//!
//! Input: records of `[peer: u8][len: u16 BE][len bytes]`; a record whose
//! peer byte is 0xff runs a `process` instead, and one whose peer byte is
//! 0xfe runs a `process` step by step (as `lngossip_core::shared` does
//! without the lock) with the next two records submitted between the steps.
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
    // sequence numbers waiting for a decision: queued (must get one) and
    // orphaned (get one only if their channel comes)
    let (mut queued, mut orphaned) = (HashSet::new(), HashSet::new());
    let run =
        |p: &mut Pipeline<Vec<u8>>, queued: &mut HashSet<u64>, orphaned: &mut HashSet<u64>| {
            let mut v = verifier().lock().unwrap();
            for o in p.process(&mut v, usize::MAX).outcomes {
                assert!(!matches!(
                    o.decision,
                    Decision::Queued | Decision::QueueFull
                ));
                assert!(queued.remove(&o.seq) || orphaned.remove(&o.seq), "{o:?}");
            }
        };
    let mut rest = data.get(1..).unwrap_or(&[]);
    let next = |rest: &mut &[u8]| -> Option<(u8, Vec<u8>)> {
        if rest.len() < 3 {
            return None;
        }
        let peer = rest[0];
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]]));
        let end = (3 + len).min(rest.len());
        let msg = rest[3..end].to_vec();
        *rest = &rest[end..];
        Some((peer, msg))
    };
    let submit = |p: &mut Pipeline<Vec<u8>>,
                  queued: &mut HashSet<u64>,
                  orphaned: &mut HashSet<u64>,
                  peer: u8,
                  msg: Vec<u8>| {
        let a = p.submit(u64::from(peer), msg);
        match a.decision {
            Decision::Queued => assert!(queued.insert(a.seq)),
            Decision::Orphaned => assert!(orphaned.insert(a.seq)),
            _ => {}
        }
    };
    while let Some((peer, msg)) = next(&mut rest) {
        if peer == 0xff {
            run(&mut p, &mut queued, &mut orphaned);
            continue;
        }
        if peer == 0xfe {
            let mut b = p.begin(usize::MAX);
            if let Some((peer, msg)) = next(&mut rest) {
                submit(&mut p, &mut queued, &mut orphaned, peer, msg);
            }
            let (visible, r) = {
                let mut v = verifier().lock().unwrap();
                (p.graph().channel_count(), v.verify(&b.announcement_jobs()))
            };
            p.apply_announcements(&mut b, r);
            // nothing of the batch is visible before `finish`
            assert_eq!(p.graph().channel_count(), visible);
            if let Some((peer, msg)) = next(&mut rest) {
                submit(&mut p, &mut queued, &mut orphaned, peer, msg);
            }
            let r = verifier().lock().unwrap().verify(&b.candidate_jobs());
            for o in p.finish(b, r).outcomes {
                assert!(!matches!(
                    o.decision,
                    Decision::Queued | Decision::QueueFull
                ));
                assert!(queued.remove(&o.seq) || orphaned.remove(&o.seq), "{o:?}");
            }
            continue;
        }
        submit(&mut p, &mut queued, &mut orphaned, peer, msg);
    }
    run(&mut p, &mut queued, &mut orphaned);
    assert!(queued.is_empty(), "queued but never decided: {queued:?}");
    assert_eq!(p.queued(), 0);
});
