//! `cargo xtask chaos`: a Jepsen-style fault suite against real `raftkv`
//! processes, proving that no acknowledged write is lost and that reads are
//! linearizable.
//!
//! **What it owns:** starting a loopback cluster of `raftkv` binaries with
//! `--enable-fault-injection` in temp dirs ([`run_suite`]); concurrent
//! clients that record every operation with its invoke and completion
//! times and its outcome ([`history`]); a nemesis injecting one fault at a
//! time on a schedule drawn from the seed ([`FaultKind`]); compare-and-swap
//! clients on a register over etcd's v3 gRPC API; lease clients that keep
//! leases alive through random members and leave others to expire
//! ([`LeaseCounts`]); five checkers (linearizability per key, the CAS
//! register included; durability after healing, with keys written once
//! read back on every member; liveness after the last heal; HashKV
//! equality across members after every heal, see [`checker`]; leases: a
//! lease whose every renewal was answered in time never expires, and every
//! other lease expires with its keys); and the report ([`Report`]), with the failing window
//! as JSON and HTML on a violation.
//!
//! **What it does not own:** building the binary (the CLI in [`run`] runs
//! `cargo build --release -p raftkv`; tests pass `CARGO_BIN_EXE_raftkv`),
//! and fixing what it finds.
//!
//! **Invariants:** a verdict is [`Verdict::Pass`] only when a checker
//! proved it: a search that runs out of budget is
//! [`Verdict::Unknown`], which fails the run. Every process the suite
//! starts is killed when the run ends, on success or error. A PUT answered
//! 503, timed out or cut off is *unknown* (may take effect later), a 4xx
//! is *fail*, and a GET that fails is not recorded; likewise a CAS that
//! errs is *unknown* (*fail* for `InvalidArgument`).
//!
//! The checker is usable on its own:
//!
//! ```
//! use xtask::chaos::checker::{check_key, KeyVerdict};
//! use xtask::chaos::history::{Op, Outcome};
//!
//! // A write acknowledged at 20 µs, then a read starting at 30 µs that
//! // does not see it: a stale read.
//! let history = [
//!     Op::put("c0", "/k", "a", Outcome::Ok, (10, 20)),
//!     Op::get("c1", "/k", None, (30, 40)),
//! ];
//! assert_eq!(check_key(&history, 10_000), KeyVerdict::NotLinearizable { culprit: 1 });
//! ```
//!
//! A run (this needs a built `raftkv` binary, so it is not run here):
//!
//! ```no_run
//! use std::time::Duration;
//! use xtask::chaos::{run_suite, ChaosConfig};
//!
//! let mut config = ChaosConfig::new("target/release/raftkv".into(), "target/chaos/demo".into());
//! config.duration = Duration::from_secs(60);
//! config.seed = 7;
//! let report = run_suite(&config).expect("the suite ran");
//! assert!(report.passed(), "{}", report.summary());
//! ```

pub use lincheck::checker;
mod cluster;
pub use lincheck::history;
mod leases;
mod nemesis;
mod report;
mod v3;
pub mod watches;
mod workload;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;

pub use leases::LeaseCounts;
pub use nemesis::{parse_faults, schedule, FaultKind, FaultRecord, STALL_MS};
pub use report::{timeline_html, Report, Verdict, Window};
pub use watches::WatchCounts;

use cluster::{Cluster, NodeFlags};
use history::{Op, OpCounts};
use workload::Workload;

/// Why the suite could not run (as opposed to a checker verdict).
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    /// A bad option or configuration value.
    #[error("bad configuration: {0}")]
    Config(String),
    /// The process harness failed (a node would not start, no leader, ...).
    #[error("{0}")]
    Harness(#[from] testcluster::Error),
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The cluster did not do what the harness needed.
    #[error("cluster: {0}")]
    Cluster(String),
    /// The HTTP client failed to build or a harness request failed.
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
}

/// When the nemesis stops (from [`ChaosConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// After this long, and never before every selected kind ran once.
    Duration(Duration),
    /// After exactly this many faults (the crash loop).
    Faults(usize),
}

/// Everything a run needs. [`ChaosConfig::new`] gives the defaults of
/// `cargo xtask chaos`.
#[derive(Debug, Clone)]
pub struct ChaosConfig {
    /// The `raftkv` binary to run.
    pub binary: PathBuf,
    /// Where the history, node logs, summary and failing windows go.
    pub out_dir: PathBuf,
    /// Seed of the fault schedule, the fault targets and the workload.
    pub seed: u64,
    /// How long the nemesis injects faults; it never stops before every
    /// selected kind ran once. Ignored when `fault_count` is set.
    pub duration: Duration,
    /// If set, run exactly this many faults instead of `duration`.
    pub fault_count: Option<usize>,
    /// Fault kinds to draw from.
    pub faults: Vec<FaultKind>,
    /// Initial cluster size (3 to 7).
    pub nodes: u64,
    /// Concurrent client workers (raftexample's routes).
    pub clients: usize,
    /// Concurrent compare-and-swap workers on the register (etcd's v3
    /// gRPC API).
    pub cas_clients: usize,
    /// Lease clients (0 or more): each keeps leases alive through random
    /// members and leaves others to expire, each lease with a key.
    pub lease_clients: usize,
    /// Watch clients (0 or more): each watches the whole keyspace through
    /// random members, resuming on another member when a stream breaks.
    pub watch_clients: usize,
    /// Number of keys (small, so that clients collide).
    pub keys: usize,
    /// How long a fault is held before it is healed.
    pub fault_hold_ms: u64,
    /// Quiet time after each heal (the cluster recovers under load).
    pub recover_ms: u64,
    /// Raft tick of every node.
    pub tick_ms: u64,
    /// Election timeout in ticks.
    pub election_ticks: u64,
    /// The nodes' `--request-timeout-ms`.
    pub request_timeout_ms: u64,
    /// Liveness bound: election timeouts from the last heal to an
    /// acknowledged write.
    pub liveness_election_timeouts: u64,
    /// Step budget of the linearizability search, per key.
    pub checker_max_steps: u64,
    /// Every node's `--snapshot-count`: small, so that snapshots are taken,
    /// sent and installed during a run.
    pub snapshot_count: u64,
    /// Every node's `--catch-up-entries`: small, so that a node cut off for
    /// a while needs a snapshot.
    pub catch_up_entries: u64,
    /// Run the cluster with TLS everywhere (`testcluster::TlsMode::full`):
    /// client TLS with client certificates, peer TLS with peer certificate
    /// authentication; every client (HTTP, gRPC, fault routes) uses TLS.
    pub tls: bool,
}

impl ChaosConfig {
    /// Defaults: 3 nodes, 4 clients, 3 keys, every fault, 60 s, seed 1.
    pub fn new(binary: PathBuf, out_dir: PathBuf) -> ChaosConfig {
        ChaosConfig {
            binary,
            out_dir,
            seed: 1,
            duration: Duration::from_secs(60),
            fault_count: None,
            faults: FaultKind::ALL.to_vec(),
            nodes: 3,
            clients: 4,
            cas_clients: 2,
            lease_clients: 1,
            watch_clients: 2,
            keys: 3,
            fault_hold_ms: 2_000,
            recover_ms: 1_000,
            tick_ms: 50,
            election_ticks: 10,
            request_timeout_ms: 2_000,
            liveness_election_timeouts: 20,
            checker_max_steps: 20_000_000,
            snapshot_count: 50,
            catch_up_entries: 10,
            tls: false,
        }
    }

    /// The crash loop: `rounds` kill -9s of a random node under write
    /// load, each followed by a restart, then the full check.
    pub fn crash_loop(binary: PathBuf, out_dir: PathBuf, rounds: usize) -> ChaosConfig {
        ChaosConfig {
            fault_count: Some(rounds),
            faults: vec![FaultKind::Kill],
            fault_hold_ms: 300,
            recover_ms: 700,
            ..ChaosConfig::new(binary, out_dir)
        }
    }

    fn stop(&self) -> Stop {
        match self.fault_count {
            Some(count) => Stop::Faults(count),
            None => Stop::Duration(self.duration),
        }
    }

    fn validate(&self) -> Result<(), ChaosError> {
        let bad = |why: &str| Err(ChaosError::Config(why.into()));
        if !(3..=7).contains(&self.nodes) {
            return bad("nodes must be between 3 and 7");
        }
        if self.clients == 0 || self.keys == 0 {
            return bad("clients and keys must be at least 1");
        }
        if self.faults.is_empty() {
            return bad("no fault kind selected");
        }
        if self.tick_ms == 0 || self.election_ticks < 2 {
            return bad("tick_ms must be positive and election_ticks at least 2");
        }
        if !self.binary.is_file() {
            return Err(ChaosError::Config(format!(
                "no raftkv binary at {}",
                self.binary.display()
            )));
        }
        Ok(())
    }
}

/// Runs the suite: cluster, clients and nemesis, then heal and check.
/// Returns the report (whose verdicts may be failures); an `Err` means the
/// suite itself could not run.
pub fn run_suite(config: &ChaosConfig) -> Result<Report, ChaosError> {
    config.validate()?;
    std::fs::create_dir_all(&config.out_dir).map_err(|source| ChaosError::Io {
        what: format!("creating {}", config.out_dir.display()),
        source,
    })?;
    let data = tempfile::tempdir().map_err(|source| ChaosError::Io {
        what: "creating a temp dir".into(),
        source,
    })?;
    let started = Instant::now();
    let flags = NodeFlags {
        tick_ms: config.tick_ms,
        election_ticks: config.election_ticks,
        request_timeout_ms: config.request_timeout_ms,
        snapshot_count: config.snapshot_count,
        catch_up_entries: config.catch_up_entries,
    };
    let logs = config.out_dir.join("logs");
    let mut cluster = Cluster::start(
        &config.binary,
        flags,
        config.nodes,
        data.path(),
        &logs,
        config.tls,
    )?;
    let run = run_under_faults(&mut cluster, config, started)?;
    drop(cluster);
    tracing::info!(
        operations = run.ops.len(),
        faults = run.faults.len(),
        "faults done; checking the history"
    );
    let checked = Checked::new(config, &run.ops, &run.final_ops, &run.faults)?;
    let unique = if run.unique_reads.is_empty() {
        Err("no final reads of the unique keys (see liveness)".to_string())
    } else {
        checker::check_unique_keys(&run.ops, workload::UNIQUE_PREFIX, &run.unique_reads)
    };
    let report = Report {
        seed: config.seed,
        counts: OpCounts::of(&run.ops),
        faults: run.faults,
        linearizability: checked.linearizability,
        durability: with_unique_keys(checked.durability, &unique),
        liveness: if run.wedged.is_empty() {
            Verdict::Pass
        } else {
            Verdict::Fail(run.wedged.join("; "))
        },
        watches: run.watches.0,
        watch_counts: run.watches.1,
        leases: run.leases.verdict,
        lease_counts: run.leases.counts,
        consistency: match run.hash_mismatches.as_slice() {
            [] => Verdict::Pass,
            [first, ..] => Verdict::Fail(format!(
                "{} of {} comparisons differ; first {first}",
                run.hash_mismatches.len(),
                run.hash_checks
            )),
        },
        hash_checks: run.hash_checks,
        unique_keys_acked: unique.as_ref().map_or(0, |acked| *acked),
        recovery_ms: run.recovery_ms,
        wal_tail_repairs: report::count_tail_repairs(&logs),
        elapsed_ms: started.elapsed().as_millis() as u64,
        out_dir: config.out_dir.clone(),
    };
    write_outputs(&config.out_dir, &run.ops, &run.final_ops, &report)?;
    report::write_json(
        &config.out_dir.join("final-unique-keys.json"),
        &run.unique_reads,
    )?;
    Ok(report)
}

/// The durability verdict with the unique-key check's result folded in.
fn with_unique_keys(durability: Verdict, unique: &Result<u64, String>) -> Verdict {
    match (durability, unique) {
        (verdict, Ok(_)) => verdict,
        (Verdict::Fail(why), Err(lost)) => Verdict::Fail(format!("{why}; {lost}")),
        (_, Err(lost)) => Verdict::Fail(lost.clone()),
    }
}

/// What happened on the cluster, before checking.
struct Run {
    ops: Vec<Op>,
    final_ops: Vec<Op>,
    /// Every unique key each member served after healing.
    unique_reads: workload::UniqueReads,
    faults: Vec<FaultRecord>,
    /// Liveness failures, in words.
    wedged: Vec<String>,
    recovery_ms: Option<u64>,
    /// `HashKV` comparisons made, and those that differed, in words.
    hash_checks: u64,
    hash_mismatches: Vec<String>,
    /// The lease clients' counts and verdict, merged.
    leases: leases::LeaseRun,
    /// The watch checker's verdict and counts.
    watches: (Verdict, WatchCounts),
}

/// The `HashKV` comparisons of a run.
#[derive(Default)]
struct Hashes {
    checks: u64,
    mismatches: Vec<String>,
}

impl Hashes {
    /// Compares every member's `HashKV` now (see [`compare_hashes`]);
    /// returns a liveness failure if the members did not catch up.
    fn compare(
        &mut self,
        v3: &mut v3::V3,
        cluster: &Cluster,
        config: &ChaosConfig,
        when: &str,
    ) -> Result<(), String> {
        match compare_hashes(v3, cluster, config) {
            Ok(()) => {
                self.checks += 1;
                Ok(())
            }
            Err(HashError::Mismatch(why)) => {
                self.checks += 1;
                self.mismatches.push(format!("{when}: {why}"));
                Ok(())
            }
            Err(HashError::Stuck(why)) => Err(format!("{when}: {why}")),
        }
    }
}

/// Why a `HashKV` comparison did not pass.
enum HashError {
    /// Members answered different digests at the same revision.
    Mismatch(String),
    /// Members did not all answer at a common revision within the bound.
    Stuck(String),
}

/// Waits until every member has applied at least the highest revision any
/// member reports now, then asks each for `HashKV` at the lowest revision
/// they report (so every member has it) and compares the digests once every
/// member reports the same compact revision.
fn compare_hashes(
    v3: &mut v3::V3,
    cluster: &Cluster,
    config: &ChaosConfig,
) -> Result<(), HashError> {
    let bound_ms = cluster.election_timeout_ms() * config.liveness_election_timeouts;
    let deadline = Instant::now() + Duration::from_millis(bound_ms);
    let members = cluster
        .targets()
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut target: Option<i64> = None;
    let mut last_seen: String;
    loop {
        let revisions: Result<Vec<i64>, String> = members
            .iter()
            .map(|(id, port)| {
                v3.status(*port)
                    .map(|s| s.header.map_or(0, |h| h.revision))
                    .map_err(|e| format!("node {id}: {}", e.message()))
            })
            .collect();
        match revisions {
            Ok(revisions) => {
                let (low, high) = (
                    revisions.iter().copied().min().unwrap_or(0),
                    revisions.iter().copied().max().unwrap_or(0),
                );
                let wanted = *target.get_or_insert(high);
                if low >= wanted {
                    let hashes: Result<Vec<(u64, u32, i64)>, String> = members
                        .iter()
                        .map(|(id, port)| {
                            v3.hash_kv(*port, low)
                                .map(|h| (*id, h.hash, h.compact_revision))
                                .map_err(|e| format!("node {id}: {}", e.message()))
                        })
                        .collect();
                    match hashes {
                        // A member that has applied `low` but not yet a
                        // compaction behind it hashes the versions it still
                        // keeps (its compact revision says so): wait until
                        // all hash the same compacted state.
                        Ok(hashes) if !hashes.windows(2).all(|w| w[0].2 == w[1].2) => {
                            let listed: Vec<String> = hashes
                                .iter()
                                .map(|(id, _, compacted)| {
                                    format!("node {id} compacted at {compacted}")
                                })
                                .collect();
                            last_seen = format!(
                                "waiting for every member to apply the same compaction: {}",
                                listed.join(", ")
                            );
                        }
                        Ok(hashes) => {
                            if hashes.windows(2).all(|w| w[0].1 == w[1].1) {
                                return Ok(());
                            }
                            let listed: Vec<String> = hashes
                                .iter()
                                .map(|(id, hash, compacted)| {
                                    format!("node {id} {hash:#010x} (compacted at {compacted})")
                                })
                                .collect();
                            return Err(HashError::Mismatch(format!(
                                "HashKV at revision {low} differs: {}",
                                listed.join(", ")
                            )));
                        }
                        Err(why) => last_seen = why,
                    }
                } else {
                    let listed: Vec<String> = members
                        .iter()
                        .zip(&revisions)
                        .map(|((id, _), rev)| format!("node {id} at {rev}"))
                        .collect();
                    last_seen = format!("waiting for revision {wanted}: {}", listed.join(", "));
                }
            }
            Err(why) => last_seen = why,
        }
        if Instant::now() > deadline {
            return Err(HashError::Stuck(format!(
                "members did not reach a common revision for HashKV within {bound_ms} ms ({last_seen})"
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Clients and nemesis until the stop condition; then heal, stop the
/// clients, probe liveness and read every key on every node.
fn run_under_faults(
    cluster: &mut Cluster,
    config: &ChaosConfig,
    started: Instant,
) -> Result<Run, ChaosError> {
    let grpc_tls = cluster.grpc_tls()?;
    let workload = Workload {
        http: cluster.http().clone(),
        scheme: cluster.client_scheme(),
        grpc_tls: grpc_tls.clone(),
        targets: cluster.targets(),
        keys: config.keys,
        started,
        stop: Arc::new(AtomicBool::new(false)),
    };
    let workers: Vec<_> = (0..config.clients)
        .map(|i| {
            let (workload, seed) = (workload.clone(), config.seed);
            std::thread::spawn(move || workload.run_worker(i, seed))
        })
        .collect();
    let grpc_timeout = Duration::from_millis(config.request_timeout_ms + 2_000);
    let cas_workers: Vec<_> = (0..config.cas_clients)
        .map(|i| {
            let (workload, seed) = (workload.clone(), config.seed);
            std::thread::spawn(move || workload.run_cas_worker(i, seed, grpc_timeout))
        })
        .collect();
    let election_timeout = Duration::from_millis(cluster.election_timeout_ms());
    let lease_workers = (0..config.lease_clients)
        .map(|i| {
            let client = leases::LeaseClient::new(
                cluster.targets(),
                workload.stop.clone(),
                config.seed ^ (i as u64) << 40,
                grpc_timeout,
                election_timeout,
                grpc_tls.clone(),
            )?;
            Ok(std::thread::spawn(move || client.run()))
        })
        .collect::<Result<Vec<_>, ChaosError>>()?;
    // Watchers take the revision they must reach once every client stopped
    // (an acknowledged write is then below it).
    let watch_stop = Arc::new(AtomicBool::new(false));
    let watch_workers: Vec<_> = (0..config.watch_clients)
        .map(|i| {
            let runner = watches::WatchRunner::new(
                format!("w{i}"),
                cluster.targets(),
                watch_stop.clone(),
                config.seed ^ (i as u64) << 48,
                grpc_timeout,
                grpc_tls.clone(),
            );
            std::thread::spawn(move || runner.run())
        })
        .collect();
    let mut v3 = v3::V3::new(grpc_timeout, grpc_tls)?;
    let mut hashes = Hashes::default();
    let mut rng = StdRng::seed_from_u64(config.seed);
    let (faults, mut wedged) =
        run_nemesis(cluster, config, &mut rng, started, &mut v3, &mut hashes);
    for (id, status) in cluster.exited_by_themselves() {
        wedged.push(format!(
            "node {id} exited by itself ({status}); see logs/node-{id}.log"
        ));
    }
    let healed = cluster.heal_all();
    workload.stop.store(true, Ordering::SeqCst);
    let mut ops: Vec<Op> = Vec::new();
    let mut panicked = 0;
    for worker in workers.into_iter().chain(cas_workers) {
        match worker.join() {
            Ok(history) => ops.extend(history),
            Err(_) => panicked += 1,
        }
    }
    let mut lease_runs = Vec::new();
    for worker in lease_workers {
        match worker.join() {
            Ok(run) => lease_runs.push(run),
            Err(_) => panicked += 1,
        }
    }
    watch_stop.store(true, Ordering::SeqCst);
    let mut watch_logs = Vec::new();
    for worker in watch_workers {
        match worker.join() {
            Ok(log) => watch_logs.push(log?),
            Err(_) => panicked += 1,
        }
    }
    healed?;
    // A lost client history could hide a violation: never check a part.
    if panicked > 0 {
        return Err(ChaosError::Cluster(format!(
            "{panicked} client worker(s) panicked"
        )));
    }
    let recovery = measure_recovery(cluster, config);
    let recovery_ms = faults
        .iter()
        .filter_map(|f| f.recovery_ms)
        .chain(recovery.as_ref().ok().copied())
        .max();
    if let Err(why) = recovery {
        wedged.push(format!("after the final heal: {why}"));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut final_ops =
        workload::final_reads(&workload, config.keys, deadline).unwrap_or_else(|why| {
            wedged.push(why);
            Vec::new()
        });
    let unique_reads = match workload::final_v3_reads(&workload, grpc_timeout, deadline) {
        Ok((unique, register)) => {
            final_ops.extend(register);
            unique
        }
        Err(why) => {
            wedged.push(why);
            Vec::new()
        }
    };
    if let Err(why) = hashes.compare(&mut v3, cluster, config, "after the final heal") {
        wedged.push(why);
    }
    let watches = if watch_logs.is_empty() {
        (Verdict::Pass, WatchCounts::default())
    } else {
        let until = watch_logs
            .iter()
            .map(|log| log.target_revision)
            .max()
            .unwrap_or(0);
        let reference = watches::reference(
            cluster.targets(),
            until,
            grpc_timeout,
            workload.grpc_tls.clone(),
        )?;
        let checked = watches::check_watches(&reference, &watch_logs, &ops);
        report::write_json(&config.out_dir.join("watch-reference.json"), &reference)?;
        report::write_json(&config.out_dir.join("watch-logs.json"), &watch_logs)?;
        checked
    };
    Ok(Run {
        ops,
        final_ops,
        unique_reads,
        faults,
        wedged,
        recovery_ms,
        hash_checks: hashes.checks,
        hash_mismatches: hashes.mismatches,
        leases: leases::LeaseRun::merge(lease_runs),
        watches,
    })
}

/// Injects faults until the stop condition. Returns the faults and the
/// errors of steps that found the cluster wedged (liveness failures).
fn run_nemesis(
    cluster: &mut Cluster,
    config: &ChaosConfig,
    rng: &mut StdRng,
    started: Instant,
    v3: &mut v3::V3,
    hashes: &mut Hashes,
) -> (Vec<FaultRecord>, Vec<String>) {
    let timing = nemesis::Timing {
        hold_ms: config.fault_hold_ms,
        started,
    };
    let recover = Duration::from_millis(config.recover_ms);
    let (mut faults, mut wedged) = (Vec::new(), Vec::new());
    // A warm-up under load before the first fault.
    std::thread::sleep(recover);
    let mut plan = Vec::new().into_iter();
    loop {
        let done = match config.stop() {
            Stop::Faults(count) => faults.len() >= count,
            Stop::Duration(d) => started.elapsed() >= d && faults.len() >= config.faults.len(),
        };
        if done {
            break;
        }
        let kind = match plan.next() {
            Some(kind) => kind,
            None => {
                plan = schedule(&config.faults, 1, rng).into_iter();
                continue;
            }
        };
        tracing::info!(fault = %kind, "injecting");
        let mut record = match nemesis::inject(cluster, kind, rng, timing) {
            Ok(record) => record,
            Err(error) => {
                wedged.push(format!("{kind}: {error}"));
                break;
            }
        };
        let exited = cluster.exited_by_themselves();
        if !exited.is_empty() {
            faults.push(record);
            for (id, status) in exited {
                wedged.push(format!(
                    "node {id} exited by itself ({status}); see logs/node-{id}.log"
                ));
            }
            break;
        }
        let recovery = measure_recovery(cluster, config);
        record.recovery_ms = recovery.as_ref().ok().copied();
        faults.push(record);
        // Progress: one line per fault, with how far the run is.
        tracing::info!(
            fault = %kind,
            faults = faults.len(),
            elapsed_s = started.elapsed().as_secs(),
            recovery_ms = ?recovery.as_ref().ok(),
            "fault over"
        );
        if let Err(why) = recovery {
            wedged.push(format!("after {kind}: {why}"));
            break;
        }
        if let Err(why) = hashes.compare(v3, cluster, config, &format!("after {kind}")) {
            wedged.push(why);
            break;
        }
        std::thread::sleep(recover);
    }
    (faults, wedged)
}

/// Time from "every member is up and healed" to an acknowledged write,
/// checked against the bound.
fn measure_recovery(cluster: &Cluster, config: &ChaosConfig) -> Result<u64, String> {
    let bound_ms = cluster.election_timeout_ms() * config.liveness_election_timeouts;
    let start = Instant::now();
    let members = cluster.members();
    let mut attempt = 0usize;
    let probe_timeout = Duration::from_millis((2 * cluster.election_timeout_ms()).max(1_000));
    while start.elapsed() < Duration::from_millis(bound_ms) {
        let node = members[attempt % members.len()];
        attempt += 1;
        let response = cluster
            .http()
            .put(cluster.url(node, "/chaos-liveness"))
            .body(format!("probe-{attempt}"))
            // Short, so a probe stuck on a node without a leader does not
            // hide a recovery elsewhere; a commit takes far less.
            .timeout(probe_timeout)
            .send();
        if response.is_ok_and(|r| r.status() == reqwest::StatusCode::NO_CONTENT) {
            return Ok(start.elapsed().as_millis() as u64);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!(
        "no write acknowledged within {bound_ms} ms ({} election timeouts) after the last heal",
        config.liveness_election_timeouts
    ))
}

/// Checks a saved run again (`history.json`, `final-reads.json` and the
/// faults of `report.json` in `dir`, as a run writes them), rewriting the
/// failing windows there. Returns the linearizability and durability
/// verdicts.
pub fn recheck(dir: &Path, max_steps: u64) -> Result<(Verdict, Verdict), ChaosError> {
    let ops: Vec<Op> = read_json(&dir.join("history.json"))?;
    let final_ops: Vec<Op> = read_json(&dir.join("final-reads.json"))?;
    let faults =
        read_json::<Report>(&dir.join("report.json")).map_or_else(|_| Vec::new(), |r| r.faults);
    let mut config = ChaosConfig::new(PathBuf::new(), dir.to_path_buf());
    config.checker_max_steps = max_steps;
    let checked = Checked::new(&config, &ops, &final_ops, &faults)?;
    // Runs saved before the unique-key check have no such file.
    let unique_path = dir.join("final-unique-keys.json");
    let durability = if unique_path.is_file() {
        let unique_reads: workload::UniqueReads = read_json(&unique_path)?;
        let unique = checker::check_unique_keys(&ops, workload::UNIQUE_PREFIX, &unique_reads);
        with_unique_keys(checked.durability, &unique)
    } else {
        checked.durability
    };
    Ok((checked.linearizability, durability))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ChaosError> {
    let text = std::fs::read_to_string(path).map_err(|source| ChaosError::Io {
        what: format!("reading {}", path.display()),
        source,
    })?;
    serde_json::from_str(&text)
        .map_err(|e| ChaosError::Config(format!("{} is not a chaos file: {e}", path.display())))
}

/// The two history checkers' verdicts (windows written on a violation).
struct Checked {
    linearizability: Verdict,
    durability: Verdict,
}

impl Checked {
    fn new(
        config: &ChaosConfig,
        ops: &[Op],
        final_ops: &[Op],
        faults: &[FaultRecord],
    ) -> Result<Checked, ChaosError> {
        let linearizability = check("linearizability", config, ops, faults)?;
        let mut with_final = ops.to_vec();
        with_final.extend_from_slice(final_ops);
        let durability = if final_ops.is_empty() {
            Verdict::Unknown("no final reads (see liveness)".into())
        } else {
            check("durability", config, &with_final, faults)?
        };
        // Adding reads never repairs a history: say where the fault lies.
        let durability = match (&linearizability, durability) {
            (Verdict::Fail(_), Verdict::Fail(why)) => {
                Verdict::Fail(format!("the workload history alone already fails; {why}"))
            }
            (_, durability) => durability,
        };
        Ok(Checked {
            linearizability,
            durability,
        })
    }
}

/// Runs the linearizability checker; on a violation writes
/// `<checker>-window.json` and `<checker>-timeline.html`.
fn check(
    name: &str,
    config: &ChaosConfig,
    ops: &[Op],
    faults: &[FaultRecord],
) -> Result<Verdict, ChaosError> {
    let verdict = checker::check_history(ops, config.checker_max_steps);
    if let Some((key, culprit)) = verdict.first_violation() {
        let key_ops: Vec<Op> = ops.iter().filter(|op| op.key == key).cloned().collect();
        let window = report::window(name, &key_ops, culprit, faults);
        let json = config.out_dir.join(format!("{name}-window.json"));
        let html = config.out_dir.join(format!("{name}-timeline.html"));
        report::write_json(&json, &window)?;
        std::fs::write(&html, timeline_html(&window)).map_err(|source| ChaosError::Io {
            what: format!("writing {}", html.display()),
            source,
        })?;
        return Ok(Verdict::Fail(format!(
            "key {key} does not linearize; culprit: {}; window: {}, timeline: {}",
            report::describe(&key_ops[culprit]),
            json.display(),
            html.display()
        )));
    }
    if verdict.has_unknown() {
        return Ok(Verdict::Unknown(format!(
            "search budget of {} steps exhausted",
            config.checker_max_steps
        )));
    }
    Ok(Verdict::Pass)
}

fn write_outputs(
    out_dir: &Path,
    ops: &[Op],
    final_ops: &[Op],
    report: &Report,
) -> Result<(), ChaosError> {
    report::write_json(&out_dir.join("history.json"), &ops)?;
    report::write_json(&out_dir.join("final-reads.json"), &final_ops)?;
    report::write_json(&out_dir.join("report.json"), report)?;
    std::fs::write(out_dir.join("summary.txt"), report.summary()).map_err(|source| ChaosError::Io {
        what: "writing summary.txt".into(),
        source,
    })
}

mod cli;

pub use cli::{parse as parse_args, parse_duration, run, USAGE};
