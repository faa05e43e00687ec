//! Snapshots are encoded and written off the Raft loop: a slow snapshot
//! never stalls applying.

mod common;

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raftnode::{NodeConfig, RaftNode, RestoreError, SnapshotJob, StateMachine};

/// Counts applied entries; its snapshot jobs block until the test lets them go.
struct Gated {
    applied: Arc<Mutex<u64>>,
    gate: Arc<Mutex<mpsc::Receiver<()>>>,
}

impl StateMachine for Gated {
    fn apply(&mut self, _index: u64, _data: &[u8]) {
        *self.applied.lock().unwrap() += 1;
    }

    fn snapshot(&mut self) -> SnapshotJob {
        let count = *self.applied.lock().unwrap();
        let gate = Arc::clone(&self.gate);
        Box::new(move || {
            // Blocks the snapshot writer, never the loop.
            let _ = gate.lock().unwrap().recv();
            count.to_be_bytes().to_vec()
        })
    }

    fn restore(&mut self, _index: u64, _data: &[u8]) -> Result<(), RestoreError> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applying_goes_on_while_a_snapshot_is_being_written() {
    let dir = tempfile::tempdir().unwrap();
    let members = vec![(1, "http://127.0.0.1:1".to_string())];
    let mut config = NodeConfig::new(1, members, dir.path().to_path_buf());
    config.tick_ms = 10;
    config.snapshot_count = 10;
    config.catch_up_entries = 2;
    let applied = Arc::new(Mutex::new(0));
    let (release, gate) = mpsc::channel();
    // The bootstrap snapshot at start-up runs its job inline.
    release.send(()).unwrap();
    let machine = Gated {
        applied: Arc::clone(&applied),
        gate: Arc::new(Mutex::new(gate)),
    };
    let node = RaftNode::start(config, Box::new(machine)).unwrap();
    let consensus = node.consensus();
    let deadline = Instant::now() + common::WAIT;
    while consensus.status().leader_id.is_none() {
        assert!(Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // 50 entries: the first snapshot (due at 10) is stuck in its job, yet
    // all 50 are applied.
    for i in 0..50u32 {
        consensus.propose(i.to_be_bytes().to_vec()).await.unwrap();
    }
    consensus.read_barrier().await.unwrap();
    assert_eq!(*applied.lock().unwrap(), 50);
    assert_eq!(
        consensus.status().snapshot_index,
        1,
        "only the bootstrap snapshot while the job is blocked"
    );
    release.send(()).unwrap();
    while consensus.status().snapshot_index < 10 {
        assert!(Instant::now() < deadline, "snapshot never completed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The next snapshot covers the rest once it is let through. Proposals
    // return before they are applied, so the first snapshot may have been
    // captured anywhere from 11 to 50: another `snapshot_count` entries make
    // the next one due wherever it was (one more entry alone did not when it
    // was captured above 41, and the test then waited for a snapshot that
    // was never due).
    release.send(()).unwrap();
    for i in 0..10u32 {
        consensus.propose(i.to_be_bytes().to_vec()).await.unwrap();
    }
    consensus.read_barrier().await.unwrap();
    while consensus.status().snapshot_index < 50 {
        assert!(Instant::now() < deadline, "second snapshot never completed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A snapshot captured after the one above may still wait at the gate.
    release.send(()).unwrap();
    node.shutdown().await.unwrap();
}
