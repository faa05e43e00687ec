//! `cargo xtask bench --tls`: what TLS costs on this machine.
//!
//! Starts a plain 3-node cluster and a TLS one (client TLS with client
//! certificates required, peer TLS with peer certificates required, the
//! PKI of `testcluster`'s `TlsMode::full`), alternately, `--tls-rounds`
//! times each, and measures on each:
//! - HTTP `PUT` of 64 B values on 64 keep-alive connections to the leader
//!   (raftexample's route, as the yardstick drives it): acknowledged
//!   writes/s, p50/p99, and the CPU the three nodes used per acknowledged
//!   write (user + system, from `/proc/<pid>/stat`);
//! - gRPC `Put` (64 channels, 64 B), the same figures;
//! - new connections per second: 8 tasks each opening a connection
//!   (TCP, then the TLS handshake on the TLS cluster), asking
//!   `GET /health` and closing it;
//! - a read-back of a sample of acknowledged HTTP writes on every member
//!   (lost writes must be 0).
//!
//! Ratios are TLS / plain from the same invocation; absolute figures drift
//! between runs on a shared machine.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use etcdproto::etcdserverpb as pb;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::HOST;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use pb::kv_client::KvClient;
use testcluster::{Cluster, ClusterConfig, TlsMode, TlsPaths};
use tokio::net::TcpStream;
use tokio::task::block_in_place;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::BenchError;

/// Connections of the write scenarios (the yardstick's 64).
const CONNECTIONS: u32 = 64;
/// Tasks opening connections in the handshake scenario.
const HANDSHAKE_TASKS: u32 = 8;
/// Value size of every write.
const VALUE_BYTES: usize = 64;
/// Acknowledged HTTP writes read back from every member per round.
const READ_BACK_SAMPLE: usize = 500;
/// Bound on one request or connection attempt.
const REQUEST_TIMEOUT: Duration = testcluster::REQUEST_TIMEOUT;
/// How long the cluster may take to elect a leader.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// One cluster's figures.
#[derive(Debug, Default, Clone)]
struct Figures {
    http_writes_per_s: f64,
    http_p50_ms: f64,
    http_p99_ms: f64,
    http_cpu_us_per_write: f64,
    grpc_writes_per_s: f64,
    grpc_p50_ms: f64,
    grpc_cpu_us_per_write: f64,
    connections_per_s: f64,
    lost: u64,
    errors: u64,
}

/// How to reach a cluster's client ports.
#[derive(Clone)]
struct Dialer {
    tls: Option<tls::ClientTls>,
    grpc_tls: Option<ClientTlsConfig>,
}

impl Dialer {
    fn plain() -> Dialer {
        Dialer {
            tls: None,
            grpc_tls: None,
        }
    }

    fn for_cluster(paths: &TlsPaths) -> Result<Dialer, BenchError> {
        let client = tls::ClientTls::load(tls::ClientTlsFiles {
            trusted_ca_file: Some(paths.ca_file.clone()),
            cert_file: Some(paths.client_cert_file.clone()),
            key_file: Some(paths.client_key_file.clone()),
        })
        .map_err(|e| BenchError::Cluster(format!("client TLS: {e}")))?;
        let read = |path: &Path| {
            std::fs::read(path).map_err(|e| BenchError::io(&format!("read {}", path.display()), e))
        };
        let grpc = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(&paths.ca_file)?))
            .identity(Identity::from_pem(
                read(&paths.client_cert_file)?,
                read(&paths.client_key_file)?,
            ))
            .assume_http2(true);
        Ok(Dialer {
            tls: Some(client),
            grpc_tls: Some(grpc),
        })
    }

    /// One HTTP/1.1 connection to `addr` (TLS if the cluster has it).
    async fn http(&self, addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>, String> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        tcp.set_nodelay(true)
            .map_err(|e| format!("nodelay {addr}: {e}"))?;
        let sender = match &self.tls {
            Some(tls) => {
                let stream = tls
                    .connect("127.0.0.1", tcp)
                    .await
                    .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
                let (sender, connection) = http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| format!("HTTP handshake with {addr}: {e}"))?;
                tokio::spawn(connection);
                sender
            }
            None => {
                let (sender, connection) = http1::handshake(TokioIo::new(tcp))
                    .await
                    .map_err(|e| format!("HTTP handshake with {addr}: {e}"))?;
                tokio::spawn(connection);
                sender
            }
        };
        Ok(sender)
    }

    /// A gRPC channel to `addr`.
    async fn grpc(&self, addr: SocketAddr) -> Result<Channel, BenchError> {
        let scheme = if self.grpc_tls.is_some() {
            "https"
        } else {
            "http"
        };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| BenchError::Cluster(e.to_string()))?;
        if let Some(config) = &self.grpc_tls {
            endpoint = endpoint
                .tls_config(config.clone())
                .map_err(|e| BenchError::Cluster(e.to_string()))?;
        }
        endpoint
            .connect()
            .await
            .map_err(|e| BenchError::Cluster(format!("gRPC connect to {addr}: {e}")))
    }
}

/// Sends one request and reads its whole answer.
async fn exchange(
    sender: &mut SendRequest<Full<Bytes>>,
    method: Method,
    path: &str,
    body: Bytes,
) -> Result<(StatusCode, Bytes), String> {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, "127.0.0.1")
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let answer = async {
        sender.ready().await.map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, answer)
        .await
        .map_err(|_| format!("{path}: no answer within {REQUEST_TIMEOUT:?}"))?
}

/// Runs the comparison; returns the markdown table.
pub(crate) async fn run(
    binary: &Path,
    duration: Duration,
    rounds: u32,
) -> Result<String, BenchError> {
    let mut plain = Vec::new();
    let mut secure = Vec::new();
    for round in 1..=rounds {
        for with_tls in [false, true] {
            let label = if with_tls { "TLS" } else { "plain" };
            eprintln!("bench --tls: round {round}/{rounds}, {label} cluster");
            let figures = measure_cluster(binary, with_tls, duration).await?;
            eprintln!("bench --tls: {label}: {figures:?}");
            if with_tls {
                secure.push(figures);
            } else {
                plain.push(figures);
            }
        }
    }
    Ok(table(&median(&plain), &median(&secure), rounds, duration))
}

async fn measure_cluster(
    binary: &Path,
    with_tls: bool,
    duration: Duration,
) -> Result<Figures, BenchError> {
    let config = ClusterConfig {
        tls: with_tls.then(TlsMode::full),
        ..ClusterConfig::new(binary)
    };
    let mut cluster = block_in_place(|| Cluster::start(config, 3))
        .map_err(|e| BenchError::Cluster(e.to_string()))?;
    let leader = block_in_place(|| cluster.wait_agreed_leader(READY_TIMEOUT))
        .map_err(|e| BenchError::Cluster(e.to_string()))?;
    let dialer = match cluster.tls_paths() {
        Some(paths) => Dialer::for_cluster(paths)?,
        None => Dialer::plain(),
    };
    let leader_addr = cluster
        .client_addr(leader)
        .ok_or_else(|| BenchError::Cluster(format!("no address for node {leader}")))?;
    let members: Vec<SocketAddr> = cluster
        .ids()
        .into_iter()
        .filter_map(|id| cluster.client_addr(id))
        .collect();
    let pids: Vec<u32> = cluster
        .ids()
        .into_iter()
        .filter_map(|id| cluster.pid(id))
        .collect();
    // A warm-up write, so the first measured request is not an election.
    let mut warm = dialer.http(leader_addr).await.map_err(BenchError::Http)?;
    exchange(
        &mut warm,
        Method::PUT,
        "/bench-tls-warm",
        Bytes::from_static(b"w"),
    )
    .await
    .map_err(BenchError::Http)?;

    let mut figures = Figures::default();
    let cpu_before = cpu_ticks(&pids);
    let http = http_puts(&dialer, leader_addr, duration).await;
    let cpu_http = cpu_ticks(&pids).saturating_sub(cpu_before);
    figures.http_writes_per_s = http.acked.len() as f64 / duration.as_secs_f64();
    figures.http_p50_ms = http.latency_us.value_at_quantile(0.5) as f64 / 1000.0;
    figures.http_p99_ms = http.latency_us.value_at_quantile(0.99) as f64 / 1000.0;
    figures.http_cpu_us_per_write = cpu_us_per(cpu_http, http.acked.len());
    figures.errors += http.errors;
    figures.lost = read_back(&dialer, &members, &http.acked).await?;

    let cpu_before = cpu_ticks(&pids);
    let grpc = grpc_puts(&dialer, leader_addr, duration).await?;
    let cpu_grpc = cpu_ticks(&pids).saturating_sub(cpu_before);
    figures.grpc_writes_per_s = grpc.acked.len() as f64 / duration.as_secs_f64();
    figures.grpc_p50_ms = grpc.latency_us.value_at_quantile(0.5) as f64 / 1000.0;
    figures.grpc_cpu_us_per_write = cpu_us_per(cpu_grpc, grpc.acked.len());
    figures.errors += grpc.errors;

    let (opened, errors) = connections(&dialer, leader_addr, duration / 2).await;
    figures.connections_per_s = opened as f64 / (duration / 2).as_secs_f64();
    figures.errors += errors;
    for id in block_in_place(|| cluster.stop_all(Duration::from_secs(10))) {
        eprintln!("bench --tls: node {id} ignored SIGTERM; killed it");
    }
    Ok(figures)
}

/// What one write scenario saw.
struct Writes {
    acked: Vec<String>,
    latency_us: Histogram<u64>,
    errors: u64,
}

impl Writes {
    fn new() -> Writes {
        Writes {
            acked: Vec::new(),
            latency_us: Histogram::new(3).expect("3 significant digits is a valid precision"),
            errors: 0,
        }
    }

    /// Records the latency of a request sent at `began` (the histogram
    /// grows as needed: `saturating_record` would clamp to its initial range).
    fn record(&mut self, began: Instant) {
        let latency_us = (began.elapsed().as_micros() as u64).max(1);
        if self.latency_us.record(latency_us).is_err() {
            self.errors += 1;
        }
    }

    fn merge(&mut self, other: Writes) {
        self.acked.extend(other.acked);
        self.errors += other.errors;
        // Both histograms auto-resize; adding cannot fail on bounds.
        let _ = self.latency_us.add(&other.latency_us);
    }
}

async fn http_puts(dialer: &Dialer, addr: SocketAddr, duration: Duration) -> Writes {
    let end = Instant::now() + duration;
    let value = Bytes::from(vec![b'v'; VALUE_BYTES]);
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|worker| {
            let dialer = dialer.clone();
            let value = value.clone();
            tokio::spawn(async move {
                let mut out = Writes::new();
                let mut sender = None;
                let mut seq = 0u64;
                while Instant::now() < end {
                    if sender.is_none() {
                        match dialer.http(addr).await {
                            Ok(s) => sender = Some(s),
                            Err(_) => {
                                out.errors += 1;
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                continue;
                            }
                        }
                    }
                    let Some(connection) = sender.as_mut() else {
                        continue;
                    };
                    seq += 1;
                    let path = format!("/bench-tls-{worker}-{seq}");
                    let began = Instant::now();
                    match exchange(connection, Method::PUT, &path, value.clone()).await {
                        Ok((status, _)) if status.is_success() => {
                            out.record(began);
                            out.acked.push(path);
                        }
                        Ok(_) => out.errors += 1,
                        Err(_) => {
                            out.errors += 1;
                            sender = None;
                        }
                    }
                }
                out
            })
        })
        .collect();
    let mut all = Writes::new();
    for task in tasks {
        if let Ok(writes) = task.await {
            all.merge(writes);
        }
    }
    all
}

async fn grpc_puts(
    dialer: &Dialer,
    addr: SocketAddr,
    duration: Duration,
) -> Result<Writes, BenchError> {
    let end = Instant::now() + duration;
    let mut tasks = Vec::new();
    for worker in 0..CONNECTIONS {
        let mut client = KvClient::new(dialer.grpc(addr).await?);
        tasks.push(tokio::spawn(async move {
            let mut out = Writes::new();
            let mut seq = 0u64;
            while Instant::now() < end {
                seq += 1;
                let key = format!("bench-tls-grpc/{worker}/{seq}");
                let request = pb::PutRequest {
                    key: key.clone().into_bytes(),
                    value: vec![b'v'; VALUE_BYTES],
                    ..Default::default()
                };
                let began = Instant::now();
                match tokio::time::timeout(REQUEST_TIMEOUT, client.put(request)).await {
                    Ok(Ok(_)) => {
                        out.record(began);
                        out.acked.push(key);
                    }
                    _ => out.errors += 1,
                }
            }
            out
        }));
    }
    let mut all = Writes::new();
    for task in tasks {
        if let Ok(writes) = task.await {
            all.merge(writes);
        }
    }
    Ok(all)
}

/// Opens connections back to back (one `GET /health` on each); returns how
/// many completed and how many failed.
async fn connections(dialer: &Dialer, addr: SocketAddr, duration: Duration) -> (u64, u64) {
    let end = Instant::now() + duration;
    let opened = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..HANDSHAKE_TASKS)
        .map(|_| {
            let dialer = dialer.clone();
            let (opened, failed) = (opened.clone(), failed.clone());
            tokio::spawn(async move {
                while Instant::now() < end {
                    let ok = match dialer.http(addr).await {
                        Ok(mut sender) => {
                            matches!(exchange(&mut sender, Method::GET, "/health", Bytes::new()).await,
                                Ok((status, _)) if status.is_success())
                        }
                        Err(_) => false,
                    };
                    let counter = if ok { &opened } else { &failed };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    (
        opened.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    )
}

/// Reads a sample of acknowledged keys back from every member
/// (linearizable GETs); returns how many reads missed.
async fn read_back(
    dialer: &Dialer,
    members: &[SocketAddr],
    acked: &[String],
) -> Result<u64, BenchError> {
    let step = (acked.len() / READ_BACK_SAMPLE).max(1);
    let mut missing = 0;
    for member in members {
        let mut sender = dialer.http(*member).await.map_err(BenchError::Http)?;
        for path in acked.iter().step_by(step) {
            let (status, _) = exchange(&mut sender, Method::GET, path, Bytes::new())
                .await
                .map_err(BenchError::Http)?;
            if status != StatusCode::OK {
                missing += 1;
            }
        }
    }
    Ok(missing)
}

/// User + system CPU of `pids`, in clock ticks.
fn cpu_ticks(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            // Fields after the command name (which may hold spaces) start at ") ".
            let rest = stat.rsplit_once(") ")?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // utime and stime are fields 14 and 15 of the whole line, 12 and 13 here.
            let user: u64 = fields.get(11)?.parse().ok()?;
            let system: u64 = fields.get(12)?.parse().ok()?;
            Some(user + system)
        })
        .sum()
}

/// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ, 100 on Linux).
const TICKS_PER_S: f64 = 100.0;

fn cpu_us_per(ticks: u64, writes: usize) -> f64 {
    if writes == 0 {
        return 0.0;
    }
    ticks as f64 / TICKS_PER_S * 1e6 / writes as f64
}

/// The per-field median of several rounds.
fn median(rounds: &[Figures]) -> Figures {
    let pick = |field: fn(&Figures) -> f64| -> f64 {
        let mut values: Vec<f64> = rounds.iter().map(field).collect();
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or(0.0)
    };
    Figures {
        http_writes_per_s: pick(|f| f.http_writes_per_s),
        http_p50_ms: pick(|f| f.http_p50_ms),
        http_p99_ms: pick(|f| f.http_p99_ms),
        http_cpu_us_per_write: pick(|f| f.http_cpu_us_per_write),
        grpc_writes_per_s: pick(|f| f.grpc_writes_per_s),
        grpc_p50_ms: pick(|f| f.grpc_p50_ms),
        grpc_cpu_us_per_write: pick(|f| f.grpc_cpu_us_per_write),
        connections_per_s: pick(|f| f.connections_per_s),
        lost: rounds.iter().map(|f| f.lost).sum(),
        errors: rounds.iter().map(|f| f.errors).sum(),
    }
}

fn table(plain: &Figures, secure: &Figures, rounds: u32, duration: Duration) -> String {
    let ratio = |tls: f64, base: f64| {
        if base > 0.0 {
            format!("{:.2}", tls / base)
        } else {
            "-".into()
        }
    };
    let rows: [(&str, f64, f64, usize); 8] = [
        (
            "HTTP PUT c64, acknowledged writes/s",
            plain.http_writes_per_s,
            secure.http_writes_per_s,
            0,
        ),
        (
            "HTTP PUT c64, p50 ms",
            plain.http_p50_ms,
            secure.http_p50_ms,
            2,
        ),
        (
            "HTTP PUT c64, p99 ms",
            plain.http_p99_ms,
            secure.http_p99_ms,
            2,
        ),
        (
            "HTTP PUT c64, CPU µs per write (3 nodes)",
            plain.http_cpu_us_per_write,
            secure.http_cpu_us_per_write,
            1,
        ),
        (
            "gRPC Put c64, acknowledged writes/s",
            plain.grpc_writes_per_s,
            secure.grpc_writes_per_s,
            0,
        ),
        (
            "gRPC Put c64, p50 ms",
            plain.grpc_p50_ms,
            secure.grpc_p50_ms,
            2,
        ),
        (
            "gRPC Put c64, CPU µs per write (3 nodes)",
            plain.grpc_cpu_us_per_write,
            secure.grpc_cpu_us_per_write,
            1,
        ),
        (
            "new connections/s (connect, handshake, GET /health; 8 tasks)",
            plain.connections_per_s,
            secure.connections_per_s,
            0,
        ),
    ];
    let mut out = format!(
        "TLS against plain, medians of {rounds} alternating rounds of {} s each \
         (TLS: client certificates required, peers authenticated by certificate):\n\n\
         | measure | plain | TLS | TLS / plain |\n|---|--:|--:|--:|\n",
        duration.as_secs()
    );
    for (name, base, tls, digits) in rows {
        out.push_str(&format!(
            "| {name} | {base:.digits$} | {tls:.digits$} | {} |\n",
            ratio(tls, base)
        ));
    }
    out.push_str(&format!(
        "\nLost acknowledged writes in the read-back samples: plain {}, TLS {}. \
         Failed requests or connections: plain {}, TLS {}.\n",
        plain.lost, secure.lost, plain.errors, secure.errors
    ));
    out
}
