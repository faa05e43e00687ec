//! The linearizability checker on hand-made histories.

use xtask::chaos::checker::{check_history, check_key, check_unique_keys, KeyVerdict};
use xtask::chaos::history::{CasResult, Op, OpCounts, Outcome};

const BUDGET: u64 = 1_000_000;

fn put(client: &str, value: &str, outcome: Outcome, times: (u64, u64)) -> Op {
    Op::put(client, "/k", value, outcome, times)
}

fn get(client: &str, value: Option<&str>, times: (u64, u64)) -> Op {
    Op::get(client, "/k", value, times)
}

fn verdict(ops: &[Op]) -> KeyVerdict {
    check_key(ops, BUDGET)
}

#[test]
fn empty_history_is_linearizable() {
    assert_eq!(verdict(&[]), KeyVerdict::Linearizable);
}

#[test]
fn sequential_writes_and_reads_are_linearizable() {
    let ops = [
        get("c0", None, (0, 1)),
        put("c0", "a", Outcome::Ok, (2, 3)),
        get("c1", Some("a"), (4, 5)),
        put("c1", "b", Outcome::Ok, (6, 7)),
        get("c0", Some("b"), (8, 9)),
    ];
    assert_eq!(verdict(&ops), KeyVerdict::Linearizable);
}

#[test]
fn concurrent_read_may_see_either_value() {
    // The write of b overlaps both reads: one sees a, one sees b, in an
    // order consistent with real time.
    let ops = [
        put("c0", "a", Outcome::Ok, (0, 1)),
        put("c1", "b", Outcome::Ok, (2, 10)),
        get("c2", Some("b"), (3, 4)),
        get("c3", Some("b"), (5, 6)),
        get("c4", Some("a"), (2, 3)),
    ];
    assert_eq!(verdict(&ops), KeyVerdict::Linearizable);
}

#[test]
fn stale_read_is_rejected() {
    let ops = [
        put("c0", "a", Outcome::Ok, (0, 1)),
        put("c0", "b", Outcome::Ok, (2, 3)),
        // Starts after b was acknowledged, still reads a.
        get("c1", Some("a"), (4, 5)),
    ];
    assert_eq!(verdict(&ops), KeyVerdict::NotLinearizable { culprit: 2 });
}

#[test]
fn read_going_back_in_time_is_rejected() {
    // Both reads overlap the write of b, but once one read saw b, a later
    // read cannot see a again.
    let ops = [
        put("c0", "a", Outcome::Ok, (0, 1)),
        put("c1", "b", Outcome::Ok, (2, 20)),
        get("c2", Some("b"), (3, 4)),
        get("c3", Some("a"), (5, 6)),
    ];
    assert_eq!(verdict(&ops), KeyVerdict::NotLinearizable { culprit: 3 });
}

#[test]
fn lost_write_is_rejected() {
    // An acknowledged write, then a read that finds the key absent.
    let ops = [put("c0", "a", Outcome::Ok, (0, 1)), get("c1", None, (2, 3))];
    assert_eq!(verdict(&ops), KeyVerdict::NotLinearizable { culprit: 1 });
}

#[test]
fn unknown_write_may_take_effect_late() {
    // The write timed out at 2 but was applied later: reading it at 10 is
    // fine, and so is reading nothing at 5 (not applied yet).
    let ops = [
        put("c0", "a", Outcome::Unknown, (0, 2)),
        get("c1", None, (5, 6)),
        get("c1", Some("a"), (10, 11)),
    ];
    assert_eq!(verdict(&ops), KeyVerdict::Linearizable);
}

#[test]
fn unknown_write_may_never_take_effect() {
    let ops = [
        put("c0", "a", Outcome::Ok, (0, 1)),
        put("c1", "b", Outcome::Unknown, (2, 3)),
        get("c2", Some("a"), (10, 11)),
        get("c2", Some("a"), (12, 13)),
    ];
    assert_eq!(verdict(&ops), KeyVerdict::Linearizable);
}

#[test]
fn unknown_write_cannot_be_seen_before_it_was_sent() {
    let ops = [
        get("c1", Some("a"), (0, 1)),
        put("c0", "a", Outcome::Unknown, (5, 6)),
    ];
    assert_eq!(verdict(&ops), KeyVerdict::NotLinearizable { culprit: 0 });
}

#[test]
fn unknown_write_that_took_effect_cannot_be_undone() {
    // Once a read saw the unknown write b, a later read cannot see a.
    let ops = [
        put("c0", "a", Outcome::Ok, (0, 1)),
        put("c1", "b", Outcome::Unknown, (2, 3)),
        get("c2", Some("b"), (4, 5)),
        get("c2", Some("a"), (6, 7)),
    ];
    assert_eq!(verdict(&ops), KeyVerdict::NotLinearizable { culprit: 3 });
}

#[test]
fn failed_write_must_never_be_seen() {
    let ops = [
        put("c0", "a", Outcome::Fail, (0, 1)),
        get("c1", Some("a"), (2, 3)),
    ];
    assert_eq!(verdict(&ops), KeyVerdict::NotLinearizable { culprit: 1 });
}

#[test]
fn read_of_a_value_nobody_wrote_is_rejected() {
    let ops = [
        put("c0", "a", Outcome::Ok, (0, 1)),
        get("c1", Some("zzz"), (2, 3)),
    ];
    assert_eq!(verdict(&ops), KeyVerdict::NotLinearizable { culprit: 1 });
}

#[test]
fn keys_are_independent() {
    let ops = [
        Op::put("c0", "/x", "a", Outcome::Ok, (0, 1)),
        Op::get("c1", "/y", None, (2, 3)),
        Op::get("c1", "/x", None, (4, 5)),
    ];
    let verdict = check_history(&ops, BUDGET);
    assert_eq!(verdict.keys["/y"], KeyVerdict::Linearizable);
    assert_eq!(
        verdict.keys["/x"],
        KeyVerdict::NotLinearizable { culprit: 1 }
    );
    assert_eq!(verdict.first_violation(), Some(("/x", 1)));
    assert!(!verdict.is_linearizable());
}

#[test]
fn exhausted_budget_is_unknown_not_pass() {
    let ops: Vec<Op> = (0..12)
        .map(|i| put(&format!("c{i}"), &format!("v{i}"), Outcome::Ok, (0, 100)))
        .chain([get("r", Some("nope"), (200, 201))])
        .collect();
    assert!(matches!(check_key(&ops, 50), KeyVerdict::Unknown { .. }));
    let verdict = check_history(&ops, 50);
    assert!(verdict.has_unknown());
    assert!(!verdict.is_linearizable());
}

/// A long, busy, linearizable history (many overlapping clients, unknown
/// writes) is decided quickly: memoization keeps the search near-linear.
#[test]
fn long_concurrent_history_is_decided_within_budget() {
    let clients = 8u64;
    let mut ops = Vec::new();
    let mut last_written: Option<String> = None;
    // Each round: every client starts at once; the writes take effect in
    // client order, the reads happen after all writes of the round.
    for round in 0..400u64 {
        let base = round * 100;
        for c in 0..clients {
            let value = format!("c{c}-{round}");
            let outcome = if c == 3 {
                Outcome::Unknown
            } else {
                Outcome::Ok
            };
            ops.push(put(
                &format!("c{c}"),
                &value,
                outcome,
                (base + c, base + 50),
            ));
            last_written = Some(value);
        }
        let seen = last_written.clone();
        ops.push(get("r", seen.as_deref(), (base + 60, base + 70)));
    }
    assert_eq!(check_key(&ops, 5_000_000), KeyVerdict::Linearizable);
}

#[test]
fn counts_by_outcome() {
    let ops = [
        put("c0", "a", Outcome::Ok, (0, 1)),
        put("c0", "b", Outcome::Fail, (0, 1)),
        put("c0", "c", Outcome::Unknown, (0, 1)),
        get("c0", None, (0, 1)),
    ];
    let counts = OpCounts::of(&ops);
    assert_eq!(
        (
            counts.put_ok,
            counts.put_fail,
            counts.put_unknown,
            counts.get_ok
        ),
        (1, 1, 1, 1)
    );
}

// The compare-and-swap register: gRPC reads see value and mod_revision; a
// CAS compares the mod_revision it read.

fn read(client: &str, value: Option<&str>, mod_revision: i64, times: (u64, u64)) -> Op {
    Op::read(client, "/cas", value, mod_revision, times)
}

fn swapped(client: &str, expect: i64, value: &str, revision: i64, times: (u64, u64)) -> Op {
    let result = Some(CasResult::Swapped { revision });
    Op::cas(client, "/cas", expect, value, result, Outcome::Ok, times)
}

fn refused(
    client: &str,
    expect: i64,
    value: &str,
    seen: (Option<&str>, i64),
    times: (u64, u64),
) -> Op {
    let result = Some(CasResult::Refused {
        value: seen.0.map(str::to_string),
        mod_revision: seen.1,
    });
    Op::cas(client, "/cas", expect, value, result, Outcome::Ok, times)
}

fn cas_unknown(client: &str, expect: i64, value: &str, times: (u64, u64)) -> Op {
    Op::cas(client, "/cas", expect, value, None, Outcome::Unknown, times)
}

/// Two clients race from the same read: one swaps, the other is refused
/// and sees the winner; later reads see the winner's revision.
#[test]
fn valid_cas_history_is_linearizable() {
    let ops = [
        read("x0", None, 0, (0, 1)),
        read("x1", None, 0, (0, 1)),
        swapped("x0", 0, "x0-1", 5, (2, 10)),
        refused("x1", 0, "x1-1", (Some("x0-1"), 5), (3, 11)),
        read("x1", Some("x0-1"), 5, (12, 13)),
        swapped("x1", 5, "x1-2", 9, (14, 15)),
        // An unknown CAS from a stale revision never took effect.
        cas_unknown("x0", 0, "x0-2", (16, 17)),
        read("x0", Some("x1-2"), 9, (20, 21)),
        // An unknown CAS that took effect: a later read saw its value.
        cas_unknown("x0", 9, "x0-3", (22, 23)),
        read("x1", Some("x0-3"), 12, (30, 31)),
        refused("x1", 9, "x1-3", (Some("x0-3"), 12), (32, 33)),
    ];
    assert_eq!(check_key(&ops, BUDGET), KeyVerdict::Linearizable);
}

/// Both clients read revision 0 and both CASes swapped: the second compare
/// should have failed (a lost update).
#[test]
fn two_swaps_from_the_same_revision_are_rejected() {
    let ops = [
        read("x0", None, 0, (0, 1)),
        read("x1", None, 0, (0, 1)),
        swapped("x0", 0, "x0-1", 5, (2, 3)),
        swapped("x1", 0, "x1-1", 6, (4, 5)),
    ];
    assert_eq!(
        check_key(&ops, BUDGET),
        KeyVerdict::NotLinearizable { culprit: 3 }
    );
}

/// A CAS refused although the key still had the revision it compared:
/// the compare-and-swap lied.
#[test]
fn refusal_at_the_expected_revision_is_rejected() {
    let ops = [
        swapped("x0", 0, "x0-1", 5, (0, 1)),
        read("x1", Some("x0-1"), 5, (2, 3)),
        refused("x1", 5, "x1-1", (Some("x0-1"), 5), (4, 5)),
    ];
    assert_eq!(
        check_key(&ops, BUDGET),
        KeyVerdict::NotLinearizable { culprit: 2 }
    );
}

/// A read after a swap was acknowledged still sees the old value and
/// revision (a stale read on a follower).
#[test]
fn stale_register_read_is_rejected() {
    let ops = [
        swapped("x0", 0, "x0-1", 5, (0, 1)),
        swapped("x0", 5, "x0-2", 8, (2, 3)),
        read("x1", Some("x0-1"), 5, (4, 5)),
    ];
    assert_eq!(
        check_key(&ops, BUDGET),
        KeyVerdict::NotLinearizable { culprit: 2 }
    );
}

/// The right value at the wrong mod_revision is not the same state.
#[test]
fn read_with_a_wrong_revision_is_rejected() {
    let ops = [
        swapped("x0", 0, "x0-1", 5, (0, 1)),
        read("x1", Some("x0-1"), 4, (2, 3)),
    ];
    assert_eq!(
        check_key(&ops, BUDGET),
        KeyVerdict::NotLinearizable { culprit: 1 }
    );
}

fn unique_put(value: &str, outcome: Outcome) -> Op {
    Op::put("c0", &format!("/u-{value}"), value, outcome, (0, 1))
}

fn served(node: u64, keys: &[&str]) -> (u64, Vec<(String, String)>) {
    let keys = keys
        .iter()
        .map(|value| (format!("/u-{value}"), value.to_string()))
        .collect();
    (node, keys)
}

#[test]
fn unique_keys_pass_when_every_node_serves_every_acknowledged_key() {
    let ops = [
        unique_put("a", Outcome::Ok),
        unique_put("b", Outcome::Ok),
        unique_put("c", Outcome::Unknown),
        unique_put("d", Outcome::Fail),
    ];
    // The unknown write may or may not be there, on each node alike.
    let reads = [served(1, &["a", "b", "c"]), served(2, &["a", "b", "c"])];
    assert_eq!(check_unique_keys(&ops, "/u-", &reads), Ok(2));
    let reads = [served(1, &["a", "b"])];
    assert_eq!(check_unique_keys(&ops, "/u-", &reads), Ok(2));
}

#[test]
fn unique_key_lost_on_one_node_is_reported() {
    let ops = [unique_put("a", Outcome::Ok), unique_put("b", Outcome::Ok)];
    let reads = [served(1, &["a", "b"]), served(2, &["a"])];
    let why = check_unique_keys(&ops, "/u-", &reads).unwrap_err();
    assert!(why.contains("node 2 lost acknowledged /u-b"), "{why}");
}

#[test]
fn unique_key_nobody_wrote_or_refused_is_reported() {
    let ops = [unique_put("a", Outcome::Ok), unique_put("d", Outcome::Fail)];
    let reads = [served(1, &["a", "d", "z"])];
    let why = check_unique_keys(&ops, "/u-", &reads).unwrap_err();
    assert!(why.contains("/u-d, whose PUT was refused"), "{why}");
    assert!(why.contains("/u-z = z, which no PUT wrote"), "{why}");
}
