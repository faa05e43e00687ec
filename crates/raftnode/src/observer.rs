//! What the node tells an observer (metrics) about events no status field
//! holds: leader changes, refused proposals, WAL fsync and snapshot save
//! durations.
//!
//! The observer is optional ([`NodeConfig::observer`](crate::NodeConfig),
//! `None` by default): without one nothing is timed or counted, so the
//! simulation and the tests run as before. raftnode knows no metrics
//! library; the binary passes an implementation from the API layer.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

/// Receives the node's events. Every method is called on a hot path (the
/// Raft loop, the WAL writer, the snapshot writer): keep them cheap and
/// non-blocking (an atomic add, a histogram observe).
pub trait NodeObserver: Debug + Send + Sync + 'static {
    /// This node saw a new leader (a change from none or another member to
    /// this one), as etcd counts `leader_changes_seen_total`.
    fn leader_changed(&self, _leader_id: u64) {}
    /// A proposal was refused before it reached the log (no leader, raft
    /// dropped it, the request queue was full, the node stopped, or it timed
    /// out in the queue).
    fn proposal_failed(&self) {}
    /// One WAL data fsync took `elapsed`.
    fn wal_fsync(&self, _elapsed: Duration) {}
    /// A snapshot this node took was written and fsynced in `elapsed`
    /// (the file save, after encoding).
    fn snapshot_saved(&self, _elapsed: Duration) {}
}

/// The observer field of [`NodeConfig`](crate::NodeConfig).
pub type SharedObserver = Option<Arc<dyn NodeObserver>>;

/// The WAL's fsync hook that reports to `observer`.
pub(crate) fn wal_sync_observer(observer: &Arc<dyn NodeObserver>) -> wal::SyncObserver {
    let observer = Arc::clone(observer);
    Arc::new(move |elapsed| observer.wal_fsync(elapsed))
}

/// Tells `observer` of a new leader when the known leader went from
/// `before` to `now` (a change to none is not a leader change).
pub(crate) fn leader_seen(observer: &SharedObserver, before: Option<u64>, now: Option<u64>) {
    if let (Some(observer), Some(leader_id)) = (observer, now) {
        if before != now {
            observer.leader_changed(leader_id);
        }
    }
}
