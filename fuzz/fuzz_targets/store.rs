//! A gossip_store image from disk (damaged, truncated, or written by
//! another program): the scan never panics, its records lie inside the
//! image, and loading them into a pipeline never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lngossip_core::pipeline::{Config, Pipeline, Policy};
use lngossip_core::store;

fuzz_target!(|data: &[u8]| {
    let Ok(scan) = store::scan(data) else {
        return;
    };
    assert!(scan.valid_len as usize <= data.len());
    let mut last = 0;
    for r in &scan.records {
        assert!(r.start <= r.end && r.end <= data.len());
        assert!(r.offset >= last);
        last = r.offset;
    }
    let mut p: Pipeline<Vec<u8>> = Pipeline::new(Config::for_policy(Policy::Archive));
    let dead = p.load_store_image(data, &scan);
    for (off, len) in dead {
        assert!(off as usize + len <= data.len());
    }
});
