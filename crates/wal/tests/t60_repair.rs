//! The operator's explicit repair: what open refuses, `Wal::repair` cuts, saying what it drops.

mod common;

use std::fs;
use std::path::Path;

use common::{entries, hard_state, record_spans, segments, META, SMALL};
use wal::{DroppedKind, Marker, Wal, WalError};

/// 1..=150 in batches of 5, each followed by its hard state.
fn build(dir: &Path) {
    let mut wal = Wal::create(dir, META, SMALL).expect("create");
    for (n, batch) in entries(1..=150, 1).chunks(5).enumerate() {
        wal.save(Some(&hard_state(n as u64)), batch).expect("save");
    }
    wal.close().expect("close");
}

#[test]
fn a_wal_that_opens_is_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    build(dir.path());
    let report = Wal::repair(dir.path(), false).expect("repair");
    assert_eq!(report.damage, None);
    assert!(!report.applied);
}

#[test]
fn a_damaged_last_hard_state_is_cut_only_when_asked() {
    let dir = tempfile::tempdir().expect("tempdir");
    build(dir.path());
    let victim = segments(dir.path()).pop().expect("segment");
    let mut bytes = fs::read(&victim).expect("read");
    let (start, end) = *record_spans(&bytes).last().expect("records");
    bytes[start + 20] ^= 0x10;
    fs::write(&victim, &bytes).expect("write");
    assert!(matches!(
        Wal::open(dir.path(), Marker::ZERO, SMALL),
        Err(WalError::Corrupt { .. })
    ));

    let dry = Wal::repair(dir.path(), true).expect("dry run");
    assert!(!dry.applied);
    let damage = dry.damage.expect("damage");
    assert_eq!(
        (damage.path.as_path(), damage.offset),
        (victim.as_path(), start as u64)
    );
    assert_eq!(damage.dropped.len(), 1);
    assert_eq!(damage.dropped[0].offset, start as u64);
    let dirty = bytes[start..].iter().rposition(|&b| b != 0).expect("data") + 1;
    assert!(dirty <= end - start);
    assert_eq!(damage.dropped[0].bytes, dirty as u64);
    assert!(!damage.dropped[0].file_deleted);
    assert_eq!(damage.records.len(), 1);
    assert_eq!(damage.records[0].kind, DroppedKind::HardState);
    assert!(!damage.records[0].verified);
    assert_eq!(
        fs::read(&victim).expect("read"),
        bytes,
        "a dry run changes nothing"
    );

    let report = Wal::repair(dir.path(), false).expect("repair");
    assert!(report.applied);
    assert_eq!(report.damage, Some(damage));
    let (_wal, rec) = Wal::open(dir.path(), Marker::ZERO, SMALL).expect("opens after repair");
    assert_eq!(rec.entries, entries(1..=150, 1));
    assert_eq!(rec.hard_state, Some(hard_state(28)));
}

#[test]
fn damage_in_an_older_segment_drops_everything_after_it_and_names_the_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    build(dir.path());
    let paths = segments(dir.path());
    assert!(paths.len() >= 4);
    let victim = &paths[1];
    let mut bytes = fs::read(victim).expect("read");
    let spans = record_spans(&bytes);
    let (start, _) = spans[4];
    bytes[start + 30] ^= 1;
    fs::write(victim, &bytes).expect("write");

    let report = Wal::repair(dir.path(), false).expect("repair");
    let damage = report.damage.expect("damage");
    assert_eq!((&damage.path, damage.offset), (victim, start as u64));
    assert_eq!(damage.dropped.len(), paths.len() - 1);
    assert!(damage.dropped[1..].iter().all(|d| d.file_deleted));
    assert_eq!(segments(dir.path()), paths[..2].to_vec());
    // The damaged record is read without its checksum; the records after it chain from it.
    assert!(!damage.records[0].verified);
    assert!(damage.records[1..].iter().all(|r| r.verified));
    let dropped_entries: Vec<u64> = damage
        .records
        .iter()
        .filter_map(|r| match r.kind {
            DroppedKind::Entry { index, .. } => Some(index),
            _ => None,
        })
        .collect();
    let (_wal, rec) = Wal::open(dir.path(), Marker::ZERO, SMALL).expect("opens after repair");
    let kept = rec.entries.len() as u64;
    assert_eq!(rec.entries, entries(1..=kept, 1));
    assert_eq!(dropped_entries, (kept + 1..=150).collect::<Vec<_>>());
}
