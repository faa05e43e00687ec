//! Test support (feature `testing`): [`LocalConsensus`], a single-process
//! [`Consensus`] that applies each proposal straight to a [`KvStateMachine`],
//! with knobs to make it misbehave the ways raftnode can.
//!
//! It is *not* a Raft implementation: there is one node, every proposal is
//! "committed" at once (unless a knob says otherwise) and read barriers are
//! immediate. The api crate's tests and this crate's tests drive it.

use std::sync::Arc;

use parking_lot::Mutex;
use raftnode::{
    BoxFuture, Consensus, Member, MemberError, MembershipChange, ProposalHook, RaftError,
    RestoreError, Role, StateMachine, Status,
};

use crate::command::{self, RequestId};
use crate::{KvConfig, KvStateMachine, KvStore};

/// The peer URL [`LocalConsensus::new`] gives its own node.
pub const LOCAL_PEER_URL: &str = "http://127.0.0.1:12379";

/// A one-node, in-process [`Consensus`] with failure knobs.
#[derive(Debug)]
pub struct LocalConsensus {
    node_id: u64,
    state: Mutex<LocalState>,
}

#[derive(Debug)]
struct LocalState {
    state_machine: KvStateMachine,
    last_index: u64,
    snapshot_index: u64,
    members: Vec<Member>,
    knobs: Knobs,
    held: Vec<Vec<u8>>,
    proposals_seen: u64,
}

/// What the knobs currently say.
#[derive(Debug, Default, Clone)]
struct Knobs {
    fail_with: Option<RaftError>,
    no_leader: bool,
    drop_proposals: bool,
    hold_proposals: bool,
    stall_reads: bool,
    stall_membership: bool,
    learners_ready: bool,
    term: u64,
    follow: Option<Member>,
}

impl LocalConsensus {
    /// Wraps `state_machine`; the node is the leader of a one-member cluster
    /// whose peer URL is [`LOCAL_PEER_URL`].
    pub fn new(state_machine: KvStateMachine) -> Self {
        let node_id = state_machine.node_id();
        let last_index = state_machine.applied_index();
        let members = vec![Member {
            id: node_id,
            peer_url: LOCAL_PEER_URL.to_string(),
            is_learner: false,
            name: format!("raftkv-{node_id}"),
            client_urls: Vec::new(),
        }];
        let state = LocalState {
            state_machine,
            last_index,
            snapshot_index: 0,
            members,
            knobs: Knobs::default(),
            held: Vec::new(),
            proposals_seen: 0,
        };
        LocalConsensus {
            node_id,
            state: Mutex::new(state),
        }
    }

    /// No leader: every call fails with [`RaftError::NoLeader`] and the
    /// status shows no leader.
    pub fn set_no_leader(&self, no_leader: bool) {
        self.state.lock().knobs.no_leader = no_leader;
    }

    /// Accept proposals (`Ok`) but throw them away, as a leader change
    /// does: the writes time out.
    pub fn set_drop_proposals(&self, drop: bool) {
        self.state.lock().knobs.drop_proposals = drop;
    }

    /// Accept proposals but keep them until [`Self::release_held`] or
    /// [`Self::take_held`].
    pub fn set_hold_proposals(&self, hold: bool) {
        self.state.lock().knobs.hold_proposals = hold;
    }

    /// Every call fails with [`RaftError::Busy`].
    pub fn set_busy(&self, busy: bool) {
        self.fail_with(busy.then_some(RaftError::Busy));
    }

    /// Membership changes fail with [`RaftError::MembershipChangeInProgress`].
    pub fn set_membership_in_progress(&self, in_progress: bool) {
        self.fail_with(in_progress.then_some(RaftError::MembershipChangeInProgress));
    }

    /// Every call fails with `error` (`None` clears it). A
    /// [`RaftError::MembershipChangeInProgress`] only fails membership changes.
    pub fn fail_with(&self, error: Option<RaftError>) {
        self.state.lock().knobs.fail_with = error;
    }

    /// Sets the term `status` reports (default 1): a new term stands for a
    /// new leadership of this node.
    pub fn set_term(&self, term: u64) {
        self.state.lock().knobs.term = term;
    }

    /// Makes this node a follower of `leader` (reported by `status`, with
    /// the leader among the members), or the leader again (`None`).
    /// Proposals and reads still apply locally.
    pub fn set_follower_of(&self, leader: Option<Member>) {
        self.state.lock().knobs.follow = leader;
    }

    /// Read barriers never resolve (the caller's timeout fires).
    pub fn set_stall_reads(&self, stall: bool) {
        self.state.lock().knobs.stall_reads = stall;
    }

    /// This node is a learner of its cluster (or a voter again).
    pub fn set_learner(&self, learner: bool) {
        let mut state = self.state.lock();
        let node_id = self.node_id;
        if let Some(member) = state.members.iter_mut().find(|m| m.id == node_id) {
            member.is_learner = learner;
        }
    }

    /// Learners may be promoted (they are "not ready" until this is set).
    pub fn set_learners_ready(&self, ready: bool) {
        self.state.lock().knobs.learners_ready = ready;
    }

    /// Membership changes never resolve (the caller's timeout fires).
    pub fn set_stall_membership(&self, stall: bool) {
        self.state.lock().knobs.stall_membership = stall;
    }

    /// Removes and returns the held proposals without applying them.
    pub fn take_held(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.state.lock().held)
    }

    /// Applies the held proposals in order; returns how many.
    pub fn release_held(&self) -> usize {
        let mut state = self.state.lock();
        let held = std::mem::take(&mut state.held);
        for payload in &held {
            state.apply_next(payload);
        }
        held.len()
    }

    /// Applies `payload` at the next index, as if another node's proposal
    /// had been committed; returns that index.
    pub fn apply_payload(&self, payload: &[u8]) -> u64 {
        self.state.lock().apply_next(payload)
    }

    /// Proposals received so far (applied, held or dropped).
    pub fn proposals_seen(&self) -> u64 {
        self.state.lock().proposals_seen
    }

    /// Snapshots the state machine (and records the snapshot index).
    pub fn snapshot(&self) -> Vec<u8> {
        let mut state = self.state.lock();
        state.snapshot_index = state.last_index;
        state.state_machine.snapshot()
    }

    /// Restores the state machine from `data`, taken at `index`.
    pub fn restore(&self, index: u64, data: &[u8]) -> Result<(), RestoreError> {
        let mut state = self.state.lock();
        state.state_machine.restore(index, data)?;
        state.last_index = state.last_index.max(index);
        state.snapshot_index = index;
        Ok(())
    }

    fn check(&self, knobs: &Knobs, membership: bool) -> Result<(), RaftError> {
        if knobs.no_leader {
            return Err(RaftError::NoLeader);
        }
        match &knobs.fail_with {
            Some(RaftError::MembershipChangeInProgress) if !membership => Ok(()),
            Some(error) => Err(error.clone()),
            None => Ok(()),
        }
    }

    fn propose_now(&self, data: Vec<u8>) -> Result<(), RaftError> {
        let mut state = self.state.lock();
        self.check(&state.knobs, false)?;
        state.proposals_seen += 1;
        if state.knobs.drop_proposals {
            return Ok(());
        }
        if state.knobs.hold_proposals {
            state.held.push(data);
            return Ok(());
        }
        state.apply_next(&data);
        Ok(())
    }

    fn change_membership_now(&self, change: MembershipChange) -> Result<(), RaftError> {
        let mut state = self.state.lock();
        self.check(&state.knobs, true)?;
        let learners_ready = state.knobs.learners_ready;
        match change {
            MembershipChange::AddNode { id, peer_url } => state.add_member(id, peer_url, false),
            MembershipChange::AddLearner { id, peer_url } => state.add_member(id, peer_url, true),
            MembershipChange::RemoveNode { id } => state.remove_member(id),
            MembershipChange::PromoteLearner { id } => {
                let member = state.member_mut(id)?;
                if !member.is_learner {
                    return Err(MemberError::NotLearner.into());
                }
                if !learners_ready {
                    return Err(MemberError::LearnerNotReady.into());
                }
                member.is_learner = false;
                state.last_index += 1;
                Ok(())
            }
            MembershipChange::UpdatePeerUrl { id, peer_url } => {
                if state
                    .members
                    .iter()
                    .any(|m| m.id != id && m.peer_url == peer_url)
                {
                    return Err(MemberError::PeerUrlExists.into());
                }
                state.member_mut(id)?.peer_url = peer_url;
                state.last_index += 1;
                Ok(())
            }
        }
    }
}

impl LocalState {
    fn apply_next(&mut self, payload: &[u8]) -> u64 {
        self.last_index += 1;
        self.state_machine.apply(self.last_index, payload);
        self.last_index
    }

    fn member_mut(&mut self, id: u64) -> Result<&mut Member, RaftError> {
        self.members
            .iter_mut()
            .find(|m| m.id == id)
            .ok_or(RaftError::Member(MemberError::NotFound))
    }

    fn add_member(&mut self, id: u64, peer_url: String, is_learner: bool) -> Result<(), RaftError> {
        if id == 0 {
            return Err(RaftError::InvalidMembership(
                "node id 0 is reserved".to_string(),
            ));
        }
        if self.members.iter().any(|member| member.id == id) {
            return Err(MemberError::IdExists.into());
        }
        if self
            .members
            .iter()
            .any(|member| member.peer_url == peer_url)
        {
            return Err(MemberError::PeerUrlExists.into());
        }
        if is_learner && self.members.iter().any(|m| m.is_learner) {
            return Err(MemberError::TooManyLearners.into());
        }
        self.members.push(Member {
            id,
            peer_url,
            is_learner,
            name: String::new(),
            client_urls: Vec::new(),
        });
        self.members.sort_by_key(|member| member.id);
        self.last_index += 1;
        Ok(())
    }

    fn remove_member(&mut self, id: u64) -> Result<(), RaftError> {
        let voters = self.members.iter().filter(|m| !m.is_learner).count();
        let member = self.member_mut(id)?;
        if !member.is_learner && voters == 1 {
            return Err(MemberError::LastVoter.into());
        }
        self.members.retain(|member| member.id != id);
        self.last_index += 1;
        Ok(())
    }
}

impl Consensus for LocalConsensus {
    fn propose(&self, data: Vec<u8>) -> BoxFuture<'_, Result<(), RaftError>> {
        Box::pin(std::future::ready(self.propose_now(data)))
    }

    fn propose_then(&self, data: Vec<u8>, then: ProposalHook) -> Result<(), RaftError> {
        self.propose_now(data)?;
        then(Ok(()));
        Ok(())
    }

    fn read_barrier(&self) -> BoxFuture<'_, Result<(), RaftError>> {
        let state = self.state.lock();
        if let Err(error) = self.check(&state.knobs, false) {
            return Box::pin(std::future::ready(Err(error)));
        }
        if state.knobs.stall_reads {
            return Box::pin(std::future::pending());
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn change_membership(&self, change: MembershipChange) -> BoxFuture<'_, Result<(), RaftError>> {
        if self.state.lock().knobs.stall_membership {
            return Box::pin(std::future::pending());
        }
        Box::pin(std::future::ready(self.change_membership_now(change)))
    }

    fn status(&self) -> Status {
        let state = self.state.lock();
        let mut members = state.members.clone();
        let mut leader_id = (!state.knobs.no_leader).then_some(self.node_id);
        if let Some(leader) = &state.knobs.follow {
            leader_id = Some(leader.id);
            members.push(leader.clone());
        }
        Status {
            id: self.node_id,
            leader_id,
            role: if leader_id == Some(self.node_id) {
                Role::Leader
            } else {
                Role::Follower
            },
            term: state.knobs.term.max(1),
            commit_index: state.last_index,
            applied_index: state.state_machine.applied_index(),
            snapshot_index: state.snapshot_index,
            last_index: state.last_index,
            members,
            progress: Vec::new(),
            events: Vec::new(),
        }
    }
}

/// A store for node `config.node_id` on its own [`LocalConsensus`].
pub fn local_store(config: KvConfig) -> (KvStore, Arc<LocalConsensus>) {
    let (unattached, state_machine) = crate::new(config);
    let consensus = Arc::new(LocalConsensus::new(state_machine));
    let store = unattached.attach(Arc::clone(&consensus) as Arc<dyn Consensus>);
    (store, consensus)
}

/// The request id carried by a command payload, if it is a command.
pub fn request_id_of(payload: &[u8]) -> Option<RequestId> {
    let command = command::decode(payload).ok()?;
    command.request_id.as_ref().map(RequestId::from)
}

/// Encodes a put command as node `id.node_id` would propose it: lets tests
/// feed a state machine entries that other nodes or incarnations proposed.
pub fn encode_put(id: RequestId, key: &bytes::Bytes, value: &bytes::Bytes) -> Vec<u8> {
    command::encode_put(id, key, value)
}

/// An etcd request as the log carries it (for feeding state machines).
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// etcd `Put`.
    Put(etcdproto::etcdserverpb::PutRequest),
    /// etcd `DeleteRange`.
    DeleteRange(etcdproto::etcdserverpb::DeleteRangeRequest),
    /// etcd `Txn`.
    Txn(etcdproto::etcdserverpb::TxnRequest),
    /// etcd `Compact`.
    Compaction(etcdproto::etcdserverpb::CompactionRequest),
    /// etcd `Maintenance.Alarm`.
    Alarm(etcdproto::etcdserverpb::AlarmRequest),
    /// etcd `LeaseGrant` (id chosen).
    LeaseGrant(etcdproto::etcdserverpb::LeaseGrantRequest),
    /// etcd `LeaseRevoke`.
    LeaseRevoke(etcdproto::etcdserverpb::LeaseRevokeRequest),
}

/// Encodes `request` as the command node `id.node_id` would propose.
pub fn encode_request(id: RequestId, request: Request) -> Vec<u8> {
    let op = match request {
        Request::Put(request) => command::Op::Put(request),
        Request::DeleteRange(request) => command::Op::DeleteRange(request),
        Request::Txn(request) => command::Op::Txn(request),
        Request::Compaction(request) => command::Op::Compaction(request),
        Request::Alarm(request) => command::Op::Alarm(request),
        Request::LeaseGrant(request) => command::Op::LeaseGrant(request),
        Request::LeaseRevoke(request) => command::Op::LeaseRevoke(request),
    };
    command::encode(id, op)
}

/// The snapshot bytes a state machine holding `keyspace` and an empty dedup
/// window writes.
pub fn snapshot_of(keyspace: &crate::Keyspace) -> Vec<u8> {
    crate::snapshot::encode(keyspace, &crate::DedupWindow::new())
}
