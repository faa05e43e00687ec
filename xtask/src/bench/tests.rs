//! Tests of the benchmark itself: option parsing, scenario selection, the
//! reports, the peers' line parser, and the load generator plus read-back
//! against an in-process fake key-value server (one that can lose writes,
//! to prove the lost count catches it).
//!
//! They live here rather than in `xtask/tests/` because the bench is a
//! module of the xtask binary, not of its library.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path as KeyPath, State};
use axum::http::StatusCode;
use axum::routing::put;
use axum::Router;

use super::load::{self, Outcome};
use super::report::{self, Row};
use super::scenario::{self, Kind, Scenario};
use super::{options, peers, verify, BenchError};

/// The fake server's map, and "forget every Nth write" (0: never).
#[derive(Clone, Default)]
struct Fake {
    map: Arc<Mutex<HashMap<String, Bytes>>>,
    forget_every: u64,
    writes: Arc<AtomicU64>,
}

async fn fake_put(
    State(fake): State<Fake>,
    KeyPath(key): KeyPath<String>,
    body: Bytes,
) -> StatusCode {
    let n = fake.writes.fetch_add(1, Ordering::Relaxed) + 1;
    if fake.forget_every == 0 || !n.is_multiple_of(fake.forget_every) {
        fake.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, body);
    }
    StatusCode::NO_CONTENT
}

async fn fake_get(
    State(fake): State<Fake>,
    KeyPath(key): KeyPath<String>,
) -> Result<Bytes, StatusCode> {
    let map = fake.map.lock().unwrap_or_else(|e| e.into_inner());
    map.get(&key).cloned().ok_or(StatusCode::NOT_FOUND)
}

/// Serves a fake store on an ephemeral loopback port.
async fn serve_fake(forget_every: u64) -> SocketAddr {
    let fake = Fake {
        forget_every,
        ..Fake::default()
    };
    let app = Router::new()
        .route("/{*key}", put(fake_put).get(fake_get))
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind an ephemeral port");
    let addr = listener.local_addr().expect("bound address");
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("fake server runs");
    });
    addr
}

fn scenario(name: &str, kind: Kind, connections: usize) -> Scenario {
    Scenario {
        name: name.into(),
        kind,
        connections,
        value_bytes: 64,
    }
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn options_have_the_documented_defaults() {
    let parsed = options::parse(&[], Path::new("/ws")).expect("no options parse");
    assert_eq!(parsed.duration, Duration::from_secs(10));
    assert_eq!(parsed.sample_keys, 2_000);
    assert!(!parsed.peers && !parsed.quick && parsed.scenario_filters.is_empty());
    assert_eq!(parsed.peers_dir, Path::new("/ws/../shared/peers"));
}

#[test]
fn quick_shortens_runs_unless_a_duration_is_given() {
    let quick = options::parse(&args(&["--quick"]), Path::new("/")).expect("parses");
    assert_eq!(quick.duration, Duration::from_secs(2));
    assert!(quick.sample_keys < 2_000 && quick.read_keys() < 10_000);
    let both = options::parse(&args(&["--quick", "--duration-secs", "5"]), Path::new("/"))
        .expect("parses");
    assert_eq!(both.duration, Duration::from_secs(5));
}

#[test]
fn options_parse_lists_and_peers() {
    let parsed = options::parse(
        &args(&[
            "--scenarios",
            "write-c64, read",
            "--peers",
            "--openraft",
            "/src/or",
        ]),
        Path::new("/"),
    )
    .expect("parses");
    assert_eq!(parsed.scenario_filters, ["write-c64", "read"]);
    assert!(parsed.peers);
    assert_eq!(parsed.openraft_dir.as_deref(), Some(Path::new("/src/or")));
    let binary = options::parse(&args(&["--raftkv", "/bin/rk"]), Path::new("/")).expect("parses");
    assert_eq!(binary.raftkv_binary.as_deref(), Some(Path::new("/bin/rk")));
    assert!(binary.no_build, "--raftkv skips the build");
}

#[test]
fn bad_options_are_usage_errors() {
    for bad in [
        &["--duration-secs"][..],
        &["--duration-secs", "ten"],
        &["--duration-secs", "0"],
        &["--sample", "-1"],
        &["--frobnicate"],
    ] {
        let result = options::parse(&args(bad), Path::new("/"));
        assert!(
            matches!(result, Err(BenchError::Usage(_))),
            "{bad:?} was accepted"
        );
    }
}

#[test]
fn the_scenarios_are_those_of_the_issue() {
    let all = scenario::all();
    let writes: Vec<(usize, usize)> = all
        .iter()
        .filter(|s| s.kind == Kind::Write)
        .map(|s| (s.connections, s.value_bytes))
        .collect();
    assert_eq!(
        writes,
        [
            (1, 64),
            (64, 64),
            (256, 64),
            (1, 1024),
            (64, 1024),
            (256, 1024)
        ]
    );
    assert!(all
        .iter()
        .any(|s| s.kind == Kind::ReadLinearizable && s.connections == 64));
    assert!(all
        .iter()
        .any(|s| s.kind == Kind::ReadSerializable && s.connections == 64));
    assert!(all
        .iter()
        .any(|s| s.kind == Kind::Mixed { read_percent: 90 }));
}

#[test]
fn scenario_filters_select_by_prefix_and_reject_no_match() {
    let chosen = scenario::select(&args(&["write-c64", "mixed"])).expect("matches");
    let names: Vec<&str> = chosen.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["write-c64-64b", "write-c64-1k", "mixed-c64"]);
    assert!(matches!(
        scenario::select(&args(&["nope"])),
        Err(BenchError::Usage(_))
    ));
}

#[test]
fn peer_script_lines_parse_and_ratios_are_against_raftkv() {
    let write = scenario("write-c64-64b", Kind::Write, 64);
    let ours = peers::parse_line(
        "raftkv",
        &write,
        "raftkv: acked_writes_per_s 30000  p50_ms 1.90  p99_ms 6.10  non2xx 3  errors 1  \
         lost_in_sample(node1,node2,node3) 0,0,0 of 2000",
    )
    .expect("parses");
    assert_eq!(ours.acked_per_s, 30_000.0);
    assert_eq!(ours.error_count, 4);
    assert_eq!(ours.lost, "0,0,0 of 2000");
    let theirs = peers::parse_line(
        "raftexample",
        &write,
        "raftexample: acked_writes_per_s 20000  p50_ms 2.50  p99_ms 9.00  non2xx 0  errors 0  \
         lost_in_sample(node1,node2,node3) 300,310,290 of 2000",
    )
    .expect("parses");
    let table = peers::table(&[ours, theirs]);
    assert!(
        table.contains("| raftexample | 64 | 64 B | 20000 |"),
        "{table}"
    );
    assert!(table.contains("1.50×"), "{table}");
    assert!(peers::parse_line("x", &write, "wrk: connection refused").is_err());
}

fn sample_row(kind: Kind, connections: usize, ops: f64, p99: f64) -> Row {
    Row {
        scenario: scenario(&format!("s-{connections}"), kind, connections),
        ops_per_s: ops,
        latency_ms_p50: 1.0,
        latency_ms_p99: p99,
        latency_ms_p999: 9.5,
        latency_ms_max: 31.25,
        error_count: 2,
        lost: Some(verify::Lost {
            sampled: 100,
            missing_per_node: vec![0, 1, 0],
        }),
    }
}

#[test]
fn table_lines_carry_every_figure() {
    let line = report::table_line(&sample_row(Kind::Write, 64, 12_345.4, 4.25));
    assert_eq!(
        line,
        "| s-64 | 64 | 64 B | 12345 | 1.00 | 4.25 | 9.50 | 31.2 | 2 | 0/1/0 of 100 |\n"
    );
    let header = report::table_header();
    assert_eq!(header.lines().count(), 2);
    assert_eq!(header.matches('|').count(), line.matches('|').count() * 2);
}

#[test]
fn the_plot_is_an_svg_with_both_panels() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bench.svg");
    let rows = [
        sample_row(Kind::Write, 1, 1_000.0, 1.0),
        sample_row(Kind::Write, 64, 30_000.0, 5.0),
        sample_row(Kind::ReadLinearizable, 64, 50_000.0, 2.0),
    ];
    report::plot(&rows, &path).expect("plot is drawn");
    let svg = std::fs::read_to_string(&path).expect("svg written");
    assert!(svg.starts_with("<svg"));
    assert!(
        svg.contains("raftkv writes: throughput") && svg.contains("raftkv writes: p99 latency")
    );
    assert!(svg.contains("64 B"), "legend names the value size");
}

async fn run_writes(addr: SocketAddr, connections: usize) -> (Scenario, Outcome) {
    let write = scenario("w", Kind::Write, connections);
    let outcome = load::run(&write, addr, Duration::from_millis(300), 0)
        .await
        .expect("load runs");
    (write, outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_counted_and_read_back_from_every_node() {
    let addr = serve_fake(0).await;
    let (write, outcome) = run_writes(addr, 4).await;
    assert!(outcome.ok_count > 0, "some writes were acknowledged");
    assert_eq!(outcome.acked.len() as u64, outcome.ok_count);
    assert_eq!(outcome.latency_us.len(), outcome.ok_count);
    assert_eq!(outcome.failed_count + outcome.io_error_count, 0);
    let lost = verify::read_back(&write.name, &outcome.acked, 200, &[addr, addr])
        .await
        .expect("read-back runs");
    assert_eq!(lost.sampled, 200.min(outcome.acked.len()));
    assert_eq!(lost.missing_per_node, [0, 0]);
    let row = Row::new(&write, &outcome, Some(lost));
    assert!(row.ops_per_s > 0.0 && row.latency_ms_p50 <= row.latency_ms_p99);
    assert!(row.latency_ms_p999 <= row.latency_ms_max);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_back_catches_acknowledged_writes_that_were_lost() {
    let addr = serve_fake(4).await;
    let (write, outcome) = run_writes(addr, 2).await;
    assert!(outcome.acked.len() >= 8, "enough writes to lose some");
    let lost = verify::read_back(&write.name, &outcome.acked, usize::MAX, &[addr])
        .await
        .expect("read-back runs");
    assert_eq!(lost.sampled, outcome.acked.len());
    let expected = outcome.acked.len() as u64 / 4;
    assert_eq!(
        lost.total(),
        expected,
        "every 4th acknowledged write was dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_scenarios_find_every_prewritten_key() {
    let addr = serve_fake(0).await;
    load::fill_read_keys(addr, 100).await.expect("keys written");
    for kind in [
        Kind::ReadLinearizable,
        Kind::ReadSerializable,
        Kind::Mixed { read_percent: 90 },
    ] {
        let reads = scenario("r", kind, 3);
        let outcome = load::run(&reads, addr, Duration::from_millis(200), 100)
            .await
            .expect("load runs");
        assert!(outcome.ok_count > 0, "{kind:?} completed requests");
        assert_eq!(outcome.not_found_count, 0, "{kind:?} found every key");
        assert_eq!(outcome.acked.is_empty(), !kind.writes(), "{kind:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_server_is_an_io_error_count_not_a_hang() {
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let (_, outcome) = run_writes(addr, 2).await;
    assert_eq!(outcome.ok_count, 0);
    assert!(outcome.io_error_count > 0);
}

/// A node that accepts connections and never answers (SIGSTOPped, wedged)
/// costs a request timeout and an I/O error, not the whole run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wedged_server_is_an_io_error_count_not_a_hang() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    // Accepts, reads nothing, answers nothing; keeps every socket open.
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let bound = testcluster::REQUEST_TIMEOUT * 3;
    let (_, outcome) = tokio::time::timeout(bound, run_writes(addr, 2))
        .await
        .expect("the load run ends although no request is ever answered");
    assert_eq!(outcome.ok_count, 0);
    assert_eq!(
        outcome.io_error_count, 2,
        "one timed-out request per connection"
    );
}

#[test]
fn tls_comparison_options() {
    let parsed =
        options::parse(&args(&["--tls", "--tls-rounds", "3"]), Path::new("/")).expect("parses");
    assert!(parsed.tls && !parsed.grpc);
    assert_eq!(parsed.tls_rounds, 3);
    assert_eq!(
        options::parse(&args(&["--tls"]), Path::new("/"))
            .expect("parses")
            .tls_rounds,
        2
    );
    for bad in ["0", "21", "x"] {
        assert!(
            options::parse(&args(&["--tls-rounds", bad]), Path::new("/")).is_err(),
            "--tls-rounds {bad} accepted"
        );
    }
}
