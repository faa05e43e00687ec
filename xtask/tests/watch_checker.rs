//! The chaos suite's watch checker on hand-made streams: it passes a
//! correct history and names each kind of violation it exists to find.

use xtask::chaos::history::{CasResult, Op, Outcome};
use xtask::chaos::watches::{check_watches, Event, WatchLog};
use xtask::chaos::Verdict;

fn put(revision: i64, key: &str, value: &str, version: i64, prev: Option<(&str, i64)>) -> Event {
    Event {
        revision,
        delete: false,
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        create_revision: if version == 1 { revision } else { 2 },
        version,
        lease: 0,
        prev: prev.map(|(v, r)| (v.as_bytes().to_vec(), r)),
    }
}

fn delete(revision: i64, key: &str, prev: (&str, i64)) -> Event {
    Event {
        revision,
        delete: true,
        key: key.as_bytes().to_vec(),
        value: Vec::new(),
        create_revision: 0,
        version: 0,
        lease: 0,
        prev: Some((prev.0.as_bytes().to_vec(), prev.1)),
    }
}

/// Revisions 2..=6: /k0 created, /k1 created and /k0 updated in one txn
/// (revision 3, two events), /k0 deleted, /k1 updated, /cas swapped.
fn history() -> Vec<Vec<Event>> {
    vec![
        vec![put(2, "/k0", "c0-1", 1, None)],
        vec![
            put(3, "/k1", "c1-1", 1, None),
            put(3, "/k0", "c0-2", 2, Some(("c0-1", 2))),
        ],
        vec![delete(4, "/k0", ("c0-2", 3))],
        vec![put(5, "/k1", "c1-2", 2, Some(("c1-1", 3)))],
        vec![put(6, "/cas", "x0-1", 1, None)],
    ]
}

fn reference() -> WatchLog {
    WatchLog {
        name: "reference".into(),
        first_revision: 1,
        responses: history(),
        streams: 1,
        target_revision: 6,
        ..WatchLog::default()
    }
}

fn ops() -> Vec<Op> {
    vec![
        Op::put("c0", "/k0", "c0-1", Outcome::Ok, (1, 2)),
        Op::put("c1", "/k1", "c1-1", Outcome::Unknown, (1, 2)),
        Op::put("c0", "/k0", "c0-2", Outcome::Ok, (3, 4)),
        Op::put("c1", "/k1", "c1-2", Outcome::Ok, (3, 4)),
        Op::put("c1", "/k1", "c1-3", Outcome::Fail, (5, 6)),
        Op::cas(
            "x0",
            "/cas",
            0,
            "x0-1",
            Some(CasResult::Swapped { revision: 6 }),
            Outcome::Ok,
            (5, 6),
        ),
    ]
}

/// A client that started at revision 3 and resumed at 5 after a break.
fn resumed_log() -> WatchLog {
    let history = history();
    WatchLog {
        name: "w0".into(),
        first_revision: 3,
        responses: vec![
            history[1].clone(),
            history[2].clone(),
            history[3].clone(),
            history[4].clone(),
        ],
        streams: 2,
        target_revision: 6,
        ..WatchLog::default()
    }
}

fn failure(verdict: Verdict) -> String {
    match verdict {
        Verdict::Fail(why) => why,
        other => panic!("expected a failure, got {other}"),
    }
}

#[test]
fn a_correct_history_with_a_resumed_stream_passes() {
    let (verdict, counts) = check_watches(&reference(), &[resumed_log()], &ops());
    assert_eq!(verdict, Verdict::Pass);
    assert_eq!(counts.events_delivered, 5);
    assert_eq!(counts.reconnects, 1);
    assert_eq!(counts.reference_events, 6);
}

#[test]
fn a_gap_after_a_reconnect_is_found() {
    let mut log = resumed_log();
    log.responses.remove(1); // revision 4 never arrived
    let why = failure(check_watches(&reference(), &[log], &ops()).0);
    assert!(why.contains("a gap"), "{why}");
}

#[test]
fn a_duplicated_revision_is_found() {
    let mut log = resumed_log();
    let again = log.responses[1].clone();
    log.responses.insert(2, again); // resumed from the last revision, not + 1
    let why = failure(check_watches(&reference(), &[log], &ops()).0);
    assert!(why.contains("duplicate"), "{why}");
}

#[test]
fn a_revision_split_over_two_responses_is_found() {
    let mut log = resumed_log();
    let second = log.responses[0].pop().expect("two events");
    log.responses.insert(1, vec![second]);
    let why = failure(check_watches(&reference(), &[log], &ops()).0);
    assert!(why.contains("split over two responses"), "{why}");
}

#[test]
fn a_wrong_prev_kv_is_found_in_a_stream_and_in_the_reference() {
    let mut log = resumed_log();
    log.responses[2][0].prev = None;
    let why = failure(check_watches(&reference(), &[log], &ops()).0);
    assert!(why.contains("a different event"), "{why}");

    let mut wrong = reference();
    wrong.responses[3][0].prev = Some((b"c1-0".to_vec(), 1));
    let why = failure(check_watches(&wrong, &[], &ops()).0);
    assert!(why.contains("prev_kv"), "{why}");
}

#[test]
fn the_reference_must_agree_with_the_acknowledged_writes() {
    // An acknowledged PUT missing from the history.
    let mut ops_lost = ops();
    ops_lost.push(Op::put("c0", "/k0", "c0-9", Outcome::Ok, (7, 8)));
    let why = failure(check_watches(&reference(), &[], &ops_lost).0);
    assert!(why.contains("is in no event"), "{why}");

    // A refused PUT that took effect.
    let mut refused = reference();
    refused.responses[3][0].value = b"c1-3".to_vec();
    let why = failure(check_watches(&refused, &[], &ops()).0);
    assert!(why.contains("refused PUT"), "{why}");

    // A swap acknowledged at another revision than the event's.
    let mut moved = ops();
    moved[5] = Op::cas(
        "x0",
        "/cas",
        0,
        "x0-1",
        Some(CasResult::Swapped { revision: 5 }),
        Outcome::Ok,
        (5, 6),
    );
    let why = failure(check_watches(&reference(), &[], &moved).0);
    assert!(why.contains("acknowledged at revision 5"), "{why}");

    // A value no client ever sent.
    let mut invented = reference();
    invented.responses[4][0].value = b"x9-9".to_vec();
    let why = failure(check_watches(&invented, &[], &ops()).0);
    assert!(why.contains("written by no client"), "{why}");
}

#[test]
fn a_stream_that_never_caught_up_fails() {
    let mut log = resumed_log();
    log.stuck = Some("received up to revision 5 of 6".into());
    let why = failure(check_watches(&reference(), &[log], &ops()).0);
    assert!(why.contains("w0: received up to revision 5"), "{why}");
}
