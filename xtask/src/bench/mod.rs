//! `cargo xtask bench`: raftkv's benchmark (issue 6).
//!
//! Builds the release binary, starts a 3-node cluster on loopback with temp
//! data dirs, and drives it with our own load generator: tokio + hyper 1,
//! HTTP/1.1 keep-alive, N connections each a task sending back to back,
//! every latency in an hdrhistogram. Writes go to the leader (found through
//! `GET /v1/status`); after every write scenario a sample of acknowledged
//! keys is read back (linearizably) from every node and missing ones are
//! reported as lost. Results: a markdown table on stdout and in
//! `target/bench/results.md`, a plot in `target/bench/bench.svg`.
//!
//! `--tls` compares a plain and a TLS cluster instead (`tls.rs`).
//!
//! `--peers` runs the write scenarios again through the neutral scripts of
//! `../shared/peers` (wrk) for raftkv, raftexample, etcd and openraft.
//!
//! Owns: the load generator and the reports. Does not own: the cluster's
//! code (it runs the binary as a user would) nor the peers' set-up.

mod client;
mod cluster;
mod grpc;
mod load;
mod options;
mod peers;
mod report;
mod scenario;
mod tls;
mod verify;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use cluster::BenchCluster;
use options::Options;
use report::Row;
use scenario::Scenario;
use testcluster::workspace_root;

/// Everything that can stop a benchmark run.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BenchError {
    /// A bad command-line option.
    #[error("{0}\n\n{usage}", usage = options::USAGE)]
    Usage(String),
    /// A file or process operation failed.
    #[error("cannot {action}: {source}")]
    Io {
        /// What was being done.
        action: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The cluster under test misbehaved (no leader, a node exited).
    #[error("cluster: {0}")]
    Cluster(String),
    /// An HTTP exchange needed for the run failed.
    #[error("http: {0}")]
    Http(String),
    /// `cargo` failed to build raftkv or the release xtask.
    #[error("build: {0}")]
    Build(String),
    /// The release re-run of this task failed (it printed why).
    #[error("the release build of `xtask bench` exited with {0}")]
    Rerun(std::process::ExitStatus),
    /// The plot could not be drawn.
    #[error("plot: {0}")]
    Plot(String),
    /// A peer script failed or printed something unexpected.
    #[error("peers: {0}")]
    Peers(String),
}

impl BenchError {
    /// An I/O error with what was being attempted.
    pub(crate) fn io(action: &str, source: std::io::Error) -> Self {
        Self::Io {
            action: action.to_owned(),
            source,
        }
    }
}

/// Set in the environment of the release re-run, so it does not loop.
const RELEASE_RERUN_ENV: &str = "RAFTKV_BENCH_RELEASE";

/// Runs `cargo xtask bench` with its command-line arguments.
pub(crate) fn run(args: &[String]) -> Result<(), String> {
    // Options are checked (and --help answered) before any build.
    let options = options::parse(args, &workspace_root()).map_err(|e| e.to_string())?;
    if options.help {
        print!("{}", options::USAGE);
        return Ok(());
    }
    if cfg!(debug_assertions) && std::env::var_os(RELEASE_RERUN_ENV).is_none() {
        return rerun_in_release(args).map_err(|e| e.to_string());
    }
    run_bench(&options).map_err(|e| e.to_string())
}

/// `cargo xtask` builds xtask unoptimised; a debug load generator would be
/// the bottleneck it measures. Re-run this task from a release build.
fn rerun_in_release(args: &[String]) -> Result<(), BenchError> {
    eprintln!("bench: re-running from a release build of xtask (an unoptimised load generator would be the bottleneck)");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "run",
            "--quiet",
            "--release",
            "--package",
            "xtask",
            "--",
            "bench",
        ])
        .args(args)
        .env(RELEASE_RERUN_ENV, "1")
        .current_dir(workspace_root())
        .status()
        .map_err(|e| BenchError::io("run cargo", e))?;
    if status.success() {
        Ok(())
    } else {
        Err(BenchError::Rerun(status))
    }
}

fn run_bench(options: &Options) -> Result<(), BenchError> {
    let root = workspace_root();
    // With --grpc, --scenarios selects among the gRPC scenarios (grpc.rs).
    let scenarios = if options.grpc {
        Vec::new()
    } else {
        scenario::select(&options.scenario_filters)?
    };
    let binary = match (&options.raftkv_binary, options.no_build) {
        (Some(path), _) => path.clone(),
        (None, true) => testcluster::target_dir().join("release/raftkv"),
        (None, false) => {
            eprintln!("bench: building raftkv (release)...");
            testcluster::release_binary().map_err(|e| BenchError::Build(e.to_string()))?
        }
    };
    if !binary.is_file() {
        return Err(BenchError::Build(format!(
            "no raftkv binary at {}",
            binary.display()
        )));
    }
    let out_dir = root.join("target/bench");
    std::fs::create_dir_all(&out_dir).map_err(|e| BenchError::io("create target/bench", e))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| BenchError::io("start the tokio runtime", e))?;
    if options.tls {
        let table = runtime.block_on(tls::run(&binary, options.duration, options.tls_rounds))?;
        println!("\n{table}");
        let results_path = out_dir.join("tls.md");
        std::fs::write(
            &results_path,
            format!("{}\n{table}", machine_summary(options)),
        )
        .map_err(|e| BenchError::io(&format!("write {}", results_path.display()), e))?;
        eprintln!("bench: results in {}", results_path.display());
        return Ok(());
    }
    if options.grpc {
        let table = runtime.block_on(grpc::run(&binary, options))?;
        println!("\netcd v3 gRPC: raftkv against etcd 3.4, one run:\n\n{table}");
        let results_path = out_dir.join("grpc.md");
        std::fs::write(
            &results_path,
            format!("{}\n{table}", machine_summary(options)),
        )
        .map_err(|e| BenchError::io(&format!("write {}", results_path.display()), e))?;
        eprintln!("bench: results in {}", results_path.display());
        return Ok(());
    }
    let rows = runtime.block_on(run_scenarios(&binary, &scenarios, options))?;
    let mut results = format!("{}\n{}", machine_summary(options), report::table(&rows));
    let svg = out_dir.join("bench.svg");
    report::plot(&rows, &svg)?;
    if options.peers {
        let lines = peers::run(
            &scenarios,
            &binary,
            &options.peers_dir,
            options.openraft_dir.as_deref(),
            options.duration,
            options.sample_keys,
        )?;
        let table = peers::table(&lines);
        println!("\nNeutral yardstick (../shared/peers scripts, wrk):\n\n{table}");
        results.push_str(&format!(
            "\n## Peers (../shared/peers scripts, wrk)\n\n{table}"
        ));
    }
    let results_path = out_dir.join("results.md");
    std::fs::write(&results_path, &results)
        .map_err(|e| BenchError::io(&format!("write {}", results_path.display()), e))?;
    eprintln!(
        "bench: results in {}, plot in {}",
        results_path.display(),
        svg.display()
    );
    Ok(())
}

/// Runs every scenario on one fresh cluster, printing each row as it ends.
async fn run_scenarios(
    binary: &Path,
    scenarios: &[Scenario],
    options: &Options,
) -> Result<Vec<Row>, BenchError> {
    let mut cluster = BenchCluster::start(binary).await?;
    let nodes = cluster.client_addrs();
    print!("{}", report::table_header());
    let mut rows = Vec::new();
    let mut read_keys_written = false;
    for scenario in scenarios {
        let leader = cluster.leader_addr().await?;
        if scenario.kind.reads() && !read_keys_written {
            eprintln!(
                "bench: writing {} keys for the read scenarios",
                options.read_keys()
            );
            load::fill_read_keys(leader, options.read_keys()).await?;
            read_keys_written = true;
        }
        let row = run_one(scenario, leader, &nodes, options).await?;
        cluster.check_alive()?;
        print!("{}", report::table_line(&row));
        rows.push(row);
    }
    cluster.stop();
    Ok(rows)
}

async fn run_one(
    scenario: &Scenario,
    leader: SocketAddr,
    nodes: &[SocketAddr],
    options: &Options,
) -> Result<Row, BenchError> {
    let outcome = load::run(scenario, leader, options.duration, options.read_keys()).await?;
    let lost = if scenario.kind.writes() {
        Some(verify::read_back(&scenario.name, &outcome.acked, options.sample_keys, nodes).await?)
    } else {
        None
    };
    if let Some(lost) = lost.as_ref().filter(|l| l.total() > 0) {
        eprintln!(
            "bench: {}: {} acknowledged writes missing in the read-back sample!",
            scenario.name,
            lost.total()
        );
    }
    Ok(Row::new(scenario, &outcome, lost))
}

/// Where the numbers came from: date, cores, CPU, kernel, run length.
fn machine_summary(options: &Options) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let kernel = command_output("uname", &["-sr"]);
    let date = command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    format!(
        "# raftkv benchmark\n\n{date}; {cores} cores ({cpu}); {kernel}; 3 nodes + load generator on \
         loopback; {} s per scenario{}.\n",
        options.duration.as_secs(),
        if options.quick { " (--quick)" } else { "" }
    )
}

fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}
