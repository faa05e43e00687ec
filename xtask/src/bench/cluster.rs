//! A 3-node raftkv cluster on loopback for the benchmark: `testcluster`'s
//! processes (free ports, temp data dirs, logs to files), stopped (SIGTERM,
//! then kill) on drop.
//!
//! The harness is blocking; the benchmark runs on a multi-threaded tokio
//! runtime, so harness calls go through `block_in_place`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::Method;
use testcluster::{Cluster, ClusterConfig};
use tokio::task::block_in_place;

use super::client::Connection;
use super::BenchError;

/// Nodes in the benchmark cluster.
const NODE_COUNT: u64 = 3;
/// How long a fresh cluster may take to elect a leader and accept a write.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on one probe write.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1_000);
/// How long a node may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running cluster; dropping it stops every node.
pub(crate) struct BenchCluster {
    procs: Cluster,
}

impl BenchCluster {
    /// Starts `NODE_COUNT` nodes of `binary` and waits for a leader that
    /// accepts writes.
    pub(crate) async fn start(binary: &Path) -> Result<Self, BenchError> {
        let procs = block_in_place(|| Cluster::start(ClusterConfig::new(binary), NODE_COUNT))
            .map_err(|e| BenchError::Cluster(e.to_string()))?;
        for node in procs.nodes() {
            eprintln!(
                "bench: node {} pid {} client http://127.0.0.1:{} log {}",
                node.id,
                node.pid().unwrap_or(0),
                node.client_port,
                node.log_path.display()
            );
        }
        let mut this = Self { procs };
        if let Err(e) = this.wait_ready().await {
            let logs = this.procs.keep_data().unwrap_or_default();
            return Err(BenchError::Cluster(format!(
                "{e}; node logs kept in {}",
                logs.display()
            )));
        }
        Ok(this)
    }

    /// Client addresses of all nodes, in id order.
    pub(crate) fn client_addrs(&self) -> Vec<SocketAddr> {
        let procs = &self.procs;
        procs
            .ids()
            .into_iter()
            .filter_map(|id| procs.client_addr(id))
            .collect()
    }

    /// Process ids of the running nodes.
    pub(crate) fn pids(&self) -> Vec<u32> {
        let procs = &self.procs;
        procs
            .ids()
            .into_iter()
            .filter_map(|id| procs.pid(id))
            .collect()
    }

    /// The current leader's client address (asks every node's status).
    pub(crate) async fn leader_addr(&mut self) -> Result<SocketAddr, BenchError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            self.check_alive()?;
            let leader = block_in_place(|| self.procs.leader_now());
            if let Some(addr) = leader.and_then(|id| self.procs.client_addr(id)) {
                return Ok(addr);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(BenchError::Cluster(format!(
            "no leader after {} s",
            READY_TIMEOUT.as_secs()
        )))
    }

    async fn wait_ready(&mut self) -> Result<(), BenchError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            let leader = self.leader_addr().await?;
            if probe_write(leader).await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(BenchError::Cluster(format!(
            "no write accepted within {} s",
            READY_TIMEOUT.as_secs()
        )))
    }

    /// Fails if a node has exited (a crash mid-benchmark must not pass
    /// silently as low throughput).
    pub(crate) fn check_alive(&mut self) -> Result<(), BenchError> {
        match self.procs.exited().first() {
            Some((id, exit)) => Err(BenchError::Cluster(format!("node {id} exited: {exit}"))),
            None => Ok(()),
        }
    }

    /// Stops every node: SIGTERM, then kill after `STOP_TIMEOUT`.
    pub(crate) fn stop(&mut self) {
        for id in block_in_place(|| self.procs.stop_all(STOP_TIMEOUT)) {
            eprintln!("bench: node {id} ignored SIGTERM; killed it");
        }
    }
}

impl Drop for BenchCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether a PUT through `addr` is acknowledged.
async fn probe_write(addr: SocketAddr) -> bool {
    let request = async {
        let mut connection = Connection::open(addr).await.ok()?;
        let (code, _) = connection
            .send(Method::PUT, "/bench-ready", Bytes::from_static(b"ready"))
            .await
            .ok()?;
        code.is_success().then_some(())
    };
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, request).await,
        Ok(Some(()))
    )
}
