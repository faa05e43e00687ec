//! `cargo xtask cluster`: what goreman + raftexample's Procfile do.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use testcluster::{Cluster, ClusterConfig, NodeOutput, TlsMode, TlsPaths};

const COLORS: [&str; 6] = ["32", "36", "33", "35", "34", "31"];
const RESET: &str = "\x1b[0m";
/// How long a node may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

struct Options {
    nodes: u64,
    data_dir: PathBuf,
    keep: bool,
    /// Client and peer TLS with a throwaway PKI (`--tls`).
    tls: bool,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        nodes: 3,
        data_dir: testcluster::workspace_root().join("target/xtask-cluster"),
        keep: false,
        tls: false,
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
            "--tls" => options.tls = true,
            other => return Err(format!("cluster: unknown option {other:?}")),
        }
    }
    if !(1..=6).contains(&options.nodes) {
        return Err("--nodes must be between 1 and 6 (ports N2379/N2380)".into());
    }
    Ok(options)
}

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let options = parse(args)?;
    eprintln!("xtask: building raftkv (release)...");
    let binary = testcluster::release_binary().map_err(|e| e.to_string())?;
    if !options.keep && options.data_dir.exists() {
        std::fs::remove_dir_all(&options.data_dir)
            .map_err(|e| format!("cannot wipe {}: {e}", options.data_dir.display()))?;
    }
    let config = ClusterConfig {
        // The binary's default: loopback (as etcd's default client URL).
        listen_addr: None,
        // Everything on: client certificates required on client ports,
        // members authenticate each other by certificate.
        tls: options.tls.then(TlsMode::full),
        data_root: Some(options.data_dir.clone()),
        output: NodeOutput::Piped,
        ..ClusterConfig::new(binary)
    };
    // Dropping the cluster on an error kills every node started so far.
    let mut cluster = Cluster::new(config).map_err(|e| e.to_string())?;
    for id in 1..=options.nodes {
        let (peer_port, client_port) = procfile_ports(id);
        cluster
            .define_node_at(id, peer_port, client_port, &[])
            .map_err(|e| e.to_string())?;
    }
    if options.tls && options.nodes < 6 {
        // The next member is defined, not started, so that its certificates
        // exist for the banner's "add a node" commands.
        let next = options.nodes + 1;
        let (peer_port, client_port) = procfile_ports(next);
        cluster
            .define_node_at(next, peer_port, client_port, &[])
            .map_err(|e| e.to_string())?;
    }
    for id in 1..=options.nodes {
        cluster.spawn(id, false).map_err(|e| e.to_string())?;
        let color = COLORS[(id as usize - 1) % COLORS.len()];
        let (stdout, stderr) = cluster.take_output(id);
        if let Some(out) = stdout {
            prefix_lines(out, id, color);
        }
        if let Some(err) = stderr {
            prefix_lines(err, id, color);
        }
    }
    let stopping = Arc::new(AtomicBool::new(false));
    let flag = stopping.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .map_err(|e| format!("cannot handle Ctrl-C: {e}"))?;

    match wait_for_leader(&cluster, &stopping) {
        Some(leader) => match cluster.tls_paths() {
            Some(paths) => print_tls_banner(leader, options.nodes, &options.data_dir, paths),
            None => print_banner(leader, options.nodes, &options.data_dir),
        },
        None if stopping.load(Ordering::SeqCst) => {}
        None => eprintln!("xtask: no leader after 30 s; the nodes' output above says why"),
    }
    while !stopping.load(Ordering::SeqCst) {
        if let Some((id, _)) = cluster.exited().first() {
            eprintln!("xtask: raftkv{id} exited; stopping the cluster");
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // SIGTERM to every node, then wait (a node drains and exits on SIGTERM).
    for id in cluster.stop_all(STOP_TIMEOUT) {
        eprintln!(
            "xtask: raftkv{id} did not stop in {} s; killed it",
            STOP_TIMEOUT.as_secs()
        );
    }
    Ok(())
}

/// raftexample's Procfile ports: peers on `<id>2379`, clients on `<id>2380`.
fn procfile_ports(id: u64) -> (u16, u16) {
    let port = |suffix: u64| u16::try_from(id * 10_000 + suffix).unwrap_or(u16::MAX);
    (port(2379), port(2380))
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

/// Waits up to 30 s (or until Ctrl-C) for every node to agree on a leader.
fn wait_for_leader(cluster: &Cluster, stopping: &AtomicBool) -> Option<u64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && !stopping.load(Ordering::SeqCst) {
        if let Some(leader) = cluster.agreed_leader_now() {
            return Some(leader);
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
         Live cluster view (any node serves it; open it in a browser):\n\
         \x20 http://127.0.0.1:12380/ui\n\n\
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

/// The banner of a TLS cluster: every command with the CA and the client
/// certificate it needs.
fn print_tls_banner(leader: u64, nodes: u64, data_dir: &Path, paths: &TlsPaths) {
    let endpoints = etcdctl_endpoints(nodes);
    let file = |path: &Path| {
        path.file_name()
            .map(|name| format!("$PKI/{}", name.to_string_lossy()))
            .unwrap_or_default()
    };
    let ca = file(&paths.ca_file);
    let certs = format!(
        "--cacert {ca} --cert {} --key {}",
        file(&paths.client_cert_file),
        file(&paths.client_key_file)
    );
    let curl = format!("curl {certs}");
    let etcdctl = format!("etcdctl {certs} --endpoints={endpoints}");
    let next = nodes + 1;
    let add = if nodes < 6 {
        let (peer_cert, peer_key) = paths.peer_files(next);
        let (member_cert, member_key) = paths.member_files(next);
        let cluster = (1..=next)
            .map(|id| format!("https://127.0.0.1:{id}2379"))
            .collect::<Vec<_>>()
            .join(",");
        format!(
            "Add node {next} (its certificates are ready), then start it with --join:\n\
             \x20 {curl} -L https://127.0.0.1:12380/{next} -XPOST -d https://127.0.0.1:{next}2379\n\
             \x20 target/release/raftkv --id {next} --join --port {next}2380 --data-dir {data}/raftkv-{next} \\\n\
             \x20   --cluster {cluster} \\\n\
             \x20   --cert-file {member_cert} --key-file {member_key} --trusted-ca-file {ca} --client-cert-auth \\\n\
             \x20   --peer-cert-file {peer_cert} --peer-key-file {peer_key} --peer-trusted-ca-file {ca} \\\n\
             \x20   --peer-client-cert-auth --peer-cert-allowed-cn {cn}\n",
            member_cert = file(&member_cert),
            member_key = file(&member_key),
            peer_cert = file(&peer_cert),
            peer_key = file(&peer_key),
            cn = testcluster::PEER_CN,
            data = data_dir.display(),
        )
    } else {
        String::new()
    };
    println!(
        "\n\x1b[1mraftkv cluster of {nodes} is up with TLS; leader: node {leader}{RESET}\n\
         data: {data}\n\
         A throwaway CA and certificates, for trying TLS out only (the CA key is beside them).\n\
         Client ports require a client certificate from that CA; members accept\n\
         peer traffic only from certificates with CN {cn} from it.\n\n\
         The live cluster view (https://127.0.0.1:12380/ui) needs a browser that trusts\n\
         the CA and presents the client certificate; without --tls it needs neither.\n\n\
         Try:\n\
         \x20 export PKI={pki}\n\
         \x20 {curl} -L https://127.0.0.1:12380/my-key -XPUT -d bar\n\
         \x20 {curl} -L https://127.0.0.1:22380/my-key\n\
         \x20 {curl} -L https://127.0.0.1:12380/v1/status\n\
         \x20 {curl} -s https://127.0.0.1:12380/metrics | grep raftkv_tls\n\
         \x20 curl -L http://127.0.0.1:12380/my-key    # plain HTTP: a 400 that says why\n\
         {add}\n\
         etcd's v3 API with etcdctl 3.4:\n\
         \x20 {etcdctl} put my-key bar\n\
         \x20 {etcdctl} get my-key -w json\n\
         \x20 {etcdctl} endpoint status -w table\n\
         \x20 {etcdctl} member list -w table\n\n\
         Ctrl-C stops every node.\n",
        data = data_dir.display(),
        pki = paths.dir.display(),
        cn = testcluster::PEER_CN,
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
