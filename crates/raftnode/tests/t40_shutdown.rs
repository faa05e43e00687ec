//! Shutdown is never lost behind a full request queue.

mod common;

use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use raftnode::{NodeConfig, RaftError, RaftNode, RestoreError, SnapshotJob, StateMachine};

/// A state machine whose first apply blocks until the test lets it go, so
/// the Raft loop stands still while requests pile up.
struct Stuck {
    gate: Arc<Mutex<mpsc::Receiver<()>>>,
}

impl StateMachine for Stuck {
    fn apply(&mut self, _index: u64, _data: &[u8]) {
        let _ = self.gate.lock().unwrap().recv();
    }

    fn snapshot(&mut self) -> SnapshotJob {
        Box::new(Vec::new)
    }

    fn restore(&mut self, _index: u64, _data: &[u8]) -> Result<(), RestoreError> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_gets_through_a_full_request_queue() {
    let dir = tempfile::tempdir().unwrap();
    let members = vec![(1, "http://127.0.0.1:1".to_string())];
    let mut config = NodeConfig::new(1, members, dir.path().to_path_buf());
    config.tick_ms = 10;
    config.request_queue_len = 8;
    let (release, gate) = mpsc::channel();
    let node = Arc::new(
        RaftNode::start(
            config,
            Box::new(Stuck {
                gate: Arc::new(Mutex::new(gate)),
            }),
        )
        .unwrap(),
    );
    let consensus = node.consensus();
    let deadline = Instant::now() + common::WAIT;
    while consensus.status().leader_id.is_none() {
        assert!(Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The first proposal blocks the loop inside apply.
    consensus.propose(b"first".to_vec()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Twice as many proposals as the queue holds: the queue fills up and
    // the rest are refused with Busy at once.
    let waiting: Vec<_> = (0..16)
        .map(|_| {
            let filler = consensus.clone();
            tokio::spawn(async move { filler.propose(b"more".to_vec()).await })
        })
        .collect();
    while !waiting.iter().any(|task| task.is_finished()) {
        assert!(Instant::now() < deadline, "the request queue never filled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        consensus.propose(b"probe".to_vec()).await,
        Err(RaftError::Busy),
        "the queue is full"
    );
    let stopping = {
        let node = Arc::clone(&node);
        tokio::spawn(async move { node.shutdown().await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Let the loop go on: it must now see the shutdown.
    drop(release);
    let stopped = tokio::time::timeout(common::WAIT, stopping)
        .await
        .expect("shutdown got lost behind the full queue");
    assert!(stopped.unwrap().is_ok());
    for request in waiting {
        let _ = request.await;
    }
}
