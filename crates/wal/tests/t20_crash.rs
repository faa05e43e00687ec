//! Crash matrix: torn tails are repaired, every other kind of damage is refused with the file
//! and offset. A tail is torn only when nothing after it validates and a 512-byte sector of
//! its record is all zero (what a write that never fully reached the disk leaves).
//!
//! Every scenario runs twice: on the real file system (`std_fs::`) and on the simulated disk
//! (`sim_fs::`).

mod common;

use std::path::{Path, PathBuf};

use common::{entries, hard_state, record_spans, Disk, META, SMALL};
use wal::{Corruption, Entry, Marker, Metadata, Wal, WalConfig, WalError};

/// Writes 1..=150 in batches of 5 with a hard state each, into `dir`; returns the entries.
fn build(disk: &Disk, dir: &Path, metadata: Metadata) -> Vec<Entry> {
    let mut wal = Wal::create_in(disk.fs(), dir, metadata, SMALL).expect("create");
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
fn assert_repaired_prefix(disk: &Disk, dir: &Path, written: &[Entry]) {
    let (mut wal, rec) =
        Wal::open_in(disk.fs(), dir, Marker::ZERO, SMALL).expect("a torn tail must be repaired");
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
    let (_wal, rec) =
        Wal::open_in(disk.fs(), dir, Marker::ZERO, SMALL).expect("reopen after repair");
    assert_eq!(rec.entries.len(), n + 1);
    assert_eq!(rec.entries[n], next);
}

fn newest(disk: &Disk, dir: &Path) -> PathBuf {
    disk.segments(dir).pop().expect("segments")
}

fn expect_corrupt(disk: &Disk, dir: &Path) -> (PathBuf, u64, Corruption) {
    expect_corrupt_with(disk, dir, SMALL)
}

fn expect_corrupt_with(disk: &Disk, dir: &Path, config: WalConfig) -> (PathBuf, u64, Corruption) {
    match Wal::open_in(disk.fs(), dir, Marker::ZERO, config) {
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

fn cutting_the_newest_segment_at_every_offset_of_its_last_records_is_repaired(disk: &Disk) {
    let original = disk.root().join("original");
    let written = build(disk, &original, META);
    let bytes = disk.read(&newest(disk, &original));
    let spans = record_spans(&bytes);
    let (from, end) = (
        spans[spans.len().saturating_sub(4)].0,
        spans.last().expect("records").1,
    );
    for cut in from..=end {
        let dir = disk.root().join(format!("cut-{cut}"));
        disk.copy_dir(&original, &dir);
        disk.set_len(&newest(disk, &dir), cut as u64);
        if cut % 16 == 0 {
            assert_repaired_prefix(disk, &dir, &written);
        } else {
            let (_wal, rec) = Wal::open_in(disk.fs(), &dir, Marker::ZERO, SMALL).expect("repaired");
            assert_eq!(rec.entries[..], written[..rec.entries.len()]);
        }
        disk.remove_dir(&dir);
    }
}

/// Sector size the torn-write rule reasons about.
const SECTOR_BYTES: usize = 512;

/// True when zeroing `[start, ..)` leaves a whole 512-byte-aligned sector chunk of the record
/// `span` zero (the record's start, or a sector boundary, lies in the zeroed range).
fn zeroing_from_tears(span: (usize, usize), start: usize) -> bool {
    span.0 == start || (start..span.1).any(|b| b % SECTOR_BYTES == 0)
}

fn a_zeroed_tail_is_repaired_only_where_it_zeroes_a_sector_of_the_record(disk: &Disk) {
    let original = disk.root().join("original");
    let written = build(disk, &original, META);
    let bytes = disk.read(&newest(disk, &original));
    let spans = record_spans(&bytes);
    let (from, end) = (spans[spans.len() - 3].0, spans.last().expect("records").1);
    let (mut repaired, mut refused) = (0, 0);
    for start in (from..end).step_by(8) {
        let dir = disk.root().join(format!("tail-{start}"));
        disk.copy_dir(&original, &dir);
        let mut damaged = bytes.clone();
        damaged[start..].fill(0);
        disk.write(&newest(disk, &dir), &damaged);
        let span = spans
            .iter()
            .copied()
            .find(|&(s, e)| (s..e).contains(&start))
            .expect("span");
        if zeroing_from_tears(span, start) {
            assert_repaired_prefix(disk, &dir, &written);
            repaired += 1;
        } else {
            let (path, offset, _) = expect_corrupt(disk, &dir);
            assert_eq!(path, newest(disk, &dir));
            assert_eq!(offset as usize, span.0, "zeroing from {start}");
            refused += 1;
        }
        disk.remove_dir(&dir);
    }
    assert!(
        repaired > 0 && refused > 0,
        "{repaired} repaired, {refused} refused"
    );
}

fn a_garbage_tail_is_refused_and_left_in_place(disk: &Disk) {
    let original = disk.root().join("original");
    build(disk, &original, META);
    let bytes = disk.read(&newest(disk, &original));
    let spans = record_spans(&bytes);
    let (from, end) = (spans[spans.len() - 3].0, spans.last().expect("records").1);
    for start in (from..end).step_by(8) {
        let dir = disk.root().join(format!("garbage-{start}"));
        disk.copy_dir(&original, &dir);
        let mut damaged = bytes.clone();
        let stop = (end + 64).min(damaged.len());
        for (i, b) in damaged[start..stop].iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(31) | 1;
        }
        disk.write(&newest(disk, &dir), &damaged);
        let (path, offset, _) = expect_corrupt(disk, &dir);
        assert_eq!(path, newest(disk, &dir));
        let first_bad = spans
            .iter()
            .find(|&&(s, e)| (s..e).contains(&start))
            .expect("span")
            .0;
        assert_eq!(offset as usize, first_bad, "garbage from {start}");
        assert_eq!(disk.read(&newest(disk, &dir)), damaged, "nothing wiped");
        disk.remove_dir(&dir);
    }
}

/// Flips every bit of the newest segment's last record, one at a time: every flip is refused
/// with the record's file and offset, and the file is left untouched.
fn every_bit_of_the_last_record_is_refused(disk: &Disk, dir: &Path) {
    every_bit_of_the_last_record_is_refused_with(disk, dir, SMALL, usize::MAX);
}

/// As above, for the first `bytes_flipped` bytes of the record.
fn every_bit_of_the_last_record_is_refused_with(
    disk: &Disk,
    dir: &Path,
    config: WalConfig,
    bytes_flipped: usize,
) {
    let victim = newest(disk, dir);
    let bytes = disk.read(&victim);
    let (start, end) = *record_spans(&bytes).last().expect("records");
    for at in start..end.min(start.saturating_add(bytes_flipped)) {
        for bit in 0..8 {
            let mut damaged = bytes.clone();
            damaged[at] ^= 1 << bit;
            disk.write(&victim, &damaged);
            let (path, offset, _) = expect_corrupt_with(disk, dir, config);
            assert_eq!(path, victim, "flip of bit {bit} at byte {at}");
            assert_eq!(offset as usize, start, "flip of bit {bit} at byte {at}");
            assert_eq!(disk.read(&victim), damaged, "nothing wiped");
        }
    }
    disk.write(&victim, &bytes);
    Wal::open_in(disk.fs(), dir, Marker::ZERO, config).expect("restored WAL opens");
}

fn a_flipped_bit_anywhere_in_a_last_hard_state_record_is_refused(disk: &Disk) {
    let dir = disk.root().join("wal");
    build(disk, &dir, META);
    // `build` ends each batch with its hard state.
    every_bit_of_the_last_record_is_refused(disk, &dir);
}

fn a_flipped_bit_anywhere_in_a_last_entry_record_is_refused(disk: &Disk) {
    // In a larger segment a flipped length bit points into the zeros after the record
    // rather than past the end of the file.
    for (segment_bytes, bytes_flipped) in [(SMALL.segment_bytes, usize::MAX), (1 << 20, 12)] {
        let dir = disk.root().join(format!("wal-{segment_bytes}"));
        let config = WalConfig { segment_bytes };
        let mut wal = Wal::create_in(disk.fs(), &dir, META, config).expect("create");
        wal.save(Some(&hard_state(1)), &entries(1..=3, 1))
            .expect("save");
        wal.save(None, &entries(4..=4, 1)).expect("save");
        wal.close().expect("close");
        every_bit_of_the_last_record_is_refused_with(disk, &dir, config, bytes_flipped);
    }
}

fn a_1kib_last_record_with_its_second_sector_zeroed_is_a_torn_write(disk: &Disk) {
    let dir = disk.root().join("wal");
    let mut wal = Wal::create_in(disk.fs(), &dir, META, WalConfig::default()).expect("create");
    let first = entries(1..=3, 1);
    wal.save(Some(&hard_state(1)), &first).expect("save");
    let last = Entry {
        index: 4,
        term: 1,
        payload: vec![0xA5; 1024 - 12 - 16],
    };
    wal.save(None, std::slice::from_ref(&last)).expect("save");
    wal.close().expect("close");
    let victim = newest(disk, &dir);
    let mut bytes = disk.read(&victim);
    let (start, end) = *record_spans(&bytes).last().expect("records");
    assert_eq!(end - start, 1024);
    let second_sector = (start / SECTOR_BYTES + 1) * SECTOR_BYTES;
    assert!(
        second_sector + SECTOR_BYTES <= end,
        "the record spans a whole second sector"
    );
    bytes[second_sector..second_sector + SECTOR_BYTES].fill(0);
    disk.write(&victim, &bytes);

    let (_wal, rec) =
        Wal::open_in(disk.fs(), &dir, Marker::ZERO, WalConfig::default()).expect("torn");
    assert_eq!(rec.entries, first);
    assert_eq!(rec.hard_state, Some(hard_state(1)));
    let after = disk.read(&victim);
    assert!(
        after[start..].iter().all(|&b| b == 0),
        "the torn record is wiped"
    );
    assert_eq!(after[..start], bytes[..start]);
}

fn a_flipped_bit_in_an_old_segment_is_refused_with_file_and_offset(disk: &Disk) {
    let dir = disk.root().join("wal");
    build(disk, &dir, META);
    let paths = disk.segments(&dir);
    for victim in [&paths[0], &paths[1]] {
        let bytes = disk.read(victim);
        let spans = record_spans(&bytes);
        let end = spans.last().expect("records").1;
        for at in 0..end {
            let mut damaged = bytes.clone();
            damaged[at] ^= 1 << (at % 8);
            disk.write(victim, &damaged);
            let (path, offset, _reason) = expect_corrupt(disk, &dir);
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
        disk.write(victim, &bytes);
    }
    Wal::open_in(disk.fs(), &dir, Marker::ZERO, SMALL).expect("restored WAL opens");
}

fn a_flipped_bit_anywhere_in_the_newest_segment_is_refused(disk: &Disk) {
    let dir = disk.root().join("wal");
    build(disk, &dir, META);
    let victim = newest(disk, &dir);
    let bytes = disk.read(&victim);
    let spans = record_spans(&bytes);
    assert!(spans.len() >= 4, "preamble plus a few records");
    for at in 0..spans.last().expect("records").1 {
        let mut damaged = bytes.clone();
        damaged[at] ^= 1 << (at % 8);
        disk.write(&victim, &damaged);
        // The last record too: it was fsynced, so it is not a torn write.
        let (path, offset, _) = expect_corrupt(disk, &dir);
        assert_eq!(path, victim, "flip at byte {at}");
        assert!(offset as usize <= at, "flip at {at}: offset {offset}");
        disk.write(&victim, &bytes);
    }
}

fn a_missing_middle_segment_is_refused(disk: &Disk) {
    let dir = disk.root().join("wal");
    build(disk, &dir, META);
    let paths = disk.segments(&dir);
    disk.remove(&paths[1]);
    let (path, offset, reason) = expect_corrupt(disk, &dir);
    assert_eq!(path, paths[2]);
    assert_eq!(offset, 0);
    assert_eq!(reason, Corruption::MissingSegment { expected_seq: 1 });
    let markers = Wal::markers_in(&*disk.fs(), &dir);
    assert!(
        matches!(markers, Err(WalError::Corrupt { .. })),
        "{markers:?}"
    );
}

fn a_segment_from_another_wal_is_refused(disk: &Disk) {
    let (ours, theirs) = (disk.root().join("ours"), disk.root().join("theirs"));
    build(disk, &ours, META);
    build(disk, &theirs, Metadata { node_id: 2, ..META });
    let (our_paths, their_paths) = (disk.segments(&ours), disk.segments(&theirs));
    for i in [1, 2, our_paths.len() - 1] {
        let original = disk.read(&our_paths[i]);
        assert_eq!(
            our_paths[i].file_name(),
            their_paths[i].file_name(),
            "same names"
        );
        disk.write(&our_paths[i], &disk.read(&their_paths[i]));
        let (path, offset, reason) = expect_corrupt(disk, &ours);
        assert_eq!(path, our_paths[i]);
        assert_eq!(offset, 0);
        assert_eq!(reason, Corruption::ChainBroken);
        disk.write(&our_paths[i], &original);
    }
    Wal::open_in(disk.fs(), &ours, Marker::ZERO, SMALL).expect("restored WAL opens");
}

fn a_zeroed_sector_inside_committed_data_is_refused(disk: &Disk) {
    let dir = disk.root().join("wal");
    build(disk, &dir, META);
    let victim = newest(disk, &dir);
    let bytes = disk.read(&victim);
    let spans = record_spans(&bytes);
    assert!(spans.len() > 4);
    let mut damaged = bytes.clone();
    let (start, _) = spans[2];
    damaged[start..spans[3].1].fill(0);
    disk.write(&victim, &damaged);
    let (path, offset, reason) = expect_corrupt(disk, &dir);
    assert_eq!(path, victim);
    assert_eq!(offset as usize, start);
    assert_eq!(reason, Corruption::NotATornTail);
}

on_both_disks!(
    cutting_the_newest_segment_at_every_offset_of_its_last_records_is_repaired,
    a_zeroed_tail_is_repaired_only_where_it_zeroes_a_sector_of_the_record,
    a_garbage_tail_is_refused_and_left_in_place,
    a_flipped_bit_anywhere_in_a_last_hard_state_record_is_refused,
    a_flipped_bit_anywhere_in_a_last_entry_record_is_refused,
    a_1kib_last_record_with_its_second_sector_zeroed_is_a_torn_write,
    a_flipped_bit_in_an_old_segment_is_refused_with_file_and_offset,
    a_flipped_bit_anywhere_in_the_newest_segment_is_refused,
    a_missing_middle_segment_is_refused,
    a_segment_from_another_wal_is_refused,
    a_zeroed_sector_inside_committed_data_is_refused,
);
