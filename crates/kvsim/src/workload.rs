//! The clients of the simulation: a [`raftnode::sim::Workload`] that runs a
//! real [`kvstore::KvStore`] on every node and concurrent clients doing
//! PUTs, linearizable GETs and serializable GETs through it, polled on the
//! run's thread with a no-op waker and timed by the simulation's clock.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use etcdproto::etcdserverpb as pb;
use futures::future::BoxFuture;
use kvstore::{KvConfig, KvError, KvStore, ReadConsistency, RequestTimer, Unattached};
use lincheck::checker::{check_history, KeyVerdict};
use lincheck::history::{Op, OpKind, Outcome};
use parking_lot::Mutex;
use raftnode::sim::{Workload, WorkloadStep};
use raftnode::{
    BoxFuture as RaftFuture, Consensus, DrivenHandle, MembershipChange, ProposalHook, RaftError,
    StateMachine, Status,
};
use wal::sim::SimRng;

/// Simulated milliseconds per step, for the clients' clock (each node's
/// clock advances 20 to 79 ms a step, 49.5 on average).
pub const STEP_MS: u64 = 50;
/// Steps of the linearizability search per key before it gives up (an
/// undecided key fails the seed: it is not a pass).
const CHECK_MAX_STEPS: u64 = 2_000_000;
/// Proposals remembered for resending.
const RESEND_POOL: usize = 32;

/// What the clients do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientOptions {
    /// Concurrent clients (each has at most one request in flight).
    pub clients: u64,
    /// Keys they share (few, so that writes and reads collide).
    pub keys: u64,
    /// Percentage of steps an idle client starts a request in.
    pub request_percent: u64,
    /// Of the requests, the percentage of PUTs; the rest are GETs.
    pub put_percent: u64,
    /// Of the GETs, the percentage of serializable ones.
    pub serializable_percent: u64,
    /// Percentage of steps in which an earlier proposal is proposed again
    /// through a random node (a resent request: the log holds it twice and
    /// the store must apply it once).
    pub resend_percent: u64,
    /// The store's `request_timeout_ms` (simulated time).
    pub request_timeout_ms: u64,
    /// Most requests started in a run (0: no bound).
    pub max_ops: u64,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            clients: 4,
            keys: 3,
            request_percent: 30,
            put_percent: 50,
            serializable_percent: 25,
            resend_percent: 3,
            request_timeout_ms: 3_000,
            max_ops: 0,
        }
    }
}

/// What the clients did, counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientCounts {
    /// Operations given to the linearizability checker (the final reads
    /// of every key on every member included).
    pub ops_checked: u64,
    /// PUTs acknowledged.
    pub puts_ok: u64,
    /// PUTs whose outcome is unknown (timeout, node gone).
    pub puts_unknown: u64,
    /// PUTs refused before they reached the log (no leader, busy).
    pub puts_failed: u64,
    /// Linearizable GETs answered.
    pub reads_linearizable: u64,
    /// Serializable GETs answered (checked to read a written value).
    pub reads_serializable: u64,
    /// GETs that failed (not in the history).
    pub reads_failed: u64,
    /// Proposals resent.
    pub resends: u64,
}

/// A key whose history does not linearize: what the timeline shows.
#[derive(Debug, Clone)]
pub struct Violation {
    /// The checker: `linearizability` (clients' history) or `durability`
    /// (with the final reads).
    pub checker: &'static str,
    /// The key.
    pub key: String,
    /// The operation whose addition breaks it.
    pub culprit: Op,
    /// Every operation on the key.
    pub ops: Vec<Op>,
}

/// The simulation's time for the stores' request deadlines.
#[derive(Clone, Default)]
struct SimTimer {
    now_ms: Arc<AtomicU64>,
}

impl RequestTimer for SimTimer {
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        let now_ms = Arc::clone(&self.now_ms);
        let deadline_ms = now_ms.load(Ordering::Acquire) + duration.as_millis() as u64;
        Box::pin(futures::future::poll_fn(move |_| {
            if now_ms.load(Ordering::Acquire) >= deadline_ms {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }))
    }
}

/// A node's consensus handle that remembers what was proposed through it,
/// so that the workload can propose it again later.
struct Remembering {
    inner: DrivenHandle,
    proposed: Arc<Mutex<VecDeque<Vec<u8>>>>,
    accepted: Arc<AtomicU64>,
}

impl Consensus for Remembering {
    fn propose(&self, data: Vec<u8>) -> RaftFuture<'_, Result<(), RaftError>> {
        Box::pin(async move {
            self.inner.propose(data.clone()).await?;
            self.accepted.fetch_add(1, Ordering::Relaxed);
            // Only what Raft took: a refused proposal is never in the log,
            // and its PUT counts as failed.
            let mut proposed = self.proposed.lock();
            if proposed.len() == RESEND_POOL {
                proposed.pop_front();
            }
            proposed.push_back(data);
            Ok(())
        })
    }

    fn propose_then(&self, data: Vec<u8>, then: ProposalHook) -> Result<(), RaftError> {
        let (accepted, proposed) = (Arc::clone(&self.accepted), Arc::clone(&self.proposed));
        let remembered = data.clone();
        self.inner.propose_then(
            data,
            Box::new(move |result| {
                // As `propose`: only what Raft took.
                if result.is_ok() {
                    accepted.fetch_add(1, Ordering::Relaxed);
                    let mut proposed = proposed.lock();
                    if proposed.len() == RESEND_POOL {
                        proposed.pop_front();
                    }
                    proposed.push_back(remembered);
                }
                then(result);
            }),
        )
    }

    fn read_barrier(&self) -> RaftFuture<'_, Result<(), RaftError>> {
        self.inner.read_barrier()
    }

    fn change_membership(&self, change: MembershipChange) -> RaftFuture<'_, Result<(), RaftError>> {
        self.inner.change_membership(change)
    }

    fn status(&self) -> Status {
        self.inner.status()
    }
}

type Answer = Result<Option<Bytes>, KvError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    Put,
    Get(ReadConsistency),
}

struct Pending {
    node: u64,
    key: String,
    request: Request,
    /// The PUT's value.
    value: String,
    invoke_us: u64,
    answer: Pin<Box<dyn Future<Output = Answer> + Send>>,
}

#[derive(Default)]
struct Client {
    pending: Option<Pending>,
    next_value: u64,
}

/// The key-value workload (see the module docs).
pub struct KvWorkload {
    options: ClientOptions,
    rng: SimRng,
    timer: SimTimer,
    /// Stores built for nodes about to open.
    unattached: BTreeMap<u64, Unattached>,
    /// The live nodes' stores and consensus handles.
    stores: BTreeMap<u64, (KvStore, DrivenHandle)>,
    clients: Vec<Client>,
    proposed: Arc<Mutex<VecDeque<Vec<u8>>>>,
    /// Proposals of the stores that Raft accepted.
    accepted: Arc<AtomicU64>,
    resends: Vec<RaftFuture<'static, Result<(), RaftError>>>,
    started: u64,
    /// Microsecond stamps: step × STEP_MS plus an order within the step.
    step_us: u64,
    order_us: u64,
    /// PUTs and linearizable GETs.
    history: Vec<Op>,
    /// Serializable GETs.
    stale_reads: Vec<Op>,
    counts: ClientCounts,
    violation: Option<Violation>,
}

impl KvWorkload {
    /// A workload whose choices derive from `seed`.
    pub fn new(seed: u64, options: ClientOptions) -> KvWorkload {
        KvWorkload {
            options,
            rng: SimRng::new(seed ^ 0x6b76_7369_6d00_0001),
            timer: SimTimer::default(),
            unattached: BTreeMap::new(),
            stores: BTreeMap::new(),
            clients: (0..options.clients).map(|_| Client::default()).collect(),
            proposed: Arc::default(),
            accepted: Arc::default(),
            resends: Vec::new(),
            started: 0,
            step_us: 0,
            order_us: 0,
            history: Vec::new(),
            stale_reads: Vec::new(),
            counts: ClientCounts::default(),
            violation: None,
        }
    }

    /// What the clients did.
    pub fn counts(&self) -> ClientCounts {
        self.counts
    }

    /// Proposals of the stores (the clients' writes) that Raft accepted.
    pub fn proposals_accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// The key that did not linearize, if one did not.
    pub fn violation(&self) -> Option<&Violation> {
        self.violation.as_ref()
    }

    /// Every checked operation (clients' and final reads).
    pub fn history(&self) -> &[Op] {
        &self.history
    }

    fn now_us(&mut self) -> u64 {
        self.order_us += 1;
        self.step_us + self.order_us
    }

    fn poll_clients(&mut self, trace: &mut WorkloadStep<'_>) {
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        for c in 0..self.clients.len() {
            let Some(pending) = self.clients[c].pending.as_mut() else {
                continue;
            };
            let Poll::Ready(answer) = pending.answer.as_mut().poll(&mut cx) else {
                continue;
            };
            let pending = self.clients[c].pending.take().expect("polled above");
            self.record(c as u64, pending, answer, trace);
        }
    }

    fn record(&mut self, client: u64, p: Pending, answer: Answer, trace: &mut WorkloadStep<'_>) {
        let complete_us = self.now_us();
        let name = format!("c{client}");
        let times = (p.invoke_us, complete_us);
        let (code, payload): (u64, Vec<u8>) = match (&p.request, &answer) {
            (_, Ok(value)) => (0, value.as_deref().unwrap_or(b"-").to_vec()),
            (_, Err(e)) => (1, e.to_string().into_bytes()),
        };
        trace.record(18, &[client, code], &payload);
        let value = |v: &Option<Bytes>| v.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
        let mut op = match (p.request, answer) {
            (Request::Put, Ok(_)) => {
                self.counts.puts_ok += 1;
                Op::put(&name, &p.key, &p.value, Outcome::Ok, times)
            }
            // Refused before anything was proposed, or by Raft itself: the
            // entry is not in the log (nor in the resend pool).
            (
                Request::Put,
                Err(
                    KvError::Busy
                    | KvError::Raft(
                        RaftError::NoLeader | RaftError::ProposalDropped(_) | RaftError::Busy,
                    ),
                ),
            ) => {
                self.counts.puts_failed += 1;
                Op::put(&name, &p.key, &p.value, Outcome::Fail, times)
            }
            (Request::Put, Err(_)) => {
                self.counts.puts_unknown += 1;
                Op::put(&name, &p.key, &p.value, Outcome::Unknown, times)
            }
            (Request::Get(read), Ok(v)) => {
                let op = Op::get(&name, &p.key, value(&v).as_deref(), times);
                if read == ReadConsistency::Serializable {
                    self.counts.reads_serializable += 1;
                    let mut op = op;
                    op.node = p.node;
                    self.stale_reads.push(op);
                    return;
                }
                self.counts.reads_linearizable += 1;
                op
            }
            (Request::Get(_), Err(_)) => {
                self.counts.reads_failed += 1;
                return;
            }
        };
        op.node = p.node;
        self.history.push(op);
    }

    fn start_requests(&mut self, trace: &mut WorkloadStep<'_>) {
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        for c in 0..self.clients.len() {
            if self.clients[c].pending.is_some()
                || self.stores.is_empty()
                || (self.options.max_ops > 0 && self.started >= self.options.max_ops)
                || !self.rng.percent(self.options.request_percent)
            {
                continue;
            }
            let nodes: Vec<u64> = self.stores.keys().copied().collect();
            let node = nodes[self.rng.below(nodes.len() as u64) as usize];
            let key_n = self.rng.below(self.options.keys.max(1));
            let key = format!("k{key_n}");
            let request = if self.rng.percent(self.options.put_percent) {
                Request::Put
            } else if self.rng.percent(self.options.serializable_percent) {
                Request::Get(ReadConsistency::Serializable)
            } else {
                Request::Get(ReadConsistency::Linearizable)
            };
            let client = &mut self.clients[c];
            client.next_value += 1;
            let value = format!("c{c}v{}", client.next_value);
            let store = self.stores[&node].0.clone();
            let key_bytes = Bytes::from(key.clone().into_bytes());
            let answer: Pin<Box<dyn Future<Output = Answer> + Send>> = match request {
                Request::Put => {
                    let value = Bytes::from(value.clone().into_bytes());
                    Box::pin(async move { store.put_value(key_bytes, value).await.map(|()| None) })
                }
                Request::Get(read) => Box::pin(async move { store.get(&key_bytes, read).await }),
            };
            let op_code = match request {
                Request::Put => 0,
                Request::Get(ReadConsistency::Linearizable) => 1,
                Request::Get(ReadConsistency::Serializable) => 2,
            };
            trace.record(17, &[c as u64, node, op_code, key_n], value.as_bytes());
            self.started += 1;
            let invoke_us = self.now_us();
            let mut pending = Pending {
                node,
                key,
                request,
                value,
                invoke_us,
                answer,
            };
            // The first poll hands the request to the node (or answers a
            // serializable read at once).
            match pending.answer.as_mut().poll(&mut cx) {
                Poll::Ready(answer) => self.record(c as u64, pending, answer, trace),
                Poll::Pending => self.clients[c].pending = Some(pending),
            }
        }
    }

    fn maybe_resend(&mut self, trace: &mut WorkloadStep<'_>) {
        if self.stores.is_empty() || !self.rng.percent(self.options.resend_percent) {
            return;
        }
        let payload = {
            let proposed = self.proposed.lock();
            if proposed.is_empty() {
                return;
            }
            proposed[self.rng.below(proposed.len() as u64) as usize].clone()
        };
        let nodes: Vec<u64> = self.stores.keys().copied().collect();
        let node = nodes[self.rng.below(nodes.len() as u64) as usize];
        let handle = self.stores[&node].1.clone();
        trace.record(19, &[node], &payload);
        self.counts.resends += 1;
        self.resends
            .push(Box::pin(async move { handle.propose(payload).await }));
    }

    fn poll_resends(&mut self) {
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        self.resends
            .retain_mut(|resend| resend.as_mut().poll(&mut cx).is_pending());
    }

    /// The final reads of every key on every member (local, after the
    /// calm phase), and the equality of the members' keyspaces.
    fn final_reads(&mut self, members: &[u64]) -> Result<Vec<Op>, String> {
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        let at_us = self.now_us();
        let mut reads = Vec::new();
        let mut first: Option<(u64, (u32, i64, i64))> = None;
        for &id in members {
            let Some((store, _)) = self.stores.get(&id) else {
                return Err(format!("node {id} has no store at the end"));
            };
            for k in 0..self.options.keys.max(1) {
                let key = format!("k{k}");
                let mut get =
                    std::pin::pin!(store.get(key.as_bytes(), ReadConsistency::Serializable));
                let Poll::Ready(Ok(value)) = get.as_mut().poll(&mut cx) else {
                    return Err(format!("node {id}: a local read of {key} did not answer"));
                };
                let value = value.map(|v| String::from_utf8_lossy(&v).into_owned());
                let mut op = Op::get("final", &key, value.as_deref(), (at_us, at_us));
                op.node = id;
                reads.push(op);
            }
            let mut hash = std::pin::pin!(store.hash_kv(pb::HashKvRequest { revision: 0 }));
            let Poll::Ready(Ok(response)) = hash.as_mut().poll(&mut cx) else {
                return Err(format!("node {id}: HashKV did not answer"));
            };
            let revision = response.header.map_or(0, |h| h.revision);
            let state = (response.hash, revision, response.compact_revision);
            match first {
                None => first = Some((id, state)),
                Some((first_id, first_state)) if first_state != state => {
                    return Err(format!(
                        "the keyspaces differ after the calm phase: node {first_id} hash {:#x} at revision {}, node {id} hash {:#x} at revision {}",
                        first_state.0, first_state.1, state.0, state.1
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(reads)
    }

    fn check(&mut self, checker: &'static str) -> Result<(), String> {
        let verdict = check_history(&self.history, CHECK_MAX_STEPS);
        if let Some((key, culprit)) = verdict.first_violation() {
            let ops: Vec<Op> = self
                .history
                .iter()
                .filter(|op| op.key == key)
                .cloned()
                .collect();
            let culprit = ops[culprit].clone();
            let reason = format!(
                "{checker}: key {key} does not linearize; culprit: {}",
                lincheck::timeline::describe(&culprit)
            );
            self.violation = Some(Violation {
                checker,
                key: key.to_string(),
                culprit,
                ops,
            });
            return Err(reason);
        }
        if let Some((key, KeyVerdict::Unknown { steps })) = verdict
            .keys
            .iter()
            .find(|(_, v)| matches!(v, KeyVerdict::Unknown { .. }))
        {
            return Err(format!(
                "{checker}: key {key} undecided after {steps} search steps"
            ));
        }
        Ok(())
    }

    /// A serializable read may be stale, but must read a value some PUT of
    /// its key wrote, started before the read returned (or absence).
    fn check_stale_reads(&self) -> Result<(), String> {
        let written: BTreeMap<(&str, &str), u64> = self
            .history
            .iter()
            .filter_map(|op| match &op.kind {
                OpKind::Put { value } => Some(((op.key.as_str(), value.as_str()), op.invoke_us)),
                _ => None,
            })
            .collect();
        for read in &self.stale_reads {
            let OpKind::Get { value: Some(value) } = &read.kind else {
                continue;
            };
            match written.get(&(read.key.as_str(), value.as_str())) {
                Some(&invoke_us) if invoke_us <= read.complete_us => {}
                _ => {
                    return Err(format!(
                        "a serializable read returned a value never written before it: {}",
                        lincheck::timeline::describe(read)
                    ))
                }
            }
        }
        Ok(())
    }
}

impl Workload for KvWorkload {
    fn state_machine(&mut self, id: u64, nonce: u64) -> Box<dyn StateMachine> {
        let mut config = KvConfig::new(id);
        config.request_timeout_ms = self.options.request_timeout_ms;
        let (unattached, state_machine) = kvstore::new_with_boot_nonce(config, Some(nonce));
        let unattached = unattached
            .with_timer(Arc::new(self.timer.clone()))
            .with_lease_clock(Arc::new(kvstore::ManualClock::new()));
        self.unattached.insert(id, unattached);
        Box::new(state_machine)
    }

    fn opened(&mut self, id: u64, consensus: DrivenHandle) {
        let Some(unattached) = self.unattached.remove(&id) else {
            return;
        };
        let store = unattached.attach(Arc::new(Remembering {
            inner: consensus.clone(),
            proposed: Arc::clone(&self.proposed),
            accepted: Arc::clone(&self.accepted),
        }));
        self.stores.insert(id, (store, consensus));
    }

    fn closed(&mut self, id: u64) {
        self.unattached.remove(&id);
        self.stores.remove(&id);
    }

    fn step(&mut self, step: &mut WorkloadStep<'_>) {
        self.step_us = step.step * STEP_MS * 1000;
        self.order_us = 0;
        self.timer
            .now_ms
            .store(step.step * STEP_MS, Ordering::Release);
        self.poll_resends();
        self.poll_clients(step);
        if !step.calm {
            self.start_requests(step);
            self.maybe_resend(step);
        }
    }

    fn finish(&mut self, members: &[u64]) -> Result<(), String> {
        // Requests still unanswered: a PUT's outcome is unknown, a GET
        // has none.
        self.step_us += STEP_MS * 1000;
        for c in 0..self.clients.len() {
            if let Some(p) = self.clients[c].pending.take() {
                if p.request == Request::Put {
                    let complete_us = self.now_us();
                    let mut op = Op::put(
                        &format!("c{c}"),
                        &p.key,
                        &p.value,
                        Outcome::Unknown,
                        (p.invoke_us, complete_us),
                    );
                    op.node = p.node;
                    self.counts.puts_unknown += 1;
                    self.history.push(op);
                }
            }
        }
        self.check_stale_reads()?;
        self.check("linearizability")?;
        let reads = self.final_reads(members)?;
        self.history.extend(reads);
        self.counts.ops_checked = (self.history.len() + self.stale_reads.len()) as u64;
        self.check("durability")
            .map_err(|e| format!("an acknowledged write is lost or a member diverged: {e}"))?;
        Ok(())
    }
}
