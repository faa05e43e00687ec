//! A test harness that runs real `raftkv` processes on ephemeral loopback
//! ports with temp data dirs, and kills them when dropped.

#![allow(dead_code)]

pub mod etcd;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use reqwest::StatusCode;

/// Upper bound for anything a test waits for.
pub const WAIT: Duration = Duration::from_secs(60);

/// One node of a test cluster.
pub struct Node {
    pub id: u64,
    pub peer_url: String,
    pub client_port: u16,
    pub data_dir: PathBuf,
    pub extra_args: Vec<String>,
    pub child: Option<Child>,
}

/// A cluster of raftkv processes.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub nodes: BTreeMap<u64, Node>,
    pub http: Client,
    pub args: Vec<String>,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("an ephemeral port")
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

    /// A cluster with no node yet.
    pub fn new(args: &[&str]) -> Cluster {
        Cluster {
            dir: tempfile::tempdir().expect("temp dir"),
            nodes: BTreeMap::new(),
            http: Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .expect("http client"),
            args: args.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Reserves ports and a data dir for node `id`.
    pub fn define_node(&mut self, id: u64, extra_args: &[&str]) {
        let node = Node {
            id,
            peer_url: format!("http://127.0.0.1:{}", free_port()),
            client_port: free_port(),
            data_dir: self.dir.path().join(format!("raftkv-{id}")),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        self.nodes.insert(id, node);
    }

    /// `--cluster` value: every defined node's peer URL in id order.
    pub fn cluster_flag(&self) -> String {
        self.nodes
            .values()
            .map(|n| n.peer_url.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts (or restarts) node `id`'s process.
    pub fn spawn(&mut self, id: u64, join: bool) {
        let cluster = self.cluster_flag();
        let args = self.args.clone();
        let node = self.nodes.get_mut(&id).expect("defined node");
        assert!(node.child.is_none(), "node {id} is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.data_dir.with_extension("log"))
            .expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_raftkv"));
        command
            .args(["--id", &id.to_string(), "--cluster", &cluster])
            .args(["--port", &node.client_port.to_string()])
            .args(["--listen-addr", "127.0.0.1"])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(&args)
            .args(&node.extra_args)
            .env("RUST_LOG", "info,raft_rs=warn")
            .stdout(Stdio::null())
            .stderr(log);
        if join {
            command.arg("--join");
        }
        node.child = Some(command.spawn().expect("start raftkv"));
    }

    pub fn url(&self, id: u64, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.nodes[&id].client_port, path)
    }

    /// SIGKILL, no chance to flush anything.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.nodes.get_mut(&id).and_then(|n| n.child.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for the exit status.
    pub fn terminate(&mut self, id: u64) -> ExitStatus {
        let mut child = self
            .nodes
            .get_mut(&id)
            .and_then(|n| n.child.take())
            .expect("running node");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        wait_exit(&mut child, WAIT).unwrap_or_else(|| panic!("node {id} ignored SIGTERM"))
    }

    /// Waits for node `id` to exit on its own.
    pub fn wait_exit(&mut self, id: u64, timeout: Duration) -> Option<ExitStatus> {
        let node = self.nodes.get_mut(&id)?;
        let status = wait_exit(node.child.as_mut()?, timeout)?;
        node.child = None;
        Some(status)
    }

    /// Waits until node `id`'s client port accepts connections.
    pub fn wait_listening(&self, id: u64) {
        let addr = format!("127.0.0.1:{}", self.nodes[&id].client_port);
        let deadline = Instant::now() + WAIT;
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "node {id} never listened on {addr}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn status(&self, id: u64) -> Option<serde_json::Value> {
        let response = self.http.get(self.url(id, "/v1/status")).send().ok()?;
        response.json().ok()
    }

    /// Waits until some running node reports a leader that is itself a
    /// running node which agrees; returns its id.
    pub fn leader(&self) -> u64 {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            for (id, node) in &self.nodes {
                if node.child.is_none() {
                    continue;
                }
                let Some(status) = self.status(*id) else {
                    continue;
                };
                if status["leader_id"].as_u64() == Some(*id) {
                    return *id;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no leader within {WAIT:?}");
    }

    pub fn put(&self, id: u64, key: &str, value: &str) -> reqwest::Result<StatusCode> {
        self.http
            .put(self.url(id, key))
            .body(value.to_string())
            .send()
            .map(|r| r.status())
    }

    /// PUT retried until 204 (503s happen during elections).
    pub fn put_ok(&self, id: u64, key: &str, value: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.put(id, key, value) {
                Ok(StatusCode::NO_CONTENT) => return,
                Ok(status) if Instant::now() < deadline && status.is_server_error() => {}
                Err(_) if Instant::now() < deadline => {}
                other => panic!("PUT {key} on node {id}: {other:?}"),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn get(&self, id: u64, key: &str) -> reqwest::Result<(StatusCode, String)> {
        let response = self.http.get(self.url(id, key)).send()?;
        let status = response.status();
        Ok((status, response.text()?))
    }

    /// Linearizable GET retried through 503s; returns the value or None.
    pub fn get_ok(&self, id: u64, key: &str) -> Option<String> {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.get(id, key) {
                Ok((StatusCode::OK, body)) => return Some(body),
                Ok((StatusCode::NOT_FOUND, _)) => return None,
                Ok((status, body)) if Instant::now() < deadline && status.is_server_error() => {
                    let _ = body;
                }
                Err(_) if Instant::now() < deadline => {}
                other => panic!("GET {key} on node {id}: {other:?}"),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until node `id` has applied at least `index`.
    pub fn wait_applied(&self, id: u64, index: u64) {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Some(status) = self.status(id) {
                if status["applied_index"].as_u64().unwrap_or(0) >= index {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("node {id} did not apply index {index} within {WAIT:?}");
    }

    /// The node's log, for failure messages.
    pub fn log(&self, id: u64) -> String {
        std::fs::read_to_string(self.nodes[&id].data_dir.with_extension("log")).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Flags that make elections fast enough for tests.
pub const FAST: &[&str] = &["--tick-ms", "50"];
