//! A gossip_store image from disk (damaged, truncated, or written by
//! another program): the scan never panics, its records and the damaged
//! ranges it skipped tile the image up to the damaged tail, in order, each
//! record's CRC checks, and loading them into a pipeline never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lngossip_core::pipeline::{Config, Pipeline, Policy};
use lngossip_core::store;

fuzz_target!(|data: &[u8]| {
    let Ok(scan) = store::scan(data) else {
        return;
    };
    assert!(scan.valid_len as usize <= data.len());
    // records and skipped ranges follow each other from offset 1 to valid_len
    let (mut records, mut skipped) = (scan.records.iter().peekable(), scan.skipped.iter());
    let mut at = 1u64.min(data.len() as u64);
    while at < scan.valid_len {
        match records.peek() {
            Some(r) if r.offset == at => {
                assert!(r.start == at as usize + store::HEADER_LEN);
                assert!(r.start <= r.end && r.end <= data.len());
                assert!(r.flags & store::FLAG_COMPLETE != 0);
                let crc = u32::from_be_bytes(data[r.start - 8..r.start - 4].try_into().unwrap());
                assert_eq!(store::record_crc(r.timestamp, &data[r.start..r.end]), crc);
                at = r.end as u64;
                records.next();
            }
            _ => {
                let s = skipped.next().expect("a gap that is not a skipped range");
                assert_eq!(s.offset, at);
                assert!(s.len > 0);
                at += s.len;
            }
        }
    }
    assert_eq!(at, scan.valid_len);
    assert!(records.next().is_none() && skipped.next().is_none());
    let mut p: Pipeline<Vec<u8>> = Pipeline::new(Config::for_policy(Policy::Archive));
    let dead = p.load_store_image(data, &scan);
    for (off, len) in dead {
        assert!(off as usize + len <= data.len());
    }
});
