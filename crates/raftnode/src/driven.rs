//! [`DrivenNode`]: a node whose Raft loop the caller drives one turn at a
//! time, on the caller's thread, with the clock, outbox and file system the
//! caller gives it. This is how a deterministic simulation runs many real
//! nodes on one thread; [`RaftNode`](crate::RaftNode) drives the same turn
//! function from a thread of its own and sends through the HTTP transport.

use std::sync::Arc;

use crossbeam_channel::{bounded, Sender};
use parking_lot::RwLock;
use raft::eraftpb::Message;

use crate::clock::Clock;
use crate::outbox::Outbox;
use crate::raft_loop::{Frame, LoopParts, RaftLoop, Request};
use crate::reports::Reports;
use crate::snapshots::WriterThread;
use crate::{
    open_node, MembershipChange, NodeConfig, NodeError, RaftError, StartKind, StateMachine, Status,
    StopReason,
};

/// What a [`DrivenNode`] is built from.
pub struct DrivenParts {
    /// The node's configuration (`wal_dir` and `snap_dir` are paths on `fs`).
    pub config: NodeConfig,
    /// The disk: `wal::StdFs`, or a simulated one (`wal::sim::SimFs`).
    pub fs: wal::SharedFs,
    /// The state machine committed entries are applied to.
    pub state_machine: Box<dyn StateMachine>,
    /// The only source of time for ticks and timeouts.
    pub clock: Arc<dyn Clock>,
    /// Where messages go.
    pub outbox: Box<dyn Outbox>,
    /// Distinguishes this incarnation's ReadIndex contexts and membership
    /// request ids from an earlier incarnation's; a simulation derives it
    /// from its seed so that runs repeat exactly.
    pub nonce: u64,
}

/// An entry of the committed log, as [`DrivenNode::committed_entry`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedEntry {
    /// Log index.
    pub index: u64,
    /// Term of the leader that appended it.
    pub term: u64,
    /// Payload (a membership change's encoding, or empty for a leader's
    /// no-op and a change marker).
    pub data: Vec<u8>,
}

/// A membership change proposed through [`DrivenNode::change_membership`].
pub struct PendingChange(tokio::sync::oneshot::Receiver<Result<(), RaftError>>);

impl PendingChange {
    /// The answer, once there is one: `Ok` when the change was applied on
    /// the node that proposed it; [`RaftError::Stopped`] when that node
    /// stopped (or crashed) first, whether or not the change went through.
    pub fn poll(&mut self) -> Option<Result<(), RaftError>> {
        match self.0.try_recv() {
            Ok(answer) => Some(answer),
            Err(tokio::sync::oneshot::error::TryRecvError::Empty) => None,
            Err(tokio::sync::oneshot::error::TryRecvError::Closed) => Some(Err(RaftError::Stopped)),
        }
    }
}

/// A node driven one turn at a time by its caller (no threads, no sockets).
///
/// Each [`turn`](Self::turn) drains what was delivered, ticks if the clock
/// says a tick is due, handles one Ready (persisting through the WAL on the
/// given file system, sending through the outbox, applying committed entries)
/// and publishes the status. Snapshots are encoded and written on the
/// caller's thread too, in the turn that takes them. Dropping the node is a
/// crash: nothing more is written, and what the file system did not sync
/// may be lost.
pub struct DrivenNode {
    raft_loop: RaftLoop,
    status: Arc<RwLock<Status>>,
    start_kind: StartKind,
    stopped: Option<Result<StopReason, String>>,
    /// The transport's reports, which the caller makes instead.
    reports: Arc<Reports>,
    // The loop stops when these disconnect; they live as long as the node.
    requests: Sender<Request>,
    _peer_frames: Sender<Frame>,
    _shutdown: Sender<()>,
}

impl DrivenNode {
    /// Opens (or bootstraps) the node's data on `parts.fs`, restores the
    /// state machine from its newest snapshot and builds the loop.
    pub fn open(parts: DrivenParts) -> Result<DrivenNode, NodeError> {
        let DrivenParts {
            config,
            fs,
            mut state_machine,
            clock,
            outbox,
            nonce,
        } = parts;
        let opened = open_node(&config, fs, state_machine.as_mut())?;
        for (id, url) in &opened.members {
            if let Err(e) = outbox.add_peer(*id, url) {
                return Err(NodeError::Config(format!("peer {id} ({url}): {e}")));
            }
        }
        let (requests_tx, requests) = bounded(config.request_queue_len);
        let (peer_frames_tx, peer_frames) = bounded(1);
        let (shutdown_tx, shutdown) = bounded(1);
        let (reports, report_rings) = Reports::new();
        let reports = Arc::new(reports);
        let status = Arc::new(RwLock::new(crate::initial_status(config.id)));
        let mut raft_loop = RaftLoop::new(LoopParts {
            config,
            raw: opened.raw,
            sm: state_machine,
            outbox,
            clock,
            nonce,
            // One thread, deterministic: see `WriterThread::Inline`.
            snapshot_writer: WriterThread::Inline,
            requests,
            peer_frames,
            reports: Arc::clone(&reports),
            report_rings,
            shutdown,
            members: opened.members,
            attributes: opened.attributes,
            applied: opened.applied,
            status: Arc::clone(&status),
        });
        raft_loop.publish_status(true);
        Ok(DrivenNode {
            raft_loop,
            status,
            start_kind: opened.kind,
            stopped: None,
            reports,
            requests: requests_tx,
            _peer_frames: peer_frames_tx,
            _shutdown: shutdown_tx,
        })
    }

    /// Steps peer messages (one frame, as the transport would deliver it)
    /// through the same checks as messages from the network. They take
    /// effect in the next [`turn`](Self::turn)'s Ready.
    pub fn deliver(&mut self, msgs: Vec<Message>) {
        if self.stopped.is_none() {
            self.raft_loop.on_frame(Frame {
                msgs,
                permit: transport::InboundPermit::unbudgeted(),
            });
        }
    }

    /// Reports how a snapshot this node sent to `peer` ended, as the
    /// transport does once the transfer finished or failed: raft-rs keeps
    /// that follower paused until it hears. Takes effect in the next turn.
    pub fn report_snapshot(&self, peer: u64, delivered: bool) {
        let status = if delivered {
            raft::SnapshotStatus::Finish
        } else {
            raft::SnapshotStatus::Failure
        };
        self.reports.record(peer, |r| r.snapshot = Some(status));
    }

    /// Reports that `peer` could not be reached (as the transport does).
    pub fn report_unreachable(&self, peer: u64) {
        self.reports.record(peer, |r| r.unreachable = true);
    }

    /// Proposes `data` (as [`Consensus::propose`](crate::Consensus::propose)
    /// does, without waiting for the apply).
    pub fn propose(&mut self, data: Vec<u8>) -> Result<(), RaftError> {
        if self.stopped.is_some() {
            return Err(RaftError::Stopped);
        }
        self.raft_loop.propose(data)
    }

    /// Proposes a membership change (as
    /// [`Consensus::change_membership`](crate::Consensus::change_membership)
    /// does); the returned [`PendingChange`] tells when it was applied here
    /// or refused.
    pub fn change_membership(&mut self, change: MembershipChange) -> PendingChange {
        let (reply, answer) = tokio::sync::oneshot::channel();
        if self.stopped.is_some() {
            let _ = reply.send(Err(RaftError::Stopped));
        } else {
            self.raft_loop.change_membership(change, reply);
        }
        PendingChange(answer)
    }

    /// A [`Consensus`](crate::Consensus) handle on this node, for the layers
    /// above raftnode (a key-value store) to propose and read through, as
    /// they do through [`NodeHandle`](crate::NodeHandle). Its requests are
    /// queued and handled in the next [`turn`](Self::turn); its futures
    /// resolve when the loop answers, with no timer of their own (the loop
    /// times out reads and membership changes on its clock), and with
    /// [`RaftError::Stopped`] once the node is dropped or has stopped.
    pub fn consensus(&self) -> DrivenHandle {
        DrivenHandle {
            requests: self.requests.clone(),
            status: Arc::clone(&self.status),
        }
    }

    /// Runs one turn of the Raft loop. `Ok(Some(reason))` once the loop has
    /// stopped (removed from the cluster); an error is fatal, as in
    /// production, and every later call returns it again.
    pub fn turn(&mut self) -> Result<Option<StopReason>, NodeError> {
        if let Some(stopped) = &self.stopped {
            return match stopped {
                Ok(reason) => Ok(Some(*reason)),
                Err(e) => Err(NodeError::Thread(format!("the loop stopped earlier: {e}"))),
            };
        }
        let result = match self.raft_loop.turn() {
            Ok(None) => return Ok(None),
            Ok(Some(reason)) => Ok(reason),
            Err(e) => Err(e),
        };
        self.raft_loop.finish(&result);
        self.stopped = Some(result.as_ref().map(|r| *r).map_err(|e| e.to_string()));
        result.map(Some)
    }

    /// The node's status as of the end of the last turn.
    pub fn status(&self) -> Status {
        self.status.read().clone()
    }

    /// Whether this start bootstrapped, joined or restarted.
    pub fn start_kind(&self) -> StartKind {
        self.start_kind
    }

    /// The entry at `index` if it is committed and still in the log (not
    /// compacted into a snapshot).
    pub fn committed_entry(&self, index: u64) -> Option<CommittedEntry> {
        self.raft_loop.committed_entry(index)
    }
}

/// A [`DrivenNode`]'s [`Consensus`](crate::Consensus) handle (see
/// [`DrivenNode::consensus`]). Cheap to clone.
#[derive(Clone)]
pub struct DrivenHandle {
    requests: Sender<Request>,
    status: Arc<RwLock<Status>>,
}

impl DrivenHandle {
    async fn call(
        &self,
        make: impl FnOnce(tokio::sync::oneshot::Sender<Result<(), RaftError>>) -> Request,
    ) -> Result<(), RaftError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        crate::queue(&self.requests, make(reply))?;
        answer.await.unwrap_or(Err(RaftError::Stopped))
    }
}

impl crate::Consensus for DrivenHandle {
    fn propose(&self, data: Vec<u8>) -> crate::BoxFuture<'_, Result<(), RaftError>> {
        Box::pin(self.call(|reply| Request::Propose { data, reply }))
    }

    fn propose_then(&self, data: Vec<u8>, then: crate::ProposalHook) -> Result<(), RaftError> {
        crate::queue(&self.requests, Request::ProposeThen { data, then })
    }

    fn read_barrier(&self) -> crate::BoxFuture<'_, Result<(), RaftError>> {
        Box::pin(self.call(|reply| Request::Read { reply }))
    }

    fn change_membership(
        &self,
        change: MembershipChange,
    ) -> crate::BoxFuture<'_, Result<(), RaftError>> {
        Box::pin(self.call(|reply| Request::ChangeMembership { change, reply }))
    }

    fn status(&self) -> Status {
        self.status.read().clone()
    }
}
