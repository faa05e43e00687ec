//! Shared helpers for the transport's integration tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use raft_proto::eraftpb::{Message, MessageType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use transport::{Delivery, Overloaded, SnapshotStatus, Transport, TransportConfig};

/// Cluster id used by every test node.
pub const CLUSTER_ID: u64 = 0xC1;
/// Upper bound on any wait: a safety net so a broken transport fails instead of hanging.
pub const WAIT_LIMIT: Duration = Duration::from_secs(30);

/// A `Delivery` that records everything the transport hands it.
#[derive(Default)]
pub struct Recorder {
    pub received: Mutex<HashMap<u64, Vec<Message>>>,
    pub unreachable: Mutex<Vec<u64>>,
    pub snapshots: Mutex<Vec<(u64, SnapshotStatus)>>,
    pub overloaded: AtomicBool,
    /// Peers whose 410 told this node, without condition, that it was removed.
    pub removed: Mutex<Vec<u64>>,
    /// Peers whose 410 said at which log index they applied this node's removal.
    pub removed_at: Mutex<Vec<(u64, Option<u64>)>>,
}

impl Delivery for Recorder {
    fn deliver(&self, msgs: Vec<Message>) -> Result<(), Overloaded> {
        if self.overloaded.load(Ordering::Acquire) {
            return Err(Overloaded);
        }
        let mut received = self.received.lock();
        for msg in msgs {
            received.entry(msg.from).or_default().push(msg);
        }
        Ok(())
    }
    fn report_unreachable(&self, peer_id: u64) {
        self.unreachable.lock().push(peer_id);
    }
    fn report_snapshot(&self, peer_id: u64, status: SnapshotStatus) {
        self.snapshots.lock().push((peer_id, status));
    }
    fn report_removed(&self, peer_id: u64) {
        self.removed.lock().push(peer_id);
    }
    fn report_removed_at(&self, peer_id: u64, removed_at_index: Option<u64>) {
        match removed_at_index {
            Some(_) => self.removed_at.lock().push((peer_id, removed_at_index)),
            None => self.report_removed(peer_id),
        }
    }
}

impl Recorder {
    /// Messages received from `from` so far.
    pub fn count_from(&self, from: u64) -> usize {
        self.received.lock().get(&from).map_or(0, Vec::len)
    }
    /// The `index` fields of messages received from `from`, in arrival order.
    pub fn indexes_from(&self, from: u64) -> Vec<u64> {
        self.received
            .lock()
            .get(&from)
            .map_or(Vec::new(), |v| v.iter().map(|m| m.index).collect())
    }
    pub fn was_reported_unreachable(&self, peer_id: u64) -> bool {
        self.unreachable.lock().contains(&peer_id)
    }
}

/// A transport serving its router on an ephemeral loopback port.
pub struct Node {
    pub id: u64,
    pub transport: Transport,
    pub recorder: Arc<Recorder>,
    pub url: String,
    pub server: tokio::task::JoinHandle<()>,
}

/// A test configuration: small backoff so reconnection tests are quick.
pub fn test_config(id: u64) -> TransportConfig {
    let mut config = TransportConfig::new(id, CLUSTER_ID);
    config.backoff_initial_ms = 10;
    config.backoff_max_ms = 100;
    config.connect_timeout_ms = 2_000;
    config
}

/// Starts a node with `config` on a fresh ephemeral port.
pub async fn start_node(config: TransportConfig) -> Node {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    start_node_on(config, listener)
}

/// Starts a node with `config` serving on `listener`.
pub fn start_node_on(config: TransportConfig, listener: TcpListener) -> Node {
    let id = config.node_id;
    let recorder = Arc::new(Recorder::default());
    let transport = Transport::new(config, recorder.clone());
    let url = format!("http://{}", listener.local_addr().expect("local addr"));
    let router = transport.router();
    let server = tokio::spawn(async move {
        axum::serve(listener, router).await.expect("serve");
    });
    Node {
        id,
        transport,
        recorder,
        url,
        server,
    }
}

/// Starts nodes 1..=n, each knowing all the others.
pub async fn start_cluster(n: u64) -> Vec<Node> {
    let mut nodes = Vec::new();
    for id in 1..=n {
        nodes.push(start_node(test_config(id)).await);
    }
    for a in &nodes {
        for b in &nodes {
            if a.id != b.id {
                a.transport.add_peer(b.id, &b.url).expect("add peer");
            }
        }
    }
    nodes
}

/// A heartbeat-sized message from `from` to `to` carrying sequence number `seq` in `index`.
pub fn heartbeat(from: u64, to: u64, seq: u64) -> Message {
    let mut msg = Message::default();
    msg.set_msg_type(MessageType::MsgHeartbeat);
    msg.from = from;
    msg.to = to;
    msg.term = 3;
    msg.commit = seq;
    msg.index = seq;
    msg
}

/// Polls `cond` every 2 ms until it holds; panics with `what` after `WAIT_LIMIT`.
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < WAIT_LIMIT,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Sends raw bytes as one HTTP request over a new connection and returns (status, body).
/// `close_write` half-closes the socket after writing (to send a truncated body).
pub async fn raw_request(addr: &str, request: &[u8], close_write: bool) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write request");
    if close_write {
        stream.shutdown().await.expect("half-close");
    }
    let mut response = Vec::new();
    let read = tokio::time::timeout(WAIT_LIMIT, stream.read_to_end(&mut response)).await;
    read.expect("response in time").expect("read response");
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

/// Builds a POST request with identity headers and a Content-Length matching `body`.
pub fn post(path: &str, from: u64, to: u64, cluster_id: u64, body: &[u8]) -> Vec<u8> {
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nx-raft-from: {from}\r\n\
         x-raft-to: {to}\r\nx-raft-cluster-id: {cluster_id}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    request
}

/// The `host:port` of a node URL.
pub fn addr_of(url: &str) -> &str {
    url.trim_start_matches("http://")
}
