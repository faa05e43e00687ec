//! `cargo xtask chaos [options]`: parses the options, builds the release
//! binary and runs the suite or the crash loop.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{parse_faults, run_suite, ChaosConfig, ChaosError};

/// The task's help text.
pub const USAGE: &str = "\
Usage: cargo xtask chaos [options]

  --time DURATION     how long faults are injected, e.g. 300s, 5m (default 60s;
                      never less than one fault of every selected kind)
  --faults LIST       all, or a comma-separated list of: kill, kill-leader,
                      pause, partition-leader, split, bridge, membership,
                      isolated-leader-writes, stall
  --seed S            seed of the fault schedule and workload (default: clock)
  --nodes N           cluster size, 3 to 7 (default 3)
  --clients N         concurrent clients (default 4)
  --cas-clients N     compare-and-swap clients on the register, over gRPC
                      (default 2)
  --lease-clients N   clients keeping leases alive and leaving others to
                      expire, each lease with a key, over gRPC (default 1)
  --watch-clients N   clients watching the whole keyspace over gRPC,
                      resuming on another member when a stream breaks
                      (default 2)
  --keys N            keys the clients share (default 3)
  --hold-ms MS        how long each fault is held (default 2000)
  --crash-loop        instead: kill -9 a random node under write load, restart
                      it, --rounds times, then check everything
  --rounds N          stop after exactly N faults instead of --time
                      (the crash loop's rounds; default 20 there)
  --tls               TLS everywhere: a throwaway CA, client TLS with client
                      certificates, https:// peers with peer certificate
                      authentication; every client and fault route uses TLS
  --out DIR           output directory (default target/chaos/seed-S)
  --check DIR         only run the checkers again on a saved run's files
";

/// Runs `cargo xtask chaos` with its arguments (after `chaos`).
#[allow(clippy::print_stdout)] // The CLI's output is the summary.
pub fn run(args: &[String]) -> Result<(), String> {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        print!("{USAGE}");
        return Ok(());
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    if let Some(position) = args.iter().position(|a| a == "--check") {
        return check_saved(args.get(position + 1));
    }
    let root = testcluster::workspace_root();
    let binary = testcluster::release_binary().map_err(|e| e.to_string())?;
    let config = parse(args, binary, &root).map_err(|e| format!("{e}\n\n{USAGE}"))?;
    tracing::info!(seed = config.seed, out = %config.out_dir.display(), "chaos run starting");
    let report = run_suite(&config).map_err(|e| e.to_string())?;
    print!("{}", report.summary());
    if report.passed() {
        Ok(())
    } else {
        Err(format!(
            "chaos found a violation (seed {}); see {}",
            config.seed,
            config.out_dir.display()
        ))
    }
}

/// `--check DIR`: the checkers again on a saved run, no cluster.
#[allow(clippy::print_stdout)] // The CLI's output is the verdicts.
fn check_saved(dir: Option<&String>) -> Result<(), String> {
    let dir = Path::new(dir.ok_or("--check needs the output directory of a run")?);
    let (linearizability, durability) = super::recheck(
        dir,
        ChaosConfig::new(PathBuf::new(), PathBuf::new()).checker_max_steps,
    )
    .map_err(|e| e.to_string())?;
    print!("linearizability: {linearizability}\ndurability: {durability}\n");
    if linearizability.is_pass() && durability.is_pass() {
        Ok(())
    } else {
        Err(format!("violation in the saved run at {}", dir.display()))
    }
}

/// Parses the options into a configuration for `binary`.
pub fn parse(args: &[String], binary: PathBuf, root: &Path) -> Result<ChaosConfig, ChaosError> {
    // The crash loop only changes defaults: every option still applies.
    let mut config = if args.iter().any(|a| a == "--crash-loop") {
        ChaosConfig::crash_loop(binary, PathBuf::new(), 20)
    } else {
        ChaosConfig::new(binary, PathBuf::new())
    };
    config.seed = clock_seed();
    let mut out = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .cloned()
                .ok_or_else(|| ChaosError::Config(format!("{arg} needs a value")))
        };
        match arg.as_str() {
            "--time" => config.duration = parse_duration(&value()?)?,
            "--faults" => config.faults = parse_faults(&value()?)?,
            "--seed" => config.seed = number(arg, &value()?)?,
            "--nodes" => config.nodes = number(arg, &value()?)?,
            "--clients" => config.clients = number(arg, &value()?)?,
            "--cas-clients" => config.cas_clients = number(arg, &value()?)?,
            "--lease-clients" => config.lease_clients = number(arg, &value()?)?,
            "--watch-clients" => config.watch_clients = number(arg, &value()?)?,
            "--keys" => config.keys = number(arg, &value()?)?,
            "--hold-ms" => config.fault_hold_ms = number(arg, &value()?)?,
            "--rounds" => config.fault_count = Some(number(arg, &value()?)?),
            "--out" => out = Some(PathBuf::from(value()?)),
            "--crash-loop" => {}
            "--tls" => config.tls = true,
            other => return Err(ChaosError::Config(format!("unknown option {other:?}"))),
        }
    }
    config.out_dir = out.unwrap_or_else(|| root.join(format!("target/chaos/seed-{}", config.seed)));
    Ok(config)
}

fn number<T: std::str::FromStr>(option: &str, text: &str) -> Result<T, ChaosError> {
    text.parse()
        .map_err(|_| ChaosError::Config(format!("{option} {text:?} is not a valid number")))
}

/// `300s`, `5m`, `1h` or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, ChaosError> {
    let (digits, unit_s) = match text.char_indices().last() {
        Some((i, 's')) => (&text[..i], 1),
        Some((i, 'm')) => (&text[..i], 60),
        Some((i, 'h')) => (&text[..i], 3600),
        _ => (text, 1),
    };
    let count: u64 = number("--time", digits)?;
    Ok(Duration::from_secs(count.saturating_mul(unit_s)))
}

fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_secs())
}
