//! Learners, peer URL updates and published member attributes, in process.

mod common;

use std::time::{Duration, Instant};

use common::{Recorder, TestCluster, WAIT};
use raftnode::{MemberAttributes, MemberError, MembershipChange, NodeConfig, RaftError};

fn with_attributes(config: &mut NodeConfig) {
    config.tick_ms = 20;
    config.request_timeout_ms = 3_000;
    config.snapshot_count = 5;
    config.snapshot_log_percent = 0;
    config.catch_up_entries = 2;
    config.attributes = MemberAttributes {
        name: format!("member-{}", config.id),
        client_urls: vec![format!("http://client-{}:2379", config.id)],
    };
}

fn learners(cluster: &TestCluster, id: u64) -> Vec<u64> {
    cluster
        .consensus(id)
        .status()
        .members
        .iter()
        .filter(|m| m.is_learner)
        .map(|m| m.id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_does_not_count_for_quorum_and_is_promoted_only_in_sync() {
    let mut cluster = TestCluster::start_with(1, with_attributes).await;
    let leader = cluster.leader().await;
    assert_eq!(leader, 1);
    for i in 0..10u32 {
        cluster.propose_applied(1, &i.to_be_bytes()).await;
    }
    let learner = cluster.define();
    let url = cluster.members[learner as usize - 1].1.clone();
    let consensus = cluster.consensus(1);
    consensus
        .change_membership(MembershipChange::AddLearner {
            id: learner,
            peer_url: url.clone(),
        })
        .await
        .unwrap();
    assert_eq!(learners(&cluster, 1), vec![learner]);

    // The rules, checked before anything is proposed.
    let refused = [
        (
            MembershipChange::PromoteLearner { id: learner },
            MemberError::LearnerNotReady,
        ),
        (
            MembershipChange::AddLearner {
                id: 9,
                peer_url: "http://127.0.0.1:9".into(),
            },
            MemberError::TooManyLearners,
        ),
        (
            MembershipChange::AddNode {
                id: 9,
                peer_url: url.clone(),
            },
            MemberError::PeerUrlExists,
        ),
        (
            MembershipChange::AddNode {
                id: learner,
                peer_url: "http://127.0.0.1:9".into(),
            },
            MemberError::IdExists,
        ),
        (
            MembershipChange::PromoteLearner { id: 1 },
            MemberError::NotLearner,
        ),
        (
            MembershipChange::PromoteLearner { id: 9 },
            MemberError::NotFound,
        ),
        (
            MembershipChange::RemoveNode { id: 9 },
            MemberError::NotFound,
        ),
        (
            MembershipChange::RemoveNode { id: 1 },
            MemberError::LastVoter,
        ),
    ];
    for (change, error) in refused {
        assert_eq!(
            consensus.change_membership(change.clone()).await,
            Err(RaftError::Member(error)),
            "{change:?}"
        );
    }

    // The learner replicates; with it stopped, the lone voter still commits
    // (a learner is not part of any quorum).
    cluster.boot(learner, true, Recorder::default());
    cluster.converged(&[1, learner], 10).await;
    cluster.stop(learner).await;
    for i in 10..20u32 {
        cluster.propose_applied(1, &i.to_be_bytes()).await;
    }
    assert_eq!(
        consensus
            .change_membership(MembershipChange::PromoteLearner { id: learner })
            .await,
        Err(RaftError::Member(MemberError::LearnerNotReady)),
        "a stopped learner that missed entries is not in sync"
    );

    // Back up and caught up (through a snapshot: the log was compacted),
    // it is promoted.
    cluster.boot(learner, true, Recorder::default());
    let deadline = Instant::now() + WAIT;
    loop {
        match consensus
            .change_membership(MembershipChange::PromoteLearner { id: learner })
            .await
        {
            Ok(()) => break,
            Err(RaftError::Member(MemberError::LearnerNotReady)) => {
                assert!(Instant::now() < deadline, "learner never in sync");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("promotion failed: {e}"),
        }
    }
    assert!(learners(&cluster, 1).is_empty());
    let status = consensus.status();
    assert_eq!(
        status.members.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![1, learner]
    );
    // Each member published its name and client URLs; both know both.
    let deadline = Instant::now() + WAIT;
    for id in [1, learner] {
        loop {
            let members = cluster.consensus(id).status().members;
            if members.iter().all(|m| m.name == format!("member-{}", m.id)) {
                assert!(members
                    .iter()
                    .all(|m| m.client_urls == vec![format!("http://client-{}:2379", m.id)]));
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{id} never learnt the attributes: {members:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_asks_for_a_promotion_and_the_leader_refuses_it() {
    let mut cluster = TestCluster::start_with(2, with_attributes).await;
    let leader = cluster.leader().await;
    let follower = 3 - leader;
    let learner = cluster.define();
    let url = cluster.members[learner as usize - 1].1.clone();
    cluster
        .consensus(follower)
        .change_membership(MembershipChange::AddLearner {
            id: learner,
            peer_url: url,
        })
        .await
        .unwrap();
    assert_eq!(learners(&cluster, follower), vec![learner]);
    // Only the leader knows the learner's progress: the follower's request
    // reaches it through Raft and comes back refused.
    assert_eq!(
        cluster
            .consensus(follower)
            .change_membership(MembershipChange::PromoteLearner { id: learner })
            .await,
        Err(RaftError::Member(MemberError::LearnerNotReady))
    );
    assert_eq!(learners(&cluster, leader), vec![learner]);
    // A learner never campaigns: the voters keep their leader while it runs.
    cluster.boot(learner, true, Recorder::default());
    cluster.propose_applied(leader, b"after").await;
    cluster.converged(&[leader, follower, learner], 1).await;
    assert_ne!(cluster.consensus(learner).status().leader_id, Some(learner));
    assert_eq!(
        cluster
            .consensus(learner)
            .status()
            .members
            .iter()
            .find(|m| m.id == learner)
            .map(|m| m.is_learner),
        Some(true)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_url_update_survives_snapshots_and_restarts() {
    let mut cluster = TestCluster::start_with(3, with_attributes).await;
    let leader = cluster.leader().await;
    let other = (1..=3).find(|id| *id != leader).unwrap();
    let taken = cluster.members[leader as usize - 1].1.clone();
    assert_eq!(
        cluster
            .consensus(leader)
            .change_membership(MembershipChange::UpdatePeerUrl {
                id: other,
                peer_url: taken,
            })
            .await,
        Err(RaftError::Member(MemberError::PeerUrlExists))
    );
    // The same URL written differently: still the member's own address.
    let own = cluster.members[other as usize - 1].1.clone();
    let new_url = own.replace("127.0.0.1", "localhost");
    cluster
        .consensus(leader)
        .change_membership(MembershipChange::UpdatePeerUrl {
            id: other,
            peer_url: new_url.clone(),
        })
        .await
        .unwrap();
    // Enough entries for a snapshot and a compaction on every member.
    for i in 0..20u32 {
        cluster.propose_applied(leader, &i.to_be_bytes()).await;
    }
    cluster.converged(&[1, 2, 3], 20).await;
    let url_of = |cluster: &TestCluster, at: u64| {
        cluster
            .consensus(at)
            .status()
            .members
            .iter()
            .find(|m| m.id == other)
            .map(|m| m.peer_url.clone())
    };
    for id in 1..=3 {
        assert_eq!(url_of(&cluster, id), Some(new_url.clone()), "on {id}");
        assert!(
            cluster.consensus(id).status().snapshot_index > 1,
            "no snapshot on {id}"
        );
    }
    // A restart starts from the snapshot: the URL and attributes are there.
    cluster.stop(leader).await;
    cluster.boot(leader, false, Recorder::default());
    let deadline = Instant::now() + WAIT;
    while cluster.consensus(leader).status().members.is_empty() {
        assert!(Instant::now() < deadline, "no status after the restart");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Straight from the snapshot and the log, before any new publication.
    assert_eq!(url_of(&cluster, leader), Some(new_url));
    let members = cluster.consensus(leader).status().members;
    assert!(
        members.iter().all(|m| m.name == format!("member-{}", m.id)),
        "{members:?}"
    );
}
