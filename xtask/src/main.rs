//! `cargo xtask`: raftkv's developer tasks, written in Rust.
//!
//! Run `cargo xtask` with no arguments for the list of tasks.

#![allow(clippy::print_stdout, clippy::print_stderr)]

mod bench;
mod cluster;
mod sim;

use std::process::ExitCode;

const TASKS: &str = "\
Usage: cargo xtask <task> [options]

Tasks:
  cluster [--nodes N] [--data-dir DIR] [--keep] [--tls]
        Build the release binary and run a local cluster on raftexample's
        Procfile ports (peers 12379, 22379, ...; clients 12380, 22380, ...).
        Prints the leader and curl commands; Ctrl-C stops every node.
        Data goes to target/xtask-cluster/raftkv-<id> (wiped at start
        unless --keep). --tls: a throwaway CA and certificates in
        <data dir>/pki, client certificates required on client ports,
        members authenticated by certificate; prints etcdctl and curl
        commands with --cacert/--cert/--key.
  chaos [--time 60s] [--faults all|kill,pause,...] [--seed S] [--nodes N]
        [--crash-loop [--rounds N]] [--check DIR] [--help]
        Jepsen-style fault suite against real nodes: concurrent clients,
        one fault at a time (kill -9, pause, partitions, membership), then
        linearizability, durability and liveness checks. See docs/chaos.md.
  bench [--quick] [--duration-secs N] [--scenarios a,b] [--peers]
        [--openraft DIR] [--help]
        Throughput and latency of a 3-node cluster under our own load
        generator, with lost-write counts; --peers runs raftexample, etcd
        and openraft the same way. See docs/bench.md.
  sim [--seeds N] [--seed S] [--nodes N] [--steps N] [--faults MIX]
        [--plant BUG] [--help]
        Deterministic simulation: real nodes (wal, raftnode, kvstore) on a
        simulated disk, network and clock, with simulated clients, one
        thread, one seed each, under network, disk and membership faults;
        checks Raft's safety invariants after every turn and the clients'
        history for linearizability at the end. A failure prints the
        command that replays its seed exactly. See docs/simulation.md.
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(task) = args.first() else {
        print!("{TASKS}");
        return ExitCode::SUCCESS;
    };
    let result = match task.as_str() {
        "cluster" => cluster::run(&args[1..]),
        "bench" => bench::run(&args[1..]),
        "chaos" => xtask::chaos::run(&args[1..]),
        "sim" => sim::run(&args[1..]),
        "help" | "--help" | "-h" => {
            print!("{TASKS}");
            Ok(())
        }
        other => Err(format!("unknown task {other:?}\n\n{TASKS}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}
