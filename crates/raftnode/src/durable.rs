//! The log seam: the Raft loop reads and writes its log through one
//! [`DurableLog`], a write-through store. raft-rs reads it (it implements
//! `raft::Storage`); every write reaches the disk before raft-rs can see it.
//! [`WalLog`] is the implementation: the in-memory [`LogStore`] raft-rs
//! reads, in front of the [`Disk`] (WAL and snapshot files), kept in step
//! inside one type instead of by the loop.

use std::sync::Arc;

use prost::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState};

use crate::disk::Disk;
use crate::storage::LogStore;
use crate::NodeError;

/// Where the background snapshot writer saves a snapshot file.
pub(crate) trait SnapshotSink: Send + Sync {
    /// Writes `snapshot` to its own file and makes it durable (no WAL marker:
    /// the loop records that afterwards with
    /// [`DurableLog::record_local_snapshot`]).
    fn save(&self, snapshot: &Snapshot) -> Result<(), NodeError>;
}

impl SnapshotSink for wal::SnapshotStore {
    fn save(&self, snapshot: &Snapshot) -> Result<(), NodeError> {
        let meta = snapshot.get_metadata();
        wal::SnapshotStore::save(self, meta.term, meta.index, &snapshot.encode_to_vec())?;
        Ok(())
    }
}

/// The Raft log as the loop sees it: raft-rs's `Storage` plus the writes of
/// the Ready cycle, each durable before it returns.
///
/// # Correctness
/// * Write-through: when a write returns `Ok`, it is on disk (fdatasynced)
///   *and* visible to raft-rs through `Storage`; when it returns an error,
///   raft-rs sees nothing of it and the loop must stop (what reached the disk
///   is unknown).
/// * `persist` appends entries (replacing a conflicting tail, as Raft does)
///   and the hard state in one durable write.
/// * `install_snapshot` (a leader's snapshot) writes the snapshot file, then
///   its marker, then replaces the log; `record_local_snapshot` writes only
///   the marker of a snapshot whose file the [`SnapshotSink`] already saved,
///   and keeps the log.
/// * `compact(index)` drops entries below `index` (never above the newest
///   snapshot) from memory and then releases the WAL segments holding only
///   them; it returns the dropped entries so the caller frees them off the
///   loop.
/// * `set_commit` and `set_conf_state` change memory only: the commit index
///   is made durable with the next hard state, the configuration by the log
///   entries it came from.
pub(crate) trait DurableLog: raft::Storage + Send + 'static {
    /// The configuration raft-rs last applied (or the snapshot's).
    fn conf_state(&self) -> &ConfState;
    /// Index of the last entry (the snapshot's when empty).
    fn last(&self) -> u64;
    /// Index of the newest snapshot whose marker is durable.
    fn snapshot_index(&self) -> u64;
    /// Whether raft-rs asked for a newer snapshot than the stored one since
    /// the last call.
    fn take_snapshot_wanted(&self) -> bool;
    /// Appends `entries` and saves `hard_state`: one durable write.
    fn persist(
        &mut self,
        entries: Vec<Entry>,
        hard_state: Option<&HardState>,
    ) -> Result<(), NodeError>;
    /// Installs a leader's snapshot: file, marker, then the log restarts
    /// after it.
    fn install_snapshot(&mut self, snapshot: Snapshot) -> Result<(), NodeError>;
    /// Records a snapshot taken locally whose file is saved: its marker, then
    /// it becomes the snapshot served to followers.
    fn record_local_snapshot(&mut self, snapshot: Snapshot) -> Result<(), NodeError>;
    /// Drops entries below `index` and releases their WAL segments.
    fn compact(&mut self, index: u64) -> Result<Vec<Entry>, NodeError>;
    /// Records the commit index raft-rs reported.
    fn set_commit(&mut self, commit: u64);
    /// Records the configuration after an applied membership change.
    fn set_conf_state(&mut self, conf_state: ConfState);
    /// Where the background snapshot writer saves files.
    fn snapshot_sink(&self) -> Arc<dyn SnapshotSink>;
}

/// The production [`DurableLog`]: the WAL and snapshot files ([`Disk`]) with
/// the in-memory view raft-rs reads ([`LogStore`]).
pub(crate) struct WalLog {
    disk: Disk,
    memory: LogStore,
}

impl WalLog {
    /// Joins what start-up recovered: `memory` must hold exactly what `disk`
    /// holds.
    pub(crate) fn new(disk: Disk, memory: LogStore) -> WalLog {
        WalLog { disk, memory }
    }
}

impl raft::Storage for WalLog {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.memory.initial_state()
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.memory.entries(low, high, max_size, context)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        self.memory.term(index)
    }

    fn first_index(&self) -> raft::Result<u64> {
        self.memory.first_index()
    }

    fn last_index(&self) -> raft::Result<u64> {
        self.memory.last_index()
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        self.memory.snapshot(request_index, to)
    }
}

impl DurableLog for WalLog {
    fn conf_state(&self) -> &ConfState {
        self.memory.conf_state()
    }

    fn last(&self) -> u64 {
        self.memory.last()
    }

    fn snapshot_index(&self) -> u64 {
        self.disk.snapshot_index()
    }

    fn take_snapshot_wanted(&self) -> bool {
        self.memory.take_snapshot_wanted()
    }

    fn persist(
        &mut self,
        entries: Vec<Entry>,
        hard_state: Option<&HardState>,
    ) -> Result<(), NodeError> {
        self.disk.persist(&entries, hard_state)?;
        self.memory.append(entries);
        if let Some(hard_state) = hard_state {
            self.memory.set_hard_state(hard_state.clone());
        }
        Ok(())
    }

    fn install_snapshot(&mut self, snapshot: Snapshot) -> Result<(), NodeError> {
        self.disk.save_snapshot(&snapshot)?;
        self.memory.install_snapshot(snapshot);
        Ok(())
    }

    fn record_local_snapshot(&mut self, snapshot: Snapshot) -> Result<(), NodeError> {
        let meta = snapshot.get_metadata();
        self.disk.save_marker(meta.index, meta.term)?;
        self.memory.set_local_snapshot(snapshot);
        Ok(())
    }

    fn compact(&mut self, index: u64) -> Result<Vec<Entry>, NodeError> {
        assert!(
            index <= self.disk.snapshot_index() + 1,
            "compaction to {index} beyond the snapshot at {}",
            self.disk.snapshot_index()
        );
        if index <= self.memory.first() {
            return Ok(Vec::new());
        }
        let removed = self.memory.compact(index);
        self.disk.release_to(index)?;
        Ok(removed)
    }

    fn set_commit(&mut self, commit: u64) {
        self.memory.set_commit(commit);
    }

    fn set_conf_state(&mut self, conf_state: ConfState) {
        self.memory.set_conf_state(conf_state);
    }

    fn snapshot_sink(&self) -> Arc<dyn SnapshotSink> {
        self.disk.snapshot_store()
    }
}
