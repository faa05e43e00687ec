//! Reports from the transport (unreachable peer, snapshot outcome, "you
//! were removed"), on a path of their own.
//!
//! Frames go through a bounded queue that drops them when full (the peer
//! gets 503 and Raft resends). A report has no resend: raft-rs keeps a
//! follower paused in Snapshot state until it hears how its snapshot went,
//! so a dropped report stalls that follower forever. Reports therefore wait
//! in a map with at most one pending report per peer (newer facts replace
//! older ones) and ring a one-slot doorbell that wakes the Raft loop.

use std::collections::BTreeMap;

use crossbeam_channel::{bounded, Receiver, Sender};
use parking_lot::Mutex;

/// What is pending about one peer.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PeerReport {
    /// The peer could not be reached.
    pub unreachable: bool,
    /// How the latest snapshot sent to it ended (raft-rs has at most one
    /// in flight per peer, so the newest outcome is the one it waits for).
    pub snapshot: Option<raft::SnapshotStatus>,
    /// The peer answered 410 Gone: it applied this node's removal, at this
    /// log index when it said so (`Some(None)`: it did not say).
    pub removed_us: Option<Option<u64>>,
}

impl PeerReport {
    /// Merges a 410 into the pending report. The strongest claim wins: a
    /// removal without an index (the loop cannot rule it out) over one with
    /// an index, and a later index over an earlier one (the loop ignores a
    /// removal it has applied past, so the latest is the one that matters).
    pub(crate) fn merge_removed_us(&mut self, removed_at_index: Option<u64>) {
        self.removed_us = Some(match (self.removed_us, removed_at_index) {
            (Some(None), _) | (_, None) => None,
            (Some(Some(a)), Some(b)) => Some(a.max(b)),
            (None, Some(b)) => Some(b),
        });
    }
}

/// The transport's side: records reports and wakes the loop.
pub(crate) struct Reports {
    pending: Mutex<BTreeMap<u64, PeerReport>>,
    doorbell: Sender<()>,
}

impl Reports {
    /// The reports and the doorbell the Raft loop waits on.
    pub(crate) fn new() -> (Reports, Receiver<()>) {
        let (doorbell, rings) = bounded(1);
        let reports = Reports {
            pending: Mutex::new(BTreeMap::new()),
            doorbell,
        };
        (reports, rings)
    }

    /// Merges `update` into `peer`'s pending report and wakes the loop.
    pub(crate) fn record(&self, peer: u64, update: impl FnOnce(&mut PeerReport)) {
        update(self.pending.lock().entry(peer).or_default());
        // Full means a wake-up is already pending: nothing is lost.
        let _ = self.doorbell.try_send(());
    }

    /// Takes every pending report (the loop calls this each turn).
    pub(crate) fn take(&self) -> BTreeMap<u64, PeerReport> {
        std::mem::take(&mut *self.pending.lock())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_coalesce_per_peer_and_ring_once() {
        let (reports, rings) = Reports::new();
        reports.record(2, |r| r.unreachable = true);
        reports.record(2, |r| r.snapshot = Some(raft::SnapshotStatus::Failure));
        reports.record(2, |r| r.snapshot = Some(raft::SnapshotStatus::Finish));
        reports.record(3, |r| r.merge_removed_us(Some(7)));
        reports.record(3, |r| r.merge_removed_us(Some(5)));
        reports.record(4, |r| r.merge_removed_us(Some(9)));
        reports.record(4, |r| r.merge_removed_us(None));
        assert_eq!(rings.len(), 1, "one pending wake-up");
        let taken = reports.take();
        assert_eq!(
            taken[&2],
            PeerReport {
                unreachable: true,
                snapshot: Some(raft::SnapshotStatus::Finish),
                removed_us: None
            }
        );
        assert_eq!(
            taken[&3].removed_us,
            Some(Some(7)),
            "the latest removal index"
        );
        assert_eq!(
            taken[&4].removed_us,
            Some(None),
            "an unindexed removal wins"
        );
        assert!(reports.take().is_empty());
    }
}
