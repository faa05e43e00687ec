//! The chaos suite's cluster: `testcluster`'s real `raftkv` processes,
//! plus partitions through the transport's fault route, the members the
//! clients may target, and membership changes.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use reqwest::StatusCode;

use testcluster::ClusterConfig;

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

/// The cluster under test: the harness's processes plus what the suite
/// tracks on top (members, request targets, fault routes, membership
/// changes). Every process is killed on drop (by the harness).
pub(crate) struct Cluster {
    procs: testcluster::Cluster,
    flags: NodeFlags,
    members: BTreeSet<u64>,
    targets: Targets,
}

impl NodeFlags {
    fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        for (flag, value) in [
            ("--tick-ms", self.tick_ms),
            ("--election-ticks", self.election_ticks),
            ("--request-timeout-ms", self.request_timeout_ms),
            ("--snapshot-count", self.snapshot_count),
            ("--catch-up-entries", self.catch_up_entries),
        ] {
            args.extend([flag.to_string(), value.to_string()]);
        }
        args.push("--enable-fault-injection".into());
        args
    }
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
        tls: bool,
    ) -> Result<Cluster, ChaosError> {
        let config = ClusterConfig {
            args: flags.args(),
            env: vec![("RUST_LOG".into(), "info,raft_rs=warn".into())],
            data_root: Some(data_root.to_path_buf()),
            logs_dir: Some(logs_dir.to_path_buf()),
            request_timeout: Duration::from_millis(flags.request_timeout_ms + 2_000),
            status_timeout: Duration::from_millis(500),
            tls: tls.then(testcluster::TlsMode::full),
            ..ClusterConfig::new(binary)
        };
        let cluster = Cluster {
            procs: testcluster::Cluster::start(config, nodes)?,
            flags,
            members: (1..=nodes).collect(),
            targets: Arc::new(RwLock::new(Vec::new())),
        };
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
        self.procs.http()
    }

    /// `https` with TLS client ports, else `http`.
    pub fn client_scheme(&self) -> &'static str {
        self.procs.client_scheme()
    }

    /// The gRPC clients' TLS (`None` without TLS).
    pub fn grpc_tls(&self) -> Result<Option<super::v3::GrpcTls>, ChaosError> {
        self.procs
            .tls_paths()
            .map(super::v3::GrpcTls::load)
            .transpose()
    }

    /// The client URL of `path` on node `id`.
    pub fn url(&self, id: u64, path: &str) -> String {
        self.procs.url(id, path)
    }

    fn publish_targets(&self) {
        let targets: Vec<(u64, u16)> = self
            .members
            .iter()
            .filter_map(|id| self.procs.node(*id).map(|n| (*id, n.client_port)))
            .collect();
        let mut shared = self.targets.write().unwrap_or_else(|e| e.into_inner());
        *shared = targets;
    }

    /// Starts (or restarts) node `id`. Ids are positions in `--cluster`, so
    /// the flag lists every node ever defined, in id order.
    pub fn spawn(&mut self, id: u64, join: bool) -> Result<(), ChaosError> {
        Ok(self.procs.spawn(id, join)?)
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self, id: u64) {
        self.procs.kill(id);
    }

    /// Whether node `id`'s process is running (not killed, not exited).
    pub fn is_running(&mut self, id: u64) -> bool {
        self.procs.is_running(id)
    }

    /// Members whose process exited although the harness did not stop it
    /// (a crash, or a signal from outside), with their exit status.
    pub fn exited_by_themselves(&mut self) -> Vec<(u64, String)> {
        self.members()
            .into_iter()
            .filter_map(|id| self.procs.reap(id).map(|status| (id, status.to_string())))
            .collect()
    }

    /// Node `id`'s typed `/v1/status`, if it answers.
    pub fn status(&self, id: u64) -> Option<testcluster::StatusResponse> {
        self.procs.status(id).ok()
    }

    /// SIGSTOP (`pause = true`) or SIGCONT.
    pub fn pause(&mut self, id: u64, pause: bool) -> Result<(), ChaosError> {
        Ok(self.procs.pause(id, pause)?)
    }

    /// Sends fault commands (one per line) to node `id`'s peer port.
    pub fn fault(&self, id: u64, commands: &str) -> Result<(), ChaosError> {
        let node = self
            .procs
            .node(id)
            .ok_or_else(|| ChaosError::Cluster(format!("node {id} is not defined")))?;
        // A node restarted by the previous fault may not listen yet: fault
        // commands are idempotent, so a refused connection is retried.
        let deadline = Instant::now() + Duration::from_secs(10);
        let response = loop {
            match self
                .procs
                .peer_http()
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
            if self
                .procs
                .node(id)
                .is_some_and(testcluster::Node::is_paused)
            {
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
            let left = deadline.saturating_duration_since(Instant::now());
            self.procs.wait_listening(id, left)?;
        }
        Ok(())
    }

    /// A member that says it is the leader, if one does now.
    pub fn leader_now(&self) -> Option<u64> {
        self.procs.leader_among(&self.members())
    }

    /// Waits for a member that says it is the leader.
    pub fn wait_leader(&self, timeout: Duration) -> Result<u64, ChaosError> {
        Ok(self.procs.wait_leader_among(&self.members(), timeout)?)
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
        let id = self.procs.ids().last().copied().unwrap_or(0) + 1;
        self.procs.define_node(id, &[])?;
        let url = self
            .procs
            .node(id)
            .map(|n| n.peer_url.clone())
            .unwrap_or_default();
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
                        .http()
                        .post(self.url(leader, &format!("/{id}")))
                        .body(url.to_string()),
                    None => self.http().delete(self.url(leader, &format!("/{id}"))),
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
        Some(status.members.iter().any(|m| m.id == id))
    }
}
