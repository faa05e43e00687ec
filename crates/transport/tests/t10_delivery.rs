//! Bulk delivery: every message arrives, in order per sender, with `send` called from plain
//! threads that have no tokio runtime context (like raftnode's Raft loop).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{heartbeat, start_cluster, wait_until, Recorder};
use transport::Transport;

/// Messages each node sends to each other node: 3 nodes x 2 peers x 17,000 = 102,000.
const MSGS_PER_LINK: u64 = 17_000;
/// Most messages a sender lets run ahead of what its peer received, below the queue bound.
const WINDOW: u64 = 2_000;
const CHUNK: u64 = 100;

/// Sends `MSGS_PER_LINK` messages from `from` to each of `peers`, in chunks, keeping at most
/// `WINDOW` unreceived per peer so the bounded queue never overflows.
fn send_all(from: u64, transport: Transport, peers: Vec<(u64, Arc<Recorder>)>) {
    let mut next = 0;
    while next < MSGS_PER_LINK {
        for (_, recorder) in &peers {
            while next - recorder.count_from(from) as u64 > WINDOW {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        let end = (next + CHUNK).min(MSGS_PER_LINK);
        let batch = (next..end)
            .flat_map(|seq| peers.iter().map(move |(to, _)| heartbeat(from, *to, seq)))
            .collect();
        transport.send(batch);
        next = end;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_exchange_100k_messages_in_order() {
    let nodes = start_cluster(3).await;
    let threads: Vec<_> = nodes
        .iter()
        .map(|node| {
            let peers = nodes
                .iter()
                .filter(|p| p.id != node.id)
                .map(|p| (p.id, p.recorder.clone()))
                .collect();
            let (id, transport) = (node.id, node.transport.clone());
            std::thread::spawn(move || send_all(id, transport, peers))
        })
        .collect();
    for thread in threads {
        thread.join().expect("sender thread");
    }
    for receiver in &nodes {
        for sender in nodes.iter().filter(|s| s.id != receiver.id) {
            let rec = &receiver.recorder;
            wait_until("all messages received", || {
                rec.count_from(sender.id) as u64 >= MSGS_PER_LINK
            })
            .await;
            let expected: Vec<u64> = (0..MSGS_PER_LINK).collect();
            assert_eq!(
                rec.indexes_from(sender.id),
                expected,
                "{} -> {}",
                sender.id,
                receiver.id
            );
        }
    }
    for node in &nodes {
        // The sender counts a frame as sent when the response arrives, just after delivery.
        let t = node.transport.clone();
        wait_until("acks counted", || {
            t.stats().total().msgs_sent >= 2 * MSGS_PER_LINK
        })
        .await;
        let total = node.transport.stats().total();
        assert_eq!(total.msgs_sent, 2 * MSGS_PER_LINK, "node {}", node.id);
        assert_eq!(total.msgs_received, 2 * MSGS_PER_LINK, "node {}", node.id);
        assert_eq!(total.msgs_dropped, 0, "node {}", node.id);
        assert_eq!(total.send_failures, 0, "node {}", node.id);
        assert!(total.bytes_sent > 0 && total.bytes_received > 0);
        assert!(node.recorder.unreachable.lock().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_drops_and_counts_without_blocking() {
    let mut config = common::test_config(1);
    config.peer_queue_len = 10;
    let node = common::start_node(config).await;
    // Peer 2 points at a port nobody listens on, so nothing drains its queue quickly.
    let unused = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", unused.local_addr().unwrap());
    drop(unused);
    node.transport.add_peer(2, &url).unwrap();
    node.transport
        .send((0..1_000).map(|seq| heartbeat(1, 2, seq)).collect());
    let stats = node.transport.stats();
    let peer = &stats.peers[&2];
    assert!(
        peer.queue_len <= 10,
        "queue bounded, got {}",
        peer.queue_len
    );
    // At most 10 queued plus 10 taken by the sender task are not (yet) counted as dropped.
    assert!(peer.msgs_dropped >= 980, "drops counted: {peer:?}");
    assert_eq!(peer.url.as_deref(), Some(url.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_peer_is_dropped_and_reported_unreachable() {
    let node = common::start_node(common::test_config(1)).await;
    node.transport
        .send(vec![heartbeat(1, 9, 0), heartbeat(1, 9, 1)]);
    assert!(node.recorder.was_reported_unreachable(9));
    assert_eq!(node.transport.stats().peers[&9].msgs_dropped, 2);
}

/// Every MsgSnapshot ends in exactly one report_snapshot, even for a peer
/// the transport does not know (raft would otherwise wait forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_to_unknown_peer_is_reported_failed() {
    let node = common::start_node(common::test_config(1)).await;
    let mut snap = heartbeat(1, 9, 0);
    snap.msg_type = raft_proto::eraftpb::MessageType::MsgSnapshot as i32;
    node.transport.send(vec![snap]);
    assert_eq!(
        *node.recorder.snapshots.lock(),
        vec![(9, transport::SnapshotStatus::Failure)]
    );
    assert!(node.recorder.was_reported_unreachable(9));
}
