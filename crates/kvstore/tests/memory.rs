//! Measurements, not pass/fail checks (ignored; run by hand):
//!
//! ```text
//! cargo test --release -p kvstore --test memory -- --ignored --nocapture --exact one_million_revisions_of_a_thousand_keys
//! cargo test --release -p kvstore --test memory -- --ignored --nocapture --exact one_million_distinct_keys
//! ```
//!
//! Prints the resident memory per retained revision at one million
//! revisions (over the key and value bytes), and the size and encode /
//! restore times of a snapshot holding that history.

#![allow(clippy::print_stdout)]

use std::time::Instant;

use etcdproto::etcdserverpb as pb;
use kvstore::{Keyspace, KvConfig};
use raftnode::StateMachine;

const REVISIONS: usize = 1_000_000;

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn build(keys: usize, value_bytes: usize) -> (Keyspace, u64) {
    let mut keyspace = Keyspace::new();
    let value = vec![b'v'; value_bytes];
    let mut payload_bytes = 0u64;
    for i in 0..REVISIONS {
        let key = format!("/key/{:012}", i % keys).into_bytes();
        payload_bytes += (key.len() + value.len()) as u64;
        keyspace
            .put(&pb::PutRequest {
                key,
                value: value.clone(),
                ..Default::default()
            })
            .expect("put");
    }
    (keyspace, payload_bytes)
}

fn measure(label: &str, keys: usize, value_bytes: usize) {
    let before = resident_bytes();
    let started = Instant::now();
    let (keyspace, payload_bytes) = build(keys, value_bytes);
    let build_ms = started.elapsed().as_millis();
    let after = resident_bytes();
    assert_eq!(keyspace.retained_revisions(), REVISIONS);
    let per_revision = (after.saturating_sub(before)) as f64 / REVISIONS as f64;
    let payload_per_revision = payload_bytes as f64 / REVISIONS as f64;
    println!(
        "{label}: {REVISIONS} revisions over {keys} keys, {value_bytes}-byte values: \
         {per_revision:.0} B resident per revision, of which key+value {payload_per_revision:.0} B \
         (overhead {:.0} B); built in {build_ms} ms",
        per_revision - payload_per_revision
    );

    let (_unattached, mut machine) = kvstore::new(KvConfig::new(1));
    let started = Instant::now();
    // The capture the Raft loop pays for: an O(1) clone.
    let capture = keyspace.clone();
    let capture_us = started.elapsed().as_micros();
    drop(capture);
    println!("{label}: snapshot capture (clone) took {capture_us} us");
    let started = Instant::now();
    let snapshot = snapshot_of(&keyspace);
    let encode_ms = started.elapsed().as_millis();
    let started = Instant::now();
    machine.restore(1, &snapshot).expect("restore");
    let restore_ms = started.elapsed().as_millis();
    assert_eq!(machine.keyspace(), keyspace);
    println!(
        "{label}: snapshot {} MiB ({:.0} B per revision), encoded in {encode_ms} ms, restored in {restore_ms} ms",
        snapshot.len() / (1024 * 1024),
        snapshot.len() as f64 / REVISIONS as f64
    );

    // Compaction runs inside apply, on the Raft loop: how long it holds it.
    let mut compacted = keyspace;
    let revision = compacted.revision();
    let started = Instant::now();
    compacted
        .compact(&pb::CompactionRequest {
            revision,
            physical: false,
        })
        .expect("compact");
    println!(
        "{label}: compacting to head took {} ms, {} versions left",
        started.elapsed().as_millis(),
        compacted.retained_revisions()
    );
}

/// The snapshot bytes a state machine holding `keyspace` writes.
fn snapshot_of(keyspace: &Keyspace) -> Vec<u8> {
    kvstore::testing::snapshot_of(keyspace)
}

// Resident memory is per process: run each measurement on its own
// (`--exact <name>`), or the second sees the first's freed pages reused.

#[test]
#[ignore = "measurement: run by hand with --ignored --nocapture --exact"]
fn one_million_revisions_of_a_thousand_keys() {
    measure("history of 1,000 keys", 1_000, 16);
}

#[test]
#[ignore = "measurement: run by hand with --ignored --nocapture --exact"]
fn one_million_distinct_keys() {
    measure("1M distinct keys", REVISIONS, 16);
}
