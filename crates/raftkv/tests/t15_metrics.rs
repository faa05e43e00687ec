//! `/metrics` and the health endpoints on real clusters: the output parses
//! with a Prometheus text parser and carries etcd's names with etcd's types
//! and values that move with the cluster; `/health` follows the quorum; the
//! etcd names we expose exist in a real etcd 3.4 with the same type.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::etcd::{find_tool, Etcd};
use common::{Cluster, FAST, WAIT};
use etcdproto::etcdserverpb as pb;
use prometheus_parse::{Scrape, Value};
use reqwest::StatusCode;

fn metrics_text(cluster: &Cluster, id: u64) -> String {
    let response = cluster
        .http()
        .get(cluster.url(id, "/metrics"))
        .send()
        .expect("GET /metrics");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    response.text().expect("body")
}

fn scrape(cluster: &Cluster, id: u64) -> Scrape {
    let text = metrics_text(cluster, id);
    Scrape::parse(text.lines().map(|line| Ok(line.to_string()))).expect("parses")
}

/// The sample `name` whose labels include `labels`.
fn find(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<Value> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| s.value.clone())
}

fn gauge(scrape: &Scrape, name: &str) -> f64 {
    match find(scrape, name, &[]) {
        Some(Value::Gauge(value)) => value,
        other => panic!("{name} is not a gauge: {other:?}"),
    }
}

fn counter(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    match find(scrape, name, labels) {
        Some(Value::Counter(value)) => value,
        other => panic!("{name}{labels:?} is not a counter: {other:?}"),
    }
}

/// A histogram's observation count (its `+Inf` bucket).
fn histogram_count(scrape: &Scrape, name: &str) -> f64 {
    match find(scrape, name, &[]) {
        Some(Value::Histogram(buckets)) => buckets
            .iter()
            .find(|b| b.less_than.is_infinite())
            .map(|b| b.count)
            .expect("+Inf bucket"),
        other => panic!("{name} is not a histogram: {other:?}"),
    }
}

/// `# TYPE` lines: family name → type.
fn families(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| {
            let mut words = rest.split_whitespace();
            Some((words.next()?.to_string(), words.next()?.to_string()))
        })
        .collect()
}

#[test]
fn metrics_of_a_three_node_cluster_carry_etcds_names_types_and_values() {
    let cluster = Cluster::start(3, FAST);
    let leader = cluster.leader();
    let before: Vec<f64> = (1..=3)
        .map(|id| gauge(&scrape(&cluster, id), "etcd_server_proposals_applied_total"))
        .collect();
    for i in 0..20 {
        cluster.put_ok(leader, &format!("/m{i}"), "value");
    }
    let applied = cluster.status(leader).expect("status").applied_index;
    for id in 1..=3 {
        cluster.wait_applied(id, applied);
    }

    // One gRPC call, on node 1.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut kv = pb::kv_client::KvClient::connect(cluster.url(1, ""))
            .await
            .expect("connect");
        let range = kv
            .range(pb::RangeRequest {
                key: b"/m1".to_vec(),
                ..Default::default()
            })
            .await
            .expect("range");
        assert_eq!(range.into_inner().count, 1);
    });

    for id in 1..=3u64 {
        let scrape = scrape(&cluster, id);
        assert_eq!(gauge(&scrape, "etcd_server_has_leader"), 1.0, "node {id}");
        assert_eq!(
            gauge(&scrape, "etcd_server_is_leader"),
            f64::from(u8::from(id == leader)),
            "node {id}"
        );
        let applied_now = gauge(&scrape, "etcd_server_proposals_applied_total");
        assert!(
            applied_now >= applied as f64 && applied_now > before[id as usize - 1],
            "node {id}: applied {applied_now}, was {}, the leader applied {applied}",
            before[id as usize - 1]
        );
        assert!(gauge(&scrape, "etcd_server_proposals_committed_total") >= applied_now);
        gauge(&scrape, "etcd_server_proposals_pending");
        assert!(counter(&scrape, "etcd_server_leader_changes_seen_total", &[]) >= 1.0);
        counter(&scrape, "etcd_server_proposals_failed_total", &[]);
        assert!(histogram_count(&scrape, "etcd_disk_wal_fsync_duration_seconds") > 0.0);
        histogram_count(&scrape, "etcd_disk_backend_commit_duration_seconds");
        // Raft traffic flows between the leader and each follower.
        let peers: Vec<u64> = if id == leader {
            (1..=3u64).filter(|peer| *peer != id).collect()
        } else {
            vec![leader]
        };
        for peer in peers {
            let hex = format!("{peer:x}");
            assert!(
                counter(
                    &scrape,
                    "etcd_network_peer_sent_bytes_total",
                    &[("To", &hex)]
                ) > 0.0,
                "node {id} sent nothing to {peer}"
            );
            assert!(
                counter(
                    &scrape,
                    "etcd_network_peer_received_bytes_total",
                    &[("From", &hex)]
                ) > 0.0,
                "node {id} received nothing from {peer}"
            );
        }
        assert_eq!(gauge(&scrape, "raftkv_keys"), 20.0, "node {id}");
        assert_eq!(gauge(&scrape, "raftkv_members"), 3.0);
        // The same figure as Maintenance.Status's dbSize.
        let status: serde_json::Value = cluster
            .http()
            .post(cluster.url(id, "/v3/maintenance/status"))
            .body("{}")
            .send()
            .expect("status")
            .json()
            .expect("JSON");
        let db_size: f64 = status["dbSize"]
            .as_str()
            .expect("int64 as a string")
            .parse()
            .unwrap();
        assert!(db_size > 0.0);
        assert_eq!(gauge(&scrape, "etcd_mvcc_db_total_size_in_bytes"), db_size);
        // Writes were counted by route class and status on the leader.
        if id == leader {
            assert!(
                counter(
                    &scrape,
                    "raftkv_http_requests_total",
                    &[("route", "key"), ("code", "204")]
                ) >= 20.0
            );
        }
    }
    let node1 = scrape(&cluster, 1);
    assert_eq!(
        counter(
            &node1,
            "grpc_server_handled_total",
            &[
                ("grpc_type", "unary"),
                ("grpc_service", "etcdserverpb.KV"),
                ("grpc_method", "Range"),
                ("grpc_code", "OK"),
            ]
        ),
        1.0
    );
    assert_eq!(
        counter(
            &node1,
            "grpc_server_started_total",
            &[
                ("grpc_service", "etcdserverpb.KV"),
                ("grpc_method", "Range")
            ]
        ),
        1.0
    );
    let families = families(&metrics_text(&cluster, 1));
    assert_eq!(
        families
            .get("grpc_server_handling_seconds")
            .map(String::as_str),
        Some("histogram")
    );
}

/// Polls `GET path` on node `id` until it answers `status`; answers the body.
fn wait_answer(cluster: &Cluster, id: u64, path: &str, status: StatusCode) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(response) = cluster.http().get(cluster.url(id, path)).send() {
            if response.status() == status {
                return response.text().unwrap_or_default();
            }
        }
        assert!(
            Instant::now() < deadline,
            "node {id} never answered {status} on {path}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn health_is_true_with_a_quorum_and_false_on_a_lone_survivor() {
    let mut cluster = Cluster::start(3, FAST);
    cluster.leader();
    for id in 1..=3 {
        let body = wait_answer(&cluster, id, "/health", StatusCode::OK);
        assert_eq!(body, r#"{"health":"true"}"#);
        assert_eq!(wait_answer(&cluster, id, "/readyz", StatusCode::OK), "ok");
        assert_eq!(wait_answer(&cluster, id, "/livez", StatusCode::OK), "ok");
    }
    cluster.kill(2);
    cluster.kill(3);
    let body = wait_answer(&cluster, 1, "/health", StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, r#"{"health":"false"}"#);
    let ready = wait_answer(
        &cluster,
        1,
        "/readyz?verbose",
        StatusCode::SERVICE_UNAVAILABLE,
    );
    assert!(ready.contains("[-]"), "{ready}");
    assert!(ready.ends_with("readyz check failed\n"), "{ready}");
    // Alive, and says so.
    assert_eq!(
        cluster
            .http()
            .get(cluster.url(1, "/livez"))
            .send()
            .unwrap()
            .status(),
        StatusCode::OK
    );
    // Without a quorum the leader is lost sooner or later (check quorum).
    let deadline = Instant::now() + WAIT;
    while gauge(&scrape(&cluster, 1), "etcd_server_has_leader") != 0.0 {
        assert!(Instant::now() < deadline, "the survivor kept a leader");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// etcd names raftkv exposes that a single-member etcd 3.4 does not print:
/// per-peer vectors have no child without a peer, and Go's client prints
/// no family for an empty vector.
const ABSENT_FROM_A_SINGLE_MEMBER_ETCD: &[&str] = &[
    "etcd_network_peer_sent_bytes_total",
    "etcd_network_peer_received_bytes_total",
    "etcd_network_peer_sent_failures_total",
];

#[test]
fn etcd_names_and_health_answers_match_etcd_34() {
    let Some(etcd_binary) = find_tool("etcd", "etcd_names_and_health_answers_match_etcd_34") else {
        return;
    };
    let etcd = Etcd::start(&etcd_binary);
    let cluster = Cluster::start(1, FAST);
    cluster.leader();
    let http = cluster.http();

    // Health: same status and body once both have a leader.
    let deadline = Instant::now() + WAIT;
    let etcd_health = loop {
        let response = http
            .get(format!("{}/health", etcd.client_url))
            .send()
            .expect("etcd /health");
        if response.status() == StatusCode::OK {
            break response.text().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "etcd never healthy:\n{}",
            etcd.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let ours = wait_answer(&cluster, 1, "/health", StatusCode::OK);
    let parse = |body: &str| serde_json::from_str::<serde_json::Value>(body).expect("JSON");
    assert_eq!(parse(&ours), parse(&etcd_health));
    // Other methods: 405 on both.
    for url in [
        format!("{}/health", etcd.client_url),
        cluster.url(1, "/health"),
    ] {
        let put = http.put(&url).body("x").send().unwrap();
        assert_eq!(put.status(), StatusCode::METHOD_NOT_ALLOWED, "{url}");
    }

    // Metric names: every etcd_* and grpc_* family we print exists in etcd
    // 3.4 with the same type.
    let etcd_text = http
        .get(format!("{}/metrics", etcd.client_url))
        .send()
        .expect("etcd /metrics")
        .text()
        .unwrap();
    let theirs = families(&etcd_text);
    let ours = families(&metrics_text(&cluster, 1));
    let mut compared = 0;
    for (name, kind) in &ours {
        if !(name.starts_with("etcd_") || name.starts_with("grpc_")) {
            assert!(
                name.starts_with("raftkv_"),
                "{name}: neither etcd's nor ours"
            );
            continue;
        }
        if ABSENT_FROM_A_SINGLE_MEMBER_ETCD.contains(&name.as_str()) {
            continue;
        }
        // etcd 3.4 prints the handling-time histogram only with
        // `--metrics extensive`.
        if name == "grpc_server_handling_seconds" {
            continue;
        }
        assert_eq!(
            theirs.get(name),
            Some(kind),
            "{name} ({kind}) is not in etcd 3.4's /metrics with that type"
        );
        compared += 1;
    }
    assert!(compared >= 11, "only {compared} names compared");
}
