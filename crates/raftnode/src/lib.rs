//! raftnode: the Raft driver of raftkv (raftexample's `raftNode`).
//!
//! # What it owns
//! * The only `raft::RawNode` of the process, driven by one OS thread (the
//!   *Raft loop*): ticks, stepping peer messages, proposals, ReadIndex
//!   batches, membership changes, and the Ready cycle in raft-rs's order.
//!   The loop is a turn function; [`RaftNode`] runs it on its thread, and
//!   [`DrivenNode`] lets a caller run it one turn at a time (a simulation
//!   runs many nodes on one thread that way).
//! * The node's durable state through the `wal` crate: every Ready's entries
//!   and hard state are written and fdatasynced *before* the messages that
//!   depend on them are sent; snapshots are written before their WAL marker.
//! * Snapshot triggering (every `snapshot_count` applied entries) and log
//!   compaction (keeping `catch_up_entries` for slow followers).
//! * The node's `transport::Transport`: peers are added and removed as
//!   membership changes are applied.
//!
//! # Seams
//! The loop reaches the world only through these, so the same code runs in
//! production and in a deterministic simulation (`kvsim`, over [`sim`]):
//! * time: [`Clock`] ([`SystemClock`]; [`ManualClock`] in simulations);
//! * sending: [`Outbox`] (the HTTP `transport::Transport`; a collector in
//!   simulations);
//! * the log: one write-through durable log store, the `RawNode`'s storage,
//!   over the WAL and snapshot files (no separate in-memory log to keep in
//!   step);
//! * files: `wal::FileSystem` ([`wal::StdFs`]; `wal::sim::SimFs` in
//!   simulations), given to [`DrivenNode`] through [`DrivenParts`];
//! * requests: [`DrivenNode::consensus`] gives the layer above a
//!   [`Consensus`] ([`DrivenHandle`]) whose requests the next turn handles.
//! * metrics: an optional [`NodeObserver`] ([`NodeConfig::observer`], none by
//!   default) told of leader changes, refused proposals, WAL fsync and
//!   snapshot save durations; raftnode knows no metrics library.
//!
//! raft-rs draws its randomized election timeout from a thread RNG;
//! [`NodeConfig::election_ticks_pinned`] pins it so runs repeat.
//! [`sim`] is that simulation: a seeded cluster of [`DrivenNode`]s under
//! network, disk and membership faults, with Raft's invariants checked
//! after every turn; a [`sim::Workload`] puts the layer above (a state
//! machine and its clients) on the nodes (`kvsim` does, with kvstore;
//! `cargo xtask sim` runs that for many seeds). With the `planted-bugs`
//! feature, [`PlantedBug`]s can be switched on for it.
//!
//! # What it does not own
//! The state machine (the layer above implements [`StateMachine`]), the
//! client API, and the bytes on disk (the `wal` crate).
//!
//! # Invariants
//! * Entries are applied only once committed *and* persisted locally
//!   (raft-rs 0.7 only hands those out), in order, exactly once per start.
//! * Votes and append responses leave only after the fdatasync of the state
//!   they acknowledge.
//! * A peer message is checked (recipient, sender membership, contiguous
//!   entries, indices and commit within bounds, a snapshot's envelope and
//!   configuration) before `RawNode::step`: nothing a peer sends panics the
//!   node.
//! * A leader's snapshot is persisted only after the state machine restored
//!   it: a snapshot that cannot be restored never bricks the data directory.
//! * At most one membership change is in flight; it is answered when applied.
//! * A fatal storage error stops the loop: the node never runs on after a
//!   failed fsync.
//!
//! # Example
//! A single-node cluster with a counter as its state machine:
//! ```
//! use raftnode::{Consensus, NodeConfig, RaftNode, RestoreError, SnapshotJob, StateMachine};
//! use std::sync::{Arc, atomic::{AtomicU64, Ordering}};
//!
//! struct Counter(Arc<AtomicU64>);
//! impl StateMachine for Counter {
//!     fn apply(&mut self, _index: u64, data: &[u8]) {
//!         self.0.fetch_add(data.len() as u64, Ordering::SeqCst);
//!     }
//!     fn snapshot(&mut self) -> SnapshotJob {
//!         let value = self.0.load(Ordering::SeqCst);
//!         Box::new(move || value.to_be_bytes().to_vec())
//!     }
//!     fn restore(&mut self, index: u64, data: &[u8]) -> Result<(), RestoreError> {
//!         let bytes: [u8; 8] = data.try_into().map_err(|_| RestoreError {
//!             index,
//!             reason: "expected 8 bytes".into(),
//!         })?;
//!         self.0.store(u64::from_be_bytes(bytes), Ordering::SeqCst);
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() {
//! let dir = tempfile::tempdir().unwrap();
//! let total = Arc::new(AtomicU64::new(0));
//! let members = vec![(1, "http://127.0.0.1:1".to_string())];
//! let mut config = NodeConfig::new(1, members, dir.path().to_path_buf());
//! config.tick_ms = 10;
//! let node = RaftNode::start(config, Box::new(Counter(total.clone()))).unwrap();
//! let consensus = node.consensus();
//! // Wait for the single node to elect itself, then propose.
//! while consensus.status().leader_id.is_none() {
//!     tokio::time::sleep(std::time::Duration::from_millis(10)).await;
//! }
//! consensus.propose(b"abc".to_vec()).await.unwrap();
//! consensus.read_barrier().await.unwrap();
//! assert_eq!(total.load(Ordering::SeqCst), 3);
//! node.shutdown().await.unwrap();
//! # }
//! ```

mod checks;
mod clock;
mod codec;
mod config;
mod disk;
mod driven;
mod durable;
#[cfg(test)]
mod fuzz_tests;
mod interface;
mod logger;
mod membership;
mod observer;
mod outbox;
mod raft_loop;
mod reads;
mod reports;
pub mod sim;
mod snapshots;
mod storage;
mod timeline;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, Sender, TrySendError};
use parking_lot::{Mutex, RwLock};
use raft::RawNode;
use tokio::sync::{oneshot, watch};
use tracing::info;
use transport::{Delivery, Overloaded, Transport, TransportConfig};

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::NodeConfig;
pub use driven::{CommittedEntry, DrivenHandle, DrivenNode, DrivenParts, PendingChange};
pub use interface::{
    BoxFuture, Consensus, Member, MemberError, MembershipChange, ProposalHook, RaftError,
    RestoreError, Role, SnapshotJob, StateMachine, Status, LEARNER_READY_PERCENT, MAX_LEARNERS,
};
pub use membership::MemberAttributes;
pub use observer::{NodeObserver, SharedObserver};
pub use outbox::{Outbox, PeerError};
pub use raft_loop::StopReason;
pub use timeline::{Event, EventKind, Progress, MAX_EVENTS};
/// Selecting and consulting planted bugs, for the layers above (kvstore's
/// planted bugs use the same switch).
pub use wal::plant;
/// The deliberate bugs `sim::SimOptions::plant` selects (see `wal::plant`).
pub use wal::plant::PlantedBug;

use durable::WalLog;
use raft_loop::{Frame, LoopParts, RaftLoop, Request};
use reports::Reports;

/// Builds a new member's data directory (`config.wal_dir`, `config.snap_dir`)
/// whose replicated state starts as `state`, bytes the state machine's
/// `restore` accepts (a backup). The member then starts normally with the
/// same configuration. `config.initial_members` are the new cluster's
/// members; every one of them is restored from the same bytes. Refuses a
/// directory that already holds a WAL. The caller checks `state` first:
/// raftnode treats it as opaque.
pub fn bootstrap_with_state(config: &NodeConfig, state: Vec<u8>) -> Result<(), NodeError> {
    disk::bootstrap_with_state(config, state)
}

/// Errors that stop a node (at start or while running).
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration is invalid or does not match the data directory.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The WAL or the snapshot store failed (I/O error or corruption).
    #[error(transparent)]
    Wal(#[from] wal::WalError),
    /// Data on disk or from the leader does not decode.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// raft-rs refused to start (e.g. inconsistent stored state).
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    /// The Raft loop thread could not be started or panicked.
    #[error("raft loop thread: {0}")]
    Thread(String),
}

/// How the node found its data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartKind {
    /// No data: bootstrapped the initial members.
    Fresh,
    /// No data, `--join`: waiting to be added by the cluster.
    Join,
    /// Recovered from the WAL and snapshots.
    Restart,
}

/// A running node: the Raft loop thread, its transport and a handle.
pub struct RaftNode {
    handle: NodeHandle,
    transport: Transport,
    start_kind: StartKind,
    thread: Mutex<Option<JoinHandle<Result<StopReason, NodeError>>>>,
    stopped: watch::Receiver<bool>,
    shutdown: Sender<()>,
}

impl RaftNode {
    /// Opens (or bootstraps) the data directories, restores `state_machine`
    /// from the newest snapshot, starts the transport and the Raft loop.
    ///
    /// Must be called inside a tokio runtime (the transport spawns tasks).
    /// The caller serves the transport's router (`node.transport().router()`)
    /// on this node's peer URL.
    pub fn start(
        config: NodeConfig,
        mut state_machine: Box<dyn StateMachine>,
    ) -> Result<RaftNode, NodeError> {
        let recovered = open_node(&config, disk::std_fs(), state_machine.as_mut())?;

        let (request_tx, request_rx) = bounded(config.request_queue_len);
        let (peer_tx, peer_rx) = bounded(config.inbound_queue_len);
        let (reports, report_rings) = Reports::new();
        let reports = Arc::new(reports);
        let (shutdown_tx, shutdown_rx) = bounded(1);
        let mut transport_config = TransportConfig::new(config.id, config.cluster_id);
        transport_config.enable_fault_routes = config.enable_fault_routes;
        transport_config.tls = config.peer_tls.clone();
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            NodeError::Config("RaftNode::start must be called inside a tokio runtime".into())
        })?;
        let transport = Transport::try_new(
            transport_config,
            Arc::new(Inbox {
                frames: peer_tx,
                reports: Arc::clone(&reports),
            }),
            runtime,
        )
        .map_err(|e| NodeError::Config(format!("transport: {e}")))?;
        for (id, url) in &recovered.members {
            transport
                .add_peer(*id, url)
                .map_err(|e| NodeError::Config(format!("peer {id} ({url}): {e}")))?;
        }
        let status = Arc::new(RwLock::new(initial_status(config.id)));
        info!(
            node = config.id,
            kind = ?recovered.kind,
            wal = %config.wal_dir.display(),
            snap = %config.snap_dir.display(),
            members = ?recovered.members,
            "raft node starting"
        );
        let start_kind = recovered.kind;
        let raft_loop = RaftLoop::new(LoopParts {
            config: config.clone(),
            raw: recovered.raw,
            sm: state_machine,
            outbox: Box::new(transport.clone()),
            clock: Arc::new(SystemClock),
            nonce: boot_nonce(),
            snapshot_writer: snapshots::WriterThread::Background,
            requests: request_rx,
            peer_frames: peer_rx,
            reports,
            report_rings,
            shutdown: shutdown_rx,
            members: recovered.members,
            attributes: recovered.attributes,
            applied: recovered.applied,
            status: status.clone(),
        });
        let (stopped_tx, stopped_rx) = watch::channel(false);
        let thread = std::thread::Builder::new()
            .name(format!("raft-{}", config.id))
            .spawn(move || {
                let result = raft_loop.run();
                let _ = stopped_tx.send(true);
                result
            })
            .map_err(|e| NodeError::Thread(e.to_string()))?;
        Ok(RaftNode {
            handle: NodeHandle {
                requests: request_tx,
                status,
                request_timeout: Duration::from_millis(config.request_timeout_ms),
                observer: config.observer.clone(),
            },
            transport,
            start_kind,
            thread: Mutex::new(Some(thread)),
            stopped: stopped_rx,
            shutdown: shutdown_tx,
        })
    }

    /// The handle the layers above use.
    pub fn consensus(&self) -> Arc<dyn Consensus> {
        Arc::new(self.handle.clone())
    }

    /// A cloneable handle to this node.
    pub fn handle(&self) -> NodeHandle {
        self.handle.clone()
    }

    /// This node's transport: serve [`Transport::router`] on this node's
    /// peer URL (raftnode speaks no HTTP itself); also stats and fault
    /// injection in tests.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// Whether this start bootstrapped, joined or restarted.
    pub fn start_kind(&self) -> StartKind {
        self.start_kind
    }

    /// Resolves when the Raft loop has ended (shutdown, removal or error).
    pub async fn stopped(&self) {
        let mut stopped = self.stopped.clone();
        let _ = stopped.wait_for(|done| *done).await;
    }

    /// Stops the Raft loop (everything acknowledged is already durable),
    /// stops the transport and returns why the loop ended.
    pub async fn shutdown(&self) -> Result<StopReason, NodeError> {
        let _ = self.shutdown.try_send(());
        self.stopped().await;
        self.transport.shutdown().await;
        let thread = self.thread.lock().take();
        match thread {
            Some(thread) => thread
                .join()
                .map_err(|_| NodeError::Thread("raft loop panicked".into()))?,
            None => Ok(StopReason::Shutdown),
        }
    }
}

/// A node's data opened and its `RawNode` built: what both drivers
/// ([`RaftNode`] and [`DrivenNode`]) start from.
pub(crate) struct Opened {
    pub raw: RawNode<WalLog>,
    pub kind: StartKind,
    pub applied: u64,
    pub members: BTreeMap<u64, String>,
    pub attributes: Vec<codec::AttributesRecord>,
}

/// Validates `config`, opens (or bootstraps) the node's data on `fs`,
/// restores `sm` from the newest snapshot and builds the `RawNode`.
pub(crate) fn open_node(
    config: &NodeConfig,
    fs: wal::SharedFs,
    sm: &mut dyn StateMachine,
) -> Result<Opened, NodeError> {
    config.validate()?;
    let recovered = disk::Disk::open(config, fs, sm)?;
    let raft_config = raft_config(config, recovered.applied);
    raft_config.validate()?;
    let raw = RawNode::new(
        &raft_config,
        WalLog::new(recovered.disk, recovered.store),
        &logger::raft_logger(config.id),
    )?;
    Ok(Opened {
        raw,
        kind: recovered.kind,
        applied: recovered.applied,
        members: recovered.members,
        attributes: recovered.attributes,
    })
}

fn raft_config(config: &NodeConfig, applied: u64) -> raft::Config {
    // raft-rs draws each election timeout from [min, max) with a thread RNG;
    // a range of one value takes the randomness out (0 keeps its default,
    // [election_ticks, 2 * election_ticks)).
    let (min_election_tick, max_election_tick) = if config.election_ticks_pinned {
        (config.election_ticks, config.election_ticks + 1)
    } else {
        (0, 0)
    };
    raft::Config {
        id: config.id,
        election_tick: config.election_ticks,
        min_election_tick,
        max_election_tick,
        heartbeat_tick: config.heartbeat_ticks,
        applied,
        max_size_per_msg: config.max_size_per_msg,
        max_inflight_msgs: config.max_inflight_msgs,
        check_quorum: true,
        pre_vote: true,
        ..Default::default()
    }
}

pub(crate) fn initial_status(id: u64) -> Status {
    Status {
        id,
        leader_id: None,
        role: Role::Follower,
        term: 0,
        commit_index: 0,
        applied_index: 0,
        snapshot_index: 0,
        last_index: 0,
        members: Vec::new(),
        progress: Vec::new(),
        events: Vec::new(),
    }
}

/// A per-process number so that membership request ids and ReadIndex
/// contexts of two incarnations of a node do not collide.
fn boot_nonce() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    (nanos ^ u64::from(std::process::id()).rotate_left(32)) << 16
}

/// Where the transport delivers frames (the Raft loop's bounded queue) and
/// reports (their own path, see `reports.rs`: never dropped).
struct Inbox {
    frames: Sender<Frame>,
    reports: Arc<Reports>,
}

impl Delivery for Inbox {
    fn deliver(&self, msgs: Vec<raft::eraftpb::Message>) -> Result<(), Overloaded> {
        self.deliver_frame(msgs, transport::InboundPermit::unbudgeted())
    }

    /// Queues the frame with its permit, so the queue stays within the
    /// transport's inbound byte budget until the loop has stepped it.
    fn deliver_frame(
        &self,
        msgs: Vec<raft::eraftpb::Message>,
        permit: transport::InboundPermit,
    ) -> Result<(), Overloaded> {
        self.frames
            .try_send(Frame { msgs, permit })
            .map_err(|_| Overloaded)
    }

    fn report_unreachable(&self, peer_id: u64) {
        self.reports.record(peer_id, |r| r.unreachable = true);
    }

    fn report_snapshot(&self, peer_id: u64, status: transport::SnapshotStatus) {
        let status = match status {
            transport::SnapshotStatus::Finish => raft::SnapshotStatus::Finish,
            transport::SnapshotStatus::Failure => raft::SnapshotStatus::Failure,
        };
        self.reports.record(peer_id, |r| r.snapshot = Some(status));
    }

    fn report_removed(&self, peer_id: u64) {
        self.report_removed_at(peer_id, None);
    }

    fn report_removed_at(&self, peer_id: u64, removed_at_index: Option<u64>) {
        self.reports
            .record(peer_id, |r| r.merge_removed_us(removed_at_index));
    }
}

/// A cloneable handle to a running node; implements [`Consensus`].
#[derive(Clone)]
pub struct NodeHandle {
    requests: Sender<Request>,
    status: Arc<RwLock<Status>>,
    request_timeout: Duration,
    observer: SharedObserver,
}

impl NodeHandle {
    async fn call(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<(), RaftError>>) -> Request,
    ) -> Result<(), RaftError> {
        let (reply, answer) = oneshot::channel();
        queue(&self.requests, make(reply))?;
        // The loop answers every request (with a timeout of its own for
        // reads and membership); this outer bound is a safety net.
        let limit = self.request_timeout + Duration::from_secs(1);
        match tokio::time::timeout(limit, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(RaftError::Stopped),
            Err(_) => Err(RaftError::Timeout {
                timeout_ms: limit.as_millis() as u64,
            }),
        }
    }
}

impl Consensus for NodeHandle {
    fn propose(&self, data: Vec<u8>) -> BoxFuture<'_, Result<(), RaftError>> {
        Box::pin(async move {
            let result = self.call(|reply| Request::Propose { data, reply }).await;
            if let (Err(_), Some(observer)) = (&result, &self.observer) {
                observer.proposal_failed();
            }
            result
        })
    }

    /// The loop tells the observer of a proposal Raft refused; a request
    /// that cannot be queued is counted here.
    fn propose_then(&self, data: Vec<u8>, then: ProposalHook) -> Result<(), RaftError> {
        let result = queue(&self.requests, Request::ProposeThen { data, then });
        if let (Err(_), Some(observer)) = (&result, &self.observer) {
            observer.proposal_failed();
        }
        result
    }

    fn read_barrier(&self) -> BoxFuture<'_, Result<(), RaftError>> {
        Box::pin(self.call(|reply| Request::Read { reply }))
    }

    fn change_membership(&self, change: MembershipChange) -> BoxFuture<'_, Result<(), RaftError>> {
        Box::pin(self.call(|reply| Request::ChangeMembership { change, reply }))
    }

    fn status(&self) -> Status {
        self.status.read().clone()
    }
}

/// Queues `request` for the loop without waiting: `Busy` when the queue is
/// full, `Stopped` when the loop is gone (the request is dropped then).
pub(crate) fn queue(requests: &Sender<Request>, request: Request) -> Result<(), RaftError> {
    match requests.try_send(request) {
        Ok(()) => Ok(()),
        Err(TrySendError::Full(_)) => Err(RaftError::Busy),
        Err(TrySendError::Disconnected(_)) => Err(RaftError::Stopped),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use raft::eraftpb::{Entry, Message, MessageType};
    use raft_loop::Traced;

    /// Node 1 of members 1, 2, 3, freshly bootstrapped, as a loop that the
    /// test drives turn by turn (no thread, no peers reachable).
    fn test_loop(dir: &std::path::Path, runtime: &tokio::runtime::Runtime) -> RaftLoop {
        let members = (1..=3)
            .map(|id| (id, format!("http://127.0.0.1:{id}")))
            .collect();
        let config = NodeConfig::new(1, members, dir.to_path_buf());
        let mut sm = NullMachine;
        let opened = open_node(&config, disk::std_fs(), &mut sm).unwrap();
        let (frames, _) = bounded(1);
        let (reports, report_rings) = Reports::new();
        let reports = Arc::new(reports);
        let transport = Transport::try_new(
            TransportConfig::new(1, 0),
            Arc::new(Inbox {
                frames,
                reports: Arc::clone(&reports),
            }),
            runtime.handle().clone(),
        )
        .unwrap();
        let transport: Box<dyn Outbox> = Box::new(transport);
        let (_, requests) = bounded(1);
        let (_, peer_frames) = bounded(1);
        let (_, shutdown) = bounded(1);
        RaftLoop::new(raft_loop::LoopParts {
            config,
            raw: opened.raw,
            sm: Box::new(NullMachine),
            outbox: transport,
            clock: Arc::new(SystemClock),
            nonce: boot_nonce(),
            snapshot_writer: snapshots::WriterThread::Background,
            requests,
            peer_frames,
            reports,
            report_rings,
            shutdown,
            members: opened.members,
            attributes: opened.attributes,
            applied: opened.applied,
            status: Arc::new(RwLock::new(initial_status(1))),
        })
    }

    struct NullMachine;

    impl StateMachine for NullMachine {
        fn apply(&mut self, _index: u64, _data: &[u8]) {}
        fn snapshot(&mut self) -> SnapshotJob {
            Box::new(Vec::new)
        }
        fn restore(&mut self, _index: u64, _data: &[u8]) -> Result<(), RestoreError> {
            Ok(())
        }
    }

    fn from_2(msg_type: MessageType, term: u64) -> Message {
        let mut msg = Message::default();
        msg.set_msg_type(msg_type);
        (msg.from, msg.to, msg.term) = (2, 1, term);
        msg
    }

    /// Votes and append acknowledgements leave only after the WAL write
    /// (with its fdatasync) of the vote and entries they acknowledge, and
    /// only persisted entries are applied: the trace of persists, sends and
    /// applies of real Ready cycles is checked.
    #[test]
    fn nothing_claiming_durability_is_sent_or_applied_before_it_is_persisted() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = runtime.enter();
        let dir = tempfile::tempdir().unwrap();
        let mut raft_loop = test_loop(dir.path(), &runtime);

        let mut vote = from_2(MessageType::MsgRequestVote, 2);
        (vote.index, vote.log_term) = (1, 1);
        let mut append = from_2(MessageType::MsgAppend, 2);
        (append.index, append.log_term, append.commit) = (1, 1, 1);
        append.entries = (2..=4)
            .map(|index| Entry {
                index,
                term: 2,
                data: vec![index as u8],
                ..Default::default()
            })
            .collect();
        let mut append_more = from_2(MessageType::MsgAppend, 2);
        (append_more.index, append_more.log_term, append_more.commit) = (4, 2, 4);
        append_more.entries = vec![Entry {
            index: 5,
            term: 2,
            ..Default::default()
        }];
        for frame in [vec![vote], vec![append], vec![append_more]] {
            raft_loop.on_frame(Frame {
                msgs: frame,
                permit: transport::InboundPermit::unbudgeted(),
            });
            raft_loop.on_ready().unwrap();
        }

        let (mut persisted_last, mut persisted_vote) = (0, (0, 0));
        let (mut acks, mut votes, mut applied) = (0, 0, 0);
        for event in raft_loop.trace.borrow().iter() {
            match event {
                Traced::Applied(index) => {
                    applied = *index;
                    assert!(
                        *index <= persisted_last,
                        "entry {index} applied with only {persisted_last} persisted"
                    );
                }
                Traced::Persisted {
                    last_index,
                    hard_state,
                } => {
                    persisted_last = last_index.unwrap_or(persisted_last);
                    if let Some(hs) = hard_state {
                        persisted_vote = (hs.term, hs.vote);
                    }
                }
                Traced::Sent(msg) if msg.reject => {}
                Traced::Sent(msg) => match msg.get_msg_type() {
                    MessageType::MsgAppendResponse => {
                        acks += 1;
                        assert!(
                            msg.index <= persisted_last,
                            "ack of index {} sent with only {persisted_last} persisted",
                            msg.index
                        );
                    }
                    MessageType::MsgRequestVoteResponse => {
                        votes += 1;
                        assert_eq!(
                            persisted_vote,
                            (msg.term, msg.to),
                            "vote sent before it was persisted"
                        );
                    }
                    _ => {}
                },
            }
        }
        assert_eq!(
            (votes, acks),
            (1, 2),
            "the vote and both appends were acknowledged"
        );
        assert_eq!(applied, 4, "the committed entries were applied");
        drop(raft_loop);
    }

    /// The snapshot file is written (and synced) before its WAL marker: when
    /// the file cannot be written, no marker may exist (a restart would
    /// otherwise look for a snapshot that is not there).
    #[test]
    fn no_wal_marker_without_its_snapshot_file() {
        let dir = tempfile::tempdir().unwrap();
        let config = NodeConfig::new(1, vec![(1, "http://127.0.0.1:1".into())], dir.path().into());
        let mut disk = disk::Disk::open(&config, disk::std_fs(), &mut NullMachine)
            .unwrap()
            .disk;
        // The snapshot directory becomes unwritable: a file in its place.
        std::fs::remove_dir_all(&config.snap_dir).unwrap();
        std::fs::write(&config.snap_dir, b"not a directory").unwrap();
        let mut snapshot = raft::eraftpb::Snapshot {
            data: disk::envelope(&Default::default(), Vec::new(), vec![1, 2, 3]),
            ..Default::default()
        };
        snapshot.mut_metadata().index = 50;
        snapshot.mut_metadata().term = 2;
        assert!(
            disk.save_snapshot(&snapshot).is_err(),
            "the file write fails"
        );
        drop(disk);
        let markers = wal::Wal::markers(&config.wal_dir).unwrap();
        assert!(
            markers.iter().all(|m| m.index != 50),
            "a marker without its snapshot file: {markers:?}"
        );
    }

    /// raft-rs draws each election timeout from [min, max) with a thread
    /// RNG: pinned, the range holds one value; by default raft-rs's own
    /// range [election_ticks, 2 * election_ticks) is kept.
    #[test]
    fn pinned_election_ticks_leave_raft_rs_a_single_timeout() {
        let members = vec![(1, "http://127.0.0.1:1".to_string())];
        let mut config = NodeConfig::new(1, members, "unused".into());
        let default = raft_config(&config, 0);
        assert_eq!(
            (default.min_election_tick(), default.max_election_tick()),
            (10, 20)
        );
        config.election_ticks_pinned = true;
        let pinned = raft_config(&config, 0);
        pinned.validate().unwrap();
        assert_eq!(
            (pinned.min_election_tick(), pinned.max_election_tick()),
            (10, 11)
        );
    }

    #[test]
    fn a_report_reaches_the_loop_when_the_frame_queue_is_full() {
        let (frames, queued) = bounded(1);
        let (reports, rings) = Reports::new();
        let inbox = Inbox {
            frames,
            reports: Arc::new(reports),
        };
        inbox.deliver(vec![Default::default()]).unwrap();
        assert!(
            inbox.deliver(vec![Default::default()]).is_err(),
            "queue full"
        );
        inbox.report_snapshot(2, transport::SnapshotStatus::Finish);
        assert_eq!(queued.len(), 1, "the frame queue is untouched");
        assert!(rings.try_recv().is_ok(), "the loop is woken");
        let seen: Vec<_> = inbox
            .reports
            .take()
            .into_iter()
            .filter_map(|(peer, report)| Some((peer, report.snapshot?)))
            .collect();
        assert_eq!(seen, vec![(2, raft::SnapshotStatus::Finish)]);
    }
}
