//! Crash matrix: torn tails are repaired, every other kind of damage is refused with the file
//! and offset.

mod common;

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use common::{copy_dir, entries, hard_state, record_spans, segments, META, SMALL};
use wal::{Corruption, Entry, Marker, Metadata, Wal, WalError};

/// Writes 1..=150 in batches of 5 with a hard state each, into `dir`; returns the entries.
fn build(dir: &Path, metadata: Metadata) -> Vec<Entry> {
    let mut wal = Wal::create(dir, metadata, SMALL).expect("create");
    let all = entries(1..=150, 1);
    for (n, batch) in all.chunks(5).enumerate() {
        wal.save(Some(&hard_state(n as u64)), batch).expect("save");
    }
    assert!(wal.segment_count() >= 4, "need several segments");
    wal.close().expect("close");
    all
}

/// Opens `dir`, asserting the recovery is a valid prefix of `written`, then appends one entry
/// and checks it survives a reopen.
fn assert_repaired_prefix(dir: &Path, written: &[Entry]) {
    let (mut wal, rec) = Wal::open(dir, Marker::ZERO, SMALL).expect("a torn tail must be repaired");
    let n = rec.entries.len();
    assert!(n <= written.len());
    assert_eq!(
        rec.entries[..],
        written[..n],
        "recovered entries must be a prefix"
    );
    assert_eq!(rec.metadata, META);
    let hs = rec.hard_state.expect("some hard state survives");
    assert!(
        (0..30).any(|i| hs == hard_state(i)),
        "hard state must be one that was saved"
    );
    let next = common::entry(n as u64 + 1, 2);
    wal.save(None, std::slice::from_ref(&next))
        .expect("append after repair");
    wal.close().expect("close");
    let (_wal, rec) = Wal::open(dir, Marker::ZERO, SMALL).expect("reopen after repair");
    assert_eq!(rec.entries.len(), n + 1);
    assert_eq!(rec.entries[n], next);
}

fn newest(dir: &Path) -> PathBuf {
    segments(dir).pop().expect("segments")
}

fn expect_corrupt(dir: &Path) -> (PathBuf, u64, Corruption) {
    match Wal::open(dir, Marker::ZERO, SMALL) {
        Err(WalError::Corrupt {
            path,
            offset,
            reason,
        }) => (path, offset, reason),
        other => panic!("expected a corruption error, got {other:?}"),
    }
}

#[test]
fn cutting_the_newest_segment_at_every_offset_of_its_last_records_is_repaired() {
    let base = tempfile::tempdir().expect("tempdir");
    let original = base.path().join("original");
    let written = build(&original, META);
    let bytes = fs::read(newest(&original)).expect("read");
    let spans = record_spans(&bytes);
    let (from, end) = (
        spans[spans.len().saturating_sub(4)].0,
        spans.last().expect("records").1,
    );
    for cut in from..=end {
        let dir = base.path().join(format!("cut-{cut}"));
        copy_dir(&original, &dir);
        let file = OpenOptions::new()
            .write(true)
            .open(newest(&dir))
            .expect("open");
        file.set_len(cut as u64).expect("truncate");
        drop(file);
        if cut % 16 == 0 {
            assert_repaired_prefix(&dir, &written);
        } else {
            let (_wal, rec) = Wal::open(&dir, Marker::ZERO, SMALL).expect("repaired");
            assert_eq!(rec.entries[..], written[..rec.entries.len()]);
        }
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}

#[test]
fn a_zeroed_or_garbage_tail_is_repaired_and_wiped() {
    let base = tempfile::tempdir().expect("tempdir");
    let original = base.path().join("original");
    let written = build(&original, META);
    let bytes = fs::read(newest(&original)).expect("read");
    let spans = record_spans(&bytes);
    let (from, end) = (spans[spans.len() - 3].0, spans.last().expect("records").1);
    for start in (from..end).step_by(8) {
        for garbage in [false, true] {
            let dir = base.path().join(format!("tail-{start}-{garbage}"));
            copy_dir(&original, &dir);
            let mut damaged = bytes.clone();
            let stop = (end + 64).min(damaged.len());
            for (i, b) in damaged[start..stop].iter_mut().enumerate() {
                *b = if garbage {
                    (i as u8).wrapping_mul(31) | 1
                } else {
                    0
                };
            }
            fs::write(newest(&dir), &damaged).expect("write");
            assert_repaired_prefix(&dir, &written);
            let after = fs::read(newest(&dir)).expect("read");
            let valid_end = record_spans(&after).last().expect("records").1;
            assert!(
                after[valid_end..].iter().all(|&b| b == 0),
                "torn bytes must be wiped"
            );
            fs::remove_dir_all(&dir).expect("cleanup");
        }
    }
}

#[test]
fn a_flipped_bit_in_an_old_segment_is_refused_with_file_and_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    build(dir.path(), META);
    let paths = segments(dir.path());
    for victim in [&paths[0], &paths[1]] {
        let bytes = fs::read(victim).expect("read");
        let spans = record_spans(&bytes);
        let end = spans.last().expect("records").1;
        for at in 0..end {
            let mut damaged = bytes.clone();
            damaged[at] ^= 1 << (at % 8);
            fs::write(victim, &damaged).expect("write");
            let (path, offset, _reason) = expect_corrupt(dir.path());
            assert_eq!(&path, victim, "flip at byte {at}");
            let (start, stop) = spans
                .iter()
                .copied()
                .find(|&(s, e)| (s..e).contains(&at))
                .expect("span");
            assert!(
                offset as usize >= start && (offset as usize) < stop.max(start + 1),
                "flip at {at}: offset {offset} not in record {start}..{stop}"
            );
        }
        fs::write(victim, &bytes).expect("restore");
    }
    Wal::open(dir.path(), Marker::ZERO, SMALL).expect("restored WAL opens");
}

#[test]
fn a_flipped_bit_before_the_last_record_of_the_newest_segment_is_refused() {
    let base = tempfile::tempdir().expect("tempdir");
    let dir = base.path().join("wal");
    let written = build(&dir, META);
    let victim = newest(&dir);
    let bytes = fs::read(&victim).expect("read");
    let spans = record_spans(&bytes);
    assert!(spans.len() >= 4, "preamble plus a few records");
    let last_start = spans.last().expect("records").0;
    for at in 0..spans.last().expect("records").1 {
        let mut damaged = bytes.clone();
        damaged[at] ^= 1 << (at % 8);
        fs::write(&victim, &damaged).expect("write");
        if at < last_start {
            let (path, offset, _) = expect_corrupt(&dir);
            assert_eq!(path, victim, "flip at byte {at}");
            assert!(offset as usize <= at, "flip at {at}: offset {offset}");
        } else {
            // Indistinguishable from a torn write: the last record is dropped, never returned.
            let (_wal, rec) = Wal::open(&dir, Marker::ZERO, SMALL).expect("torn tail");
            assert_eq!(rec.entries[..], written[..rec.entries.len()]);
            assert!(rec.entries.len() < written.len() || rec.hard_state != Some(hard_state(29)));
        }
        fs::write(&victim, &bytes).expect("restore");
    }
}

#[test]
fn a_missing_middle_segment_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    build(dir.path(), META);
    let paths = segments(dir.path());
    fs::remove_file(&paths[1]).expect("remove");
    let (path, offset, reason) = expect_corrupt(dir.path());
    assert_eq!(path, paths[2]);
    assert_eq!(offset, 0);
    assert_eq!(reason, Corruption::MissingSegment { expected_seq: 1 });
    let markers = Wal::markers(dir.path());
    assert!(
        matches!(markers, Err(WalError::Corrupt { .. })),
        "{markers:?}"
    );
}

#[test]
fn a_segment_from_another_wal_is_refused() {
    let base = tempfile::tempdir().expect("tempdir");
    let (ours, theirs) = (base.path().join("ours"), base.path().join("theirs"));
    build(&ours, META);
    build(&theirs, Metadata { node_id: 2, ..META });
    let (our_paths, their_paths) = (segments(&ours), segments(&theirs));
    for i in [1, 2, our_paths.len() - 1] {
        let original = fs::read(&our_paths[i]).expect("read");
        assert_eq!(
            our_paths[i].file_name(),
            their_paths[i].file_name(),
            "same names"
        );
        fs::copy(&their_paths[i], &our_paths[i]).expect("swap in");
        let (path, offset, reason) = expect_corrupt(&ours);
        assert_eq!(path, our_paths[i]);
        assert_eq!(offset, 0);
        assert_eq!(reason, Corruption::ChainBroken);
        fs::write(&our_paths[i], original).expect("restore");
    }
    Wal::open(&ours, Marker::ZERO, SMALL).expect("restored WAL opens");
}

#[test]
fn a_zeroed_sector_inside_committed_data_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    build(dir.path(), META);
    let victim = newest(dir.path());
    let bytes = fs::read(&victim).expect("read");
    let spans = record_spans(&bytes);
    assert!(spans.len() > 4);
    let mut damaged = bytes.clone();
    let (start, _) = spans[2];
    damaged[start..spans[3].1].fill(0);
    fs::write(&victim, &damaged).expect("write");
    let (path, offset, reason) = expect_corrupt(dir.path());
    assert_eq!(path, victim);
    assert_eq!(offset as usize, start);
    assert_eq!(reason, Corruption::NotATornTail);
}
