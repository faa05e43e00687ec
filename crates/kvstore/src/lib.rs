//! kvstore: raftkv's replicated key-value service layer.
//!
//! # What it owns
//! * The multi-version keyspace ([`mvcc::Keyspace`]): etcd's v3 data model,
//!   with a cluster-wide revision, per-key create/mod revision, version and
//!   lease, retained history, compaction, HashKV and alarms, held in
//!   persistent `imbl` maps (O(1) copies for snapshots and reads).
//! * The [`raftnode::StateMachine`] implementation that applies committed
//!   commands to it, snapshots it and restores it ([`KvStateMachine`]).
//! * The request side ([`KvStore`]): etcd's `range`, `put`,
//!   `delete_range`, `txn`, `compact`, `hash_kv`, `alarm` on
//!   `etcdproto::etcdserverpb` messages, and raftexample's `put_value` /
//!   `get` on the same keyspace. A write encodes a command (protobuf, see the
//!   `command` module) carrying the etcd request, proposes it through
//!   [`raftnode::Consensus`] and resolves only when *that very entry* is
//!   applied on this node, with what apply computed. Reads and read-only
//!   txns wait for a ReadIndex barrier (linearizable, the default) or read
//!   the local keyspace at once (serializable); they never propose.
//! * Auto-compaction ([`compactor`]), run by the leader as proposals.
//! * Leases: granted leases and their attached keys are replicated state
//!   of the keyspace (grant and revoke are commands; a put attaches); their
//!   expiry is the leader's alone ([`lessor`]), which confirms it still
//!   leads (read barrier) before proposing the revoke of an expired lease.
//! * Watch ([`watch`]): apply publishes each write revision's changes, in
//!   apply order, to a bounded hub; a [`WatchStream`] (opened with
//!   [`KvStore::watch`]) turns etcd's watch requests into responses, from
//!   the hub or, for a watcher behind it, from the keyspace's retained
//!   history, and cancels a watcher that needs a compacted revision.
//! * The snapshot format ([`SNAPSHOT_MAGIC`], [`SNAPSHOT_VERSION`]):
//!   canonical, checksummed, versioned, in tagged sections.
//!
//! # What it does not own
//! Raft itself, persistence, batching of read barriers, membership, gRPC
//! and HTTP: those belong to raftnode, wal and api. This crate never sees a
//! type of the `raft` crate. It fills only `header.revision` of responses;
//! the API fills the cluster id, member id and raft term.
//!
//! # Invariants
//! * A write returns only after its own entry was applied here. Entries
//!   are matched to requests by a [`RequestId`] made of the node id, a
//!   random per-incarnation boot nonce and a counter, so an entry proposed by
//!   another node or by an earlier run of this node never acknowledges a
//!   request of this one. A write that is not seen applied in time gets
//!   [`KvError::Timeout`] ("outcome unknown"), never a false success.
//! * Apply is a pure function of the log: the keyspace depends only on the
//!   sequence of applied payloads (validation never reads member-local
//!   configuration), and [`raftnode::StateMachine::snapshot`] is a canonical
//!   encoding, so nodes fed the same log produce byte-identical snapshots
//!   and equal HashKV. Payloads that do not decode are logged and skipped.
//! * The revision never goes backwards: snapshots carry it explicitly.
//! * A command is applied at most once: the apply side skips a command whose
//!   request id it has already applied (a frame resent by a transport, a
//!   proposal in the log twice). The window of applied ids is bounded and
//!   depends only on the log, and is part of the snapshot (the `dedup`
//!   module, [`DedupWindow`]).
//! * Watchers see every applied write revision once, in order: the hub is
//!   fed by apply under the keyspace's write lock and re-synced by
//!   restore (a watcher behind it re-reads the restored history).
//! * Applied indexes strictly increase (asserted).
//! * At most `max_in_flight_writes` writes wait at a time; one more gets
//!   [`KvError::Busy`] at once, before anything is proposed.
//!
//! # Time
//! Request waits are bounded by tokio's timer in production, or by a
//! [`RequestTimer`] given with [`Unattached::with_timer`]: the simulation's
//! clock in `kvsim`, which polls the store's futures on one thread without
//! a runtime.
//!
//! # Construction
//! Two steps, because raftnode needs the state machine before the store can
//! have its consensus handle: [`new`] returns an [`Unattached`] store and the
//! [`KvStateMachine`]; box the latter into raftnode, then
//! [`Unattached::attach`] the consensus handle raftnode gives back.
//!
//! # Example
//! With the in-process `testing::LocalConsensus` (feature `testing`)
//! standing in for raftnode:
//! ```
//! use std::sync::Arc;
//! use bytes::Bytes;
//! use kvstore::{KvConfig, ReadConsistency};
//! use kvstore::testing::LocalConsensus;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), kvstore::KvError> {
//! let (unattached, state_machine) = kvstore::new(KvConfig::new(1));
//! let consensus = Arc::new(LocalConsensus::new(state_machine));
//! let store = unattached.attach(consensus);
//! store.put_value(Bytes::from_static(b"/fruit"), Bytes::from_static(b"apple")).await?;
//! let value = store.get(b"/fruit", ReadConsistency::Linearizable).await?;
//! assert_eq!(value, Some(Bytes::from_static(b"apple")));
//! # Ok(())
//! # }
//! ```

pub mod backup;
mod command;
pub mod compactor;
mod dedup;
mod error;
pub mod lessor;
pub mod mvcc;
mod snapshot;
mod state;
mod store;
pub mod timer;
pub mod watch;

#[cfg(feature = "testing")]
pub mod testing;

use std::sync::Arc;

pub use backup::{backup_state, encode_backup, inspect_backup, BackupSummary, InvalidBackup};
pub use command::RequestId;
pub use compactor::AutoCompaction;
pub use dedup::{Admission, DedupWindow, MAX_ORIGINS, WINDOW_SEQS};
pub use error::KvError;
pub use lessor::{LeaseClock, ManualClock, MonotonicClock};
pub use mvcc::{Keyspace, KeyspaceStatus};
pub use snapshot::{SNAPSHOT_MAGIC, SNAPSHOT_VERSION};
pub use state::KvStateMachine;
pub use store::{KvStore, ReadConsistency, Unattached};
pub use timer::{RequestTimer, TokioTimer};
pub use watch::{WatchConfig, WatchStream};

/// Configuration of one node's store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvConfig {
    /// This node's Raft id (non-zero).
    pub node_id: u64,
    /// How long `put` waits for its apply, and `get` for its read barrier.
    pub request_timeout_ms: u64,
    /// Bound on writes waiting for their apply; more get [`KvError::Busy`].
    pub max_in_flight_writes: usize,
    /// Most compares, or operations of one branch, at one level of a txn
    /// (etcd's `--max-txn-ops`); more get [`KvError::TooManyOps`].
    pub max_txn_ops: usize,
    /// Quota on retained bytes (key plus value of every retained version;
    /// etcd's `--quota-backend-bytes`): a write past it raises the NOSPACE
    /// alarm and gets [`KvError::NoSpace`]. 0 means the default, as in etcd.
    pub quota_bytes: u64,
    /// The Raft election timeout (tick × election ticks): the minimum lease
    /// TTL derives from it (etcd's `minTTL`: 1.5 election timeouts, rounded
    /// up to a second), and a new leader adds it to every lease's TTL.
    pub election_timeout_ms: u64,
    /// The watch hub's bounds and the progress-notification interval.
    pub watch: WatchConfig,
}

impl KvConfig {
    /// Default request timeout: five election timeouts of raftexample's
    /// configuration (1 s each), enough to ride out one leader change. The
    /// one definition the binary's `--request-timeout-ms` and the API's
    /// membership timeout derive from.
    pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 5_000;
    /// Default bound on writes in flight: the one definition the binary's
    /// `--max-in-flight-writes` and the API's request cap derive from.
    pub const DEFAULT_MAX_IN_FLIGHT_WRITES: usize = 16_384;
    /// Default `max_txn_ops`: etcd's 128.
    pub const DEFAULT_MAX_TXN_OPS: usize = 128;
    /// Default `quota_bytes`: etcd's 2 GiB.
    pub const DEFAULT_QUOTA_BYTES: u64 = 2 * 1024 * 1024 * 1024;
    /// Default `election_timeout_ms`: raftexample's 10 ticks of 100 ms.
    pub const DEFAULT_ELECTION_TIMEOUT_MS: u64 = 1_000;

    /// The defaults for node `node_id`.
    pub fn new(node_id: u64) -> Self {
        KvConfig {
            node_id,
            request_timeout_ms: Self::DEFAULT_REQUEST_TIMEOUT_MS,
            max_in_flight_writes: Self::DEFAULT_MAX_IN_FLIGHT_WRITES,
            max_txn_ops: Self::DEFAULT_MAX_TXN_OPS,
            quota_bytes: Self::DEFAULT_QUOTA_BYTES,
            election_timeout_ms: Self::DEFAULT_ELECTION_TIMEOUT_MS,
            watch: WatchConfig::default(),
        }
    }

    /// The smallest lease TTL granted, in seconds: 1.5 election timeouts
    /// rounded up (etcd's `minTTL`; 2 s for 10 ticks of 100 ms). Shorter
    /// requests are raised to it.
    pub fn min_lease_ttl_s(&self) -> i64 {
        let min_ms = self.election_timeout_ms.saturating_mul(3).div_ceil(2);
        i64::try_from(min_ms.div_ceil(1000))
            .unwrap_or(i64::MAX)
            .max(1)
    }
}

/// Creates a node's store in two halves (see the crate docs).
///
/// # Panics
/// If `config.node_id` is 0 or `config.max_in_flight_writes` is 0: both are
/// programming errors of the caller, caught at start-up.
pub fn new(config: KvConfig) -> (Unattached, KvStateMachine) {
    new_with_boot_nonce(config, None)
}

/// [`new`], with the boot nonce of request ids given (`Some`) instead of
/// drawn at random: a deterministic simulation derives it from its seed so
/// that runs repeat exactly. Two incarnations of a node must not share one.
///
/// # Panics
/// As [`new`].
pub fn new_with_boot_nonce(
    mut config: KvConfig,
    boot_nonce: Option<u64>,
) -> (Unattached, KvStateMachine) {
    if config.quota_bytes == 0 {
        config.quota_bytes = KvConfig::DEFAULT_QUOTA_BYTES;
    }
    assert!(
        config.node_id != 0,
        "KvConfig::node_id must be non-zero (Raft reserves 0)"
    );
    assert!(
        config.max_in_flight_writes > 0,
        "KvConfig::max_in_flight_writes must be positive"
    );
    let mut shared = state::Shared::new(config.node_id, config.watch.clone());
    if let Some(nonce) = boot_nonce {
        shared = shared.with_boot_nonce(nonce);
    }
    let shared = Arc::new(shared);
    let state_machine = KvStateMachine::new(Arc::clone(&shared));
    (Unattached::new(config, shared), state_machine)
}
