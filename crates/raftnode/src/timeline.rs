//! What a live view of the cluster needs from the Raft loop beyond the
//! indexes of [`Status`]: the leader's view of each member's replication
//! progress, and a bounded ring of recent events (leader changes,
//! membership changes, snapshots).
//!
//! The loop calls in at three kinds of places, each one line: when it
//! publishes its status ([`Timeline::publish`]), when it applies a
//! membership change and when a snapshot is taken or installed
//! ([`Timeline::record`]). Times come from the loop's [`crate::Clock`], so a
//! simulation stays deterministic; turning an `Instant` into wall time is
//! left to whoever shows it.

use std::collections::VecDeque;
use std::time::Instant;

use crate::Status;

/// Most events a node keeps (older ones are dropped first).
pub const MAX_EVENTS: usize = 64;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// This node learned of a new leader (`leader`) in the event's term.
    LeaderChanged {
        /// The new leader's id.
        leader: u64,
    },
    /// A member was added (applied here at the event's index).
    MemberAdded {
        /// The added member.
        id: u64,
    },
    /// A member was removed (applied here at the event's index).
    MemberRemoved {
        /// The removed member.
        id: u64,
    },
    /// This node wrote a snapshot of its state at the event's index.
    SnapshotTaken,
    /// This node installed a snapshot received from the leader.
    SnapshotInstalled,
}

/// One event of a node's timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The log index it concerns (the commit index for a leader change).
    pub index: u64,
    /// The term it happened in.
    pub term: u64,
    /// When, by the loop's clock.
    pub at: Instant,
}

/// The leader's view of one member's replication (empty on followers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The member.
    pub id: u64,
    /// Highest log index known to be replicated on it.
    pub matched: u64,
    /// Next index the leader sends it.
    pub next: u64,
}

/// The loop's event ring and the leader it last saw.
#[derive(Debug, Default)]
pub(crate) struct Timeline {
    events: VecDeque<Event>,
    /// Whether `events` changed since the last publish.
    changed: bool,
    /// The leader and term last published.
    leader: Option<(u64, u64)>,
}

impl Timeline {
    /// Adds an event, dropping the oldest beyond [`MAX_EVENTS`].
    pub(crate) fn record(&mut self, kind: EventKind, index: u64, term: u64, at: Instant) {
        if self.events.len() == MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(Event {
            kind,
            index,
            term,
            at,
        });
        self.changed = true;
    }

    /// Records a leader change if `raft` knows of a leader other than the
    /// last one seen (or the same one in a new term), then copies progress
    /// and, if they changed, the events into `status`.
    pub(crate) fn publish<S: raft::Storage>(
        &mut self,
        raft: &raft::Raft<S>,
        at: Instant,
        status: &mut Status,
    ) {
        if raft.leader_id != raft::INVALID_ID && self.leader != Some((raft.leader_id, raft.term)) {
            self.leader = Some((raft.leader_id, raft.term));
            let leader = raft.leader_id;
            self.record(
                EventKind::LeaderChanged { leader },
                raft.raft_log.committed,
                raft.term,
                at,
            );
        }
        status.progress.clear();
        if raft.state == raft::StateRole::Leader {
            status
                .progress
                .extend(raft.prs().iter().map(|(id, progress)| Progress {
                    id: *id,
                    matched: progress.matched,
                    next: progress.next_idx,
                }));
            status.progress.sort_unstable_by_key(|progress| progress.id);
        }
        if std::mem::take(&mut self.changed) {
            status.events.clear();
            status.events.extend(self.events.iter().copied());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest_events() {
        let mut timeline = Timeline::default();
        let at = Instant::now();
        for index in 0..(MAX_EVENTS as u64 + 10) {
            timeline.record(EventKind::SnapshotTaken, index, 1, at);
        }
        assert_eq!(timeline.events.len(), MAX_EVENTS);
        assert_eq!(timeline.events.front().map(|e| e.index), Some(10));
        assert_eq!(
            timeline.events.back().map(|e| e.index),
            Some(MAX_EVENTS as u64 + 9)
        );
    }
}
