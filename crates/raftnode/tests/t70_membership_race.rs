//! A membership change proposed on a follower while the leader has one
//! pending: raft-rs replaces it with an empty entry, and the caller must
//! learn that nothing changed instead of waiting for "outcome unknown".

mod common;

use common::TestCluster;
use raftnode::{MembershipChange, NodeConfig, RaftError};

fn slow_elections(config: &mut NodeConfig) {
    config.tick_ms = 20;
    // Frames are delayed below; elections must not start meanwhile.
    config.election_ticks = 50;
    config.request_timeout_ms = 5_000;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_a_follower_replaced_by_the_leader_is_answered_as_refused() {
    let cluster = TestCluster::start_with(3, slow_elections).await;
    let leader = cluster.leader().await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    cluster.applied_everywhere(&[1, 2, 3], b"before").await;

    // The leader's change stays pending while its appends are delayed.
    for id in (1..=3).filter(|id| *id != leader) {
        cluster
            .node(leader)
            .node
            .transport()
            .faults()
            .set_delay_ms(id, 400)
            .unwrap();
    }
    let on_leader = cluster.consensus(leader);
    let leaders_change = on_leader.change_membership(MembershipChange::AddNode {
        id: 4,
        peer_url: "http://127.0.0.1:1".into(),
    });
    let followers_change = async {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        cluster
            .consensus(follower)
            .change_membership(MembershipChange::AddNode {
                id: 5,
                peer_url: "http://127.0.0.1:2".into(),
            })
            .await
    };
    let (leaders, followers) = tokio::join!(leaders_change, followers_change);
    assert_eq!(leaders, Ok(()), "the leader's change applies");
    assert_eq!(
        followers,
        Err(RaftError::MembershipChangeInProgress),
        "the follower's change was replaced: nothing changed, and the caller is told so"
    );
    cluster.node(leader).node.transport().faults().heal_all();
    cluster.applied_everywhere(&[1, 2, 3], b"after").await;
    let mut members: Vec<u64> = cluster
        .consensus(follower)
        .status()
        .members
        .iter()
        .map(|m| m.id)
        .collect();
    members.sort();
    assert_eq!(members, vec![1, 2, 3, 4], "node 5 was never added");
}
