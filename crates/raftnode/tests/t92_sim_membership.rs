//! Regressions the simulation found in membership changes, replayed
//! directly with three `DrivenNode`s on simulated disks and a lossless
//! in-memory network (every message delivered at the next step):
//! * a leader that applies its own removal stops cleanly (it used to
//!   advance its Ready and panic inside raft-rs);
//! * a node re-added under its old id with a fresh disk does not replay the
//!   removal of its id's earlier incarnation and stop itself;
//! * a learner does not vote or campaign: with one of two voters gone no
//!   one is elected, however long it lasts, and once the voter is back the
//!   leader is a voter and the learner follows.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use raft::eraftpb::Message;
use raftnode::{
    DrivenNode, DrivenParts, ManualClock, MembershipChange, NodeConfig, Outbox, PeerError,
    PendingChange, RaftError, RestoreError, Role, SnapshotJob, StateMachine, StopReason,
};
use wal::sim::SimFs;

#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<Message>>>);

impl Outbox for Collect {
    fn send(&self, msgs: Vec<Message>) {
        self.0.lock().extend(msgs);
    }
    fn add_peer(&self, _id: u64, _url: &str) -> Result<(), PeerError> {
        Ok(())
    }
    fn remove_peer_at(&self, _id: u64, _index: u64) {}
}

/// A state machine that keeps nothing (the membership is what matters).
struct Nothing;

impl StateMachine for Nothing {
    fn apply(&mut self, _index: u64, _data: &[u8]) {}
    fn snapshot(&mut self) -> SnapshotJob {
        Box::new(Vec::new)
    }
    fn restore(&mut self, _index: u64, _data: &[u8]) -> Result<(), RestoreError> {
        Ok(())
    }
}

struct Node {
    clock: ManualClock,
    outbox: Collect,
    node: Option<DrivenNode>,
}

struct Cluster {
    nodes: BTreeMap<u64, Node>,
}

fn start(id: u64, members: &[u64], join: bool, fs: SimFs, snapshot_count: u64) -> Node {
    let members = members
        .iter()
        .map(|&i| (i, format!("http://sim-{i}")))
        .collect();
    let mut config = NodeConfig::new(id, members, PathBuf::from(format!("/n{id}")));
    config.join = join;
    config.election_ticks_pinned = true;
    config.snapshot_count = snapshot_count;
    config.catch_up_entries = 20;
    config.snapshot_log_percent = 0;
    let clock = ManualClock::new();
    let outbox = Collect::default();
    let node = DrivenNode::open(DrivenParts {
        config,
        fs: Arc::new(fs),
        state_machine: Box::new(Nothing),
        clock: Arc::new(clock.clone()),
        outbox: Box::new(outbox.clone()),
        nonce: id << 32,
    })
    .expect("the node opens");
    Node {
        clock,
        outbox,
        node: Some(node),
    }
}

impl Cluster {
    fn new(snapshot_count: u64) -> Cluster {
        let nodes = (1..=3)
            .map(|id| {
                (
                    id,
                    start(id, &[1, 2, 3], false, SimFs::new(id), snapshot_count),
                )
            })
            .collect();
        Cluster { nodes }
    }

    /// One step: deliver what was sent, tick every clock (node `id` a bit
    /// more, so elections do not split), one turn each. Returns the nodes
    /// that stopped, and why.
    fn step(&mut self) -> Vec<(u64, StopReason)> {
        let mut sent = Vec::new();
        for n in self.nodes.values() {
            sent.extend(std::mem::take(&mut *n.outbox.0.lock()));
        }
        let mut frames: BTreeMap<u64, Vec<Message>> = BTreeMap::new();
        for msg in sent {
            frames.entry(msg.to).or_default().push(msg);
        }
        for (to, msgs) in frames {
            if let Some(node) = self.nodes.get_mut(&to).and_then(|n| n.node.as_mut()) {
                node.deliver(msgs);
            }
        }
        let mut stopped = Vec::new();
        for (&id, n) in &mut self.nodes {
            n.clock.advance(Duration::from_millis(40 + 7 * id));
            let Some(node) = n.node.as_mut() else {
                continue;
            };
            match node.turn().expect("no node fails") {
                None => {}
                Some(reason) => {
                    stopped.push((id, reason));
                    n.node = None;
                }
            }
        }
        stopped
    }

    fn leader(&self) -> Option<u64> {
        self.nodes
            .iter()
            .filter_map(|(&id, n)| Some((n.node.as_ref()?.status(), id)))
            .filter(|(status, _)| status.role == Role::Leader)
            .max_by_key(|(status, _)| status.term)
            .map(|(_, id)| id)
    }

    fn run_until(&mut self, what: &str, mut done: impl FnMut(&mut Cluster) -> bool) {
        for _ in 0..2000 {
            let stopped = self.step();
            assert!(stopped.is_empty(), "{what}: nodes stopped: {stopped:?}");
            if done(self) {
                return;
            }
        }
        panic!("{what}: not within 2000 steps");
    }

    /// Proposes `change` through the leader and runs until it is applied
    /// there, proposing an entry through the leader at every step (so the
    /// Ready that applies the change also appends). Stops of nodes are
    /// returned instead of failing.
    fn change(&mut self, change: MembershipChange) -> Vec<(u64, StopReason)> {
        let mut stopped = Vec::new();
        for _ in 0..20 {
            self.run_until("a leader", |c| c.leader().is_some());
            let leader = self.leader().expect("a leader");
            let mut pending: PendingChange = self
                .nodes
                .get_mut(&leader)
                .unwrap()
                .node
                .as_mut()
                .unwrap()
                .change_membership(change.clone());
            for k in 0..500 {
                if let Some(node) = self.nodes.get_mut(&leader).and_then(|n| n.node.as_mut()) {
                    let _ = node.propose(format!("during the change {k}").into_bytes());
                }
                stopped.extend(self.step());
                match pending.poll() {
                    None => continue,
                    Some(Ok(())) => return stopped,
                    Some(Err(RaftError::Stopped)) if !stopped.is_empty() => return stopped,
                    Some(Err(_)) => break,
                }
            }
        }
        panic!("{change:?} never applied");
    }

    fn propose_some(&mut self, count: usize) {
        for k in 0..count {
            self.run_until("a leader", |c| c.leader().is_some());
            let leader = self.leader().expect("a leader");
            let node = self.nodes.get_mut(&leader).unwrap().node.as_mut().unwrap();
            let _ = node.propose(format!("entry {k}").into_bytes());
            for _ in 0..3 {
                assert!(self.step().is_empty());
            }
        }
    }
}

#[test]
fn a_leader_that_applies_its_own_removal_stops_and_the_others_go_on() {
    let mut cluster = Cluster::new(3);
    cluster.propose_some(5);
    let leader = cluster.leader().expect("a leader");
    let stopped = cluster.change(MembershipChange::RemoveNode { id: leader });
    assert_eq!(stopped, vec![(leader, StopReason::Removed)]);
    cluster.nodes.remove(&leader);
    cluster.run_until("a new leader among the others", |c| {
        c.leader().is_some_and(|l| l != leader)
    });
    cluster.propose_some(3);
}

#[test]
fn a_node_re_added_with_a_fresh_disk_does_not_replay_its_old_removal() {
    // No snapshot but the bootstrap one: the re-added node gets the whole
    // log, its id's removal included.
    let mut cluster = Cluster::new(100_000);
    cluster.propose_some(5);
    let leader = cluster.leader().expect("a leader");
    let victim = (1..=3).find(|&id| id != leader).expect("a follower");
    let stopped = cluster.change(MembershipChange::RemoveNode { id: victim });
    assert!(
        stopped.iter().all(|&(id, _)| id == victim),
        "only the removed node stops: {stopped:?}"
    );
    cluster.nodes.remove(&victim);
    cluster.propose_some(2);
    let stopped = cluster.change(MembershipChange::AddNode {
        id: victim,
        peer_url: format!("http://sim-{victim}"),
    });
    assert!(stopped.is_empty(), "{stopped:?}");
    let members: Vec<u64> = (1..=3).collect();
    cluster.nodes.insert(
        victim,
        start(victim, &members, true, SimFs::new(100 + victim), 100_000),
    );
    cluster.propose_some(10);
    cluster.run_until("the re-added node caught up", |c| {
        let status = c.nodes[&victim]
            .node
            .as_ref()
            .expect("still running")
            .status();
        let leader_commit = c
            .leader()
            .and_then(|l| c.nodes[&l].node.as_ref())
            .map(|n| n.status().commit_index);
        status.members.len() == 3 && Some(status.applied_index) == leader_commit
    });
}

#[test]
fn a_learner_never_votes_or_campaigns_and_a_voter_is_elected_among_voters() {
    let mut cluster = Cluster::new(100_000);
    cluster.propose_some(3);
    let leader = cluster.leader().expect("a leader");
    let victim = (1..=3).find(|&id| id != leader).expect("a follower");
    let stopped = cluster.change(MembershipChange::RemoveNode { id: victim });
    assert!(stopped.iter().all(|&(id, _)| id == victim), "{stopped:?}");
    cluster.nodes.remove(&victim);
    let learner = 4;
    let stopped = cluster.change(MembershipChange::AddLearner {
        id: learner,
        peer_url: format!("http://sim-{learner}"),
    });
    assert!(stopped.is_empty(), "{stopped:?}");
    cluster.nodes.insert(
        learner,
        start(
            learner,
            &[1, 2, 3],
            true,
            SimFs::new(100 + learner),
            100_000,
        ),
    );
    cluster.propose_some(5);
    cluster.run_until("the learner caught up", |c| {
        let status = c.nodes[&learner].node.as_ref().expect("running").status();
        let leader_commit = c
            .leader()
            .and_then(|l| c.nodes[&l].node.as_ref())
            .map(|n| n.status().commit_index);
        status
            .members
            .iter()
            .any(|m| m.id == learner && m.is_learner)
            && Some(status.applied_index) == leader_commit
    });

    // The leader goes away (paused: out of the network, its state kept).
    let leader = cluster.leader().expect("a leader");
    let voter = (1..=3)
        .find(|&id| id != leader && id != victim)
        .expect("the other voter");
    let paused = cluster.nodes.remove(&leader).expect("the leader");
    let learner_term = cluster.nodes[&learner]
        .node
        .as_ref()
        .expect("running")
        .status()
        .term;
    // 1500 steps are dozens of election timeouts: the remaining voter
    // cannot win (it needs both voters), the learner never campaigns nor
    // grants a vote (its term never moves).
    for _ in 0..1500 {
        assert!(cluster.step().is_empty());
        assert_eq!(cluster.leader(), None, "elected without a quorum of voters");
        let status = cluster.nodes[&learner].node.as_ref().unwrap().status();
        assert_eq!(status.role, Role::Follower, "the learner campaigned");
        assert_eq!(status.term, learner_term, "the learner took part in a vote");
    }
    // Back: a voter leads, and the learner follows the new leader's log.
    cluster.nodes.insert(leader, paused);
    cluster.run_until("a leader among the voters", |c| c.leader().is_some());
    let new_leader = cluster.leader().expect("a leader");
    assert!([leader, voter].contains(&new_leader), "{new_leader} leads");
    cluster.propose_some(3);
    cluster.run_until("the learner follows", |c| {
        let status = c.nodes[&learner].node.as_ref().unwrap().status();
        status.leader_id == Some(new_leader)
            && Some(status.applied_index)
                == c.nodes[&new_leader]
                    .node
                    .as_ref()
                    .map(|n| n.status().commit_index)
    });
}
