//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use wal::{Entry, Metadata, WalConfig};

/// Small segments so tests rotate often.
pub const SMALL: WalConfig = WalConfig {
    segment_bytes: 4096,
};

pub const META: Metadata = Metadata {
    node_id: 1,
    cluster_id: 0xC1,
};

/// A deterministic entry whose payload ends in a non-zero byte.
pub fn entry(index: u64, term: u64) -> Entry {
    let len = 20 + (index * 37 % 150) as usize;
    let mut payload: Vec<u8> = (0..len)
        .map(|i| (index as u8) ^ (i as u8) ^ (term as u8))
        .collect();
    payload.push(0xEE);
    Entry {
        index,
        term,
        payload,
    }
}

pub fn entries(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    range.map(|i| entry(i, term)).collect()
}

pub fn hard_state(n: u64) -> Vec<u8> {
    format!("hard-state-{n}").into_bytes()
}

/// Segment files of a WAL directory, oldest first.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    paths.sort();
    paths
}

/// `(start, end)` of every record in a segment, walking the documented framing.
pub fn record_spans(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut at = 0;
    while at + 12 <= bytes.len() && bytes[at..at + 12].iter().any(|&b| b != 0) {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let end = at + ((12 + len + 7) & !7);
        spans.push((at, end));
        at = end;
    }
    spans
}

/// Copies every file of `from` into `to` (created).
pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create dir");
    for e in fs::read_dir(from).expect("read dir") {
        let e = e.expect("dir entry");
        fs::copy(e.path(), to.join(e.file_name())).expect("copy");
    }
}
