//! Crafted peer input, POSTed over real HTTP to a follower's peer port with
//! the leader's identity: refused, and the follower keeps running and
//! applying.

mod common;

use common::{post_as_peer, TestCluster};
use raft::eraftpb::{Entry, Message, MessageType, Snapshot};

/// A message from `leader` to `follower` in `term`.
fn from_leader(msg_type: MessageType, leader: u64, follower: u64, term: u64) -> Message {
    let mut msg = Message::default();
    msg.set_msg_type(msg_type);
    (msg.from, msg.to, msg.term) = (leader, follower, term);
    msg
}

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crafted_frames_from_the_leader_do_not_stop_a_follower() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    cluster.applied_everywhere(&[1, 2, 3], b"before").await;
    let term = cluster.consensus(leader).status().term;
    let url = cluster.members[follower as usize - 1].1.clone();

    let mut heartbeat = from_leader(MessageType::MsgHeartbeat, leader, follower, term);
    heartbeat.commit = 1 << 40;
    let mut far_append = from_leader(MessageType::MsgAppend, leader, follower, term);
    (far_append.index, far_append.log_term) = (u64::MAX - 1, 0);
    let mut index_zero = from_leader(MessageType::MsgAppend, leader, follower, term);
    // u64::MAX + 1 wraps to 0 in unchecked release arithmetic.
    (index_zero.index, index_zero.log_term) = (u64::MAX, 0);
    index_zero.entries = vec![entry(0, term)];
    let mut overflow = from_leader(MessageType::MsgAppend, leader, follower, term);
    (overflow.index, overflow.log_term) = (u64::MAX - 1, term);
    overflow.entries = vec![entry(u64::MAX, term), entry(0, term)];
    overflow.commit = 1 << 40;

    let frames = [
        ("heartbeat with commit 2^40", heartbeat),
        ("append at 2^64-2 with log term 0", far_append),
        ("append with an entry at index 0", index_zero),
        ("append whose indices overflow", overflow),
    ];
    for (i, (what, msg)) in frames.into_iter().enumerate() {
        let frame = transport::wire::encode_frame(&[msg]);
        let status = post_as_peer(
            &url,
            transport::wire::PATH_MESSAGES,
            leader,
            follower,
            &frame,
        )
        .await;
        assert_eq!(status, 204, "{what}: the transport hands it to the node");
        let marker = format!("after frame {i}");
        cluster
            .applied_everywhere(&[1, 2, 3], marker.as_bytes())
            .await;
        assert!(
            !cluster.has_stopped(follower).await,
            "{what}: the follower stopped"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_with_a_garbage_envelope_is_refused_and_the_follower_runs_on() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    cluster.applied_everywhere(&[1, 2, 3], b"before").await;
    let status = cluster.consensus(follower).status();
    let url = cluster.members[follower as usize - 1].1.clone();

    for (what, data) in [
        ("garbage", vec![0xff; 64]),
        // Field 1 (version) = 9: a newer envelope than this node knows.
        ("a newer envelope version", vec![0x08, 0x09]),
    ] {
        let mut msg = from_leader(MessageType::MsgSnapshot, leader, follower, status.term);
        let mut snapshot = Snapshot {
            data,
            ..Default::default()
        };
        snapshot.mut_metadata().index = status.last_index + 100;
        snapshot.mut_metadata().term = status.term;
        snapshot.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
        msg.snapshot = Some(snapshot);
        let (head, data) = transport::wire::encode_snapshot(msg);
        let body = [head.as_ref(), data.as_ref()].concat();
        let code = post_as_peer(
            &url,
            transport::wire::PATH_SNAPSHOT,
            leader,
            follower,
            &body,
        )
        .await;
        assert_eq!(code, 204, "{what}: the transport hands it to the node");
        cluster
            .applied_everywhere(&[1, 2, 3], what.as_bytes())
            .await;
        assert!(
            !cluster.has_stopped(follower).await,
            "{what}: the follower stopped"
        );
    }
    // Nothing of it reached the disk: the follower restarts and catches up.
    cluster.stop(follower).await;
    let recorder = common::Recorder::default();
    cluster.boot(follower, false, recorder);
    cluster
        .applied_everywhere(&[1, 2, 3], b"after restart")
        .await;
}
