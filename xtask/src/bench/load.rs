//! The load generator: N keep-alive connections, each a tokio task sending
//! requests back to back until the deadline, every successful request's
//! latency recorded in an hdrhistogram.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use hyper::{Method, StatusCode};
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::client::Connection;
use super::scenario::{Kind, Scenario};
use super::BenchError;

/// Highest latency the histograms track (longer ones are clamped).
const LATENCY_US_MAX: u64 = 60_000_000;
/// Connections used to write the keys that read scenarios read.
const FILL_CONNECTIONS: u64 = 64;
/// Attempts per key while filling before giving up.
const FILL_ATTEMPTS_MAX: u32 = 50;
/// Pause after a failed connect, so a dead node is not spun on.
const RECONNECT_PAUSE: Duration = Duration::from_millis(10);

/// What one scenario run produced (all connections merged).
pub(crate) struct Outcome {
    /// Latency of every successful request, in microseconds.
    pub latency_us: Histogram<u64>,
    /// Successful requests (2xx; 200 for reads).
    pub ok_count: u64,
    /// Responses with another status (503 busy, timeouts, ...).
    pub failed_count: u64,
    /// Reads of pre-written keys answered 404 (should be 0).
    pub not_found_count: u64,
    /// Connect or I/O failures (the connection is reopened).
    pub io_error_count: u64,
    /// Acknowledged writes as (connection, sequence number).
    pub acked: Vec<(u32, u32)>,
    /// From the first request to the last response.
    pub elapsed: Duration,
}

/// One connection's share of an [`Outcome`].
struct TaskOutcome {
    latency_us: Histogram<u64>,
    ok_count: u64,
    failed_count: u64,
    not_found_count: u64,
    io_error_count: u64,
    acked_seqs: Vec<u32>,
}

/// What every connection task of a run shares.
struct Shared {
    scenario: Scenario,
    addr: SocketAddr,
    value: Bytes,
    read_keys: u64,
    deadline: Instant,
    completed: AtomicU64,
}

/// The path of write number `seq` on connection `conn` of `scenario`.
pub(crate) fn write_path(scenario: &str, conn: u32, seq: u32) -> String {
    format!("/{scenario}-{conn}-{seq}")
}

/// The path of pre-written read key `index`.
fn read_path(index: u64, serializable: bool) -> String {
    if serializable {
        format!("/r-{index}?serializable")
    } else {
        format!("/r-{index}")
    }
}

fn new_histogram() -> Histogram<u64> {
    // Bounds are constants known to be valid: 1 us .. 60 s, 3 digits.
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("valid histogram bounds")
}

/// Runs `scenario` against `addr` for `duration`, with a progress bar.
pub(crate) async fn run(
    scenario: &Scenario,
    addr: SocketAddr,
    duration: Duration,
    read_keys: u64,
) -> Result<Outcome, BenchError> {
    let started = Instant::now();
    let shared = Arc::new(Shared {
        scenario: scenario.clone(),
        addr,
        value: Bytes::from(vec![b'v'; scenario.value_bytes]),
        read_keys,
        deadline: started + duration,
        completed: AtomicU64::new(0),
    });
    let progress = progress_bar(&scenario.name, duration);
    let ticker = tokio::spawn(tick_progress(shared.clone(), progress.clone(), started));
    let tasks: Vec<_> = (0..scenario.connections)
        .map(|conn| tokio::spawn(drive(shared.clone(), conn as u32)))
        .collect();
    let mut outcome = Outcome {
        latency_us: new_histogram(),
        ok_count: 0,
        failed_count: 0,
        not_found_count: 0,
        io_error_count: 0,
        acked: Vec::new(),
        elapsed: Duration::ZERO,
    };
    for (conn, task) in tasks.into_iter().enumerate() {
        let part = task
            .await
            .map_err(|e| BenchError::Http(format!("connection task failed: {e}")))?;
        merge(&mut outcome, part, conn as u32)?;
    }
    outcome.elapsed = started.elapsed();
    ticker.abort();
    progress.finish_and_clear();
    Ok(outcome)
}

fn merge(outcome: &mut Outcome, part: TaskOutcome, conn: u32) -> Result<(), BenchError> {
    outcome
        .latency_us
        .add(&part.latency_us)
        .map_err(|e| BenchError::Http(format!("merge histograms: {e}")))?;
    outcome.ok_count += part.ok_count;
    outcome.failed_count += part.failed_count;
    outcome.not_found_count += part.not_found_count;
    outcome.io_error_count += part.io_error_count;
    outcome
        .acked
        .extend(part.acked_seqs.into_iter().map(|seq| (conn, seq)));
    Ok(())
}

fn progress_bar(name: &str, duration: Duration) -> ProgressBar {
    let bar = ProgressBar::new(duration.as_millis() as u64);
    let style = ProgressStyle::with_template("{prefix:>16} [{bar:30}] {elapsed:>3} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(name.to_owned());
    bar
}

async fn tick_progress(shared: Arc<Shared>, bar: ProgressBar, started: Instant) {
    let mut interval = tokio::time::interval(Duration::from_millis(250));
    loop {
        interval.tick().await;
        let elapsed = started.elapsed();
        let done = shared.completed.load(Ordering::Relaxed);
        let rate = done as f64 / elapsed.as_secs_f64().max(0.001);
        bar.set_position(elapsed.as_millis() as u64);
        bar.set_message(format!("{done} requests, {rate:.0}/s"));
    }
}

/// One connection: requests back to back until the deadline.
async fn drive(shared: Arc<Shared>, conn: u32) -> TaskOutcome {
    let mut rng = StdRng::seed_from_u64(u64::from(conn) + 1);
    let mut out = TaskOutcome {
        latency_us: new_histogram(),
        ok_count: 0,
        failed_count: 0,
        not_found_count: 0,
        io_error_count: 0,
        acked_seqs: Vec::new(),
    };
    let mut connection: Option<Connection> = None;
    let mut seq: u32 = 0;
    while Instant::now() < shared.deadline {
        if connection.is_none() {
            match Connection::open(shared.addr).await {
                Ok(c) => connection = Some(c),
                Err(_) => {
                    out.io_error_count += 1;
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                    continue;
                }
            }
        }
        let Some(conn_ref) = connection.as_mut() else {
            continue;
        };
        let is_write = choose_write(shared.scenario.kind, &mut rng);
        let (method, path, body) = if is_write {
            seq += 1;
            let path = write_path(&shared.scenario.name, conn, seq);
            (Method::PUT, path, shared.value.clone())
        } else {
            let key = rng.gen_range(0..shared.read_keys.max(1));
            let serializable = shared.scenario.kind == Kind::ReadSerializable;
            (Method::GET, read_path(key, serializable), Bytes::new())
        };
        let sent_at = Instant::now();
        match conn_ref.send(method, &path, body).await {
            Ok((status, _)) => {
                let latency_us = sent_at.elapsed().as_micros() as u64;
                classify(&mut out, status, is_write, seq, latency_us);
            }
            Err(_) => {
                out.io_error_count += 1;
                connection = None;
            }
        }
        shared.completed.fetch_add(1, Ordering::Relaxed);
    }
    out
}

fn choose_write(kind: Kind, rng: &mut StdRng) -> bool {
    match kind {
        Kind::Write => true,
        Kind::ReadLinearizable | Kind::ReadSerializable => false,
        Kind::Mixed { read_percent } => rng.gen_range(0..100) >= read_percent,
    }
}

fn classify(out: &mut TaskOutcome, status: StatusCode, is_write: bool, seq: u32, latency_us: u64) {
    if status == StatusCode::NOT_FOUND && !is_write {
        out.not_found_count += 1;
    } else if status.is_success() {
        out.ok_count += 1;
        out.latency_us.saturating_record(latency_us.max(1));
        if is_write {
            out.acked_seqs.push(seq);
        }
    } else {
        out.failed_count += 1;
    }
}

/// Writes keys `/r-0 .. /r-{count}` (64-byte values) for the read
/// scenarios, retrying busy answers; fails if a key cannot be written.
pub(crate) async fn fill_read_keys(addr: SocketAddr, count: u64) -> Result<(), BenchError> {
    let tasks: Vec<_> = (0..FILL_CONNECTIONS)
        .map(|first| tokio::spawn(fill_share(addr, first, count)))
        .collect();
    for task in tasks {
        task.await
            .map_err(|e| BenchError::Http(format!("fill task failed: {e}")))??;
    }
    Ok(())
}

async fn fill_share(addr: SocketAddr, first: u64, count: u64) -> Result<(), BenchError> {
    let value = Bytes::from(vec![b'r'; 64]);
    let mut connection = Connection::open(addr).await?;
    for index in (first..count).step_by(FILL_CONNECTIONS as usize) {
        let path = read_path(index, false);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let status = match connection.send(Method::PUT, &path, value.clone()).await {
                Ok((status, _)) => Some(status),
                Err(_) => {
                    connection = Connection::open(addr).await?;
                    None
                }
            };
            if status.is_some_and(|s| s.is_success()) {
                break;
            }
            if attempts >= FILL_ATTEMPTS_MAX {
                return Err(BenchError::Http(format!(
                    "cannot write read key {path} after {attempts} attempts (last status {status:?})"
                )));
            }
            tokio::time::sleep(RECONNECT_PAUSE).await;
        }
    }
    Ok(())
}
