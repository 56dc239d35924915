//! `ldk-peer`: a rust-lightning (LDK) node that only gossips, for lngossip's
//! interop tests (tests/test_interop_ldk.py).
//!
//! * `ldk-peer serve --gsp FILE [--listen 127.0.0.1:0]` loads a GSP file
//!   (`GSP\x01`, then BigSize-length-prefixed BOLT #7 messages) into a mainnet
//!   `NetworkGraph` through `P2PGossipSync`'s `RoutingMessageHandler` methods
//!   (no UTXO lookup), listens, prints `NODE_ID_HEX@HOST:PORT` and serves
//!   until killed. Gossip is sent the way LDK sends it (a dump starts on the
//!   peer's `gossip_timestamp_filter`, a ping after every 32 messages).
//!   `--nodelay` sets TCP_NODELAY on accepted sockets (lightning-net-tokio
//!   leaves that to the application, and Nagle's algorithm then holds each
//!   flow-control ping until the receiver's delayed ACK).
//! * `ldk-peer sync --connect NODE_ID@HOST:PORT [--idle 5] [--timeout 300]`
//!   syncs a fresh graph from one peer and prints
//!   `{"channels": N, "nodes": N, "channel_updates": N, ...}`.
//!
//! LDK (built with `std`, as lightning-net-tokio requires) drops
//! `channel_update`s older than 14 days by its wall clock, so the tests run
//! this program under `faketime` at the dataset's date.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lightning::bitcoin::secp256k1::PublicKey;
use lightning::bitcoin::Network;
use lightning::ln::msgs::{
    ChannelAnnouncement, ChannelUpdate, NodeAnnouncement, RoutingMessageHandler,
};
use lightning::ln::peer_handler::{
    ErroringMessageHandler, IgnoringMessageHandler, MessageHandler, PeerManager,
};
use lightning::routing::gossip::{NetworkGraph, P2PGossipSync};
use lightning::routing::utxo::UtxoLookup;
use lightning::sign::{KeysManager, NodeSigner, Recipient};
use lightning::util::logger::Level;
use lightning::util::ser::LengthReadable;
use lightning_net_tokio::SocketDescriptor;

mod logger;
use logger::StderrLogger;

type Log = Arc<StderrLogger>;
type Graph = NetworkGraph<Log>;
type Gossip = P2PGossipSync<Arc<Graph>, Arc<dyn UtxoLookup + Send + Sync>, Log>;
type Peers = PeerManager<
    SocketDescriptor,
    Arc<ErroringMessageHandler>,
    Arc<Gossip>,
    Arc<IgnoringMessageHandler>,
    Log,
    Arc<IgnoringMessageHandler>,
    Arc<KeysManager>,
    Arc<IgnoringMessageHandler>,
>;

fn random_bytes() -> [u8; 32] {
    let mut out = [0u8; 32];
    match std::fs::File::open("/dev/urandom") {
        Ok(mut f) => {
            use std::io::Read;
            f.read_exact(&mut out).expect("reading /dev/urandom");
        }
        Err(e) => panic!("/dev/urandom: {e}"),
    }
    out
}

fn now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock before 1970")
}

/// A node: fresh keys, a graph, P2PGossipSync as the route handler and a
/// PeerManager that handles nothing else.
fn make_node(logger: Log, graph: Arc<Graph>) -> (Arc<Gossip>, Arc<Peers>, PublicKey) {
    let t = now();
    let keys = Arc::new(KeysManager::new(
        &random_bytes(),
        t.as_secs(),
        t.subsec_nanos(),
        true,
    ));
    let node_id = keys.get_node_id(Recipient::Node).expect("node id");
    let gossip: Arc<Gossip> = Arc::new(P2PGossipSync::new(graph, None, logger.clone()));
    let handlers = MessageHandler {
        chan_handler: Arc::new(ErroringMessageHandler::new()),
        route_handler: gossip.clone(),
        onion_message_handler: Arc::new(IgnoringMessageHandler {}),
        custom_message_handler: Arc::new(IgnoringMessageHandler {}),
        send_only_message_handler: Arc::new(IgnoringMessageHandler {}),
    };
    let peers = Arc::new(PeerManager::new(
        handlers,
        t.as_secs() as u32,
        &random_bytes(),
        logger,
        keys,
    ));
    (gossip, peers, node_id)
}

/// Keeps the PeerManager running: `timer_tick_occurred` every 10 s (pings,
/// dead peers) and `process_events` often (lightning-net-tokio calls it after
/// every read; this covers events raised outside a read).
fn spawn_timers(peers: Arc<Peers>) {
    let p = peers.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        tick.tick().await;
        loop {
            tick.tick().await;
            p.timer_tick_occurred();
        }
    });
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            peers.process_events();
        }
    });
}

fn read_bigsize(data: &[u8], pos: &mut usize) -> Option<u64> {
    let first = *data.get(*pos)?;
    let width = match first {
        0xfd => 2,
        0xfe => 4,
        0xff => 8,
        v => {
            *pos += 1;
            return Some(u64::from(v));
        }
    };
    let bytes = data.get(*pos + 1..*pos + 1 + width)?;
    *pos += 1 + width;
    Some(bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
}

#[derive(Default)]
struct LoadReport {
    messages: u64,
    accepted: [u64; 3],
    rejected: [u64; 3],
    undecodable: u64,
    other_types: u64,
    first_errors: Vec<String>,
}

fn decode<T: LengthReadable>(mut body: &[u8]) -> Option<T> {
    T::read_from_fixed_length_buffer(&mut body).ok()
}

/// Feeds every message of a GSP file to the route handler, in file order.
fn load_gsp(path: &str, gossip: &Gossip) -> Result<LoadReport, String> {
    let data = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    if !data.starts_with(b"GSP\x01") {
        return Err(format!("{path}: not a GSP file (no GSP\\x01 header)"));
    }
    let mut report = LoadReport::default();
    let mut pos = 4;
    while pos < data.len() {
        let len = read_bigsize(&data, &mut pos).ok_or("truncated length")? as usize;
        let msg = data.get(pos..pos + len).ok_or("truncated message")?;
        pos += len;
        report.messages += 1;
        if msg.len() < 2 {
            report.undecodable += 1;
            continue;
        }
        let kind = u16::from_be_bytes([msg[0], msg[1]]);
        let body = &msg[2..];
        let (slot, result) = match kind {
            256 => match decode::<ChannelAnnouncement>(body) {
                Some(m) => (0, gossip.handle_channel_announcement(None, &m)),
                None => {
                    report.undecodable += 1;
                    continue;
                }
            },
            258 => match decode::<ChannelUpdate>(body) {
                Some(m) => (1, gossip.handle_channel_update(None, &m)),
                None => {
                    report.undecodable += 1;
                    continue;
                }
            },
            257 => match decode::<NodeAnnouncement>(body) {
                Some(m) => (2, gossip.handle_node_announcement(None, &m)),
                None => {
                    report.undecodable += 1;
                    continue;
                }
            },
            _ => {
                report.other_types += 1;
                continue;
            }
        };
        match result {
            Ok(_) => report.accepted[slot] += 1,
            Err(e) => {
                report.rejected[slot] += 1;
                if report.first_errors.len() < 5 {
                    report.first_errors.push(format!("type {kind}: {}", e.err));
                }
            }
        }
    }
    Ok(report)
}

struct Counts {
    channels: usize,
    nodes: usize,
    announced_nodes: usize,
    updates: usize,
    /// Sum of the update and announcement timestamps held: changes whenever
    /// a newer update or node announcement replaces an older one.
    stamp: u64,
}

fn counts(graph: &Graph) -> Counts {
    let g = graph.read_only();
    let mut c = Counts {
        channels: g.channels().len(),
        nodes: g.nodes().len(),
        announced_nodes: 0,
        updates: 0,
        stamp: 0,
    };
    for (_, chan) in g.channels().unordered_iter() {
        for dir in [&chan.one_to_two, &chan.two_to_one].into_iter().flatten() {
            c.updates += 1;
            c.stamp += u64::from(dir.last_update);
        }
    }
    for (_, node) in g.nodes().unordered_iter() {
        if let Some(info) = &node.announcement_info {
            c.announced_nodes += 1;
            c.stamp += u64::from(info.last_update());
        }
    }
    c
}

fn opt<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn log_level(args: &[String]) -> Level {
    match opt(args, "--log").unwrap_or("info") {
        "gossip" => Level::Gossip,
        "trace" => Level::Trace,
        "debug" => Level::Debug,
        "warn" => Level::Warn,
        "error" => Level::Error,
        _ => Level::Info,
    }
}

async fn serve(args: &[String]) -> Result<(), String> {
    let gsp = opt(args, "--gsp").ok_or("serve needs --gsp FILE")?;
    let listen = opt(args, "--listen").unwrap_or("127.0.0.1:0");
    // lightning-net-tokio leaves Nagle's algorithm on (the application owns
    // the socket); --nodelay turns it off on accepted sockets
    let nodelay = args.iter().any(|a| a == "--nodelay");
    let logger: Log = Arc::new(StderrLogger {
        min: log_level(args),
    });
    let graph = Arc::new(NetworkGraph::new(Network::Bitcoin, logger.clone()));
    let (gossip, peers, node_id) = make_node(logger, graph.clone());

    let started = Instant::now();
    let r = load_gsp(gsp, &gossip)?;
    let c = counts(&graph);
    eprintln!(
        "ldk-peer: loaded {} messages in {:.1} s: channel_announcement {} accepted {} rejected, \
         channel_update {} / {}, node_announcement {} / {}, {} undecodable, {} other; \
         graph: {} channels, {} nodes ({} announced), {} channel updates",
        r.messages,
        started.elapsed().as_secs_f64(),
        r.accepted[0],
        r.rejected[0],
        r.accepted[1],
        r.rejected[1],
        r.accepted[2],
        r.rejected[2],
        r.undecodable,
        r.other_types,
        c.channels,
        c.nodes,
        c.announced_nodes,
        c.updates
    );
    for e in &r.first_errors {
        eprintln!("ldk-peer: rejected: {e}");
    }

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("listen on {listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    spawn_timers(peers.clone());
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{node_id}@{addr}")
            .and_then(|_| out.flush())
            .map_err(|e| e.to_string())?;
    }
    loop {
        let (stream, remote) = listener
            .accept()
            .await
            .map_err(|e| format!("accept: {e}"))?;
        eprintln!("ldk-peer: inbound connection from {remote}");
        if nodelay {
            stream.set_nodelay(true).map_err(|e| e.to_string())?;
        }
        let std_stream = stream.into_std().map_err(|e| e.to_string())?;
        let p = peers.clone();
        tokio::spawn(async move {
            lightning_net_tokio::setup_inbound(p, std_stream).await;
            eprintln!("ldk-peer: {remote} disconnected");
        });
    }
}

async fn sync(args: &[String]) -> Result<(), String> {
    let target = opt(args, "--connect").ok_or("sync needs --connect NODE_ID@HOST:PORT")?;
    let idle = Duration::from_secs_f64(
        opt(args, "--idle")
            .unwrap_or("5")
            .parse()
            .map_err(|_| "bad --idle")?,
    );
    let timeout = Duration::from_secs_f64(
        opt(args, "--timeout")
            .unwrap_or("300")
            .parse()
            .map_err(|_| "bad --timeout")?,
    );
    let (id_hex, host_port) = target
        .split_once('@')
        .ok_or("--connect NODE_ID@HOST:PORT")?;
    let their_id = PublicKey::from_str(id_hex).map_err(|e| format!("node id: {e}"))?;
    let addr: SocketAddr = host_port.parse().map_err(|e| format!("{host_port}: {e}"))?;

    let logger: Log = Arc::new(StderrLogger {
        min: log_level(args),
    });
    let graph = Arc::new(NetworkGraph::new(Network::Bitcoin, logger.clone()));
    let (_gossip, peers, _) = make_node(logger, graph.clone());
    spawn_timers(peers.clone());

    let started = Instant::now();
    let connection = lightning_net_tokio::connect_outbound(peers.clone(), their_id, addr)
        .await
        .ok_or_else(|| format!("could not connect to {addr}"))?;
    tokio::spawn(async move {
        connection.await;
        eprintln!("ldk-peer: disconnected from {addr}");
    });

    let mut connected_at: Option<Instant> = None;
    let mut last = (0usize, 0usize, 0usize, 0u64);
    let mut last_change = Instant::now();
    let timed_out;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if connected_at.is_none() && !peers.list_peers().is_empty() {
            connected_at = Some(Instant::now());
            last_change = Instant::now();
            eprintln!("ldk-peer: connected to {their_id}");
        }
        let c = counts(&graph);
        let key = (c.channels, c.nodes, c.updates, c.stamp);
        if key != last {
            last = key;
            last_change = Instant::now();
        }
        if started.elapsed() >= timeout {
            timed_out = true;
            break;
        }
        if connected_at.is_some() && last_change.elapsed() >= idle {
            timed_out = false;
            break;
        }
    }
    let c = counts(&graph);
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{{\"channels\": {}, \"nodes\": {}, \"channel_updates\": {}, \
         \"announced_nodes\": {}, \"connected\": {}, \"timed_out\": {}, \"seconds\": {:.1}}}",
        c.channels,
        c.nodes,
        c.updates,
        c.announced_nodes,
        connected_at.is_some(),
        timed_out,
        started.elapsed().as_secs_f64()
    )
    .and_then(|_| out.flush())
    .map_err(|e| e.to_string())
}

const USAGE: &str = "usage: ldk-peer serve --gsp FILE [--listen 127.0.0.1:0] [--nodelay] [--log LEVEL]\n       \
                     ldk-peer sync --connect NODE_ID@HOST:PORT [--idle 5] [--timeout 300] [--log LEVEL]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = match args.first().map(String::as_str) {
        Some("serve") => runtime.block_on(serve(&args[1..])),
        Some("sync") => runtime.block_on(sync(&args[1..])),
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(()) => {
            // spawned connection tasks are not waited for
            std::process::exit(0);
        }
        Err(e) => {
            eprintln!("ldk-peer: {e}");
            ExitCode::from(2)
        }
    }
}
