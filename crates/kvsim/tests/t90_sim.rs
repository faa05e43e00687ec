//! Deterministic simulation (`kvsim` over `raftnode::sim`): real nodes
//! (the WAL on a simulated disk, raftnode's loop, kvstore) on one thread,
//! with simulated clocks and an in-memory network, driven turn by turn from
//! a seed, under every kind of fault the simulation injects (network,
//! disks, membership), with frequent snapshots and compaction, and clients
//! doing PUTs and linearizable and serializable GETs through each node's
//! store. Checked after every turn: at most one leader per term, committed
//! entries never change (across crashes too), applied ≤ committed ≤ last
//! index, terms never go backwards; at the end every member applied the
//! same, has the same keyspace, and the clients' history (with a final read
//! of every key) is linearizable. Same seed, same trace.

use kvsim::{
    trace_json, Faults, KvSimOptions, KvSimOutcome, SimError, SimOptions, TraceEvent, FAULT_MIXES,
    TRACE_KINDS,
};

fn run(seed: u64, sim: &SimOptions) -> Result<KvSimOutcome, SimError> {
    kvsim::run(
        seed,
        &KvSimOptions {
            sim: *sim,
            ..KvSimOptions::default()
        },
    )
}

fn run_traced(seed: u64, sim: &SimOptions) -> (Result<KvSimOutcome, SimError>, Vec<TraceEvent>) {
    let options = KvSimOptions {
        sim: *sim,
        ..KvSimOptions::default()
    };
    let run = kvsim::run_recording(seed, &options, true);
    (run.result, run.events)
}

#[test]
fn seeded_clusters_elect_commit_survive_crashes_and_keep_every_invariant() {
    for (seed, nodes) in [(1, 3), (2, 3), (3, 5), (0xC0FFEE, 3)] {
        let options = SimOptions {
            nodes,
            faults: Faults::mix("classic").expect("a mix"),
            ..SimOptions::default()
        };
        let outcome = run(seed, &options).unwrap_or_else(|e| panic!("{e}"));
        let clients = outcome.clients;
        assert!(clients.puts_ok > 10, "seed {seed}: {clients:?}");
        assert!(clients.reads_linearizable > 10, "seed {seed}: {clients:?}");
        assert!(clients.reads_serializable > 5, "seed {seed}: {clients:?}");
        assert!(clients.ops_checked > 50, "seed {seed}: {clients:?}");
        let outcome = outcome.sim;
        assert!(
            !outcome.leaders.is_empty(),
            "seed {seed}: a leader was elected"
        );
        assert!(
            outcome.committed_max > 20,
            "seed {seed}: writes committed: {outcome:?}"
        );
        assert!(
            outcome.snapshot_index_max > options.snapshot_count,
            "seed {seed}: snapshots were taken: {outcome:?}"
        );
        assert!(
            outcome.fault_count("dropped") > 0,
            "seed {seed}: the network dropped messages"
        );
    }
}

/// Every named mix runs green on a few seeds, and over them each kind of
/// fault it turns on happened at least once.
#[test]
fn every_fault_mix_injects_its_faults_and_keeps_the_invariants() {
    for mix in FAULT_MIXES {
        let options = SimOptions {
            faults: Faults::mix(mix).expect("a mix"),
            ..SimOptions::default()
        };
        let mut faults = std::collections::BTreeMap::new();
        for seed in 0..6 {
            let outcome = run(seed, &options)
                .unwrap_or_else(|e| panic!("mix {mix}: {e}"))
                .sim;
            for (kind, count) in outcome.faults {
                *faults.entry(kind).or_insert(0) += count;
            }
        }
        let f = options.faults;
        for (on, kind) in [
            (f.drop_percent > 0, "dropped"),
            (f.partition_percent > 0, "partitions"),
            (f.crashes > 0, "crashes"),
            (f.sync_failures > 0, "fsync failures"),
            (f.slow_disk_percent > 0, "slow disks"),
            (f.bit_flips > 0, "bit flips"),
            (f.bit_flips > 0, "restarts refused"),
            (f.membership_changes > 0 || f.bit_flips > 0, "removals"),
        ] {
            assert_eq!(
                faults.get(kind).copied().unwrap_or(0) > 0,
                on,
                "mix {mix}: {kind}: {faults:?}"
            );
        }
    }
}

/// With a log compacted right after every few entries, a node that was down
/// needs the leader's snapshot; transfers also fail midway (the leader hears
/// of the failure and sends again).
#[test]
fn a_node_that_fell_behind_catches_up_from_the_leaders_snapshot() {
    let options = SimOptions {
        snapshot_count: 5,
        catch_up_entries: 0,
        faults: Faults {
            drop_percent: 10,
            snapshot_fail_percent: 50,
            ..Faults::mix("classic").expect("a mix")
        },
        ..SimOptions::default()
    };
    let mut transfers = 0;
    for seed in 10..14 {
        let outcome = run(seed, &options).unwrap_or_else(|e| panic!("{e}"));
        transfers += outcome.sim.snapshots_sent;
    }
    assert!(transfers > 0, "no snapshot was sent");
}

#[test]
fn the_same_seed_gives_the_same_trace() {
    let options = SimOptions {
        steps: 400,
        ..SimOptions::default()
    };
    let first = run(7, &options).unwrap_or_else(|e| panic!("{e}"));
    let second = run(7, &options).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first, second, "same seed, same run");
    let other = run(8, &options).unwrap_or_else(|e| panic!("{e}"));
    assert!(first.clients.ops_checked > 0, "clients ran: {first:?}");
    assert_ne!(
        first.sim.trace_hash, other.sim.trace_hash,
        "different seeds, different runs"
    );
}

/// A replay that records its events is the same run (same hash, same
/// outcome), and its JSON names every event and the failure.
#[test]
fn a_recorded_trace_is_the_same_run_and_its_json_names_every_event() {
    let options = SimOptions {
        steps: 400,
        ..SimOptions::default()
    };
    let plain = run(7, &options).unwrap_or_else(|e| panic!("{e}"));
    let (traced, events) = run_traced(7, &options);
    assert_eq!(
        traced.as_ref().ok(),
        Some(&plain),
        "recording changed the run"
    );
    for kind in [
        "open",
        "deliver",
        "status",
        "client_invoke",
        "client_return",
    ] {
        assert!(
            events.iter().any(|e| e.kind == kind),
            "no {kind} event among {} events",
            events.len()
        );
    }
    assert!(events.iter().all(|e| e.kind != "unknown"));
    assert!(
        events.windows(2).all(|w| w[0].step <= w[1].step),
        "steps in order"
    );
    for event in &events {
        let (_, _, names) = TRACE_KINDS
            .iter()
            .find(|(_, name, _)| *name == event.kind)
            .expect("a listed kind");
        assert_eq!(event.fields.len(), names.len(), "{event:?}");
    }
    let json = trace_json(7, None, &events);
    assert!(json.contains("\"error\": null"));
    assert_eq!(json.matches("\"kind\": ").count(), events.len());
    assert!(json.contains("\"kind\": \"status\", \"node\": "));

    // A failing run: the error is in the JSON, with its step.
    let broken = SimOptions {
        plant: Some(kvsim::PlantedBug::SkipFsync),
        ..SimOptions::default()
    };
    let failing = ci_seeds()
        .find_map(|seed| {
            let (result, events) = std::panic::catch_unwind(|| run_traced(seed, &broken)).ok()?;
            let error = result.err()?;
            Some((seed, error, events))
        })
        .expect("a planted bug fails some seed");
    let (seed, error, events) = failing;
    let json = trace_json(seed, Some(&error), &events);
    assert!(
        json.contains(&format!(
            "\"error\": {{\"step\": {}, \"reason\": \"",
            error.step
        )),
        "{}",
        &json[..json.len().min(300)]
    );
    assert!(events.last().is_some_and(|e| e.step <= error.step));
}

/// The seeds CI runs: the default (all faults) mix, default clients. About
/// 20 s in release on a 2-core machine under load (the whole file); a debug
/// build runs the first tenth.
fn ci_seeds() -> std::ops::Range<u64> {
    if cfg!(debug_assertions) {
        0..100
    } else {
        0..1000
    }
}

/// The CI range with three nodes, and its first tenth with five.
#[test]
fn the_ci_seed_range_keeps_every_invariant_under_every_fault() {
    let mut failures = Vec::new();
    let five_nodes_end = ci_seeds().end / 10;
    for (nodes, seeds) in [(3, ci_seeds()), (5, 0..five_nodes_end)] {
        let options = SimOptions {
            nodes,
            ..SimOptions::default()
        };
        for seed in seeds {
            if let Err(e) = run(seed, &options) {
                failures.push(format!(
                    "{e}\n  replay: cargo xtask sim --seed {seed} --seeds 1 --nodes {nodes}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// One seed from the clock each run, printed, so that CI explores beyond
/// the fixed range; a failure names the seed that replays it.
#[test]
#[allow(clippy::print_stdout)] // The seed is this test's output.
fn a_random_seed_keeps_every_invariant() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    println!("random seed {seed} (replay: cargo xtask sim --seed {seed} --seeds 1)");
    if let Err(e) = run(seed, &SimOptions::default()) {
        panic!("{e}\n  replay: cargo xtask sim --seed {seed} --seeds 1");
    }
}

/// Each planted bug (`wal::plant`: in wal, raftnode and kvstore) breaks a
/// check within the CI seed range: the simulation would catch that mistake
/// in the real code.
#[test]
fn every_planted_bug_is_caught_within_the_ci_seed_range() {
    for bug in kvsim::PlantedBug::ALL {
        let options = SimOptions {
            plant: Some(bug),
            ..SimOptions::default()
        };
        let caught = ci_seeds().find(|&seed| {
            std::panic::catch_unwind(|| run(seed, &options)).map_or(true, |result| result.is_err())
        });
        assert!(
            caught.is_some(),
            "planted bug {} survived seeds {:?}",
            bug.name(),
            ci_seeds()
        );
    }
}

/// A seed whose history does not linearize names the key and its culprit,
/// and its timeline (the chaos suite's HTML) shows that key's operations
/// with the culprit outlined.
#[test]
fn a_history_that_does_not_linearize_is_drawn_as_the_chaos_timeline() {
    let options = KvSimOptions {
        sim: SimOptions {
            plant: Some(kvsim::PlantedBug::ReadWithoutBarrier),
            ..SimOptions::default()
        },
        ..KvSimOptions::default()
    };
    let (seed, run) = ci_seeds()
        .find_map(|seed| {
            let run = kvsim::run_recording(seed, &options, true);
            run.violation.is_some().then_some((seed, run))
        })
        .expect("a read without its barrier breaks linearizability");
    let error = run.result.as_ref().expect_err("the run failed");
    let violation = run.violation.as_ref().expect("found above");
    assert!(
        error
            .reason
            .contains(&format!("key {} does not linearize", violation.key)),
        "{error}"
    );
    assert!(violation.ops.contains(&violation.culprit));
    assert!(violation.ops.iter().all(|op| op.key == violation.key));
    let html = kvsim::timeline_html(seed, violation, &run.events);
    assert!(html.starts_with("<!doctype html>"));
    assert!(html.contains(&format!("raftkv sim seed {seed}")));
    assert_eq!(html.matches("culprit'").count(), 1, "one culprit outlined");
    assert_eq!(
        html.matches("class='op ").count(),
        violation.ops.len(),
        "one bar per operation"
    );
    assert!(
        html.contains("<div class=fault"),
        "the faults of the run are drawn as bands"
    );
}
