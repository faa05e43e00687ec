//! Replication, ordering, read barriers and restarts, in process.

mod common;

use common::{Recorder, TestCluster};
use raftnode::RaftError;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_apply_the_same_entries_in_the_same_order() {
    let cluster = TestCluster::start(3).await;
    cluster.leader().await;
    for i in 0..60u32 {
        let through = 1 + u64::from(i % 3);
        cluster.propose_applied(through, &i.to_be_bytes()).await;
    }
    let log = cluster.converged(&[1, 2, 3], 60).await;
    assert_eq!(log.len(), 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_barrier_on_a_follower_waits_for_committed_writes() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    for i in 0..20u32 {
        cluster.propose_applied(leader, &i.to_be_bytes()).await;
        // Everything the leader applied is applied on the follower once
        // its read barrier returns.
        cluster.consensus(follower).read_barrier().await.unwrap();
        assert!(
            cluster
                .node(follower)
                .recorder
                .payloads()
                .contains(&i.to_be_bytes().to_vec()),
            "read barrier returned before entry {i} was applied"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_quorum_refuses_proposals_and_reads() {
    let mut cluster = TestCluster::start(3).await;
    cluster.leader().await;
    cluster.stop(2).await;
    cluster.stop(3).await;
    // Node 1 loses its leader (check quorum) and then refuses everything.
    let deadline = std::time::Instant::now() + common::WAIT;
    loop {
        match cluster.consensus(1).propose(b"x".to_vec()).await {
            Err(RaftError::NoLeader) | Err(RaftError::ProposalDropped(_)) => break,
            _ if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await
            }
            other => panic!("a minority node accepted a proposal: {other:?}"),
        }
    }
    let read = cluster.consensus(1).read_barrier().await;
    assert!(
        matches!(
            read,
            Err(RaftError::NoLeader) | Err(RaftError::Timeout { .. })
        ),
        "read barrier without quorum: {read:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_restarts_from_disk_with_its_state() {
    let mut cluster = TestCluster::start(3).await;
    cluster.leader().await;
    for i in 0..30u32 {
        cluster.propose_applied(1, &i.to_be_bytes()).await;
    }
    let before = cluster.converged(&[1, 2, 3], 30).await;
    for id in 1..=3 {
        cluster.stop(id).await;
    }
    for id in 1..=3 {
        cluster.boot(id, false, Recorder::default());
    }
    cluster.leader().await;
    let after = cluster.converged(&[1, 2, 3], 30).await;
    assert_eq!(&after[..30], &before[..30], "replayed log differs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_compact_the_log_and_catch_up_a_stopped_follower() {
    let mut cluster = TestCluster::start_with(3, |config| {
        config.tick_ms = 20;
        config.snapshot_count = 25;
        config.catch_up_entries = 5;
    })
    .await;
    let leader = cluster.leader().await;
    let lagging = (1..=3).find(|id| *id != leader).unwrap();
    cluster.stop(lagging).await;
    for i in 0..100u32 {
        cluster.propose_applied(leader, &i.to_be_bytes()).await;
    }
    let status = cluster.consensus(leader).status();
    assert!(status.snapshot_index >= 75, "no snapshot: {status:?}");
    cluster.boot(lagging, false, Recorder::default());
    let others: Vec<u64> = (1..=3).collect();
    let log = cluster.converged(&others, 100).await;
    assert_eq!(log.len(), 100);
}

/// A node killed after creating its WAL but before writing the bootstrap
/// snapshot's marker starts again as a fresh member instead of waiting
/// forever for a leader that would have to include it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_during_bootstrap_bootstraps_again() {
    let dir = tempfile::tempdir().unwrap();
    let members = vec![(1, "http://127.0.0.1:1".to_string())];
    let mut config = raftnode::NodeConfig::new(1, members, dir.path().to_path_buf());
    config.tick_ms = 10;
    let metadata = wal::Metadata {
        node_id: 1,
        cluster_id: config.cluster_id,
    };
    wal::Wal::create(&config.wal_dir, metadata, wal::WalConfig::default())
        .unwrap()
        .close()
        .unwrap();
    let recorder = Recorder::default();
    let node = raftnode::RaftNode::start(config, Box::new(recorder.clone())).unwrap();
    assert_eq!(node.start_kind(), raftnode::StartKind::Fresh);
    let consensus = node.consensus();
    let deadline = std::time::Instant::now() + common::WAIT;
    while consensus.status().leader_id.is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "no leader after re-bootstrap"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    consensus.propose(b"works".to_vec()).await.unwrap();
    consensus.read_barrier().await.unwrap();
    assert_eq!(recorder.payloads(), vec![b"works".to_vec()]);
    node.shutdown().await.unwrap();
}
