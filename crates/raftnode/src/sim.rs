//! A deterministic simulation of a raftnode cluster: real nodes
//! ([`DrivenNode`]: raftnode's loop and the WAL, on `wal::sim::SimFs`) with
//! one [`ManualClock`] each and an in-memory network, all on the caller's
//! thread, every choice drawn from one seed.
//!
//! [`run`] builds the cluster, elects a leader, proposes through random
//! nodes while the network drops, duplicates and delays messages and cuts a
//! node off (both ways, or one way) for a while, crashes nodes one at a time
//! right after a delivery (what a node stepped but did not persist is lost,
//! and its disk loses everything unsynced) and restarts them from their
//! disks, takes snapshots and compacts the log often (so a
//! node that fell behind catches up from the leader's snapshot), then lets
//! the cluster converge without faults. After every turn of every node it
//! checks:
//! * at most one leader per term;
//! * a committed entry never changes or disappears, across crashes too;
//! * applied ≤ committed ≤ last index;
//! * terms never go backwards on a node;
//!
//! and at the end that every node applied the same sequence. The event
//! trace (deliveries, statuses, proposals, crashes) is hashed: the same seed
//! gives the same hash. `cargo xtask sim` runs many seeds; the test
//! `tests/t90_sim.rs` runs a few, and one seed twice.
//!
//! The state machine is a log of applied payloads, and its snapshot is that
//! log. A driven node writes its snapshots on the caller's thread, so the
//! whole run is one thread.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use prost::Message as _;
use raft::eraftpb::Message;
use wal::sim::{CrashLoss, SimFs, SimRng};

use crate::{
    DrivenNode, DrivenParts, ManualClock, NodeConfig, Outbox, PeerError, RestoreError, Role,
    SnapshotJob, StateMachine,
};

/// What a run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimOptions {
    /// Cluster size (at least 1).
    pub nodes: u64,
    /// Steps of the faulty phase (each step: deliveries, maybe a proposal,
    /// one turn per live node); the calm phase adds `calm_steps`.
    pub steps: u64,
    /// Steps without faults or proposals at the end, for convergence.
    pub calm_steps: u64,
    /// Percentage of messages dropped in the faulty phase.
    pub drop_percent: u64,
    /// Percentage of messages delivered twice in the faulty phase.
    pub duplicate_percent: u64,
    /// Percentage of steps with a proposal.
    pub propose_percent: u64,
    /// Percentage of faulty steps that start a partition (when none is in
    /// place): one node cut off both ways, or only its outbound or only its
    /// inbound links, for 20 to 79 steps.
    pub partition_percent: u64,
    /// Crashes in the faulty phase, one node at a time, each restarted 10 to
    /// 49 steps later.
    pub crashes: u64,
    /// Applied entries between snapshots (`NodeConfig::snapshot_count`).
    pub snapshot_count: u64,
    /// Entries kept after a snapshot (`NodeConfig::catch_up_entries`).
    pub catch_up_entries: u64,
}

impl Default for SimOptions {
    fn default() -> SimOptions {
        SimOptions {
            nodes: 3,
            steps: 600,
            calm_steps: 400,
            drop_percent: 3,
            duplicate_percent: 2,
            propose_percent: 30,
            partition_percent: 1,
            crashes: 2,
            snapshot_count: 20,
            catch_up_entries: 2,
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
    /// Nodes crashed (and restarted).
    pub crashes: u64,
    /// Highest snapshot index any node reached.
    pub snapshot_index_max: u64,
    /// Snapshot transfers (delivered or failed) between nodes.
    pub snapshots_sent: u64,
    /// Partitions put in place.
    pub partitions: u64,
    /// Messages delivered.
    pub delivered: u64,
    /// Messages dropped (by the network or sent to a crashed node).
    pub dropped: u64,
}

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

/// Runs one seeded simulation (see the module docs).
pub fn run(seed: u64, options: &SimOptions) -> Result<SimOutcome, SimError> {
    let mut sim = Sim::new(seed, *options)?;
    let schedule = crash_schedule(&mut sim.rng, options);
    for step in 0..options.steps {
        sim.step = step;
        for &(_, restart_at, victim) in &schedule {
            if step == restart_at {
                sim.start(victim)?;
            }
        }
        let crash = schedule
            .iter()
            .find(|(crash_at, _, _)| *crash_at == step)
            .map(|(_, _, victim)| *victim);
        sim.run_step(false, crash)?;
    }
    for step in options.steps..options.steps + options.calm_steps {
        sim.step = step;
        for i in 0..sim.nodes.len() {
            if sim.nodes[i].node.is_none() {
                sim.start(i)?;
            }
        }
        sim.run_step(true, None)?;
    }
    sim.check_converged()?;
    sim.outcome.trace_hash = sim.trace.0;
    Ok(sim.outcome)
}

/// `(crash step, restart step, node)` of each crash: one per equal slice of
/// the faulty phase after the first, so one node is down at a time.
fn crash_schedule(rng: &mut SimRng, options: &SimOptions) -> Vec<(u64, u64, usize)> {
    let slice = options.steps / (options.crashes + 1);
    (1..=options.crashes)
        .map(|k| {
            let crash_at = slice * k + rng.below(slice / 4);
            let restart_at = crash_at + 10 + rng.below(40.min(slice / 2));
            (crash_at, restart_at, rng.below(options.nodes) as usize)
        })
        .collect()
}

/// FNV-1a over the trace's bytes: a fixed algorithm, so a hash printed by
/// one build can be compared with another's.
struct Trace(u64);

impl Trace {
    fn new() -> Trace {
        Trace(0xCBF2_9CE4_8422_2325)
    }

    fn bytes(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01B3);
        }
    }

    fn words(&mut self, words: &[u64]) {
        for w in words {
            self.bytes(&w.to_le_bytes());
        }
    }
}

/// Applied payloads as (index, payload), in order.
type AppliedLog = Vec<(u64, Vec<u8>)>;

/// The simulation's state machine: the applied payloads, in order.
#[derive(Clone, Default)]
struct Applied(Arc<Mutex<AppliedLog>>);

impl StateMachine for Applied {
    fn apply(&mut self, index: u64, data: &[u8]) {
        let mut applied = self.0.lock();
        assert!(
            applied.last().is_none_or(|(last, _)| index > *last),
            "raftnode applied {index} out of order"
        );
        applied.push((index, data.to_vec()));
    }

    fn snapshot(&mut self) -> SnapshotJob {
        let applied = self.0.lock().clone();
        Box::new(move || encode_applied(&applied))
    }

    fn restore(&mut self, index: u64, data: &[u8]) -> Result<(), RestoreError> {
        let applied = decode_applied(data).ok_or_else(|| RestoreError {
            index,
            reason: "truncated applied log".into(),
        })?;
        *self.0.lock() = applied;
        Ok(())
    }
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

/// One node: its disk and clock outlive crashes.
struct SimNode {
    id: u64,
    fs: SimFs,
    clock: ManualClock,
    outbox: SimOutbox,
    applied: Applied,
    node: Option<DrivenNode>,
    incarnation: u64,
    /// Highest term this node ever reported.
    term_max: u64,
}

struct Sim {
    seed: u64,
    options: SimOptions,
    step: u64,
    rng: SimRng,
    nodes: Vec<SimNode>,
    /// Messages in flight: (delivery step, send order) → message.
    network: BTreeMap<(u64, u64), Message>,
    sent: u64,
    partition: Option<Partition>,
    trace: Trace,
    /// Every committed entry any node reported: index → (term, data).
    committed: HashMap<u64, (u64, Vec<u8>)>,
    outcome: SimOutcome,
}

fn node_config(id: u64, options: &SimOptions) -> NodeConfig {
    let members = (1..=options.nodes)
        .map(|i| (i, format!("http://sim-{i}")))
        .collect();
    let mut config = NodeConfig::new(id, members, PathBuf::from(format!("/sim/node-{id}")));
    config.tick_ms = TICK_MS;
    config.election_ticks_pinned = true;
    config.wal_segment_bytes = 64 * 1024;
    config.snapshot_count = options.snapshot_count.max(1);
    config.catch_up_entries = options.catch_up_entries;
    // Every snapshot_count entries, however small the log is.
    config.snapshot_log_percent = 0;
    config
}

impl Sim {
    fn new(seed: u64, options: SimOptions) -> Result<Sim, SimError> {
        let nodes = (1..=options.nodes.max(1))
            .map(|id| SimNode {
                id,
                fs: SimFs::new(seed ^ id.rotate_left(32)),
                clock: ManualClock::new(),
                outbox: SimOutbox::default(),
                applied: Applied::default(),
                node: None,
                incarnation: 0,
                term_max: 0,
            })
            .collect();
        let mut sim = Sim {
            seed,
            options,
            step: 0,
            rng: SimRng::new(seed),
            nodes,
            network: BTreeMap::new(),
            sent: 0,
            partition: None,
            trace: Trace::new(),
            committed: HashMap::new(),
            outcome: SimOutcome::default(),
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

    fn start(&mut self, i: usize) -> Result<(), SimError> {
        let options = self.options;
        let n = &mut self.nodes[i];
        n.incarnation += 1;
        n.applied = Applied::default();
        let opened = DrivenNode::open(DrivenParts {
            config: node_config(n.id, &options),
            fs: Arc::new(n.fs.clone()),
            state_machine: Box::new(n.applied.clone()),
            clock: Arc::new(n.clock.clone()),
            outbox: Box::new(n.outbox.clone()),
            nonce: (self.seed ^ n.id).wrapping_mul(0x1000_0000_01B3) ^ (n.incarnation << 48),
        });
        let (id, incarnation) = (n.id, n.incarnation);
        match opened {
            Ok(node) => n.node = Some(node),
            Err(e) => return Err(self.fail(format!("node {id} does not start: {e}"))),
        }
        self.trace.words(&[1, id, incarnation]);
        Ok(())
    }

    /// The node stops without any further write; its disk loses everything
    /// not synced.
    fn crash(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.node = None;
        n.outbox.0.lock().clear();
        n.fs.crash(CrashLoss::LoseAll);
        self.outcome.crashes += 1;
        self.trace.words(&[2, n.id]);
    }

    /// One step: deliver what is due, crash `crash` if given (after the
    /// delivery, so what it stepped but did not persist is lost), maybe
    /// propose, one turn per live node, collect what they sent.
    fn run_step(&mut self, calm: bool, crash: Option<usize>) -> Result<(), SimError> {
        self.update_partition(calm);
        self.deliver_due();
        if let Some(victim) = crash {
            self.crash(victim);
        }
        if !calm {
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
        if calm || !self.rng.percent(self.options.partition_percent) {
            return;
        }
        let node = 1 + self.rng.below(self.options.nodes);
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
        self.outcome.partitions += 1;
        self.trace
            .words(&[7, node, u64::from(outbound), u64::from(inbound), heal_at]);
    }

    /// Moves what the nodes sent into the network, with drops, duplicates
    /// and delays of 1 to 3 steps (none of those when `calm`); a message on
    /// a link the partition cuts is lost.
    fn collect_sent(&mut self, calm: bool) {
        for i in 0..self.nodes.len() {
            let msgs: Vec<Message> = std::mem::take(&mut *self.nodes[i].outbox.0.lock());
            for msg in msgs {
                let cut = self.partition.is_some_and(|p| p.cuts(msg.from, msg.to));
                if cut || (!calm && self.rng.percent(self.options.drop_percent)) {
                    self.outcome.dropped += 1;
                    self.report_snapshot(&msg, false);
                    continue;
                }
                let duplicate = !calm && self.rng.percent(self.options.duplicate_percent);
                for _ in 0..1 + u64::from(duplicate) {
                    let delay = if calm { 1 } else { 1 + self.rng.below(3) };
                    self.sent += 1;
                    self.network
                        .insert((self.step + delay, self.sent), msg.clone());
                }
            }
        }
    }

    /// Delivers the messages due at this step, one frame per destination.
    fn deliver_due(&mut self) {
        let due: Vec<(u64, u64)> = self
            .network
            .range(..=(self.step, u64::MAX))
            .map(|(key, _)| *key)
            .collect();
        let mut frames: BTreeMap<u64, Vec<Message>> = BTreeMap::new();
        for key in due {
            if let Some(msg) = self.network.remove(&key) {
                frames.entry(msg.to).or_default().push(msg);
            }
        }
        for (to, msgs) in frames {
            let node = to
                .checked_sub(1)
                .and_then(|i| self.nodes.get_mut(i as usize))
                .and_then(|n| n.node.as_mut());
            let Some(node) = node else {
                self.outcome.dropped += msgs.len() as u64;
                for msg in &msgs {
                    self.report_snapshot(msg, false);
                }
                continue;
            };
            for msg in &msgs {
                self.trace.words(&[3, to]);
                self.trace.bytes(&msg.encode_to_vec());
            }
            self.outcome.delivered += msgs.len() as u64;
            node.deliver(msgs.clone());
            for msg in &msgs {
                self.report_snapshot(msg, true);
            }
        }
    }

    /// Tells the sender of a snapshot message how its transfer ended, as the
    /// transport does (raft-rs pauses that follower until it hears).
    fn report_snapshot(&mut self, msg: &Message, delivered: bool) {
        if msg.get_msg_type() != raft::eraftpb::MessageType::MsgSnapshot {
            return;
        }
        self.outcome.snapshots_sent += 1;
        self.trace
            .words(&[6, msg.from, msg.to, u64::from(delivered)]);
        let sender = msg
            .from
            .checked_sub(1)
            .and_then(|i| self.nodes.get(i as usize))
            .and_then(|n| n.node.as_ref());
        if let Some(sender) = sender {
            sender.report_snapshot(msg.to, delivered);
        }
    }

    /// Advances each node's clock by 20 to 79 ms (so nodes tick at different
    /// moments) and runs one turn of each live node, checking after each.
    fn turn_all(&mut self) -> Result<(), SimError> {
        for i in 0..self.nodes.len() {
            let jitter_ms = 20 + self.rng.below(60);
            let n = &mut self.nodes[i];
            n.clock.advance(Duration::from_millis(jitter_ms));
            let id = n.id;
            let Some(node) = n.node.as_mut() else {
                continue;
            };
            match node.turn() {
                Ok(None) => {}
                Ok(Some(reason)) => return Err(self.fail(format!("node {id} stopped: {reason:?}"))),
                Err(e) => return Err(self.fail(format!("node {id} failed: {e}"))),
            }
            self.check(i)?;
        }
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
        let i = self.rng.below(self.options.nodes) as usize;
        let data = format!("seed {} step {}", self.seed, self.step).into_bytes();
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

    /// After the calm phase: one commit index, everything applied, the same
    /// applied sequence on every node (a restarted node restored its newest
    /// snapshot, or the leader's, and applied the rest of the log).
    fn check_converged(&self) -> Result<(), SimError> {
        let mut first: Option<(u64, AppliedLog)> = None;
        for n in &self.nodes {
            let Some(node) = n.node.as_ref() else {
                return Err(self.fail(format!("node {} is down at the end", n.id)));
            };
            let status = node.status();
            if status.applied_index != status.commit_index {
                return Err(self.fail(format!(
                    "node {} applied {} of {} committed after the calm phase",
                    n.id, status.applied_index, status.commit_index
                )));
            }
            let applied = n.applied.0.lock().clone();
            match &first {
                None => first = Some((status.commit_index, applied)),
                Some((commit, log)) if *commit != status.commit_index || *log != applied => {
                    return Err(self.fail(format!(
                        "node {} did not converge: commit {} applied {} entries, node 1: commit {commit}, {} entries",
                        n.id,
                        status.commit_index,
                        applied.len(),
                        log.len()
                    )));
                }
                Some(_) => {}
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
