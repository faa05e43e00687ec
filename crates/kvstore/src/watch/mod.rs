//! etcd's Watch: the hub apply feeds, and the per-stream logic
//! ([`WatchStream`]) the API drives.
//!
//! # The hub
//! Apply records the changes of each write txn (the keyspace's change
//! recorder: key, revision, new record, the version it replaced) and, while
//! it still holds the keyspace's write lock, publishes them to the hub as
//! one immutable batch (`Arc<[Change]>`, one allocation per write revision).
//! The hub keeps the newest batches in a ring bounded by revisions *and*
//! bytes ([`WatchConfig`]) and a `tokio::sync::watch` of its head revision.
//! The ring covers every revision in `(floor, head]`, contiguously; `head`
//! always equals the keyspace's revision under the keyspace lock.
//!
//! A leader snapshot installed by `KvStateMachine::restore` clears the ring
//! and moves its floor to the restored revision: every watcher behind it
//! then catches up from the restored keyspace's history (etcd #15271).
//!
//! # Streams
//! A stream holds its watchers (a key range, the next revision each wants,
//! its options) and no per-watcher queue. When woken it reads the ring's
//! batches from its watchers' next revisions on, filters them per watcher
//! and queues at most about `max_response_bytes` of responses; the API
//! sends them before asking for more. A watcher behind the ring's floor (a
//! slow reader, an old `start_revision`, a restore) catches up by scanning
//! the retained history of a frozen keyspace copy (O(1) to take), a budget
//! at a time; if what it needs is compacted it is cancelled with
//! `compact_revision`, never left with a gap (etcd #17529). Memory is thus
//! bounded by the ring plus one response budget per stream, however many
//! watchers and however slow their readers.
//!
//! **Invariant:** the hub is fed in apply order, under the keyspace lock, by
//! the only code that changes the keyspace; so a watcher sees each revision
//! once, in order, on every member.

mod stream;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::mvcc::Change;

pub use stream::{WatchStream, CANCEL_REASON_DUPLICATE_ID, CANCEL_REASON_EMPTY_RANGE};

/// Watch settings of one node (part of [`crate::KvConfig`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchConfig {
    /// Most write revisions the hub's ring keeps.
    pub ring_max_revisions: usize,
    /// Most bytes (keys, values and previous values) the ring keeps; the
    /// newest revision stays whatever its size.
    pub ring_max_bytes: usize,
    /// Interval of the progress notifications a watcher created with
    /// `progress_notify` gets while it is caught up (etcd's 10 minutes).
    pub progress_notify_interval_ms: u64,
}

impl WatchConfig {
    /// Default `ring_max_revisions`.
    pub const DEFAULT_RING_MAX_REVISIONS: usize = 4096;
    /// Default `ring_max_bytes`: 64 MiB.
    pub const DEFAULT_RING_MAX_BYTES: usize = 64 * 1024 * 1024;
    /// Default `progress_notify_interval_ms`: etcd's 10 minutes.
    pub const DEFAULT_PROGRESS_NOTIFY_INTERVAL_MS: u64 = 10 * 60 * 1000;
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            ring_max_revisions: Self::DEFAULT_RING_MAX_REVISIONS,
            ring_max_bytes: Self::DEFAULT_RING_MAX_BYTES,
            progress_notify_interval_ms: Self::DEFAULT_PROGRESS_NOTIFY_INTERVAL_MS,
        }
    }
}

/// One published write revision.
struct Batch {
    revision: i64,
    bytes: usize,
    changes: Arc<[Change]>,
}

/// The newest write revisions: every revision in `(floor, floor + len]`.
struct Ring {
    floor: i64,
    batches: VecDeque<Batch>,
    bytes: usize,
}

impl Ring {
    fn head(&self) -> i64 {
        self.floor + self.batches.len() as i64
    }
}

/// What a stream reads from the ring in one go.
pub(crate) struct RingView {
    /// Revisions at or below it are no longer in the ring.
    pub(crate) floor: i64,
    /// The newest published revision.
    pub(crate) head: i64,
    /// Consecutive batches from the revision asked for (possibly fewer
    /// than up to `head`).
    pub(crate) batches: Vec<(i64, Arc<[Change]>)>,
}

/// The watch hub (see the module docs).
pub(crate) struct WatchHub {
    ring: Mutex<Ring>,
    head: watch::Sender<i64>,
    compact_revision: AtomicI64,
    config: WatchConfig,
}

impl WatchHub {
    pub(crate) fn new(revision: i64, compact_revision: i64, config: WatchConfig) -> Self {
        WatchHub {
            ring: Mutex::new(Ring {
                floor: revision,
                batches: VecDeque::new(),
                bytes: 0,
            }),
            head: watch::Sender::new(revision),
            compact_revision: AtomicI64::new(compact_revision),
            config,
        }
    }

    pub(crate) fn config(&self) -> &WatchConfig {
        &self.config
    }

    /// Publishes the changes of write revision `revision` (apply, under the
    /// keyspace's write lock).
    pub(crate) fn publish(&self, revision: i64, changes: Arc<[Change]>) {
        let bytes = changes.iter().map(Change::size_bytes).sum();
        {
            let mut ring = self.ring.lock();
            if revision != ring.head() + 1 {
                // Never expected (the keyspace moves one revision per write
                // txn); watchers behind the new floor catch up from history.
                tracing::warn!(
                    revision,
                    head = ring.head(),
                    "watch hub saw a revision out of sequence; restarting its ring"
                );
                ring.batches.clear();
                ring.bytes = 0;
                ring.floor = revision - 1;
            }
            ring.batches.push_back(Batch {
                revision,
                bytes,
                changes,
            });
            ring.bytes += bytes;
            while ring.batches.len() > 1
                && (ring.batches.len() > self.config.ring_max_revisions
                    || ring.bytes > self.config.ring_max_bytes)
            {
                if let Some(evicted) = ring.batches.pop_front() {
                    ring.bytes -= evicted.bytes;
                    ring.floor = evicted.revision;
                }
            }
        }
        // Streams read the head from the ring; the channel only wakes them,
        // so with no stream open the write path skips its lock.
        if self.head.receiver_count() > 0 {
            self.head.send_replace(revision);
        }
    }

    /// Records the keyspace's compacted revision (after every apply).
    pub(crate) fn set_compact_revision(&self, compact_revision: i64) {
        self.compact_revision
            .store(compact_revision, Ordering::Release);
    }

    pub(crate) fn compact_revision(&self) -> i64 {
        self.compact_revision.load(Ordering::Acquire)
    }

    /// A snapshot replaced the keyspace at `revision`: empties the ring so
    /// every watcher re-reads what it misses from the new keyspace.
    pub(crate) fn reset(&self, revision: i64, compact_revision: i64) {
        {
            let mut ring = self.ring.lock();
            ring.batches.clear();
            ring.bytes = 0;
            ring.floor = revision;
        }
        self.set_compact_revision(compact_revision);
        self.head.send_replace(revision);
    }

    /// The newest published revision.
    pub(crate) fn head(&self) -> i64 {
        self.ring.lock().head()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<i64> {
        self.head.subscribe()
    }

    /// Batches from revision `from` on (from the ring's oldest if it no
    /// longer has `from`), at most
    /// `max_batches` of them and about `max_bytes` (at least one).
    pub(crate) fn view(&self, from: i64, max_batches: usize, max_bytes: usize) -> RingView {
        let ring = self.ring.lock();
        let head = ring.head();
        let mut batches = Vec::new();
        let from = from.max(ring.floor + 1);
        if from <= head {
            let skip = usize::try_from(from - ring.floor - 1).unwrap_or(usize::MAX);
            let mut bytes = 0usize;
            for batch in ring.batches.iter().skip(skip) {
                if batches.len() >= max_batches || (!batches.is_empty() && bytes >= max_bytes) {
                    break;
                }
                bytes += batch.bytes;
                batches.push((batch.revision, Arc::clone(&batch.changes)));
            }
        }
        RingView {
            floor: ring.floor,
            head,
            batches,
        }
    }

    /// Revisions and bytes the ring holds now.
    pub(crate) fn ring_usage(&self) -> (usize, usize) {
        let ring = self.ring.lock();
        (ring.batches.len(), ring.bytes)
    }
}
