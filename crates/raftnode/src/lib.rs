//! raftnode: the Raft driver of raftkv (raftexample's `raftNode`).
//!
//! # What it owns
//! * The only `raft::RawNode` of the process, driven by one OS thread (the
//!   *Raft loop*): ticks, stepping peer messages, proposals, ReadIndex
//!   batches, membership changes, and the Ready cycle in raft-rs's order.
//! * The node's durable state through the `wal` crate: every Ready's entries
//!   and hard state are written and fdatasynced *before* the messages that
//!   depend on them are sent; snapshots are written before their WAL marker.
//! * Snapshot triggering (every `snapshot_count` applied entries) and log
//!   compaction (keeping `catch_up_entries` for slow followers).
//! * The node's `transport::Transport`: peers are added and removed as
//!   membership changes are applied.
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
//!   entries) before `RawNode::step`: nothing a peer sends panics the node.
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
mod codec;
mod config;
mod disk;
mod interface;
mod logger;
mod raft_loop;
mod reads;
mod storage;

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, Sender, TrySendError};
use parking_lot::{Mutex, RwLock};
use raft::RawNode;
use tokio::sync::{oneshot, watch};
use tracing::info;
use transport::{Delivery, Overloaded, Transport, TransportConfig};

pub use config::NodeConfig;
pub use interface::{
    BoxFuture, Consensus, Member, MembershipChange, RaftError, RestoreError, Role, SnapshotJob,
    StateMachine, Status,
};
pub use raft_loop::StopReason;

use raft_loop::{LoopParts, PeerEvent, RaftLoop, Request};

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
    /// The caller serves [`RaftNode::peer_router`] on this node's peer URL.
    pub fn start(
        config: NodeConfig,
        mut state_machine: Box<dyn StateMachine>,
    ) -> Result<RaftNode, NodeError> {
        config.validate()?;
        let recovered = disk::Disk::open(&config, state_machine.as_mut())?;
        let raft_config = raft_config(&config, recovered.applied);
        raft_config.validate()?;
        let raw = RawNode::new(
            &raft_config,
            recovered.store,
            &logger::raft_logger(config.id),
        )?;

        let (request_tx, request_rx) = bounded(config.request_queue_len);
        let (peer_tx, peer_rx) = bounded(config.inbound_queue_len);
        let (shutdown_tx, shutdown_rx) = bounded(1);
        let mut transport_config = TransportConfig::new(config.id, config.cluster_id);
        transport_config.enable_fault_routes = config.enable_fault_routes;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            NodeError::Config("RaftNode::start must be called inside a tokio runtime".into())
        })?;
        let transport = Transport::try_new(
            transport_config,
            Arc::new(Inbox { events: peer_tx }),
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
            raw,
            disk: recovered.disk,
            sm: state_machine,
            transport: transport.clone(),
            requests: request_rx,
            peer_events: peer_rx,
            shutdown: shutdown_rx,
            members: recovered.members,
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

    /// The peer-facing HTTP router (serve it on this node's peer URL).
    pub fn peer_router(&self) -> axum::Router {
        self.transport.router()
    }

    /// This node's transport (stats, fault injection in tests).
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

fn raft_config(config: &NodeConfig, applied: u64) -> raft::Config {
    raft::Config {
        id: config.id,
        election_tick: config.election_ticks,
        heartbeat_tick: config.heartbeat_ticks,
        applied,
        max_size_per_msg: config.max_size_per_msg,
        max_inflight_msgs: config.max_inflight_msgs,
        check_quorum: true,
        pre_vote: true,
        ..Default::default()
    }
}

fn initial_status(id: u64) -> Status {
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
    }
}

/// Where the transport delivers frames and reports: the Raft loop's queue.
struct Inbox {
    events: Sender<PeerEvent>,
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
        self.events
            .try_send(PeerEvent::Messages(msgs, permit))
            .map_err(|_| Overloaded)
    }

    fn report_unreachable(&self, peer_id: u64) {
        let _ = self.events.try_send(PeerEvent::Unreachable(peer_id));
    }

    fn report_snapshot(&self, peer_id: u64, status: transport::SnapshotStatus) {
        let status = match status {
            transport::SnapshotStatus::Finish => raft::SnapshotStatus::Finish,
            transport::SnapshotStatus::Failure => raft::SnapshotStatus::Failure,
        };
        let _ = self
            .events
            .try_send(PeerEvent::SnapshotStatus(peer_id, status));
    }

    fn report_removed(&self, peer_id: u64) {
        self.report_removed_at(peer_id, None);
    }

    fn report_removed_at(&self, peer_id: u64, removed_at_index: Option<u64>) {
        let _ = self
            .events
            .try_send(PeerEvent::RemovedBy(peer_id, removed_at_index));
    }
}

/// A cloneable handle to a running node; implements [`Consensus`].
#[derive(Clone)]
pub struct NodeHandle {
    requests: Sender<Request>,
    status: Arc<RwLock<Status>>,
    request_timeout: Duration,
}

impl NodeHandle {
    async fn call(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<(), RaftError>>) -> Request,
    ) -> Result<(), RaftError> {
        let (reply, answer) = oneshot::channel();
        match self.requests.try_send(make(reply)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(RaftError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(RaftError::Stopped),
        }
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
        Box::pin(self.call(|reply| Request::Propose { data, reply }))
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
