//! raftexample parity: writes through any node, reads everywhere, the API's
//! statuses on a real cluster.

mod common;

use common::{Cluster, FAST};
use reqwest::StatusCode;

/// raftexample's TestProposeOnCommit: proposals from every node of three
/// are committed on all of them.
#[test]
fn proposals_from_every_node_are_committed_on_all() {
    let cluster = Cluster::start(3, FAST);
    cluster.leader();
    std::thread::scope(|scope| {
        for id in 1..=3u64 {
            let cluster = &cluster;
            scope.spawn(move || {
                for i in 0..20 {
                    cluster.put_ok(id, &format!("/n{id}-k{i}"), &format!("v{id}-{i}"));
                }
            });
        }
    });
    for reader in 1..=3 {
        for writer in 1..=3 {
            for i in 0..20 {
                assert_eq!(
                    cluster.get_ok(reader, &format!("/n{writer}-k{i}")),
                    Some(format!("v{writer}-{i}")),
                    "node {reader} misses a write made through node {writer}"
                );
            }
        }
    }
}

/// A PUT acknowledged by one node is visible to a linearizable GET on any
/// other node right away (raftexample's reads could be stale).
#[test]
fn put_then_get_anywhere_is_linearizable() {
    let cluster = Cluster::start(3, FAST);
    let leader = cluster.leader();
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    for i in 0..30 {
        let key = format!("/key-{i}");
        cluster.put_ok(follower, &key, &format!("value-{i}"));
        for reader in 1..=3 {
            assert_eq!(
                cluster.get(reader, &key).unwrap(),
                (StatusCode::OK, format!("value-{i}"))
            );
        }
    }
    let (status, _) = cluster.get(leader, "/missing").unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[test]
fn api_errors_have_their_statuses() {
    let cluster = Cluster::start(1, FAST);
    cluster.leader();
    let http = cluster.http();
    let patch = http.patch(cluster.url(1, "/k")).send().unwrap();
    assert_eq!(patch.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(patch.headers().get("allow").is_some(), "405 carries Allow");

    let big = vec![b'x'; 1_572_864 + 1];
    let put = http.put(cluster.url(1, "/big")).body(big).send().unwrap();
    assert_eq!(put.status(), StatusCode::PAYLOAD_TOO_LARGE);

    for (path, body) in [
        ("/abc", "http://127.0.0.1:1"),
        ("/0", "http://127.0.0.1:1"),
        ("/4", "not a url"),
    ] {
        let post = http.post(cluster.url(1, path)).body(body).send().unwrap();
        assert_eq!(post.status(), StatusCode::BAD_REQUEST, "POST {path} {body}");
    }
    let delete = http.delete(cluster.url(1, "/7")).send().unwrap();
    assert_eq!(
        delete.status(),
        StatusCode::BAD_REQUEST,
        "removing a non-member"
    );

    let status = cluster.status(1).unwrap();
    assert_eq!(status.id, 1);
    assert_eq!(status.leader_id, Some(1));
}

/// Without a quorum there is no leader: writes get 503 with a message, and
/// nothing is acknowledged.
#[test]
fn without_quorum_writes_get_503() {
    let mut cluster = Cluster::new(FAST);
    for id in 1..=3 {
        cluster.define_node(id, &[]);
    }
    cluster.spawn(1, false);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let response = cluster
        .http()
        .put(cluster.url(1, "/k"))
        .body("v")
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        !response.text().unwrap().is_empty(),
        "503 carries a message"
    );
}
