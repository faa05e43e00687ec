//! Errors of the key-value service.

use raftnode::RaftError;

/// Why a `put` or `get` did not succeed.
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
}
