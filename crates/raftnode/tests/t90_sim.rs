//! Deterministic simulation: three real nodes (raftnode's loop, the WAL on a
//! simulated disk) on one thread, with simulated clocks and an in-memory
//! network, driven turn by turn from a seed. Checked after every turn:
//! at most one leader per term, committed entries never change (across
//! crashes too), applied ≤ committed ≤ last index, terms never go backwards.
//! Same seed, same run: the hash of the whole event trace repeats.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use prost::Message as _;
use raft::eraftpb::Message;
use raftnode::{
    DrivenNode, DrivenParts, ManualClock, NodeConfig, Outbox, PeerError, RestoreError, Role,
    SnapshotJob, StateMachine,
};
use wal::sim::{CrashLoss, SimFs};

const NODES: u64 = 3;
const TICK_MS: u64 = 100;

/// splitmix64: every random choice of a run comes from one of these.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
}

/// The in-test state machine: the applied payloads, in order.
#[derive(Clone, Default)]
struct Applied(Arc<Mutex<AppliedLog>>);

/// Applied entries as (index, payload), in order.
type AppliedLog = Vec<(u64, Vec<u8>)>;

impl StateMachine for Applied {
    fn apply(&mut self, index: u64, data: &[u8]) {
        let mut applied = self.0.lock();
        if let Some((last, _)) = applied.last() {
            assert!(index > *last, "applied {index} after {last}");
        }
        applied.push((index, data.to_vec()));
    }

    fn snapshot(&mut self) -> SnapshotJob {
        // The runs never reach a snapshot but the bootstrap one (empty state).
        Box::new(Vec::new)
    }

    fn restore(&mut self, index: u64, data: &[u8]) -> Result<(), RestoreError> {
        if !data.is_empty() {
            return Err(RestoreError {
                index,
                reason: "the simulation takes no snapshots".into(),
            });
        }
        self.0.lock().clear();
        Ok(())
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

/// One node of the simulated cluster: its disk and clock outlive crashes.
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

/// What a run observed.
#[derive(Debug, Default)]
struct Outcome {
    trace_hash: u64,
    leaders: BTreeMap<u64, u64>,
    committed_max: u64,
    proposals_ok: u64,
    crashes: u64,
    delivered: u64,
    dropped: u64,
}

struct Sim {
    seed: u64,
    rng: Rng,
    nodes: Vec<SimNode>,
    /// Messages in flight: (delivery step, send order) → message.
    network: BTreeMap<(u64, u64), Message>,
    sent: u64,
    trace: std::collections::hash_map::DefaultHasher,
    /// Every committed entry any node reported: index → (term, data).
    committed: HashMap<u64, (u64, Vec<u8>)>,
    outcome: Outcome,
}

fn config(id: u64) -> NodeConfig {
    let members = (1..=NODES)
        .map(|i| (i, format!("http://sim-{i}")))
        .collect();
    let mut config = NodeConfig::new(id, members, PathBuf::from(format!("/sim/node-{id}")));
    config.tick_ms = TICK_MS;
    config.election_ticks_pinned = true;
    config.wal_segment_bytes = 64 * 1024;
    config.snapshot_count = u64::MAX;
    config
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let nodes = (1..=NODES)
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
            rng: Rng(seed),
            nodes,
            network: BTreeMap::new(),
            sent: 0,
            trace: Default::default(),
            committed: HashMap::new(),
            outcome: Outcome::default(),
        };
        for i in 0..sim.nodes.len() {
            sim.start(i);
        }
        sim
    }

    fn start(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.incarnation += 1;
        n.applied = Applied::default();
        let node = DrivenNode::open(DrivenParts {
            config: config(n.id),
            fs: Arc::new(n.fs.clone()),
            state_machine: Box::new(n.applied.clone()),
            clock: Arc::new(n.clock.clone()),
            outbox: Box::new(n.outbox.clone()),
            nonce: (self.seed ^ n.id).wrapping_mul(0x1000_0000_01B3) ^ (n.incarnation << 48),
        })
        .unwrap_or_else(|e| panic!("seed {}: node {} does not start: {e}", self.seed, n.id));
        n.node = Some(node);
        ("start", n.id, n.incarnation).hash(&mut self.trace);
    }

    /// The node stops without any further write, and its disk loses
    /// everything not synced.
    fn crash(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.node = None;
        n.outbox.0.lock().clear();
        n.fs.crash(CrashLoss::LoseAll);
        self.outcome.crashes += 1;
        ("crash", n.id).hash(&mut self.trace);
    }

    /// Moves what the nodes sent into the network, with drops, duplicates
    /// and delays drawn from the seed (none when `calm`).
    fn collect_sent(&mut self, step: u64, calm: bool) {
        for i in 0..self.nodes.len() {
            let msgs: Vec<Message> = std::mem::take(&mut *self.nodes[i].outbox.0.lock());
            for msg in msgs {
                if !calm && self.rng.percent(3) {
                    self.outcome.dropped += 1;
                    continue;
                }
                let copies = if !calm && self.rng.percent(2) { 2 } else { 1 };
                for _ in 0..copies {
                    let delay = if calm { 1 } else { 1 + self.rng.below(3) };
                    self.sent += 1;
                    self.network.insert((step + delay, self.sent), msg.clone());
                }
            }
        }
    }

    /// Delivers the messages due at `step`, one frame per destination.
    fn deliver_due(&mut self, step: u64) {
        let due: Vec<(u64, u64)> = self
            .network
            .range(..=(step, u64::MAX))
            .map(|(k, _)| *k)
            .collect();
        let mut frames: BTreeMap<u64, Vec<Message>> = BTreeMap::new();
        for key in due {
            let msg = self.network.remove(&key).expect("due message");
            frames.entry(msg.to).or_default().push(msg);
        }
        for (to, msgs) in frames {
            let Some(node) = self
                .nodes
                .get_mut(to as usize - 1)
                .and_then(|n| n.node.as_mut())
            else {
                self.outcome.dropped += msgs.len() as u64;
                continue;
            };
            for msg in &msgs {
                (to, msg.encode_to_vec()).hash(&mut self.trace);
            }
            self.outcome.delivered += msgs.len() as u64;
            node.deliver(msgs);
        }
    }

    /// Advances each live node's clock by a jittered amount and runs one turn.
    fn turn_all(&mut self) {
        for i in 0..self.nodes.len() {
            let jitter_ms = 20 + self.rng.below(60);
            let n = &mut self.nodes[i];
            n.clock.advance(Duration::from_millis(jitter_ms));
            let Some(node) = n.node.as_mut() else {
                continue;
            };
            let stopped = node
                .turn()
                .unwrap_or_else(|e| panic!("seed {}: node {} failed: {e}", self.seed, n.id));
            assert_eq!(stopped, None, "seed {}: node {} stopped", self.seed, n.id);
            self.check(i);
        }
    }

    /// The invariants, on node `i` after its turn.
    fn check(&mut self, i: usize) {
        let seed = self.seed;
        let n = &mut self.nodes[i];
        let node = n.node.as_ref().expect("live");
        let status = node.status();
        (
            n.id,
            status.term,
            format!("{:?}", status.role),
            status.commit_index,
            status.applied_index,
            status.last_index,
        )
            .hash(&mut self.trace);
        assert!(
            status.applied_index <= status.commit_index && status.commit_index <= status.last_index,
            "seed {seed}: node {}: applied {} ≤ committed {} ≤ last {} broken",
            n.id,
            status.applied_index,
            status.commit_index,
            status.last_index
        );
        assert!(
            status.term >= n.term_max,
            "seed {seed}: node {} went back from term {} to {}",
            n.id,
            n.term_max,
            status.term
        );
        n.term_max = status.term;
        if status.role == Role::Leader {
            let leader = *self.outcome.leaders.entry(status.term).or_insert(n.id);
            assert_eq!(
                leader, n.id,
                "seed {seed}: two leaders in term {}",
                status.term
            );
        }
        for index in status.snapshot_index + 1..=status.commit_index {
            let entry = node.committed_entry(index).unwrap_or_else(|| {
                panic!("seed {seed}: node {} lost committed entry {index}", n.id)
            });
            let seen = (entry.term, entry.data);
            match self.committed.get(&index) {
                Some(first) => assert_eq!(
                    first, &seen,
                    "seed {seed}: node {} committed entry {index} changed",
                    n.id
                ),
                None => {
                    self.committed.insert(index, seen);
                }
            }
        }
        self.outcome.committed_max = self.outcome.committed_max.max(status.commit_index);
        for (index, data) in n.applied.0.lock().iter() {
            let committed = &self
                .committed
                .get(index)
                .expect("applied entries are committed")
                .1;
            assert_eq!(
                committed, data,
                "seed {seed}: node {} applied {index} differently",
                n.id
            );
        }
    }

    /// Proposes through a random live node (followers forward to the leader).
    fn maybe_propose(&mut self, step: u64) {
        if !self.rng.percent(30) {
            return;
        }
        let i = self.rng.below(NODES) as usize;
        let data = format!("seed {} step {step}", self.seed).into_bytes();
        let Some(node) = self.nodes[i].node.as_mut() else {
            return;
        };
        let result = node.propose(data.clone());
        ("propose", i, data, result.is_ok()).hash(&mut self.trace);
        if result.is_ok() {
            self.outcome.proposals_ok += 1;
        }
    }

    /// One step: deliver what is due, crash `crash` if given (after the
    /// delivery: what it stepped but did not persist is lost with it),
    /// maybe propose, one turn per live node, collect what they sent.
    fn step(&mut self, step: u64, calm: bool, crash: Option<usize>) {
        self.deliver_due(step);
        if let Some(victim) = crash {
            self.crash(victim);
        }
        if !calm {
            self.maybe_propose(step);
        }
        self.turn_all();
        self.collect_sent(step, calm);
    }
}

/// One seeded run: elect, write, crash a node (its unsynced data lost) and
/// restart it, write on, then a calm phase in which everyone converges.
fn run(seed: u64, steps: u64) -> Outcome {
    let mut sim = Sim::new(seed);
    let crash_at = steps / 3 + sim.rng.below(steps / 6);
    let restart_at = crash_at + 10 + sim.rng.below(40);
    let victim = sim.rng.below(NODES) as usize;
    for step in 0..steps {
        if step == restart_at {
            sim.start(victim);
        }
        sim.step(step, false, (step == crash_at).then_some(victim));
    }
    // Calm: no faults, no new proposals, until every node has applied the same.
    for step in steps..steps + 400 {
        sim.step(step, true, None);
    }
    let applied: Vec<AppliedLog> = sim
        .nodes
        .iter()
        .map(|n| n.applied.0.lock().clone())
        .collect();
    let statuses: Vec<_> = sim
        .nodes
        .iter()
        .map(|n| n.node.as_ref().expect("live").status())
        .collect();
    let commit = statuses[0].commit_index;
    for s in &statuses {
        assert_eq!(
            s.commit_index, commit,
            "seed {seed}: converged commit index"
        );
        assert_eq!(
            s.applied_index, commit,
            "seed {seed}: applied everything committed"
        );
    }
    // The restarted node restored the (empty) bootstrap snapshot and applied
    // the whole log again: every node holds the same sequence.
    for (i, other) in applied.iter().enumerate() {
        assert_eq!(
            other,
            &applied[0],
            "seed {seed}: node {} applied differently",
            i + 1
        );
    }
    sim.outcome.trace_hash = sim.trace.finish();
    sim.outcome
}

#[test]
fn a_seeded_cluster_elects_commits_survives_a_crash_and_keeps_every_invariant() {
    for seed in [1, 2, 3, 0xC0FFEE] {
        let outcome = run(seed, 600);
        assert!(
            !outcome.leaders.is_empty(),
            "seed {seed}: a leader was elected"
        );
        assert!(outcome.proposals_ok > 20, "seed {seed}: {outcome:?}");
        assert!(
            outcome.committed_max > 20,
            "seed {seed}: writes committed: {outcome:?}"
        );
        assert_eq!(outcome.crashes, 1);
        assert!(
            outcome.dropped > 0,
            "seed {seed}: the network dropped messages"
        );
    }
}

#[test]
fn the_same_seed_gives_the_same_trace() {
    let first = run(7, 400);
    let second = run(7, 400);
    assert_eq!(
        first.trace_hash, second.trace_hash,
        "{first:?} vs {second:?}"
    );
    assert_eq!(first.committed_max, second.committed_max);
    let other = run(8, 400);
    assert_ne!(
        first.trace_hash, other.trace_hash,
        "different seeds, different runs"
    );
}
