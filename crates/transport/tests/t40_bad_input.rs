//! Bad peer requests each get their 4xx (or 503) and the transport keeps serving.

mod common;

use std::sync::atomic::Ordering;

use common::{
    addr_of, heartbeat, post, raw_request, start_node, test_config, wait_until, CLUSTER_ID,
};
use transport::wire::{encode_frame, PATH_MESSAGES, PATH_SNAPSHOT};

/// Node 2 with a 4 KiB frame limit; requests below come "from" node 1.
async fn node2() -> common::Node {
    let mut config = test_config(2);
    config.max_frame_bytes = 4096;
    start_node(config).await
}

async fn expect_status(addr: &str, request: Vec<u8>, status: u16, why: &str) -> String {
    let (got, body) = raw_request(addr, &request, false).await;
    assert_eq!(got, status, "{why}: body {body:?}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_request_gets_its_status_and_service_continues() {
    let node = node2().await;
    let addr = addr_of(&node.url).to_string();
    let good = encode_frame(&[heartbeat(1, 2, 7)]);
    let m = PATH_MESSAGES;

    expect_status(
        &addr,
        post(m, 1, 2, CLUSTER_ID, b"\xff\xff garbage bytes"),
        400,
        "garbage",
    )
    .await;
    expect_status(
        &addr,
        post(m, 1, 2, CLUSTER_ID, &good[..good.len() - 3]),
        400,
        "cut frame",
    )
    .await;
    expect_status(
        &addr,
        post(m, 1, 2, CLUSTER_ID, &[0, 0, 0, 3, 0xff, 0xff, 0xff]),
        400,
        "bad proto",
    )
    .await;
    expect_status(&addr, post(m, 1, 2, CLUSTER_ID, b""), 400, "empty frame").await;
    // Zero-length messages: 4 wire bytes each, hundreds in memory once
    // decoded. Refused at the first one.
    expect_status(
        &addr,
        post(m, 1, 2, CLUSTER_ID, &[0u8; 4000]),
        400,
        "zero-length messages",
    )
    .await;
    expect_status(
        &addr,
        post(m, 1, 2, CLUSTER_ID, &vec![0u8; 5000]),
        413,
        "oversized",
    )
    .await;
    let body = expect_status(&addr, post(m, 1, 2, CLUSTER_ID + 1, &good), 412, "cluster").await;
    assert!(
        body.contains("cluster id mismatch"),
        "clear message: {body}"
    );
    expect_status(
        &addr,
        post(m, 1, 3, CLUSTER_ID, &good),
        412,
        "recipient header",
    )
    .await;
    let to_other = encode_frame(&[heartbeat(1, 3, 7)]);
    expect_status(
        &addr,
        post(m, 1, 2, CLUSTER_ID, &to_other),
        412,
        "message to",
    )
    .await;
    expect_status(&addr, post(m, 4, 2, CLUSTER_ID, &good), 400, "message from").await;
    expect_status(&addr, post(m, 0, 2, CLUSTER_ID, &good), 400, "sender zero").await;
    let no_headers = format!(
        "POST {m} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        good.len()
    );
    let mut request = no_headers.into_bytes();
    request.extend_from_slice(&good);
    expect_status(&addr, request, 400, "missing headers").await;
    expect_status(
        &addr,
        post("/nope", 1, 2, CLUSTER_ID, &good),
        404,
        "unknown path",
    )
    .await;
    expect_status(
        &addr,
        post("/raft/faults", 1, 2, CLUSTER_ID, b"cut 1"),
        404,
        "faults off",
    )
    .await;
    expect_status(
        &addr,
        post(PATH_SNAPSHOT, 1, 2, CLUSTER_ID, b"\x00\x00"),
        400,
        "short snap",
    )
    .await;
    expect_status(
        &addr,
        post(PATH_SNAPSHOT, 1, 2, CLUSTER_ID, &good),
        400,
        "not a snapshot",
    )
    .await;
    assert_eq!(node.recorder.count_from(1), 0, "nothing bad was delivered");

    expect_status(
        &addr,
        post(m, 1, 2, CLUSTER_ID, &good),
        204,
        "good frame after bad ones",
    )
    .await;
    assert_eq!(node.recorder.indexes_from(1), vec![7]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_and_chunked_oversized_bodies_are_refused() {
    let node = node2().await;
    let addr = addr_of(&node.url).to_string();
    let good = encode_frame(&[heartbeat(1, 2, 7)]);
    // Content-Length promises more than is sent before the client closes its side.
    let mut truncated = post(PATH_MESSAGES, 1, 2, CLUSTER_ID, &good);
    let promised = format!("Content-Length: {}", good.len());
    let text = String::from_utf8_lossy(&truncated).replace(&promised, "Content-Length: 999");
    truncated = text.into_bytes();
    let (status, _) = raw_request(&addr, &truncated, true).await;
    assert_eq!(status, 400, "truncated body");

    // A chunked body with no Content-Length that grows past the limit.
    let chunk = vec![b'a'; 3000];
    let mut chunked = format!(
        "POST {PATH_MESSAGES} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nx-raft-from: 1\r\n\
         x-raft-to: 2\r\nx-raft-cluster-id: {CLUSTER_ID}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..2 {
        chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        chunked.extend_from_slice(&chunk);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let (status, _) = raw_request(&addr, &chunked, false).await;
    assert_eq!(status, 413, "chunked oversized body");

    let (status, _) =
        raw_request(&addr, &post(PATH_MESSAGES, 1, 2, CLUSTER_ID, &good), false).await;
    assert_eq!(status, 204, "still serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overloaded_node_gets_503_and_removed_member_410() {
    let node = node2().await;
    let addr = addr_of(&node.url).to_string();
    let good = encode_frame(&[heartbeat(1, 2, 7)]);
    node.recorder.overloaded.store(true, Ordering::Release);
    expect_status(
        &addr,
        post(PATH_MESSAGES, 1, 2, CLUSTER_ID, &good),
        503,
        "overloaded",
    )
    .await;
    node.recorder.overloaded.store(false, Ordering::Release);
    assert_eq!(node.transport.stats().peers[&1].msgs_dropped, 1);

    node.transport.add_peer(1, "http://127.0.0.1:1").unwrap();
    node.transport.remove_peer(1);
    expect_status(
        &addr,
        post(PATH_MESSAGES, 1, 2, CLUSTER_ID, &good),
        410,
        "removed",
    )
    .await;
    node.transport.add_peer(1, "http://127.0.0.1:1").unwrap();
    expect_status(
        &addr,
        post(PATH_MESSAGES, 1, 2, CLUSTER_ID, &good),
        204,
        "re-added",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_that_refuses_frames_does_not_stop_the_sender() {
    // Node 2 belongs to another cluster: node 1's frames are refused with 412 and counted as
    // dropped, while node 1 keeps delivering to node 3.
    let node1 = start_node(test_config(1)).await;
    let mut other = test_config(2);
    other.cluster_id = CLUSTER_ID + 1;
    let node2 = start_node(other).await;
    let node3 = start_node(test_config(3)).await;
    node1.transport.add_peer(2, &node2.url).unwrap();
    node1.transport.add_peer(3, &node3.url).unwrap();
    node1
        .transport
        .send(vec![heartbeat(1, 2, 1), heartbeat(1, 3, 1)]);
    let t = node1.transport.clone();
    wait_until("refused frame counted", || {
        t.stats().peers[&2].msgs_dropped == 1
    })
    .await;
    let rec3 = node3.recorder.clone();
    wait_until("node 3 served", || rec3.count_from(1) == 1).await;
    assert_eq!(node2.recorder.count_from(1), 0);
}
