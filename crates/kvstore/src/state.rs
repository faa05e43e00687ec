//! The state shared by the apply side ([`KvStateMachine`]) and the request
//! side ([`crate::KvStore`]): the keyspace, the applied index and the table
//! of writes waiting for their own entry to be applied (each is handed what
//! apply computed for it: the response or the error).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use raftnode::{RestoreError, SnapshotJob, StateMachine};
use tokio::sync::oneshot;

use etcdproto::etcdserverpb as pb;

use crate::command::{self, CommandPb, Op, RequestId};
use crate::dedup::{Admission, DedupWindow};
use crate::error::KvError;
use crate::mvcc::Keyspace;
use crate::snapshot;
use crate::watch::{WatchConfig, WatchHub};

/// What apply computed for one command.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Response {
    Put(pb::PutResponse),
    DeleteRange(pb::DeleteRangeResponse),
    Txn(pb::TxnResponse),
    Compaction(pb::CompactionResponse),
    Alarm(pb::AlarmResponse),
    LeaseGrant(pb::LeaseGrantResponse),
    LeaseRevoke(pb::LeaseRevokeResponse),
}

/// The outcome apply hands to the waiting writer.
pub(crate) type Applied = Result<Response, KvError>;

/// Everything both halves of the store see.
pub(crate) struct Shared {
    pub(crate) node_id: u64,
    pub(crate) boot_nonce: u64,
    /// Persistent maps inside: cloning it for a snapshot or a read is O(1),
    /// so the Raft loop never waits for a snapshot to be encoded.
    pub(crate) keyspace: RwLock<Keyspace>,
    /// Every applied write revision, for watchers (fed under the keyspace's
    /// write lock, so its head is the keyspace's revision).
    pub(crate) watch: WatchHub,
    applied_index: AtomicU64,
    waiters: Mutex<WaiterTable>,
    /// Lease grants and revokes applied since the request side's lessor
    /// last looked (apply reads no clock: the lessor turns these into
    /// deadlines when it next runs).
    lease_changes: Mutex<Vec<LeaseChange>>,
}

/// A change of the granted leases, as apply saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeaseChange {
    /// Lease `id` was granted with `ttl_s`.
    Granted { id: i64, ttl_s: i64 },
    /// Lease `id` was revoked.
    Revoked { id: i64 },
    /// A snapshot replaced every lease.
    Restored,
}

/// Changes kept at most while nobody drains them; past it the oldest are
/// replaced by one `Restored` (a full re-sync).
const MAX_PENDING_LEASE_CHANGES: usize = 4096;

/// Writes of this incarnation waiting for their apply, by request sequence.
struct WaiterTable {
    /// Set when the state machine is dropped: nothing will be applied again.
    stopped: bool,
    /// Sequences are issued in order and resolved in about that order, so a
    /// B-tree stays shallow and costs no hashing (SipHash on every insert
    /// and remove was measurable per write).
    by_seq: BTreeMap<u64, oneshot::Sender<Applied>>,
}

impl Shared {
    pub(crate) fn new(node_id: u64, watch: WatchConfig) -> Self {
        let mut keyspace = Keyspace::new();
        keyspace.record_changes(true);
        let hub = WatchHub::new(keyspace.revision(), keyspace.compact_revision(), watch);
        Shared {
            node_id,
            boot_nonce: command::boot_nonce(),
            keyspace: RwLock::new(keyspace),
            watch: hub,
            applied_index: AtomicU64::new(0),
            waiters: Mutex::new(WaiterTable {
                stopped: false,
                by_seq: BTreeMap::new(),
            }),
            lease_changes: Mutex::new(Vec::new()),
        }
    }

    fn lease_changed(&self, change: LeaseChange) {
        let mut changes = self.lease_changes.lock();
        if changes.len() >= MAX_PENDING_LEASE_CHANGES {
            changes.clear();
            changes.push(LeaseChange::Restored);
        }
        changes.push(change);
    }

    /// Takes the lease changes applied since the last call.
    pub(crate) fn take_lease_changes(&self) -> Vec<LeaseChange> {
        std::mem::take(&mut *self.lease_changes.lock())
    }

    pub(crate) fn applied_index(&self) -> u64 {
        self.applied_index.load(Ordering::Acquire)
    }

    /// Registers a waiter for request `seq`; its guard unregisters on drop.
    pub(crate) fn register(self: &Arc<Self>, seq: u64) -> Result<Waiter, KvError> {
        let (sender, receiver) = oneshot::channel();
        let mut table = self.waiters.lock();
        if table.stopped {
            return Err(KvError::Stopped);
        }
        let previous = table.by_seq.insert(seq, sender);
        assert!(
            previous.is_none(),
            "request sequence {seq} registered twice"
        );
        Ok(Waiter {
            shared: Arc::clone(self),
            seq,
            receiver: Some(receiver),
        })
    }

    pub(crate) fn pending_writes(&self) -> usize {
        self.waiters.lock().by_seq.len()
    }

    /// A frozen copy of the keyspace (O(1)).
    pub(crate) fn keyspace(&self) -> Keyspace {
        self.keyspace.read().clone()
    }

    /// Wakes the writer of request `seq` of this incarnation with `error`:
    /// Raft refused its proposal, so it will never be applied.
    pub(crate) fn refuse(&self, seq: u64, error: KvError) {
        let sender = self.waiters.lock().by_seq.remove(&seq);
        if let Some(sender) = sender {
            let _receiver_gone = sender.send(Err(error));
        }
    }

    /// Wakes the writer of `id` with `applied` if it is a request of this
    /// incarnation.
    fn resolve(&self, id: RequestId, applied: Applied) {
        if id.node_id != self.node_id || id.boot_nonce != self.boot_nonce {
            return;
        }
        let sender = self.waiters.lock().by_seq.remove(&id.seq);
        if let Some(sender) = sender {
            // The receiver may be gone (caller timed out): nothing to do then.
            let _receiver_gone = sender.send(applied);
        }
    }
}

/// A registered write; dropping it (timeout, cancelled request) removes the
/// entry from the table so it cannot leak.
pub(crate) struct Waiter {
    shared: Arc<Shared>,
    seq: u64,
    receiver: Option<oneshot::Receiver<Applied>>,
}

impl Waiter {
    /// Resolves when the entry is applied, with what apply computed;
    /// `Err(Stopped)` if the state machine stopped.
    pub(crate) async fn applied(&mut self) -> Applied {
        let receiver = self.receiver.as_mut().ok_or(KvError::Stopped)?;
        receiver.await.map_err(|_| KvError::Stopped)?
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.shared.waiters.lock().by_seq.remove(&self.seq);
    }
}

/// The apply side of the store: raftnode drives it through [`StateMachine`].
///
/// Created by [`crate::new`]; hand it to raftnode (boxed). Dropping it tells
/// every in-flight `put` that the node stopped.
pub struct KvStateMachine {
    shared: Arc<Shared>,
    /// Request ids already applied: a command in the log twice applies once.
    dedup: DedupWindow,
}

impl KvStateMachine {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        KvStateMachine {
            shared,
            dedup: DedupWindow::new(),
        }
    }

    /// The node this state machine belongs to.
    pub fn node_id(&self) -> u64 {
        self.shared.node_id
    }

    /// Index of the last entry applied (or restored from a snapshot).
    pub fn applied_index(&self) -> u64 {
        self.shared.applied_index()
    }

    /// Encodes the whole state now (the same bytes the snapshot job produces).
    pub fn snapshot(&self) -> Vec<u8> {
        snapshot::encode(&self.shared.keyspace.read(), &self.dedup)
    }

    /// A frozen copy of the keyspace (O(1)).
    pub fn keyspace(&self) -> Keyspace {
        self.shared.keyspace()
    }

    /// Number of keys at head.
    pub fn len(&self) -> usize {
        self.shared.keyspace.read().len()
    }

    /// Whether no key exists at head.
    pub fn is_empty(&self) -> bool {
        self.shared.keyspace.read().is_empty()
    }

    fn apply_command(&mut self, index: u64, command: CommandPb) {
        let Some(op) = command.op else {
            tracing::warn!(index, "skipping command without a known operation");
            return;
        };
        // A command whose request was already applied (a resent frame, a
        // proposal in the log twice) is skipped: its writer was answered by
        // the first apply. The id is part of the log, so every member
        // decides alike.
        if let Some(id) = command.request_id.as_ref().map(RequestId::from) {
            match self.dedup.admit(index, id) {
                Admission::New => {}
                admission => {
                    tracing::warn!(
                        index,
                        node = id.node_id,
                        seq = id.seq,
                        ?admission,
                        "skipping a command whose request was already applied"
                    );
                    return;
                }
            }
        }
        let lease_change = match &op {
            Op::LeaseGrant(request) => Some(LeaseChange::Granted {
                id: request.id,
                ttl_s: request.ttl,
            }),
            Op::LeaseRevoke(request) => Some(LeaseChange::Revoked { id: request.id }),
            _ => None,
        };
        let applied = {
            let mut keyspace = self.shared.keyspace.write();
            let applied = apply_op(&mut keyspace, op);
            // Watchers get the write's changes in apply order, published
            // while the keyspace is still locked (the hub's head is always
            // the keyspace's revision).
            if applied.is_ok() {
                if let Some(changes) = keyspace.take_changes() {
                    self.shared.watch.publish(keyspace.revision(), changes);
                }
            } else {
                keyspace.discard_changes();
            }
            self.shared
                .watch
                .set_compact_revision(keyspace.compact_revision());
            applied
        };
        if let (Some(change), Ok(_)) = (lease_change, &applied) {
            self.shared.lease_changed(change);
        }
        if let Err(error) = &applied {
            tracing::debug!(index, %error, "command applied as an error");
        }
        // Publish the applied index before waking the writer, so a read that
        // follows the acknowledged write sees an index at least this high.
        self.shared.applied_index.store(index, Ordering::Release);
        if let Some(id) = command.request_id.as_ref() {
            self.shared.resolve(RequestId::from(id), applied);
        }
    }
}

/// Applies one operation: a pure function of the keyspace and the command.
pub(crate) fn apply_op(keyspace: &mut Keyspace, op: Op) -> Applied {
    match op {
        Op::LegacyPut(put) => keyspace
            .put(&pb::PutRequest {
                key: put.key,
                value: put.value,
                ..Default::default()
            })
            .map(Response::Put),
        Op::Put(request) => keyspace.put(&request).map(Response::Put),
        Op::DeleteRange(request) => keyspace.delete_range(&request).map(Response::DeleteRange),
        Op::Txn(request) => keyspace.txn(&request).map(Response::Txn),
        Op::Compaction(request) => keyspace.compact(&request).map(Response::Compaction),
        Op::Alarm(request) => keyspace.alarm(&request).map(Response::Alarm),
        Op::LeaseGrant(request) => keyspace.lease_grant(&request).map(Response::LeaseGrant),
        Op::LeaseRevoke(request) => keyspace.lease_revoke(&request).map(Response::LeaseRevoke),
    }
}

impl StateMachine for KvStateMachine {
    fn apply(&mut self, index: u64, data: &[u8]) {
        let applied_index = self.shared.applied_index();
        assert!(
            index > applied_index,
            "apply of index {index} after index {applied_index}: indexes must strictly increase"
        );
        match command::decode(data) {
            Ok(command) => self.apply_command(index, command),
            Err(error) => {
                tracing::warn!(index, payload_bytes = data.len(), %error, "skipping undecodable entry");
            }
        }
        self.shared.applied_index.store(index, Ordering::Release);
    }

    /// Captures the keyspace in O(1) (persistent-map clones); the job
    /// encodes it.
    fn snapshot(&mut self) -> SnapshotJob {
        let view = self.shared.keyspace();
        let dedup = self.dedup.clone();
        Box::new(move || snapshot::encode(&view, &dedup))
    }

    fn restore(&mut self, index: u64, data: &[u8]) -> Result<(), RestoreError> {
        let restored = snapshot::decode(data).map_err(|reason| RestoreError { index, reason })?;
        let mut keyspace = restored.keyspace;
        keyspace.record_changes(true);
        let (keys, revision, compact_revision) = (
            keyspace.len(),
            keyspace.revision(),
            keyspace.compact_revision(),
        );
        {
            let mut current = self.shared.keyspace.write();
            *current = keyspace;
            // Watchers behind the restored revision re-read the new
            // keyspace's history: no gap, no duplicate (etcd #15271).
            self.shared.watch.reset(revision, compact_revision);
        }
        self.dedup = restored.dedup;
        self.shared.lease_changed(LeaseChange::Restored);
        self.shared.applied_index.store(index, Ordering::Release);
        tracing::info!(index, keys, revision, compact_revision, "restored snapshot");
        Ok(())
    }
}

impl Drop for KvStateMachine {
    fn drop(&mut self) {
        let mut table = self.shared.waiters.lock();
        table.stopped = true;
        // Dropping the senders wakes every waiting writer with `Stopped`.
        table.by_seq.clear();
    }
}

impl std::fmt::Debug for KvStateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvStateMachine")
            .field("node_id", &self.shared.node_id)
            .field("applied_index", &self.applied_index())
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Replaces the random boot nonce (a deterministic simulation derives
    /// it from its seed; see `kvstore::new_with_boot_nonce`).
    pub(crate) fn with_boot_nonce(mut self, boot_nonce: u64) -> Self {
        self.boot_nonce = boot_nonce;
        self
    }
}
