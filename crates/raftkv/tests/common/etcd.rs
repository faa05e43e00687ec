//! A real etcd 3.4 (and etcdctl) for differential tests: started on
//! ephemeral loopback ports with a temp data dir, killed when dropped.
//! Without the binaries on the PATH the tests say so loudly and pass,
//! unless `CI` is set, where they fail.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use testcluster::reserve_port;

use super::WAIT;

/// The binary `name` on the PATH, or `None` after a loud SKIPPED line
/// (a panic when the `CI` environment variable is set). The line is written
/// to the process's stderr directly: the test harness captures `eprintln!`
/// and hides it for a passing test, and a skip must be visible.
pub fn find_tool(name: &str, test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    });
    if found.is_none() {
        if std::env::var_os("CI").is_some() {
            panic!("{test}: `{name}` is not on the PATH, and CI requires it (install etcd-server and etcd-client)");
        }
        let line = format!(
            "\n*** SKIPPED {test}: `{name}` is not on the PATH (Debian: apt-get install etcd-server etcd-client) ***\n\n"
        );
        let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    }
    found
}

/// A single-member etcd.
pub struct Etcd {
    child: Option<Child>,
    /// Its client URL (`http://127.0.0.1:<port>`).
    pub client_url: String,
    _dir: tempfile::TempDir,
    log: PathBuf,
}

impl Etcd {
    /// Starts `binary` and waits until its client port accepts connections.
    pub fn start(binary: &Path) -> Etcd {
        let dir = tempfile::tempdir().expect("temp dir");
        let client_url = format!("http://127.0.0.1:{}", reserve_port().expect("a port"));
        let peer_url = format!("http://127.0.0.1:{}", reserve_port().expect("a port"));
        let log = dir.path().join("etcd.log");
        let log_file = std::fs::File::create(&log).expect("etcd log file");
        let child = Command::new(binary)
            .args(["--name", "diff"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("diff={peer_url}")])
            .args(["--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start etcd");
        let etcd = Etcd {
            child: Some(child),
            client_url,
            _dir: dir,
            log,
        };
        let addr = etcd.client_url.trim_start_matches("http://").to_string();
        let deadline = Instant::now() + WAIT;
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "etcd never listened on {addr}:\n{}",
                etcd.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        etcd
    }

    /// etcd's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
