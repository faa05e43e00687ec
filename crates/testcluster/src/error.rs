//! The harness's one error type.

use std::path::PathBuf;
use std::time::Duration;

/// Why the harness could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The node binary could not be started.
    #[error("cannot start {}: {source}", binary.display())]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `cargo build` of the release binary failed.
    #[error("build: {0}")]
    Build(String),
    /// No more distinct ephemeral ports could be found.
    #[error("no free port: {0}")]
    Ports(String),
    /// A node id that was never defined, or one defined twice.
    #[error("node {id}: {reason}")]
    Node {
        /// The node.
        id: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A node's `GET /v1/status` could not be read as a status.
    #[error("GET /v1/status of node {id}: {reason}")]
    BadStatus {
        /// The node asked.
        id: u64,
        /// What was wrong with the answer.
        reason: String,
    },
    /// Something awaited did not happen in time.
    #[error("timed out after {timeout:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long the harness waited.
        timeout: Duration,
    },
    /// The PKI of a TLS cluster could not be made or loaded.
    #[error("tls: {0}")]
    Tls(String),
    /// An HTTP client could not be built, or a request failed.
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn node(id: u64, reason: impl Into<String>) -> Self {
        Error::Node {
            id,
            reason: reason.into(),
        }
    }

    pub(crate) fn timeout(what: impl Into<String>, timeout: Duration) -> Self {
        Error::Timeout {
            what: what.into(),
            timeout,
        }
    }
}
