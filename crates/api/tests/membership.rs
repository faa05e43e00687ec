//! `POST /<id>`, `DELETE /<id>` and `GET /v1/status`.

mod common;

use api::{ApiConfig, StatusResponse};
use axum::http::StatusCode;
use common::{app, app_with};
use kvstore::KvConfig;

async fn status(app: &common::TestApp) -> StatusResponse {
    let reply = app.send("GET", "/v1/status", "").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["content-type"], "application/json");
    serde_json::from_slice(&reply.body).expect("status JSON")
}

#[tokio::test]
async fn status_reports_leader_indexes_and_members() {
    let app = app();
    app.send("PUT", "/k", "v").await;
    let status = status(&app).await;
    assert_eq!(
        (status.id, status.leader_id, status.role.as_str()),
        (1, Some(1), "leader")
    );
    assert_eq!((status.commit_index, status.applied_index), (1, 1));
    assert_eq!(status.members.len(), 1);
    assert_eq!(status.members[0].peer_url, kvstore::testing::LOCAL_PEER_URL);
    app.consensus.snapshot();
    assert_eq!(self::status(&app).await.snapshot_index, 1);

    app.consensus.set_no_leader(true);
    let reply = app.send("GET", "/v1/status", "").await;
    let json: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert!(json["leader_id"].is_null(), "{json}");
    assert_eq!(json["role"], "follower");
    assert_eq!(
        app.send("HEAD", "/v1/status", "").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn add_and_remove_member() {
    let app = app();
    assert_eq!(
        app.send("POST", "/2", "http://127.0.0.1:22379")
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.send("POST", "/3", " http://node-3.example:32379/\n")
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.send("POST", "/4", "http://[::1]:42379").await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.send("POST", "/5", "https://node-5.example:52380/")
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let members: Vec<(u64, String)> = status(&app)
        .await
        .members
        .into_iter()
        .map(|member| (member.id, member.peer_url))
        .collect();
    assert_eq!(
        members,
        vec![
            (1, kvstore::testing::LOCAL_PEER_URL.to_string()),
            (2, "http://127.0.0.1:22379".to_string()),
            (3, "http://node-3.example:32379".to_string()),
            (4, "http://[::1]:42379".to_string()),
            (5, "https://node-5.example:52380".to_string()),
        ]
    );
    let again = app.send("POST", "/2", "http://127.0.0.1:22379").await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert!(
        again.text().contains("member ID already exist"),
        "{}",
        again.text()
    );

    assert_eq!(
        app.send("DELETE", "/2", "").await.status,
        StatusCode::NO_CONTENT
    );
    let gone = app.send("DELETE", "/2", "").await;
    assert_eq!(gone.status, StatusCode::BAD_REQUEST);
    assert!(gone.text().contains("member not found"), "{}", gone.text());
    assert_eq!(status(&app).await.members.len(), 4);
}

#[tokio::test]
async fn bad_node_ids_are_400() {
    let app = app();
    let bad_ids = [
        "/",
        "/0",
        "/00",
        "/abc",
        "/-1",
        "/+1",
        "/1.5",
        "/1e3",
        "/%31",
        "/2/3",
        "/99999999999999999999999",
        "/%FF",
        "/v1/status/2",
    ];
    for uri in bad_ids {
        let post = app.send("POST", uri, "http://127.0.0.1:22379").await;
        assert_eq!(
            post.status,
            StatusCode::BAD_REQUEST,
            "POST {uri}: {}",
            post.text()
        );
        let delete = app.send("DELETE", uri, "").await;
        assert_eq!(
            delete.status,
            StatusCode::BAD_REQUEST,
            "DELETE {uri}: {}",
            delete.text()
        );
    }
    assert_eq!(status(&app).await.members.len(), 1);
}

#[tokio::test]
async fn bad_peer_urls_are_400() {
    let app = app();
    let long = format!("http://{}:1", "a".repeat(300));
    let bad_urls: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"127.0.0.1:22379".to_vec(),
        b"ftp://127.0.0.1:22379".to_vec(),
        b"https://127.0.0.1".to_vec(),
        b"http://127.0.0.1".to_vec(),
        b"http://127.0.0.1:".to_vec(),
        b"http://127.0.0.1:0".to_vec(),
        b"http://127.0.0.1:65536".to_vec(),
        b"http://127.0.0.1:-5".to_vec(),
        b"http://:22379".to_vec(),
        b"http://bad host:22379".to_vec(),
        b"http://user@host:22379".to_vec(),
        b"http://host:22379/path".to_vec(),
        b"http://host:22379?q".to_vec(),
        b"http://-host:22379".to_vec(),
        b"http://[::zz]:22379".to_vec(),
        b"http://\xff\xfe:22379".to_vec(),
        long.into_bytes(),
        vec![0u8; 64],
    ];
    for url in bad_urls {
        let reply = app.send("POST", "/2", url.clone()).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{:?}: {}",
            String::from_utf8_lossy(&url),
            reply.text()
        );
        assert!(reply.text().contains("peer URL"), "{}", reply.text());
    }
    let huge = app.send("POST", "/2", vec![b'a'; 4 << 20]).await;
    assert!(huge.status.is_client_error(), "{}", huge.status);
    assert_eq!(status(&app).await.members.len(), 1);
}

#[tokio::test]
async fn membership_refusals_map_to_statuses() {
    let app = app_with(
        KvConfig::new(1),
        ApiConfig {
            request_timeout_ms: 30,
            ..ApiConfig::default()
        },
    );
    app.consensus.set_membership_in_progress(true);
    let busy = app.send("POST", "/2", "http://127.0.0.1:22379").await;
    assert_eq!(busy.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(busy.text().contains("in progress"), "{}", busy.text());
    // Writes are not affected by a membership change in progress.
    assert_eq!(
        app.send("PUT", "/k", "v").await.status,
        StatusCode::NO_CONTENT
    );
    app.consensus.set_membership_in_progress(false);

    app.consensus.set_no_leader(true);
    assert_eq!(
        app.send("DELETE", "/1", "").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    app.consensus.set_no_leader(false);

    app.consensus.set_stall_membership(true);
    let stalled = app.send("POST", "/2", "http://127.0.0.1:22379").await;
    assert_eq!(stalled.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        stalled.text().contains("outcome is unknown"),
        "{}",
        stalled.text()
    );
    assert_eq!(stalled.headers["retry-after"], "1");
}
