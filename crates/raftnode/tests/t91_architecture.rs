//! Architecture invariant: the Raft loop takes time only from the `Clock` it
//! is given, sends only through its `Outbox`, and draws nothing at random,
//! so a simulation that supplies those seams controls every input. The
//! loop's modules are scanned for the ways around them.

use std::path::Path;

/// The modules the loop's turn runs (`lib.rs` and `clock.rs` wire the
/// production implementations and may name them).
const LOOP_MODULES: &[&str] = &[
    "raft_loop.rs",
    "reads.rs",
    "checks.rs",
    "durable.rs",
    "storage.rs",
    "driven.rs",
];

/// Spellings that reach time, randomness or the network around the seams.
const FORBIDDEN: &[&str] = &[
    "Instant::now",
    "SystemTime",
    "thread_rng",
    "rand::",
    "transport::Transport",
    "Transport::",
    "std::thread::sleep",
];

/// Lines of `source` before its unit tests, outside comments, that use a
/// forbidden spelling.
fn violations(source: &str) -> Vec<(usize, String)> {
    let code = source
        .split("#[cfg(test)]\nmod tests")
        .next()
        .unwrap_or(source);
    code.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim_start().starts_with("//"))
        .filter(|(_, line)| FORBIDDEN.iter().any(|f| line.contains(f)))
        .map(|(n, line)| (n + 1, line.trim().to_owned()))
        .collect()
}

#[test]
fn the_loop_reaches_time_and_the_network_only_through_its_seams() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = Vec::new();
    for name in LOOP_MODULES {
        let text = std::fs::read_to_string(src.join(name)).expect("read a loop module");
        for (line, code) in violations(&text) {
            found.push(format!("src/{name}:{line}: {code}"));
        }
    }
    assert!(
        found.is_empty(),
        "the loop bypasses its Clock or Outbox:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_catches_a_direct_call() {
    let planted =
        "fn f() {\n    // Instant::now in a comment is fine\n    let t = Instant::now();\n}";
    assert_eq!(
        violations(planted),
        vec![(3, "let t = Instant::now();".into())]
    );
    let in_tests = "fn f() {}\n#[cfg(test)]\nmod tests {\n    fn g() { Instant::now(); }\n}";
    assert!(
        violations(in_tests).is_empty(),
        "unit tests may read the real clock"
    );
    assert_eq!(
        violations("self.transport.send(m); Transport::try_new(x)").len(),
        1
    );
}
