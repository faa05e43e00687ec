//! The two traits between raftnode and the layer above it.
//!
//! * [`StateMachine`] is implemented by the service layer (kvstore) and driven
//!   by raftnode: committed entries go *up* through it.
//! * [`Consensus`] is implemented by raftnode and used by the service layer and
//!   the API: proposals, read barriers and membership requests go *down*
//!   through it.
//!
//! Neither trait exposes a type of the `raft` crate.

use std::future::Future;
use std::pin::Pin;

/// A boxed, sendable future (keeps [`Consensus`] object safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Told, on the Raft loop, whether Raft took a proposal handed over with
/// [`Consensus::propose_then`]: `Ok` once it is in Raft's log (not yet
/// committed), or why Raft refused it (then it is not in the log).
pub type ProposalHook = Box<dyn FnOnce(Result<(), RaftError>) + Send + 'static>;

/// Produces the bytes of a snapshot from a point-in-time view captured by
/// [`StateMachine::snapshot`]. raftnode runs it on a background thread while
/// entries keep being applied.
pub type SnapshotJob = Box<dyn FnOnce() -> Vec<u8> + Send + 'static>;

/// The replicated state machine that raftnode applies committed entries to.
///
/// # Correctness
/// * `apply` is called exactly once per committed normal entry with a
///   non-empty payload, in strictly increasing `index` order, only after the
///   entry is committed by a quorum *and* persisted locally. It must be
///   deterministic: the same sequence of calls on every node must yield the
///   same state and byte-identical [`StateMachine::snapshot`] output.
/// * `apply` must not fail on a malformed payload: log it and skip it (every
///   node skips it the same way). It must not block for long: it runs on the
///   Raft loop.
/// * `snapshot` captures the whole state as of the last applied index and
///   returns a job that serialises it. The capture runs on the Raft loop and
///   must be cheap (e.g. clone a persistent map); the job runs elsewhere,
///   concurrently with later `apply` calls, and must not see them.
/// * `restore` replaces the whole state with a snapshot taken at `index`
///   (on this node or another); after it, the next `apply` has an index
///   greater than `index`.
pub trait StateMachine: Send + 'static {
    /// Applies the payload of the committed entry at `index`.
    fn apply(&mut self, index: u64, data: &[u8]);
    /// Captures the state as of the last applied entry; the returned job
    /// serialises that capture.
    fn snapshot(&mut self) -> SnapshotJob;
    /// Replaces the state with `data`, a snapshot taken at log index `index`.
    fn restore(&mut self, index: u64, data: &[u8]) -> Result<(), RestoreError>;
}

/// A snapshot that the state machine cannot decode.
#[derive(Debug, thiserror::Error)]
#[error("cannot restore snapshot at index {index}: {reason}")]
pub struct RestoreError {
    /// Log index the snapshot was taken at.
    pub index: u64,
    /// Why it could not be decoded.
    pub reason: String,
}

/// A membership change request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipChange {
    /// Add node `id`, reachable for Raft traffic at `peer_url`.
    AddNode {
        /// The new node's id (non-zero, not already a member).
        id: u64,
        /// Its peer URL, e.g. `http://127.0.0.1:42379`.
        peer_url: String,
    },
    /// Remove node `id` (a voter or a learner) from the cluster.
    RemoveNode {
        /// The member to remove.
        id: u64,
    },
    /// Add node `id` as a learner: it receives the log but does not vote
    /// and does not count for quorum.
    AddLearner {
        /// The new node's id (non-zero, not already a member).
        id: u64,
        /// Its peer URL.
        peer_url: String,
    },
    /// Make learner `id` a voter. Refused with
    /// [`MemberError::LearnerNotReady`] unless the leader sees the
    /// learner's log within 90 % of its own.
    PromoteLearner {
        /// The learner to promote.
        id: u64,
    },
    /// Change the peer URL of member `id` (voter or learner).
    UpdatePeerUrl {
        /// The member to update.
        id: u64,
        /// Its new peer URL.
        peer_url: String,
    },
}

/// A membership change that the cluster's configuration rules out. The
/// messages are etcd 3.4's, so the API layer can answer with them as they
/// are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemberError {
    /// No voter or learner has this id.
    #[error("etcdserver: member not found")]
    NotFound,
    /// The id is already a voter or a learner.
    #[error("etcdserver: member ID already exist")]
    IdExists,
    /// Another member already uses this peer URL.
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExists,
    /// Promotion of a member that is not a learner.
    #[error("etcdserver: member not a learner")]
    NotLearner,
    /// The cluster has [`MAX_LEARNERS`] learners already.
    #[error("etcdserver: too many learner members in cluster")]
    TooManyLearners,
    /// The learner's log is not close enough to the leader's.
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    /// Removing the only voter would leave no one to elect a leader.
    #[error("etcdserver: cannot remove the last voting member")]
    LastVoter,
}

/// Most learners a cluster may have at once (etcd 3.4's fixed limit).
pub const MAX_LEARNERS: usize = 1;

/// A learner may be promoted once the leader has seen at least this share
/// (in percent) of its own log on the learner (etcd's `readyPercent`).
pub const LEARNER_READY_PERCENT: u64 = 90;

/// Errors of the consensus layer, as the layers above see them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RaftError {
    /// No leader is known right now (election in progress or partitioned).
    #[error("no leader: the cluster is electing one or this node is partitioned; retry")]
    NoLeader,
    /// Raft refused the proposal (no leader, leader transferring, ...).
    /// Nothing was written.
    #[error("proposal dropped by raft: {0}")]
    ProposalDropped(String),
    /// A queue towards the Raft loop is full. Nothing was written.
    #[error("node busy: too many requests in flight; retry")]
    Busy,
    /// The request was handed to Raft but did not finish in time: it may or
    /// may not take effect.
    #[error("timed out after {timeout_ms} ms; the outcome is unknown")]
    Timeout {
        /// How long the caller waited.
        timeout_ms: u64,
    },
    /// Another membership change is still in flight (Raft allows one).
    #[error("another membership change is in progress; retry when it is applied")]
    MembershipChangeInProgress,
    /// The membership change makes no sense (unknown node, duplicate id,
    /// bad URL, ...).
    #[error("invalid membership change: {0}")]
    InvalidMembership(String),
    /// The membership change conflicts with the configuration (etcd's
    /// errors).
    #[error(transparent)]
    Member(#[from] MemberError),
    /// The node is shutting down or was removed from the cluster.
    #[error("node stopped")]
    Stopped,
}

/// The role of this node in its current term.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Replicates the leader's log.
    Follower,
    /// Asking for votes before an election.
    PreCandidate,
    /// Asking for votes.
    Candidate,
    /// Accepts proposals and replicates them.
    Leader,
}

/// A member of the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Member {
    /// Node id.
    pub id: u64,
    /// Peer URL (Raft traffic).
    pub peer_url: String,
    /// A learner: replicates the log, does not vote.
    pub is_learner: bool,
    /// The name the member published when it started (empty until then).
    pub name: String,
    /// The client URLs the member published when it started (empty until
    /// then).
    pub client_urls: Vec<String>,
}

/// A point-in-time view of the node, for `/v1/status` and tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// This node's id.
    pub id: u64,
    /// The leader this node knows of, if any.
    pub leader_id: Option<u64>,
    /// This node's role.
    pub role: Role,
    /// Current term.
    pub term: u64,
    /// Highest log index known committed.
    pub commit_index: u64,
    /// Highest log index applied to the state machine.
    pub applied_index: u64,
    /// Index of the newest snapshot on disk (0 if none).
    pub snapshot_index: u64,
    /// Highest index in the local log.
    pub last_index: u64,
    /// Members (voters and learners) with their URLs, by id.
    pub members: Vec<Member>,
    /// On the leader, each member's replication progress, by id (empty on
    /// other roles).
    pub progress: Vec<crate::timeline::Progress>,
    /// Recent events seen by this node, oldest first (at most
    /// [`crate::timeline::MAX_EVENTS`]).
    pub events: Vec<crate::timeline::Event>,
}

/// What the layers above raftnode ask of it.
///
/// # Correctness
/// * `propose` returning `Ok` means the payload was handed to Raft, *not*
///   that it is committed. The caller learns of the commit through
///   [`StateMachine::apply`]; if the entry is lost in a leader change the
///   caller never sees it applied, so it must wait with a timeout.
/// * `read_barrier` resolves `Ok` only once the local state machine has
///   applied every entry that was committed when the call began (ReadIndex).
///   A read of the state machine after it is linearizable.
/// * `change_membership` resolves `Ok` only after the change is applied on
///   this node. Only one change may be in flight: a second one gets
///   [`RaftError::MembershipChangeInProgress`], also when it was proposed
///   on a follower and the leader dropped it because it had a change
///   pending (nothing changed then).
pub trait Consensus: Send + Sync + 'static {
    /// Hands `data` to Raft for replication (see the trait docs).
    fn propose(&self, data: Vec<u8>) -> BoxFuture<'_, Result<(), RaftError>>;
    /// Hands `data` to Raft like [`propose`](Self::propose), but nobody waits
    /// for Raft's answer: `then` gets it, called at most once, on the Raft
    /// loop, in the turn that hands the proposal to Raft (or when the loop
    /// stops with it still queued: [`RaftError::Stopped`]). A caller that
    /// learns of its entry through [`StateMachine::apply`] anyway saves one
    /// hand-off from the loop back to it per proposal that Raft accepts.
    ///
    /// Returns `Err` at once, without calling `then`, when the request cannot
    /// be queued ([`RaftError::Busy`], [`RaftError::Stopped`]).
    fn propose_then(&self, data: Vec<u8>, then: ProposalHook) -> Result<(), RaftError>;
    /// Waits until a linearizable read of the local state machine is safe.
    fn read_barrier(&self) -> BoxFuture<'_, Result<(), RaftError>>;
    /// Adds, removes, promotes or updates a member; resolves once the
    /// change is applied here.
    fn change_membership(&self, change: MembershipChange) -> BoxFuture<'_, Result<(), RaftError>>;
    /// This node's current status.
    fn status(&self) -> Status;
}
