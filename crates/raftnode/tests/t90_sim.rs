//! Deterministic simulation (`raftnode::sim`): real nodes (raftnode's loop,
//! the WAL on a simulated disk) on one thread, with simulated clocks and an
//! in-memory network that drops, duplicates, delays and partitions, driven
//! turn by turn
//! from a seed, with crashes that lose unsynced data, and frequent snapshots
//! and compaction (a node that fell behind installs the leader's snapshot).
//! Checked after every turn: at most one leader per term, committed entries
//! never change (across crashes too), applied ≤ committed ≤ last index,
//! terms never go backwards; at the end every node applied the same. Same
//! seed, same trace.

use raftnode::sim::{run, SimOptions};

#[test]
fn seeded_clusters_elect_commit_survive_crashes_and_keep_every_invariant() {
    let mut partitions = 0;
    for (seed, nodes) in [(1, 3), (2, 3), (3, 5), (0xC0FFEE, 3)] {
        let options = SimOptions {
            nodes,
            ..SimOptions::default()
        };
        let outcome = run(seed, &options).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            !outcome.leaders.is_empty(),
            "seed {seed}: a leader was elected"
        );
        assert!(outcome.proposals_ok > 20, "seed {seed}: {outcome:?}");
        assert!(
            outcome.committed_max > 20,
            "seed {seed}: writes committed: {outcome:?}"
        );
        assert_eq!(outcome.crashes, options.crashes, "seed {seed}");
        assert!(
            outcome.snapshot_index_max > options.snapshot_count,
            "seed {seed}: snapshots were taken: {outcome:?}"
        );
        assert!(
            outcome.dropped > 0,
            "seed {seed}: the network dropped messages"
        );
        partitions += outcome.partitions;
    }
    assert!(partitions > 0, "some node was cut off");
}

/// With a log compacted right after every few entries, a node that was down
/// needs the leader's snapshot; transfers are also dropped by the network
/// (the leader hears of the failure and sends again).
#[test]
fn a_node_that_fell_behind_catches_up_from_the_leaders_snapshot() {
    let options = SimOptions {
        snapshot_count: 5,
        catch_up_entries: 0,
        propose_percent: 60,
        drop_percent: 10,
        ..SimOptions::default()
    };
    let mut transfers = 0;
    for seed in 10..14 {
        let outcome = run(seed, &options).unwrap_or_else(|e| panic!("{e}"));
        transfers += outcome.snapshots_sent;
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
    assert_ne!(
        first.trace_hash, other.trace_hash,
        "different seeds, different runs"
    );
}
