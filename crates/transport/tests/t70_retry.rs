//! A frame is retried only when it provably was not sent: a peer that received a frame but
//! answered too late must not get it a second time (a duplicated frame can carry a forwarded
//! proposal, which would then be appended and applied twice).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use common::{heartbeat, start_node, test_config, wait_until};
use tokio::net::TcpListener;

const REQUEST_TIMEOUT_MS: u64 = 300;

/// A peer router that counts frames; every frame after the first sleeps past the sender's
/// request timeout before answering.
async fn slow_peer(frames: Arc<AtomicUsize>) -> String {
    let handler = move || {
        let frames = Arc::clone(&frames);
        async move {
            let seen = frames.fetch_add(1, Ordering::SeqCst);
            if seen > 0 {
                tokio::time::sleep(Duration::from_millis(REQUEST_TIMEOUT_MS * 3)).await;
            }
            StatusCode::NO_CONTENT
        }
    };
    let router = Router::new().route(transport::wire::PATH_MESSAGES, post(handler));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_timed_out_after_delivery_is_not_sent_again() {
    let frames = Arc::new(AtomicUsize::new(0));
    let url = slow_peer(Arc::clone(&frames)).await;
    let mut config = test_config(1);
    config.request_timeout_ms = REQUEST_TIMEOUT_MS;
    let node = start_node(config).await;
    node.transport.add_peer(2, &url).expect("add peer");

    // The first frame succeeds, so the connection counts as reused.
    node.transport.send(vec![heartbeat(1, 2, 1)]);
    wait_until("first frame acknowledged", || {
        node.transport.stats().peers[&2].msgs_sent == 1
    })
    .await;

    // The second frame reaches the peer, which answers after the timeout.
    node.transport.send(vec![heartbeat(1, 2, 2)]);
    wait_until("timed-out frame reported unreachable", || {
        node.recorder.was_reported_unreachable(2)
    })
    .await;
    assert_eq!(
        frames.load(Ordering::SeqCst),
        2,
        "the frame that timed out after delivery was delivered again"
    );
}

/// The `stall` fault: node 2 delivers node 1's frames but answers after node 1's request
/// timeout. Every frame arrives exactly once, and node 1 sees the link as failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_link_delivers_each_frame_once() {
    let mut config = test_config(1);
    config.request_timeout_ms = REQUEST_TIMEOUT_MS;
    let n1 = start_node(config).await;
    let n2 = start_node(test_config(2)).await;
    n1.transport.add_peer(2, &n2.url).expect("add peer");
    n1.transport.send(vec![heartbeat(1, 2, 1)]);
    wait_until("first frame", || n2.recorder.count_from(1) == 1).await;

    n2.transport
        .faults()
        .apply_command(&format!("stall 1 {}", REQUEST_TIMEOUT_MS * 2))
        .expect("stall command");
    n1.transport.send(vec![heartbeat(1, 2, 2)]);
    wait_until("stalled frame reported unreachable", || {
        n1.recorder.was_reported_unreachable(2)
    })
    .await;
    n2.transport.faults().heal(1);
    n1.transport.send(vec![heartbeat(1, 2, 3)]);
    wait_until("frame after the heal", || {
        n2.recorder.indexes_from(1).contains(&3)
    })
    .await;
    assert_eq!(n2.recorder.indexes_from(1), vec![1, 2, 3]);
}
