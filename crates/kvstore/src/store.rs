//! The request side: [`KvStore::put`] and [`KvStore::get`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use raftnode::Consensus;
use tokio::sync::Semaphore;

use crate::command::{self, RequestId};
use crate::error::KvError;
use crate::state::Shared;
use crate::KvConfig;

/// How a `get` reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReadConsistency {
    /// Reflects every write acknowledged before the read began: waits for a
    /// ReadIndex barrier, then reads the local map.
    #[default]
    Linearizable,
    /// Reads the local map at once; may miss recent writes (stale reads).
    Serializable,
}

/// The store before it knows its [`Consensus`]: see [`crate::new`].
#[derive(Debug)]
pub struct Unattached {
    config: KvConfig,
    shared: Arc<Shared>,
}

impl Unattached {
    pub(crate) fn new(config: KvConfig, shared: Arc<Shared>) -> Self {
        Unattached { config, shared }
    }

    /// Completes construction with the consensus handle raftnode returned.
    pub fn attach(self, consensus: Arc<dyn Consensus>) -> KvStore {
        let inner = Inner {
            write_permits: Semaphore::new(
                self.config.max_in_flight_writes.min(Semaphore::MAX_PERMITS),
            ),
            next_seq: AtomicU64::new(1),
            config: self.config,
            shared: self.shared,
            consensus,
        };
        KvStore {
            inner: Arc::new(inner),
        }
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

struct Inner {
    config: KvConfig,
    shared: Arc<Shared>,
    consensus: Arc<dyn Consensus>,
    write_permits: Semaphore,
    next_seq: AtomicU64,
}

/// The replicated key-value store, as the API sees it. Cheap to clone.
#[derive(Clone)]
pub struct KvStore {
    inner: Arc<Inner>,
}

impl KvStore {
    /// Sets `key` to `value`; returns once *this* write is applied on this
    /// node (hence committed by a quorum).
    ///
    /// Errors: [`KvError::Busy`] when `max_in_flight_writes` writes are
    /// already waiting (nothing proposed); [`KvError::Raft`] when the
    /// proposal was refused; [`KvError::Timeout`] when it was proposed but
    /// not seen applied in `request_timeout_ms` (outcome unknown).
    pub async fn put(&self, key: Bytes, value: Bytes) -> Result<(), KvError> {
        let _permit = self
            .inner
            .write_permits
            .try_acquire()
            .map_err(|_| KvError::Busy)?;
        let id = self.next_request_id();
        let payload = command::encode_put(id, &key, &value);
        // Register before proposing: the entry may be applied before
        // `propose` even returns.
        let mut waiter = self.inner.shared.register(id.seq)?;
        let proposed_then_applied = async {
            self.inner.consensus.propose(payload).await?;
            waiter.applied().await
        };
        match tokio::time::timeout(self.timeout(), proposed_then_applied).await {
            Ok(result) => result,
            Err(_elapsed) => {
                tracing::debug!(seq = id.seq, "write not applied before its deadline");
                Err(self.write_timeout())
            }
        }
    }

    /// Reads `key`. A [`ReadConsistency::Linearizable`] read first waits for
    /// the consensus read barrier (bounded by `request_timeout_ms`).
    pub async fn get(&self, key: &[u8], read: ReadConsistency) -> Result<Option<Bytes>, KvError> {
        if read == ReadConsistency::Linearizable {
            let barrier = self.inner.consensus.read_barrier();
            match tokio::time::timeout(self.timeout(), barrier).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => return Err(KvError::Raft(error)),
                Err(_elapsed) => {
                    return Err(KvError::ReadTimeout {
                        timeout_ms: self.inner.config.request_timeout_ms,
                    })
                }
            }
        }
        Ok(self.inner.shared.data.read().get(key).cloned())
    }

    /// The consensus handle (membership changes and status go through it).
    pub fn consensus(&self) -> &Arc<dyn Consensus> {
        &self.inner.consensus
    }

    /// This node's id.
    pub fn node_id(&self) -> u64 {
        self.inner.shared.node_id
    }

    /// Index of the last entry applied to the local map.
    pub fn applied_index(&self) -> u64 {
        self.inner.shared.applied_index()
    }

    /// Writes proposed by this store that are still waiting for their apply.
    pub fn pending_writes(&self) -> usize {
        self.inner.shared.pending_writes()
    }

    /// Number of keys in the local map.
    pub fn len(&self) -> usize {
        self.inner.shared.data.read().len()
    }

    /// Whether the local map is empty.
    pub fn is_empty(&self) -> bool {
        self.inner.shared.data.read().is_empty()
    }

    fn next_request_id(&self) -> RequestId {
        let seq = self.inner.next_seq.fetch_add(1, Ordering::Relaxed);
        RequestId {
            node_id: self.inner.shared.node_id,
            boot_nonce: self.inner.shared.boot_nonce,
            seq,
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.inner.config.request_timeout_ms)
    }

    fn write_timeout(&self) -> KvError {
        KvError::Timeout {
            timeout_ms: self.inner.config.request_timeout_ms,
        }
    }
}

impl std::fmt::Debug for KvStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvStore")
            .field("node_id", &self.inner.shared.node_id)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}
