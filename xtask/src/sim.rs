//! `cargo xtask sim [options]`: runs `raftnode::sim` (real nodes on a
//! simulated disk, network and clock, on one thread) for many seeds, with a
//! progress line and a summary; a violation names its seed, which replays it
//! exactly (`--seed S --seeds 1`).

use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use raftnode::sim::{run as run_seed, SimOptions, SimOutcome};

/// The task's help text.
pub const USAGE: &str = "\
Usage: cargo xtask sim [options]

  --seeds N       how many seeds to run (default 100)
  --seed S        the first seed (default: from the clock, printed); seeds
                  S, S+1, ... S+N-1 run; --seed S --seeds 1 replays one
  --nodes N       cluster size, 1 to 7 (default 3)
  --steps N       steps of the faulty phase per seed (default 600)
  --drop P        percent of messages dropped (default 3)
  --duplicate P   percent of messages delivered twice (default 2)
  --propose P     percent of steps with a proposal (default 30)
  --partition P   percent of steps that cut a node off (one or both ways)
                  when none is (default 1)
  --crashes N     crashes per seed, one node down at a time (default 2)
";

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Plan {
    first_seed: u64,
    seeds: u64,
    options: SimOptions,
}

/// Runs `cargo xtask sim` with its arguments (after `sim`).
#[allow(clippy::print_stdout, clippy::print_stderr)] // The CLI's output is the summary.
pub fn run(args: &[String]) -> Result<(), String> {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        print!("{USAGE}");
        return Ok(());
    }
    let plan = parse(args, clock_seed()).map_err(|e| format!("{e}\n\n{USAGE}"))?;
    println!(
        "sim: seeds {}..{} ({}), {} nodes, {} steps each",
        plan.first_seed,
        plan.first_seed.wrapping_add(plan.seeds),
        plan.seeds,
        plan.options.nodes,
        plan.options.steps
    );
    let started = Instant::now();
    let mut totals = Totals::default();
    for k in 0..plan.seeds {
        let seed = plan.first_seed.wrapping_add(k);
        match catch_unwind(AssertUnwindSafe(|| run_seed(seed, &plan.options))) {
            Ok(Ok(outcome)) => totals.add(&outcome),
            Ok(Err(violation)) => totals.failures.push(violation.to_string()),
            Err(panic) => totals
                .failures
                .push(format!("seed {seed}: panicked: {}", panic_text(&panic))),
        }
        eprint!(
            "\r{}/{} seeds, {} failed, {:.1}s",
            k + 1,
            plan.seeds,
            totals.failures.len(),
            started.elapsed().as_secs_f64()
        );
        let _ = std::io::stderr().flush();
    }
    eprintln!();
    print!("{}", totals.summary(plan.seeds));
    if totals.failures.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} of {} seeds broke an invariant (replay one with --seed S --seeds 1)",
            totals.failures.len(),
            plan.seeds
        ))
    }
}

/// Sums over the seeds that passed, and the failures.
#[derive(Debug, Default)]
struct Totals {
    passed: u64,
    committed: u64,
    terms_with_leader: u64,
    proposals_ok: u64,
    crashes: u64,
    snapshots_sent: u64,
    partitions: u64,
    delivered: u64,
    dropped: u64,
    failures: Vec<String>,
}

impl Totals {
    fn add(&mut self, outcome: &SimOutcome) {
        self.passed += 1;
        self.committed += outcome.committed_max;
        self.terms_with_leader += outcome.leaders.len() as u64;
        self.proposals_ok += outcome.proposals_ok;
        self.crashes += outcome.crashes;
        self.snapshots_sent += outcome.snapshots_sent;
        self.partitions += outcome.partitions;
        self.delivered += outcome.delivered;
        self.dropped += outcome.dropped;
    }

    fn summary(&self, seeds: u64) -> String {
        let mut text = format!(
            "passed {}/{seeds}: {} entries committed, {} terms with a leader, \
             {} proposals accepted, {} crashes, {} partitions, {} snapshot transfers, \
             {} messages delivered, {} dropped\n",
            self.passed,
            self.committed,
            self.terms_with_leader,
            self.proposals_ok,
            self.crashes,
            self.partitions,
            self.snapshots_sent,
            self.delivered,
            self.dropped
        );
        for failure in &self.failures {
            text.push_str(&format!("FAILED {failure}\n"));
        }
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
        options: SimOptions::default(),
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let text = args.next().ok_or_else(|| format!("{arg} needs a value"))?;
        let value: u64 = text
            .parse()
            .map_err(|_| format!("{arg} {text:?} is not a valid number"))?;
        match arg.as_str() {
            "--seeds" => plan.seeds = value,
            "--seed" => plan.first_seed = value,
            "--nodes" => plan.options.nodes = value,
            "--steps" => plan.options.steps = value,
            "--drop" => plan.options.drop_percent = value,
            "--duplicate" => plan.options.duplicate_percent = value,
            "--propose" => plan.options.propose_percent = value,
            "--partition" => plan.options.partition_percent = value,
            "--crashes" => plan.options.crashes = value,
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    if !(1..=7).contains(&plan.options.nodes) {
        return Err(format!("--nodes {} is not in 1..=7", plan.options.nodes));
    }
    if plan.options.steps < 60 {
        return Err("--steps must be at least 60 (a crash and a restart fit)".into());
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
        assert_eq!((plan.options.nodes, plan.options.steps), (5, 300));
        let default = parse(&[], 9).unwrap();
        assert_eq!((default.first_seed, default.seeds), (9, 100));
        assert!(parse(&args("--nodes 0"), 9).is_err());
        assert!(parse(&args("--steps 10"), 9).is_err());
        assert!(parse(&args("--seeds"), 9).is_err());
        assert!(parse(&args("--seeds many"), 9).is_err());
        assert!(parse(&args("--fast 1"), 9).is_err());
    }
}
