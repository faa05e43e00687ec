//! `cargo xtask sim [options]`: runs `kvsim` (real nodes, wal + raftnode +
//! kvstore, on a simulated disk, network and clock, with simulated clients,
//! on one thread) for many seeds, with a progress line and a summary; a
//! violation prints the one-line command that replays its seed exactly, and
//! the first failing seeds' traces are written as JSON under `target/sim/`
//! (with the chaos suite's HTML timeline of the key when a history does not
//! linearize).

use std::collections::BTreeMap;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use kvsim::{
    run as run_seed, run_recording, timeline_html, trace_json, Faults, KvSimOptions, KvSimOutcome,
    PlantedBug, FAULT_KINDS, FAULT_MIXES,
};

/// The task's help text.
pub const USAGE: &str = "\
Usage: cargo xtask sim [options]

  --seeds N           how many seeds to run (default 100)
  --seed S            the first seed (default: from the clock, printed); seeds
                      S, S+1, ... S+N-1 run; --seed S --seeds 1 replays one
  --nodes N           initial cluster size, 1 to 7 (default 3)
  --steps N           steps of the faulty phase per seed (default 600)
  --calm-steps N      steps without faults at the end (default 400)
  --clients N         concurrent clients (default 4)
  --keys N            keys they share (default 3)
  --requests P        percent of steps an idle client starts a request in
                      (default 30); half PUTs, the rest GETs
  --serializable P    percent of GETs that are serializable (default 25)
  --resend P          percent of steps that resend an earlier proposal
                      through another node (default 3)
  --ops N             most requests per seed (default 0: no bound)
  --snapshot-count N  applied entries between snapshots (default 20)
  --catch-up N        entries kept after a snapshot (default 2)
  --faults MIX        none, classic, network, disk, membership or all
                      (default all); the options below change one kind:
  --drop P            percent of messages dropped
  --duplicate P       percent of messages delivered twice
  --reorder P         percent of messages that may overtake on their link
  --partition P       percent of steps that cut a node off (when none is)
  --snapshot-fail P   percent of snapshot transfers that fail midway
  --crashes N         crashes per seed (half of them at an fsync)
  --torn-writes 0|1   a crash tears unsynced writes by sector
  --sync-failures N   fsync failures (EIO) per seed
  --slow-disk P       percent of steps at which a node's disk stalls
  --bit-flips N       crashes per seed followed by a WAL bit flip
  --membership N      membership changes per seed (remove, then add)
  --plant NAME        switch on a planted bug: send-before-fsync, skip-fsync,
                      corrupt-tail-as-torn, drop-snapshot-report,
                      snapshot-before-marker, ack-put-on-propose,
                      read-without-barrier, apply-duplicate
";

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Plan {
    first_seed: u64,
    seeds: u64,
    options: KvSimOptions,
    /// The options as given, minus `--seed` and `--seeds` (for the replay
    /// command).
    replay_args: Vec<String>,
}

/// Runs `cargo xtask sim` with its arguments (after `sim`).
#[allow(clippy::print_stdout, clippy::print_stderr)] // The CLI's output is the summary.
pub fn run(args: &[String]) -> Result<(), String> {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        print!("{USAGE}");
        return Ok(());
    }
    let plan = parse(args, clock_seed()).map_err(|e| format!("{e}\n\n{USAGE}"))?;
    if std::env::var_os("RUST_LOG").is_some() {
        // The nodes' own logs, for replaying one seed (RUST_LOG=raftnode=debug).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    println!(
        "sim: seeds {}..{} ({}), {} nodes, {} + {} steps each{}",
        plan.first_seed,
        plan.first_seed.wrapping_add(plan.seeds),
        plan.seeds,
        plan.options.sim.nodes,
        plan.options.sim.steps,
        plan.options.sim.calm_steps,
        plan.options
            .sim
            .plant
            .map(|bug| format!(", planted bug {}", bug.name()))
            .unwrap_or_default()
    );
    let started = Instant::now();
    let mut totals = Totals::default();
    for k in 0..plan.seeds {
        let seed = plan.first_seed.wrapping_add(k);
        match catch_unwind(AssertUnwindSafe(|| run_seed(seed, &plan.options))) {
            Ok(Ok(outcome)) => totals.add(&outcome),
            Ok(Err(violation)) => totals.fail(seed, violation.to_string()),
            Err(panic) => totals.fail(
                seed,
                format!("seed {seed}: panicked: {}", panic_text(&panic)),
            ),
        }
        eprint!(
            "\r{}",
            progress_bar(
                k + 1,
                plan.seeds,
                totals.failures.len(),
                started.elapsed().as_secs_f64()
            )
        );
        let _ = std::io::stderr().flush();
    }
    eprintln!();
    print!(
        "{}",
        totals.summary(plan.seeds, started.elapsed().as_secs_f64())
    );
    for (n, (seed, failure)) in totals.failures.iter().enumerate() {
        println!("FAILED {failure}");
        println!("  replay: {}", replay_command(&plan, *seed));
        if n < TRACES_WRITTEN_MAX {
            match write_trace(*seed, &plan.options) {
                Ok(path) => println!("  trace: {path}"),
                Err(e) => println!("  trace: not written: {e}"),
            }
        }
    }
    if totals.failures.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} of {} seeds broke an invariant",
            totals.failures.len(),
            plan.seeds
        ))
    }
}

/// Width of the progress bar, in characters.
const PROGRESS_BAR_CHARS: u64 = 30;

/// `[#########.....] 120/300 seeds, 0 failed, 3.1 s, about 4.6 s left`.
fn progress_bar(done: u64, total: u64, failed: usize, elapsed_s: f64) -> String {
    let total = total.max(1);
    let filled = (done.min(total) * PROGRESS_BAR_CHARS / total) as usize;
    let left_s = elapsed_s / done.max(1) as f64 * total.saturating_sub(done) as f64;
    format!(
        "[{}{}] {done}/{total} seeds, {failed} failed, {elapsed_s:.1} s, about {left_s:.1} s left ",
        "#".repeat(filled),
        ".".repeat(PROGRESS_BAR_CHARS as usize - filled),
    )
}

/// Failing seeds whose trace is written (the first ones).
const TRACES_WRITTEN_MAX: usize = 5;

/// Replays `seed` recording its events and writes them as JSON to
/// `<target>/sim/seed-<seed>.json`, and when a key did not linearize its
/// timeline to `seed-<seed>.html`; returns the paths.
fn write_trace(seed: u64, options: &KvSimOptions) -> Result<String, String> {
    let run = catch_unwind(AssertUnwindSafe(|| run_recording(seed, options, true)))
        .map_err(|panic| format!("the replay panicked: {}", panic_text(&panic)))?;
    let dir = testcluster::target_dir().join("sim");
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let path = dir.join(format!("seed-{seed}.json"));
    std::fs::write(
        &path,
        trace_json(seed, run.result.as_ref().err(), &run.events),
    )
    .map_err(|e| format!("write {}: {e}", path.display()))?;
    let mut written = path.display().to_string();
    if let Some(violation) = &run.violation {
        let html = dir.join(format!("seed-{seed}.html"));
        std::fs::write(&html, timeline_html(seed, violation, &run.events))
            .map_err(|e| format!("write {}: {e}", html.display()))?;
        written.push_str(&format!(", timeline: {}", html.display()));
    }
    Ok(written)
}

/// The one-line command that runs `seed` alone with the plan's options.
fn replay_command(plan: &Plan, seed: u64) -> String {
    let mut command = format!("cargo xtask sim --seed {seed} --seeds 1");
    for arg in &plan.replay_args {
        command.push(' ');
        command.push_str(arg);
    }
    command
}

/// Sums over the seeds that passed, and the failures.
#[derive(Debug, Default)]
struct Totals {
    passed: u64,
    committed: u64,
    terms_with_leader: u64,
    proposals_ok: u64,
    snapshots_sent: u64,
    delivered: u64,
    simulated_ms: u64,
    ops_checked: u64,
    puts_ok: u64,
    puts_unknown: u64,
    reads_linearizable: u64,
    reads_serializable: u64,
    resends: u64,
    faults: BTreeMap<&'static str, u64>,
    failures: Vec<(u64, String)>,
}

impl Totals {
    fn add(&mut self, outcome: &KvSimOutcome) {
        let clients = &outcome.clients;
        self.ops_checked += clients.ops_checked;
        self.puts_ok += clients.puts_ok;
        self.puts_unknown += clients.puts_unknown;
        self.reads_linearizable += clients.reads_linearizable;
        self.reads_serializable += clients.reads_serializable;
        self.resends += clients.resends;
        let outcome = &outcome.sim;
        self.passed += 1;
        self.committed += outcome.committed_max;
        self.terms_with_leader += outcome.leaders.len() as u64;
        self.proposals_ok += outcome.proposals_ok;
        self.snapshots_sent += outcome.snapshots_sent;
        self.delivered += outcome.delivered;
        self.simulated_ms += outcome.simulated_ms;
        for (kind, count) in &outcome.faults {
            *self.faults.entry(kind).or_insert(0) += count;
        }
    }

    fn fail(&mut self, seed: u64, failure: String) {
        self.failures.push((seed, failure));
    }

    fn summary(&self, seeds: u64, wall_s: f64) -> String {
        let simulated_s = self.simulated_ms as f64 / 1000.0;
        let mut text = format!(
            "passed {}/{seeds} seeds in {wall_s:.1} s ({:.0} seeds/minute); \
             simulated {:.2} h of cluster time ({:.0}x wall clock)\n\
             {} entries committed, {} terms with a leader, {} proposals accepted, \
             {} snapshot transfers, {} messages delivered\n\
             {} client operations checked ({} PUTs acknowledged, {} unknown; \
             {} linearizable and {} serializable GETs), {} proposals resent\nfaults:",
            self.passed,
            seeds as f64 * 60.0 / wall_s.max(1e-9),
            simulated_s / 3600.0,
            simulated_s / wall_s.max(1e-9),
            self.committed,
            self.terms_with_leader,
            self.proposals_ok,
            self.snapshots_sent,
            self.delivered,
            self.ops_checked,
            self.puts_ok,
            self.puts_unknown,
            self.reads_linearizable,
            self.reads_serializable,
            self.resends,
        );
        for kind in FAULT_KINDS {
            let count = self.faults.get(kind).copied().unwrap_or(0);
            if count > 0 {
                text.push_str(&format!(" {kind} {count},"));
            }
        }
        text.pop();
        text.push('\n');
        text
    }
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(no message)".into())
}

fn parse(args: &[String], default_seed: u64) -> Result<Plan, String> {
    let mut plan = Plan {
        first_seed: default_seed,
        seeds: 100,
        options: KvSimOptions::default(),
        replay_args: Vec::new(),
    };
    let pairs: Vec<(&String, &String)> = {
        let mut pairs = Vec::new();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let value = args.next().ok_or_else(|| format!("{arg} needs a value"))?;
            pairs.push((arg, value));
        }
        pairs
    };
    // The mix first, so the options for one kind change it in any order.
    for (arg, value) in &pairs {
        if arg.as_str() == "--faults" {
            plan.options.sim.faults = Faults::mix(value).ok_or_else(|| {
                format!(
                    "--faults {value:?} is not one of {}",
                    FAULT_MIXES.join(", ")
                )
            })?;
        }
    }
    for (arg, text) in pairs {
        if !matches!(arg.as_str(), "--seed" | "--seeds") {
            plan.replay_args.push(arg.clone());
            plan.replay_args.push(text.clone());
        }
        match arg.as_str() {
            "--faults" => continue,
            "--plant" => {
                plan.options.sim.plant = Some(PlantedBug::from_name(text).ok_or_else(|| {
                    let names: Vec<&str> = PlantedBug::ALL.iter().map(|b| b.name()).collect();
                    format!("--plant {text:?} is not one of {}", names.join(", "))
                })?);
                continue;
            }
            _ => {}
        }
        let value: u64 = text
            .parse()
            .map_err(|_| format!("{arg} {text:?} is not a valid number"))?;
        let o = &mut plan.options.sim;
        let c = &mut plan.options.clients;
        let f = &mut o.faults;
        match arg.as_str() {
            "--seeds" => plan.seeds = value,
            "--seed" => plan.first_seed = value,
            "--nodes" => o.nodes = value,
            "--steps" => o.steps = value,
            "--calm-steps" => o.calm_steps = value,
            "--clients" => c.clients = value,
            "--keys" => c.keys = value,
            "--requests" => c.request_percent = value,
            "--serializable" => c.serializable_percent = value,
            "--resend" => c.resend_percent = value,
            "--ops" => c.max_ops = value,
            "--snapshot-count" => o.snapshot_count = value,
            "--catch-up" => o.catch_up_entries = value,
            "--drop" => f.drop_percent = value,
            "--duplicate" => f.duplicate_percent = value,
            "--reorder" => f.reorder_percent = value,
            "--partition" => f.partition_percent = value,
            "--snapshot-fail" => f.snapshot_fail_percent = value,
            "--crashes" => f.crashes = value,
            "--torn-writes" => f.torn_writes = value != 0,
            "--sync-failures" => f.sync_failures = value,
            "--slow-disk" => f.slow_disk_percent = value,
            "--bit-flips" => f.bit_flips = value,
            "--membership" => f.membership_changes = value,
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    if !(1..=7).contains(&plan.options.sim.nodes) {
        return Err(format!(
            "--nodes {} is not in 1..=7",
            plan.options.sim.nodes
        ));
    }
    if !(1..=1000).contains(&plan.options.clients.keys) {
        return Err("--keys must be in 1..=1000".into());
    }
    if plan.options.sim.steps < 60 {
        return Err("--steps must be at least 60 (a crash and a restart fit)".into());
    }
    if plan.options.sim.calm_steps < 100 {
        return Err("--calm-steps must be at least 100 (time to converge)".into());
    }
    Ok(plan)
}

fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn options_parse_and_bad_ones_are_refused() {
        let plan = parse(&args("--seeds 5 --seed 42 --nodes 5 --steps 300"), 9).unwrap();
        assert_eq!((plan.first_seed, plan.seeds), (42, 5));
        assert_eq!((plan.options.sim.nodes, plan.options.sim.steps), (5, 300));
        let default = parse(&[], 9).unwrap();
        assert_eq!((default.first_seed, default.seeds), (9, 100));
        assert_eq!(default.options.sim.faults, Faults::mix("all").unwrap());
        let clients = parse(&args("--clients 8 --keys 2 --ops 50"), 9).unwrap();
        assert_eq!(
            (
                clients.options.clients.clients,
                clients.options.clients.keys
            ),
            (8, 2)
        );
        assert_eq!(clients.options.clients.max_ops, 50);
        assert!(parse(&args("--keys 0"), 9).is_err());
        assert!(parse(&args("--nodes 0"), 9).is_err());
        assert!(parse(&args("--steps 10"), 9).is_err());
        assert!(parse(&args("--seeds"), 9).is_err());
        assert!(parse(&args("--seeds many"), 9).is_err());
        assert!(parse(&args("--fast 1"), 9).is_err());
        assert!(parse(&args("--faults gentle"), 9).is_err());
        assert!(parse(&args("--plant nothing"), 9).is_err());
    }

    #[test]
    fn a_fault_option_changes_the_mix_whatever_the_order() {
        let plan = parse(&args("--crashes 7 --faults network --plant skip-fsync"), 9).unwrap();
        let network = Faults::mix("network").unwrap();
        assert_eq!(
            plan.options.sim.faults,
            Faults {
                crashes: 7,
                ..network
            }
        );
        assert_eq!(plan.options.sim.plant, Some(PlantedBug::SkipFsync));
    }

    #[test]
    fn the_progress_bar_fills_with_the_seeds_done() {
        let start = progress_bar(0, 300, 0, 0.0);
        assert!(
            start.starts_with(&format!("[{}]", ".".repeat(30))),
            "{start}"
        );
        let half = progress_bar(150, 300, 2, 3.0);
        assert!(
            half.starts_with(&format!("[{}{}]", "#".repeat(15), ".".repeat(15))),
            "{half}"
        );
        assert!(
            half.contains("150/300 seeds, 2 failed, 3.0 s, about 3.0 s left"),
            "{half}"
        );
        let done = progress_bar(300, 300, 0, 6.0);
        assert!(done.starts_with(&format!("[{}]", "#".repeat(30))), "{done}");
        assert!(done.contains("about 0.0 s left"), "{done}");
    }

    #[test]
    fn the_replay_command_keeps_every_option_but_the_seed_range() {
        let plan = parse(&args("--seeds 300 --faults disk --seed 4 --catch-up 0"), 9).unwrap();
        assert_eq!(
            replay_command(&plan, 17),
            "cargo xtask sim --seed 17 --seeds 1 --faults disk --catch-up 0"
        );
    }
}
