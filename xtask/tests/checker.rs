//! The linearizability checker on hand-made histories.

use xtask::chaos::checker::{check_history, check_key, KeyVerdict};
use xtask::chaos::history::{Op, OpCounts, Outcome};

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
