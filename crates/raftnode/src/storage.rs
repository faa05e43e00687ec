//! `LogStore`: the in-memory view of the durable Raft log that `RawNode` reads.
//!
//! Everything in here has already been written to the WAL (or the snapshot
//! store) by the time `RawNode` can observe it: the Ready loop persists first
//! and only then updates this store. It plays the role raftexample gives to
//! etcd's `MemoryStorage`, with one difference: it keeps the newest snapshot
//! *with its data*, so a leader can send it to a follower that fell behind.

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

/// Log entries after the last compaction point, plus hard state, conf state
/// and the newest snapshot.
#[derive(Default)]
pub(crate) struct LogStore {
    hard_state: HardState,
    conf_state: ConfState,
    /// Newest snapshot (data included). Index 0 means none.
    snapshot: Snapshot,
    /// `entries[i].index == first_index() + i`.
    entries: Vec<Entry>,
    /// Set when raft asked for a snapshot that the stored one cannot serve
    /// (it predates the follower's membership): the loop makes a new one.
    snapshot_wanted: std::cell::Cell<bool>,
}

impl LogStore {
    pub(crate) fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub(crate) fn set_hard_state(&mut self, hard_state: HardState) {
        self.hard_state = hard_state;
    }

    pub(crate) fn set_commit(&mut self, commit: u64) {
        self.hard_state.commit = commit;
    }

    pub(crate) fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    pub(crate) fn set_conf_state(&mut self, conf_state: ConfState) {
        self.conf_state = conf_state;
    }

    pub(crate) fn snapshot_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }

    pub(crate) fn first(&self) -> u64 {
        match self.entries.first() {
            Some(entry) => entry.index,
            None => self.snapshot_index() + 1,
        }
    }

    pub(crate) fn last(&self) -> u64 {
        match self.entries.last() {
            Some(entry) => entry.index,
            None => self.snapshot_index(),
        }
    }

    /// Installs a snapshot: the log restarts right after it.
    ///
    /// Used both for a snapshot received from the leader (every entry is
    /// replaced) and at start-up before the WAL's entries are appended.
    pub(crate) fn install_snapshot(&mut self, snapshot: Snapshot) {
        let meta = snapshot.get_metadata();
        self.hard_state.term = self.hard_state.term.max(meta.term);
        self.hard_state.commit = self.hard_state.commit.max(meta.index);
        self.conf_state = meta.get_conf_state().clone();
        self.entries.clear();
        self.snapshot = snapshot;
    }

    /// Records a snapshot taken locally at an index that is still in the
    /// log: entries are kept (compaction is separate).
    pub(crate) fn set_local_snapshot(&mut self, snapshot: Snapshot) {
        assert!(
            snapshot.get_metadata().index >= self.snapshot_index(),
            "snapshot index went backwards: {} < {}",
            snapshot.get_metadata().index,
            self.snapshot_index()
        );
        self.snapshot = snapshot;
    }

    /// Appends entries, replacing any conflicting tail (Raft log conflict).
    ///
    /// # Panics
    /// If the entries leave a gap after the last index or rewrite compacted
    /// entries: raft-rs never produces either, so it is a bug in this crate.
    pub(crate) fn append(&mut self, entries: Vec<Entry>) {
        let Some(first_new) = entries.first() else {
            return;
        };
        assert!(
            first_new.index >= self.first() && first_new.index <= self.last() + 1,
            "append of [{}..] does not fit the log [{}..={}]",
            first_new.index,
            self.first(),
            self.last()
        );
        let keep = (first_new.index - self.first()) as usize;
        self.entries.truncate(keep);
        self.entries.extend(entries);
    }

    /// Whether raft asked for a newer snapshot since the last call.
    pub(crate) fn take_snapshot_wanted(&self) -> bool {
        self.snapshot_wanted.replace(false)
    }

    /// Removes every entry below `index` (the entry at `index` stays) and
    /// returns them, so the caller can free them off the Raft loop: between
    /// two snapshots of a large state that can be a million allocations.
    pub(crate) fn compact(&mut self, index: u64) -> Vec<Entry> {
        if index <= self.first() {
            return Vec::new();
        }
        let index = index.min(self.last() + 1);
        let drop_count = (index - self.first()) as usize;
        // Copies only the kept tail; the compacted prefix moves out whole.
        let kept = self.entries.split_off(drop_count);
        std::mem::replace(&mut self.entries, kept)
    }

    /// Entries in `[low, high)`, for the layers above raft-rs (tests).
    #[cfg(test)]
    pub(crate) fn entries_in(&self, low: u64, high: u64) -> Vec<Entry> {
        let first = self.first();
        self.entries[(low - first) as usize..(high - first) as usize].to_vec()
    }
}

impl Storage for LogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let first = self.first();
        let mut entries = self.entries[(low - first) as usize..(high - first) as usize].to_vec();
        raft::util::limit_size(&mut entries, max_size.into());
        Ok(entries)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        if index == self.snapshot_index() {
            return Ok(self.snapshot.get_metadata().term);
        }
        let first = self.first();
        if index < first {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if index > self.last() {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(self.entries[(index - first) as usize].term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    /// The stored snapshot, unless it cannot serve follower `to`: then a new
    /// one is requested from the loop and raft retries later.
    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let conf_state = self.snapshot.get_metadata().get_conf_state();
        let knows_follower = conf_state.voters.contains(&to) || conf_state.learners.contains(&to);
        if self.snapshot_index() == 0 || self.snapshot_index() < request_index || !knows_follower {
            self.snapshot_wanted.set(true);
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(self.snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            ..Default::default()
        }
    }

    fn snapshot(index: u64, term: u64) -> Snapshot {
        let mut snap = Snapshot::default();
        snap.mut_metadata().index = index;
        snap.mut_metadata().term = term;
        snap
    }

    #[test]
    fn append_replaces_conflicting_tail() {
        let mut store = LogStore::default();
        store.append(vec![entry(1, 1), entry(2, 1), entry(3, 1)]);
        store.append(vec![entry(2, 2)]);
        assert_eq!(store.last(), 2);
        assert_eq!(store.term(2).unwrap(), 2);
        assert_eq!(store.entries_in(1, 3).len(), 2);
    }

    #[test]
    fn compacted_and_unavailable_are_errors_not_panics() {
        let mut store = LogStore::default();
        store.install_snapshot(snapshot(10, 3));
        store.append(vec![entry(11, 3), entry(12, 3)]);
        assert_eq!(store.term(10).unwrap(), 3);
        assert!(matches!(
            store.term(9),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        assert!(matches!(
            store.term(13),
            Err(raft::Error::Store(StorageError::Unavailable))
        ));
        assert!(store
            .entries(5, 12, None, GetEntriesContext::empty(false))
            .is_err());
        assert!(store
            .entries(11, 20, None, GetEntriesContext::empty(false))
            .is_err());
        assert_eq!(
            store
                .entries(11, 13, None, GetEntriesContext::empty(false))
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn compact_keeps_the_entry_at_the_index() {
        let mut store = LogStore::default();
        store.append((1..=10).map(|i| entry(i, 1)).collect());
        store.set_local_snapshot(snapshot(8, 1));
        let removed = store.compact(5);
        assert_eq!(removed.len(), 4);
        assert_eq!(removed.last().map(|e| e.index), Some(4));
        assert_eq!(store.first(), 5);
        assert_eq!(store.last(), 10);
        assert_eq!(store.term(8).unwrap(), 1);
        assert!(store.term(4).is_err());
    }

    #[test]
    fn snapshot_is_unavailable_until_one_exists() {
        let store = LogStore::default();
        assert!(store.snapshot(0, 2).is_err());
        assert!(store.take_snapshot_wanted());
        assert!(!store.take_snapshot_wanted());
    }

    #[test]
    fn a_snapshot_that_predates_the_follower_is_not_served() {
        let mut store = LogStore::default();
        let mut snap = snapshot(5, 1);
        snap.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
        store.install_snapshot(snap);
        assert!(store.snapshot(0, 2).is_ok());
        assert!(!store.take_snapshot_wanted());
        assert!(store.snapshot(0, 4).is_err(), "node 4 joined after it");
        assert!(store.take_snapshot_wanted());
    }
}
