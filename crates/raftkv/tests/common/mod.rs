//! The end-to-end tests' view of `testcluster`: clusters of this package's
//! own `raftkv` binary, with the tests' defaults (log levels, the `WAIT`
//! bound), and helpers that panic with the node's log instead of returning
//! errors.

#![allow(dead_code)]

pub mod browser;
pub mod etcd;

use std::ops::{Deref, DerefMut};
use std::process::ExitStatus;
use std::time::Duration;

use testcluster::{ClusterConfig, TlsMode};

/// Upper bound for anything a test waits for.
pub const WAIT: Duration = Duration::from_secs(60);

/// Flags that make elections fast enough for tests.
pub const FAST: &[&str] = &["--tick-ms", "50"];

/// A cluster of this package's `raftkv` processes; every other method of
/// [`testcluster::Cluster`] is reachable through `Deref`.
pub struct Cluster(testcluster::Cluster);

impl Deref for Cluster {
    type Target = testcluster::Cluster;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for Cluster {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Cluster {
    /// Starts `n` nodes with `args` added to every command line.
    pub fn start(n: u64, args: &[&str]) -> Cluster {
        let mut cluster = Cluster::new(args);
        for id in 1..=n {
            cluster.define_node(id, &[]);
        }
        for id in 1..=n {
            cluster.spawn(id, false);
        }
        cluster
    }

    /// Starts `n` nodes with TLS `mode` and `args` added to every command
    /// line.
    pub fn start_tls(n: u64, mode: TlsMode, args: &[&str]) -> Cluster {
        let mut cluster = Cluster::new_tls(args, Some(mode));
        for id in 1..=n {
            cluster.define_node(id, &[]);
        }
        for id in 1..=n {
            cluster.spawn(id, false);
        }
        cluster
    }

    /// A cluster with no node yet.
    pub fn new(args: &[&str]) -> Cluster {
        Cluster::new_tls(args, None)
    }

    /// A cluster with no node yet, with TLS `mode`.
    pub fn new_tls(args: &[&str], tls: Option<TlsMode>) -> Cluster {
        let config = ClusterConfig {
            tls,
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec![("RUST_LOG".into(), "info,raft_rs=warn".into())],
            request_timeout: Duration::from_secs(15),
            ..ClusterConfig::new(env!("CARGO_BIN_EXE_raftkv"))
        };
        Cluster(testcluster::Cluster::new(config).expect("a cluster"))
    }

    /// Reserves ports and a data dir for node `id`.
    pub fn define_node(&mut self, id: u64, extra_args: &[&str]) {
        self.0.define_node(id, extra_args).expect("define a node");
    }

    /// Starts (or restarts) node `id`'s process.
    pub fn spawn(&mut self, id: u64, join: bool) {
        self.0.spawn(id, join).expect("start raftkv");
    }

    /// SIGTERM and wait for the exit status.
    pub fn terminate(&mut self, id: u64) -> ExitStatus {
        self.0
            .terminate(id, WAIT)
            .unwrap_or_else(|e| panic!("node {id} ignored SIGTERM: {e}"))
    }

    /// Waits until node `id`'s client port accepts connections.
    pub fn wait_listening(&self, id: u64) {
        if let Err(e) = self.0.wait_listening(id, WAIT) {
            panic!("{e}\n{}", self.log(id));
        }
    }

    /// Waits for a running node that says it is the leader; returns its id.
    pub fn leader(&self) -> u64 {
        self.0.wait_leader(WAIT).unwrap_or_else(|e| panic!("{e}"))
    }

    /// PUT retried until 204 (503s happen during elections).
    pub fn put_ok(&self, id: u64, key: &str, value: &str) {
        if let Err(e) = self.0.put_ok(id, key, value, WAIT) {
            panic!("{e}\n{}", self.log(id));
        }
    }

    /// Linearizable GET retried through 503s; returns the value or None.
    pub fn get_ok(&self, id: u64, key: &str) -> Option<String> {
        self.0
            .get_ok(id, key, WAIT)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.log(id)))
    }

    /// Waits until node `id` has applied at least `index`.
    pub fn wait_applied(&self, id: u64, index: u64) {
        if let Err(e) = self.0.wait_applied(id, index, WAIT) {
            panic!("{e}\n{}", self.log(id));
        }
    }
}
