//! The peer port bounds its memory: entries per frame are capped, concurrent requests and
//! snapshot uploads are limited with load shedding (503), and a refused request with a large
//! body still gets its answer.

mod common;

use std::future::IntoFuture;
use std::time::Duration;

use common::{addr_of, post, raw_request, start_node, test_config, wait_until, CLUSTER_ID};
use prost::Message as _;
use raft_proto::eraftpb::{Message, MessageType, Snapshot};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use transport::wire::{self, PATH_MESSAGES, PATH_SNAPSHOT};

/// Resident memory of this process, from /proc/self/status.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS line");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("VmRSS value");
    kib * 1024
}

/// One MsgAppend from 1 to 2 with `count` empty entries, encoded by hand (2 bytes each).
fn append_with_empty_entries(count: usize) -> Vec<u8> {
    let mut head = Message::default();
    head.set_msg_type(MessageType::MsgAppend);
    (head.from, head.to, head.term) = (1, 2, 1);
    let mut msg = head.encode_to_vec();
    msg.reserve(count * 2);
    for _ in 0..count {
        // Field 7 (entries), wire type 2, length 0.
        msg.extend_from_slice(&[(7 << 3) | 2, 0]);
    }
    let mut frame = (msg.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&msg);
    frame
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_million_empty_entries_in_one_frame_get_a_4xx() {
    let node = start_node(test_config(2)).await;
    let frame = append_with_empty_entries(8_000_000);
    assert!(frame.len() <= transport::TransportConfig::new(2, CLUSTER_ID).max_frame_bytes);
    let request = post(PATH_MESSAGES, 1, 2, CLUSTER_ID, &frame);
    let (status, body) = raw_request(addr_of(&node.url), &request, false).await;
    assert_eq!(status, 413, "body {body:?}");
    assert!(body.contains("entries"), "{body}");
    assert_eq!(node.recorder.count_from(1), 0, "nothing was delivered");
}

/// A client that sent a request head and part of its body, then stalls.
struct SlowUpload {
    stream: TcpStream,
}

impl SlowUpload {
    async fn start(addr: &str, path: &str, content_length: u64, first: &[u8]) -> SlowUpload {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: test\r\nx-raft-from: 1\r\nx-raft-to: 2\r\n\
             x-raft-cluster-id: {CLUSTER_ID}\r\nContent-Length: {content_length}\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.expect("write head");
        // The server may already have refused the request and closed: ignore write errors.
        let _ = stream.write_all(first).await;
        SlowUpload { stream }
    }

    /// The status of the response, if one arrives within `wait`.
    async fn status_within(&mut self, wait: Duration) -> Option<u16> {
        let mut response = Vec::new();
        let mut buf = [0u8; 1024];
        let read = async {
            loop {
                match self.stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => response.extend_from_slice(&buf[..n]),
                }
                if response.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(wait, read).await;
        let text = String::from_utf8_lossy(&response);
        text.split(' ').nth(1).and_then(|s| s.parse().ok())
    }
}

/// Waits for every upload's answer at once (refused ones are answered after the server
/// discarded what it could of their bodies); returns (answered 503, still waiting).
async fn count_statuses(uploads: &mut [SlowUpload]) -> (usize, usize) {
    let answers = futures::future::join_all(
        uploads
            .iter_mut()
            .map(|u| u.status_within(Duration::from_secs(3))),
    )
    .await;
    let mut shed = 0;
    let mut waiting = 0;
    for answer in answers {
        match answer {
            Some(503) => shed += 1,
            None => waiting += 1,
            Some(other) => panic!("unexpected status {other}"),
        }
    }
    (shed, waiting)
}

/// A snapshot head announcing `data_bytes` of data, from 1 to 2.
fn snapshot_head(data_bytes: usize) -> Vec<u8> {
    let mut msg = Message::default();
    msg.set_msg_type(MessageType::MsgSnapshot);
    (msg.from, msg.to, msg.term) = (1, 2, 1);
    msg.snapshot = Some(Snapshot {
        data: vec![0u8; data_bytes],
        ..Default::default()
    });
    let (head, _data) = wire::encode_snapshot(msg);
    head.to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_slow_snapshot_uploads_over_the_limit_get_503_and_memory_stays_bounded() {
    const UPLOADS: usize = 100;
    const SENT_BYTES: usize = 2 * 1024 * 1024;
    const DATA_BYTES: usize = 64 * 1024 * 1024;
    let node = start_node(test_config(2)).await;
    let addr = addr_of(&node.url).to_string();
    let rss_before = rss_bytes();

    let mut first = snapshot_head(DATA_BYTES);
    let content_length = (first.len() + DATA_BYTES) as u64;
    first.resize(first.len() + SENT_BYTES, 7);
    let mut uploads = Vec::new();
    for _ in 0..UPLOADS {
        uploads.push(SlowUpload::start(&addr, PATH_SNAPSHOT, content_length, &first).await);
    }
    let (shed, waiting) = count_statuses(&mut uploads).await;
    let rss_growth = rss_bytes().saturating_sub(rss_before);
    assert_eq!(waiting, 1, "one snapshot upload at a time");
    assert_eq!(shed, UPLOADS - 1);
    // 100 uploads of 2 MiB each would hold 200 MiB; one at a time holds a few.
    assert!(
        rss_growth < 128 * 1024 * 1024,
        "RSS grew by {rss_growth} bytes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_slow_frames_over_the_limit_get_503() {
    const UPLOADS: usize = 100;
    let config = test_config(2);
    let limit = config.max_concurrent_frames;
    assert!(limit < UPLOADS);
    let node = start_node(config).await;
    let addr = addr_of(&node.url).to_string();
    let mut uploads = Vec::new();
    for _ in 0..UPLOADS {
        uploads.push(SlowUpload::start(&addr, PATH_MESSAGES, 1024 * 1024, &[0u8; 1024]).await);
    }
    let (shed, waiting) = count_statuses(&mut uploads).await;
    assert_eq!(waiting, limit);
    assert_eq!(shed, UPLOADS - limit);
    drop(uploads);
    // The permits come back when the stalled requests end.
    let good = wire::encode_frame(&[common::heartbeat(1, 2, 1)]);
    let addr2 = addr.clone();
    wait_until("a frame is accepted again", || {
        let request = post(PATH_MESSAGES, 1, 2, CLUSTER_ID, &good);
        let addr = addr2.clone();
        let handle = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(raw_request(&addr, &request, false))
                .0
        });
        handle.join().expect("request thread") == 204
    })
    .await;
}

/// A client that writes its whole (refused) body before reading gets the answer, not a
/// connection reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_request_with_a_large_body_gets_its_status() {
    let node = start_node(test_config(2)).await;
    let garbage = vec![0xA5u8; 1024 * 1024];
    for (cluster_id, expected) in [(CLUSTER_ID + 1, 412), (CLUSTER_ID, 400)] {
        let request = post(PATH_MESSAGES, 1, 2, cluster_id, &garbage);
        let (status, body) = raw_request(addr_of(&node.url), &request, false).await;
        assert_eq!(status, expected, "{body}");
    }
}

/// A node that holds every frame's permit until told to let go, like a Raft loop that has
/// not caught up with its queue.
#[derive(Default)]
struct Holding {
    permits: parking_lot::Mutex<Vec<transport::InboundPermit>>,
}

impl transport::Delivery for Holding {
    fn deliver(&self, _msgs: Vec<Message>) -> Result<(), transport::Overloaded> {
        Ok(())
    }
    fn deliver_frame(
        &self,
        _msgs: Vec<Message>,
        permit: transport::InboundPermit,
    ) -> Result<(), transport::Overloaded> {
        self.permits.lock().push(permit);
        Ok(())
    }
    fn report_unreachable(&self, _peer_id: u64) {}
    fn report_snapshot(&self, _peer_id: u64, _status: transport::SnapshotStatus) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_beyond_the_inbound_byte_budget_get_503_until_processed() {
    const BUDGET_BYTES: usize = 64 * 1024;
    let mut config = test_config(2);
    config.max_frame_bytes = BUDGET_BYTES;
    config.max_inbound_bytes = BUDGET_BYTES as u64;
    let holding = std::sync::Arc::new(Holding::default());
    let transport = transport::Transport::new(config, holding.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(axum::serve(listener, transport.router()).into_future());

    let mut msg = Message::default();
    msg.set_msg_type(MessageType::MsgAppend);
    (msg.from, msg.to, msg.term) = (1, 2, 1);
    msg.entries = vec![raft_proto::eraftpb::Entry {
        data: vec![1u8; 20 * 1024],
        ..Default::default()
    }];
    let frame = wire::encode_frame(&[msg]);
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let request = post(PATH_MESSAGES, 1, 2, CLUSTER_ID, &frame);
        statuses.push(raw_request(&addr, &request, false).await.0);
    }
    assert_eq!(statuses, [204, 204, 204, 503]);
    let held = transport.stats().inbound_bytes;
    assert!(
        held > 3 * 20 * 1024 && held <= BUDGET_BYTES as u64,
        "{held}"
    );

    holding.permits.lock().clear();
    assert_eq!(transport.stats().inbound_bytes, 0);
    let request = post(PATH_MESSAGES, 1, 2, CLUSTER_ID, &frame);
    assert_eq!(raw_request(&addr, &request, false).await.0, 204);
}
