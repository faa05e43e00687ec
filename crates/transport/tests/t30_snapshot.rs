//! Snapshots travel on their own path: a 64 MiB snapshot is delivered intact while heartbeats
//! to the same peer keep flowing, and its outcome is reported.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{heartbeat, start_node, test_config, wait_until, Recorder};
use parking_lot::Mutex;
use raft_proto::eraftpb::{Message, MessageType, Snapshot, SnapshotMetadata};
use tokio::net::TcpListener;
use transport::{Delivery, Overloaded, SnapshotStatus, Transport};

const SNAPSHOT_BYTES: usize = 64 * 1024 * 1024;
/// Heartbeats that must arrive while the snapshot is being received.
const HEARTBEATS_DURING_SNAPSHOT: u64 = 20;

/// Holds the snapshot at the receiver until enough heartbeats arrived after it started: if
/// heartbeats were stuck behind the snapshot, the gate would never open and the test fails.
#[derive(Default)]
struct GatedReceiver {
    heartbeats: AtomicU64,
    heartbeats_at_snapshot: AtomicU64,
    snapshot: Mutex<Option<Message>>,
}

impl Delivery for GatedReceiver {
    fn deliver(&self, msgs: Vec<Message>) -> Result<(), Overloaded> {
        for msg in msgs {
            if msg.msg_type == MessageType::MsgSnapshot as i32 {
                let start = Instant::now();
                let seen = self.heartbeats.load(Ordering::Acquire);
                while self.heartbeats.load(Ordering::Acquire) < seen + HEARTBEATS_DURING_SNAPSHOT
                    && start.elapsed() < Duration::from_secs(20)
                {
                    std::thread::sleep(Duration::from_millis(1));
                }
                let during = self.heartbeats.load(Ordering::Acquire) - seen;
                self.heartbeats_at_snapshot.store(during, Ordering::Release);
                *self.snapshot.lock() = Some(msg);
            } else {
                self.heartbeats.fetch_add(1, Ordering::AcqRel);
            }
        }
        Ok(())
    }
    fn report_unreachable(&self, _peer_id: u64) {}
    fn report_snapshot(&self, _peer_id: u64, _status: SnapshotStatus) {}
}

fn snapshot_message(from: u64, to: u64, data_bytes: usize) -> Message {
    let data: Vec<u8> = (0..data_bytes).map(|i| (i % 251) as u8).collect();
    let mut metadata = SnapshotMetadata::default();
    (metadata.index, metadata.term) = (12_345, 7);
    let mut msg = Message::default();
    msg.set_msg_type(MessageType::MsgSnapshot);
    (msg.from, msg.to, msg.term) = (from, to, 7);
    msg.snapshot = Some(Snapshot {
        data,
        metadata: Some(metadata),
    });
    msg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn snapshot_of_64_mib_arrives_while_heartbeats_flow() {
    let sender = start_node(test_config(1)).await;
    let gated = Arc::new(GatedReceiver::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let receiver = Transport::new(test_config(2), gated.clone());
    let router = receiver.router();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    sender.transport.add_peer(2, &url).unwrap();

    let expected = snapshot_message(1, 2, SNAPSHOT_BYTES);
    sender.transport.send(vec![expected.clone()]);
    let mut seq = 0;
    while gated.snapshot.lock().is_none() {
        sender.transport.send(vec![heartbeat(1, 2, seq)]);
        seq += 1;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(
        gated.heartbeats_at_snapshot.load(Ordering::Acquire) >= HEARTBEATS_DURING_SNAPSHOT,
        "heartbeats were blocked behind the snapshot"
    );
    let got = gated.snapshot.lock().take().unwrap();
    assert_eq!(got.snapshot.as_ref().unwrap().data.len(), SNAPSHOT_BYTES);
    assert!(got == expected, "snapshot delivered intact");
    let rec = sender.recorder.clone();
    wait_until("snapshot reported", || !rec.snapshots.lock().is_empty()).await;
    assert_eq!(*rec.snapshots.lock(), vec![(2, SnapshotStatus::Finish)]);
    let stats = sender.transport.stats().peers[&2].clone();
    assert_eq!((stats.snapshots_sent, stats.snapshots_failed), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_to_unreachable_peer_reports_failure() {
    let sender = start_node(test_config(1)).await;
    let unused = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", unused.local_addr().unwrap());
    drop(unused);
    sender.transport.add_peer(2, &url).unwrap();
    sender.transport.send(vec![snapshot_message(1, 2, 1024)]);
    let rec = sender.recorder.clone();
    wait_until("snapshot failure reported", || {
        !rec.snapshots.lock().is_empty()
    })
    .await;
    assert_eq!(*rec.snapshots.lock(), vec![(2, SnapshotStatus::Failure)]);
    assert!(rec.was_reported_unreachable(2));
    assert_eq!(sender.transport.stats().peers[&2].snapshots_failed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_snapshot_is_refused_and_reported() {
    let sender = start_node(test_config(1)).await;
    let mut config = test_config(2);
    config.max_snapshot_bytes = 1024;
    let receiver = start_node(config).await;
    sender.transport.add_peer(2, &receiver.url).unwrap();
    sender.transport.send(vec![snapshot_message(1, 2, 4096)]);
    let rec = sender.recorder.clone();
    wait_until("snapshot failure reported", || {
        !rec.snapshots.lock().is_empty()
    })
    .await;
    assert_eq!(*rec.snapshots.lock(), vec![(2, SnapshotStatus::Failure)]);
    assert_eq!(receiver.recorder.count_from(1), 0);
    // The receiver keeps serving ordinary traffic.
    sender.transport.send(vec![heartbeat(1, 2, 1)]);
    let rec2: Arc<Recorder> = receiver.recorder.clone();
    wait_until("heartbeat after refused snapshot", || {
        rec2.count_from(1) == 1
    })
    .await;
}
