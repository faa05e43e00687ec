//! Errors returned by the transport's public API.

/// An error from configuring the transport or managing its peers.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum TransportError {
    /// A peer URL that could not be parsed or is not usable as a peer URL.
    #[error("invalid peer URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// `update_peer` was called for a peer that is not known.
    #[error("unknown peer {0}")]
    UnknownPeer(u64),
    /// Node id 0 is reserved by Raft and cannot be a peer.
    #[error("peer id 0 is reserved and cannot be used")]
    ZeroPeerId,
    /// A configuration value is out of range.
    #[error("invalid transport configuration: {0}")]
    InvalidConfig(String),
    /// The transport has been shut down.
    #[error("transport is shut down")]
    ShutDown,
}

/// A malformed fault-injection command (see [`crate::Faults::apply_command`]).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum FaultError {
    /// The command word is not one of `cut`, `heal`, `heal-all`, `drop`, `delay`, `stall`.
    #[error("unknown fault command {0:?}")]
    UnknownCommand(String),
    /// An argument is missing, extra, or not a number.
    #[error("bad arguments for fault command {command:?}: {reason}")]
    BadArguments {
        /// The command word.
        command: String,
        /// What is wrong with its arguments.
        reason: String,
    },
    /// A drop probability outside `[0, 1]`.
    #[error("drop probability {0} is not within [0, 1]")]
    BadProbability(String),
    /// A delay larger than [`crate::faults::MAX_FAULT_DELAY_MS`].
    #[error("delay of {0} ms exceeds the maximum of {max} ms", max = crate::faults::MAX_FAULT_DELAY_MS)]
    DelayTooLong(u64),
}
