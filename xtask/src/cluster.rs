//! `cargo xtask cluster`: what goreman + raftexample's Procfile do.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const COLORS: [&str; 6] = ["32", "36", "33", "35", "34", "31"];
const RESET: &str = "\x1b[0m";

struct Options {
    nodes: u64,
    data_dir: PathBuf,
    keep: bool,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        nodes: 3,
        data_dir: workspace_root().join("target/xtask-cluster"),
        keep: false,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--nodes" => {
                let value = args.next().ok_or("--nodes needs a number")?;
                options.nodes = value
                    .parse()
                    .map_err(|_| format!("--nodes {value:?} is not a number"))?;
            }
            "--data-dir" => {
                options.data_dir = PathBuf::from(args.next().ok_or("--data-dir needs a path")?);
            }
            "--keep" => options.keep = true,
            other => return Err(format!("cluster: unknown option {other:?}")),
        }
    }
    if !(1..=6).contains(&options.nodes) {
        return Err("--nodes must be between 1 and 6 (ports N2379/N2380)".into());
    }
    Ok(options)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let options = parse(args)?;
    let binary = build_release()?;
    if !options.keep && options.data_dir.exists() {
        std::fs::remove_dir_all(&options.data_dir)
            .map_err(|e| format!("cannot wipe {}: {e}", options.data_dir.display()))?;
    }
    std::fs::create_dir_all(&options.data_dir)
        .map_err(|e| format!("cannot create {}: {e}", options.data_dir.display()))?;
    let cluster: Vec<String> = (1..=options.nodes)
        .map(|id| format!("http://127.0.0.1:{}2379", id))
        .collect();
    let stopping = Arc::new(AtomicBool::new(false));
    let mut children = Vec::new();
    for id in 1..=options.nodes {
        match spawn_node(&binary, id, &cluster, &options.data_dir) {
            Ok(child) => children.push(child),
            Err(e) => {
                stop_all(&mut children);
                return Err(e);
            }
        }
    }
    let flag = stopping.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .map_err(|e| format!("cannot handle Ctrl-C: {e}"))?;

    match wait_for_leader(options.nodes, &stopping) {
        Some(leader) => print_banner(leader, options.nodes, &options.data_dir),
        None if stopping.load(Ordering::SeqCst) => {}
        None => eprintln!("xtask: no leader after 30 s; the nodes' output above says why"),
    }
    while !stopping.load(Ordering::SeqCst) {
        if let Some(id) = exited(&mut children) {
            eprintln!("xtask: raftkv{id} exited; stopping the cluster");
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    stop_all(&mut children);
    Ok(())
}

fn build_release() -> Result<PathBuf, String> {
    eprintln!("xtask: building raftkv (release)...");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--package", "raftkv"])
        .current_dir(workspace_root())
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err("cargo build --release -p raftkv failed".into());
    }
    Ok(workspace_root().join("target/release/raftkv"))
}

fn spawn_node(
    binary: &Path,
    id: u64,
    cluster: &[String],
    data_dir: &Path,
) -> Result<(u64, Child), String> {
    let mut child = Command::new(binary)
        .args(["--id", &id.to_string()])
        .args(["--cluster", &cluster.join(",")])
        .args(["--port", &format!("{id}2380")])
        .arg("--data-dir")
        .arg(data_dir.join(format!("raftkv-{id}")))
        .env("RUST_LOG_STYLE", "never")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let color = COLORS[(id as usize - 1) % COLORS.len()];
    if let Some(out) = child.stdout.take() {
        prefix_lines(out, id, color);
    }
    if let Some(err) = child.stderr.take() {
        prefix_lines(err, id, color);
    }
    Ok((id, child))
}

/// Copies a node's output to ours, each line prefixed with its name in its
/// colour, as goreman does.
fn prefix_lines(stream: impl Read + Send + 'static, id: u64, color: &'static str) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            println!("\x1b[{color}mraftkv{id} |{RESET} {line}");
        }
    });
}

fn wait_for_leader(nodes: u64, stopping: &AtomicBool) -> Option<u64> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && !stopping.load(Ordering::SeqCst) {
        for id in 1..=nodes {
            let url = format!("http://127.0.0.1:{id}2380/v1/status");
            let leader = client
                .get(&url)
                .send()
                .and_then(|r| r.json::<serde_json::Value>())
                .ok()
                .and_then(|status| status.get("leader_id")?.as_u64());
            if let Some(leader) = leader {
                return Some(leader);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

fn print_banner(leader: u64, nodes: u64, data_dir: &Path) {
    let next = nodes + 1;
    let endpoints = etcdctl_endpoints(nodes);
    println!(
        "\n\x1b[1mraftkv cluster of {nodes} is up; leader: node {leader}{RESET}\n\
         data: {data}\n\n\
         Try:\n\
         \x20 curl -L http://127.0.0.1:12380/my-key -XPUT -d bar\n\
         \x20 curl -L http://127.0.0.1:22380/my-key\n\
         \x20 curl -L 'http://127.0.0.1:32380/my-key?serializable'\n\
         \x20 curl -L http://127.0.0.1:12380/v1/status\n\
         Add a node (then start it with --join):\n\
         \x20 curl -L http://127.0.0.1:12380/{next} -XPOST -d http://127.0.0.1:{next}2379\n\
         Remove node 3:\n\
         \x20 curl -L http://127.0.0.1:12380/3 -XDELETE\n\n\
         etcd's v3 API (gRPC and JSON gateway) on the same ports, with etcdctl 3.4:\n\
         \x20 etcdctl --endpoints={endpoints} put my-key bar\n\
         \x20 etcdctl --endpoints={endpoints} get my-key -w json\n\
         \x20 etcdctl --endpoints={endpoints} get '' --prefix --keys-only\n\
         \x20 etcdctl --endpoints={endpoints} endpoint status -w table\n\
         \x20 etcdctl --endpoints={endpoints} endpoint hashkv\n\
         \x20 curl -L http://127.0.0.1:12380/v3/kv/range -d '{{\"key\":\"bXkta2V5\"}}'\n\n\
         Ctrl-C stops every node.\n",
        data = data_dir.display(),
    );
}

/// etcdctl's `--endpoints` for the cluster's client ports, as host:port:
/// etcdctl 3.4 sends an `http://` endpoint as the HTTP/2 authority of its
/// per-endpoint calls (`endpoint status`), which HTTP/2 servers refuse.
fn etcdctl_endpoints(nodes: u64) -> String {
    (1..=nodes)
        .map(|id| format!("127.0.0.1:{id}2380"))
        .collect::<Vec<_>>()
        .join(",")
}

fn exited(children: &mut [(u64, Child)]) -> Option<u64> {
    children
        .iter_mut()
        .find_map(|(id, child)| matches!(child.try_wait(), Ok(Some(_))).then_some(*id))
}

/// SIGTERM to every node, then wait (a node drains and exits on SIGTERM).
fn stop_all(children: &mut Vec<(u64, Child)>) {
    for (_, child) in children.iter() {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for (id, child) in children.iter_mut() {
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Ok(None) = child.try_wait() {
            eprintln!("xtask: raftkv{id} did not stop in 10 s; killing it");
            let _ = child.kill();
            let _ = child.wait();
        }
    }
    children.clear();
}
