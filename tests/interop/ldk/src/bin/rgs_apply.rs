//! `rgs-apply SNAPSHOT...`: an independent Rapid Gossip Sync consumer for
//! lngossip's tests (tests/test_rgs_reader.py).
//!
//! Creates a fresh mainnet `NetworkGraph`, applies each snapshot file in order
//! with `lightning-rapid-gossip-sync`'s `RapidGossipSync::update_network_graph`
//! and prints the resulting graph as one JSON object (one line) on stdout:
//!
//! ```text
//! {"last_rapid_gossip_sync_timestamp": N|null,
//!  "channels": [{"short_channel_id": u64, "node_id_1": hex, "node_id_2": hex,
//!                "capacity_sat": u64|null, "features": hex,
//!                "directions": [D|null, D|null]}],
//!  "nodes": [{"node_id": hex, "features": hex|null, "addresses": [str]|null}]}
//! D = {"enabled": bool, "last_update": u32, "cltv_expiry_delta": u16,
//!      "htlc_minimum_msat": u64, "htlc_maximum_msat": u64,
//!      "fee_base_msat": u32, "fee_proportional_millionths": u32}
//! ```
//!
//! Direction 0 is LDK's `one_to_two` (the update from `node_id_1`), 1 is
//! `two_to_one`. Features are hex in wire order (big-endian, as in BOLT #7),
//! addresses are LDK's `Display` of `SocketAddress`. Channels are sorted by
//! short_channel_id, nodes by node_id.
//!
//! For each file, `FILE: TIMESTAMP` (the `latest_seen` the crate returns) goes
//! to stderr; a file that fails prints `FILE: error: ...` to stderr and the
//! program exits with status 1 (2 for usage or I/O errors). `RGS_APPLY_LOG`
//! (`gossip`, `trace`, `debug`, `info`, `warn`, `error`; default `warn`) sets
//! the level of LDK's log lines on stderr.
//!
//! LDK (with `std`) checks the snapshot's and the updates' timestamps against
//! the wall clock, so the tests run this under `faketime`.

use std::fmt::Write as _;
use std::process::ExitCode;

use lightning::bitcoin::Network;
use lightning::routing::gossip::{ChannelUpdateInfo, NetworkGraph};
use lightning::util::logger::Level;
use lightning_rapid_gossip_sync::RapidGossipSync;

#[path = "../logger.rs"]
mod logger;
use logger::StderrLogger;

fn log_level() -> Result<Level, String> {
    let name = std::env::var("RGS_APPLY_LOG").unwrap_or_else(|_| "warn".to_owned());
    Ok(match name.to_ascii_lowercase().as_str() {
        "gossip" => Level::Gossip,
        "trace" => Level::Trace,
        "debug" => Level::Debug,
        "info" => Level::Info,
        "warn" => Level::Warn,
        "error" => Level::Error,
        other => return Err(format!("RGS_APPLY_LOG={other}: unknown level")),
    })
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// LDK keeps feature bits little-endian; the wire (and our JSON) is big-endian.
fn features_hex(le_flags: &[u8]) -> String {
    let mut be = le_flags.to_vec();
    be.reverse();
    hex(&be)
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn direction_json(info: Option<&ChannelUpdateInfo>) -> String {
    match info {
        None => "null".to_owned(),
        Some(u) => format!(
            "{{\"enabled\": {}, \"last_update\": {}, \"cltv_expiry_delta\": {}, \
             \"htlc_minimum_msat\": {}, \"htlc_maximum_msat\": {}, \
             \"fee_base_msat\": {}, \"fee_proportional_millionths\": {}}}",
            u.enabled,
            u.last_update,
            u.cltv_expiry_delta,
            u.htlc_minimum_msat,
            u.htlc_maximum_msat,
            u.fees.base_msat,
            u.fees.proportional_millionths
        ),
    }
}

fn graph_json(graph: &NetworkGraph<&StderrLogger>) -> String {
    let ro = graph.read_only();
    let mut channels: Vec<_> = ro.channels().unordered_iter().collect();
    channels.sort_by_key(|(scid, _)| **scid);
    let mut nodes: Vec<_> = ro.nodes().unordered_iter().collect();
    nodes.sort_by(|a, b| a.0.as_slice().cmp(b.0.as_slice()));

    let timestamp = match graph.get_last_rapid_gossip_sync_timestamp() {
        Some(t) => t.to_string(),
        None => "null".to_owned(),
    };
    let mut out = format!("{{\"last_rapid_gossip_sync_timestamp\": {timestamp}, \"channels\": [");
    for (i, (scid, chan)) in channels.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let capacity = match chan.capacity_sats {
            Some(c) => c.to_string(),
            None => "null".to_owned(),
        };
        let _ = write!(
            out,
            "{{\"short_channel_id\": {}, \"node_id_1\": \"{}\", \"node_id_2\": \"{}\", \
             \"capacity_sat\": {}, \"features\": \"{}\", \"directions\": [{}, {}]}}",
            scid,
            hex(chan.node_one.as_slice()),
            hex(chan.node_two.as_slice()),
            capacity,
            features_hex(chan.features.le_flags()),
            direction_json(chan.one_to_two.as_ref()),
            direction_json(chan.two_to_one.as_ref()),
        );
    }
    out.push_str("], \"nodes\": [");
    for (i, (node_id, node)) in nodes.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let (features, addresses) = match node.announcement_info.as_ref() {
            None => ("null".to_owned(), "null".to_owned()),
            Some(info) => {
                let addrs: Vec<String> = info
                    .addresses()
                    .iter()
                    .map(|a| json_string(&a.to_string()))
                    .collect();
                (
                    format!("\"{}\"", features_hex(info.features().le_flags())),
                    format!("[{}]", addrs.join(", ")),
                )
            }
        };
        let _ = write!(
            out,
            "{{\"node_id\": \"{}\", \"features\": {}, \"addresses\": {}}}",
            hex(node_id.as_slice()),
            features,
            addresses
        );
    }
    out.push_str("]}");
    out
}

fn main() -> ExitCode {
    let paths: Vec<String> = std::env::args().skip(1).collect();
    if paths.is_empty() || paths.iter().any(|p| p == "-h" || p == "--help") {
        eprintln!("usage: rgs-apply SNAPSHOT...");
        return ExitCode::from(2);
    }
    let logger = match log_level() {
        Ok(min) => StderrLogger { min },
        Err(e) => {
            eprintln!("rgs-apply: {e}");
            return ExitCode::from(2);
        }
    };
    let graph = NetworkGraph::new(Network::Bitcoin, &logger);
    let rgs = RapidGossipSync::new(&graph, &logger);
    for path in &paths {
        let data = match std::fs::read(path) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("{path}: error: {e}");
                return ExitCode::from(2);
            }
        };
        match rgs.update_network_graph(&data) {
            Ok(ts) => eprintln!("{path}: {ts}"),
            Err(e) => {
                eprintln!("{path}: error: {e:?}");
                return ExitCode::from(1);
            }
        }
    }
    println!("{}", graph_json(&graph));
    ExitCode::SUCCESS
}
