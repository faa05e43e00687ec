//! Command-line options of `cargo xtask bench`.

use std::path::PathBuf;
use std::time::Duration;

use super::BenchError;

/// Usage text, printed for `--help` and with option errors.
pub(crate) const USAGE: &str = "\
Usage: cargo xtask bench [options]

Builds target/release/raftkv, starts a 3-node cluster on loopback (temp data
dirs) and drives it with an async HTTP/1.1 keep-alive load generator.
Results: a markdown table on stdout and in target/bench/results.md, a plot in
target/bench/bench.svg.

Options:
  --duration-secs N   seconds per scenario (default 10)
  --quick             short smoke run (2 s per scenario, smaller samples)
  --scenarios A,B     only scenarios whose name starts with one of A, B
                      (e.g. write-c64, read, mixed); see the list below
  --sample N          acknowledged keys read back per node (default 2000)
  --peers             also run the write scenarios through the neutral scripts
                      (bench-put on raftkv and raftexample, bench-etcd,
                      bench-openraft) and print ratios
  --openraft DIR      openraft source tree for --peers (bench-openraft)
  --peers-dir DIR     the peers scripts (default ../shared/peers from the
                      workspace root)
  --grpc              instead: etcd's v3 gRPC API against raftkv and a 3-member
                      etcd 3.4 (etcd on the PATH) in one run, as ratios
                      (put-c1, put-c64, range-lin-c64, range-ser-c64,
                      range-1000-keys-c8, txn-cas-c64, lease-grant-c64,
                      lease-keepalive-c64); target/bench/grpc.md
  --tls               instead: what TLS costs. A plain and a TLS 3-node cluster
                      (client and peer certificates required), alternately,
                      --tls-rounds times each: HTTP PUT and gRPC Put at 64
                      connections (writes/s, latency, CPU per write) and new
                      connections per second; target/bench/tls.md
  --tls-rounds N      rounds of each cluster for --tls (default 2)
  --no-build          use <target dir>/release/raftkv as it is
  --raftkv PATH       benchmark this raftkv binary (implies --no-build)

Scenarios: write-c1-64b write-c64-64b write-c256-64b write-c1-1k
  write-c64-1k write-c256-1k read-lin-c64 read-ser-c64 mixed-c64
";

/// Parsed options.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Measured time per scenario.
    pub duration: Duration,
    /// Smoke-test mode: short runs and small samples.
    pub quick: bool,
    /// Scenario name prefixes to run (empty: all).
    pub scenario_filters: Vec<String>,
    /// Acknowledged keys read back from every node after a write scenario.
    pub sample_keys: usize,
    /// Whether to run the peers' scripts too.
    pub peers: bool,
    /// openraft source tree for `bench-openraft`.
    pub openraft_dir: Option<PathBuf>,
    /// Directory holding `bench-put`, `bench-etcd`, `bench-openraft`.
    pub peers_dir: PathBuf,
    /// Skip `cargo build --release -p raftkv`.
    pub no_build: bool,
    /// A raftkv binary to measure instead of target/release/raftkv.
    pub raftkv_binary: Option<PathBuf>,
    /// Run the gRPC scenarios against raftkv and etcd instead.
    pub grpc: bool,
    /// Compare a plain and a TLS cluster instead.
    pub tls: bool,
    /// Rounds of each cluster for `--tls`.
    pub tls_rounds: u32,
    /// Set by `--help`.
    pub help: bool,
}

impl Options {
    /// Keys written before the read scenarios (they read these).
    pub(crate) fn read_keys(&self) -> u64 {
        if self.quick {
            1_000
        } else {
            10_000
        }
    }
}

/// Parses `cargo xtask bench` arguments; `workspace_root` anchors defaults.
pub(crate) fn parse(
    args: &[String],
    workspace_root: &std::path::Path,
) -> Result<Options, BenchError> {
    let mut options = Options {
        duration: Duration::from_secs(10),
        quick: false,
        scenario_filters: Vec::new(),
        sample_keys: 2_000,
        peers: false,
        openraft_dir: None,
        peers_dir: workspace_root.join("../shared/peers"),
        no_build: false,
        raftkv_binary: None,
        grpc: false,
        tls: false,
        tls_rounds: 2,
        help: false,
    };
    let mut duration_set = false;
    let mut sample_set = false;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .cloned()
                .ok_or_else(|| BenchError::Usage(format!("{name} needs a value")))
        };
        match arg.as_str() {
            "--duration-secs" => {
                let secs = parse_number(&value(arg)?, arg)?;
                if secs == 0 || secs > 3_600 {
                    return Err(BenchError::Usage("--duration-secs must be 1..=3600".into()));
                }
                options.duration = Duration::from_secs(secs);
                duration_set = true;
            }
            "--quick" => options.quick = true,
            "--scenarios" => options.scenario_filters = split_list(&value(arg)?),
            "--sample" => {
                let sample = parse_number(&value(arg)?, arg)?;
                options.sample_keys = usize::try_from(sample)
                    .map_err(|_| BenchError::Usage(format!("--sample {sample} is too large")))?;
                sample_set = true;
            }
            "--peers" => options.peers = true,
            "--grpc" => options.grpc = true,
            "--tls" => options.tls = true,
            "--tls-rounds" => {
                let rounds = parse_number(&value(arg)?, arg)?;
                if !(1..=20).contains(&rounds) {
                    return Err(BenchError::Usage("--tls-rounds must be 1..=20".into()));
                }
                options.tls_rounds = rounds as u32;
            }
            "--openraft" => options.openraft_dir = Some(PathBuf::from(value(arg)?)),
            "--peers-dir" => options.peers_dir = PathBuf::from(value(arg)?),
            "--no-build" => options.no_build = true,
            "--raftkv" => {
                options.raftkv_binary = Some(PathBuf::from(value(arg)?));
                options.no_build = true;
            }
            "--help" | "-h" => options.help = true,
            other => return Err(BenchError::Usage(format!("unknown option {other:?}"))),
        }
    }
    if options.quick && !duration_set {
        options.duration = Duration::from_secs(2);
    }
    if options.quick && !sample_set {
        options.sample_keys = 300;
    }
    Ok(options)
}

fn parse_number(text: &str, option: &str) -> Result<u64, BenchError> {
    text.parse()
        .map_err(|_| BenchError::Usage(format!("{option} {text:?} is not a whole number")))
}

fn split_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}
