//! The write bound configured in kvstore is reachable through the API with
//! the default limits, and server errors are logged once, at warn.

mod common;

use std::sync::{Arc, Mutex};

use api::ApiConfig;
use axum::http::StatusCode;
use common::{app, app_with};
use kvstore::KvConfig;
use raftnode::RaftError;

/// The default in-flight write bound of kvstore is reachable with the API's
/// default request cap: every one of those writes waits, and the next one is
/// refused by kvstore (busy writes), not by the API's own load shedding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_in_flight_write_bound_is_reachable_through_the_api() {
    let writes = KvConfig::DEFAULT_MAX_IN_FLIGHT_WRITES;
    let app = Arc::new(app_with(KvConfig::new(1), ApiConfig::default()));
    app.consensus.set_hold_proposals(true);
    let mut held = Vec::new();
    for i in 0..writes {
        let app = Arc::clone(&app);
        held.push(tokio::spawn(async move {
            app.send("PUT", &format!("/k{i}"), "v").await.status
        }));
    }
    let start = std::time::Instant::now();
    while app.store.pending_writes() < writes {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "only {} of {writes} writes are in flight",
            app.store.pending_writes()
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let refused = app.send("PUT", "/one-more", "v").await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        refused.text().contains("too many writes in flight"),
        "refused by the wrong limit: {}",
        refused.text()
    );
    app.consensus.release_held();
    for put in held {
        assert_eq!(put.await.unwrap(), StatusCode::NO_CONTENT);
    }
}

/// Collects formatted log lines.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .map(str::to_string)
            .collect()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn server_errors_are_logged_once_at_warn_client_errors_not() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let app = app();
    app.consensus.fail_with(Some(RaftError::NoLeader));
    let put = app.send("PUT", "/k", "v").await;
    assert_eq!(put.status, StatusCode::SERVICE_UNAVAILABLE);
    app.consensus.fail_with(None);
    assert_eq!(
        app.send("GET", "/missing", "").await.status,
        StatusCode::NOT_FOUND
    );

    let lines = capture.lines();
    let mentions: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains(&RaftError::NoLeader.to_string()))
        .collect();
    assert_eq!(mentions.len(), 1, "logged once: {lines:#?}");
    assert!(mentions[0].contains("WARN"), "{}", mentions[0]);
    assert!(mentions[0].contains("503"), "{}", mentions[0]);
    assert!(mentions[0].contains("PUT"), "{}", mentions[0]);
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("key not found") && l.contains("WARN")),
        "a 404 is not a warning: {lines:#?}"
    );
}
