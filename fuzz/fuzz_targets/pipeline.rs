//! `Pipeline::submit` on arbitrary bytes from arbitrary peers, with
//! `process` batches in between: no panic, one final decision per message.
//!
//! Input: records of `[peer: u8][len: u16 BE][len bytes]`; a record whose
//! peer byte is 0xff runs a `process` instead.
#![no_main]

use std::sync::Mutex;
use std::sync::OnceLock;

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
    let (mut queued, mut decided) = (0usize, 0usize);
    let mut run = |p: &mut Pipeline<Vec<u8>>, queued: &mut usize, decided: &mut usize| {
        let mut b = p.begin(usize::MAX);
        let r = v.verify(&b.announcement_jobs());
        p.apply_announcements(&mut b, r);
        let r = v.verify(&b.candidate_jobs());
        let done = p.finish(b, r);
        for o in &done.outcomes {
            assert!(!matches!(
                o.decision,
                Decision::Queued | Decision::QueueFull
            ));
        }
        *decided += done.outcomes.len();
        let _ = queued;
    };
    let mut rest = data.get(1..).unwrap_or(&[]);
    while rest.len() >= 3 {
        let peer = rest[0];
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]]));
        let end = (3 + len).min(rest.len());
        let msg = rest[3..end].to_vec();
        rest = &rest[end..];
        if peer == 0xff {
            run(&mut p, &mut queued, &mut decided);
            continue;
        }
        let a = p.submit(u64::from(peer), msg);
        if a.decision == Decision::Queued {
            queued += 1;
        }
    }
    run(&mut p, &mut queued, &mut decided);
    assert_eq!(p.queued(), 0);
});
