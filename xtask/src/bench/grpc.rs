//! `cargo xtask bench --grpc`: etcd's v3 gRPC API driven by one Rust client
//! (the tonic client generated in etcdproto) against a 3-node raftkv cluster
//! and a 3-member etcd cluster (the `etcd` on the PATH), one after the other
//! in the same run, reported as ratios.
//!
//! Scenarios: Put with 1 and 64 connections (each connection one request at
//! a time), a one-key Range linearizable and serializable (64 connections),
//! a Range of 1,000 keys (8 connections), and a compare-and-swap Txn on
//! `mod_revision` (64 connections, one key each); lease churn: LeaseGrant
//! (64 connections) and keep-alives (64 connections, each renewing its own
//! lease on one long-lived stream), and expiry (3,000 leases of the
//! shortest TTL, each with a key, granted in a burst or paced at 600/s:
//! expiries per second, and each lease's lateness past its deadline as the
//! latency columns; `lost` there counts attached keys that outlived their
//! lease). Every acknowledged Put is
//! read back afterwards (a sample): the `lost` column. `--scenarios` selects by name
//! prefix.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcdproto::etcdserverpb as pb;
use hdrhistogram::Histogram;
use pb::kv_client::KvClient;
use pb::lease_client::LeaseClient;
use pb::maintenance_client::MaintenanceClient;
use tonic::transport::Channel;

use super::cluster::BenchCluster;
use super::options::Options;
use super::BenchError;

/// Members of the etcd cluster (same as raftkv's bench cluster).
const ETCD_MEMBERS: usize = 3;
/// Keys written for the 1,000-key range.
const RANGE_KEYS: usize = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Put,
    RangeOne {
        serializable: bool,
    },
    RangeMany,
    TxnCas,
    LeaseGrant,
    LeaseKeepAlive,
    /// Leases of the shortest TTL left to expire, granted as fast as the
    /// connections go (`grants_per_s` None) or paced.
    LeaseExpire {
        grants_per_s: Option<u32>,
    },
}

/// TTL of the leases the lease scenarios grant: far longer than a run.
const BENCH_LEASE_TTL_S: i64 = 600;
/// Leases the expiry scenario grants, each with one attached key.
const EXPIRY_LEASES: usize = 3_000;
/// TTL the expiry scenario asks for: below both systems' minimum, so each
/// grants its shortest TTL (the grant's answer says which).
const EXPIRY_TTL_S: i64 = 1;
/// Grants per second of the paced expiry scenario: below both systems'
/// expiry rate limit (1,000/s), so its lateness is each system's own and
/// not the queue behind the limit.
const EXPIRY_PACED_GRANTS_PER_S: u32 = 600;
/// How often the expiry scenario lists the leases still granted.
const EXPIRY_POLL: Duration = Duration::from_millis(50);
/// How long the expiry scenario waits for the last lease to go.
const EXPIRY_WAIT: Duration = Duration::from_secs(60);

struct Scenario {
    name: &'static str,
    kind: Kind,
    connections: usize,
}

const SCENARIOS: [Scenario; 10] = [
    Scenario {
        name: "put-c1",
        kind: Kind::Put,
        connections: 1,
    },
    Scenario {
        name: "put-c64",
        kind: Kind::Put,
        connections: 64,
    },
    Scenario {
        name: "range-lin-c64",
        kind: Kind::RangeOne {
            serializable: false,
        },
        connections: 64,
    },
    Scenario {
        name: "range-ser-c64",
        kind: Kind::RangeOne { serializable: true },
        connections: 64,
    },
    Scenario {
        name: "range-1000-keys-c8",
        kind: Kind::RangeMany,
        connections: 8,
    },
    Scenario {
        name: "txn-cas-c64",
        kind: Kind::TxnCas,
        connections: 64,
    },
    Scenario {
        name: "lease-grant-c64",
        kind: Kind::LeaseGrant,
        connections: 64,
    },
    Scenario {
        name: "lease-keepalive-c64",
        kind: Kind::LeaseKeepAlive,
        connections: 64,
    },
    Scenario {
        name: "lease-expire-burst",
        kind: Kind::LeaseExpire { grants_per_s: None },
        connections: 64,
    },
    Scenario {
        name: "lease-expire-paced",
        kind: Kind::LeaseExpire {
            grants_per_s: Some(EXPIRY_PACED_GRANTS_PER_S),
        },
        connections: 64,
    },
];

/// One scenario's result on one system.
#[derive(Debug, Clone)]
struct Measured {
    ops_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
    lost: u64,
}

/// A 3-member etcd on loopback, killed on drop.
struct EtcdCluster {
    children: Vec<Child>,
    client_addrs: Vec<SocketAddr>,
    _dir: tempfile::TempDir,
}

impl EtcdCluster {
    fn start(binary: &Path) -> Result<Self, BenchError> {
        let dir = tempfile::Builder::new()
            .prefix("etcd-bench.")
            .tempdir()
            .map_err(|e| BenchError::io("create a temp dir", e))?;
        let ports = testcluster::reserve_ports(2 * ETCD_MEMBERS)
            .map_err(|e| BenchError::Cluster(e.to_string()))?;
        let (peer_ports, client_ports) = ports.split_at(ETCD_MEMBERS);
        let initial = peer_ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("e{}=http://127.0.0.1:{p}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut children = Vec::new();
        for i in 0..ETCD_MEMBERS {
            let client = format!("http://127.0.0.1:{}", client_ports[i]);
            let peer = format!("http://127.0.0.1:{}", peer_ports[i]);
            let log = std::fs::File::create(dir.path().join(format!("e{}.log", i + 1)))
                .map_err(|e| BenchError::io("create an etcd log", e))?;
            let child = Command::new(binary)
                .args(["--name", &format!("e{}", i + 1)])
                .arg("--data-dir")
                .arg(dir.path().join(format!("e{}", i + 1)))
                .args(["--listen-client-urls", &client])
                .args(["--advertise-client-urls", &client])
                .args(["--listen-peer-urls", &peer])
                .args(["--initial-advertise-peer-urls", &peer])
                .args(["--initial-cluster", &initial])
                .args(["--initial-cluster-state", "new"])
                .args(["--log-level", "warn"])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(|e| BenchError::io("start etcd", e))?;
            children.push(child);
        }
        Ok(EtcdCluster {
            children,
            client_addrs: client_ports
                .iter()
                .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
                .collect(),
            _dir: dir,
        })
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn find_etcd() -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join("etcd"))
        .find(|path| path.is_file())
}

async fn channel(addr: SocketAddr) -> Result<Channel, BenchError> {
    Channel::from_shared(format!("http://{addr}"))
        .map_err(|e| BenchError::Cluster(e.to_string()))?
        .connect()
        .await
        .map_err(|e| BenchError::Cluster(format!("connect to {addr}: {e}")))
}

/// The member that says it is the leader (by `Maintenance.Status`).
async fn leader_of(addrs: &[SocketAddr]) -> Result<SocketAddr, BenchError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        for addr in addrs {
            let Ok(channel) = channel(*addr).await else {
                continue;
            };
            let Ok(status) = MaintenanceClient::new(channel)
                .status(pb::StatusRequest::default())
                .await
            else {
                continue;
            };
            let status = status.into_inner();
            let member = status.header.map(|h| h.member_id).unwrap_or(0);
            if status.leader != 0 && status.leader == member {
                return Ok(*addr);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(BenchError::Cluster(format!("no leader among {addrs:?}")))
}

fn put(key: String, value: &[u8]) -> pb::PutRequest {
    pb::PutRequest {
        key: key.into_bytes(),
        value: value.to_vec(),
        ..Default::default()
    }
}

/// Runs one scenario against the leader at `addr`.
async fn measure(
    scenario: &Scenario,
    addr: SocketAddr,
    duration: Duration,
    sample: usize,
) -> Result<Measured, BenchError> {
    if let Kind::LeaseExpire { grants_per_s } = scenario.kind {
        return measure_expiry(scenario, addr, grants_per_s).await;
    }
    let system_tag = addr.port();
    // Setup: keys the reads need.
    let mut setup = KvClient::new(channel(addr).await?);
    match scenario.kind {
        Kind::RangeOne { .. } => {
            setup
                .put(put("bench/one".into(), &[b'x'; 64]))
                .await
                .map_err(|e| BenchError::Cluster(e.to_string()))?;
        }
        Kind::RangeMany => {
            for i in 0..RANGE_KEYS {
                setup
                    .put(put(format!("bench/many/{i:05}"), &[b'x'; 64]))
                    .await
                    .map_err(|e| BenchError::Cluster(e.to_string()))?;
            }
        }
        _ => {}
    }
    let mut tasks = Vec::new();
    let start = Instant::now();
    let end = start + duration;
    for worker in 0..scenario.connections {
        let worker_channel = channel(addr).await?;
        let mut client = KvClient::new(worker_channel.clone());
        let mut lease = LeaseClient::new(worker_channel);
        let kind = scenario.kind;
        let name = scenario.name;
        // Keep-alives: this worker's lease and its stream.
        let mut keep_alive = None;
        if kind == Kind::LeaseKeepAlive {
            let granted = lease
                .lease_grant(pb::LeaseGrantRequest {
                    ttl: BENCH_LEASE_TTL_S,
                    id: 0,
                })
                .await
                .map_err(|e| BenchError::Cluster(e.to_string()))?
                .into_inner();
            // The first keep-alive goes in before the call: a Go server
            // (etcd) sends the response headers only with its first answer.
            let (sender, receiver) = tokio::sync::mpsc::channel(1);
            sender
                .send(pb::LeaseKeepAliveRequest { id: granted.id })
                .await
                .map_err(|e| BenchError::Cluster(e.to_string()))?;
            let mut answers = lease
                .lease_keep_alive(tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(
                    receiver,
                ))
                .await
                .map_err(|e| BenchError::Cluster(e.to_string()))?
                .into_inner();
            answers
                .message()
                .await
                .map_err(|e| BenchError::Cluster(e.to_string()))?;
            keep_alive = Some((granted.id, sender, answers));
        }
        tasks.push(tokio::spawn(async move {
            let mut latency_us = Histogram::<u64>::new(3).expect("histogram");
            let mut errors = 0u64;
            let mut acked = Vec::new();
            let mut last_mod = 0i64;
            let cas_key = format!("bench/{name}/{system_tag}/cas/{worker}").into_bytes();
            let mut n = 0u64;
            while Instant::now() < end {
                let began = Instant::now();
                let ok = match kind {
                    Kind::Put => {
                        let key = format!("bench/{name}/{worker}/{n}");
                        let done = client.put(put(key.clone(), &[b'v'; 64])).await.is_ok();
                        if done {
                            acked.push(key);
                        }
                        done
                    }
                    Kind::RangeOne { serializable } => client
                        .range(pb::RangeRequest {
                            key: b"bench/one".to_vec(),
                            serializable,
                            ..Default::default()
                        })
                        .await
                        .is_ok(),
                    Kind::RangeMany => client
                        .range(pb::RangeRequest {
                            key: b"bench/many/".to_vec(),
                            range_end: b"bench/many0".to_vec(),
                            ..Default::default()
                        })
                        .await
                        .is_ok_and(|r| r.into_inner().kvs.len() == RANGE_KEYS),
                    Kind::TxnCas => {
                        let txn = pb::TxnRequest {
                            compare: vec![pb::Compare {
                                key: cas_key.clone(),
                                target: pb::compare::CompareTarget::Mod as i32,
                                result: pb::compare::CompareResult::Equal as i32,
                                target_union: Some(pb::compare::TargetUnion::ModRevision(last_mod)),
                                ..Default::default()
                            }],
                            success: vec![pb::RequestOp {
                                request: Some(pb::request_op::Request::RequestPut(
                                    pb::PutRequest {
                                        key: cas_key.clone(),
                                        value: n.to_string().into_bytes(),
                                        ..Default::default()
                                    },
                                )),
                            }],
                            failure: Vec::new(),
                        };
                        match client.txn(txn).await {
                            Ok(response) => {
                                let response = response.into_inner();
                                if response.succeeded {
                                    last_mod = response.header.map(|h| h.revision).unwrap_or(0);
                                }
                                response.succeeded
                            }
                            Err(_) => false,
                        }
                    }
                    Kind::LeaseGrant => lease
                        .lease_grant(pb::LeaseGrantRequest {
                            ttl: BENCH_LEASE_TTL_S,
                            id: 0,
                        })
                        .await
                        .is_ok(),
                    Kind::LeaseExpire { .. } => false,
                    Kind::LeaseKeepAlive => match keep_alive.as_mut() {
                        Some((id, sender, answers)) => {
                            sender
                                .send(pb::LeaseKeepAliveRequest { id: *id })
                                .await
                                .is_ok()
                                && matches!(answers.message().await, Ok(Some(answer)) if answer.ttl > 0)
                        }
                        None => false,
                    },
                };
                n += 1;
                if ok {
                    let _ = latency_us.record(began.elapsed().as_micros() as u64);
                } else {
                    errors += 1;
                }
            }
            (latency_us, errors, acked)
        }));
    }
    let mut latency_us = Histogram::<u64>::new(3).expect("histogram");
    let mut errors = 0;
    let mut acked = Vec::new();
    for task in tasks {
        let (histogram, task_errors, task_acked) = task
            .await
            .map_err(|e| BenchError::Cluster(format!("a load task failed: {e}")))?;
        let _ = latency_us.add(&histogram);
        errors += task_errors;
        acked.extend(task_acked);
    }
    let elapsed = start.elapsed().as_secs_f64();
    // Read back a sample of the acknowledged writes.
    let mut lost = 0;
    let step = (acked.len() / sample.max(1)).max(1);
    for key in acked.iter().step_by(step) {
        let found = setup
            .range(pb::RangeRequest {
                key: key.clone().into_bytes(),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().count)
            .unwrap_or(0);
        if found != 1 {
            lost += 1;
        }
    }
    Ok(Measured {
        ops_per_sec: latency_us.len() as f64 / elapsed,
        p50_ms: latency_us.value_at_quantile(0.5) as f64 / 1_000.0,
        p99_ms: latency_us.value_at_quantile(0.99) as f64 / 1_000.0,
        errors,
        lost,
    })
}

/// Lease expiry: `EXPIRY_LEASES` leases of the shortest TTL, each with one
/// attached key, granted over `connections` connections; then the leases
/// still granted are listed every `EXPIRY_POLL` until none is left.
/// Throughput is expiries per second from the first deadline (first grant
/// plus the granted TTL) to the last lease gone; the latencies are each
/// lease's lateness, from its deadline (its grant's answer plus the TTL)
/// to the first listing without it, so they include up to one poll
/// interval. `lost` counts attached keys still readable at the end.
async fn measure_expiry(
    scenario: &Scenario,
    addr: SocketAddr,
    grants_per_s: Option<u32>,
) -> Result<Measured, BenchError> {
    let per_worker = EXPIRY_LEASES.div_ceil(scenario.connections);
    // Paced: worker `w` sends its `n`th grant at `n * gap`, offset by `w`.
    let gap = grants_per_s
        .map(|rate| Duration::from_secs_f64(scenario.connections as f64 / f64::from(rate.max(1))));
    // Granted leases not yet seen gone: id -> (grant answered, deadline).
    let live: Arc<Mutex<HashMap<i64, (Instant, Instant)>>> = Arc::default();
    let first_grant = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..scenario.connections {
        let worker_channel = channel(addr).await?;
        let connections = scenario.connections;
        let live = Arc::clone(&live);
        tasks.push(tokio::spawn(async move {
            let mut lease = LeaseClient::new(worker_channel.clone());
            let mut kv = KvClient::new(worker_channel);
            let mut granted = Vec::new();
            let mut errors = 0u64;
            for n in 0..per_worker {
                if let Some(gap) = gap {
                    let offset = gap.mul_f64(worker as f64 / connections as f64);
                    tokio::time::sleep_until((first_grant + gap * n as u32 + offset).into()).await;
                }
                let grant = lease
                    .lease_grant(pb::LeaseGrantRequest {
                        ttl: EXPIRY_TTL_S,
                        id: 0,
                    })
                    .await;
                let Ok(grant) = grant.map(|g| g.into_inner()) else {
                    errors += 1;
                    continue;
                };
                let answered = Instant::now();
                let deadline = answered + Duration::from_secs(grant.ttl.max(0) as u64);
                live.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(grant.id, (answered, deadline));
                let key = format!("bench/expire/{worker}/{n}");
                let attached = kv
                    .put(pb::PutRequest {
                        key: key.clone().into_bytes(),
                        value: vec![b'v'; 64],
                        lease: grant.id,
                        ..Default::default()
                    })
                    .await;
                if attached.is_err() {
                    // The lease may already be gone on a slow machine.
                    errors += 1;
                }
                granted.push((grant.id, grant.ttl, deadline, key));
            }
            (granted, errors)
        }));
    }
    // Lists the leases while the grants go on, so early leases are not
    // measured late. A lease is judged only by a listing asked for after
    // its grant was answered.
    let mut lateness_us = Histogram::<u64>::new(3).expect("histogram");
    let mut lease = LeaseClient::new(channel(addr).await?);
    let mut last_gone = Instant::now();
    let mut give_up = None;
    loop {
        let granting = tasks.iter().any(|task| !task.is_finished());
        let pending = live.lock().unwrap_or_else(|e| e.into_inner()).len();
        if !granting && pending == 0 {
            break;
        }
        if !granting {
            let limit = *give_up.get_or_insert_with(|| Instant::now() + EXPIRY_WAIT);
            if Instant::now() > limit {
                break;
            }
        }
        tokio::time::sleep(EXPIRY_POLL).await;
        let asked = Instant::now();
        let Ok(listed) = lease.lease_leases(pb::LeaseLeasesRequest {}).await else {
            continue;
        };
        let now = Instant::now();
        let still: HashSet<i64> = listed.into_inner().leases.iter().map(|l| l.id).collect();
        live.lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|id, (answered, deadline)| {
                if still.contains(id) || *answered > asked {
                    return true;
                }
                let late = now.saturating_duration_since(*deadline);
                let _ = lateness_us.record(late.as_micros() as u64);
                last_gone = now;
                false
            });
    }
    let mut granted = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (task_granted, task_errors) = task
            .await
            .map_err(|e| BenchError::Cluster(format!("a grant task failed: {e}")))?;
        granted.extend(task_granted);
        errors += task_errors;
    }
    let ttl_s = granted.iter().map(|g| g.1).max().unwrap_or(0);
    eprintln!(
        "bench: {} leases granted with TTL {ttl_s} s, {} seen expired",
        granted.len(),
        lateness_us.len()
    );
    errors += live.lock().unwrap_or_else(|e| e.into_inner()).len() as u64;
    let first_deadline = first_grant + Duration::from_secs(ttl_s.max(0) as u64);
    let window = last_gone
        .saturating_duration_since(first_deadline)
        .as_secs_f64();
    // Keys attached to an expired lease must be gone with it.
    let mut kv = KvClient::new(channel(addr).await?);
    let mut lost = 0;
    for (_, _, _, key) in granted.iter().step_by((granted.len() / 100).max(1)) {
        let count = kv
            .range(pb::RangeRequest {
                key: key.clone().into_bytes(),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().count)
            .unwrap_or(1);
        if count != 0 {
            lost += 1;
        }
    }
    Ok(Measured {
        ops_per_sec: lateness_us.len() as f64 / window.max(f64::MIN_POSITIVE),
        p50_ms: lateness_us.value_at_quantile(0.5) as f64 / 1_000.0,
        p99_ms: lateness_us.value_at_quantile(0.99) as f64 / 1_000.0,
        errors,
        lost,
    })
}

/// The scenarios `--scenarios` selects (all without it).
fn selected(options: &Options) -> impl Iterator<Item = &'static Scenario> + '_ {
    SCENARIOS.iter().filter(|scenario| {
        options.scenario_filters.is_empty()
            || options
                .scenario_filters
                .iter()
                .any(|filter| scenario.name.starts_with(filter.as_str()))
    })
}

/// Runs every gRPC scenario on raftkv, then on etcd; returns the markdown
/// table (also printed).
pub(crate) async fn run(binary: &Path, options: &Options) -> Result<String, BenchError> {
    let etcd = find_etcd().ok_or_else(|| {
        BenchError::Cluster("--grpc needs `etcd` (3.4) on the PATH (Debian: etcd-server)".into())
    })?;
    let mut results = Vec::new();
    {
        let mut cluster = BenchCluster::start(binary).await?;
        let addrs = cluster.client_addrs();
        let _ = cluster.leader_addr().await?;
        let leader = leader_of(&addrs).await?;
        for scenario in selected(options) {
            eprintln!("bench: grpc {} on raftkv", scenario.name);
            results.push(measure(scenario, leader, options.duration, options.sample_keys).await?);
        }
        cluster.stop();
    }
    let etcd_cluster = EtcdCluster::start(&etcd)?;
    let leader = leader_of(&etcd_cluster.client_addrs).await?;
    let mut table = String::from(
        "| scenario | raftkv ops/s | etcd ops/s | throughput ratio | raftkv p50 ms | etcd p50 ms | p50 ratio (etcd/raftkv) | raftkv p99 ms | etcd p99 ms | errors raftkv/etcd | lost raftkv/etcd |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for (scenario, ours) in selected(options).zip(&results) {
        eprintln!("bench: grpc {} on etcd", scenario.name);
        let theirs = measure(scenario, leader, options.duration, options.sample_keys).await?;
        let row = format!(
            "| {} | {:.0} | {:.0} | {:.2}x | {:.2} | {:.2} | {:.2}x | {:.2} | {:.2} | {}/{} | {}/{} |\n",
            scenario.name,
            ours.ops_per_sec,
            theirs.ops_per_sec,
            ours.ops_per_sec / theirs.ops_per_sec.max(f64::MIN_POSITIVE),
            ours.p50_ms,
            theirs.p50_ms,
            theirs.p50_ms / ours.p50_ms.max(f64::MIN_POSITIVE),
            ours.p99_ms,
            theirs.p99_ms,
            ours.errors,
            theirs.errors,
            ours.lost,
            theirs.lost,
        );
        eprint!("{row}");
        table.push_str(&row);
    }
    drop(etcd_cluster);
    Ok(table)
}
