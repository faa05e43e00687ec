//! Linearizable read barriers (ReadIndex), batched.
//!
//! Every read that arrives during one turn of the Raft loop shares one
//! ReadIndex request. A batch moves through three stages:
//! new → issued (waiting for raft's `ReadState`) → confirmed (waiting for the
//! state machine to apply up to the read index) → answered.
//!
//! raft-rs silently drops a ReadIndex request when there is no leader or the
//! leader has not committed an entry in its term, so issued batches are
//! re-issued every few ticks and answered with a timeout at their deadline.
//!
//! A ReadIndex context is (node id, boot nonce, sequence number): a leader's
//! late answer to a request of a previous incarnation of this node (whose
//! sequence numbers also started at 1) or of another node confirms nothing
//! here; with a bare counter it confirmed a new batch at an older index.
//!
//! Every issue of a batch, re-issues included, gets a context never sent
//! before. raft-rs forgets a context once it has answered it; the same
//! context sent again (a follower's retry forwarded to the leader) is queued
//! anew behind newer requests, at the leader's commit index of that moment,
//! and a late heartbeat ack of the first send then confirms it at once —
//! together with every newer request queued before it, a read that arrived
//! after a newer leader committed included. With fresh contexts a late ack
//! names a context the leader no longer holds and confirms nothing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use raft::ReadState;
use tokio::sync::oneshot;

use crate::RaftError;

pub(crate) type Reply = oneshot::Sender<Result<(), RaftError>>;

struct Issued {
    replies: Vec<Reply>,
    deadline: Instant,
    last_sent: Instant,
    /// Every context this batch was issued under.
    seqs: Vec<u64>,
}

/// Read barriers in their three stages.
pub(crate) struct ReadTracker {
    new: Vec<Reply>,
    /// Issued batches by batch number.
    issued: BTreeMap<u64, Issued>,
    /// Context sequence number → batch number.
    batch_of: BTreeMap<u64, u64>,
    next_batch: u64,
    confirmed: Vec<(u64, Vec<Reply>)>,
    /// This node's id and this process's boot nonce, in every context.
    node_id: u64,
    boot_nonce: u64,
    next_seq: u64,
    timeout: Duration,
    retry_after: Duration,
}

impl ReadTracker {
    pub(crate) fn new(
        node_id: u64,
        boot_nonce: u64,
        timeout: Duration,
        retry_after: Duration,
    ) -> ReadTracker {
        ReadTracker {
            new: Vec::new(),
            issued: BTreeMap::new(),
            batch_of: BTreeMap::new(),
            next_batch: 1,
            confirmed: Vec::new(),
            node_id,
            boot_nonce,
            next_seq: 1,
            timeout,
            retry_after,
        }
    }

    /// Queues a read for the next batch.
    pub(crate) fn push(&mut self, reply: Reply) {
        self.new.push(reply);
    }

    /// Issues one ReadIndex for everything queued since the last call, using
    /// `read_index` (raft's `RawNode::read_index`). Without a leader the
    /// reads fail at once with `NoLeader`.
    pub(crate) fn flush(
        &mut self,
        has_leader: bool,
        now: Instant,
        mut read_index: impl FnMut(Vec<u8>),
    ) {
        if self.new.is_empty() {
            return;
        }
        let replies = std::mem::take(&mut self.new);
        if !has_leader {
            answer(replies, Err(RaftError::NoLeader));
            return;
        }
        let batch = self.next_batch;
        self.next_batch += 1;
        let seq = self.fresh_seq(batch);
        read_index(self.context(seq));
        self.issued.insert(
            batch,
            Issued {
                replies,
                deadline: now + self.timeout,
                last_sent: now,
                seqs: vec![seq],
            },
        );
    }

    /// A sequence number never used before, recorded as one of `batch`'s.
    fn fresh_seq(&mut self, batch: u64) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.batch_of.insert(seq, batch);
        seq
    }

    /// Removes `batch` and forgets its contexts.
    fn take_issued(&mut self, batch: u64) -> Option<Issued> {
        let issued = self.issued.remove(&batch)?;
        for seq in &issued.seqs {
            self.batch_of.remove(seq);
        }
        Some(issued)
    }

    /// Moves batches whose ReadIndex came back to the confirmed stage.
    pub(crate) fn on_read_states(&mut self, states: Vec<ReadState>) {
        for state in states {
            let Some(seq) = self.sequence_of(&state.request_ctx) else {
                continue;
            };
            // Any context of the batch will do: each was sent after the
            // batch's reads arrived.
            let Some(&batch) = self.batch_of.get(&seq) else {
                continue;
            };
            if let Some(issued) = self.take_issued(batch) {
                self.confirmed.push((state.index, issued.replies));
            }
        }
    }

    /// The context of batch `seq`: node id, boot nonce, `seq` (big-endian).
    fn context(&self, seq: u64) -> Vec<u8> {
        [self.node_id, self.boot_nonce, seq]
            .iter()
            .flat_map(|n| n.to_be_bytes())
            .collect()
    }

    /// The sequence number in `ctx` if this incarnation of this node made it.
    fn sequence_of(&self, ctx: &[u8]) -> Option<u64> {
        let bytes = <[u8; 24]>::try_from(ctx).ok()?;
        let field =
            |i: usize| u64::from_be_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap_or_default());
        (field(0) == self.node_id && field(1) == self.boot_nonce).then(|| field(2))
    }

    /// Answers every confirmed batch whose read index is applied.
    pub(crate) fn on_applied(&mut self, applied_index: u64) {
        if self.confirmed.is_empty() {
            return;
        }
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.confirmed)
            .into_iter()
            .partition(|(index, _)| *index <= applied_index);
        self.confirmed = waiting;
        for (_, replies) in done {
            answer(replies, Ok(()));
        }
    }

    /// Times out expired batches and re-issues the ones raft may have dropped.
    pub(crate) fn on_timer(&mut self, now: Instant, mut read_index: impl FnMut(Vec<u8>)) {
        let expired: Vec<u64> = self
            .issued
            .iter()
            .filter(|(_, issued)| now >= issued.deadline)
            .map(|(batch, _)| *batch)
            .collect();
        for batch in expired {
            if let Some(issued) = self.take_issued(batch) {
                answer(issued.replies, Err(self.timeout_error()));
            }
        }
        let resend: Vec<u64> = self
            .issued
            .iter()
            .filter(|(_, issued)| now.duration_since(issued.last_sent) >= self.retry_after)
            .map(|(batch, _)| *batch)
            .collect();
        for batch in resend {
            // A fresh context: never send one context twice (module docs).
            let seq = self.fresh_seq(batch);
            if let Some(issued) = self.issued.get_mut(&batch) {
                issued.last_sent = now;
                issued.seqs.push(seq);
            }
            read_index(self.context(seq));
        }
    }

    /// Fails every read (the node is stopping).
    pub(crate) fn fail_all(&mut self, error: RaftError) {
        answer(std::mem::take(&mut self.new), Err(error.clone()));
        self.batch_of.clear();
        for (_, issued) in std::mem::take(&mut self.issued) {
            answer(issued.replies, Err(error.clone()));
        }
        for (_, replies) in std::mem::take(&mut self.confirmed) {
            answer(replies, Err(error.clone()));
        }
    }

    fn timeout_error(&self) -> RaftError {
        RaftError::Timeout {
            timeout_ms: self.timeout.as_millis() as u64,
        }
    }
}

fn answer(replies: Vec<Reply>, result: Result<(), RaftError>) {
    for reply in replies {
        // The caller may have given up waiting; that is fine.
        let _ = reply.send(result.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker(node: u64, nonce: u64, (timeout, retry): (Duration, Duration)) -> ReadTracker {
        ReadTracker::new(node, nonce, timeout, retry)
    }

    fn read(tracker: &mut ReadTracker) -> oneshot::Receiver<Result<(), RaftError>> {
        let (tx, rx) = oneshot::channel();
        tracker.push(tx);
        rx
    }

    #[test]
    fn one_read_index_per_batch_answered_once_applied() {
        let mut tracker =
            ReadTracker::new(1, 7, Duration::from_secs(5), Duration::from_millis(200));
        let mut a = read(&mut tracker);
        let mut b = read(&mut tracker);
        let mut sent = Vec::new();
        tracker.flush(true, Instant::now(), |ctx| sent.push(ctx));
        assert_eq!(sent.len(), 1, "two reads share one ReadIndex");
        tracker.on_read_states(vec![ReadState {
            index: 7,
            request_ctx: sent[0].clone(),
        }]);
        tracker.on_applied(6);
        assert!(
            a.try_recv().is_err(),
            "not answered before index 7 is applied"
        );
        tracker.on_applied(7);
        assert_eq!(a.try_recv().unwrap(), Ok(()));
        assert_eq!(b.try_recv().unwrap(), Ok(()));
    }

    #[test]
    fn no_leader_fails_fast_and_expired_reads_time_out() {
        let mut tracker =
            ReadTracker::new(1, 7, Duration::from_millis(10), Duration::from_millis(1));
        let mut a = read(&mut tracker);
        tracker.flush(false, Instant::now(), |_| {
            panic!("no ReadIndex without a leader")
        });
        assert_eq!(a.try_recv().unwrap(), Err(RaftError::NoLeader));

        let mut b = read(&mut tracker);
        let mut sent = 0;
        tracker.flush(true, Instant::now(), |_| sent += 1);
        let later = Instant::now() + Duration::from_millis(5);
        tracker.on_timer(later, |_| sent += 1);
        assert_eq!(sent, 2, "an unanswered ReadIndex is re-issued");
        tracker.on_timer(Instant::now() + Duration::from_secs(1), |_| {});
        assert!(matches!(
            b.try_recv().unwrap(),
            Err(RaftError::Timeout { .. })
        ));
    }

    #[test]
    fn a_reply_to_a_previous_incarnation_confirms_nothing() {
        let timeouts = (Duration::from_secs(5), Duration::from_secs(1));
        let mut before_restart = tracker(1, 0x1111, timeouts);
        let mut old_ctx = Vec::new();
        before_restart.push(oneshot::channel().0);
        before_restart.flush(true, Instant::now(), |ctx| old_ctx = ctx);

        let mut after_restart = tracker(1, 0x2222, timeouts);
        let mut read = read(&mut after_restart);
        after_restart.flush(true, Instant::now(), |_| {});
        // The leader's late answer to the old request, at an old index.
        after_restart.on_read_states(vec![ReadState {
            index: 3,
            request_ctx: old_ctx,
        }]);
        after_restart.on_applied(3);
        assert!(
            read.try_recv().is_err(),
            "a new read was confirmed by an answer to another request"
        );
    }

    #[test]
    fn a_re_issue_never_repeats_a_context_and_any_of_them_confirms() {
        let mut tracker = ReadTracker::new(3, 7, Duration::from_secs(60), Duration::from_millis(1));
        let mut a = read(&mut tracker);
        let mut sent = Vec::new();
        tracker.flush(true, Instant::now(), |ctx| sent.push(ctx));
        let later = Instant::now() + Duration::from_millis(5);
        tracker.on_timer(later, |ctx| sent.push(ctx));
        tracker.on_timer(later + Duration::from_millis(5), |ctx| sent.push(ctx));
        assert_eq!(sent.len(), 3);
        // The leader forgets a context once answered; the same context sent
        // again is queued behind newer requests and confirmed by a late ack
        // of the first send, newer requests with it.
        assert_ne!(sent[0], sent[1], "a retry repeated a context");
        assert_ne!(sent[1], sent[2], "a retry repeated a context");
        assert_ne!(sent[0], sent[2], "a retry repeated a context");
        // An answer to the first send still confirms the batch, and the
        // batch's other contexts are forgotten with it.
        tracker.on_read_states(vec![ReadState {
            index: 4,
            request_ctx: sent[0].clone(),
        }]);
        tracker.on_applied(4);
        assert_eq!(a.try_recv().unwrap(), Ok(()));
        assert!(tracker.issued.is_empty() && tracker.batch_of.is_empty());
    }

    #[test]
    fn unknown_read_states_are_ignored() {
        let mut tracker = ReadTracker::new(1, 7, Duration::from_secs(1), Duration::from_secs(1));
        tracker.on_read_states(vec![ReadState {
            index: 3,
            request_ctx: vec![1, 2],
        }]);
        tracker.on_applied(10);
        assert!(tracker.confirmed.is_empty());
    }
}

/// The stale confirmation end to end, with raft-rs leaders and followers
/// (in-memory storage, messages routed by hand).
#[cfg(test)]
mod raft_tests {
    use super::*;
    use raft::eraftpb::{ConfState, Message, MessageType};
    use raft::storage::MemStorage;
    use raft::RawNode;
    use std::collections::VecDeque;

    type Node = RawNode<MemStorage>;

    fn node(id: u64) -> Node {
        let store = MemStorage::new_with_conf_state(ConfState::from((vec![1, 2, 3], vec![])));
        let config = raft::Config {
            id,
            election_tick: 10,
            heartbeat_tick: 1,
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        };
        RawNode::new(&config, store, &crate::logger::raft_logger(id)).unwrap()
    }

    /// Persists and applies one Ready; returns its messages and read states.
    fn ready(raw: &mut Node) -> (Vec<Message>, Vec<ReadState>) {
        if !raw.has_ready() {
            return (Vec::new(), Vec::new());
        }
        let mut ready = raw.ready();
        let mut msgs = ready.take_messages();
        let states = ready.take_read_states();
        let store = raw.raft.raft_log.store.clone();
        store.wl().append(ready.entries()).unwrap();
        if let Some(hs) = ready.hs() {
            store.wl().set_hardstate(hs.clone());
        }
        msgs.extend(ready.take_persisted_messages());
        let mut light = raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            store.wl().mut_hard_state().commit = commit;
        }
        msgs.extend(light.take_messages());
        raw.advance_apply();
        (msgs, states)
    }

    /// Delivers messages among `nodes` until none are left.
    fn pump(nodes: &mut [Node; 3], mut queue: VecDeque<Message>) {
        loop {
            for raw in nodes.iter_mut() {
                queue.extend(ready(raw).0);
            }
            let Some(msg) = queue.pop_front() else { break };
            let _ = nodes[msg.to as usize - 1].step(msg);
        }
    }

    #[test]
    fn a_late_ack_never_confirms_a_read_that_arrived_after_it_was_sent() {
        let mut nodes = [node(1), node(2), node(3)];
        nodes[0].campaign().unwrap();
        pump(&mut nodes, VecDeque::new());
        assert_eq!(nodes[0].raft.state, raft::StateRole::Leader);
        let timeouts = (Duration::from_secs(60), Duration::from_millis(1));
        let mut on_1 = ReadTracker::new(1, 11, timeouts.0, timeouts.1);
        let mut on_3 = ReadTracker::new(3, 33, timeouts.0, timeouts.1);

        // Node 3 forwards a read to leader 1; 1 asks 2 and 3, who answer.
        on_3.push(oneshot::channel().0);
        let raw3 = &mut nodes[2];
        on_3.flush(true, Instant::now(), |ctx| raw3.read_index(ctx));
        let forwarded = ready(&mut nodes[2]).0;
        let mut heartbeats = Vec::new();
        for m in forwarded {
            nodes[0].step(m).unwrap();
        }
        heartbeats.extend(ready(&mut nodes[0]).0);
        let mut acks = Vec::new();
        for m in heartbeats {
            assert_eq!(m.get_msg_type(), MessageType::MsgHeartbeat);
            let to = m.to as usize - 1;
            nodes[to].step(m).unwrap();
            acks.extend(ready(&mut nodes[to]).0);
        }
        // Node 3 retries before hearing back (its retry is in flight).
        let raw3 = &mut nodes[2];
        on_3.on_timer(Instant::now() + Duration::from_millis(5), |ctx| {
            raw3.read_index(ctx)
        });
        let retry = ready(&mut nodes[2]).0;
        assert!(!retry.is_empty());

        // Leader 1 (resuming from a pause, say) takes the first ack: the
        // forwarded read is confirmed and forgotten.
        let (from_2, from_3): (Vec<_>, Vec<_>) = acks.into_iter().partition(|m| m.from == 2);
        for m in from_3 {
            nodes[0].step(m).unwrap();
        }
        ready(&mut nodes[0]);
        // A read arrives at leader 1 and is issued.
        let mut late = read(&mut on_1);
        let raw1 = &mut nodes[0];
        on_1.flush(true, Instant::now(), |ctx| raw1.read_index(ctx));
        // Then node 3's retry and 2's ack of the first send, both sent
        // before the read arrived, reach leader 1.
        for m in retry.into_iter().chain(from_2) {
            nodes[0].step(m).unwrap();
        }
        let (_, states) = ready(&mut nodes[0]);
        on_1.on_read_states(states);
        on_1.on_applied(nodes[0].raft.raft_log.applied);
        assert!(
            late.try_recv().is_err(),
            "a read was confirmed by acks sent before it arrived"
        );
    }

    fn read(tracker: &mut ReadTracker) -> oneshot::Receiver<Result<(), RaftError>> {
        let (tx, rx) = oneshot::channel();
        tracker.push(tx);
        rx
    }
}
