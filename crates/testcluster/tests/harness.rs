//! The harness's own guarantees: distinct ports, and no process outlives
//! its cluster (on drop and while unwinding from a panic).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use testcluster::{reserve_port, reserve_ports, Cluster, ClusterConfig};

/// Many reservations, from several threads at once, never repeat. (Without
/// the process-wide record the OS hands back recently closed ports, and
/// a few thousand binds see repeats.)
#[test]
fn ports_never_repeat() {
    let threads: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(|| reserve_ports(500).unwrap()))
        .collect();
    let mut seen = HashSet::new();
    for thread in threads {
        for port in thread.join().unwrap() {
            assert!(seen.insert(port), "port {port} handed out twice");
        }
    }
    let next = reserve_port().unwrap();
    assert!(!seen.contains(&next), "port {next} handed out twice");
    assert_eq!(seen.len(), 2_000);
}

/// A stand-in node: a script that ignores raftkv's flags and sleeps.
fn sleeper(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("sleeper");
    std::fs::write(&path, "#!/bin/sh\nexec sleep 600\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Whether process `pid` exists (`kill -0`).
fn alive(pid: u32) -> bool {
    Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

fn start_sleepers(binary: &Path) -> (Cluster, Vec<u32>) {
    let cluster = Cluster::start(ClusterConfig::new(binary), 3).unwrap();
    let pids: Vec<u32> = cluster
        .ids()
        .iter()
        .filter_map(|&id| cluster.pid(id))
        .collect();
    assert_eq!(pids.len(), 3);
    assert!(pids.iter().all(|&pid| alive(pid)), "the nodes run");
    (cluster, pids)
}

#[test]
fn drop_kills_every_process() {
    let dir = tempfile::tempdir().unwrap();
    let (mut cluster, pids) = start_sleepers(&sleeper(dir.path()));
    cluster.pause(2, true).unwrap();
    let data_root = cluster.data_root().to_path_buf();
    drop(cluster);
    for pid in pids {
        assert!(!alive(pid), "process {pid} outlived its cluster");
    }
    assert!(!data_root.exists(), "the temp data root is removed");
}

#[test]
fn a_panic_kills_every_process() {
    let dir = tempfile::tempdir().unwrap();
    let binary = sleeper(dir.path());
    let pids = std::sync::Mutex::new(Vec::new());
    let result = std::panic::catch_unwind(|| {
        let (_cluster, started) = start_sleepers(&binary);
        pids.lock().unwrap().extend(started);
        panic!("a failing test");
    });
    assert!(result.is_err());
    let pids = pids.into_inner().unwrap();
    assert_eq!(pids.len(), 3);
    for pid in pids {
        assert!(!alive(pid), "process {pid} outlived a panic");
    }
}

#[test]
fn processes_can_be_stopped_killed_and_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let (mut cluster, pids) = start_sleepers(&sleeper(dir.path()));
    assert!(
        cluster.spawn(1, false).is_err(),
        "node 1 is already running"
    );
    cluster.kill(1);
    assert!(!alive(pids[0]));
    assert!(!cluster.is_running(1));
    cluster.spawn(1, false).unwrap();
    assert!(cluster.is_running(1));
    assert_ne!(cluster.pid(1), Some(pids[0]));
    let status = cluster.terminate(2, Duration::from_secs(10)).unwrap();
    assert!(!status.success(), "sleep dies of SIGTERM: {status}");
    assert!(cluster.stop_all(Duration::from_secs(10)).is_empty());
    assert!(cluster.exited().is_empty(), "stop_all reaped everything");
    assert!(cluster.ids().iter().all(|&id| cluster.pid(id).is_none()));
}

#[test]
fn the_command_line_is_raftexamples() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("echo-args");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(&script, "#!/bin/sh\necho \"$@\"\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let config = ClusterConfig {
        args: vec!["--tick-ms".into(), "50".into()],
        ..ClusterConfig::new(&script)
    };
    let mut cluster = Cluster::new(config).unwrap();
    cluster.define_node(1, &[]).unwrap();
    cluster.define_node(2, &["--snapshot-count", "7"]).unwrap();
    cluster.spawn(2, true).unwrap();
    assert!(cluster
        .wait_exit(2, Duration::from_secs(10))
        .unwrap()
        .success());
    let line = cluster.log(2);
    let node = cluster.node(2).unwrap();
    let expected = format!(
        "--id 2 --cluster {} --port {} --listen-addr 127.0.0.1 --data-dir {} --tick-ms 50 --snapshot-count 7 --join\n",
        cluster.cluster_flag(),
        node.client_port,
        node.data_dir.display()
    );
    assert_eq!(line, expected);
    assert!(cluster
        .cluster_flag()
        .starts_with(&cluster.node(1).unwrap().peer_url));
}
