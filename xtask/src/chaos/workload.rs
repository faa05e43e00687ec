//! The clients: concurrent workers issuing random PUTs of unique values and
//! linearizable GETs on a small key set, so that they collide.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use reqwest::blocking::Client;
use reqwest::StatusCode;

use super::cluster::Targets;
use super::history::{Op, Outcome};

/// What every worker shares.
#[derive(Clone)]
pub(crate) struct Workload {
    pub http: Client,
    pub targets: Targets,
    pub keys: usize,
    pub started: Instant,
    pub stop: Arc<AtomicBool>,
}

/// The key of index `i`.
pub(crate) fn key_name(i: usize) -> String {
    format!("/k{i}")
}

impl Workload {
    fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    /// Runs worker `index` until `stop`; returns its history.
    pub fn run_worker(&self, index: usize, seed: u64) -> Vec<Op> {
        let mut rng =
            StdRng::seed_from_u64(seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let client = format!("c{index}");
        let mut history = Vec::new();
        let mut sequence = 0u64;
        while !self.stop.load(Ordering::SeqCst) {
            let target = self
                .targets
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .choose(&mut rng)
                .copied();
            let Some((node, port)) = target else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            let key = key_name(rng.gen_range(0..self.keys));
            let op = if rng.gen_bool(0.5) {
                sequence += 1;
                Some(self.put(&client, node, port, &key, &format!("{client}-{sequence}")))
            } else {
                self.get(&client, node, port, &key)
            };
            match op {
                Some(op) => {
                    // A node that is down refuses at once: do not spin on it.
                    if op.outcome == Outcome::Unknown {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    history.push(op);
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        history
    }

    /// A PUT: 204 is ok, 4xx fail, anything else unknown.
    fn put(&self, client: &str, node: u64, port: u16, key: &str, value: &str) -> Op {
        let invoke_us = self.now_us();
        let result = self
            .http
            .put(format!("http://127.0.0.1:{port}{key}"))
            .body(value.to_string())
            .send();
        let outcome = match result.map(|r| r.status()) {
            Ok(StatusCode::NO_CONTENT) => Outcome::Ok,
            Ok(status) if status.is_client_error() => Outcome::Fail,
            _ => Outcome::Unknown,
        };
        let mut op = Op::put(client, key, value, outcome, (invoke_us, self.now_us()));
        op.node = node;
        op
    }

    /// A linearizable GET; `None` unless it answered 200 or 404.
    pub fn get(&self, client: &str, node: u64, port: u16, key: &str) -> Option<Op> {
        let invoke_us = self.now_us();
        let response = self
            .http
            .get(format!("http://127.0.0.1:{port}{key}"))
            .send()
            .ok()?;
        let value = match response.status() {
            StatusCode::OK => Some(response.text().ok()?),
            StatusCode::NOT_FOUND => None,
            _ => return None,
        };
        let mut op = Op::get(client, key, value.as_deref(), (invoke_us, self.now_us()));
        op.node = node;
        Some(op)
    }
}

/// Reads every key on every node (linearizable, retried through 503s until
/// `deadline`) after healing: the durability check's reads.
pub(crate) fn final_reads(
    workload: &Workload,
    keys: usize,
    deadline: Instant,
) -> Result<Vec<Op>, String> {
    let targets = workload
        .targets
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut ops = Vec::new();
    for (node, port) in targets {
        for key in (0..keys).map(key_name) {
            loop {
                if let Some(op) = workload.get("final", node, port, &key) {
                    ops.push(op);
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "node {node} served no linearizable read of {key} after healing"
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    Ok(ops)
}
