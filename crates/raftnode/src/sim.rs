//! A deterministic simulation of a raftnode cluster: real nodes
//! ([`DrivenNode`]: raftnode's loop and the WAL, on `wal::sim::SimFs`) with
//! one [`ManualClock`] each and an in-memory network, all on the caller's
//! thread, every choice drawn from one seed.
//!
//! [`run`] builds the cluster, elects a leader and proposes through random
//! nodes while it injects the [`Faults`] of the run: on the network, drops,
//! duplicates, reordering on a link, one- and two-way partitions and
//! snapshot transfers that fail midway; on the disks, crashes (whole loss
//! or torn writes by sector, between turns or in the middle of one at an
//! fsync), fsync failures (the node stops and is restarted), slow disks
//! and bit flips in the WAL found at restart (recovery must refuse them;
//! the node is then repaired: removed, wiped and added again); and
//! membership changes (remove a member, add a fresh node or re-add the
//! removed id with a fresh disk). One disruption (a node down, a sync
//! failure armed, a membership change) is in progress at a time. Snapshots
//! and compaction happen every few entries. Then the run turns calm (no
//! faults, no proposals) and the cluster must converge.
//!
//! After every turn of every node it checks:
//! * at most one leader per term;
//! * a committed entry never changes or disappears, across crashes too;
//! * applied ≤ committed ≤ last index;
//! * terms never go backwards on a node;
//! * every applied entry is the committed one;
//! * a node stops only when the run removed it, and fails only after an
//!   fsync failed under it; a restart is refused only after damage the run
//!   did (a flipped bit, or a torn write whose sectors landed out of
//!   order), and a flipped bit is never accepted;
//!
//! and at the end that every member is up, applied all it committed, and
//! applied the same sequence. The event trace is hashed: the same seed
//! gives the same hash. A planted bug ([`SimOptions::plant`], see
//! `wal::plant`) is switched on for the run's thread.
//!
//! Without a [`Workload`] ([`run`]) the harness proposes raw payloads and
//! the state machine is a log of applied payloads, whose snapshot is that
//! log. With one ([`run_with`]; `kvsim` is the key-value store's) each node
//! gets the workload's state machine, wrapped so that the applied payloads
//! are still recorded for the checks above, and the workload's clients
//! propose and read through each node's [`DrivenHandle`](crate::DrivenHandle)
//! every step; its own checks run at the end. A driven node writes its
//! snapshots on the caller's thread, so the whole run is one thread.

mod faults;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use prost::Message as _;
use raft::eraftpb::{Message, MessageType};
use wal::plant::PlantedBug;
use wal::sim::{CrashLoss, SimFs, SimRng};

pub use self::faults::{Faults, FAULT_MIXES};
use crate::{
    DrivenNode, DrivenParts, ManualClock, MembershipChange, NodeConfig, NodeError, Outbox,
    PeerError, PendingChange, RaftError, RestoreError, Role, SnapshotJob, StateMachine, StopReason,
};

/// What a run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimOptions {
    /// Initial cluster size (at least 1). Below 3 there are no membership
    /// changes, bit flips or torn writes (a removal could not be undone).
    pub nodes: u64,
    /// Steps of the faulty phase (each step: deliveries, maybe a proposal,
    /// one turn per live node); the calm phase adds `calm_steps`.
    pub steps: u64,
    /// Steps without faults or proposals at the end, for convergence.
    pub calm_steps: u64,
    /// Percentage of steps with a proposal.
    pub propose_percent: u64,
    /// Applied entries between snapshots (`NodeConfig::snapshot_count`).
    pub snapshot_count: u64,
    /// Entries kept after a snapshot (`NodeConfig::catch_up_entries`).
    pub catch_up_entries: u64,
    /// The faults injected.
    pub faults: Faults,
    /// A planted bug switched on for the run (needs the `planted-bugs`
    /// feature).
    pub plant: Option<PlantedBug>,
}

impl Default for SimOptions {
    fn default() -> SimOptions {
        SimOptions {
            nodes: 3,
            steps: 600,
            calm_steps: 400,
            propose_percent: 30,
            snapshot_count: 20,
            catch_up_entries: 2,
            faults: Faults::default(),
            plant: None,
        }
    }
}

/// What a run observed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimOutcome {
    /// FNV-1a hash of the whole event trace: equal for equal seeds.
    pub trace_hash: u64,
    /// Leader of each term that had one.
    pub leaders: BTreeMap<u64, u64>,
    /// Highest commit index any node reached.
    pub committed_max: u64,
    /// Proposals the nodes accepted.
    pub proposals_ok: u64,
    /// Highest snapshot index any node reached.
    pub snapshot_index_max: u64,
    /// Snapshot transfers (delivered or failed) between nodes.
    pub snapshots_sent: u64,
    /// Messages delivered.
    pub delivered: u64,
    /// Simulated time: the longest any node's clock ran, in milliseconds.
    pub simulated_ms: u64,
    /// Faults injected, by kind (see [`FAULT_KINDS`]).
    pub faults: BTreeMap<&'static str, u64>,
}

impl SimOutcome {
    /// How many faults of `kind` were injected.
    pub fn fault_count(&self, kind: &str) -> u64 {
        self.faults.get(kind).copied().unwrap_or(0)
    }
}

/// The kinds counted in [`SimOutcome::faults`].
pub const FAULT_KINDS: [&str; 15] = [
    "dropped",
    "duplicated",
    "reordered",
    "partitions",
    "snapshot transfers failed",
    "crashes",
    "crashes at an fsync",
    "torn writes",
    "fsync failures",
    "slow disks",
    "bit flips",
    "restarts refused",
    "removals",
    "additions",
    "re-additions",
];

/// An invariant broke (or a node failed): the seed replays it.
#[derive(Debug, thiserror::Error)]
#[error("seed {seed}, step {step}: {reason}")]
pub struct SimError {
    /// The run's seed.
    pub seed: u64,
    /// The step at which it was seen.
    pub step: u64,
    /// What broke.
    pub reason: String,
}

/// Milliseconds of one Raft tick in the simulation.
const TICK_MS: u64 = 100;
/// Steps between the end of one disruption and the start of the next.
const DISRUPTION_GAP_STEPS: u64 = 10;

/// Runs one seeded simulation (see the module docs).
pub fn run(seed: u64, options: &SimOptions) -> Result<SimOutcome, SimError> {
    run_recording(seed, options, false, None).0
}

/// [`run`] with `workload`'s state machines and clients instead of raw
/// proposals; `record` also records every event of the trace (as
/// [`run_traced`]).
pub fn run_with(
    seed: u64,
    options: &SimOptions,
    workload: &mut dyn Workload,
    record: bool,
) -> (Result<SimOutcome, SimError>, Vec<TraceEvent>) {
    let (result, events) = run_recording(seed, options, record, Some(workload));
    (result, events.unwrap_or_default())
}

/// [`run`], recording every event of the trace as well (slower; for
/// replaying a failed seed). The same seed gives the same events.
pub fn run_traced(
    seed: u64,
    options: &SimOptions,
) -> (Result<SimOutcome, SimError>, Vec<TraceEvent>) {
    let (result, events) = run_recording(seed, options, true, None);
    (result, events.unwrap_or_default())
}

fn run_recording(
    seed: u64,
    options: &SimOptions,
    record: bool,
    workload: Option<&mut dyn Workload>,
) -> (Result<SimOutcome, SimError>, Option<Vec<TraceEvent>>) {
    if let Err(e) = wal::plant::set(options.plant) {
        let error = SimError {
            seed,
            step: 0,
            reason: e.into(),
        };
        return (Err(error), None);
    }
    let mut sim = match Sim::new(seed, *options, record, workload) {
        Ok(sim) => sim,
        Err(e) => {
            let _ = wal::plant::set(None);
            return (Err(e), None);
        }
    };
    let result = run_planted(&mut sim, options);
    let _ = wal::plant::set(None);
    (result, sim.trace.events.take())
}

fn run_planted(sim: &mut Sim<'_>, options: &SimOptions) -> Result<SimOutcome, SimError> {
    for step in 0..options.steps {
        sim.step = step;
        sim.trace.step = step;
        sim.run_step(false)?;
    }
    for step in options.steps..options.steps + options.calm_steps {
        sim.step = step;
        sim.trace.step = step;
        sim.run_step(true)?;
    }
    sim.check_converged()?;
    sim.outcome.trace_hash = sim.trace.hash;
    sim.outcome.simulated_ms = sim.nodes.iter().map(|n| n.clock_ms).max().unwrap_or(0);
    Ok(sim.outcome.clone())
}

/// One event of a recorded trace (see [`run_traced`]): the step it
/// happened in, what it was, and its numbers in the order the kind lists
/// them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEvent {
    /// The step of the run.
    pub step: u64,
    /// What happened (see [`TRACE_KINDS`]).
    pub kind: &'static str,
    /// The event's numbers, named by [`TRACE_KINDS`].
    pub fields: Vec<u64>,
    /// Bytes of message or proposal hashed with the event.
    pub payload_bytes: usize,
}

/// Every kind of trace event, its code in the hash and the names of its
/// fields.
pub const TRACE_KINDS: [(u64, &str, &[&str]); 19] = [
    (1, "open", &["node", "incarnation"]),
    (2, "crash", &["node"]),
    (3, "deliver", &["to"]),
    (
        4,
        "status",
        &["node", "term", "role", "commit", "applied", "last"],
    ),
    (5, "propose", &["slot", "accepted"]),
    (6, "snapshot_report", &["from", "to", "delivered"]),
    (7, "partition", &["node", "outbound", "inbound", "heal_at"]),
    (8, "heal", &["node"]),
    (9, "slow_disk", &["node", "until"]),
    (10, "membership_change", &["remove", "add"]),
    (11, "restart_refused", &["node"]),
    (12, "bit_flip", &["node", "offset", "bit"]),
    (13, "membership_step", &["done"]),
    (14, "removed", &["node"]),
    (15, "added", &["node"]),
    (16, "sync_failure_armed", &["node", "after"]),
    (17, "client_invoke", &["client", "node", "op", "key"]),
    (18, "client_return", &["client", "outcome"]),
    (19, "resend", &["node"]),
];

fn trace_kind(code: u64) -> &'static str {
    TRACE_KINDS
        .iter()
        .find(|(c, _, _)| *c == code)
        .map_or("unknown", |(_, name, _)| *name)
}

/// FNV-1a over the trace's bytes: a fixed algorithm, so a hash printed by
/// one build can be compared with another's. Recording the events as well
/// is for replays ([`run_traced`]): a plain run keeps only the hash.
struct Trace {
    hash: u64,
    step: u64,
    events: Option<Vec<TraceEvent>>,
}

impl Trace {
    fn new(record: bool) -> Trace {
        Trace {
            hash: 0xCBF2_9CE4_8422_2325,
            step: 0,
            events: record.then(Vec::new),
        }
    }

    fn hash_bytes(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.hash ^= u64::from(*b);
            self.hash = self.hash.wrapping_mul(0x0000_0100_0000_01B3);
        }
    }

    /// Payload bytes of the event just recorded by [`Self::words`].
    fn bytes(&mut self, bytes: &[u8]) {
        self.hash_bytes(bytes);
        if let Some(last) = self.events.as_mut().and_then(|events| events.last_mut()) {
            last.payload_bytes += bytes.len();
        }
    }

    /// One event: its kind's code, then its fields.
    fn words(&mut self, words: &[u64]) {
        for w in words {
            self.hash_bytes(&w.to_le_bytes());
        }
        if let (Some(events), Some((code, fields))) = (self.events.as_mut(), words.split_first()) {
            events.push(TraceEvent {
                step: self.step,
                kind: trace_kind(*code),
                fields: fields.to_vec(),
                payload_bytes: 0,
            });
        }
    }
}

/// A recorded trace as JSON: the seed, the error if the run failed, and
/// every event with its fields named.
pub fn trace_json(seed: u64, error: Option<&SimError>, events: &[TraceEvent]) -> String {
    let mut out = format!("{{\n  \"seed\": {seed},\n  \"error\": ");
    match error {
        Some(e) => {
            out.push_str(&format!(
                "{{\"step\": {}, \"reason\": {}}}",
                e.step,
                json_string(&e.reason)
            ));
        }
        None => out.push_str("null"),
    }
    out.push_str(",\n  \"events\": [");
    for (n, event) in events.iter().enumerate() {
        out.push_str(if n == 0 { "\n    " } else { ",\n    " });
        out.push_str(&format!(
            "{{\"step\": {}, \"kind\": \"{}\"",
            event.step, event.kind
        ));
        let names = TRACE_KINDS
            .iter()
            .find(|(_, name, _)| *name == event.kind)
            .map(|(_, _, names)| *names)
            .unwrap_or(&[]);
        for (i, value) in event.fields.iter().enumerate() {
            match names.get(i) {
                Some(name) => out.push_str(&format!(", \"{name}\": {value}")),
                None => out.push_str(&format!(", \"field{i}\": {value}")),
            }
        }
        if event.payload_bytes > 0 {
            out.push_str(&format!(", \"payload_bytes\": {}", event.payload_bytes));
        }
        out.push('}');
    }
    out.push_str("\n  ]\n}\n");
    out
}

fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Applied payloads as (index, payload), in order.
type AppliedLog = Vec<(u64, Vec<u8>)>;

/// The applied payloads of a node, in order (what the checks read).
#[derive(Clone, Default)]
struct Applied(Arc<Mutex<AppliedLog>>);

/// The simulation's state machine: records the applied payloads in
/// [`Applied`] and forwards them to the workload's state machine, if any.
/// Its snapshot is the applied log, followed by the inner state machine's
/// snapshot (`log length u64, log, inner`).
struct Recorder {
    applied: Applied,
    inner: Option<Box<dyn StateMachine>>,
}

impl StateMachine for Recorder {
    fn apply(&mut self, index: u64, data: &[u8]) {
        {
            let mut applied = self.applied.0.lock();
            assert!(
                applied.last().is_none_or(|(last, _)| index > *last),
                "raftnode applied {index} out of order"
            );
            applied.push((index, data.to_vec()));
        }
        if let Some(inner) = self.inner.as_mut() {
            inner.apply(index, data);
        }
    }

    fn snapshot(&mut self) -> SnapshotJob {
        let applied = self.applied.0.lock().clone();
        let Some(inner) = self.inner.as_mut() else {
            return Box::new(move || encode_applied(&applied));
        };
        let inner_job = inner.snapshot();
        Box::new(move || {
            let log = encode_applied(&applied);
            let mut out = Vec::with_capacity(8 + log.len());
            out.extend_from_slice(&(log.len() as u64).to_be_bytes());
            out.extend_from_slice(&log);
            out.extend_from_slice(&inner_job());
            out
        })
    }

    fn restore(&mut self, index: u64, data: &[u8]) -> Result<(), RestoreError> {
        let truncated = || RestoreError {
            index,
            reason: "truncated applied log".into(),
        };
        let (log, rest) = match self.inner {
            None => (data, &[][..]),
            Some(_) => {
                let len = u64::from_be_bytes(
                    data.get(..8)
                        .and_then(|b| b.try_into().ok())
                        .ok_or_else(truncated)?,
                ) as usize;
                let log = data.get(8..8 + len).ok_or_else(truncated)?;
                (log, &data[8 + len..])
            }
        };
        let applied = decode_applied(log).ok_or_else(truncated)?;
        if let Some(inner) = self.inner.as_mut() {
            inner.restore(index, rest)?;
        }
        *self.applied.0.lock() = applied;
        Ok(())
    }
}

/// What runs on the nodes besides Raft, for [`run_with`]: the state machine
/// each incarnation of a node applies to, and clients that propose and read
/// through the nodes' [`DrivenHandle`](crate::DrivenHandle)s. Without one
/// ([`run`]) the harness proposes raw payloads itself.
///
/// Everything is called on the run's thread, in an order that depends only
/// on the seed; a workload draws its choices from a generator of its own
/// seeded from the run's seed, and records its events in the trace through
/// [`WorkloadStep::record`].
pub trait Workload {
    /// The state machine of node `id`'s next incarnation; `nonce` differs
    /// between incarnations and derives from the seed.
    fn state_machine(&mut self, id: u64, nonce: u64) -> Box<dyn StateMachine>;
    /// Node `id` opened with the last state machine given for it.
    fn opened(&mut self, id: u64, consensus: crate::DrivenHandle);
    /// Node `id` is gone (crashed, failed, removed, or refused to open).
    fn closed(&mut self, id: u64);
    /// One step, before the nodes' turns: collect answers and (unless
    /// `calm`) start new requests.
    fn step(&mut self, step: &mut WorkloadStep<'_>);
    /// After the calm phase, once the cluster converged: the workload's own
    /// checks, with `members` the final members (all up).
    fn finish(&mut self, members: &[u64]) -> Result<(), String>;
}

/// The context of [`Workload::step`].
pub struct WorkloadStep<'a> {
    /// The step of the run.
    pub step: u64,
    /// The calm phase: no new requests.
    pub calm: bool,
    trace: &'a mut Trace,
}

impl WorkloadStep<'_> {
    /// Records an event in the trace (and its hash): `code` is one of the
    /// client kinds of [`TRACE_KINDS`] (17 and up), `fields` its numbers,
    /// `payload` bytes hashed with it.
    pub fn record(&mut self, code: u64, fields: &[u64], payload: &[u8]) {
        let mut words = Vec::with_capacity(fields.len() + 1);
        words.push(code);
        words.extend_from_slice(fields);
        self.trace.words(&words);
        if !payload.is_empty() {
            self.trace.bytes(payload);
        }
    }
}

/// `(index u64, length u32, payload)` per applied entry, big-endian.
fn encode_applied(applied: &AppliedLog) -> Vec<u8> {
    let mut out = Vec::new();
    for (index, data) in applied {
        out.extend_from_slice(&index.to_be_bytes());
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(data);
    }
    out
}

fn decode_applied(mut data: &[u8]) -> Option<AppliedLog> {
    let mut applied = Vec::new();
    while !data.is_empty() {
        let index = u64::from_be_bytes(data.get(..8)?.try_into().ok()?);
        let len = u32::from_be_bytes(data.get(8..12)?.try_into().ok()?) as usize;
        applied.push((index, data.get(12..12 + len)?.to_vec()));
        data = &data[12 + len..];
    }
    Some(applied)
}

/// A node cut off from the others, in one or both directions.
#[derive(Debug, Clone, Copy)]
struct Partition {
    node: u64,
    /// Messages from `node` are lost.
    outbound: bool,
    /// Messages to `node` are lost.
    inbound: bool,
    heal_at: u64,
}

impl Partition {
    fn cuts(&self, from: u64, to: u64) -> bool {
        (self.outbound && from == self.node) || (self.inbound && to == self.node)
    }
}

/// Collects what a node sends; the network takes it after each turn.
#[derive(Clone, Default)]
struct SimOutbox(Arc<Mutex<Vec<Message>>>);

impl Outbox for SimOutbox {
    fn send(&self, msgs: Vec<Message>) {
        self.0.lock().extend(msgs);
    }

    fn add_peer(&self, _id: u64, _url: &str) -> Result<(), PeerError> {
        Ok(())
    }

    fn remove_peer_at(&self, _id: u64, _index: u64) {}
}

/// A message in flight, and whether its delivery is reported to the sender
/// as a finished snapshot transfer.
struct InFlight {
    msg: Message,
    report_delivery: bool,
}

/// One node id: its disk and clock outlive crashes (a wipe replaces the
/// disk).
struct SimNode {
    id: u64,
    fs: SimFs,
    clock: ManualClock,
    clock_ms: u64,
    outbox: SimOutbox,
    applied: Applied,
    node: Option<DrivenNode>,
    incarnation: u64,
    /// Disks this id had (a wipe starts a new one).
    disks: u64,
    /// Started empty to be added by the cluster (not an initial member).
    joins: bool,
    /// A member, as far as the run knows (removed ones are not).
    member: bool,
    /// Highest term this node ever reported (since its disk was new).
    term_max: u64,
    /// The node is stuck in a slow fsync until this step.
    stalled_until: u64,
    /// `fs.stats().failed_syncs` when the node last started.
    failed_syncs_at_start: u64,
}

/// The one disruption in progress.
enum Disruption {
    /// A crashed (or failed) node restarts at `restart_at`, after its WAL
    /// got a bit flipped if `flip`.
    Down {
        slot: usize,
        restart_at: u64,
        flip: bool,
        /// The crash tore a write out of order: a refusal is expected.
        torn_out_of_order: bool,
    },
    /// An fsync of `slot` is set to fail; when it does the node stops (EIO)
    /// or crashes (`power_loss`). Given up at `deadline`.
    SyncArmed {
        slot: usize,
        deadline: u64,
        power_loss: bool,
    },
    /// Remove `remove`, then add `add` with a fresh disk.
    Member(MemberOp),
}

struct MemberOp {
    remove: u64,
    add: u64,
    phase: MemberPhase,
    pending: Option<PendingChange>,
    next_try: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum MemberPhase {
    Removing,
    Adding,
    /// The addition is applied on the node that proposed it; the change
    /// ends when every member applied it (until then the cluster has one
    /// member too few to survive another disruption).
    CatchingUp,
}

struct Sim<'w> {
    seed: u64,
    options: SimOptions,
    step: u64,
    rng: SimRng,
    nodes: Vec<SimNode>,
    /// Messages in flight: (delivery step, send order) → message.
    network: BTreeMap<(u64, u64), InFlight>,
    /// Delivery step of the last in-order message on each link.
    link_tail: HashMap<(u64, u64), u64>,
    sent: u64,
    partition: Option<Partition>,
    disruption: Option<Disruption>,
    /// No new disruption before this step.
    quiet_until: u64,
    /// Disruptions left to inject, by kind.
    budget: Faults,
    trace: Trace,
    /// Every committed entry any node reported: index → (term, data).
    committed: HashMap<u64, (u64, Vec<u8>)>,
    outcome: SimOutcome,
    workload: Option<&'w mut dyn Workload>,
}

fn url(id: u64) -> String {
    format!("http://sim-{id}")
}

fn data_dir(id: u64) -> PathBuf {
    PathBuf::from(format!("/sim/node-{id}"))
}

fn node_config(id: u64, members: &[u64], joins: bool, options: &SimOptions) -> NodeConfig {
    let members = members.iter().map(|&i| (i, url(i))).collect();
    let mut config = NodeConfig::new(id, members, data_dir(id));
    config.join = joins;
    config.tick_ms = TICK_MS;
    config.election_ticks_pinned = true;
    config.wal_segment_bytes = 64 * 1024;
    config.snapshot_count = options.snapshot_count.max(1);
    config.catch_up_entries = options.catch_up_entries;
    // Every snapshot_count entries, however small the log is.
    config.snapshot_log_percent = 0;
    // Older snapshot files go as soon as a newer marker is durable.
    config.snapshot_keep_count = 1;
    config
}

impl SimNode {
    fn new(id: u64, seed: u64) -> SimNode {
        SimNode {
            id,
            fs: SimFs::new(disk_seed(seed, id, 0)),
            clock: ManualClock::new(),
            clock_ms: 0,
            outbox: SimOutbox::default(),
            applied: Applied::default(),
            node: None,
            incarnation: 0,
            disks: 0,
            joins: false,
            member: true,
            term_max: 0,
            stalled_until: 0,
            failed_syncs_at_start: 0,
        }
    }

    fn live(&self) -> bool {
        self.node.is_some()
    }
}

fn disk_seed(seed: u64, id: u64, disks: u64) -> u64 {
    seed ^ id.rotate_left(32) ^ disks.rotate_left(48)
}

impl<'w> Sim<'w> {
    fn new(
        seed: u64,
        mut options: SimOptions,
        record: bool,
        workload: Option<&'w mut dyn Workload>,
    ) -> Result<Sim<'w>, SimError> {
        let nodes = (1..=options.nodes.max(1))
            .map(|id| SimNode::new(id, seed))
            .collect();
        if options.nodes < 3 {
            // Removing one of two leaves no quorum to add it back, so
            // neither membership changes nor the damage only a removal
            // repairs (a flipped bit, a write torn out of order).
            options.faults.membership_changes = 0;
            options.faults.bit_flips = 0;
            options.faults.torn_writes = false;
        }
        let budget = options.faults;
        let mut sim = Sim {
            seed,
            options,
            step: 0,
            rng: SimRng::new(seed),
            nodes,
            network: BTreeMap::new(),
            link_tail: HashMap::new(),
            sent: 0,
            partition: None,
            disruption: None,
            quiet_until: 50,
            budget,
            trace: Trace::new(record),
            committed: HashMap::new(),
            outcome: SimOutcome::default(),
            workload,
        };
        for i in 0..sim.nodes.len() {
            sim.start(i)?;
        }
        Ok(sim)
    }

    fn fail(&self, reason: String) -> SimError {
        SimError {
            seed: self.seed,
            step: self.step,
            reason,
        }
    }

    fn count(&mut self, kind: &'static str) {
        *self.outcome.faults.entry(kind).or_insert(0) += 1;
    }

    fn members(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.member)
            .map(|n| n.id)
            .collect()
    }

    /// Opens node `i` from its disk. `Ok(false)`: recovery refused the disk.
    fn open(&mut self, i: usize) -> Result<bool, NodeError> {
        let options = self.options;
        let members = if self.nodes[i].joins {
            self.members()
        } else {
            (1..=options.nodes).collect()
        };
        let n = &mut self.nodes[i];
        n.incarnation += 1;
        n.applied = Applied::default();
        n.stalled_until = 0;
        n.failed_syncs_at_start = n.fs.stats().failed_syncs;
        let nonce = (self.seed ^ n.id).wrapping_mul(0x1000_0000_01B3)
            ^ (n.incarnation << 40)
            ^ (n.disks << 56);
        let inner = self.workload.as_mut().map(|w| w.state_machine(n.id, nonce));
        let opened = DrivenNode::open(DrivenParts {
            config: node_config(n.id, &members, n.joins, &options),
            fs: Arc::new(n.fs.clone()),
            state_machine: Box::new(Recorder {
                applied: n.applied.clone(),
                inner,
            }),
            clock: Arc::new(n.clock.clone()),
            outbox: Box::new(n.outbox.clone()),
            nonce,
        });
        self.trace.words(&[1, n.id, n.incarnation]);
        match opened {
            Ok(node) => {
                if let Some(w) = self.workload.as_mut() {
                    w.opened(n.id, node.consensus());
                }
                n.node = Some(node);
                Ok(true)
            }
            Err(e) => {
                if let Some(w) = self.workload.as_mut() {
                    w.closed(n.id);
                }
                Err(e)
            }
        }
    }

    /// Starts node `i`, which must open.
    fn start(&mut self, i: usize) -> Result<(), SimError> {
        let id = self.nodes[i].id;
        self.open(i)
            .map(|_| ())
            .map_err(|e| self.fail(format!("node {id} does not start: {e}")))
    }

    /// The node stops without any further write; its disk loses what was
    /// not synced (whole, or torn by sector). Returns whether a write was
    /// torn out of order (recovery may then refuse the disk).
    fn crash(&mut self, i: usize) -> bool {
        let torn = self.options.faults.torn_writes;
        let n = &mut self.nodes[i];
        n.node = None;
        n.outbox.0.lock().clear();
        n.fs.cancel_sync_failure();
        let before = n.fs.stats();
        n.fs.crash(if torn {
            CrashLoss::Random
        } else {
            CrashLoss::LoseAll
        });
        let after = n.fs.stats();
        let id = n.id;
        self.trace.words(&[2, id]);
        if let Some(w) = self.workload.as_mut() {
            w.closed(id);
        }
        self.count("crashes");
        if after.writes_torn > before.writes_torn {
            self.count("torn writes");
        }
        after.writes_torn_out_of_order > before.writes_torn_out_of_order
    }

    /// One step: update the faults, deliver what is due, maybe propose, one
    /// turn per live node, collect what they sent.
    fn run_step(&mut self, calm: bool) -> Result<(), SimError> {
        self.update_partition(calm);
        self.update_disruption(calm)?;
        if !calm {
            self.maybe_slow_disk();
        }
        self.deliver_due();
        if let Some(w) = self.workload.as_mut() {
            w.step(&mut WorkloadStep {
                step: self.step,
                calm,
                trace: &mut self.trace,
            });
        } else if !calm {
            self.maybe_propose();
        }
        self.turn_all()?;
        self.collect_sent(calm);
        Ok(())
    }

    /// Heals the partition when its time is up (or the run turns calm), or
    /// starts one.
    fn update_partition(&mut self, calm: bool) {
        if let Some(p) = self.partition {
            if calm || self.step >= p.heal_at {
                self.partition = None;
                self.trace.words(&[8, p.node]);
            }
            return;
        }
        if calm || !self.rng.percent(self.options.faults.partition_percent) {
            return;
        }
        let node = self.nodes[self.rng.below(self.nodes.len() as u64) as usize].id;
        let (outbound, inbound) = match self.rng.below(3) {
            0 => (true, true),
            1 => (true, false),
            _ => (false, true),
        };
        let heal_at = self.step + 20 + self.rng.below(60);
        self.partition = Some(Partition {
            node,
            outbound,
            inbound,
            heal_at,
        });
        self.count("partitions");
        self.trace
            .words(&[7, node, u64::from(outbound), u64::from(inbound), heal_at]);
    }

    /// A random live member's disk turns slow for a while.
    fn maybe_slow_disk(&mut self) {
        if !self.rng.percent(self.options.faults.slow_disk_percent) {
            return;
        }
        let Some(i) = self.random_live_member() else {
            return;
        };
        let until = self.step + 3 + self.rng.below(20);
        let n = &mut self.nodes[i];
        n.stalled_until = n.stalled_until.max(until);
        let id = n.id;
        self.count("slow disks");
        self.trace.words(&[9, id, until]);
    }

    fn random_live_member(&mut self) -> Option<usize> {
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].live() && self.nodes[i].member)
            .collect();
        if live.is_empty() {
            return None;
        }
        Some(live[self.rng.below(live.len() as u64) as usize])
    }

    /// Ends, advances or starts the one disruption. When calm, a node down
    /// restarts at once, an armed sync failure is cancelled and no new one
    /// starts (a membership change in progress goes on to its end).
    fn update_disruption(&mut self, calm: bool) -> Result<(), SimError> {
        match self.disruption.take() {
            None if !calm && self.step >= self.quiet_until => self.start_disruption(),
            None => Ok(()),
            Some(Disruption::Down {
                slot,
                restart_at,
                flip,
                torn_out_of_order,
            }) => {
                if calm || self.step >= restart_at {
                    self.restart(slot, flip, torn_out_of_order)
                } else {
                    self.disruption = Some(Disruption::Down {
                        slot,
                        restart_at,
                        flip,
                        torn_out_of_order,
                    });
                    Ok(())
                }
            }
            Some(Disruption::SyncArmed {
                slot,
                deadline,
                power_loss,
            }) => {
                if calm || self.step >= deadline || !self.nodes[slot].live() {
                    self.nodes[slot].fs.cancel_sync_failure();
                    self.quiet_until = self.step + DISRUPTION_GAP_STEPS;
                } else {
                    self.disruption = Some(Disruption::SyncArmed {
                        slot,
                        deadline,
                        power_loss,
                    });
                }
                Ok(())
            }
            Some(Disruption::Member(op)) => self.drive_member_op(op, calm),
        }
    }

    /// Picks one disruption whose budget is left, at random.
    fn start_disruption(&mut self) -> Result<(), SimError> {
        let b = self.budget;
        let kinds: Vec<u8> = [
            (0, b.crashes),
            (1, b.sync_failures),
            (2, b.bit_flips),
            (3, b.membership_changes),
        ]
        .into_iter()
        .filter(|(_, left)| *left > 0)
        .map(|(kind, _)| kind)
        .collect();
        if kinds.is_empty() {
            return Ok(());
        }
        // Spread the disruptions over the faulty phase.
        if !self.rng.percent(3) {
            return Ok(());
        }
        let kind = kinds[self.rng.below(kinds.len() as u64) as usize];
        let Some(slot) = self.random_live_member() else {
            return Ok(());
        };
        match kind {
            0 | 2 => {
                if kind == 0 {
                    self.budget.crashes -= 1;
                } else {
                    self.budget.bit_flips -= 1;
                }
                if kind == 0 && self.rng.percent(50) {
                    // Power loss in the middle of a turn, at an fsync.
                    let after = self.rng.below(3);
                    self.nodes[slot].fs.fail_sync_after(after);
                    self.disruption = Some(Disruption::SyncArmed {
                        slot,
                        deadline: self.step + 100,
                        power_loss: true,
                    });
                    return Ok(());
                }
                let torn_out_of_order = self.crash(slot);
                self.disruption = Some(Disruption::Down {
                    slot,
                    restart_at: self.step + 10 + self.rng.below(40),
                    flip: kind == 2,
                    torn_out_of_order,
                });
            }
            1 => {
                self.budget.sync_failures -= 1;
                let after = self.rng.below(5);
                self.nodes[slot].fs.fail_sync_after(after);
                self.disruption = Some(Disruption::SyncArmed {
                    slot,
                    deadline: self.step + 100,
                    power_loss: false,
                });
            }
            _ => {
                self.budget.membership_changes -= 1;
                let remove = self.nodes[slot].id;
                let add = if self.rng.percent(50) {
                    remove
                } else {
                    self.nodes.len() as u64 + 1
                };
                self.trace.words(&[10, remove, add]);
                self.disruption = Some(Disruption::Member(MemberOp {
                    remove,
                    add,
                    phase: MemberPhase::Removing,
                    pending: None,
                    next_try: self.step,
                }));
            }
        }
        Ok(())
    }

    /// Restarts a node that crashed or failed, after flipping a bit of its
    /// WAL if `flip`. A refused restart (expected after a flip, possible
    /// after a write torn out of order) starts a repair: remove the node,
    /// wipe it and add it again.
    fn restart(
        &mut self,
        slot: usize,
        flip: bool,
        torn_out_of_order: bool,
    ) -> Result<(), SimError> {
        let flipped = flip && self.flip_bit(slot);
        let id = self.nodes[slot].id;
        self.quiet_until = self.step + DISRUPTION_GAP_STEPS;
        match self.open(slot) {
            Ok(_) if flipped => Err(self.fail(format!(
                "node {id} accepted a WAL with a flipped bit in its newest segment"
            ))),
            Ok(_) => Ok(()),
            Err(e) if flipped || torn_out_of_order => {
                self.count("restarts refused");
                self.trace.words(&[11, id]);
                tracing::debug!(node = id, error = %e, "restart refused; repairing");
                self.disruption = Some(Disruption::Member(MemberOp {
                    remove: id,
                    add: id,
                    phase: MemberPhase::Removing,
                    pending: None,
                    next_try: self.step,
                }));
                Ok(())
            }
            Err(e) => Err(self.fail(format!("node {id} does not restart: {e}"))),
        }
    }

    /// Flips one bit of the newest WAL segment of node `slot` on its
    /// platter: half the time in its last 32 written bytes (the last
    /// record), else anywhere in what is written. False if there is
    /// nothing to flip.
    fn flip_bit(&mut self, slot: usize) -> bool {
        let wal_dir = data_dir(self.nodes[slot].id).join("wal");
        let fs = self.nodes[slot].fs.clone();
        let Ok(mut names) = wal::FileSystem::list(&fs, &wal_dir) else {
            return false;
        };
        names.retain(|name| name.ends_with(".wal"));
        names.sort();
        let Some(newest) = names.last() else {
            return false;
        };
        let path = wal_dir.join(newest);
        let Ok(bytes) = fs.contents(&path) else {
            return false;
        };
        let Some(written_end) = bytes.iter().rposition(|&b| b != 0).map(|p| p as u64 + 1) else {
            return false;
        };
        let offset = if self.rng.percent(50) {
            written_end - 1 - self.rng.below(written_end.min(32))
        } else {
            self.rng.below(written_end)
        };
        let bit = 1u8 << self.rng.below(8);
        let flipped = bytes[offset as usize] ^ bit;
        if fs.corrupt(&path, offset, &[flipped]).is_err() {
            return false;
        }
        self.count("bit flips");
        self.trace
            .words(&[12, self.nodes[slot].id, offset, u64::from(bit)]);
        true
    }

    /// Advances a membership change: propose through the leader (again
    /// after a failure), and when the removal is applied stop and wipe the
    /// removed node; when the addition is, start the added one on its new
    /// disk.
    fn drive_member_op(&mut self, mut op: MemberOp, calm: bool) -> Result<(), SimError> {
        if op.phase == MemberPhase::CatchingUp {
            if self.everyone_knows_the_members() {
                self.quiet_until = self.step + DISRUPTION_GAP_STEPS;
            } else {
                self.disruption = Some(Disruption::Member(op));
            }
            return Ok(());
        }
        if let Some(answer) = op.pending.as_mut().and_then(|p| p.poll()) {
            op.pending = None;
            let done = match (&answer, op.phase) {
                (Ok(()), _) => true,
                // A retry of a change that went through earlier, or an
                // answer lost with the node that proposed it; a stale
                // leader refuses too, so only what every live node applied
                // counts.
                (
                    Err(
                        RaftError::InvalidMembership(_) | RaftError::Member(_) | RaftError::Stopped,
                    ),
                    phase,
                ) => self.change_applied_everywhere(&op, phase),
                (Err(_), _) => false,
            };
            self.trace.words(&[13, u64::from(done)]);
            if done {
                match op.phase {
                    MemberPhase::Removing => {
                        self.removed(op.remove);
                        op.phase = MemberPhase::Adding;
                        op.next_try = self.step + 5 + self.rng.below(20);
                    }
                    MemberPhase::Adding => {
                        self.added(op.add, op.add == op.remove)?;
                        op.phase = MemberPhase::CatchingUp;
                    }
                    MemberPhase::CatchingUp => unreachable!("handled above"),
                }
            } else {
                op.next_try = self.step + if calm { 2 } else { 10 };
            }
        }
        if op.pending.is_none() && op.phase != MemberPhase::CatchingUp && self.step >= op.next_try {
            if let Some(leader) = self.leader() {
                let change = match op.phase {
                    MemberPhase::Removing => MembershipChange::RemoveNode { id: op.remove },
                    MemberPhase::Adding => MembershipChange::AddNode {
                        id: op.add,
                        peer_url: url(op.add),
                    },
                    MemberPhase::CatchingUp => unreachable!("nothing to propose"),
                };
                let node = self.nodes[leader]
                    .node
                    .as_mut()
                    .expect("the leader is live");
                op.pending = Some(node.change_membership(change));
            }
        }
        self.disruption = Some(Disruption::Member(op));
        Ok(())
    }

    /// Whether every member is up and has the run's membership.
    fn everyone_knows_the_members(&self) -> bool {
        let members = self.members();
        self.nodes.iter().filter(|n| n.member).all(|n| {
            n.node.as_ref().is_some_and(|node| {
                let mut voters: Vec<u64> = node.status().members.iter().map(|m| m.id).collect();
                voters.sort_unstable();
                voters == members
            })
        })
    }

    /// Whether every live node (but the one removed) applied the change
    /// `op` is at.
    fn change_applied_everywhere(&self, op: &MemberOp, phase: MemberPhase) -> bool {
        let (id, wanted) = match phase {
            MemberPhase::Removing => (op.remove, false),
            _ => (op.add, true),
        };
        self.nodes
            .iter()
            .filter(|n| n.id != id)
            .filter_map(|n| n.node.as_ref())
            .all(|node| node.status().members.iter().any(|m| m.id == id) == wanted)
    }

    /// The live, responsive leader of the highest term, if any.
    fn leader(&self) -> Option<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].stalled_until <= self.step)
            .filter_map(|i| {
                let status = self.nodes[i].node.as_ref()?.status();
                (status.role == Role::Leader).then_some((status.term, i))
            })
            .max()
            .map(|(_, i)| i)
    }

    /// Node `id` is out of the cluster: it stops (if it did not itself) and
    /// its disk is wiped.
    fn removed(&mut self, id: u64) {
        self.count("removals");
        let seed = self.seed;
        let n = &mut self.nodes[id as usize - 1];
        n.node = None;
        n.member = false;
        n.outbox.0.lock().clear();
        n.disks += 1;
        n.fs = SimFs::new(disk_seed(seed, id, n.disks));
        n.applied = Applied::default();
        n.term_max = 0;
        self.trace.words(&[14, id]);
        if let Some(w) = self.workload.as_mut() {
            w.closed(id);
        }
    }

    /// Node `id` was added: it starts on a fresh disk, joining.
    fn added(&mut self, id: u64, again: bool) -> Result<(), SimError> {
        self.count(if again { "re-additions" } else { "additions" });
        if id as usize > self.nodes.len() {
            let node = SimNode::new(id, self.seed);
            self.nodes.push(node);
        }
        let i = id as usize - 1;
        self.nodes[i].member = true;
        self.nodes[i].joins = true;
        self.trace.words(&[15, id]);
        self.start(i)
    }

    /// Moves what the nodes sent into the network, with drops, duplicates,
    /// delays of 1 to 3 steps and failed snapshot transfers (none of those
    /// when `calm`). A link delivers in order unless a message is
    /// reordered; a message on a link the partition cuts, or to a node that
    /// is down, is lost and its sender hears the peer is unreachable.
    fn collect_sent(&mut self, calm: bool) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].stalled_until > self.step {
                continue;
            }
            let msgs: Vec<Message> = std::mem::take(&mut *self.nodes[i].outbox.0.lock());
            for msg in msgs {
                self.route(msg, calm);
            }
        }
    }

    fn route(&mut self, msg: Message, calm: bool) {
        let faults = self.options.faults;
        let (from, to) = (msg.from, msg.to);
        let cut = self.partition.is_some_and(|p| p.cuts(from, to));
        let down = !self.node_slot(to).is_some_and(|i| self.nodes[i].live());
        if cut || down {
            self.report_unreachable(from, to);
            self.lost(&msg);
            return;
        }
        if !calm && self.rng.percent(faults.drop_percent) {
            self.count("dropped");
            self.lost(&msg);
            return;
        }
        let mut report_delivery = true;
        if msg.get_msg_type() == MessageType::MsgSnapshot
            && !calm
            && self.rng.percent(faults.snapshot_fail_percent)
        {
            self.count("snapshot transfers failed");
            self.report_snapshot(&msg, false);
            if self.rng.percent(50) {
                return;
            }
            report_delivery = false;
        }
        let duplicate = !calm && self.rng.percent(faults.duplicate_percent);
        if duplicate {
            self.count("duplicated");
        }
        for _ in 0..1 + u64::from(duplicate) {
            let delay = if calm { 1 } else { 1 + self.rng.below(3) };
            let mut at = self.step + delay;
            let tail = self.link_tail.entry((from, to)).or_insert(0);
            if !calm && self.rng.percent(faults.reorder_percent) {
                if at < *tail {
                    self.outcome
                        .faults
                        .entry("reordered")
                        .and_modify(|c| *c += 1)
                        .or_insert(1);
                }
            } else {
                at = at.max(*tail);
                *tail = at;
            }
            self.sent += 1;
            self.network.insert(
                (at, self.sent),
                InFlight {
                    msg: msg.clone(),
                    report_delivery,
                },
            );
        }
    }

    /// A message that never arrives: a snapshot's sender hears it failed.
    fn lost(&mut self, msg: &Message) {
        self.report_snapshot(msg, false);
    }

    fn node_slot(&self, id: u64) -> Option<usize> {
        let i = id.checked_sub(1)? as usize;
        (i < self.nodes.len()).then_some(i)
    }

    /// Delivers the messages due at this step, one frame per destination.
    /// A node stuck in a slow fsync gets its messages when it is back.
    fn deliver_due(&mut self) {
        let due: Vec<(u64, u64)> = self
            .network
            .range(..=(self.step, u64::MAX))
            .map(|(key, _)| *key)
            .collect();
        let mut frames: BTreeMap<u64, Vec<InFlight>> = BTreeMap::new();
        for key in due {
            if let Some(in_flight) = self.network.remove(&key) {
                frames.entry(in_flight.msg.to).or_default().push(in_flight);
            }
        }
        for (to, in_flights) in frames {
            let slot = self.node_slot(to);
            let stalled_until = slot.map_or(0, |i| self.nodes[i].stalled_until);
            if stalled_until > self.step {
                for in_flight in in_flights {
                    self.sent += 1;
                    self.network.insert((stalled_until, self.sent), in_flight);
                }
                continue;
            }
            let node = slot.and_then(|i| self.nodes[i].node.as_mut());
            let Some(node) = node else {
                for in_flight in &in_flights {
                    self.report_unreachable(in_flight.msg.from, to);
                    self.lost(&in_flight.msg);
                }
                continue;
            };
            let msgs: Vec<Message> = in_flights.iter().map(|f| f.msg.clone()).collect();
            node.deliver(msgs);
            for in_flight in &in_flights {
                self.trace.words(&[3, to]);
                self.trace.bytes(&in_flight.msg.encode_to_vec());
                if in_flight.report_delivery {
                    self.report_snapshot(&in_flight.msg, true);
                }
            }
            self.outcome.delivered += in_flights.len() as u64;
            let snapshot = in_flights
                .iter()
                .any(|f| f.msg.get_msg_type() == MessageType::MsgSnapshot);
            if snapshot {
                if let Some(i) = slot {
                    self.maybe_crash_in_install(i);
                }
            }
        }
    }

    /// Installing a leader's snapshot writes a file, a marker, purges older
    /// files and then the log: a power loss at one of those fsyncs (a crash
    /// from the budget, in the faulty phase, when nothing else is going on)
    /// is where ordering mistakes show. Often right after a restart (the
    /// node that was down catches up from a snapshot).
    fn maybe_crash_in_install(&mut self, i: usize) {
        if self.disruption.is_some()
            || self.step >= self.options.steps
            || self.budget.crashes == 0
            || !self.nodes[i].member
            || !self.rng.percent(50)
        {
            return;
        }
        self.budget.crashes -= 1;
        let after = self.rng.below(5);
        self.nodes[i].fs.fail_sync_after(after);
        self.trace.words(&[16, self.nodes[i].id, after]);
        self.disruption = Some(Disruption::SyncArmed {
            slot: i,
            deadline: self.step + 20,
            power_loss: true,
        });
    }

    /// Tells the sender of a snapshot message how its transfer ended, as the
    /// transport does (raft-rs pauses that follower until it hears).
    fn report_snapshot(&mut self, msg: &Message, delivered: bool) {
        if msg.get_msg_type() != MessageType::MsgSnapshot {
            return;
        }
        self.outcome.snapshots_sent += 1;
        self.trace
            .words(&[6, msg.from, msg.to, u64::from(delivered)]);
        let sender = self
            .node_slot(msg.from)
            .and_then(|i| self.nodes[i].node.as_ref());
        if let Some(sender) = sender {
            sender.report_snapshot(msg.to, delivered);
        }
    }

    /// Tells `from` that `to` could not be reached, as the transport does.
    fn report_unreachable(&mut self, from: u64, to: u64) {
        let sender = self
            .node_slot(from)
            .and_then(|i| self.nodes[i].node.as_ref());
        if let Some(sender) = sender {
            sender.report_unreachable(to);
        }
    }

    /// Advances each node's clock by 20 to 79 ms (so nodes tick at different
    /// moments) and runs one turn of each live node that is not stuck in a
    /// slow fsync, checking after each.
    fn turn_all(&mut self) -> Result<(), SimError> {
        for i in 0..self.nodes.len() {
            let jitter_ms = 20 + self.rng.below(60);
            let n = &mut self.nodes[i];
            n.clock.advance(Duration::from_millis(jitter_ms));
            n.clock_ms += jitter_ms;
            if n.stalled_until > self.step {
                continue;
            }
            let id = n.id;
            let Some(node) = n.node.as_mut() else {
                continue;
            };
            match node.turn() {
                Ok(None) => {}
                Ok(Some(StopReason::Removed)) => self.on_removed_stop(i)?,
                Ok(Some(reason)) => return Err(self.fail(format!("node {id} stopped: {reason:?}"))),
                Err(e) => self.on_node_failed(i, &e.to_string())?,
            }
            self.check(i)?;
        }
        Ok(())
    }

    /// Node `i` stopped itself because it applied its removal: right only
    /// while the run is removing it.
    fn on_removed_stop(&mut self, i: usize) -> Result<(), SimError> {
        let id = self.nodes[i].id;
        let removing = matches!(
            &self.disruption,
            Some(Disruption::Member(op)) if op.remove == id && op.phase == MemberPhase::Removing
        );
        if !removing {
            let doing = match &self.disruption {
                Some(Disruption::Member(op)) => format!(
                    "removing {} then adding {}, {}",
                    op.remove,
                    op.add,
                    if op.phase == MemberPhase::Removing {
                        "removing"
                    } else {
                        "adding"
                    }
                ),
                _ => "no membership change".into(),
            };
            return Err(self.fail(format!(
                "node {id} (started {} times) stopped itself as removed, but it is a member ({doing})",
                self.nodes[i].incarnation
            )));
        }
        self.nodes[i].node = None;
        if let Some(w) = self.workload.as_mut() {
            w.closed(id);
        }
        Ok(())
    }

    /// Node `i`'s loop failed: right only after an fsync failed under it.
    /// What it sent before the failure is out; it stops (its unsynced pages
    /// may be lost) and is restarted later.
    fn on_node_failed(&mut self, i: usize, error: &str) -> Result<(), SimError> {
        let n = &self.nodes[i];
        let id = n.id;
        if n.fs.stats().failed_syncs == n.failed_syncs_at_start {
            return Err(self.fail(format!("node {id} failed: {error}")));
        }
        let power_loss = match self.disruption {
            Some(Disruption::SyncArmed {
                slot, power_loss, ..
            }) if slot == i => power_loss,
            _ => return Err(self.fail(format!("node {id} failed without a fault: {error}"))),
        };
        self.count(if power_loss {
            "crashes at an fsync"
        } else {
            "fsync failures"
        });
        let msgs: Vec<Message> = std::mem::take(&mut *self.nodes[i].outbox.0.lock());
        for msg in msgs {
            self.route(msg, false);
        }
        let torn_out_of_order = self.crash(i);
        self.disruption = Some(Disruption::Down {
            slot: i,
            restart_at: self.step + 10 + self.rng.below(40),
            flip: false,
            torn_out_of_order,
        });
        Ok(())
    }

    /// The invariants, on node `i` after its turn.
    fn check(&mut self, i: usize) -> Result<(), SimError> {
        let n = &self.nodes[i];
        let Some(node) = n.node.as_ref() else {
            return Ok(());
        };
        let status = node.status();
        let id = n.id;
        self.trace.words(&[
            4,
            id,
            status.term,
            role_code(status.role),
            status.commit_index,
            status.applied_index,
            status.last_index,
        ]);
        if !(status.applied_index <= status.commit_index
            && status.commit_index <= status.last_index)
        {
            return Err(self.fail(format!(
                "node {id}: applied {} <= committed {} <= last {} broken",
                status.applied_index, status.commit_index, status.last_index
            )));
        }
        if status.term < n.term_max {
            return Err(self.fail(format!(
                "node {id} went back from term {} to {}",
                n.term_max, status.term
            )));
        }
        if status.role == Role::Leader {
            let leader = *self.outcome.leaders.entry(status.term).or_insert(id);
            if leader != id {
                return Err(self.fail(format!(
                    "two leaders in term {}: {leader} and {id}",
                    status.term
                )));
            }
        }
        for index in status.snapshot_index + 1..=status.commit_index {
            let Some(entry) = node.committed_entry(index) else {
                return Err(self.fail(format!("node {id} lost committed entry {index}")));
            };
            let seen = (entry.term, entry.data);
            match self.committed.get(&index) {
                Some(first) if *first != seen => {
                    return Err(self.fail(format!(
                        "node {id}: committed entry {index} changed from term {} to term {}",
                        first.0, seen.0
                    )));
                }
                Some(_) => {}
                None => {
                    self.committed.insert(index, seen);
                }
            }
        }
        for (index, data) in n.applied.0.lock().iter() {
            if self.committed.get(index).map(|c| &c.1) != Some(data) {
                return Err(self.fail(format!(
                    "node {id} applied entry {index} that differs from the committed one"
                )));
            }
        }
        let n = &mut self.nodes[i];
        n.term_max = status.term;
        self.outcome.committed_max = self.outcome.committed_max.max(status.commit_index);
        self.outcome.snapshot_index_max =
            self.outcome.snapshot_index_max.max(status.snapshot_index);
        Ok(())
    }

    /// Proposes through a random live node (a follower forwards it).
    fn maybe_propose(&mut self) {
        if !self.rng.percent(self.options.propose_percent) {
            return;
        }
        let i = self.rng.below(self.nodes.len() as u64) as usize;
        let data = format!("seed {} step {}", self.seed, self.step).into_bytes();
        if self.nodes[i].stalled_until > self.step {
            return;
        }
        let Some(node) = self.nodes[i].node.as_mut() else {
            return;
        };
        let accepted = node.propose(data.clone()).is_ok();
        self.trace.words(&[5, i as u64, u64::from(accepted)]);
        self.trace.bytes(&data);
        if accepted {
            self.outcome.proposals_ok += 1;
        }
    }

    /// After the calm phase: every member up with the run's membership, one
    /// commit index, everything applied, the same applied sequence on every
    /// node (a restarted node restored its newest snapshot, or the
    /// leader's, and applied the rest of the log).
    fn check_converged(&mut self) -> Result<(), SimError> {
        if let Some(Disruption::Member(op)) = &self.disruption {
            return Err(self.fail(format!(
                "the membership change (remove {}, add {}) did not finish",
                op.remove, op.add
            )));
        }
        let members = self.members();
        let mut first: Option<(u64, u64, AppliedLog)> = None;
        for n in self.nodes.iter().filter(|n| n.member) {
            let Some(node) = n.node.as_ref() else {
                return Err(self.fail(format!("node {} is down at the end", n.id)));
            };
            let status = node.status();
            let mut voters: Vec<u64> = status.members.iter().map(|m| m.id).collect();
            voters.sort_unstable();
            if voters != members {
                return Err(self.fail(format!(
                    "node {} has members {voters:?}, the run made {members:?}",
                    n.id
                )));
            }
            if status.applied_index != status.commit_index {
                return Err(self.fail(format!(
                    "node {} applied {} of {} committed after the calm phase",
                    n.id, status.applied_index, status.commit_index
                )));
            }
            let applied = n.applied.0.lock().clone();
            match &first {
                None => first = Some((n.id, status.commit_index, applied)),
                Some((first_id, commit, log))
                    if *commit != status.commit_index || *log != applied =>
                {
                    return Err(self.fail(format!(
                        "a follower has not caught up after the calm phase: node {} commit {} applied {} entries, node {first_id}: commit {commit}, {} entries",
                        n.id,
                        status.commit_index,
                        applied.len(),
                        log.len()
                    )));
                }
                Some(_) => {}
            }
        }
        if let Some(w) = self.workload.as_mut() {
            if let Err(reason) = w.finish(&members) {
                return Err(self.fail(reason));
            }
        }
        Ok(())
    }
}

fn role_code(role: Role) -> u64 {
    match role {
        Role::Follower => 0,
        Role::PreCandidate => 1,
        Role::Candidate => 2,
        Role::Leader => 3,
    }
}
