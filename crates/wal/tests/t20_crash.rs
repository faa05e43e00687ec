//! Crash matrix: torn tails are repaired, every other kind of damage is refused with the file
//! and offset. A tail is torn only when nothing after it validates and a 512-byte sector of
//! its record is all zero (what a write that never fully reached the disk leaves).

mod common;

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use common::{copy_dir, entries, hard_state, record_spans, segments, META, SMALL};
use wal::{Corruption, Entry, Marker, Metadata, Wal, WalConfig, WalError};

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
    expect_corrupt_with(dir, SMALL)
}

fn expect_corrupt_with(dir: &Path, config: WalConfig) -> (PathBuf, u64, Corruption) {
    match Wal::open(dir, Marker::ZERO, config) {
        Err(WalError::Corrupt {
            path,
            offset,
            reason,
        }) => (path, offset, reason),
        Err(other) => panic!("expected a corruption error, got {other:?}"),
        Ok((_, rec)) => panic!(
            "expected a corruption error, opened with {} entries",
            rec.entries.len()
        ),
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

/// Sector size the torn-write rule reasons about.
const SECTOR_BYTES: usize = 512;

/// True when zeroing `[start, ..)` leaves a whole 512-byte-aligned sector chunk of the record
/// `span` zero (the record's start, or a sector boundary, lies in the zeroed range).
fn zeroing_from_tears(span: (usize, usize), start: usize) -> bool {
    span.0 == start || (start..span.1).any(|b| b % SECTOR_BYTES == 0)
}

#[test]
fn a_zeroed_tail_is_repaired_only_where_it_zeroes_a_sector_of_the_record() {
    let base = tempfile::tempdir().expect("tempdir");
    let original = base.path().join("original");
    let written = build(&original, META);
    let bytes = fs::read(newest(&original)).expect("read");
    let spans = record_spans(&bytes);
    let (from, end) = (spans[spans.len() - 3].0, spans.last().expect("records").1);
    let (mut repaired, mut refused) = (0, 0);
    for start in (from..end).step_by(8) {
        let dir = base.path().join(format!("tail-{start}"));
        copy_dir(&original, &dir);
        let mut damaged = bytes.clone();
        damaged[start..].fill(0);
        fs::write(newest(&dir), &damaged).expect("write");
        let span = spans
            .iter()
            .copied()
            .find(|&(s, e)| (s..e).contains(&start))
            .expect("span");
        if zeroing_from_tears(span, start) {
            assert_repaired_prefix(&dir, &written);
            repaired += 1;
        } else {
            let (path, offset, _) = expect_corrupt(&dir);
            assert_eq!(path, newest(&dir));
            assert_eq!(offset as usize, span.0, "zeroing from {start}");
            refused += 1;
        }
        fs::remove_dir_all(&dir).expect("cleanup");
    }
    assert!(
        repaired > 0 && refused > 0,
        "{repaired} repaired, {refused} refused"
    );
}

#[test]
fn a_garbage_tail_is_refused_and_left_in_place() {
    let base = tempfile::tempdir().expect("tempdir");
    let original = base.path().join("original");
    build(&original, META);
    let bytes = fs::read(newest(&original)).expect("read");
    let spans = record_spans(&bytes);
    let (from, end) = (spans[spans.len() - 3].0, spans.last().expect("records").1);
    for start in (from..end).step_by(8) {
        let dir = base.path().join(format!("garbage-{start}"));
        copy_dir(&original, &dir);
        let mut damaged = bytes.clone();
        let stop = (end + 64).min(damaged.len());
        for (i, b) in damaged[start..stop].iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(31) | 1;
        }
        fs::write(newest(&dir), &damaged).expect("write");
        let (path, offset, _) = expect_corrupt(&dir);
        assert_eq!(path, newest(&dir));
        let first_bad = spans
            .iter()
            .find(|&&(s, e)| (s..e).contains(&start))
            .expect("span")
            .0;
        assert_eq!(offset as usize, first_bad, "garbage from {start}");
        assert_eq!(
            fs::read(newest(&dir)).expect("read"),
            damaged,
            "nothing wiped"
        );
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}

/// Flips every bit of the newest segment's last record, one at a time: every flip is refused
/// with the record's file and offset, and the file is left untouched.
fn every_bit_of_the_last_record_is_refused(dir: &Path) {
    every_bit_of_the_last_record_is_refused_with(dir, SMALL, usize::MAX);
}

/// As above, for the first `bytes_flipped` bytes of the record.
fn every_bit_of_the_last_record_is_refused_with(
    dir: &Path,
    config: WalConfig,
    bytes_flipped: usize,
) {
    let victim = newest(dir);
    let bytes = fs::read(&victim).expect("read");
    let (start, end) = *record_spans(&bytes).last().expect("records");
    for at in start..end.min(start.saturating_add(bytes_flipped)) {
        for bit in 0..8 {
            let mut damaged = bytes.clone();
            damaged[at] ^= 1 << bit;
            fs::write(&victim, &damaged).expect("write");
            let (path, offset, _) = expect_corrupt_with(dir, config);
            assert_eq!(path, victim, "flip of bit {bit} at byte {at}");
            assert_eq!(offset as usize, start, "flip of bit {bit} at byte {at}");
            assert_eq!(fs::read(&victim).expect("read"), damaged, "nothing wiped");
        }
    }
    fs::write(&victim, &bytes).expect("restore");
    Wal::open(dir, Marker::ZERO, config).expect("restored WAL opens");
}

#[test]
fn a_flipped_bit_anywhere_in_a_last_hard_state_record_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    build(dir.path(), META);
    // `build` ends each batch with its hard state.
    every_bit_of_the_last_record_is_refused(dir.path());
}

#[test]
fn a_flipped_bit_anywhere_in_a_last_entry_record_is_refused() {
    // In a larger segment a flipped length bit points into the zeros after the record
    // rather than past the end of the file.
    for (segment_bytes, bytes_flipped) in [(SMALL.segment_bytes, usize::MAX), (1 << 20, 12)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = WalConfig { segment_bytes };
        let mut wal = Wal::create(dir.path(), META, config).expect("create");
        wal.save(Some(&hard_state(1)), &entries(1..=3, 1))
            .expect("save");
        wal.save(None, &entries(4..=4, 1)).expect("save");
        wal.close().expect("close");
        every_bit_of_the_last_record_is_refused_with(dir.path(), config, bytes_flipped);
    }
}

#[test]
fn a_1kib_last_record_with_its_second_sector_zeroed_is_a_torn_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut wal = Wal::create(dir.path(), META, WalConfig::default()).expect("create");
    let first = entries(1..=3, 1);
    wal.save(Some(&hard_state(1)), &first).expect("save");
    let last = Entry {
        index: 4,
        term: 1,
        payload: vec![0xA5; 1024 - 12 - 16],
    };
    wal.save(None, std::slice::from_ref(&last)).expect("save");
    wal.close().expect("close");
    let victim = newest(dir.path());
    let mut bytes = fs::read(&victim).expect("read");
    let (start, end) = *record_spans(&bytes).last().expect("records");
    assert_eq!(end - start, 1024);
    let second_sector = (start / SECTOR_BYTES + 1) * SECTOR_BYTES;
    assert!(
        second_sector + SECTOR_BYTES <= end,
        "the record spans a whole second sector"
    );
    bytes[second_sector..second_sector + SECTOR_BYTES].fill(0);
    fs::write(&victim, &bytes).expect("write");

    let (_wal, rec) = Wal::open(dir.path(), Marker::ZERO, WalConfig::default()).expect("torn");
    assert_eq!(rec.entries, first);
    assert_eq!(rec.hard_state, Some(hard_state(1)));
    let after = fs::read(&victim).expect("read");
    assert!(
        after[start..].iter().all(|&b| b == 0),
        "the torn record is wiped"
    );
    assert_eq!(after[..start], bytes[..start]);
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
fn a_flipped_bit_anywhere_in_the_newest_segment_is_refused() {
    let base = tempfile::tempdir().expect("tempdir");
    let dir = base.path().join("wal");
    build(&dir, META);
    let victim = newest(&dir);
    let bytes = fs::read(&victim).expect("read");
    let spans = record_spans(&bytes);
    assert!(spans.len() >= 4, "preamble plus a few records");
    for at in 0..spans.last().expect("records").1 {
        let mut damaged = bytes.clone();
        damaged[at] ^= 1 << (at % 8);
        fs::write(&victim, &damaged).expect("write");
        // The last record too: it was fsynced, so it is not a torn write.
        let (path, offset, _) = expect_corrupt(&dir);
        assert_eq!(path, victim, "flip at byte {at}");
        assert!(offset as usize <= at, "flip at {at}: offset {offset}");
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
