//! The clients: concurrent workers issuing random PUTs of unique values and
//! linearizable GETs on a small key set, so that they collide, and PUTs of
//! keys written only once (the durability check's unique keys), all through
//! raftexample's routes; and compare-and-swap workers on one register key
//! through etcd's v3 gRPC API (Range, then a Txn on `mod_revision`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use reqwest::blocking::Client;
use reqwest::StatusCode;

use etcdproto::etcdserverpb as pb;
use pb::compare::{CompareResult, CompareTarget, TargetUnion};
use pb::request_op::Request;
use pb::response_op::Response;

use super::cluster::Targets;
use super::history::{CasResult, Op, Outcome};
use super::v3::{prefix_end, GrpcTls, V3};

/// What every worker shares.
#[derive(Clone)]
pub(crate) struct Workload {
    pub http: Client,
    /// `http` or `https` (the client ports' scheme).
    pub scheme: &'static str,
    /// TLS of the gRPC clients (`None`: plaintext client ports).
    pub grpc_tls: Option<GrpcTls>,
    pub targets: Targets,
    pub keys: usize,
    pub started: Instant,
    pub stop: Arc<AtomicBool>,
}

/// The key of index `i`.
pub(crate) fn key_name(i: usize) -> String {
    format!("/k{i}")
}

/// Every unique key (written once, by one PUT) starts with this.
pub(crate) const UNIQUE_PREFIX: &str = "/u-";

/// The unique key written with `value` (values are unique already).
pub(crate) fn unique_key(value: &str) -> String {
    format!("{UNIQUE_PREFIX}{value}")
}

/// The compare-and-swap register's key.
pub(crate) const CAS_KEY: &str = "/cas";

/// Keys per page of the durability check's prefix reads.
const PAGE_KEYS: i64 = 1_000;

impl Workload {
    fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    /// A member to send the next operation to, if any is up.
    fn pick_target(&self, rng: &mut StdRng) -> Option<(u64, u16)> {
        self.targets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .choose(rng)
            .copied()
    }

    /// Runs worker `index` until `stop`; returns its history.
    pub fn run_worker(&self, index: usize, seed: u64) -> Vec<Op> {
        let mut rng =
            StdRng::seed_from_u64(seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let client = format!("c{index}");
        let mut history = Vec::new();
        let mut sequence = 0u64;
        while !self.stop.load(Ordering::SeqCst) {
            let Some((node, port)) = self.pick_target(&mut rng) else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            let key = key_name(rng.gen_range(0..self.keys));
            let op = if rng.gen_bool(0.5) {
                sequence += 1;
                let value = format!("{client}-{sequence}");
                // Half the writes go to a key never written before.
                let key = if rng.gen_bool(0.5) {
                    unique_key(&value)
                } else {
                    key
                };
                Some(self.put(&client, node, port, &key, &value))
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
            .put(format!("{}://127.0.0.1:{port}{key}", self.scheme))
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
            .get(format!("{}://127.0.0.1:{port}{key}", self.scheme))
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

impl Workload {
    /// Runs compare-and-swap worker `index` (client `x<index>`) until
    /// `stop`: a linearizable Range of the register, then, three times in
    /// four, a Txn that writes a unique value if the key's `mod_revision`
    /// is still the one read, and reads the key otherwise. Returns its
    /// history (a Range that fails is not recorded, nor is the CAS it
    /// would have led to).
    pub fn run_cas_worker(&self, index: usize, seed: u64, timeout: Duration) -> Vec<Op> {
        let mut rng = StdRng::seed_from_u64(
            seed ^ 0x05ee_dca5 ^ (index as u64).wrapping_mul(0xd1b5_4a32_d192_ed03),
        );
        let client = format!("x{index}");
        let mut history = Vec::new();
        let Ok(mut v3) = V3::new(timeout, self.grpc_tls.clone()) else {
            tracing::error!(client, "no runtime for the gRPC client");
            return history;
        };
        let mut sequence = 0u64;
        while !self.stop.load(Ordering::SeqCst) {
            let Some((node, port)) = self.pick_target(&mut rng) else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            let Some((read, expect)) = self.read_register(&mut v3, &client, node, port) else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            history.push(read);
            if !rng.gen_bool(0.75) {
                continue;
            }
            sequence += 1;
            let value = format!("{client}-{sequence}");
            let op = self.cas(&mut v3, &client, (node, port), expect, &value);
            if op.outcome != Outcome::Ok {
                std::thread::sleep(Duration::from_millis(20));
            }
            history.push(op);
        }
        history
    }

    /// A linearizable gRPC Range of the register, with the `mod_revision`
    /// it saw; `None` if it failed.
    fn read_register(&self, v3: &mut V3, client: &str, node: u64, port: u16) -> Option<(Op, i64)> {
        let invoke_us = self.now_us();
        let request = pb::RangeRequest {
            key: CAS_KEY.as_bytes().to_vec(),
            ..Default::default()
        };
        let response = v3.range(port, request).ok()?;
        let (value, mod_revision) = seen(response.kvs.first());
        let mut op = Op::read(
            client,
            CAS_KEY,
            value.as_deref(),
            mod_revision,
            (invoke_us, self.now_us()),
        );
        op.node = node;
        Some((op, mod_revision))
    }

    /// The Txn: `mod_revision(key) == expect` ? Put(value) : Range(key).
    fn cas(
        &self,
        v3: &mut V3,
        client: &str,
        (node, port): (u64, u16),
        expect: i64,
        value: &str,
    ) -> Op {
        let key = CAS_KEY.as_bytes().to_vec();
        let request = pb::TxnRequest {
            compare: vec![pb::Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Mod as i32,
                key: key.clone(),
                target_union: Some(TargetUnion::ModRevision(expect)),
                ..Default::default()
            }],
            success: vec![pb::RequestOp {
                request: Some(Request::RequestPut(pb::PutRequest {
                    key: key.clone(),
                    value: value.as_bytes().to_vec(),
                    ..Default::default()
                })),
            }],
            failure: vec![pb::RequestOp {
                request: Some(Request::RequestRange(pb::RangeRequest {
                    key,
                    ..Default::default()
                })),
            }],
        };
        let invoke_us = self.now_us();
        let (result, outcome) = match v3.txn(port, request) {
            Ok(response) if response.succeeded => {
                let revision = response.header.map_or(0, |h| h.revision);
                (Some(CasResult::Swapped { revision }), Outcome::Ok)
            }
            Ok(response) => {
                let kvs = response
                    .responses
                    .into_iter()
                    .find_map(|r| match r.response {
                        Some(Response::ResponseRange(range)) => Some(range.kvs),
                        _ => None,
                    })
                    .unwrap_or_default();
                let (seen_value, mod_revision) = seen(kvs.first());
                let refused = CasResult::Refused {
                    value: seen_value,
                    mod_revision,
                };
                (Some(refused), Outcome::Ok)
            }
            // Refused before it reached the log.
            Err(status) if status.code() == tonic::Code::InvalidArgument => (None, Outcome::Fail),
            // Unavailable, timed out, cut off: may still apply.
            Err(_) => (None, Outcome::Unknown),
        };
        let mut op = Op::cas(
            client,
            CAS_KEY,
            expect,
            value,
            result,
            outcome,
            (invoke_us, self.now_us()),
        );
        op.node = node;
        op
    }
}

/// The value (`None`: absent) and `mod_revision` (0: absent) of a Range's
/// first key-value.
fn seen(kv: Option<&etcdproto::mvccpb::KeyValue>) -> (Option<String>, i64) {
    match kv {
        Some(kv) => (
            Some(String::from_utf8_lossy(&kv.value).into_owned()),
            kv.mod_revision,
        ),
        None => (None, 0),
    }
}

/// Every unique key on every member after healing: node id to the keys
/// (and values) a linearizable, paged prefix Range returned there.
pub(crate) type UniqueReads = Vec<(u64, Vec<(String, String)>)>;

/// Reads every unique key on every node, and the register on every node
/// (recorded as final reads), through gRPC: linearizable, paged with
/// `limit`, retried until `deadline`.
pub(crate) fn final_v3_reads(
    workload: &Workload,
    timeout: Duration,
    deadline: Instant,
) -> Result<(UniqueReads, Vec<Op>), String> {
    let targets = workload
        .targets
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut v3 = V3::new(timeout, workload.grpc_tls.clone()).map_err(|e| e.to_string())?;
    let (mut unique, mut register) = (Vec::new(), Vec::new());
    for (node, port) in targets {
        unique.push((node, read_prefix(&mut v3, node, port, deadline)?));
        loop {
            if let Some((op, _)) = workload.read_register(&mut v3, "final", node, port) {
                register.push(op);
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "node {node} served no linearizable Range of {CAS_KEY} after healing"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok((unique, register))
}

/// Every key under [`UNIQUE_PREFIX`] on one node, page by page.
fn read_prefix(
    v3: &mut V3,
    node: u64,
    port: u16,
    deadline: Instant,
) -> Result<Vec<(String, String)>, String> {
    let end = prefix_end(UNIQUE_PREFIX.as_bytes());
    let mut from = UNIQUE_PREFIX.as_bytes().to_vec();
    let mut keys = Vec::new();
    // Later pages read at the first page's revision: one consistent cut.
    let mut revision = 0;
    loop {
        let request = pb::RangeRequest {
            key: from.clone(),
            range_end: end.clone(),
            limit: PAGE_KEYS,
            revision,
            ..Default::default()
        };
        let page = match v3.range(port, request) {
            Ok(page) => page,
            Err(status) if Instant::now() > deadline => {
                return Err(format!(
                    "node {node} served no linearizable Range of {UNIQUE_PREFIX}* after healing: {status}"
                ))
            }
            Err(_) => {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if revision == 0 {
            revision = page.header.as_ref().map_or(0, |h| h.revision);
        }
        for kv in &page.kvs {
            keys.push((
                String::from_utf8_lossy(&kv.key).into_owned(),
                String::from_utf8_lossy(&kv.value).into_owned(),
            ));
        }
        match page.kvs.last() {
            Some(last) if page.more => {
                from = last.key.clone();
                from.push(0);
            }
            _ => return Ok(keys),
        }
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
