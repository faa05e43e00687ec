//! Real `raftkv` processes on loopback: the one process-cluster harness of
//! the workspace.
//!
//! Four users start nodes as processes: `crates/raftkv`'s end-to-end tests,
//! `cargo xtask chaos`, `cargo xtask bench` and `cargo xtask cluster`. They
//! all go through this crate, so the command line of a node, the layout of
//! its data and log, how the leader is found and how processes are cleaned
//! up are written once.
//!
//! **Why a crate of its own:** `xtask` depends on it, and so do
//! `crates/raftkv`'s tests (as a dev-dependency). It depends on neither: it
//! runs the `raftkv` binary as a user would, by path, and needs only `api`
//! (for the typed [`StatusResponse`]) and `kvstore` (for the server's default
//! request timeout). Inside `xtask` it would make `raftkv`'s tests compile
//! the whole task runner (plots, histograms, the chaos checker) to start a
//! node; inside `raftkv` it could not be shared at all (a binary crate's
//! test helpers are private to it).
//!
//! **What it owns:**
//! - [`workspace_root`], [`target_dir`] and [`release_binary`]: where the
//!   workspace is and a release `raftkv` built once per process (honouring
//!   `CARGO_TARGET_DIR`).
//! - [`reserve_port`]: distinct ephemeral loopback ports; a port is never
//!   handed out twice within a process.
//! - [`Cluster`]: define, start, stop (SIGTERM), kill (SIGKILL), pause
//!   (SIGSTOP/SIGCONT) and restart node processes with raftexample's flags,
//!   data dirs `raftkv-<id>` under one root (a temp dir unless given), a log
//!   per node; typed status ([`Cluster::status`]), waiting for a leader
//!   ([`Cluster::wait_leader`]) or for every node to agree on one
//!   ([`Cluster::wait_agreed_leader`]), and client helpers whose every
//!   request has a timeout.
//! - TLS clusters ([`ClusterConfig::tls`], [`TlsMode`]): a throwaway PKI
//!   under the data root ([`TlsPaths`]), the nodes' TLS flags, `https://`
//!   URLs, clients that trust the CA and present a certificate, and
//!   certificate rotation ([`Cluster::reissue_member_certificates`]).
//!
//! **What it does not own:** faults inside the nodes (the chaos suite's
//! fault routes), workloads, checkers, load generation, or what a test
//! asserts.
//!
//! **Invariants:** every process a [`Cluster`] started is killed and reaped
//! when the cluster is dropped, also while unwinding from a panic; no HTTP
//! request of the harness waits without a bound.

mod client;
mod error;
mod ports;
mod process;
mod status;
mod tls;
mod workspace;

pub use api::{MemberResponse, StatusResponse};
pub use error::Error;
pub use ports::{reserve_port, reserve_ports};
pub use process::{Cluster, ClusterConfig, Node, NodeOutput, Signal};
pub use status::parse_status;
pub use tls::{TlsMode, TlsPaths, CLIENT_CN, PEER_CN};
pub use workspace::{release_binary, target_dir, workspace_root};

use std::time::Duration;

/// Bound on a client request to a node: the server's default request
/// timeout plus a margin, so a slow answer is seen as the server's own 503
/// rather than as a client timeout.
pub const REQUEST_TIMEOUT: Duration =
    Duration::from_millis(kvstore::KvConfig::DEFAULT_REQUEST_TIMEOUT_MS + 2_000);

/// Bound on one `GET /v1/status` (a status never waits for consensus).
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// Bound on opening a TCP connection to a node on loopback.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
