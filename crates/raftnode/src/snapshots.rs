//! Snapshot scheduling: when the loop takes a snapshot, the background
//! writer that encodes and saves it, and what comes back to the loop.
//!
//! A snapshot is due after `snapshot_count` applied entries *and* once the
//! log written since the previous one is `snapshot_log_percent` of that
//! snapshot's size (or when raft-rs asked for a newer one for a follower).
//! The loop only captures the state machine (`StateMachine::snapshot`, cheap);
//! a background thread runs the job, wraps the bytes in the envelope and
//! saves the file through the log's `SnapshotSink`; the outcome comes back
//! on a channel the loop waits on, and the loop then records the marker and
//! compacts. One snapshot is in flight at a time.

use std::collections::BTreeMap;
use std::sync::Arc;

use crossbeam_channel::{bounded, Receiver, Sender};
use raft::eraftpb::{ConfState, Entry, Snapshot};
use tracing::{debug, error, warn};

use crate::clock::Clock;
use crate::disk::envelope;
use crate::durable::SnapshotSink;
use crate::{NodeConfig, SnapshotJob};

/// Bytes a log entry costs beyond its payload (index, term, framing), for
/// the trigger.
const ENTRY_OVERHEAD_BYTES: u64 = 24;

/// A snapshot file written (and fsynced) off the loop, or why not.
pub(crate) type SnapshotOutcome = Result<Snapshot, String>;

/// What the loop captures for one snapshot.
pub(crate) struct Capture {
    pub index: u64,
    pub term: u64,
    pub conf_state: ConfState,
    pub members: BTreeMap<u64, String>,
    pub attributes: Vec<crate::codec::AttributesRecord>,
    pub job: SnapshotJob,
    pub sink: Arc<dyn SnapshotSink>,
    pub clock: Arc<dyn Clock>,
}

/// Where the snapshot writer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriterThread {
    /// A background thread: the loop never waits for a snapshot
    /// (production).
    Background,
    /// The caller's thread, inside the turn that captures it; the outcome
    /// is handled at the next turn, as a background one would be. A
    /// simulation stays on one thread and deterministic.
    Inline,
}

/// When to snapshot, and the one snapshot in flight.
pub(crate) struct SnapshotSchedule {
    node: u64,
    writer: WriterThread,
    snapshot_count: u64,
    log_percent: u64,
    catch_up_entries: u64,
    /// Written snapshots come back here.
    done: (Sender<SnapshotOutcome>, Receiver<SnapshotOutcome>),
    in_flight: bool,
    /// Log bytes applied since the last snapshot was captured.
    log_bytes_since: u64,
    /// Size of the newest snapshot's data.
    last_bytes: u64,
    /// Told how long each snapshot file save took.
    observer: crate::SharedObserver,
}

impl SnapshotSchedule {
    pub(crate) fn new(config: &NodeConfig, writer: WriterThread) -> SnapshotSchedule {
        SnapshotSchedule {
            node: config.id,
            writer,
            snapshot_count: config.snapshot_count,
            log_percent: config.snapshot_log_percent,
            catch_up_entries: config.catch_up_entries,
            done: bounded(1),
            in_flight: false,
            log_bytes_since: 0,
            last_bytes: 0,
            observer: config.observer.clone(),
        }
    }

    /// Where written snapshots arrive (the loop waits on it).
    pub(crate) fn written(&self) -> &Receiver<SnapshotOutcome> {
        &self.done.1
    }

    /// Counts an applied entry towards the trigger.
    pub(crate) fn on_applied(&mut self, entry: &Entry) {
        self.log_bytes_since += entry.data.len() as u64 + ENTRY_OVERHEAD_BYTES;
    }

    /// A leader's snapshot of `bytes` was installed: it is the newest.
    pub(crate) fn on_installed(&mut self, bytes: u64) {
        self.last_bytes = bytes;
        self.log_bytes_since = 0;
    }

    /// Whether to capture a snapshot at `applied` now. `wanted` (raft-rs
    /// asked for a newer snapshot) is consulted only when the trigger alone
    /// does not fire, as reading it clears it.
    pub(crate) fn due(
        &self,
        applied: u64,
        snapshot_index: u64,
        wanted: impl FnOnce() -> bool,
    ) -> bool {
        if self.in_flight || applied <= snapshot_index {
            return false;
        }
        snapshot_due(SnapshotTrigger {
            entries_since: applied - snapshot_index,
            snapshot_count: self.snapshot_count,
            log_bytes_since: self.log_bytes_since,
            last_snapshot_bytes: self.last_bytes,
            log_percent: self.log_percent,
        }) || wanted()
    }

    /// Hands the encoding and the file write to a background thread, so the
    /// loop never waits for a snapshot.
    pub(crate) fn start(&mut self, capture: Capture) {
        let Capture {
            index,
            term,
            conf_state,
            members,
            attributes,
            job,
            sink,
            clock,
        } = capture;
        let done = self.done.0.clone();
        self.log_bytes_since = 0;
        let started = clock.now();
        let observer = self.observer.clone();
        let write = move || {
            let mut snapshot = Snapshot {
                data: envelope(&members, attributes, job()),
                ..Default::default()
            };
            let meta = snapshot.mut_metadata();
            meta.index = index;
            meta.term = term;
            meta.set_conf_state(conf_state);
            let save_started = clock.now();
            let outcome = sink
                .save(&snapshot)
                .map(|()| snapshot)
                .map_err(|e| e.to_string());
            if let (Some(observer), Ok(_)) = (&observer, &outcome) {
                observer.snapshot_saved(clock.now().duration_since(save_started));
            }
            debug!(
                index,
                elapsed_ms = clock.now().duration_since(started).as_millis() as u64,
                "snapshot written"
            );
            // One snapshot in flight: the one-slot channel is empty.
            let _ = done.send(outcome);
        };
        if self.writer == WriterThread::Inline {
            write();
            self.in_flight = true;
            return;
        }
        let spawned = std::thread::Builder::new()
            .name(format!("snapshot-{}", self.node))
            .spawn(write);
        match spawned {
            Ok(_) => self.in_flight = true,
            Err(e) => warn!(node = self.node, error = %e, "cannot start the snapshot writer"),
        }
    }

    /// A written snapshot is back: the snapshot for the loop to record and
    /// the index to compact the log to (keeping `catch_up_entries` for slow
    /// followers), or `None` when it failed (the log is intact; the next
    /// trigger tries again) or a leader's snapshot at `snapshot_index`
    /// superseded it meanwhile.
    pub(crate) fn on_written(
        &mut self,
        outcome: SnapshotOutcome,
        snapshot_index: u64,
    ) -> Option<(Snapshot, u64)> {
        self.in_flight = false;
        let snapshot = match outcome {
            Ok(snapshot) => snapshot,
            Err(e) => {
                error!(node = self.node, error = %e, "snapshot could not be written");
                return None;
            }
        };
        let index = snapshot.get_metadata().index;
        if index <= snapshot_index {
            return None;
        }
        self.last_bytes = snapshot.data.len() as u64;
        Some((snapshot, index.saturating_sub(self.catch_up_entries)))
    }
}

/// The inputs of the snapshot trigger.
struct SnapshotTrigger {
    entries_since: u64,
    snapshot_count: u64,
    log_bytes_since: u64,
    last_snapshot_bytes: u64,
    log_percent: u64,
}

/// A snapshot is due after `snapshot_count` entries, once the log written
/// since the last one is `log_percent` of that snapshot's size: snapshot work
/// then stays proportional to the writes, however large the state is.
fn snapshot_due(t: SnapshotTrigger) -> bool {
    t.entries_since >= t.snapshot_count
        && t.log_bytes_since.saturating_mul(100)
            >= t.last_snapshot_bytes.saturating_mul(t.log_percent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trigger(entries_since: u64, log_bytes_since: u64, log_percent: u64) -> bool {
        snapshot_due(SnapshotTrigger {
            entries_since,
            snapshot_count: 100,
            log_bytes_since,
            last_snapshot_bytes: 1_000_000,
            log_percent,
        })
    }

    #[test]
    fn snapshot_waits_for_the_count_and_for_enough_log() {
        assert!(!trigger(99, u64::MAX / 200, 100), "never before the count");
        assert!(!trigger(100, 999_999, 100), "log smaller than the snapshot");
        assert!(trigger(100, 1_000_000, 100));
        assert!(trigger(100, 500_000, 50));
        assert!(
            trigger(100, 0, 0),
            "0 percent: every snapshot_count entries"
        );
        assert!(trigger(100, u64::MAX, u64::MAX), "no overflow");
    }

    #[test]
    fn one_snapshot_in_flight_and_a_superseded_one_is_dropped() {
        let mut config = NodeConfig::new(1, Vec::new(), "unused".into());
        (config.snapshot_count, config.catch_up_entries) = (10, 4);
        config.snapshot_log_percent = 0;
        let mut schedule = SnapshotSchedule::new(&config, WriterThread::Background);
        assert!(!schedule.due(9, 0, || false), "before the count");
        assert!(schedule.due(9, 0, || true), "raft-rs asked for one");
        assert!(schedule.due(10, 0, || unreachable!("the trigger fired")));
        schedule.in_flight = true;
        assert!(!schedule.due(50, 0, || true), "one at a time");
        let mut snapshot = Snapshot::default();
        snapshot.mut_metadata().index = 10;
        let back = schedule.on_written(Ok(snapshot.clone()), 0);
        assert_eq!(
            back.map(|(s, to)| (s.get_metadata().index, to)),
            Some((10, 6))
        );
        assert!(!schedule.in_flight);
        schedule.in_flight = true;
        assert!(
            schedule.on_written(Ok(snapshot), 12).is_none(),
            "superseded"
        );
        assert!(schedule.on_written(Err("disk full".into()), 0).is_none());
    }
}
