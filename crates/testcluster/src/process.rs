//! Node processes: define, start, signal, wait for and clean up.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use reqwest::blocking::Client;

use crate::tls::{Pki, TlsMode, TlsPaths};
use crate::{reserve_port, Error, CONNECT_TIMEOUT, REQUEST_TIMEOUT, STATUS_TIMEOUT};

/// How often the harness polls a process or a node while waiting.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Where a node's stdout and stderr go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeOutput {
    /// Both appended to `<logs_dir>/node-<id>.log`.
    LogFile,
    /// Both piped; take them with [`Cluster::take_output`].
    Piped,
}

/// A signal the harness sends to a node (through `kill(1)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM: the node drains and exits.
    Term,
    /// SIGKILL: no chance to flush anything.
    Kill,
    /// SIGSTOP: frozen, sockets stay open.
    Stop,
    /// SIGCONT: resumes a stopped node.
    Cont,
}

impl Signal {
    fn flag(self) -> &'static str {
        match self {
            Signal::Term => "-TERM",
            Signal::Kill => "-KILL",
            Signal::Stop => "-STOP",
            Signal::Cont => "-CONT",
        }
    }
}

/// How every node of a [`Cluster`] is started. [`ClusterConfig::new`]
/// gives the defaults; set fields with struct update syntax.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The `raftkv` binary.
    pub binary: PathBuf,
    /// Flags added to every node's command line (after the harness's own).
    pub args: Vec<String>,
    /// Environment variables for every node (`RUST_LOG_STYLE=never` is
    /// always set, so logs carry no colour codes).
    pub env: Vec<(String, String)>,
    /// `--listen-addr` (`None`: the binary's default).
    pub listen_addr: Option<String>,
    /// Where the data dirs `raftkv-<id>` go (`None`: a temp dir removed
    /// when the cluster is dropped).
    pub data_root: Option<PathBuf>,
    /// Where the logs `node-<id>.log` go (`None`: the data root).
    pub logs_dir: Option<PathBuf>,
    /// Where the nodes' output goes.
    pub output: NodeOutput,
    /// Bound on a client request through [`Cluster::http`].
    pub request_timeout: Duration,
    /// Bound on one `GET /v1/status`.
    pub status_timeout: Duration,
    /// TLS on the nodes' ports (`None`: plaintext). The harness generates
    /// a PKI under the data root, passes the flags, uses `https://` URLs
    /// and trusts the CA in its clients.
    pub tls: Option<TlsMode>,
}

impl ClusterConfig {
    /// Nodes of `binary` on loopback, data in a temp dir, output in logs.
    pub fn new(binary: impl Into<PathBuf>) -> ClusterConfig {
        ClusterConfig {
            binary: binary.into(),
            args: Vec::new(),
            env: Vec::new(),
            listen_addr: Some("127.0.0.1".into()),
            data_root: None,
            logs_dir: None,
            output: NodeOutput::LogFile,
            request_timeout: REQUEST_TIMEOUT,
            status_timeout: STATUS_TIMEOUT,
            tls: None,
        }
    }
}

/// One node: where it listens and keeps its data, and its process.
#[derive(Debug)]
pub struct Node {
    /// Its id (its 1-based position in `--cluster`).
    pub id: u64,
    /// Its peer URL (`http://127.0.0.1:<port>`, `https://` with peer TLS).
    pub peer_url: String,
    /// Its client port (HTTP API and gRPC).
    pub client_port: u16,
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// Its log file (with [`NodeOutput::LogFile`]).
    pub log_path: PathBuf,
    extra_args: Vec<String>,
    child: Option<Child>,
    paused: bool,
}

impl Node {
    /// The process id, while the harness holds a process for the node.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Started and not reaped yet (it may have exited since).
    pub fn is_started(&self) -> bool {
        self.child.is_some()
    }

    /// Stopped with SIGSTOP by [`Cluster::pause`].
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Started, not reaped and not paused: a node that should answer.
    pub fn is_live(&self) -> bool {
        self.is_started() && !self.paused
    }
}

/// A cluster of `raftkv` processes. Every process it started is killed and
/// reaped when it is dropped (also during a panic).
#[derive(Debug)]
pub struct Cluster {
    pub(crate) config: ClusterConfig,
    temp: Option<tempfile::TempDir>,
    data_root: PathBuf,
    logs_dir: PathBuf,
    pub(crate) nodes: BTreeMap<u64, Node>,
    pub(crate) http: Client,
    /// The client for peer ports (presents the peers' CN with peer TLS).
    peer_http: Client,
    pub(crate) pki: Option<Pki>,
}

impl Cluster {
    /// A cluster with no node yet: creates the data root and logs dir.
    pub fn new(config: ClusterConfig) -> Result<Cluster, Error> {
        let (temp, data_root) = match &config.data_root {
            Some(root) => (None, root.clone()),
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("raftkv-cluster.")
                    .tempdir()
                    .map_err(|e| Error::io("creating a temp dir", e))?;
                let root = temp.path().to_path_buf();
                (Some(temp), root)
            }
        };
        let logs_dir = config.logs_dir.clone().unwrap_or_else(|| data_root.clone());
        for dir in [&data_root, &logs_dir] {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        }
        let pki = match &config.tls {
            Some(mode) => Some(Pki::generate(&data_root.join("pki"), mode.clone())?),
            None => None,
        };
        let client = |identity: Option<(&Path, &Path)>| -> Result<Client, Error> {
            let builder = Client::builder()
                .timeout(config.request_timeout)
                .connect_timeout(CONNECT_TIMEOUT);
            let builder = match (&pki, identity) {
                (Some(pki), Some((cert, key))) => {
                    builder.use_preconfigured_tls(pki.client_config(cert, key)?)
                }
                _ => builder,
            };
            Ok(builder.build()?)
        };
        let paths = pki.as_ref().map(|pki| pki.paths().clone());
        let http = client(
            paths
                .as_ref()
                .map(|p| (p.client_cert_file.as_path(), p.client_key_file.as_path())),
        )?;
        let peer_http = client(paths.as_ref().map(|p| {
            (
                p.peer_client_cert_file.as_path(),
                p.peer_client_key_file.as_path(),
            )
        }))?;
        Ok(Cluster {
            config,
            temp,
            data_root,
            logs_dir,
            nodes: BTreeMap::new(),
            http,
            peer_http,
            pki,
        })
    }

    /// Defines nodes `1..=count` on fresh ports and starts them all.
    pub fn start(config: ClusterConfig, count: u64) -> Result<Cluster, Error> {
        let mut cluster = Cluster::new(config)?;
        for id in 1..=count {
            cluster.define_node(id, &[])?;
        }
        for id in 1..=count {
            cluster.spawn(id, false)?;
        }
        Ok(cluster)
    }

    /// Defines node `id` on two fresh ports, with `extra_args` added to its
    /// command line only. It is not started.
    pub fn define_node(&mut self, id: u64, extra_args: &[&str]) -> Result<(), Error> {
        let peer_port = reserve_port()?;
        let client_port = reserve_port()?;
        self.define_node_at(id, peer_port, client_port, extra_args)
    }

    /// Defines node `id` on the given ports.
    pub fn define_node_at(
        &mut self,
        id: u64,
        peer_port: u16,
        client_port: u16,
        extra_args: &[&str],
    ) -> Result<(), Error> {
        if self.nodes.contains_key(&id) {
            return Err(Error::node(id, "is already defined"));
        }
        let peer_scheme = match &self.pki {
            Some(pki) => {
                pki.issue_member(id)?;
                if pki.mode().peer {
                    "https"
                } else {
                    "http"
                }
            }
            None => "http",
        };
        let node = Node {
            id,
            peer_url: format!("{peer_scheme}://127.0.0.1:{peer_port}"),
            client_port,
            data_dir: self.data_root.join(format!("raftkv-{id}")),
            log_path: self.logs_dir.join(format!("node-{id}.log")),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            child: None,
            paused: false,
        };
        self.nodes.insert(id, node);
        Ok(())
    }

    /// `--cluster`: every defined node's peer URL in id order (ids are
    /// positions in it, so a removed node keeps its place).
    pub fn cluster_flag(&self) -> String {
        let urls: Vec<&str> = self.nodes.values().map(|n| n.peer_url.as_str()).collect();
        urls.join(",")
    }

    /// Starts (or restarts) node `id`, with `--join` if `join`. A previous
    /// process of the node that has exited is reaped first; one that still
    /// runs is an error.
    pub fn spawn(&mut self, id: u64, join: bool) -> Result<(), Error> {
        if self.is_running(id) {
            return Err(Error::node(id, "is already running"));
        }
        let cluster_flag = self.cluster_flag();
        let node = self.nodes.get(&id).ok_or_else(|| undefined(id))?;
        let mut command = Command::new(&self.config.binary);
        command
            .args(["--id", &id.to_string(), "--cluster", &cluster_flag])
            .args(["--port", &node.client_port.to_string()]);
        if let Some(addr) = &self.config.listen_addr {
            command.args(["--listen-addr", addr]);
        }
        command.arg("--data-dir").arg(&node.data_dir);
        if let Some(pki) = &self.pki {
            command.args(pki.member_args(id));
        }
        command.args(&self.config.args).args(&node.extra_args);
        if join {
            command.arg("--join");
        }
        command
            .env("RUST_LOG_STYLE", "never")
            .envs(self.config.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        self.set_output(&mut command, &node.log_path)?;
        let child = command.spawn().map_err(|source| Error::Spawn {
            binary: self.config.binary.clone(),
            source,
        })?;
        tracing::info!(node = id, join, pid = child.id(), "started");
        let node = self.nodes.get_mut(&id).ok_or_else(|| undefined(id))?;
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    fn set_output(&self, command: &mut Command, log_path: &Path) -> Result<(), Error> {
        match self.config.output {
            NodeOutput::Piped => {
                command.stdout(Stdio::piped()).stderr(Stdio::piped());
            }
            NodeOutput::LogFile => {
                let open = || {
                    OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(log_path)
                        .map_err(|e| Error::io(format!("opening {}", log_path.display()), e))
                };
                command.stdout(open()?).stderr(open()?);
            }
        }
        Ok(())
    }

    /// The piped stdout and stderr of node `id`'s current process (once).
    pub fn take_output(&mut self, id: u64) -> (Option<ChildStdout>, Option<ChildStderr>) {
        match self.nodes.get_mut(&id).and_then(|n| n.child.as_mut()) {
            Some(child) => (child.stdout.take(), child.stderr.take()),
            None => (None, None),
        }
    }

    /// Sends `signal` to node `id`'s process.
    pub fn signal(&self, id: u64, signal: Signal) -> Result<(), Error> {
        let pid = self
            .pid(id)
            .ok_or_else(|| Error::node(id, "has no process"))?;
        let status = Command::new("kill")
            .args([signal.flag(), &pid.to_string()])
            .status()
            .map_err(|e| Error::io("running kill", e))?;
        if !status.success() {
            return Err(Error::node(
                id,
                format!("kill {} {pid} failed", signal.flag()),
            ));
        }
        Ok(())
    }

    /// SIGKILL and reap node `id`'s process, if it has one.
    pub fn kill(&mut self, id: u64) {
        if let Some(node) = self.nodes.get_mut(&id) {
            if let Some(mut child) = node.child.take() {
                // An error means it is already gone; `wait` reaps it either way.
                let _ = child.kill();
                let _ = child.wait();
                tracing::info!(node = id, "killed");
            }
            node.paused = false;
        }
    }

    /// SIGSTOP (`pause`) or SIGCONT node `id`. A node without a process is
    /// left alone.
    pub fn pause(&mut self, id: u64, pause: bool) -> Result<(), Error> {
        let node = self.nodes.get(&id).ok_or_else(|| undefined(id))?;
        if !node.is_started() {
            return Ok(());
        }
        self.signal(id, if pause { Signal::Stop } else { Signal::Cont })?;
        if let Some(node) = self.nodes.get_mut(&id) {
            node.paused = pause;
        }
        Ok(())
    }

    /// SIGTERM node `id` (resuming it first if paused) and wait up to
    /// `timeout` for it to exit. On a timeout the process keeps running.
    pub fn terminate(&mut self, id: u64, timeout: Duration) -> Result<ExitStatus, Error> {
        if self.nodes.get(&id).is_some_and(Node::is_paused) {
            self.pause(id, false)?;
        }
        self.signal(id, Signal::Term)?;
        self.wait_exit(id, timeout)
            .ok_or_else(|| Error::timeout(format!("node {id}'s exit after SIGTERM"), timeout))
    }

    /// SIGTERM to every node, then SIGKILL to those still running after
    /// `timeout`; returns the ids that had to be killed.
    pub fn stop_all(&mut self, timeout: Duration) -> Vec<u64> {
        let ids = self.ids();
        for &id in &ids {
            if self.is_running(id) {
                if self.nodes.get(&id).is_some_and(Node::is_paused) {
                    let _ = self.pause(id, false);
                }
                // A node that exited meanwhile is reaped below.
                let _ = self.signal(id, Signal::Term);
            }
        }
        let deadline = Instant::now() + timeout;
        let mut killed = Vec::new();
        for id in ids {
            let left = deadline.saturating_duration_since(Instant::now());
            if self.is_running(id) && self.wait_exit(id, left).is_none() {
                tracing::warn!(node = id, "ignored SIGTERM; killing it");
                self.kill(id);
                killed.push(id);
            }
        }
        killed
    }

    /// Waits up to `timeout` for node `id`'s process to exit and reaps it.
    pub fn wait_exit(&mut self, id: u64, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.reap(id) {
                return Some(status);
            }
            if Instant::now() >= deadline || !self.nodes.get(&id).is_some_and(Node::is_started) {
                return None;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// If node `id`'s process has exited, reaps it and returns its status.
    pub fn reap(&mut self, id: u64) -> Option<ExitStatus> {
        let node = self.nodes.get_mut(&id)?;
        let status = node.child.as_mut()?.try_wait().ok()??;
        node.child = None;
        node.paused = false;
        Some(status)
    }

    /// Reaps every node whose process has exited; returns them.
    pub fn exited(&mut self) -> Vec<(u64, ExitStatus)> {
        self.ids()
            .into_iter()
            .filter_map(|id| self.reap(id).map(|status| (id, status)))
            .collect()
    }

    /// Whether node `id` has a process that has not exited.
    pub fn is_running(&mut self, id: u64) -> bool {
        self.reap(id);
        self.nodes.get(&id).is_some_and(Node::is_started)
    }

    /// Node `id`, if defined.
    pub fn node(&self, id: u64) -> Option<&Node> {
        self.nodes.get(&id)
    }

    /// Every defined node, in id order.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }

    /// Every defined node id, in order.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// Node `id`'s process id, while it has one.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.nodes.get(&id).and_then(Node::pid)
    }

    /// Node `id`'s client address (`127.0.0.1:<client port>`).
    pub fn client_addr(&self, id: u64) -> Option<SocketAddr> {
        let node = self.nodes.get(&id)?;
        Some(SocketAddr::from(([127, 0, 0, 1], node.client_port)))
    }

    /// Where the PKI of a TLS cluster lies (`None` without TLS).
    pub fn tls_paths(&self) -> Option<&TlsPaths> {
        self.pki.as_ref().map(Pki::paths)
    }

    /// The TLS mode the cluster was started with.
    pub fn tls_mode(&self) -> Option<&TlsMode> {
        self.config.tls.as_ref()
    }

    /// Re-issues every defined member's certificates in place (same CA,
    /// new keys and serials): a certificate rotation. Running nodes pick
    /// the new files up on their next reload check.
    pub fn reissue_member_certificates(&self) -> Result<(), Error> {
        let Some(pki) = &self.pki else {
            return Err(Error::Tls("the cluster has no TLS".into()));
        };
        for id in self.nodes.keys() {
            pki.issue_member(*id)?;
        }
        Ok(())
    }

    /// Issues another certificate from the cluster's CA, for `127.0.0.1`
    /// and `localhost` with CN `cn`, valid from an hour ago for
    /// `valid_days` (negative: already expired), as `<pki dir>/<name>.pem`
    /// and `<name>-key.pem`; returns (certificate, key).
    pub fn issue_certificate(
        &self,
        name: &str,
        cn: &str,
        valid_days: i64,
    ) -> Result<(PathBuf, PathBuf), Error> {
        match &self.pki {
            Some(pki) => pki.issue_extra(name, cn, valid_days),
            None => Err(Error::Tls("the cluster has no TLS".into())),
        }
    }

    /// The HTTP client for peer ports (the fault routes): with peer TLS it
    /// presents a certificate with the members' peer CN.
    pub fn peer_http(&self) -> &Client {
        &self.peer_http
    }

    /// The data root (parent of every `raftkv-<id>`).
    pub fn data_root(&self) -> &Path {
        &self.data_root
    }

    /// Keeps the temp data root on disk after the cluster is dropped (for
    /// a post-mortem); returns it. `None` if the root was given.
    pub fn keep_data(&mut self) -> Option<PathBuf> {
        self.temp.take().map(tempfile::TempDir::keep)
    }

    /// Node `id`'s log so far, for failure messages (empty if none).
    pub fn log(&self, id: u64) -> String {
        self.nodes
            .get(&id)
            .and_then(|n| std::fs::read_to_string(&n.log_path).ok())
            .unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for id in self.ids() {
            // SIGKILL ends a stopped process too; no SIGCONT needed.
            self.kill(id);
        }
    }
}

pub(crate) fn undefined(id: u64) -> Error {
    Error::node(id, "is not defined")
}
