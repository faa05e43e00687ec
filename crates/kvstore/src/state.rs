//! The state shared by the apply side ([`KvStateMachine`]) and the request
//! side ([`crate::KvStore`]): the map, the applied index and the table of
//! writes waiting for their own entry to be applied.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use raftnode::{RestoreError, SnapshotJob, StateMachine};
use tokio::sync::oneshot;

use crate::command::{self, CommandPb, Op, RequestId};
use crate::dedup::{Admission, DedupWindow};
use crate::error::KvError;
use crate::snapshot;

/// Everything both halves of the store see.
pub(crate) struct Shared {
    pub(crate) node_id: u64,
    pub(crate) boot_nonce: u64,
    /// A persistent ordered map: cloning it for a snapshot is O(1), so the
    /// Raft loop never waits for a snapshot to be encoded.
    pub(crate) data: RwLock<snapshot::Map>,
    applied_index: AtomicU64,
    waiters: Mutex<WaiterTable>,
}

/// Writes of this incarnation waiting for their apply, by request sequence.
struct WaiterTable {
    /// Set when the state machine is dropped: nothing will be applied again.
    stopped: bool,
    by_seq: HashMap<u64, oneshot::Sender<()>>,
}

impl Shared {
    pub(crate) fn new(node_id: u64) -> Self {
        Shared {
            node_id,
            boot_nonce: command::boot_nonce(),
            data: RwLock::new(snapshot::Map::new()),
            applied_index: AtomicU64::new(0),
            waiters: Mutex::new(WaiterTable {
                stopped: false,
                by_seq: HashMap::new(),
            }),
        }
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

    /// Wakes the writer of `id` if it is a request of this incarnation.
    fn resolve(&self, id: RequestId) {
        if id.node_id != self.node_id || id.boot_nonce != self.boot_nonce {
            return;
        }
        let sender = self.waiters.lock().by_seq.remove(&id.seq);
        if let Some(sender) = sender {
            // The receiver may be gone (caller timed out): nothing to do then.
            let _receiver_gone = sender.send(());
        }
    }
}

/// A registered write; dropping it (timeout, cancelled request) removes the
/// entry from the table so it cannot leak.
pub(crate) struct Waiter {
    shared: Arc<Shared>,
    seq: u64,
    receiver: Option<oneshot::Receiver<()>>,
}

impl Waiter {
    /// Resolves when the entry is applied; `Err` if the state machine stopped.
    pub(crate) async fn applied(&mut self) -> Result<(), KvError> {
        let receiver = self.receiver.as_mut().ok_or(KvError::Stopped)?;
        receiver.await.map_err(|_| KvError::Stopped)
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

    /// Encodes the whole map now (the same bytes the snapshot job produces).
    pub fn snapshot(&self) -> Vec<u8> {
        snapshot::encode(&self.shared.data.read(), &self.dedup)
    }

    /// Number of keys in the map.
    pub fn len(&self) -> usize {
        self.shared.data.read().len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.shared.data.read().is_empty()
    }

    fn apply_command(&mut self, index: u64, command: CommandPb) {
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
        match command.op {
            Some(Op::Put(put)) => {
                self.shared.data.write().insert(put.key, put.value);
            }
            None => {
                tracing::warn!(index, "skipping command without a known operation");
                return;
            }
        }
        // Publish the applied index before waking the writer, so a read that
        // follows the acknowledged write sees an index at least this high.
        self.shared.applied_index.store(index, Ordering::Release);
        if let Some(id) = command.request_id.as_ref() {
            self.shared.resolve(RequestId::from(id));
        }
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

    /// Captures the map in O(1) (a persistent-map clone); the job encodes it.
    fn snapshot(&mut self) -> SnapshotJob {
        let view = self.shared.data.read().clone();
        let dedup = self.dedup.clone();
        Box::new(move || snapshot::encode(&view, &dedup))
    }

    fn restore(&mut self, index: u64, data: &[u8]) -> Result<(), RestoreError> {
        let (map, dedup) =
            snapshot::decode(data).map_err(|reason| RestoreError { index, reason })?;
        let keys = map.len();
        *self.shared.data.write() = map;
        self.dedup = dedup;
        self.shared.applied_index.store(index, Ordering::Release);
        tracing::info!(index, keys, "restored snapshot");
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
