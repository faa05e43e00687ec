//! Membership changes and partitions, in process.

mod common;

use std::time::Duration;

use common::{Recorder, TestCluster};
use raftnode::{MembershipChange, RaftError, StopReason};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joined_node_catches_up_and_a_removed_node_stops() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    for i in 0..10u32 {
        cluster.propose_applied(leader, &i.to_be_bytes()).await;
    }
    let new_id = cluster.define();
    let url = cluster.members[new_id as usize - 1].1.clone();
    for id in 1..=3 {
        cluster
            .node(id)
            .node
            .transport()
            .add_peer(new_id, &url)
            .unwrap();
    }
    cluster
        .consensus(leader)
        .change_membership(MembershipChange::AddNode {
            id: new_id,
            peer_url: url,
        })
        .await
        .unwrap();
    cluster.boot(new_id, true, Recorder::default());
    cluster.converged(&[leader, new_id], 10).await;
    assert_eq!(cluster.consensus(leader).status().members.len(), 4);

    cluster
        .consensus(leader)
        .change_membership(MembershipChange::RemoveNode { id: new_id })
        .await
        .unwrap();
    let removed = cluster.node(new_id).node.clone();
    tokio::time::timeout(common::WAIT, removed.stopped())
        .await
        .expect("removed node stops");
    assert_eq!(removed.shutdown().await.unwrap(), StopReason::Removed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_requests_are_validated_and_serialised() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let consensus = cluster.consensus(leader);
    let invalid = [
        MembershipChange::AddNode {
            id: 2,
            peer_url: "http://127.0.0.1:1".into(),
        },
        MembershipChange::AddNode {
            id: 9,
            peer_url: "not a url".into(),
        },
        MembershipChange::RemoveNode { id: 9 },
    ];
    for change in invalid {
        assert!(
            matches!(
                consensus.change_membership(change.clone()).await,
                Err(RaftError::InvalidMembership(_) | RaftError::Member(_))
            ),
            "{change:?} accepted"
        );
    }
    // With the leader cut off, a change cannot commit; a second request
    // must be refused rather than silently replaced by raft-rs.
    cluster.isolate(leader);
    let pending = {
        let consensus = consensus.clone();
        tokio::spawn(async move {
            consensus
                .change_membership(MembershipChange::AddNode {
                    id: 7,
                    peer_url: "http://127.0.0.1:7".into(),
                })
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = consensus
        .change_membership(MembershipChange::RemoveNode { id: 3 })
        .await;
    assert!(
        matches!(
            second,
            Err(RaftError::MembershipChangeInProgress) | Err(RaftError::NoLeader)
        ),
        "second change while one is pending: {second:?}"
    );
    let first = pending.await.unwrap();
    assert!(
        first.is_err(),
        "a change without quorum cannot succeed: {first:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_leader_is_replaced_and_the_cluster_converges_after_healing() {
    let cluster = TestCluster::start(3).await;
    let old = cluster.leader().await;
    cluster.propose_applied(old, b"before").await;
    cluster.isolate(old);
    let rest: Vec<u64> = (1..=3).filter(|id| *id != old).collect();
    let new = cluster.leader_among(&rest).await;
    assert_ne!(new, old);
    cluster.propose_applied(new, b"during").await;
    // The old leader cannot commit anything on its own.
    let stale = cluster.consensus(old).propose(b"lost".to_vec()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !cluster
            .node(old)
            .recorder
            .payloads()
            .contains(&b"lost".to_vec()),
        "isolated leader applied a write ({stale:?})"
    );
    cluster.heal_all();
    cluster.propose_applied(new, b"after").await;
    let log = cluster.converged(&[1, 2, 3], 3).await;
    assert!(!log.contains(&b"lost".to_vec()));
    assert!(log.contains(&b"during".to_vec()) && log.contains(&b"after".to_vec()));
}
