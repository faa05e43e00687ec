//! Fault injection: a cut link drops traffic both ways and healing restores it; the same
//! faults can be set over HTTP when the fault routes are enabled.

mod common;

use common::{addr_of, heartbeat, post, raw_request, start_cluster, start_node, test_config};
use common::{wait_until, CLUSTER_ID};
use transport::{FaultError, Faults, LinkFault};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_link_drops_both_ways_and_heal_restores() {
    let nodes = start_cluster(3).await;
    let (n1, n2, n3) = (&nodes[0], &nodes[1], &nodes[2]);
    // Cut only node 1's end of the 1-2 link.
    n1.transport.faults().cut(2);
    n1.transport
        .send(vec![heartbeat(1, 2, 1), heartbeat(1, 3, 1)]);
    n2.transport.send(vec![heartbeat(2, 1, 1)]);
    let (t1, t2) = (n1.transport.clone(), n2.transport.clone());
    wait_until("outbound drop counted", || {
        t1.stats().peers[&2].msgs_dropped >= 1
    })
    .await;
    wait_until("inbound refusal counted", || {
        t2.stats().peers[&1].msgs_dropped >= 1
    })
    .await;
    let rec3 = n3.recorder.clone();
    wait_until("other links unaffected", || rec3.count_from(1) == 1).await;
    assert_eq!(n2.recorder.count_from(1), 0, "1 -> 2 dropped");
    assert_eq!(n1.recorder.count_from(2), 0, "2 -> 1 dropped");
    assert!(
        n1.recorder.was_reported_unreachable(2),
        "a cut peer is reported unreachable"
    );

    n1.transport.faults().heal(2);
    n1.transport.send(vec![heartbeat(1, 2, 2)]);
    n2.transport.send(vec![heartbeat(2, 1, 2)]);
    let (rec1, rec2) = (n1.recorder.clone(), n2.recorder.clone());
    wait_until("1 -> 2 restored", || rec2.count_from(1) == 1).await;
    wait_until("2 -> 1 restored", || rec1.count_from(2) == 1).await;
    assert_eq!(rec2.indexes_from(1), vec![2]);
    assert_eq!(rec1.indexes_from(2), vec![2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_probability_one_drops_everything_and_delay_keeps_order() {
    let nodes = start_cluster(2).await;
    let (n1, n2) = (&nodes[0], &nodes[1]);
    n1.transport.faults().set_drop_probability(2, 1.0).unwrap();
    n1.transport
        .send((0..20).map(|s| heartbeat(1, 2, s)).collect());
    let t1 = n1.transport.clone();
    wait_until("all dropped", || t1.stats().peers[&2].msgs_dropped == 20).await;
    n1.transport.faults().set_drop_probability(2, 0.0).unwrap();
    n1.transport.faults().set_delay_ms(2, 5).unwrap();
    n1.transport
        .send((20..40).map(|s| heartbeat(1, 2, s)).collect());
    let rec2 = n2.recorder.clone();
    wait_until("delayed messages arrive", || rec2.count_from(1) == 20).await;
    assert_eq!(rec2.indexes_from(1), (20..40).collect::<Vec<u64>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_route_cuts_and_heals_over_http() {
    let mut config = test_config(2);
    config.enable_fault_routes = true;
    let n2 = start_node(config).await;
    let n1 = start_node(test_config(1)).await;
    n1.transport.add_peer(2, &n2.url).unwrap();
    let addr = addr_of(&n2.url).to_string();
    let (status, _) = raw_request(
        &addr,
        &post("/raft/faults", 1, 2, CLUSTER_ID, b"cut 1\n"),
        false,
    )
    .await;
    assert_eq!(status, 204);
    assert!(n2.transport.faults().link(1).cut);
    n1.transport.send(vec![heartbeat(1, 2, 1)]);
    let t1 = n1.transport.clone();
    wait_until("refused while cut", || {
        t1.stats().peers[&2].msgs_dropped == 1
    })
    .await;
    let (status, body) = raw_request(
        &addr,
        &post("/raft/faults", 1, 2, CLUSTER_ID, b"bogus 1"),
        false,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = raw_request(
        &addr,
        &post("/raft/faults", 1, 2, CLUSTER_ID, b"heal-all"),
        false,
    )
    .await;
    assert_eq!(status, 204);
    n1.transport.send(vec![heartbeat(1, 2, 2)]);
    let rec2 = n2.recorder.clone();
    wait_until("healed", || rec2.count_from(1) == 1).await;
}

#[test]
fn fault_commands_parse_and_validate() {
    let faults = Faults::default();
    faults
        .apply_command("cut 3\n\ndrop 4 0.25\ndelay 4 10\nstall 4 20\n")
        .unwrap();
    assert!(faults.link(3).cut);
    assert_eq!(
        faults.link(4),
        LinkFault {
            cut: false,
            drop_probability: 0.25,
            delay_ms: 10,
            stall_ms: 20,
        }
    );
    faults.apply_command("heal 3").unwrap();
    assert_eq!(faults.link(3), LinkFault::default());
    assert!(matches!(
        faults.apply_command("drop 4 1.5"),
        Err(FaultError::BadProbability(_))
    ));
    assert!(matches!(
        faults.apply_command("delay 4 999999"),
        Err(FaultError::DelayTooLong(_))
    ));
    assert!(matches!(
        faults.apply_command("stall 4 999999"),
        Err(FaultError::DelayTooLong(_))
    ));
    assert!(matches!(
        faults.apply_command("cut"),
        Err(FaultError::BadArguments { .. })
    ));
    assert!(matches!(
        faults.apply_command("cut x"),
        Err(FaultError::BadArguments { .. })
    ));
    assert!(matches!(
        faults.apply_command("heal-all 2"),
        Err(FaultError::BadArguments { .. })
    ));
    assert!(matches!(
        faults.apply_command("partition 2"),
        Err(FaultError::UnknownCommand(_))
    ));
    faults.heal_all();
    assert_eq!(faults.link(4), LinkFault::default());
}
