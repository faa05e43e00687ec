//! What watchers see of the keyspace: the changes of each write txn as apply
//! made them ([`ChangeRecorder`]), and the same changes read back from the
//! retained history ([`Keyspace::changes_in`]).
//!
//! Both give a change etcd's previous version: none for a create (a put of
//! version 1), otherwise the key's version at `revision - 1`, the state
//! before the change's txn (a txn may change a key twice: both changes get
//! the version from before the txn). Apply knows it for free unless the txn
//! itself wrote the key (then it looks it up); the history has it as the
//! key's newest retained entry of an earlier txn (compaction keeps, per
//! key, the newest version at or below the compaction revision). Like
//! etcd, a replay omits it when `revision - 1` is below the compacted
//! revision.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use etcdproto::mvccpb::{event::EventType, Event};

use super::{Keyspace, Record, Revision, Span};

/// One change of a write txn: a put (a live record) or a delete (a
/// tombstone), with the version it replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Change {
    pub(crate) key: Bytes,
    pub(crate) revision: Revision,
    pub(crate) record: Record,
    /// The key's version before this change (`None` for a create).
    pub(crate) prev: Option<(Revision, Record)>,
}

impl Change {
    /// Bytes this change holds on to (what ring and stream budgets count).
    pub(crate) fn size_bytes(&self) -> usize {
        const OVERHEAD_BYTES: usize = 64;
        let prev = self
            .prev
            .as_ref()
            .map_or(0, |(_, record)| record.value.len());
        OVERHEAD_BYTES + self.key.len() + self.record.value.len() + prev
    }

    pub(crate) fn is_delete(&self) -> bool {
        self.record.is_tombstone()
    }

    /// etcd's event for this change; `prev_kv` only when asked for and the
    /// previous version is a live one.
    pub(crate) fn event(&self, with_prev: bool) -> Event {
        let kv = self.record.key_value(&self.key, self.revision);
        let prev_kv = match &self.prev {
            Some((modified, record)) if with_prev && !record.is_tombstone() => {
                Some(record.key_value(&self.key, *modified))
            }
            _ => None,
        };
        let kind = if self.is_delete() {
            EventType::Delete
        } else {
            EventType::Put
        };
        Event {
            r#type: kind as i32,
            // A delete's tombstone gives the key and the delete's revision only.
            kv: Some(kv),
            prev_kv,
        }
    }
}

/// Collects the changes of the write txn in progress, when switched on (the
/// state machine's keyspace only; a keyspace used as a plain value records
/// nothing).
///
/// It is not part of the keyspace's value: a clone records the same way but
/// starts empty, and it never makes two keyspaces unequal.
#[derive(Default)]
pub(crate) struct ChangeRecorder {
    recording: bool,
    /// Reused between txns: recording allocates nothing once warm.
    changes: Vec<Change>,
}

impl ChangeRecorder {
    pub(crate) fn is_recording(&self) -> bool {
        self.recording
    }

    pub(crate) fn record(&mut self, change: Change) {
        self.changes.push(change);
    }
}

impl Clone for ChangeRecorder {
    fn clone(&self) -> Self {
        ChangeRecorder {
            recording: self.recording,
            changes: Vec::new(),
        }
    }
}

impl PartialEq for ChangeRecorder {
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

impl Eq for ChangeRecorder {}

impl std::fmt::Debug for ChangeRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeRecorder")
            .field("recording", &self.recording)
            .field("pending", &self.changes.len())
            .finish()
    }
}

impl Keyspace {
    /// Switches change recording on or off (the state machine's keyspace
    /// records; see [`Keyspace::take_changes`]).
    pub(crate) fn record_changes(&mut self, on: bool) {
        self.recorder.recording = on;
        self.recorder.changes.clear();
    }

    /// The changes recorded since the last call, as one immutable batch (one
    /// allocation), in the order the txn made them (`sub` order); `None`
    /// when nothing changed.
    pub(crate) fn take_changes(&mut self) -> Option<Arc<[Change]>> {
        if self.recorder.changes.is_empty() {
            return None;
        }
        // Moved, not cloned; one allocation (the drain knows its length).
        Some(self.recorder.changes.drain(..).collect())
    }

    /// Drops recorded changes (a failed write left none behind in the
    /// keyspace, so none may reach watchers).
    pub(crate) fn discard_changes(&mut self) {
        self.recorder.changes.clear();
    }

    /// The retained changes to keys of `span` with a revision in
    /// `(after, upto]`, in revision order, and the last revision they cover.
    ///
    /// At most about `budget_bytes` are collected, cut between revisions
    /// (never inside one): the answer then covers `(after, covered]` with
    /// `covered < upto`, and the caller asks again from `covered`. One
    /// revision is always taken whole, however large. A change's `prev` is
    /// the key's previous retained entry (a tombstone or absent: none).
    pub(crate) fn changes_in(
        &self,
        span: Span<'_>,
        after: i64,
        upto: i64,
        budget_bytes: usize,
    ) -> (Vec<Change>, i64) {
        let mut covered = upto;
        let mut picked: BTreeMap<Revision, Change> = BTreeMap::new();
        if span.is_empty() || after >= upto {
            return (Vec::new(), upto.max(after));
        }
        let start = match span {
            Span::One(key) | Span::Range(key, _) => key,
        };
        let lower = (Bytes::copy_from_slice(start), Revision::MIN);
        let mut bytes = 0usize;
        // The key's newest entry of an earlier txn than the current one, and
        // the newest entry seen: the first becomes the second when the
        // revision's `main` moves on.
        let mut before_txn: Option<(&Bytes, Revision, &Record)> = None;
        let mut newest: Option<(&Bytes, Revision, &Record)> = None;
        for ((key, revision), record) in self.history.range(lower..) {
            if !span.contains(key) {
                break;
            }
            match newest {
                Some((newest_key, newest_revision, _))
                    if newest_key == key && newest_revision.main == revision.main => {}
                Some((newest_key, ..)) if newest_key == key => before_txn = newest,
                _ => before_txn = None,
            }
            newest = Some((key, *revision, record));
            if revision.main <= after || revision.main > covered {
                continue;
            }
            // etcd's rule: none for a create; otherwise the key's version at
            // `revision - 1`, omitted if that is compacted away.
            let prev = before_txn
                .filter(|_| record.is_tombstone() || record.version != 1)
                .filter(|_| revision.main > self.compact_revision)
                .filter(|(_, _, record)| !record.is_tombstone())
                .map(|(_, modified, record)| (modified, record.clone()));
            let change = Change {
                key: key.clone(),
                revision: *revision,
                record: record.clone(),
                prev,
            };
            bytes += change.size_bytes();
            picked.insert(*revision, change);
            while bytes > budget_bytes {
                let (Some((first, _)), Some((last, _))) =
                    (picked.first_key_value(), picked.last_key_value())
                else {
                    break;
                };
                let last_main = last.main;
                if first.main == last_main {
                    break;
                }
                while let Some(entry) = picked.last_entry() {
                    if entry.key().main != last_main {
                        break;
                    }
                    bytes -= entry.remove().size_bytes();
                }
                covered = last_main - 1;
            }
        }
        (picked.into_values().collect(), covered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcdproto::etcdserverpb as pb;

    fn put(keyspace: &mut Keyspace, key: &str, value: &str) {
        keyspace
            .put(&pb::PutRequest {
                key: key.into(),
                value: value.into(),
                ..Default::default()
            })
            .expect("put");
    }

    #[test]
    fn recording_yields_one_batch_per_write_with_the_replaced_version() {
        let mut keyspace = Keyspace::new();
        put(&mut keyspace, "a", "1");
        assert!(keyspace.take_changes().is_none(), "not recording");
        keyspace.record_changes(true);
        put(&mut keyspace, "a", "2");
        let batch = keyspace.take_changes().expect("a batch");
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].revision, Revision { main: 3, sub: 0 });
        let (prev_revision, prev) = batch[0].prev.clone().expect("the replaced version");
        assert_eq!((prev_revision.main, prev.value.as_ref()), (2, &b"1"[..]));
        assert!(keyspace.take_changes().is_none(), "taken once");
        let copy = keyspace.clone();
        assert_eq!(copy, keyspace, "the recorder is not part of the value");
    }

    #[test]
    fn changes_in_cuts_between_revisions_at_the_budget_and_finds_prev() {
        let mut keyspace = Keyspace::new();
        for i in 0..10 {
            put(&mut keyspace, &format!("k{}", i % 2), &"x".repeat(100)); // 2..=11
        }
        put(&mut keyspace, "other", "y"); // 12
        let span = Span::of(b"k", b"l");
        let (all, covered) = keyspace.changes_in(span, 1, 12, usize::MAX);
        assert_eq!(covered, 12);
        let revisions: Vec<i64> = all.iter().map(|c| c.revision.main).collect();
        assert_eq!(revisions, (2..=11).collect::<Vec<_>>());
        assert!(all[0].prev.is_none() && all[1].prev.is_none(), "creates");
        assert_eq!(all[2].prev.as_ref().map(|(rev, _)| rev.main), Some(2));
        let three: usize = all[..3].iter().map(Change::size_bytes).sum();
        let (some, covered) = keyspace.changes_in(span, 1, 12, three);
        let revisions: Vec<i64> = some.iter().map(|c| c.revision.main).collect();
        assert_eq!(revisions, vec![2, 3, 4]);
        assert_eq!(covered, 4, "the next call starts after revision 4");
        let (one, covered) = keyspace.changes_in(span, 4, 12, 0);
        assert_eq!((one.len(), covered), (1, 5), "one revision always whole");
    }
}
