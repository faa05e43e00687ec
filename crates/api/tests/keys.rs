//! `PUT /<key>` and `GET /<key>`: success, options, limits and errors.

mod common;

use api::ApiConfig;
use axum::http::StatusCode;
use common::{app, app_with};
use kvstore::KvConfig;
use raftnode::RaftError;

#[tokio::test]
async fn put_then_get() {
    let app = app();
    let put = app.send("PUT", "/my-key", "bar").await;
    assert_eq!(put.status, StatusCode::NO_CONTENT);
    assert!(put.body.is_empty());
    let got = app.send("GET", "/my-key", "").await;
    assert_eq!((got.status, got.text().as_str()), (StatusCode::OK, "bar"));
    assert_eq!(
        app.send("GET", "/other", "").await.status,
        StatusCode::NOT_FOUND
    );
    // The key is the whole path.
    assert_eq!(
        app.send("PUT", "/a/b/c", "deep").await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(app.send("GET", "/a/b/c", "").await.text(), "deep");
    assert_eq!(
        app.send("GET", "/a", "").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.send("PUT", "/", "root").await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(app.send("GET", "/", "").await.text(), "root");
    assert_eq!(app.store.len(), 3);
}

#[tokio::test]
async fn head_and_empty_value() {
    let app = app();
    assert_eq!(
        app.send("PUT", "/empty", "").await.status,
        StatusCode::NO_CONTENT
    );
    let got = app.send("GET", "/empty", "").await;
    assert_eq!((got.status, got.body.len()), (StatusCode::OK, 0));
    assert_eq!(app.send("HEAD", "/empty", "").await.status, StatusCode::OK);
    assert_eq!(
        app.send("HEAD", "/nothing", "").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn query_string_is_options_not_key() {
    let app = app();
    assert_eq!(
        app.send("PUT", "/k?ignored=1", "v").await.status,
        StatusCode::NO_CONTENT
    );
    for uri in [
        "/k",
        "/k?serializable",
        "/k?consistency=serializable",
        "/k?consistency=linearizable",
        "/k?x=y&linearizable",
    ] {
        let got = app.send("GET", uri, "").await;
        assert_eq!(
            (got.status, got.text().as_str()),
            (StatusCode::OK, "v"),
            "{uri}"
        );
    }
    for uri in [
        "/k?consistency=eventual",
        "/k?serializable=maybe",
        "/k?consistency",
    ] {
        let got = app.send("GET", uri, "").await;
        assert_eq!(got.status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(got.text().contains("read option"), "{uri}: {}", got.text());
    }
}

#[tokio::test]
async fn serializable_read_works_without_leader() {
    let app = app();
    app.send("PUT", "/k", "v").await;
    app.consensus.set_no_leader(true);
    let local = app.send("GET", "/k?serializable", "").await;
    assert_eq!((local.status, local.text().as_str()), (StatusCode::OK, "v"));
    let linearizable = app.send("GET", "/k", "").await;
    assert_eq!(linearizable.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        linearizable.text().contains("no leader"),
        "{}",
        linearizable.text()
    );
    assert_eq!(linearizable.headers["retry-after"], "1");
    let put = app.send("PUT", "/k", "w").await;
    assert_eq!(put.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(put.headers["content-type"], "text/plain; charset=utf-8");
}

#[tokio::test]
async fn dropped_write_is_503_outcome_unknown() {
    let app = app_with(
        KvConfig {
            request_timeout_ms: 30,
            ..KvConfig::new(1)
        },
        ApiConfig::default(),
    );
    app.consensus.set_drop_proposals(true);
    let put = app.send("PUT", "/k", "v").await;
    assert_eq!(put.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(put.text().contains("outcome is unknown"), "{}", put.text());
    app.consensus.set_drop_proposals(false);
    app.consensus.set_stall_reads(true);
    let get = app.send("GET", "/k", "").await;
    assert_eq!(get.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(get.text().contains("read barrier"), "{}", get.text());
}

#[tokio::test]
async fn every_raft_refusal_is_503() {
    let app = app();
    let refusals = [
        RaftError::NoLeader,
        RaftError::ProposalDropped("leader transferring".into()),
        RaftError::Busy,
        RaftError::Stopped,
        RaftError::Timeout { timeout_ms: 5 },
    ];
    for refusal in refusals {
        app.consensus.fail_with(Some(refusal.clone()));
        let put = app.send("PUT", "/k", "v").await;
        assert_eq!(put.status, StatusCode::SERVICE_UNAVAILABLE, "{refusal:?}");
        assert_eq!(put.text().trim_end(), refusal.to_string());
        let get = app.send("GET", "/k", "").await;
        assert_eq!(get.status, StatusCode::SERVICE_UNAVAILABLE, "{refusal:?}");
    }
    app.consensus.fail_with(None);
    assert_eq!(
        app.send("PUT", "/k", "v").await.status,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn in_flight_write_bound_is_503_busy() {
    let app = app_with(
        KvConfig {
            max_in_flight_writes: 1,
            ..KvConfig::new(1)
        },
        ApiConfig::default(),
    );
    let first = hold_one_put(&app).await;
    assert_eq!(app.store.pending_writes(), 1);
    let second = app.send("PUT", "/b", "2").await;
    assert_eq!(second.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(second.text().contains("busy"), "{}", second.text());
    app.consensus.release_held();
    assert_eq!(first.await.unwrap(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn value_limit_is_413() {
    let app = app_with(
        KvConfig::new(1),
        ApiConfig {
            max_value_bytes: 16,
            ..ApiConfig::default()
        },
    );
    assert_eq!(
        app.send("PUT", "/k", vec![b'x'; 16]).await.status,
        StatusCode::NO_CONTENT
    );
    let over = app.send("PUT", "/k", vec![b'x'; 17]).await;
    assert_eq!(over.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(over.text().contains("16 bytes"), "{}", over.text());
    assert_eq!(app.send("GET", "/k", "").await.body.len(), 16);
}

#[tokio::test]
async fn huge_body_with_default_limit_is_413() {
    let app = app();
    let limit = ApiConfig::DEFAULT_MAX_VALUE_BYTES;
    assert_eq!(limit, 1_572_864);
    assert_eq!(
        app.send("PUT", "/big", vec![1u8; limit]).await.status,
        StatusCode::NO_CONTENT
    );
    let huge = app.send("PUT", "/huge", vec![0u8; 8 << 20]).await;
    assert_eq!(huge.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        app.send("GET", "/huge", "").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn reserved_paths_are_400() {
    let app = app();
    for (method, uri) in [
        ("PUT", "/v1/foo"),
        ("GET", "/v1/foo"),
        ("GET", "/v1"),
        ("PUT", "/v1"),
        ("GET", "/v1/status/x"),
    ] {
        let reply = app.send(method, uri, "v").await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{method} {uri}");
        assert!(reply.text().contains("reserved"), "{}", reply.text());
    }
    // Only the exact prefix is reserved.
    assert_eq!(
        app.send("PUT", "/v10", "v").await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.send("PUT", "/x/v1/y", "v").await.status,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn percent_encoded_and_odd_paths_are_plain_keys() {
    let app = app();
    for uri in [
        "/%FF%FE",
        "/%00",
        "//double",
        "/a%2Fb",
        "/%E2%82%AC",
        "/..",
        "/~!$&'()*+,;=:@",
    ] {
        assert_eq!(
            app.send("PUT", uri, uri).await.status,
            StatusCode::NO_CONTENT,
            "{uri}"
        );
        let got = app.send("GET", uri, "").await;
        assert_eq!(
            (got.status, got.text()),
            (StatusCode::OK, uri.to_string()),
            "{uri}"
        );
    }
    // No decoding: the escaped and unescaped forms are different keys.
    assert_eq!(
        app.send("GET", "/a/b", "").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn other_methods_are_405_with_allow() {
    let app = app();
    for (method, uri) in [
        ("PATCH", "/k"),
        ("OPTIONS", "/"),
        ("TRACE", "/x/y"),
        ("CONNECTOR", "/k"),
    ] {
        let reply = app.send(method, uri, "").await;
        assert_eq!(
            reply.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {uri}"
        );
        let allow = reply.headers["allow"].to_str().unwrap().to_string();
        for expected in ["GET", "PUT", "POST", "DELETE"] {
            assert!(allow.contains(expected), "{allow}");
        }
    }
    let reply = app.send("PUT", "/v1/status", "x").await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.headers["allow"], "GET, HEAD");
}

#[tokio::test]
async fn overload_is_shed_with_503() {
    let app = app_with(
        KvConfig::new(1),
        ApiConfig {
            max_concurrent_requests: 1,
            ..ApiConfig::default()
        },
    );
    let first = hold_one_put(&app).await;
    let shed = app.send("GET", "/v1/status", "").await;
    assert_eq!(shed.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(shed.text().contains("too many requests"), "{}", shed.text());
    app.consensus.release_held();
    assert_eq!(first.await.unwrap(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.send("GET", "/v1/status", "").await.status,
        StatusCode::OK
    );
}

/// Starts a PUT whose proposal the consensus holds, and waits until the
/// store counts it as pending; returns the task answering it.
async fn hold_one_put(app: &common::TestApp) -> tokio::task::JoinHandle<StatusCode> {
    app.consensus.set_hold_proposals(true);
    let router = app.router.clone();
    let first = tokio::spawn(async move {
        let request = axum::http::Request::put("/a")
            .body(axum::body::Body::from("1"))
            .unwrap();
        tower::ServiceExt::oneshot(router, request)
            .await
            .unwrap()
            .status()
    });
    for _ in 0..10_000 {
        if app.store.pending_writes() == 1 {
            break;
        }
        tokio::task::yield_now().await;
    }
    first
}
