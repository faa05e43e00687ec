//! Errors of the key-value service.
//!
//! The etcd-facing variants display exactly etcd's message for them (what
//! `etcdctl` prints), so the API maps each to etcd's gRPC code and can reuse
//! the text unchanged.

use raftnode::RaftError;

/// Why a request did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// The consensus layer refused or failed the request (see [`RaftError`]).
    #[error(transparent)]
    Raft(#[from] RaftError),
    /// Too many writes are in flight on this node; nothing was proposed.
    #[error("busy: too many writes in flight on this node; retry")]
    Busy,
    /// The write was proposed but not seen applied within the deadline (for
    /// example, it was lost in a leader change). It may still take effect.
    #[error("write not applied within {timeout_ms} ms; the outcome is unknown")]
    Timeout {
        /// How long the caller waited.
        timeout_ms: u64,
    },
    /// A linearizable read could not establish its read barrier in time.
    /// Nothing was read; retrying is safe.
    #[error("read barrier not reached within {timeout_ms} ms; retry")]
    ReadTimeout {
        /// How long the caller waited.
        timeout_ms: u64,
    },
    /// The state machine was dropped (node shutting down) while the write was
    /// in flight; its outcome is unknown.
    #[error("state machine stopped; the outcome of the write is unknown")]
    Stopped,
    /// A read, compaction or hash at a revision above the current one
    /// (etcd's `ErrFutureRev`, gRPC OutOfRange).
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    /// A read or hash below the compacted revision, or a compaction at or
    /// below it (etcd's `ErrCompacted`, gRPC OutOfRange).
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    /// `ignore_value` / `ignore_lease` on a key that does not exist (gRPC
    /// InvalidArgument).
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// A request with an empty key (gRPC InvalidArgument).
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// A put with `ignore_value` that also carries a value (gRPC InvalidArgument).
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// A put with `ignore_lease` that also carries a lease (gRPC InvalidArgument).
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    /// A range with an unknown sort order or target (gRPC InvalidArgument).
    #[error("etcdserver: invalid sort option")]
    InvalidSortOption,
    /// Two writes to one key in one txn, or a put overlapping a delete
    /// (gRPC InvalidArgument).
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// A txn with more operations than `max_txn_ops` at one level (gRPC
    /// InvalidArgument).
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    /// The quota on retained bytes is exhausted, or the NOSPACE alarm is
    /// armed (gRPC ResourceExhausted).
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    /// A put names a lease that does not exist (gRPC NotFound).
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// A grant with an id that is already granted (gRPC FailedPrecondition).
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    /// A grant with a TTL over [`crate::mvcc::MAX_LEASE_TTL_S`] (gRPC OutOfRange).
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    /// A request only the leader serves (`LeaseKeepAlive`,
    /// `LeaseTimeToLive`) reached a member that is not the leader, or a
    /// leader that could not confirm its leadership (gRPC Unavailable; etcd
    /// clients retry it).
    #[error("etcdserver: not leader")]
    NotLeader,
}
