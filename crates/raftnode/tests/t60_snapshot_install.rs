//! Installing a snapshot from the leader: nothing is persisted before the
//! snapshot decoded and restored.

mod common;

use std::time::{Duration, Instant};

use common::{Recorder, TestCluster, WAIT};
use raftnode::NodeConfig;

fn snapshot_often(config: &mut NodeConfig) {
    config.tick_ms = 20;
    config.request_timeout_ms = 3_000;
    config.snapshot_count = 10;
    config.snapshot_log_percent = 0;
    config.catch_up_entries = 3;
}

/// Indices of the snapshot files in `dir`.
fn snapshot_files(dir: &std::path::Path) -> Vec<u64> {
    let mut indices: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|entry| {
            let name = entry.unwrap().file_name().into_string().unwrap();
            let stem = name.strip_suffix(".snap")?;
            u64::from_str_radix(stem.split('-').nth(1)?, 16).ok()
        })
        .collect();
    indices.sort();
    indices
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_that_fails_to_restore_is_not_persisted_and_a_restart_recovers() {
    let mut cluster = TestCluster::start_with(3, snapshot_often).await;
    let leader = cluster.leader().await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    cluster.applied_everywhere(&[1, 2, 3], b"before").await;
    let follower_applied = cluster.consensus(follower).status().applied_index;
    cluster.stop(follower).await;

    // The leader compacts past the follower's log: it needs a snapshot.
    for i in 0..40 {
        cluster
            .propose_applied(leader, format!("while down {i}").as_bytes())
            .await;
    }
    let recorder = Recorder::default();
    // The follower restores its own snapshot at start; the leader's (above
    // what it applied) fails once.
    *recorder.restore_failures.lock() = (follower_applied, 1);
    cluster.boot(follower, false, recorder.clone());
    let deadline = Instant::now() + WAIT;
    while !cluster.has_stopped(follower).await {
        assert!(
            Instant::now() < deadline,
            "the failed restore did not stop the node"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(recorder.restore_failures.lock().1, 0, "the restore failed");
    let snap_dir = cluster.data_dir(follower).join("snap");
    let persisted = snapshot_files(&snap_dir);
    assert!(
        persisted.iter().all(|index| *index <= follower_applied),
        "a snapshot that did not restore was persisted: {persisted:?} (applied {follower_applied})"
    );
    let result = cluster.node(follower).node.shutdown().await;
    assert!(result.is_err(), "the loop ended with the restore error");

    // The next start comes back, installs the snapshot and converges.
    cluster.stop(follower).await;
    cluster.boot(follower, false, Recorder::default());
    cluster
        .applied_everywhere(&[1, 2, 3], b"after restart")
        .await;
    let count = cluster.node(leader).recorder.payloads().len();
    cluster.converged(&[1, 2, 3], count).await;
}
