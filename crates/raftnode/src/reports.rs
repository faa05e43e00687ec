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
    /// The peer answered 410 Gone: it applied this node's removal.
    pub removed_us: bool,
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
        reports.record(3, |r| r.removed_us = true);
        assert_eq!(rings.len(), 1, "one pending wake-up");
        let taken = reports.take();
        assert_eq!(
            taken[&2],
            PeerReport {
                unreachable: true,
                snapshot: Some(raft::SnapshotStatus::Finish),
                removed_us: false
            }
        );
        assert!(taken[&3].removed_us);
        assert!(reports.take().is_empty());
    }
}
