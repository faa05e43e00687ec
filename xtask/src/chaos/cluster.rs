//! Real `raftkv` processes on loopback: spawn, kill -9, pause, partition
//! through the transport's fault route, and change membership.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use reqwest::StatusCode;

use super::ChaosError;

/// Where clients may send requests: `(node id, client port)` of the
/// current members. Shared with the workers; the nemesis updates it.
pub(crate) type Targets = Arc<RwLock<Vec<(u64, u16)>>>;

/// The flags every node gets, from the suite's configuration.
#[derive(Debug, Clone)]
pub(crate) struct NodeFlags {
    pub tick_ms: u64,
    pub election_ticks: u64,
    pub request_timeout_ms: u64,
    pub snapshot_count: u64,
    pub catch_up_entries: u64,
}

struct NodeProc {
    peer_url: String,
    client_port: u16,
    data_dir: PathBuf,
    child: Option<Child>,
    paused: bool,
}

/// The cluster under test. Every process it started is killed on drop.
pub(crate) struct Cluster {
    binary: PathBuf,
    flags: NodeFlags,
    data_root: PathBuf,
    logs_dir: PathBuf,
    nodes: BTreeMap<u64, NodeProc>,
    members: BTreeSet<u64>,
    http: Client,
    targets: Targets,
}

fn free_port() -> Result<u16, ChaosError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|source| ChaosError::Io {
            what: "reserving an ephemeral port".into(),
            source,
        })
}

impl Cluster {
    /// Starts `nodes` members with data under `data_root` and logs in
    /// `logs_dir`, and waits for a leader.
    pub fn start(
        binary: &Path,
        flags: NodeFlags,
        nodes: u64,
        data_root: &Path,
        logs_dir: &Path,
    ) -> Result<Cluster, ChaosError> {
        std::fs::create_dir_all(logs_dir).map_err(|source| ChaosError::Io {
            what: format!("creating {}", logs_dir.display()),
            source,
        })?;
        let http = Client::builder()
            .timeout(Duration::from_millis(flags.request_timeout_ms + 2_000))
            .connect_timeout(Duration::from_millis(500))
            .build()?;
        let mut cluster = Cluster {
            binary: binary.to_path_buf(),
            flags,
            data_root: data_root.to_path_buf(),
            logs_dir: logs_dir.to_path_buf(),
            nodes: BTreeMap::new(),
            members: BTreeSet::new(),
            http,
            targets: Arc::new(RwLock::new(Vec::new())),
        };
        for id in 1..=nodes {
            cluster.define(id)?;
            cluster.members.insert(id);
        }
        for id in 1..=nodes {
            cluster.spawn(id, false)?;
        }
        cluster.publish_targets();
        cluster.wait_leader(Duration::from_secs(30))?;
        Ok(cluster)
    }

    /// The election timeout in milliseconds (the shortest one raft-rs picks).
    pub fn election_timeout_ms(&self) -> u64 {
        self.flags.tick_ms * self.flags.election_ticks
    }

    /// The shared list of request targets.
    pub fn targets(&self) -> Targets {
        self.targets.clone()
    }

    /// Current voting members (as the harness tracks them).
    pub fn members(&self) -> Vec<u64> {
        self.members.iter().copied().collect()
    }

    /// The HTTP client (request timeout above the server's).
    pub fn http(&self) -> &Client {
        &self.http
    }

    /// The client URL of `path` on node `id`.
    pub fn url(&self, id: u64, path: &str) -> String {
        let port = self.nodes.get(&id).map(|n| n.client_port).unwrap_or(0);
        format!("http://127.0.0.1:{port}{path}")
    }

    fn define(&mut self, id: u64) -> Result<(), ChaosError> {
        let node = NodeProc {
            peer_url: format!("http://127.0.0.1:{}", free_port()?),
            client_port: free_port()?,
            data_dir: self.data_root.join(format!("raftkv-{id}")),
            child: None,
            paused: false,
        };
        self.nodes.insert(id, node);
        Ok(())
    }

    fn publish_targets(&self) {
        let targets: Vec<(u64, u16)> = self
            .members
            .iter()
            .filter_map(|id| self.nodes.get(id).map(|n| (*id, n.client_port)))
            .collect();
        let mut shared = self.targets.write().unwrap_or_else(|e| e.into_inner());
        *shared = targets;
    }

    /// Starts (or restarts) node `id`. Ids are positions in `--cluster`, so
    /// the flag lists every node ever defined, in id order.
    pub fn spawn(&mut self, id: u64, join: bool) -> Result<(), ChaosError> {
        let cluster_flag: Vec<&str> = self.nodes.values().map(|n| n.peer_url.as_str()).collect();
        let cluster_flag = cluster_flag.join(",");
        let log_path = self.logs_dir.join(format!("node-{id}.log"));
        let node = self
            .nodes
            .get_mut(&id)
            .ok_or_else(|| ChaosError::Cluster(format!("node {id} is not defined")))?;
        assert!(node.child.is_none(), "node {id} is already running");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|source| ChaosError::Io {
                what: format!("opening {}", log_path.display()),
                source,
            })?;
        let mut command = Command::new(&self.binary);
        command
            .args(["--id", &id.to_string(), "--cluster", &cluster_flag])
            .args([
                "--port",
                &node.client_port.to_string(),
                "--listen-addr",
                "127.0.0.1",
            ])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(["--tick-ms", &self.flags.tick_ms.to_string()])
            .args(["--election-ticks", &self.flags.election_ticks.to_string()])
            .args([
                "--request-timeout-ms",
                &self.flags.request_timeout_ms.to_string(),
            ])
            .args(["--snapshot-count", &self.flags.snapshot_count.to_string()])
            .args([
                "--catch-up-entries",
                &self.flags.catch_up_entries.to_string(),
            ])
            .arg("--enable-fault-injection")
            .env("RUST_LOG", "info,raft_rs=warn")
            .env("RUST_LOG_STYLE", "never")
            .stdout(Stdio::null())
            .stderr(log);
        if join {
            command.arg("--join");
        }
        let child = command.spawn().map_err(|source| ChaosError::Spawn {
            binary: self.binary.clone(),
            source,
        })?;
        node.child = Some(child);
        node.paused = false;
        tracing::info!(node = id, join, "started");
        Ok(())
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self, id: u64) {
        if let Some(node) = self.nodes.get_mut(&id) {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
                tracing::info!(node = id, "killed");
            }
            node.paused = false;
        }
    }

    /// Whether node `id`'s process is running (not killed, not exited).
    pub fn is_running(&mut self, id: u64) -> bool {
        let Some(node) = self.nodes.get_mut(&id) else {
            return false;
        };
        match node.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(_) => {
                node.child = None;
                false
            }
            None => false,
        }
    }

    /// Members whose process exited although the harness did not stop it
    /// (a crash, or a signal from outside), with their exit status.
    pub fn exited_by_themselves(&mut self) -> Vec<(u64, String)> {
        let mut exited = Vec::new();
        for id in self.members() {
            let Some(node) = self.nodes.get_mut(&id) else {
                continue;
            };
            if let Some(Ok(Some(status))) = node.child.as_mut().map(|c| c.try_wait()) {
                node.child = None;
                exited.push((id, status.to_string()));
            }
        }
        exited
    }

    /// SIGSTOP (`pause = true`) or SIGCONT.
    pub fn pause(&mut self, id: u64, pause: bool) -> Result<(), ChaosError> {
        let node = self
            .nodes
            .get_mut(&id)
            .ok_or_else(|| ChaosError::Cluster(format!("node {id} is not defined")))?;
        let Some(child) = node.child.as_ref() else {
            return Ok(());
        };
        let signal = if pause { "-STOP" } else { "-CONT" };
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .map_err(|source| ChaosError::Io {
                what: "running kill".into(),
                source,
            })?;
        if !status.success() {
            return Err(ChaosError::Cluster(format!(
                "kill {signal} of node {id} failed"
            )));
        }
        node.paused = pause;
        Ok(())
    }

    /// Sends fault commands (one per line) to node `id`'s peer port.
    pub fn fault(&self, id: u64, commands: &str) -> Result<(), ChaosError> {
        let node = self
            .nodes
            .get(&id)
            .ok_or_else(|| ChaosError::Cluster(format!("node {id} is not defined")))?;
        // A node restarted by the previous fault may not listen yet: fault
        // commands are idempotent, so a refused connection is retried.
        let deadline = Instant::now() + Duration::from_secs(10);
        let response = loop {
            match self
                .http
                .post(format!("{}/raft/faults", node.peer_url))
                .body(commands.to_string())
                .send()
            {
                Ok(response) => break response,
                Err(e) if e.is_connect() && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(e.into()),
            }
        };
        if response.status() != StatusCode::NO_CONTENT {
            let status = response.status();
            let body = response.text().unwrap_or_default();
            return Err(ChaosError::Cluster(format!(
                "fault route of node {id}: {status} {body}"
            )));
        }
        Ok(())
    }

    /// Cuts every link between a node of `side_a` and a node of `side_b`,
    /// at both ends.
    pub fn cut(&self, side_a: &[u64], side_b: &[u64]) -> Result<(), ChaosError> {
        for &a in side_a {
            let lines: String = side_b.iter().map(|b| format!("cut {b}\n")).collect();
            self.fault(a, &lines)?;
        }
        for &b in side_b {
            let lines: String = side_a.iter().map(|a| format!("cut {a}\n")).collect();
            self.fault(b, &lines)?;
        }
        Ok(())
    }

    /// Removes every network fault on every running node.
    pub fn heal_network(&mut self) -> Result<(), ChaosError> {
        for id in self.members() {
            if self.is_running(id) {
                self.fault(id, "heal-all\n")?;
            }
        }
        Ok(())
    }

    /// Undoes everything: SIGCONT paused nodes, restarts dead members,
    /// removes network faults.
    pub fn heal_all(&mut self) -> Result<(), ChaosError> {
        for id in self.members() {
            if self.nodes.get(&id).is_some_and(|n| n.paused) {
                self.pause(id, false)?;
            }
            if !self.is_running(id) {
                self.spawn(id, false)?;
            }
        }
        self.wait_listening(Duration::from_secs(30))?;
        self.heal_network()
    }

    /// Waits until every member's client port accepts connections.
    pub fn wait_listening(&self, timeout: Duration) -> Result<(), ChaosError> {
        let deadline = Instant::now() + timeout;
        for id in self.members() {
            let addr = format!("127.0.0.1:{}", self.nodes[&id].client_port);
            while std::net::TcpStream::connect(&addr).is_err() {
                if Instant::now() > deadline {
                    return Err(ChaosError::Cluster(format!(
                        "node {id} never listened on {addr}"
                    )));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    /// The `/v1/status` JSON of node `id`, if it answers.
    pub fn status(&self, id: u64) -> Option<serde_json::Value> {
        let response = self
            .http
            .get(self.url(id, "/v1/status"))
            .timeout(Duration::from_millis(500))
            .send()
            .ok()?;
        response.json().ok()
    }

    /// A member that says it is the leader, if one does now.
    pub fn leader_now(&self) -> Option<u64> {
        self.members
            .iter()
            .copied()
            .filter(|id| !self.nodes[id].paused && self.nodes[id].child.is_some())
            .find(|id| self.status(*id).and_then(|s| s["leader_id"].as_u64()) == Some(*id))
    }

    /// Waits for a member that says it is the leader.
    pub fn wait_leader(&self, timeout: Duration) -> Result<u64, ChaosError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(leader) = self.leader_now() {
                return Ok(leader);
            }
            if Instant::now() > deadline {
                return Err(ChaosError::Cluster(format!("no leader within {timeout:?}")));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Removes `victim` from the configuration (retrying through 503s) and
    /// waits for its process to exit, killing it after `timeout`.
    pub fn remove_member(&mut self, victim: u64, timeout: Duration) -> Result<(), ChaosError> {
        let deadline = Instant::now() + timeout;
        self.change_membership(victim, None, deadline)?;
        self.members.remove(&victim);
        self.publish_targets();
        while self.is_running(victim) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if self.is_running(victim) {
            tracing::warn!(node = victim, "removed node did not exit; killing it");
            self.kill(victim);
        }
        Ok(())
    }

    /// Adds a brand-new node (next free id, fresh data dir) and starts it
    /// with `--join`; returns its id.
    pub fn add_fresh_member(&mut self, timeout: Duration) -> Result<u64, ChaosError> {
        let deadline = Instant::now() + timeout;
        let id = self.nodes.keys().next_back().copied().unwrap_or(0) + 1;
        self.define(id)?;
        let url = self.nodes[&id].peer_url.clone();
        self.change_membership(id, Some(&url), deadline)?;
        self.members.insert(id);
        self.spawn(id, true)?;
        self.wait_listening(deadline.saturating_duration_since(Instant::now()))?;
        self.publish_targets();
        Ok(id)
    }

    /// `POST /<id>` (add, with `url`) or `DELETE /<id>` (remove) on the
    /// leader, until the leader's member list shows the change.
    fn change_membership(
        &self,
        id: u64,
        url: Option<&str>,
        deadline: Instant,
    ) -> Result<(), ChaosError> {
        let adding = url.is_some();
        loop {
            if let Ok(leader) = self.wait_leader(Duration::from_secs(5)) {
                if self.has_member(leader, id) == Some(adding) {
                    return Ok(());
                }
                let request = match url {
                    Some(url) => self
                        .http
                        .post(self.url(leader, &format!("/{id}")))
                        .body(url.to_string()),
                    None => self.http.delete(self.url(leader, &format!("/{id}"))),
                };
                if let Ok(response) = request.send() {
                    let status = response.status();
                    if status == StatusCode::NO_CONTENT {
                        return Ok(());
                    }
                    if status.is_client_error() {
                        let body = response.text().unwrap_or_default();
                        return Err(ChaosError::Cluster(format!(
                            "membership change of {id}: {status} {body}"
                        )));
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(ChaosError::Cluster(format!(
                    "membership change of node {id} did not finish"
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn has_member(&self, on: u64, id: u64) -> Option<bool> {
        let status = self.status(on)?;
        let members = status["members"].as_array()?;
        Some(members.iter().any(|m| m["id"].as_u64() == Some(id)))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            if self.nodes.get(&id).is_some_and(|n| n.paused) {
                let _ = self.pause(id, false);
            }
            self.kill(id);
        }
    }
}
