//! What watchers see of the keyspace: the changes of each write txn as apply
//! made them ([`ChangeRecorder`]), and the same changes read back from the
//! retained history ([`Keyspace::changes_in`]).
//!
//! Both give a change its previous version when it is known: apply knows it
//! for free (the put or delete just looked it up); the history has it as the
//! key's previous retained entry, which is exactly the version at
//! `revision - 1` (compaction keeps, per key, the newest version at or below
//! the compaction revision).

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
        let mut previous: Option<(&Bytes, Revision, &Record)> = None;
        for ((key, revision), record) in self.history.range(lower..) {
            if !span.contains(key) {
                break;
            }
            let prev = previous
                .filter(|(previous_key, _, _)| *previous_key == key)
                .map(|(_, modified, record)| (modified, record.clone()));
            previous = Some((key, *revision, record));
            if revision.main <= after || revision.main > covered {
                continue;
            }
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
