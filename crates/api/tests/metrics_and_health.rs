//! `/metrics`, `/health`, `/livez`, `/readyz` on one node in process: the
//! output parses with a Prometheus text parser, 5xx answers are counted and
//! logged once with their request id, gRPC calls are counted with
//! go-grpc-prometheus's labels, the health endpoints follow the leader and
//! the alarms, and the reserved paths refuse other methods.

mod common;

use std::sync::{Arc, Mutex};

use api::{ApiConfig, Metrics};
use axum::http::StatusCode;
use common::TestApp;
use etcdproto::etcdserverpb as pb;
use kvstore::KvConfig;
use prometheus_parse::{Scrape, Value};
use raftnode::RaftError;

fn app_with_metrics() -> (TestApp, Metrics) {
    let (store, consensus) = kvstore::testing::local_store(KvConfig::new(1));
    let metrics = Metrics::new();
    let router = api::router_with_metrics(store.clone(), ApiConfig::default(), metrics.clone());
    (
        TestApp {
            router,
            consensus,
            store,
        },
        metrics,
    )
}

fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|line| Ok(line.to_string()))).expect("parses")
}

/// The value of the sample `name` whose labels include `labels`.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<Value> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| s.value.clone())
}

async fn scrape_of(app: &TestApp) -> Scrape {
    let reply = app.send("GET", "/metrics", "").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    parse(&reply.text())
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

    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let writer = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_5xx_is_counted_and_logged_once_at_warn_with_its_request_id() {
    let capture = Capture::default();
    let _guard = capture.install();
    let (app, _metrics) = app_with_metrics();
    app.consensus.fail_with(Some(RaftError::NoLeader));

    // A client-supplied request id is kept and echoed.
    let request = axum::http::Request::put("/k")
        .header(api::REQUEST_ID_HEADER, "client-id-42")
        .body(axum::body::Body::from("v"))
        .unwrap();
    let response = tower::ServiceExt::oneshot(app.router.clone(), request)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()[api::REQUEST_ID_HEADER], "client-id-42");
    // Without one, an id is made up and echoed.
    let second = app.send("GET", "/k", "").await;
    assert_eq!(second.status, StatusCode::SERVICE_UNAVAILABLE);
    let made_up = second.headers[api::REQUEST_ID_HEADER]
        .to_str()
        .unwrap()
        .to_string();
    assert!(!made_up.is_empty());
    app.consensus.fail_with(None);
    assert_eq!(
        app.send("GET", "/missing", "").await.status,
        StatusCode::NOT_FOUND
    );

    let lines = capture.lines();
    let warned: Vec<&String> = lines.iter().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warned.len(), 2, "one warn line per 5xx: {lines:#?}");
    assert!(
        warned[0].contains("request_id=\"client-id-42\"") || warned[0].contains("client-id-42")
    );
    assert!(
        warned[0].contains("503") && warned[0].contains("PUT"),
        "{}",
        warned[0]
    );
    assert!(
        warned[0].contains(&RaftError::NoLeader.to_string()),
        "{}",
        warned[0]
    );
    assert!(
        warned[1].contains(&made_up),
        "{} lacks {made_up}",
        warned[1]
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("key not found") && l.contains("WARN")),
        "a 404 is not a warning: {lines:#?}"
    );

    let scrape = scrape_of(&app).await;
    assert_eq!(
        value(
            &scrape,
            "raftkv_http_requests_total",
            &[("route", "key"), ("code", "503")]
        ),
        Some(Value::Counter(2.0))
    );
    assert_eq!(
        value(
            &scrape,
            "raftkv_http_requests_total",
            &[("route", "key"), ("code", "404")]
        ),
        Some(Value::Counter(1.0))
    );
}

#[tokio::test(flavor = "current_thread")]
async fn an_overlong_or_odd_request_id_is_never_echoed() {
    let (app, _metrics) = app_with_metrics();
    for bad in ["x".repeat(api::REQUEST_ID_MAX_BYTES + 1), "a b".to_string()] {
        let request = axum::http::Request::get("/v1/status")
            .header(api::REQUEST_ID_HEADER, bad.as_str())
            .body(axum::body::Body::empty())
            .unwrap();
        let response = tower::ServiceExt::oneshot(app.router.clone(), request)
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_ne!(
            response
                .headers()
                .get(api::REQUEST_ID_HEADER)
                .and_then(|v| v.to_str().ok()),
            Some(bad.as_str())
        );
    }
    // A success without a usable client id carries none: ids are made up
    // only for answers that are logged (5xx).
    let ok = app.send("GET", "/v1/status", "").await;
    assert_eq!(ok.status, StatusCode::OK);
    assert!(ok.headers.get(api::REQUEST_ID_HEADER).is_none());
}

#[tokio::test(flavor = "current_thread")]
async fn reserved_paths_answer_get_only_and_are_not_keys() {
    let (app, _metrics) = app_with_metrics();
    for path in ["/metrics", "/health", "/livez", "/readyz"] {
        for method in ["PUT", "POST", "DELETE", "PATCH"] {
            let reply = app.send(method, path, "value").await;
            assert_eq!(
                reply.status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}"
            );
            assert_eq!(reply.headers["allow"], "GET, HEAD", "{method} {path}");
        }
        let reply = app.send("GET", path, "").await;
        assert_eq!(reply.status, StatusCode::OK, "GET {path}");
        assert_ne!(reply.text(), "value", "{path} is not a key");
    }
    // Nothing was written.
    assert!(app.store.is_empty());
    // Paths below them are still keys.
    assert_eq!(
        app.send("PUT", "/metrics/x", "v").await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(app.send("GET", "/metrics/x", "").await.text(), "v");
}

#[tokio::test(flavor = "current_thread")]
async fn metrics_parse_with_etcd_names_and_types() {
    let (app, _metrics) = app_with_metrics();
    for i in 0..3 {
        assert_eq!(
            app.send("PUT", &format!("/k{i}"), "value").await.status,
            StatusCode::NO_CONTENT
        );
    }
    let scrape = scrape_of(&app).await;
    assert_eq!(
        value(&scrape, "etcd_server_has_leader", &[]),
        Some(Value::Gauge(1.0))
    );
    assert_eq!(
        value(&scrape, "etcd_server_is_leader", &[]),
        Some(Value::Gauge(1.0))
    );
    // etcd's committed/applied are gauges despite `_total`.
    match value(&scrape, "etcd_server_proposals_applied_total", &[]) {
        Some(Value::Gauge(applied)) => assert!(applied >= 3.0, "applied {applied}"),
        other => panic!("applied: {other:?}"),
    }
    assert!(matches!(
        value(&scrape, "etcd_server_proposals_committed_total", &[]),
        Some(Value::Gauge(_))
    ));
    assert_eq!(
        value(&scrape, "etcd_server_proposals_pending", &[]),
        Some(Value::Gauge(0.0))
    );
    assert_eq!(value(&scrape, "raftkv_keys", &[]), Some(Value::Gauge(3.0)));
    let db_size = app.store.keyspace_status().db_size_bytes as f64;
    assert!(db_size > 0.0);
    assert_eq!(
        value(&scrape, "etcd_mvcc_db_total_size_in_bytes", &[]),
        Some(Value::Gauge(db_size))
    );
    // Registered whether or not the node reports into them.
    assert!(matches!(
        value(&scrape, "etcd_server_leader_changes_seen_total", &[]),
        Some(Value::Counter(_))
    ));
    assert!(matches!(
        value(&scrape, "etcd_disk_wal_fsync_duration_seconds", &[]),
        Some(Value::Histogram(_))
    ));
    assert!(matches!(
        value(&scrape, "etcd_disk_backend_commit_duration_seconds", &[]),
        Some(Value::Histogram(_))
    ));
}

#[tokio::test(flavor = "current_thread")]
async fn node_events_land_in_the_metrics_of_their_node_only() {
    use raftnode::NodeObserver;
    let (app, metrics) = app_with_metrics();
    let (other, other_metrics) = app_with_metrics();
    metrics.leader_changed(1);
    metrics.proposal_failed();
    metrics.wal_fsync(std::time::Duration::from_micros(1500));
    metrics.snapshot_saved(std::time::Duration::from_millis(3));
    let scrape = scrape_of(&app).await;
    assert_eq!(
        value(&scrape, "etcd_server_leader_changes_seen_total", &[]),
        Some(Value::Counter(1.0))
    );
    assert_eq!(
        value(&scrape, "etcd_server_proposals_failed_total", &[]),
        Some(Value::Counter(1.0))
    );
    assert_eq!(
        value(&scrape, "etcd_disk_wal_fsync_duration_seconds_count", &[]),
        Some(Value::Untyped(1.0))
    );
    match value(&scrape, "etcd_disk_wal_fsync_duration_seconds", &[]) {
        Some(Value::Histogram(buckets)) => {
            let at = |le: f64| buckets.iter().find(|b| b.less_than == le).unwrap().count;
            assert_eq!(at(0.001), 0.0);
            assert_eq!(at(0.002), 1.0);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        value(&scrape, "raftkv_snapshots_saved_total", &[]),
        Some(Value::Counter(1.0))
    );
    // Two nodes in one process share nothing.
    drop(other_metrics);
    let untouched = scrape_of(&other).await;
    assert_eq!(
        value(&untouched, "etcd_server_leader_changes_seen_total", &[]),
        Some(Value::Counter(0.0))
    );
}

/// A TLS port's status as the binary's source reports it.
fn tls_status(port: tls::PortKind, handshakes: u64, not_after_unix_s: i64) -> tls::TlsStatus {
    let certificate = |role, not_after_unix_s| tls::CertificateInfo {
        file: std::path::PathBuf::from(format!("{role}.pem")),
        role,
        subject_cn: "member-1".into(),
        serial_hex: "01".into(),
        not_after_unix_s,
    };
    tls::TlsStatus {
        port,
        certificates: vec![
            certificate("cert", not_after_unix_s),
            certificate("ca", not_after_unix_s + 100),
            // A second CA in the bundle that expires later: the earliest counts.
            certificate("ca", not_after_unix_s + 200),
        ],
        handshake_failures: tls::FailureReason::ALL
            .iter()
            .map(|reason| (reason.label(), u64::from(reason.label() == "unknown_ca")))
            .collect(),
        handshakes_total: handshakes,
        reloads_total: 2,
        expiry_warnings_total: 0,
    }
}

#[tokio::test(flavor = "current_thread")]
async fn tls_ports_report_handshakes_failures_reloads_and_expiry() {
    let (app, metrics) = app_with_metrics();
    let plain = scrape_of(&app).await;
    assert!(
        !plain
            .samples
            .iter()
            .any(|s| s.metric.starts_with("raftkv_tls_")),
        "TLS figures without a TLS port"
    );
    metrics.add_tls_source(Box::new(|| {
        tls_status(tls::PortKind::Client, 5, 2_000_000_000)
    }));
    metrics.add_tls_source(Box::new(|| {
        tls_status(tls::PortKind::Peer, 7, 1_900_000_000)
    }));
    let scrape = scrape_of(&app).await;
    assert_eq!(
        value(
            &scrape,
            "raftkv_tls_handshakes_total",
            &[("port", "client")]
        ),
        Some(Value::Counter(5.0))
    );
    assert_eq!(
        value(&scrape, "raftkv_tls_handshakes_total", &[("port", "peer")]),
        Some(Value::Counter(7.0))
    );
    assert_eq!(
        value(
            &scrape,
            "raftkv_tls_handshake_failures_total",
            &[("port", "peer"), ("reason", "unknown_ca")]
        ),
        Some(Value::Counter(1.0))
    );
    for reason in tls::FailureReason::ALL {
        assert!(
            value(
                &scrape,
                "raftkv_tls_handshake_failures_total",
                &[("port", "client"), ("reason", reason.label())]
            )
            .is_some(),
            "no {} sample",
            reason.label()
        );
    }
    assert_eq!(
        value(&scrape, "raftkv_tls_reloads_total", &[("port", "peer")]),
        Some(Value::Counter(2.0))
    );
    assert_eq!(
        value(
            &scrape,
            "raftkv_tls_certificate_expiry_timestamp_seconds",
            &[("port", "peer"), ("role", "cert")]
        ),
        Some(Value::Gauge(1_900_000_000.0))
    );
    assert_eq!(
        value(
            &scrape,
            "raftkv_tls_certificate_expiry_timestamp_seconds",
            &[("port", "client"), ("role", "ca")]
        ),
        Some(Value::Gauge(2_000_000_100.0))
    );
}

#[tokio::test(flavor = "current_thread")]
async fn health_follows_the_leader_and_the_alarms() {
    let (app, _metrics) = app_with_metrics();
    let health = app.send("GET", "/health", "").await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.text(), r#"{"health":"true"}"#);
    assert_eq!(app.send("GET", "/readyz", "").await.text(), "ok");
    let verbose = app.send("GET", "/readyz?verbose", "").await;
    assert!(
        verbose.text().contains("[+]leader ok"),
        "{}",
        verbose.text()
    );
    assert!(verbose.text().contains("[+]linearizable_read ok"));

    app.consensus.set_no_leader(true);
    let health = app.send("GET", "/health", "").await;
    assert_eq!(health.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(health.text(), r#"{"health":"false"}"#);
    let ready = app.send("GET", "/readyz", "").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        ready.text().contains("[-]leader failed"),
        "{}",
        ready.text()
    );
    assert!(
        ready.text().ends_with("readyz check failed\n"),
        "{}",
        ready.text()
    );
    // Alive all the same.
    let live = app.send("GET", "/livez", "").await;
    assert_eq!((live.status, live.text().as_str()), (StatusCode::OK, "ok"));
    let scrape = scrape_of(&app).await;
    assert_eq!(
        value(&scrape, "etcd_server_has_leader", &[]),
        Some(Value::Gauge(0.0))
    );
    app.consensus.set_no_leader(false);

    // An armed alarm makes the member unhealthy, with a leader.
    app.store
        .alarm(pb::AlarmRequest {
            action: pb::alarm_request::AlarmAction::Activate as i32,
            member_id: 1,
            alarm: pb::AlarmType::Nospace as i32,
        })
        .await
        .expect("alarm armed");
    let health = app.send("GET", "/health", "").await;
    assert_eq!(health.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(health.text(), r#"{"health":"false"}"#);
    let ready = app.send("GET", "/readyz", "").await;
    assert!(ready.text().contains("[-]alarm failed"), "{}", ready.text());
    assert!(ready.text().contains("NOSPACE"), "{}", ready.text());
    let excluded = app.send("GET", "/readyz?exclude=alarm", "").await;
    assert_eq!(excluded.status, StatusCode::OK, "{}", excluded.text());
    let scrape = scrape_of(&app).await;
    assert_eq!(
        value(&scrape, "raftkv_alarms_active", &[]),
        Some(Value::Gauge(1.0))
    );
}

// One thread: the server's tasks log under the test's subscriber.
#[tokio::test(flavor = "current_thread")]
async fn grpc_calls_are_counted_with_go_grpc_prometheus_labels() {
    let capture = Capture::default();
    let (app, _metrics) = app_with_metrics();
    let consensus = Arc::clone(&app.consensus);
    let (address, channel) = common::listen(app.router.clone()).await;
    let mut kv = pb::kv_client::KvClient::new(channel);
    kv.put(pb::PutRequest {
        key: b"a".to_vec(),
        value: b"1".to_vec(),
        ..Default::default()
    })
    .await
    .expect("put");
    for _ in 0..2 {
        kv.range(pb::RangeRequest {
            key: b"a".to_vec(),
            ..Default::default()
        })
        .await
        .expect("range");
    }
    consensus.set_no_leader(true);
    let failed = {
        let _guard = capture.install();
        kv.range(pb::RangeRequest {
            key: b"a".to_vec(),
            ..Default::default()
        })
        .await
    };
    consensus.set_no_leader(false);
    assert_eq!(failed.unwrap_err().code(), tonic::Code::Unavailable);

    let text = reqwest::get(format!("http://{address}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let scrape = parse(&text);
    let range = [
        ("grpc_type", "unary"),
        ("grpc_service", "etcdserverpb.KV"),
        ("grpc_method", "Range"),
    ];
    assert_eq!(
        value(&scrape, "grpc_server_started_total", &range),
        Some(Value::Counter(3.0))
    );
    let with_code = |code: &'static str| {
        let mut labels = range.to_vec();
        labels.push(("grpc_code", code));
        value(&scrape, "grpc_server_handled_total", &labels)
    };
    assert_eq!(with_code("OK"), Some(Value::Counter(2.0)));
    assert_eq!(with_code("Unavailable"), Some(Value::Counter(1.0)));
    assert_eq!(
        value(&scrape, "grpc_server_handling_seconds_count", &range),
        Some(Value::Untyped(3.0))
    );
    assert!(matches!(
        value(&scrape, "grpc_server_handling_seconds", &range),
        Some(Value::Histogram(_))
    ));
    assert_eq!(
        value(&scrape, "raftkv_grpc_requests_in_progress", &range),
        Some(Value::Gauge(0.0))
    );
    // gRPC is not counted as HTTP.
    assert!(!text.contains(r#"route="gateway""#));
    // The failed call was logged once, at warn, with a request id.
    let lines = capture.lines();
    let warned: Vec<&String> = lines.iter().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warned.len(), 1, "{lines:#?}");
    assert!(warned[0].contains("request_id"), "{}", warned[0]);
    assert!(warned[0].contains("Unavailable"), "{}", warned[0]);
}

#[tokio::test(flavor = "current_thread")]
async fn refused_and_timed_out_proposals_count_as_failed() {
    use raftnode::NodeObserver;
    let kv_config = KvConfig {
        request_timeout_ms: 50,
        ..KvConfig::new(1)
    };
    let (store, consensus) = kvstore::testing::local_store(kv_config);
    let metrics = Metrics::new();
    let router = api::router_with_metrics(store.clone(), ApiConfig::default(), metrics.clone());
    let app = TestApp {
        router,
        consensus,
        store,
    };
    let before = scrape_of(&app).await;
    assert_eq!(
        value(&before, "etcd_server_proposals_failed_total", &[]),
        Some(Value::Counter(0.0))
    );
    // Proposed, never applied: the write times out (outcome unknown).
    app.consensus.set_drop_proposals(true);
    assert_eq!(
        app.send("PUT", "/k", "v").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    app.consensus.set_drop_proposals(false);
    // Refused by the node (what raftnode reports through its observer).
    metrics.proposal_failed();
    let after = scrape_of(&app).await;
    assert_eq!(
        value(&after, "etcd_server_proposals_failed_total", &[]),
        Some(Value::Counter(2.0))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_watch_stream_is_in_progress_until_it_ends() {
    let (app, _metrics) = app_with_metrics();
    let (address, channel) = common::listen(app.router.clone()).await;
    let metrics_url = format!("http://{address}/metrics");
    let watch_labels = [
        ("grpc_type", "bidi_stream"),
        ("grpc_service", "etcdserverpb.Watch"),
        ("grpc_method", "Watch"),
    ];
    let scrape_now = || async {
        let text = reqwest::get(&metrics_url)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        parse(&text)
    };
    let mut client = pb::watch_client::WatchClient::new(channel);
    let (requests, receiver) = tokio::sync::mpsc::channel(4);
    requests
        .send(pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
                pb::WatchCreateRequest {
                    key: b"w".to_vec(),
                    ..Default::default()
                },
            )),
        })
        .await
        .unwrap();
    let mut responses = client
        .watch(tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(
            receiver,
        ))
        .await
        .expect("watch")
        .into_inner();
    let created = responses
        .message()
        .await
        .expect("a response")
        .expect("open");
    assert!(created.created);

    let open = scrape_now().await;
    assert_eq!(
        value(&open, "raftkv_grpc_requests_in_progress", &watch_labels),
        Some(Value::Gauge(1.0))
    );
    assert_eq!(
        value(&open, "grpc_server_started_total", &watch_labels),
        Some(Value::Counter(1.0))
    );
    // The client goes away: the call is handled once, and no longer open.
    drop(requests);
    drop(responses);
    drop(client);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let scrape = scrape_now().await;
        let handled: f64 = scrape
            .samples
            .iter()
            .filter(|s| {
                s.metric == "grpc_server_handled_total"
                    && s.labels.get("grpc_method") == Some("Watch")
            })
            .map(|s| match s.value {
                Value::Counter(n) => n,
                _ => panic!("{s:?}"),
            })
            .sum();
        if handled == 1.0 {
            assert_eq!(
                value(&scrape, "raftkv_grpc_requests_in_progress", &watch_labels),
                Some(Value::Gauge(0.0))
            );
            break;
        }
        assert_eq!(handled, 0.0, "handled more than once");
        assert!(
            std::time::Instant::now() < deadline,
            "the closed watch was never counted as handled"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
