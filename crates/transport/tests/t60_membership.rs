//! Peers at runtime: add, update the URL, remove; bad URLs are errors; shutdown.

mod common;

use common::{heartbeat, start_node, test_config, wait_until};
use transport::{Transport, TransportConfig, TransportError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_peer_url_moves_traffic_and_remove_stops_it() {
    let n1 = start_node(test_config(1)).await;
    let old = start_node(test_config(2)).await;
    let new = start_node(test_config(2)).await;
    n1.transport.add_peer(2, &old.url).unwrap();
    n1.transport.send(vec![heartbeat(1, 2, 1)]);
    let rec_old = old.recorder.clone();
    wait_until("old URL served", || rec_old.count_from(1) == 1).await;

    n1.transport.update_peer(2, &new.url).unwrap();
    n1.transport.send(vec![heartbeat(1, 2, 2)]);
    let rec_new = new.recorder.clone();
    wait_until("new URL served", || rec_new.count_from(1) == 1).await;
    assert_eq!(rec_old.count_from(1), 1, "nothing more to the old URL");
    assert_eq!(
        n1.transport.stats().peers[&2].url.as_deref(),
        Some(new.url.as_str())
    );

    n1.transport.remove_peer(2);
    assert_eq!(n1.transport.peer_ids(), Vec::<u64>::new());
    n1.transport.send(vec![heartbeat(1, 2, 3)]);
    assert!(n1.recorder.was_reported_unreachable(2));
    assert_eq!(
        n1.transport.update_peer(2, &new.url),
        Err(TransportError::UnknownPeer(2))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_urls_and_ids_are_errors() {
    let n1 = start_node(test_config(1)).await;
    for url in [
        "",
        "not a url",
        "https://127.0.0.1:1",
        "http://",
        "http://h:1/path",
        "ftp://h:1",
    ] {
        let err = n1.transport.add_peer(2, url).unwrap_err();
        assert!(
            matches!(err, TransportError::InvalidUrl { .. }),
            "{url:?}: {err}"
        );
    }
    assert_eq!(
        n1.transport.add_peer(0, "http://127.0.0.1:1"),
        Err(TransportError::ZeroPeerId)
    );
    n1.transport.add_peer(1, "http://127.0.0.1:1").unwrap();
    assert!(n1.transport.peer_ids().is_empty(), "own id is not a peer");
    n1.transport.add_peer(2, "http://localhost:9").unwrap();
    n1.transport.add_peer(2, "http://localhost:10").unwrap();
    assert_eq!(
        n1.transport.stats().peers[&2].url.as_deref(),
        Some("http://localhost:10")
    );
}

#[test]
fn membership_calls_work_without_a_runtime_context() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let recorder = std::sync::Arc::new(common::Recorder::default());
    let transport =
        Transport::try_new(test_config(1), recorder.clone(), runtime.handle().clone()).unwrap();
    // This thread has no runtime context.
    transport.add_peer(2, "http://127.0.0.1:1").unwrap();
    transport.send(vec![heartbeat(1, 2, 0)]);
    transport.update_peer(2, "http://127.0.0.1:2").unwrap();
    transport.remove_peer(2);
    assert_eq!(transport.peer_ids(), Vec::<u64>::new());
    runtime.block_on(transport.shutdown());
    assert_eq!(
        transport.add_peer(3, "http://127.0.0.1:1"),
        Err(TransportError::ShutDown)
    );
}

#[test]
fn invalid_config_is_refused() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let recorder = std::sync::Arc::new(common::Recorder::default());
    let mut bad = TransportConfig::new(0, 1);
    assert!(Transport::try_new(bad.clone(), recorder.clone(), runtime.handle().clone()).is_err());
    bad.node_id = 1;
    bad.max_frame_bytes = 10;
    assert!(matches!(
        bad.validate(),
        Err(TransportError::InvalidConfig(_))
    ));
    assert!(TransportConfig::new(1, 1).validate().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_sending() {
    let n1 = start_node(test_config(1)).await;
    let n2 = start_node(test_config(2)).await;
    n1.transport.add_peer(2, &n2.url).unwrap();
    n1.transport.shutdown().await;
    assert!(n1.transport.peer_ids().is_empty());
    n1.transport.send(vec![heartbeat(1, 2, 1)]);
    assert!(n1.recorder.was_reported_unreachable(2));
    assert_eq!(n2.recorder.count_from(1), 0);
}

/// Suspected (confirmed): a member that applied the removal of node 3 but
/// not yet its re-addition answers the new node 3 with 410, and node 3
/// stopped itself although it is a member. Node 1 plays the lagging member.
/// The 410 now carries the index of the removal, so the node can see that
/// it applied entries past it (raftnode ignores such a report), and no
/// unconditional removal is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_member_does_not_stop_a_re_added_node() {
    let n1 = common::start_node(common::test_config(1)).await;
    let n3 = common::start_node(common::test_config(3)).await;
    n1.transport.add_peer(3, &n3.url).unwrap();
    // Node 1 applied the removal of 3 at index 10 ...
    n1.transport.remove_peer_at(3, 10);
    // ... while the cluster re-added id 3 (a fresh node) at a later index,
    // which node 1 has not applied yet. The new node 3 talks to node 1.
    n3.transport.add_peer(1, &n1.url).unwrap();
    n3.transport.send(vec![common::heartbeat(3, 1, 1)]);
    common::wait_until("node 1 answered", || {
        n3.transport.stats().peers[&1].msgs_dropped == 1
    })
    .await;
    assert_eq!(
        *n3.recorder.removed.lock(),
        Vec::<u64>::new(),
        "the re-added node was told, without condition, to stop"
    );
    assert_eq!(*n3.recorder.removed_at.lock(), vec![(1, Some(10))]);

    // A removal of unknown index still reports without condition.
    n1.transport.add_peer(3, &n3.url).unwrap();
    n1.transport.remove_peer(3);
    n3.transport.send(vec![common::heartbeat(3, 1, 2)]);
    common::wait_until("node 1 answered again", || {
        n3.transport.stats().peers[&1].msgs_dropped == 2
    })
    .await;
    assert_eq!(*n3.recorder.removed.lock(), vec![1]);
}
