//! An in-process cluster of raftnode nodes talking over real loopback HTTP.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use raftnode::{Consensus, NodeConfig, RaftNode, RestoreError, SnapshotJob, StateMachine};
use tokio::net::TcpListener;

/// Upper bound for anything a test waits for.
pub const WAIT: Duration = Duration::from_secs(30);

/// Applied entries as (index, payload), in order.
pub type AppliedLog = Arc<Mutex<Vec<(u64, Vec<u8>)>>>;

/// A state machine that records every applied entry, in order.
#[derive(Clone, Default)]
pub struct Recorder {
    pub applied: AppliedLog,
    /// `(above, count)`: the next `count` restores of a snapshot at an
    /// index above `above` fail.
    pub restore_failures: Arc<Mutex<(u64, u32)>>,
}

impl StateMachine for Recorder {
    fn apply(&mut self, index: u64, data: &[u8]) {
        self.applied.lock().push((index, data.to_vec()));
    }

    fn snapshot(&mut self) -> SnapshotJob {
        let applied = self.applied.lock().clone();
        Box::new(move || encode(&applied))
    }

    fn restore(&mut self, index: u64, mut data: &[u8]) -> Result<(), RestoreError> {
        {
            let mut failures = self.restore_failures.lock();
            if index > failures.0 && failures.1 > 0 {
                failures.1 -= 1;
                return Err(RestoreError {
                    index,
                    reason: "injected restore failure".into(),
                });
            }
        }
        let bad = || RestoreError {
            index,
            reason: "truncated recorder snapshot".into(),
        };
        let mut applied = Vec::new();
        while !data.is_empty() {
            if data.len() < 12 {
                return Err(bad());
            }
            let entry_index = u64::from_be_bytes(data[..8].try_into().unwrap());
            let len = u32::from_be_bytes(data[8..12].try_into().unwrap()) as usize;
            if data.len() < 12 + len {
                return Err(bad());
            }
            applied.push((entry_index, data[12..12 + len].to_vec()));
            data = &data[12 + len..];
        }
        *self.applied.lock() = applied;
        Ok(())
    }
}

fn encode(applied: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (index, data) in applied {
        out.extend_from_slice(&index.to_be_bytes());
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(data);
    }
    out
}

impl Recorder {
    pub fn payloads(&self) -> Vec<Vec<u8>> {
        self.applied.lock().iter().map(|(_, d)| d.clone()).collect()
    }
}

pub struct TestNode {
    pub node: Arc<RaftNode>,
    pub recorder: Recorder,
    pub server: tokio::task::JoinHandle<()>,
}

pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub members: Vec<(u64, String)>,
    pub listeners: Vec<Option<std::net::TcpListener>>,
    pub nodes: Vec<Option<TestNode>>,
    pub tune: fn(&mut NodeConfig),
}

fn fast(config: &mut NodeConfig) {
    config.tick_ms = 20;
    config.request_timeout_ms = 3_000;
}

impl TestCluster {
    /// Starts `n` nodes with fast ticks.
    pub async fn start(n: u64) -> TestCluster {
        Self::start_with(n, fast).await
    }

    pub async fn start_with(n: u64, tune: fn(&mut NodeConfig)) -> TestCluster {
        // Logs of failing tests: RUST_LOG=debug cargo test ...
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let mut cluster = TestCluster {
            dir: tempfile::tempdir().unwrap(),
            members: Vec::new(),
            listeners: Vec::new(),
            nodes: Vec::new(),
            tune,
        };
        for id in 1..=n {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            cluster.members.push((id, url));
            cluster.listeners.push(Some(listener));
            cluster.nodes.push(None);
        }
        for id in 1..=n {
            cluster.boot(id, false, Recorder::default());
        }
        cluster
    }

    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node-{id}"))
    }

    /// Starts node `id` (fresh, restart or join) with `recorder`.
    pub fn boot(&mut self, id: u64, join: bool, recorder: Recorder) {
        self.boot_machine(id, join, recorder.clone(), Box::new(recorder));
    }

    /// Starts node `id` with `machine` (which should apply into `recorder`).
    pub fn boot_machine(
        &mut self,
        id: u64,
        join: bool,
        recorder: Recorder,
        machine: Box<dyn StateMachine>,
    ) {
        let mut config = NodeConfig::new(id, self.members.clone(), self.data_dir(id));
        config.join = join;
        (self.tune)(&mut config);
        let node = RaftNode::start(config, machine).expect("node starts");
        let listener = match self.listeners[id as usize - 1].take() {
            Some(listener) => listener,
            None => {
                let addr = self.members[id as usize - 1]
                    .1
                    .trim_start_matches("http://")
                    .to_string();
                std::net::TcpListener::bind(addr).expect("rebind the peer port")
            }
        };
        listener.set_nonblocking(true).unwrap();
        let listener = TcpListener::from_std(listener).unwrap();
        let router = node.transport().router();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        self.nodes[id as usize - 1] = Some(TestNode {
            node: Arc::new(node),
            recorder,
            server,
        });
    }

    /// Adds a member slot (for a node that will join).
    pub fn define(&mut self) -> u64 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let id = self.members.len() as u64 + 1;
        self.members
            .push((id, format!("http://{}", listener.local_addr().unwrap())));
        self.listeners.push(Some(listener));
        self.nodes.push(None);
        id
    }

    pub fn node(&self, id: u64) -> &TestNode {
        self.nodes[id as usize - 1].as_ref().expect("running node")
    }

    pub fn consensus(&self, id: u64) -> Arc<dyn Consensus> {
        self.node(id).node.consensus()
    }

    pub fn running(&self) -> Vec<u64> {
        (1..=self.nodes.len() as u64)
            .filter(|id| self.nodes[*id as usize - 1].is_some())
            .collect()
    }

    /// Stops node `id` cleanly and frees its port.
    pub async fn stop(&mut self, id: u64) {
        if let Some(test_node) = self.nodes[id as usize - 1].take() {
            let _ = test_node.node.shutdown().await;
            test_node.server.abort();
            let _ = test_node.server.await;
        }
    }

    /// Waits until one of `among` is leader and the others agree.
    pub async fn leader_among(&self, among: &[u64]) -> u64 {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            for id in among {
                let status = self.consensus(*id).status();
                if status.leader_id == Some(*id)
                    && among
                        .iter()
                        .all(|other| self.consensus(*other).status().leader_id == Some(*id))
                {
                    return *id;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no agreed leader among {among:?}");
    }

    pub async fn leader(&self) -> u64 {
        self.leader_among(&self.running()).await
    }

    /// Proposes through `id` until accepted, then waits until `id` applied it.
    pub async fn propose_applied(&self, id: u64, data: &[u8]) {
        let deadline = Instant::now() + WAIT;
        loop {
            assert!(
                Instant::now() < deadline,
                "proposal through {id} never applied"
            );
            if self.consensus(id).propose(data.to_vec()).await.is_ok() {
                let until = Instant::now() + Duration::from_secs(2);
                while Instant::now() < until {
                    if self.node(id).recorder.payloads().iter().any(|p| p == data) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            } else {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// Waits until every node in `ids` applied exactly the same sequence of
    /// at least `count` payloads, and returns it.
    pub async fn converged(&self, ids: &[u64], count: usize) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + WAIT;
        loop {
            let logs: Vec<_> = ids
                .iter()
                .map(|id| self.node(*id).recorder.payloads())
                .collect();
            if logs[0].len() >= count && logs.iter().all(|log| *log == logs[0]) {
                return logs[0].clone();
            }
            assert!(
                Instant::now() < deadline,
                "nodes {ids:?} did not converge: lengths {:?}",
                logs.iter().map(Vec::len).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Cuts node `a` off from every other node, in both directions.
    pub fn isolate(&self, a: u64) {
        for b in self.running() {
            if b != a {
                self.node(a).node.transport().faults().cut(b);
                self.node(b).node.transport().faults().cut(a);
            }
        }
    }

    pub fn heal_all(&self) {
        for id in self.running() {
            self.node(id).node.transport().faults().heal_all();
        }
    }
}

/// POSTs `body` to `path` on the peer port of the node at `url` with the
/// identity headers of a message from `from` to `to` (cluster id 0), over
/// plain HTTP/1.1 as a peer would; returns the status code.
pub async fn post_as_peer(url: &str, path: &str, from: u64, to: u64, body: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {}\r\n\
         {}: 0\r\n{}: {to}\r\n{}: {from}\r\nconnection: close\r\n\r\n",
        body.len(),
        transport::wire::HEADER_CLUSTER_ID,
        transport::wire::HEADER_TO,
        transport::wire::HEADER_FROM,
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"))
}

impl TestCluster {
    /// Proposes `data` through the leader and waits until every node in
    /// `ids` applied it: the nodes are alive and applying.
    pub async fn applied_everywhere(&self, ids: &[u64], data: &[u8]) {
        let leader = self.leader().await;
        self.propose_applied(leader, data).await;
        let deadline = Instant::now() + WAIT;
        for id in ids {
            while !self.node(*id).recorder.payloads().iter().any(|p| p == data) {
                assert!(
                    Instant::now() < deadline,
                    "node {id} never applied {data:?}"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }

    /// Whether node `id`'s Raft loop has ended.
    pub async fn has_stopped(&self, id: u64) -> bool {
        tokio::time::timeout(Duration::from_millis(1), self.node(id).node.stopped())
            .await
            .is_ok()
    }
}
