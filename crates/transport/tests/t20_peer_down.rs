//! A peer that is down costs only its queue: the sender reports it unreachable, keeps serving
//! other peers, and delivers what is sent once the peer is back.

mod common;

use std::time::Duration;

use common::{heartbeat, start_node, start_node_on, test_config, wait_until};
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_peer_is_reported_and_receives_after_coming_back() {
    let node1 = start_node(test_config(1)).await;
    let node3 = start_node(test_config(3)).await;
    // Reserve an address for node 2 and free it: nothing listens there yet.
    let reserved = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr2 = reserved.local_addr().unwrap();
    drop(reserved);
    node1
        .transport
        .add_peer(2, &format!("http://{addr2}"))
        .unwrap();
    node1.transport.add_peer(3, &node3.url).unwrap();

    // While 2 is down, traffic to 3 flows and 2 is reported unreachable.
    for seq in 0..50 {
        node1
            .transport
            .send(vec![heartbeat(1, 2, seq), heartbeat(1, 3, seq)]);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let rec1 = node1.recorder.clone();
    wait_until("peer 2 reported unreachable", || {
        rec1.was_reported_unreachable(2)
    })
    .await;
    let rec3 = node3.recorder.clone();
    wait_until("peer 3 got everything", || rec3.count_from(1) == 50).await;
    assert_eq!(rec3.indexes_from(1), (0..50).collect::<Vec<u64>>());
    assert!(
        !rec1.was_reported_unreachable(3),
        "healthy peer never reported"
    );
    let stats = node1.transport.stats();
    assert!(stats.peers[&2].send_failures >= 1, "{:?}", stats.peers[&2]);

    // Node 2 comes back on the same address; keep sending until messages sent after its
    // return arrive (the first may be dropped while the sender waits out its backoff).
    let listener = TcpListener::bind(addr2)
        .await
        .expect("rebind the reserved address");
    let node2 = start_node_on(test_config(2), listener);
    let rec2 = node2.recorder.clone();
    let mut seq = 1_000;
    while rec2.count_from(1) == 0 {
        node1.transport.send(vec![heartbeat(1, 2, seq)]);
        seq += 1;
        assert!(
            seq < 1_000 + 15_000,
            "peer 2 never received anything after coming back"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // After the first arrival, a burst arrives whole and in order.
    for extra in 0..100 {
        node1.transport.send(vec![heartbeat(1, 2, seq + extra)]);
    }
    let last = seq + 99;
    wait_until("the burst after recovery arrives", || {
        rec2.indexes_from(1).last() == Some(&last)
    })
    .await;
    let got = rec2.indexes_from(1);
    assert!(got.windows(2).all(|w| w[1] > w[0]), "in order: {got:?}");
    let burst: Vec<u64> = got.iter().copied().filter(|s| *s >= seq).collect();
    assert_eq!(
        burst,
        (seq..=last).collect::<Vec<u64>>(),
        "no gaps once connected"
    );
}
