//! A follower that installs the leader's snapshot inside its own divergent log restarts.

mod common;

use std::time::{Duration, Instant};

use common::{Recorder, TestCluster, WAIT};

/// Proposals fired at the isolated leader: more than the majority writes, so its divergent
/// log reaches past the snapshot the new leader later sends it.
const ISOLATED_PROPOSALS: u32 = 150;
/// Writes committed by the majority while the leader is isolated.
const MAJORITY_WRITES: u32 = 100;

/// An isolated leader appends proposals nobody else sees; the majority moves on, snapshots
/// and compacts (small `catch_up_entries`), so after the heal the old leader gets a snapshot
/// at an index its own log holds with another term. It must install it, restart from its
/// data directory and converge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_leader_restarts_after_a_snapshot_inside_its_divergent_log() {
    let mut cluster = TestCluster::start_with(3, |config| {
        config.tick_ms = 20;
        config.request_timeout_ms = 3_000;
        config.snapshot_count = 20;
        config.snapshot_log_percent = 0;
        config.catch_up_entries = 5;
    })
    .await;
    let old = cluster.leader().await;
    cluster.propose_applied(old, b"before").await;
    cluster.isolate(old);
    let consensus = cluster.consensus(old);
    let proposals: Vec<_> = (0..ISOLATED_PROPOSALS)
        .map(|i| {
            let consensus = consensus.clone();
            tokio::spawn(async move { consensus.propose(format!("lost-{i}").into_bytes()).await })
        })
        .collect();
    let majority: Vec<u64> = (1..=3).filter(|id| *id != old).collect();
    let new = cluster.leader_among(&majority).await;
    for i in 0..MAJORITY_WRITES {
        cluster
            .propose_applied(new, format!("kept-{i}").as_bytes())
            .await;
    }
    let mut appended = 0;
    for proposal in proposals {
        // Ok: handed to Raft (appended to the isolated leader's log), not committed.
        appended += usize::from(proposal.await.expect("proposal task").is_ok());
    }
    assert!(
        appended > MAJORITY_WRITES as usize,
        "only {appended} proposals reached the isolated leader's log"
    );
    let old_last = cluster.consensus(old).status();
    let new_status = cluster.consensus(new).status();
    assert!(
        new_status.snapshot_index > 20,
        "the majority compacted: {new_status:?}"
    );
    tracing::info!(?old_last, ?new_status, "healing");

    cluster.heal_all();
    // The old leader catches up through the new leader's snapshot.
    let deadline = Instant::now() + WAIT;
    while cluster.consensus(old).status().snapshot_index <= 1 {
        assert!(Instant::now() < deadline, "no snapshot reached node {old}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let writes = 1 + MAJORITY_WRITES as usize;
    let all: Vec<u64> = (1..=3).collect();
    let before = cluster.converged(&all, writes).await;

    cluster.stop(old).await;
    cluster.boot(old, false, Recorder::default());
    cluster.propose_applied(new, b"after").await;
    let after = cluster.converged(&all, writes + 1).await;
    assert_eq!(after[..before.len()], before[..]);
    assert!(
        after.iter().all(|p| !p.starts_with(b"lost-")),
        "an uncommitted proposal was applied"
    );
}
