//! Restarts, snapshots, membership: raftexample's scenarios and more.

mod common;

use std::time::Duration;

use common::{Cluster, FAST, WAIT};

fn fast_snapshots() -> Vec<&'static str> {
    let mut args = FAST.to_vec();
    args.extend(["--snapshot-count", "40", "--catch-up-entries", "10"]);
    args
}

/// The whole cluster stops (SIGTERM) and restarts from its data dirs.
#[test]
fn whole_cluster_restarts_from_disk() {
    let mut cluster = Cluster::start(3, FAST);
    cluster.leader();
    for i in 0..50 {
        cluster.put_ok(1 + i % 3, &format!("/k{i}"), &format!("v{i}"));
    }
    for id in 1..=3 {
        assert!(
            cluster.terminate(id).success(),
            "node {id} exits 0 on SIGTERM"
        );
    }
    for id in 1..=3 {
        cluster.spawn(id, false);
    }
    cluster.leader();
    for i in 0..50 {
        assert_eq!(
            cluster.get_ok(1 + (i + 1) % 3, &format!("/k{i}")),
            Some(format!("v{i}"))
        );
    }
}

/// etcd #14370: a single node acknowledges a write and is killed at once;
/// the write must survive.
#[test]
fn single_node_crash_right_after_ack_loses_nothing() {
    let mut cluster = Cluster::start(1, FAST);
    cluster.leader();
    for round in 0..5 {
        let key = format!("/crash-{round}");
        cluster.put_ok(1, &key, "acked");
        cluster.kill(1);
        cluster.spawn(1, false);
        cluster.leader();
        assert_eq!(
            cluster.get_ok(1, &key),
            Some("acked".into()),
            "round {round}"
        );
    }
}

/// Snapshots are taken every --snapshot-count entries and used on restart.
#[test]
fn snapshot_is_taken_and_used_on_restart() {
    let mut cluster = Cluster::start(1, &fast_snapshots());
    cluster.leader();
    for i in 0..120 {
        cluster.put_ok(1, &format!("/s{i}"), &format!("v{i}"));
    }
    let status = cluster.status(1).unwrap();
    assert!(
        status.snapshot_index >= 40,
        "no snapshot after 120 writes: {status:?}"
    );
    assert!(cluster.terminate(1).success());
    cluster.spawn(1, false);
    cluster.leader();
    for i in 0..120 {
        assert_eq!(cluster.get_ok(1, &format!("/s{i}")), Some(format!("v{i}")));
    }
    assert!(
        cluster
            .log(1)
            .contains("restarting from the data directory"),
        "second start is a restart"
    );
}

/// A follower that misses more than the catch-up entries is brought back by
/// a snapshot from the leader.
#[test]
fn lagging_follower_catches_up_by_snapshot() {
    let mut cluster = Cluster::start(3, &fast_snapshots());
    let leader = cluster.leader();
    let lagging = (1..=3).find(|id| *id != leader).unwrap();
    cluster.kill(lagging);
    let writer = (1..=3).find(|id| *id != lagging).unwrap();
    for i in 0..150 {
        cluster.put_ok(writer, &format!("/lag{i}"), &format!("v{i}"));
    }
    let applied = cluster.status(writer).unwrap().applied_index;
    cluster.spawn(lagging, false);
    cluster.wait_applied(lagging, applied);
    for i in 0..150 {
        assert_eq!(
            cluster.get_ok(lagging, &format!("/lag{i}")),
            Some(format!("v{i}"))
        );
    }
    assert!(
        cluster.log(lagging).contains("installing snapshot"),
        "the lagging node caught up without a snapshot: {}",
        cluster.log(lagging)
    );
}

/// A fourth node added with POST /4 and started with --join catches up, and
/// membership survives its restart.
#[test]
fn added_node_catches_up_and_survives_restart() {
    let mut cluster = Cluster::new(&fast_snapshots());
    for id in 1..=3 {
        cluster.define_node(id, &[]);
    }
    for id in 1..=3 {
        cluster.spawn(id, false);
    }
    // As in raftexample's instructions: the initial members know three
    // URLs; the new node is started with all four and --join.
    cluster.define_node(4, &[]);
    let leader = cluster.leader();
    for i in 0..60 {
        cluster.put_ok(leader, &format!("/a{i}"), &format!("v{i}"));
    }
    let url = cluster.node(4).unwrap().peer_url.clone();
    let response = cluster
        .http()
        .post(cluster.url(leader, "/4"))
        .body(url)
        .send()
        .unwrap();
    let status = response.status();
    let body = response.text().unwrap();
    assert_eq!(status, reqwest::StatusCode::NO_CONTENT, "{body}");
    cluster.spawn(4, true);
    let applied = cluster.status(leader).unwrap().applied_index;
    cluster.wait_applied(4, applied);
    for i in 0..60 {
        assert_eq!(cluster.get_ok(4, &format!("/a{i}")), Some(format!("v{i}")));
    }
    let members = cluster.status(4).unwrap().members.len();
    assert_eq!(members, 4);
    assert!(cluster.terminate(4).success());
    cluster.spawn(4, false);
    cluster.put_ok(4, "/after-restart", "yes");
    assert_eq!(cluster.get_ok(4, "/after-restart"), Some("yes".into()));
}

/// DELETE /<id> removes a member; the removed process exits by itself.
#[test]
fn removed_node_exits() {
    let mut cluster = Cluster::start(3, FAST);
    let leader = cluster.leader();
    let victim = (1..=3).find(|id| *id != leader).unwrap();
    let response = cluster
        .http()
        .delete(cluster.url(leader, &format!("/{victim}")))
        .send()
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::NO_CONTENT);
    let status = cluster
        .wait_exit(victim, WAIT)
        .unwrap_or_else(|| panic!("removed node {victim} kept running"));
    assert!(status.success(), "removed node exits cleanly: {status:?}");
    assert!(cluster.log(victim).contains("removed from the cluster"));
    cluster.put_ok(leader, "/still", "works");
    let members = cluster.status(leader).unwrap().members.len();
    assert_eq!(members, 2);
}

/// raftexample's TestCloseProposerBeforeReplay and TestCloseProposerInflight:
/// stopping right after start, or with writes in flight, exits cleanly.
#[test]
fn stopping_before_replay_and_while_in_flight_exits_cleanly() {
    let mut cluster = Cluster::start(1, FAST);
    // As soon as the client port answers: the Raft loop may still be
    // replaying or electing.
    cluster.wait_listening(1);
    assert!(cluster.terminate(1).success(), "stop right after start");
    cluster.spawn(1, false);
    cluster.leader();
    std::thread::scope(|scope| {
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let cluster = &cluster;
                scope.spawn(move || {
                    for i in 0..200 {
                        if cluster.put(1, &format!("/w{w}-{i}"), "v").is_err() {
                            break;
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        let node = cluster.pid(1).unwrap();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &node.to_string()])
            .status();
        for writer in writers {
            let _ = writer.join();
        }
    });
    let status = cluster
        .wait_exit(1, WAIT)
        .expect("node exits on SIGTERM with writes in flight");
    assert!(status.success());
}
