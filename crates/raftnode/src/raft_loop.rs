//! The Raft loop: the only code that touches `RawNode`.
//!
//! The loop is a turn function, [`RaftLoop::turn`]: drain the queues
//! (requests from the layers above, frames and reports from the transport;
//! the proposals drained go to Raft together, one `MsgPropose` per batch),
//! tick if the [`Clock`] says a tick is due, issue one ReadIndex for all new
//! reads, and handle the Ready in raft-rs's order (see
//! [`RaftLoop::on_ready`]). In production one OS thread runs
//! [`RaftLoop::run`], a thin driver that blocks until there is work or the
//! next tick and then calls `turn`; a simulation calls `turn` itself, one
//! node after another on one thread. Messages leave through the [`Outbox`].
//! The WAL's fdatasync runs on the turn's thread: one per Ready, for every
//! proposal that Ready carries.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver};
use parking_lot::RwLock;
use prost::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeType, ConfChangeV2, Entry, EntryType, Message, MessageType, Snapshot,
};
use raft::{RawNode, StateRole};
use tokio::sync::oneshot;
use tracing::{debug, error, info, warn};

use crate::checks::check_peer_message;
use crate::clock::Clock;
use crate::disk::restore_state_machine;
use crate::durable::{DurableLog, WalLog};
use crate::membership::{change_marker, screen_promotions, Membership, Reply};
use crate::outbox::Outbox;
use crate::reads::ReadTracker;
use crate::reports::Reports;
use crate::snapshots::{Capture, SnapshotOutcome, SnapshotSchedule, WriterThread};
use crate::timeline::{EventKind, Timeline};
use crate::{
    Member, MembershipChange, NodeConfig, NodeError, RaftError, Role, StateMachine, Status,
};

/// Most requests and peer frames handled in one turn before the Ready is
/// processed (bounds the latency of a turn).
const DRAIN_REQUESTS_MAX: usize = 4096;
const DRAIN_PEER_FRAMES_MAX: usize = 1024;
/// Proposals drained in one turn are handed to Raft together, in batches of
/// at most this many payload bytes (a follower forwards a batch to the leader
/// as one message).
pub(crate) const PROPOSAL_BATCH_BYTES_MAX: usize = 1024 * 1024;

/// A request from the layers above.
pub(crate) enum Request {
    Propose {
        data: Vec<u8>,
        reply: oneshot::Sender<Result<(), RaftError>>,
    },
    /// A proposal whose caller does not wait: the hook gets Raft's answer.
    ProposeThen {
        data: Vec<u8>,
        then: crate::ProposalHook,
    },
    Read {
        reply: oneshot::Sender<Result<(), RaftError>>,
    },
    ChangeMembership {
        change: MembershipChange,
        reply: oneshot::Sender<Result<(), RaftError>>,
    },
}

/// Who waits for Raft's answer to a batched proposal.
enum ProposalAnswer {
    Reply(oneshot::Sender<Result<(), RaftError>>),
    Then(crate::ProposalHook),
}

/// Proposals drained in one turn, handed to Raft as one `MsgPropose`: a
/// leader appends them at once and sends each follower one append for the
/// batch, where one proposal at a time made an append (and its
/// acknowledgement) per proposal.
#[derive(Default)]
struct ProposalBatch {
    entries: Vec<Entry>,
    answers: Vec<ProposalAnswer>,
    bytes: usize,
}

/// A received frame, with its share of the transport's inbound byte budget
/// (released when the frame is dropped, after its messages are stepped).
pub(crate) struct Frame {
    pub msgs: Vec<Message>,
    pub permit: transport::InboundPermit,
}

/// Why the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// `shutdown` was called.
    Shutdown,
    /// This node was removed from the cluster.
    Removed,
}

pub(crate) struct RaftLoop<L: DurableLog = WalLog> {
    id: u64,
    /// raft-rs over the node's one durable log (read by raft, written
    /// through by the Ready cycle).
    raw: RawNode<L>,
    sm: Box<dyn StateMachine>,
    outbox: Box<dyn Outbox>,
    /// The only source of time: ticks and timeouts.
    clock: Arc<dyn Clock>,
    /// When raft-rs is ticked next.
    next_tick: Instant,
    requests: Receiver<Request>,
    /// Frames of peer messages, bounded (a full queue answers peers 503).
    peer_frames: Receiver<Frame>,
    /// Reports from the transport, never dropped; `report_rings` wakes us.
    reports: Arc<Reports>,
    report_rings: Receiver<()>,
    /// A message (or disconnection) here stops the loop; separate from the
    /// request queue so a full queue cannot delay a shutdown.
    shutdown: Receiver<()>,
    /// Members' peer URLs; the membership change in flight.
    membership: Membership,
    reads: ReadTracker,
    status: Arc<RwLock<Status>>,
    config: NodeConfig,
    applied: u64,
    /// This node's current incarnation (its data directory) is in the
    /// configuration: it was an initial member, or it applied its own
    /// addition (or a snapshot naming it). A removal of this id applied
    /// before that belongs to an earlier incarnation of the id, removed
    /// before this one was added again with a fresh disk, and must not
    /// stop it.
    added: bool,
    stop: Option<StopReason>,
    /// When to snapshot; the snapshot in flight.
    snapshots: SnapshotSchedule,
    /// Recent events and the leader's progress view, for the live view.
    timeline: Timeline,
    /// Proposals of this turn not yet handed to Raft.
    proposals: ProposalBatch,
    /// What was persisted and sent, in order (for the ordering tests).
    #[cfg(test)]
    pub(crate) trace: std::cell::RefCell<Vec<Traced>>,
}

/// One persist or send, recorded in order by tests.
#[cfg(test)]
#[derive(Debug, Clone)]
pub(crate) enum Traced {
    /// A WAL write (and fdatasync) returned: the last entry index written
    /// (if any) and the hard state written (if any).
    Persisted {
        last_index: Option<u64>,
        hard_state: Option<raft::eraftpb::HardState>,
    },
    /// A message handed to the transport.
    Sent(Box<Message>),
    /// A committed entry applied.
    Applied(u64),
}

/// Everything the loop needs, assembled by `RaftNode::start`.
pub(crate) struct LoopParts<L: DurableLog = WalLog> {
    pub config: NodeConfig,
    pub raw: RawNode<L>,
    pub sm: Box<dyn StateMachine>,
    pub outbox: Box<dyn Outbox>,
    pub clock: Arc<dyn Clock>,
    /// Distinguishes this incarnation's ReadIndex contexts and membership
    /// request ids from an earlier one's (`boot_nonce` in production).
    pub nonce: u64,
    /// Where snapshots are encoded and written.
    pub snapshot_writer: WriterThread,
    pub requests: Receiver<Request>,
    pub peer_frames: Receiver<Frame>,
    pub reports: Arc<Reports>,
    pub report_rings: Receiver<()>,
    pub shutdown: Receiver<()>,
    pub members: BTreeMap<u64, String>,
    /// What members published about themselves (from the snapshot).
    pub attributes: Vec<crate::codec::AttributesRecord>,
    /// Highest index the state machine holds at start.
    pub applied: u64,
    pub status: Arc<RwLock<Status>>,
}

impl<L: DurableLog> RaftLoop<L> {
    pub(crate) fn new(parts: LoopParts<L>) -> RaftLoop<L> {
        let config = parts.config;
        let timeout = Duration::from_millis(config.request_timeout_ms);
        let retry = Duration::from_millis(config.tick_ms * 3);
        let nonce = parts.nonce;
        let snapshots = SnapshotSchedule::new(&config, parts.snapshot_writer);
        let next_tick = parts.clock.now() + Duration::from_millis(config.tick_ms);
        let added = is_member(parts.raw.store().conf_state(), config.id);
        RaftLoop {
            id: config.id,
            raw: parts.raw,
            sm: parts.sm,
            outbox: parts.outbox,
            clock: parts.clock,
            next_tick,
            requests: parts.requests,
            peer_frames: parts.peer_frames,
            reports: parts.reports,
            report_rings: parts.report_rings,
            shutdown: parts.shutdown,
            membership: Membership::new(config.id, parts.members, nonce, timeout)
                .with_attributes(config.attributes.clone(), parts.attributes),
            reads: ReadTracker::new(config.id, nonce, timeout, retry),
            status: parts.status,
            config,
            applied: parts.applied,
            added,
            stop: None,
            snapshots,
            timeline: Timeline::default(),
            proposals: ProposalBatch::default(),
            #[cfg(test)]
            trace: Default::default(),
        }
    }

    /// The production driver: blocks until there is work or the next tick,
    /// then runs a [`turn`](Self::turn), until shutdown, removal or a fatal
    /// error (a failed fsync, a corrupt snapshot): after any of those the
    /// node must not go on.
    pub(crate) fn run(mut self) -> Result<StopReason, NodeError> {
        self.publish_status(true);
        let result = loop {
            if let Err(e) = self.wait_for_work() {
                break Err(e);
            }
            match self.turn() {
                Ok(Some(reason)) => break Ok(reason),
                Ok(None) => {}
                Err(e) => break Err(e),
            }
        };
        self.finish(&result);
        result
    }

    /// Answers everything still waiting after the loop ended, and logs why
    /// it ended.
    pub(crate) fn finish(&mut self, result: &Result<StopReason, NodeError>) {
        self.fail_everything(RaftError::Stopped);
        match result {
            Ok(StopReason::Removed) => {
                info!(node = self.id, "removed from the cluster; stopping")
            }
            Ok(StopReason::Shutdown) => info!(node = self.id, "raft loop stopped"),
            Err(e) => error!(node = self.id, error = %e, "raft loop failed; stopping"),
        }
    }

    /// One turn of the loop, without blocking: drain what is queued
    /// (bounded), tick if due by the clock, issue the batch of new reads,
    /// handle one Ready. Returns why the loop must stop, if it must.
    pub(crate) fn turn(&mut self) -> Result<Option<StopReason>, NodeError> {
        self.drain()?;
        self.tick_if_due();
        let has_leader = self.raw.raft.leader_id != raft::INVALID_ID;
        let now = self.clock.now();
        let raw = &mut self.raw;
        self.reads.flush(has_leader, now, |ctx| raw.read_index(ctx));
        if has_leader && self.added {
            self.publish_attributes(now);
        }
        self.on_ready()?;
        self.publish_status(false);
        Ok(self.stop)
    }

    /// Blocks until a request, a peer event or the next tick (by the clock),
    /// and handles the one event that woke it.
    fn wait_for_work(&mut self) -> Result<(), NodeError> {
        let timeout = self.next_tick.saturating_duration_since(self.clock.now());
        select! {
            recv(self.requests) -> request => match request {
                Ok(request) => self.on_request(request),
                Err(_) => self.stop = Some(StopReason::Shutdown),
            },
            recv(self.peer_frames) -> frame => {
                if let Ok(frame) = frame {
                    self.on_frame(frame);
                }
            },
            recv(self.report_rings) -> _ => {},
            recv(self.shutdown) -> _ => self.stop = Some(StopReason::Shutdown),
            recv(self.snapshots.written()) -> outcome => {
                if let Ok(outcome) = outcome {
                    self.on_snapshot_written(outcome)?;
                }
            },
            default(timeout) => {},
        }
        Ok(())
    }

    /// Handles what is queued, without waiting: a finished snapshot, peer
    /// frames, transport reports, requests (each bounded per turn).
    fn drain(&mut self) -> Result<(), NodeError> {
        if let Ok(outcome) = self.snapshots.written().try_recv() {
            self.on_snapshot_written(outcome)?;
        }
        for _ in 0..DRAIN_PEER_FRAMES_MAX {
            match self.peer_frames.try_recv() {
                Ok(frame) => self.on_frame(frame),
                Err(_) => break,
            }
        }
        while self.report_rings.try_recv().is_ok() {}
        self.on_reports();
        for _ in 0..DRAIN_REQUESTS_MAX {
            match self.requests.try_recv() {
                Ok(request) => self.on_request(request),
                Err(_) => break,
            }
        }
        self.flush_proposals();
        if matches!(
            self.shutdown.try_recv(),
            Ok(()) | Err(crossbeam_channel::TryRecvError::Disconnected)
        ) {
            self.stop = Some(StopReason::Shutdown);
        }
        Ok(())
    }

    /// Ticks raft-rs when the clock reached the next tick (at most once per
    /// turn), then checks the read and membership timeouts.
    fn tick_if_due(&mut self) {
        let now = self.clock.now();
        if now < self.next_tick {
            return;
        }
        self.raw.tick();
        self.next_tick = now + Duration::from_millis(self.config.tick_ms);
        self.on_timer(now);
    }

    /// Handles one request; proposals wait in the turn's batch (handed to
    /// Raft at the end of the drain, or before a membership change, so the
    /// log keeps the order in which requests were taken).
    fn on_request(&mut self, request: Request) {
        match request {
            Request::Propose { data, reply } => {
                self.batch_proposal(data, ProposalAnswer::Reply(reply))
            }
            Request::ProposeThen { data, then } => {
                self.batch_proposal(data, ProposalAnswer::Then(then))
            }
            Request::Read { reply } => self.reads.push(reply),
            Request::ChangeMembership { change, reply } => {
                self.flush_proposals();
                self.change_membership(change, reply)
            }
        }
    }

    fn batch_proposal(&mut self, data: Vec<u8>, answer: ProposalAnswer) {
        self.proposals.bytes += data.len();
        self.proposals.entries.push(Entry {
            data,
            ..Default::default()
        });
        self.proposals.answers.push(answer);
        if self.proposals.bytes >= PROPOSAL_BATCH_BYTES_MAX {
            self.flush_proposals();
        }
    }

    /// Hands the batched proposals to Raft in one message and tells each
    /// waiter Raft's answer (the same for the whole batch).
    fn flush_proposals(&mut self) {
        if self.proposals.answers.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.proposals);
        let result = self.propose_entries(batch.entries);
        for answer in batch.answers {
            match answer {
                ProposalAnswer::Reply(reply) => {
                    let _ = reply.send(result.clone());
                }
                ProposalAnswer::Then(then) => {
                    if let (Err(_), Some(observer)) = (&result, &self.config.observer) {
                        observer.proposal_failed();
                    }
                    then(result.clone());
                }
            }
        }
    }

    pub(crate) fn propose(&mut self, data: Vec<u8>) -> Result<(), RaftError> {
        let entry = Entry {
            data,
            ..Default::default()
        };
        self.propose_entries(vec![entry])
    }

    /// Proposes `entries` (normal entries) in one `MsgPropose`, as
    /// `RawNode::propose` does for one.
    fn propose_entries(&mut self, entries: Vec<Entry>) -> Result<(), RaftError> {
        if self.raw.raft.leader_id == raft::INVALID_ID {
            return Err(RaftError::NoLeader);
        }
        let mut msg = Message::default();
        msg.set_msg_type(MessageType::MsgPropose);
        msg.from = self.id;
        msg.entries = entries;
        self.raw
            .raft
            .step(msg)
            .map_err(|e| RaftError::ProposalDropped(e.to_string()))
    }

    pub(crate) fn change_membership(&mut self, change: MembershipChange, reply: Reply) {
        let conf_state = self.raw.store().conf_state();
        let cc = match self.check_change_leader().and_then(|()| {
            self.membership
                .conf_change(&change, &conf_state.voters, &conf_state.learners)
        }) {
            Ok(cc) => cc,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        if let MembershipChange::PromoteLearner { id } = change {
            if self.raw.raft.state == StateRole::Leader && !self.learner_is_ready(id) {
                let _ = reply.send(Err(crate::MemberError::LearnerNotReady.into()));
                return;
            }
        }
        let request_id = cc.id;
        if let Err(e) = self.propose_change_with_marker(cc) {
            let _ = reply.send(Err(RaftError::ProposalDropped(e.to_string())));
            return;
        }
        info!(
            node = self.id,
            ?change,
            request_id,
            "membership change proposed"
        );
        self.membership
            .proposed(request_id, reply, self.clock.now());
    }

    /// Proposes `cc` followed, in the same proposal, by an empty normal entry
    /// whose context names the request ([`change_marker`]). raft-rs appends
    /// both together, but a leader with a conf change pending replaces `cc`
    /// with an empty entry, silently: when the marker is applied and the
    /// change was not, the change was refused and nothing changed.
    fn propose_change_with_marker(&mut self, cc: ConfChange) -> raft::Result<()> {
        let request_id = cc.id;
        let change = Entry {
            entry_type: EntryType::EntryConfChange as i32,
            data: cc.encode_to_vec(),
            ..Default::default()
        };
        let marker = Entry {
            entry_type: EntryType::EntryNormal as i32,
            context: change_marker(request_id),
            ..Default::default()
        };
        let mut msg = Message::default();
        msg.set_msg_type(MessageType::MsgPropose);
        msg.from = self.id;
        msg.entries = vec![change, marker];
        self.raw.raft.step(msg)
    }

    /// A membership change needs a leader with no conf change of its own
    /// pending (raft-rs would silently replace a second one), and none in
    /// flight here.
    fn check_change_leader(&self) -> Result<(), RaftError> {
        if self.membership.is_pending() {
            return Err(RaftError::MembershipChangeInProgress);
        }
        if self.raw.raft.leader_id == raft::INVALID_ID {
            return Err(RaftError::NoLeader);
        }
        if self.raw.raft.state == StateRole::Leader
            && self.raw.raft.pending_conf_index > self.raw.raft.raft_log.applied
        {
            return Err(RaftError::MembershipChangeInProgress);
        }
        Ok(())
    }

    pub(crate) fn on_frame(&mut self, frame: Frame) {
        let Frame { msgs, permit } = frame;
        for msg in msgs {
            self.step(msg);
        }
        drop(permit);
    }

    fn on_reports(&mut self) {
        for (peer, report) in self.reports.take() {
            if report.unreachable {
                self.raw.report_unreachable(peer);
            }
            let dropped = wal::plant::active(wal::plant::PlantedBug::DropSnapshotReport);
            if let Some(status) = report.snapshot.filter(|_| !dropped) {
                debug!(node = self.id, peer, ?status, "snapshot delivery reported");
                self.raw.report_snapshot(peer, status);
            }
            match report.removed_us {
                None => {}
                Some(Some(removed_at)) if self.applied >= removed_at => {
                    // Applying our own removal would have stopped us: this id
                    // was added again since, and the peer has not applied that.
                    info!(
                        node = self.id,
                        peer,
                        removed_at,
                        applied = self.applied,
                        "a lagging peer reports a removal this node applied past; ignored"
                    );
                }
                Some(_) => {
                    info!(
                        node = self.id,
                        peer, "a peer reports this node was removed from the cluster"
                    );
                    self.stop = Some(StopReason::Removed);
                }
            }
        }
    }

    /// Whether the leader sees learner `id`'s log close enough to its own
    /// to promote it (etcd's rule, see `membership::learner_ready`).
    fn learner_is_ready(&self, id: u64) -> bool {
        let prs = self.raw.raft.prs();
        let matched = |id| prs.get(id).map_or(0, |p| p.matched);
        crate::membership::learner_ready(matched(id), matched(self.id))
    }

    /// Proposes this node's name and client URLs once a leader is known,
    /// until the log has them (retried every request timeout).
    fn publish_attributes(&mut self, now: Instant) {
        if let Some(context) = self.membership.attributes_to_publish(now) {
            if let Err(e) = self.raw.propose(context, Vec::new()) {
                debug!(node = self.id, error = %e, "publishing attributes: proposal dropped");
            }
        }
    }

    fn step(&mut self, mut msg: Message) {
        if let Err(rejection) = check_peer_message(
            self.id,
            self.raw.store().conf_state(),
            self.raw.store().last(),
            &msg,
        ) {
            warn!(
                node = self.id,
                from = msg.from,
                ?rejection,
                "dropped peer message"
            );
            return;
        }
        if msg.get_msg_type() == MessageType::MsgPropose && self.raw.raft.state == StateRole::Leader
        {
            let learners = self.raw.store().conf_state().learners.clone();
            let refused =
                screen_promotions(&mut msg.entries, &learners, |id| self.learner_is_ready(id));
            if refused > 0 {
                info!(
                    node = self.id,
                    from = msg.from,
                    "forwarded promotion refused: learner not ready"
                );
            }
        }
        if let Err(e) = self.raw.step(msg) {
            debug!(node = self.id, error = %e, "raft refused a peer message");
        }
    }

    fn on_timer(&mut self, now: Instant) {
        let raw = &mut self.raw;
        self.reads.on_timer(now, |ctx| raw.read_index(ctx));
        self.membership.expire(now);
    }

    /// Handles one Ready, in raft-rs's order.
    pub(crate) fn on_ready(&mut self) -> Result<(), NodeError> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut ready = self.raw.ready();
        // 1. Messages that may go before persistence (a leader's appends and
        //    heartbeats): the leader writes its log while followers do.
        self.send(ready.take_messages());
        // 2. A snapshot from the leader: restore, snapshot file, WAL marker.
        if !ready.snapshot().is_empty() {
            let snapshot = self.take_ready_snapshot(ready.snapshot());
            self.install_snapshot(snapshot)?;
        }
        // 3. Read states: batches of reads whose read index is now known.
        self.reads.on_read_states(ready.take_read_states());
        // 4. Committed entries (raft-rs hands out only persisted ones).
        self.apply(ready.take_committed_entries());
        if self.stop == Some(StopReason::Removed) {
            // This node applied its own removal: raft-rs no longer tracks
            // it, and advancing the Ready would panic (a leader looks up its
            // own progress there). The loop ends here; what the Ready still
            // carried concerns a cluster this node has left.
            return Ok(());
        }
        // 5. + 6. New entries and hard state: one WAL write, one fdatasync.
        // raft-rs recorded the last entry when it built the Ready, so the
        // entries can be moved out instead of cloned into the store.
        let entries = ready.take_entries();
        if wal::plant::active(wal::plant::PlantedBug::SendBeforeFsync) {
            self.send(ready.take_persisted_messages());
        }
        #[cfg(test)]
        let persisted_last_index = entries.last().map(|e| e.index);
        self.raw.mut_store().persist(entries, ready.hs())?;
        #[cfg(test)]
        self.trace.borrow_mut().push(Traced::Persisted {
            last_index: persisted_last_index,
            hard_state: ready.hs().cloned(),
        });
        // 7. Messages that claim durability (votes, append responses).
        self.send(ready.take_persisted_messages());
        // 8. Advance, then the light ready: commit index, messages, entries.
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().set_commit(commit);
        }
        self.send(light.take_messages());
        self.apply(light.take_committed_entries());
        // 9. Tell raft what is applied; answer reads; snapshot if due.
        self.raw.advance_apply();
        self.reads.on_applied(self.applied);
        self.maybe_snapshot()
    }

    fn send(&self, messages: Vec<Message>) {
        #[cfg(test)]
        self.trace
            .borrow_mut()
            .extend(messages.iter().cloned().map(|m| Traced::Sent(Box::new(m))));
        if !messages.is_empty() {
            self.outbox.send(messages);
        }
    }

    /// The Ready's snapshot, owned. raft-rs keeps the snapshot it accepted
    /// in its unstable log until `advance` and hands the Ready a clone; the
    /// data is moved out of the unstable copy instead of cloning it a second
    /// time (raft reads only that copy's metadata before `advance` drops it,
    /// and nothing steps raft in between).
    fn take_ready_snapshot(&mut self, in_ready: &Snapshot) -> Snapshot {
        let mut snapshot = Snapshot {
            metadata: in_ready.metadata.clone(),
            ..Default::default()
        };
        match self.raw.raft.raft_log.unstable.snapshot.as_mut() {
            Some(unstable) if unstable.get_metadata() == in_ready.get_metadata() => {
                snapshot.data = std::mem::take(&mut unstable.data);
            }
            _ => snapshot.data = in_ready.data.clone(),
        }
        snapshot
    }

    /// Installs a snapshot from the leader: the state machine first, then
    /// the snapshot file and its WAL marker. A snapshot that does not
    /// restore stops the loop with nothing persisted, so the next start
    /// begins from the previous state and fetches a snapshot again (the
    /// checks before `step` already refused envelopes that do not decode).
    fn install_snapshot(&mut self, snapshot: Snapshot) -> Result<(), NodeError> {
        let (index, snapshot_term) = (snapshot.get_metadata().index, snapshot.get_metadata().term);
        info!(node = self.id, index, "installing snapshot from the leader");
        let members = restore_state_machine(self.sm.as_mut(), &snapshot)?;
        let attributes = crate::codec::envelope_attributes(&snapshot.data);
        self.snapshots.on_installed(snapshot.data.len() as u64);
        self.raw.mut_store().install_snapshot(snapshot)?;
        self.membership
            .replace(members, attributes, index, self.outbox.as_ref());
        self.added = is_member(self.raw.store().conf_state(), self.id);
        self.applied = index;
        let term = snapshot_term;
        self.timeline
            .record(EventKind::SnapshotInstalled, index, term, self.clock.now());
        self.publish_status(true);
        Ok(())
    }

    fn apply(&mut self, entries: Vec<Entry>) {
        for entry in entries {
            if entry.index <= self.applied {
                continue;
            }
            assert_eq!(
                entry.index,
                self.applied + 1,
                "committed entries must be applied in order without gaps"
            );
            match entry.get_entry_type() {
                EntryType::EntryNormal if !entry.data.is_empty() => {
                    self.sm.apply(entry.index, &entry.data)
                }
                EntryType::EntryNormal => {
                    self.membership.on_marker(&entry.context, entry.index);
                    if !entry.context.is_empty() {
                        self.publish_status(true);
                    }
                }
                EntryType::EntryConfChange => self.apply_conf_change(&entry),
                EntryType::EntryConfChangeV2 => match ConfChangeV2::decode(entry.data.as_slice()) {
                    Ok(cc) => {
                        if let Err(e) = self.raw.apply_conf_change(&cc) {
                            warn!(index = entry.index, error = %e, "conf change v2 refused");
                        }
                    }
                    Err(e) => warn!(index = entry.index, error = %e, "bad conf change v2"),
                },
            }
            self.snapshots.on_applied(&entry);
            self.applied = entry.index;
            #[cfg(test)]
            self.trace.borrow_mut().push(Traced::Applied(entry.index));
        }
    }

    fn apply_conf_change(&mut self, entry: &Entry) {
        let cc = match ConfChange::decode(entry.data.as_slice()) {
            Ok(cc) => cc,
            Err(e) => {
                warn!(index = entry.index, error = %e, "conf change entry does not decode; skipped");
                return;
            }
        };
        let conf_state = match self.raw.apply_conf_change(&cc) {
            Ok(conf_state) => conf_state,
            Err(e) => {
                warn!(index = entry.index, error = %e, "conf change refused by raft");
                self.membership
                    .answer(cc.id, Err(RaftError::InvalidMembership(e.to_string())));
                return;
            }
        };
        self.raw.mut_store().set_conf_state(conf_state);
        match cc.get_change_type() {
            ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                let url = String::from_utf8_lossy(&cc.context).into_owned();
                info!(node = self.id, added = cc.node_id, %url, "member added");
                let kind = EventKind::MemberAdded { id: cc.node_id };
                self.timeline
                    .record(kind, entry.index, self.raw.raft.term, self.clock.now());
                self.membership.added(cc.node_id, url, self.outbox.as_ref());
                if cc.node_id == self.id {
                    self.added = true;
                }
            }
            ConfChangeType::RemoveNode => {
                info!(node = self.id, removed = cc.node_id, "member removed");
                let kind = EventKind::MemberRemoved { id: cc.node_id };
                self.timeline
                    .record(kind, entry.index, self.raw.raft.term, self.clock.now());
                self.membership
                    .removed(cc.node_id, entry.index, self.outbox.as_ref());
                if cc.node_id == self.id && self.removal_is_ours(entry.index) {
                    self.added = false;
                    self.stop = Some(StopReason::Removed);
                }
            }
        }
        // Status first: a caller answered reads it at once.
        self.publish_status(true);
        self.membership.answer(cc.id, Ok(()));
    }

    /// Whether the removal of this node's id applied at `index` removes
    /// this incarnation. Not when this incarnation was not added yet (a
    /// node re-added with a fresh disk replays the history of its id), nor
    /// when its log re-adds the id after `index` (a snapshot taken while an
    /// earlier incarnation was a member made it look added).
    fn removal_is_ours(&self, index: u64) -> bool {
        if !self.added {
            info!(
                node = self.id,
                index, "applied the removal of an earlier incarnation of this id; ignored"
            );
            return false;
        }
        let later =
            self.raw
                .raft
                .raft_log
                .entries(index + 1, None, raft::GetEntriesContext::empty(false));
        let readded = later.unwrap_or_default().iter().any(|e| {
            e.get_entry_type() == EntryType::EntryConfChange
                && ConfChange::decode(e.data.as_slice()).is_ok_and(|cc| {
                    cc.node_id == self.id
                        && matches!(
                            cc.get_change_type(),
                            ConfChangeType::AddNode | ConfChangeType::AddLearnerNode
                        )
                })
        });
        if readded {
            info!(
                node = self.id,
                index, "this id is added again later in the log; its removal at this index is not this incarnation's"
            );
        }
        !readded
    }

    /// Captures the state machine when a snapshot is due and hands the rest
    /// to the background writer (see `snapshots.rs`).
    fn maybe_snapshot(&mut self) -> Result<(), NodeError> {
        let store = self.raw.store();
        if !self
            .snapshots
            .due(self.applied, store.snapshot_index(), || {
                store.take_snapshot_wanted()
            })
        {
            return Ok(());
        }
        let index = self.applied;
        let term = raft::Storage::term(store, index)
            .map_err(|e| NodeError::Corrupt(format!("no term for applied index {index}: {e}")))?;
        self.snapshots.start(Capture {
            index,
            term,
            conf_state: store.conf_state().clone(),
            members: self.membership.members().clone(),
            attributes: self.membership.attribute_records(),
            job: self.sm.snapshot(),
            sink: store.snapshot_sink(),
            clock: Arc::clone(&self.clock),
        });
        Ok(())
    }

    /// Second half of a local snapshot: WAL marker, then log compaction
    /// keeping `catch_up_entries` for slow followers.
    fn on_snapshot_written(&mut self, outcome: SnapshotOutcome) -> Result<(), NodeError> {
        let snapshot_index = self.raw.store().snapshot_index();
        let Some((snapshot, compact_to)) = self.snapshots.on_written(outcome, snapshot_index)
        else {
            return Ok(());
        };
        let (index, term) = (snapshot.get_metadata().index, snapshot.get_metadata().term);
        self.raw.mut_store().record_local_snapshot(snapshot)?;
        let removed = self.raw.mut_store().compact(compact_to)?;
        self.timeline
            .record(EventKind::SnapshotTaken, index, term, self.clock.now());
        // Freeing a million entries takes tens of milliseconds.
        if removed.len() > 1024 {
            let _ = std::thread::Builder::new()
                .name(format!("compact-{}", self.id))
                .spawn(move || drop(removed));
        }
        info!(
            node = self.id,
            index,
            term,
            compacted_to = compact_to,
            "snapshot taken"
        );
        Ok(())
    }

    /// The entry at `index` if it is committed and still in the log.
    pub(crate) fn committed_entry(&self, index: u64) -> Option<crate::CommittedEntry> {
        if index > self.raw.raft.raft_log.committed {
            return None;
        }
        let entries = raft::Storage::entries(
            self.raw.store(),
            index,
            index + 1,
            None,
            raft::GetEntriesContext::empty(false),
        )
        .ok()?;
        let entry = entries.into_iter().next()?;
        Some(crate::CommittedEntry {
            index,
            term: entry.term,
            data: entry.data,
        })
    }

    pub(crate) fn publish_status(&mut self, members_changed: bool) {
        let raft = &self.raw.raft;
        let mut status = self.status.write();
        let leader_id = (raft.leader_id != raft::INVALID_ID).then_some(raft.leader_id);
        crate::observer::leader_seen(&self.config.observer, status.leader_id, leader_id);
        status.leader_id = leader_id;
        status.role = match raft.state {
            StateRole::Follower => Role::Follower,
            StateRole::PreCandidate => Role::PreCandidate,
            StateRole::Candidate => Role::Candidate,
            StateRole::Leader => Role::Leader,
        };
        status.term = raft.term;
        status.commit_index = raft.raft_log.committed;
        status.applied_index = self.applied;
        status.snapshot_index = self.raw.store().snapshot_index();
        status.last_index = self.raw.store().last();
        self.timeline.publish(raft, self.clock.now(), &mut status);
        if members_changed {
            status.members = self.membership_status();
        }
    }

    /// Voters and learners with their peer URLs and published attributes,
    /// by id.
    fn membership_status(&self) -> Vec<Member> {
        let conf_state = self.raw.store().conf_state();
        let mut members: Vec<Member> = conf_state
            .voters
            .iter()
            .map(|id| (id, false))
            .chain(conf_state.learners.iter().map(|id| (id, true)))
            .map(|(id, is_learner)| {
                let attributes = self.membership.attributes().get(id);
                Member {
                    id: *id,
                    peer_url: self
                        .membership
                        .members()
                        .get(id)
                        .cloned()
                        .unwrap_or_default(),
                    is_learner,
                    name: attributes.map(|a| a.name.clone()).unwrap_or_default(),
                    client_urls: attributes
                        .map(|a| a.client_urls.clone())
                        .unwrap_or_default(),
                }
            })
            .collect();
        members.sort_by_key(|m| m.id);
        members
    }

    fn fail_everything(&mut self, error: RaftError) {
        for answer in std::mem::take(&mut self.proposals).answers {
            match answer {
                ProposalAnswer::Reply(reply) => {
                    let _ = reply.send(Err(error.clone()));
                }
                ProposalAnswer::Then(then) => then(Err(error.clone())),
            }
        }
        self.reads.fail_all(error.clone());
        self.membership.fail(error.clone());
        while let Ok(request) = self.requests.try_recv() {
            match request {
                Request::Propose { reply, .. }
                | Request::Read { reply }
                | Request::ChangeMembership { reply, .. } => {
                    let _ = reply.send(Err(error.clone()));
                }
                Request::ProposeThen { then, .. } => then(Err(error.clone())),
            }
        }
    }
}

/// Whether `id` is a voter or learner of `conf_state`.
fn is_member(conf_state: &raft::eraftpb::ConfState, id: u64) -> bool {
    conf_state.voters.contains(&id) || conf_state.learners.contains(&id)
}
