//! The chaos suite's pure parts: fault schedule, option parsing, verdicts
//! and the HTML timeline.

use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::BTreeSet;
use std::time::Duration;
use xtask::chaos::history::{CasResult, Op, Outcome};
use xtask::chaos::{
    parse_duration, parse_faults, schedule, timeline_html, FaultKind, FaultRecord, Verdict, Window,
};

#[test]
fn schedule_is_deterministic_per_seed_and_every_round_has_every_kind() {
    let plan = |seed| schedule(&FaultKind::ALL, 3, &mut StdRng::seed_from_u64(seed));
    assert_eq!(plan(42), plan(42));
    assert_ne!(plan(42), plan(43), "different seeds give different orders");
    for round in plan(42).chunks(FaultKind::ALL.len()) {
        let kinds: BTreeSet<FaultKind> = round.iter().copied().collect();
        assert_eq!(kinds.len(), FaultKind::ALL.len(), "round {round:?}");
    }
}

#[test]
fn fault_lists_parse_and_bad_names_are_refused() {
    assert_eq!(parse_faults("all").unwrap(), FaultKind::ALL.to_vec());
    assert_eq!(
        parse_faults("kill, pause,kill").unwrap(),
        vec![FaultKind::Kill, FaultKind::Pause]
    );
    for kind in FaultKind::ALL {
        assert_eq!(kind.name().parse::<FaultKind>().unwrap(), kind);
    }
    let error = parse_faults("kill,nuke").unwrap_err().to_string();
    assert!(error.contains("nuke"), "{error}");
    assert!(parse_faults("").is_err());
}

#[test]
fn durations_parse_with_units() {
    assert_eq!(parse_duration("300s").unwrap(), Duration::from_secs(300));
    assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
    assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
    assert_eq!(parse_duration("42").unwrap(), Duration::from_secs(42));
    assert!(parse_duration("fast").is_err());
    assert!(parse_duration("s").is_err());
}

#[test]
fn only_pass_passes() {
    assert!(Verdict::Pass.is_pass());
    assert!(!Verdict::Unknown("budget".into()).is_pass());
    assert!(!Verdict::Fail("stale read".into()).is_pass());
}

#[test]
fn timeline_has_a_lane_per_client_the_culprit_and_the_faults() {
    let culprit = Op::get("c1", "/k", Some("a"), (40_000, 41_000));
    let window = Window {
        checker: "linearizability".into(),
        key: "/k".into(),
        culprit: culprit.clone(),
        ops: vec![
            Op::put("c0", "/k", "a", Outcome::Ok, (0, 10_000)),
            Op::put("c0", "/k", "b<", Outcome::Ok, (20_000, 30_000)),
            Op::put("c2", "/k", "c", Outcome::Unknown, (20_000, 35_000)),
            culprit,
        ],
        faults: vec![FaultRecord {
            kind: FaultKind::PartitionLeader,
            detail: "[1] | [2, 3]".into(),
            start_us: 5_000,
            heal_us: 25_000,
            recovery_ms: Some(300),
        }],
    };
    let html = timeline_html(&window);
    assert_eq!(html.matches("class=lane ").count(), 3, "{html}");
    for lane in ["c0", "c1", "c2"] {
        assert!(
            html.contains(&format!(">{lane}</div>")),
            "lane {lane} missing"
        );
    }
    assert_eq!(
        html.matches("culprit'").count(),
        1,
        "exactly one culprit bar"
    );
    assert!(html.contains("partition-leader"));
    assert!(html.contains("W b&lt;"), "values are escaped");
    assert!(html.contains("class='op unknown'"));
}

#[test]
fn recheck_of_a_saved_stale_read_writes_the_window_and_timeline() {
    let dir = tempfile::tempdir().unwrap();
    let history = vec![
        Op::put("c0", "/k", "a", Outcome::Ok, (0, 10)),
        Op::put("c0", "/k", "b", Outcome::Ok, (20, 30)),
        Op::get("c1", "/k", Some("a"), (40, 50)),
    ];
    let final_reads = vec![Op::get("final", "/k", Some("b"), (100, 110))];
    std::fs::write(
        dir.path().join("history.json"),
        serde_json::to_string(&history).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("final-reads.json"),
        serde_json::to_string(&final_reads).unwrap(),
    )
    .unwrap();
    let (linearizability, durability) = xtask::chaos::recheck(dir.path(), 10_000).unwrap();
    assert!(
        matches!(&linearizability, Verdict::Fail(why) if why.contains("GET /k -> a")),
        "{linearizability}"
    );
    assert!(!durability.is_pass());
    let window: Window = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("linearizability-window.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(window.culprit, history[2]);
    assert_eq!(window.ops.len(), 3);
    assert!(dir.path().join("linearizability-timeline.html").is_file());
}

#[test]
fn recheck_of_a_clean_run_passes_and_of_a_missing_run_errors() {
    let dir = tempfile::tempdir().unwrap();
    let history = vec![Op::put("c0", "/k", "a", Outcome::Ok, (0, 10))];
    let final_reads = vec![Op::get("final", "/k", Some("a"), (100, 110))];
    std::fs::write(
        dir.path().join("history.json"),
        serde_json::to_string(&history).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("final-reads.json"),
        serde_json::to_string(&final_reads).unwrap(),
    )
    .unwrap();
    assert_eq!(
        xtask::chaos::recheck(dir.path(), 10_000).unwrap(),
        (Verdict::Pass, Verdict::Pass)
    );
    let missing = xtask::chaos::recheck(&dir.path().join("nope"), 10_000).unwrap_err();
    assert!(missing.to_string().contains("history.json"), "{missing}");
}

#[test]
fn command_line_options_reach_the_configuration() {
    let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let root = std::path::Path::new("/repo");
    let crash = xtask::chaos::parse_args(
        &args(&[
            "--crash-loop",
            "--rounds",
            "7",
            "--hold-ms",
            "50",
            "--nodes",
            "5",
            "--seed",
            "9",
        ]),
        "raftkv".into(),
        root,
    )
    .unwrap();
    assert_eq!(crash.fault_count, Some(7));
    assert_eq!(crash.faults, vec![FaultKind::Kill]);
    assert_eq!((crash.fault_hold_ms, crash.nodes, crash.seed), (50, 5, 9));
    assert_eq!(crash.out_dir, root.join("target/chaos/seed-9"));

    let timed = xtask::chaos::parse_args(
        &args(&[
            "--time",
            "5m",
            "--faults",
            "pause,split",
            "--out",
            "/tmp/x",
            "--cas-clients",
            "4",
        ]),
        "raftkv".into(),
        root,
    )
    .unwrap();
    assert_eq!(timed.duration, Duration::from_secs(300));
    assert_eq!(timed.fault_count, None);
    assert_eq!(timed.faults, vec![FaultKind::Pause, FaultKind::Split]);
    assert_eq!(timed.cas_clients, 4);
    assert_eq!(timed.out_dir, std::path::PathBuf::from("/tmp/x"));

    for bad in [&["--nodes"][..], &["--nodes", "three"], &["--frobnicate"]] {
        let error = xtask::chaos::parse_args(&args(bad), "raftkv".into(), root).unwrap_err();
        assert!(error.to_string().contains(bad[0]), "{error}");
    }
}

#[test]
fn a_write_missing_from_the_final_reads_fails_durability_only() {
    let dir = tempfile::tempdir().unwrap();
    let history = vec![
        Op::put("c0", "/k", "a", Outcome::Ok, (0, 10)),
        Op::put("c1", "/k", "b", Outcome::Ok, (20, 30)),
    ];
    // After healing, a node serves the older value: b was lost.
    let final_reads = vec![Op::get("final", "/k", Some("a"), (100, 110))];
    std::fs::write(
        dir.path().join("history.json"),
        serde_json::to_string(&history).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("final-reads.json"),
        serde_json::to_string(&final_reads).unwrap(),
    )
    .unwrap();
    let (linearizability, durability) = xtask::chaos::recheck(dir.path(), 10_000).unwrap();
    assert_eq!(linearizability, Verdict::Pass);
    assert!(
        matches!(&durability, Verdict::Fail(why) if why.contains("final on node 0")),
        "{durability}"
    );
    assert!(dir.path().join("durability-timeline.html").is_file());
}

#[test]
fn recheck_reads_the_saved_unique_keys_and_a_lost_one_fails_durability() {
    let dir = tempfile::tempdir().unwrap();
    let history = vec![
        Op::put("c0", "/u-c0-1", "c0-1", Outcome::Ok, (0, 10)),
        Op::put("c0", "/u-c0-2", "c0-2", Outcome::Ok, (20, 30)),
    ];
    let write = |name: &str, json: String| std::fs::write(dir.path().join(name), json).unwrap();
    write("history.json", serde_json::to_string(&history).unwrap());
    write("final-reads.json", "[]".into());
    let node = |keys: &[&str]| -> Vec<(String, String)> {
        keys.iter()
            .map(|v| (format!("/u-{v}"), v.to_string()))
            .collect()
    };
    let unique = vec![(1u64, node(&["c0-1", "c0-2"])), (2, node(&["c0-1"]))];
    write(
        "final-unique-keys.json",
        serde_json::to_string(&unique).unwrap(),
    );
    let (linearizability, durability) = xtask::chaos::recheck(dir.path(), 10_000).unwrap();
    assert_eq!(linearizability, Verdict::Pass);
    assert!(
        matches!(&durability, Verdict::Fail(why) if why.contains("node 2 lost acknowledged /u-c0-2")),
        "{durability}"
    );
}

#[test]
fn timeline_labels_register_reads_and_cas_outcomes() {
    let culprit = Op::read("x1", "/cas", Some("x0-1"), 5, (40_000, 41_000));
    let swapped = Some(CasResult::Swapped { revision: 5 });
    let refused = Some(CasResult::Refused {
        value: Some("x0-1".into()),
        mod_revision: 5,
    });
    let window = Window {
        checker: "linearizability".into(),
        key: "/cas".into(),
        culprit: culprit.clone(),
        ops: vec![
            Op::cas("x0", "/cas", 0, "x0-1", swapped, Outcome::Ok, (0, 10_000)),
            Op::cas("x1", "/cas", 0, "x1-1", refused, Outcome::Ok, (0, 12_000)),
            Op::cas(
                "x0",
                "/cas",
                5,
                "x0-2",
                None,
                Outcome::Unknown,
                (20_000, 30_000),
            ),
            culprit,
        ],
        faults: vec![],
    };
    let html = timeline_html(&window);
    assert!(html.contains("CAS @0 x0-1@5"), "{html}");
    assert!(html.contains("CAS @0 refused, saw x0-1@5"), "{html}");
    assert!(html.contains("CAS @5 x0-2?"), "{html}");
    assert!(html.contains("R x0-1@5"), "{html}");
    assert!(
        html.contains("Range /cas -&gt; x0-1 (mod_revision 5)"),
        "{html}"
    );
}

#[test]
fn tls_is_off_unless_asked_for() {
    let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let root = std::path::Path::new("/r");
    let plain = xtask::chaos::parse_args(&args(&["--seed", "3"]), "raftkv".into(), root).unwrap();
    assert!(!plain.tls);
    let tls =
        xtask::chaos::parse_args(&args(&["--tls", "--seed", "3"]), "raftkv".into(), root).unwrap();
    assert!(tls.tls);
    assert!(xtask::chaos::USAGE.contains("--tls"));
}
