//! A 3-node raftkv cluster on loopback for the benchmark: free ports, temp
//! data dirs, logs to files, stopped (SIGTERM, then kill) on drop.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::{Method, StatusCode};

use super::client::Connection;
use super::BenchError;

/// Nodes in the benchmark cluster.
const NODE_COUNT: usize = 3;
/// How long a fresh cluster may take to elect a leader and accept a write.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on one status or probe request.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1_000);
/// How long a node may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// One running node.
struct Node {
    id: u64,
    client_addr: SocketAddr,
    child: Child,
}

/// A running cluster; dropping it stops every node.
pub(crate) struct BenchCluster {
    nodes: Vec<Node>,
    /// Data dirs and logs; kept on disk if the cluster failed to start.
    dir: Option<tempfile::TempDir>,
}

impl BenchCluster {
    /// Starts `NODE_COUNT` nodes of `binary` and waits for a leader that
    /// accepts writes.
    pub(crate) async fn start(binary: &Path) -> Result<Self, BenchError> {
        let dir = tempfile::Builder::new()
            .prefix("raftkv-bench.")
            .tempdir()
            .map_err(|e| BenchError::io("create a temp dir", e))?;
        let ports = free_ports(2 * NODE_COUNT)?;
        let (peer_ports, client_ports) = ports.split_at(NODE_COUNT);
        let cluster: Vec<String> = peer_ports
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect();
        let mut this = Self {
            nodes: Vec::new(),
            dir: Some(dir),
        };
        for (index, client_port) in client_ports.iter().enumerate() {
            let id = index as u64 + 1;
            let node = this.spawn(binary, id, &cluster, *client_port)?;
            this.nodes.push(node);
        }
        if let Err(e) = this.wait_ready().await {
            let kept = this.dir.take().map(tempfile::TempDir::keep);
            let logs = kept.map(|p| p.display().to_string()).unwrap_or_default();
            return Err(BenchError::Cluster(format!(
                "{e}; node logs kept in {logs}"
            )));
        }
        Ok(this)
    }

    fn spawn(
        &self,
        binary: &Path,
        id: u64,
        cluster: &[String],
        client_port: u16,
    ) -> Result<Node, BenchError> {
        let dir = self.data_root();
        let log_path = dir.join(format!("node-{id}.log"));
        let log = File::create(&log_path).map_err(|e| BenchError::io("create a node log", e))?;
        let log_err = log
            .try_clone()
            .map_err(|e| BenchError::io("clone a node log handle", e))?;
        let child = Command::new(binary)
            .args(["--id", &id.to_string()])
            .args(["--cluster", &cluster.join(",")])
            .args(["--port", &client_port.to_string()])
            .args(["--listen-addr", "127.0.0.1"])
            .arg("--data-dir")
            .arg(dir.join(format!("raftkv-{id}")))
            .env("RUST_LOG_STYLE", "never")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| BenchError::io(&format!("start {}", binary.display()), e))?;
        let client_addr = SocketAddr::from(([127, 0, 0, 1], client_port));
        eprintln!(
            "bench: node {id} pid {} client http://{client_addr} log {}",
            child.id(),
            log_path.display()
        );
        Ok(Node {
            id,
            client_addr,
            child,
        })
    }

    fn data_root(&self) -> PathBuf {
        self.dir
            .as_ref()
            .map(|d| d.path().to_path_buf())
            .unwrap_or_else(std::env::temp_dir)
    }

    /// Client addresses of all nodes, in id order.
    pub(crate) fn client_addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.client_addr).collect()
    }

    /// The current leader's client address (asks every node's status).
    pub(crate) async fn leader_addr(&mut self) -> Result<SocketAddr, BenchError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            self.check_alive()?;
            if let Some(addr) = self.find_leader().await {
                return Ok(addr);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(BenchError::Cluster(format!(
            "no leader after {} s",
            READY_TIMEOUT.as_secs()
        )))
    }

    async fn find_leader(&self) -> Option<SocketAddr> {
        for node in &self.nodes {
            let Some(status) = status(node.client_addr).await else {
                continue;
            };
            let leader_id = status.get("leader_id").and_then(serde_json::Value::as_u64);
            if let Some(leader) = self.nodes.iter().find(|n| Some(n.id) == leader_id) {
                return Some(leader.client_addr);
            }
        }
        None
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
        for node in &mut self.nodes {
            if let Ok(Some(exit)) = node.child.try_wait() {
                return Err(BenchError::Cluster(format!(
                    "node {} exited: {exit}",
                    node.id
                )));
            }
        }
        Ok(())
    }

    /// Stops every node: SIGTERM, then kill after `STOP_TIMEOUT`.
    pub(crate) fn stop(&mut self) {
        for node in &self.nodes {
            let _ = Command::new("kill")
                .args(["-TERM", &node.child.id().to_string()])
                .status();
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        for node in &mut self.nodes {
            while Instant::now() < deadline && matches!(node.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            if matches!(node.child.try_wait(), Ok(None)) {
                eprintln!("bench: node {} ignored SIGTERM; killing it", node.id);
                let _ = node.child.kill();
                let _ = node.child.wait();
            }
        }
        self.nodes.clear();
    }
}

impl Drop for BenchCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `GET /v1/status` as JSON, or `None` if the node does not answer.
async fn status(addr: SocketAddr) -> Option<serde_json::Value> {
    let request = async {
        let mut connection = Connection::open(addr).await.ok()?;
        let (code, body) = connection
            .send(Method::GET, "/v1/status", Bytes::new())
            .await
            .ok()?;
        (code == StatusCode::OK).then_some(())?;
        serde_json::from_slice(&body).ok()
    };
    tokio::time::timeout(PROBE_TIMEOUT, request).await.ok()?
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

/// `count` distinct free loopback ports (bound together, then released).
pub(crate) fn free_ports(count: usize) -> Result<Vec<u16>, BenchError> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| BenchError::io("bind a free port", e))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| BenchError::io("read a bound port", e))
}
