//! `cargo bench -p wal`: append throughput with one fdatasync per batch, and replay throughput
//! of a 1 GiB log from the page cache. Set `WAL_BENCH_REPLAY_MIB` to change the log size.
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use wal::{Entry, Marker, Metadata, Wal, WalConfig};

const META: Metadata = Metadata {
    node_id: 1,
    cluster_id: 1,
};
/// Each append configuration runs for about this long.
const APPEND_RUN: Duration = Duration::from_secs(2);

fn batch(first_index: u64, count: usize, payload_bytes: usize) -> Vec<Entry> {
    (0..count as u64)
        .map(|i| Entry {
            index: first_index + i,
            term: 1,
            payload: vec![(i % 251) as u8 + 1; payload_bytes],
        })
        .collect()
}

fn bench_append(payload_bytes: usize, batch_len: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut wal = Wal::create(dir.path(), META, WalConfig::default()).expect("create");
    let template = batch(1, batch_len, payload_bytes);
    let mut entries = template.clone();
    let (mut saves, mut next) = (0u64, 1u64);
    let hard_state = [7u8; 24];
    let start = Instant::now();
    while start.elapsed() < APPEND_RUN {
        for (i, e) in entries.iter_mut().enumerate() {
            e.index = next + i as u64;
        }
        wal.save(Some(&hard_state), &entries).expect("save");
        next += batch_len as u64;
        saves += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    let entry_count = saves * batch_len as u64;
    let mb = (entry_count * payload_bytes as u64) as f64 / 1e6;
    println!(
        concat!(
            "append payload={payload_bytes:>4} B batch={batch_len:>3}: {:>8.1} MB/s ",
            "{:>10.0} entries/s {:>8.0} saves/s  (saves={saves}, fdatasyncs={}, segments={})"
        ),
        mb / secs,
        entry_count as f64 / secs,
        saves as f64 / secs,
        wal.fsync_count(),
        wal.segment_count(),
        payload_bytes = payload_bytes,
        batch_len = batch_len,
        saves = saves,
    );
    assert_eq!(
        wal.fsync_count(),
        saves,
        "one fdatasync per save that carried data"
    );
}

fn bench_replay(log_mib: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let payload_bytes = 1024;
    let per_batch = 1024;
    let batches = log_mib * (1 << 20) / (payload_bytes * per_batch) as u64;
    let mut wal = Wal::create(dir.path(), META, WalConfig::default()).expect("create");
    let write_start = Instant::now();
    for b in 0..batches {
        wal.save(
            None,
            &batch(1 + b * per_batch as u64, per_batch, payload_bytes),
        )
        .expect("save");
    }
    let write_secs = write_start.elapsed().as_secs_f64();
    wal.close().expect("close");
    let segment_bytes: u64 = std::fs::read_dir(dir.path())
        .expect("read dir")
        .map(|e| e.expect("entry"))
        .filter(|e| e.file_name().to_string_lossy().ends_with(".wal"))
        .map(|e| e.metadata().expect("metadata").len())
        .sum();
    println!(
        "replay: wrote {} entries ({:.0} MiB of segments) in {write_secs:.1} s",
        batches * per_batch as u64,
        segment_bytes as f64 / (1 << 20) as f64
    );
    for round in 1..=3 {
        let start = Instant::now();
        let markers = Wal::markers(dir.path()).expect("markers");
        let secs = start.elapsed().as_secs_f64();
        assert!(markers.is_empty());
        println!(
            "validate-only scan (Wal::markers) round {round}: {:.2} s, {:.2} GB/s",
            secs,
            segment_bytes as f64 / 1e9 / secs
        );
        let start = Instant::now();
        let (wal, recovered) =
            Wal::open(dir.path(), Marker::ZERO, WalConfig::default()).expect("open");
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(recovered.entries.len() as u64, batches * per_batch as u64);
        println!(
            "replay round {round}: {:.2} s, {:.2} GB/s of segment files, {:.0} entries/s",
            secs,
            segment_bytes as f64 / 1e9 / secs,
            recovered.entries.len() as f64 / secs
        );
        drop(recovered);
        wal.close().expect("close");
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: run small then.
    let full = std::env::args().any(|a| a == "--bench");
    let replay_mib = std::env::var("WAL_BENCH_REPLAY_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 1024 } else { 16 });
    if full {
        for payload_bytes in [64, 1024] {
            for batch_len in [1, 16, 256] {
                bench_append(payload_bytes, batch_len);
            }
        }
    }
    bench_replay(replay_mib);
}
