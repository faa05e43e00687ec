//! Round trips, conflicts, markers, release, locking and argument checks.

mod common;

use common::{entries, entry, hard_state, segments, META, SMALL};
use wal::{Corruption, Entry, Marker, Wal, WalConfig, WalError};

fn marker(index: u64, term: u64) -> Marker {
    Marker { index, term }
}

/// Saves 1..=200 in batches of 7 (term 1) with a hard state per batch and markers at 50, 120.
fn write_standard(dir: &std::path::Path) -> Wal {
    let mut wal = Wal::create(dir, META, SMALL).expect("create");
    let all = entries(1..=200, 1);
    for (n, batch) in all.chunks(7).enumerate() {
        wal.save(Some(&hard_state(n as u64)), batch).expect("save");
        let last = batch.last().expect("non-empty").index;
        if (50..57).contains(&last) {
            wal.save_snapshot_marker(marker(50, 1)).expect("marker");
        }
        if (120..127).contains(&last) {
            wal.save_snapshot_marker(marker(120, 1)).expect("marker");
        }
    }
    wal
}

#[test]
fn round_trip_across_rotations_and_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = write_standard(dir.path());
    assert!(
        wal.segment_count() > 5,
        "expected rotations, got {}",
        wal.segment_count()
    );
    assert_eq!(wal.last_index(), 200);
    wal.close().expect("close");

    assert!(Wal::exists(dir.path()));
    assert_eq!(
        Wal::markers(dir.path()).expect("markers"),
        vec![marker(50, 1), marker(120, 1)]
    );

    let (wal, rec) = Wal::open(dir.path(), Marker::ZERO, SMALL).expect("open");
    assert_eq!(rec.metadata, META);
    assert_eq!(rec.entries, entries(1..=200, 1));
    assert_eq!(rec.hard_state, Some(hard_state(28)));
    assert_eq!(wal.last_index(), 200);
    assert_eq!(wal.latest_marker(), marker(120, 1));
    wal.close().expect("close");

    let (mut wal, rec) = Wal::open(dir.path(), marker(120, 1), SMALL).expect("open at marker");
    assert_eq!(rec.entries, entries(121..=200, 1));
    // Appending after reopen continues the chain.
    wal.save(Some(&hard_state(99)), &entries(201..=230, 2))
        .expect("save");
    wal.close().expect("close");
    let (_wal, rec) = Wal::open(dir.path(), marker(50, 1), SMALL).expect("reopen");
    let mut expected = entries(51..=200, 1);
    expected.extend(entries(201..=230, 2));
    assert_eq!(rec.entries, expected);
    assert_eq!(rec.hard_state, Some(hard_state(99)));
}

#[test]
fn conflict_truncation_is_replayed_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut wal = Wal::create(dir.path(), META, SMALL).expect("create");
    wal.save(None, &entries(1..=60, 1)).expect("save");
    // Replace the tail from 41 on, then from 55 on, crossing segment boundaries.
    wal.save(None, &entries(41..=50, 2)).expect("conflict");
    assert_eq!(wal.last_index(), 50);
    wal.save(None, &entries(51..=80, 2)).expect("extend");
    wal.save(Some(b"hs"), &entries(55..=56, 3))
        .expect("conflict 2");
    assert_eq!(wal.last_index(), 56);
    wal.close().expect("close");

    let (wal, rec) = Wal::open(dir.path(), Marker::ZERO, SMALL).expect("open");
    let mut expected = entries(1..=40, 1);
    expected.extend(entries(41..=54, 2));
    expected.extend(entries(55..=56, 3));
    assert_eq!(rec.entries, expected);
    assert_eq!(wal.last_index(), 56);
}

#[test]
fn fsyncs_are_one_per_save_with_data_and_none_without() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut wal = Wal::create(dir.path(), META, SMALL).expect("create");
    assert_eq!(wal.fsync_count(), 0);
    wal.save(None, &[]).expect("empty save");
    assert_eq!(wal.fsync_count(), 0);
    let mut saves = 0;
    for i in 1..=100 {
        wal.save(Some(&hard_state(i)), &[entry(i, 1)])
            .expect("save");
        saves += 1;
        wal.save(None, &[]).expect("empty save");
    }
    assert!(wal.segment_count() > 2, "rotations happened");
    assert_eq!(wal.fsync_count(), saves);
    wal.save_snapshot_marker(marker(10, 1)).expect("marker");
    assert_eq!(wal.fsync_count(), saves + 1);
}

#[test]
fn bad_arguments_are_refused_without_writing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut wal = Wal::create(dir.path(), META, SMALL).expect("create");
    wal.save(None, &entries(1..=5, 1)).expect("save");
    let gap = wal.save(None, &[entry(7, 1)]);
    assert!(
        matches!(
            gap,
            Err(WalError::NonContiguous {
                expected_index: 6,
                found_index: 7
            })
        ),
        "{gap:?}"
    );
    let holes = wal.save(None, &[entry(6, 1), entry(8, 1)]);
    assert!(
        matches!(
            holes,
            Err(WalError::NonContiguous {
                expected_index: 7,
                found_index: 8
            })
        ),
        "{holes:?}"
    );
    let zero = wal.save(None, &[entry(0, 1)]);
    assert!(
        matches!(zero, Err(WalError::BelowMarker { index: 0, .. })),
        "{zero:?}"
    );
    wal.save_snapshot_marker(marker(4, 1)).expect("marker");
    let below = wal.save(None, &[entry(4, 2)]);
    assert!(
        matches!(
            below,
            Err(WalError::BelowMarker {
                index: 4,
                marker_index: 4
            })
        ),
        "{below:?}"
    );
    let back = wal.save_snapshot_marker(marker(3, 1));
    assert!(
        matches!(
            back,
            Err(WalError::MarkerRegression {
                index: 3,
                latest_index: 4
            })
        ),
        "{back:?}"
    );
    assert_eq!(wal.fsync_count(), 2, "refused calls must not write");
    assert_eq!(wal.last_index(), 5);
    let bad_config = Wal::create(
        &dir.path().join("other"),
        META,
        WalConfig { segment_bytes: 10 },
    );
    assert!(
        matches!(bad_config, Err(WalError::InvalidConfig(_))),
        "{bad_config:?}"
    );
}

#[test]
fn one_owner_at_a_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = Wal::create(dir.path(), META, SMALL).expect("create");
    let second = Wal::open(dir.path(), Marker::ZERO, SMALL);
    assert!(
        matches!(&second, Err(WalError::Locked { path }) if path.ends_with("LOCK")),
        "{second:?}"
    );
    assert!(matches!(
        Wal::markers(dir.path()),
        Err(WalError::Locked { .. })
    ));
    let again = Wal::create(dir.path(), META, SMALL);
    assert!(matches!(again, Err(WalError::Locked { .. })), "{again:?}");
    wal.close().expect("close");
    let exists = Wal::create(dir.path(), META, SMALL);
    assert!(
        matches!(exists, Err(WalError::AlreadyExists { .. })),
        "{exists:?}"
    );
    let (_wal, rec) = Wal::open(dir.path(), Marker::ZERO, SMALL).expect("open after close");
    assert!(rec.entries.is_empty());
    assert_eq!(rec.hard_state, None);
}

#[test]
fn missing_wal_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert!(!Wal::exists(dir.path()));
    assert!(!Wal::exists(&dir.path().join("absent")));
    let open = Wal::open(dir.path(), Marker::ZERO, SMALL);
    assert!(matches!(open, Err(WalError::NotFound { .. })), "{open:?}");
    let open = Wal::open(&dir.path().join("absent"), Marker::ZERO, SMALL);
    assert!(matches!(open, Err(WalError::NotFound { .. })), "{open:?}");
}

#[test]
fn release_keeps_metadata_hard_state_and_markers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut wal = write_standard(dir.path());
    let before = wal.segment_count();
    wal.release_to(u64::MAX).expect("release");
    let after = wal.segment_count();
    assert!(after < before, "segments released: {before} -> {after}");
    assert_eq!(segments(dir.path()).len(), after);
    wal.close().expect("close");

    // Everything after the latest marker (120) survives even though release_to asked more.
    assert_eq!(
        Wal::markers(dir.path()).expect("markers").last(),
        Some(&marker(120, 1))
    );
    let (_wal, rec) = Wal::open(dir.path(), marker(120, 1), SMALL).expect("open");
    assert_eq!(rec.entries, entries(121..=200, 1));
    assert_eq!(rec.hard_state, Some(hard_state(28)));
    assert_eq!(rec.metadata, META);
    drop(_wal);

    let zero = Wal::open(dir.path(), Marker::ZERO, SMALL);
    assert!(
        matches!(zero, Err(WalError::MarkerReleased { .. })),
        "{zero:?}"
    );
    let old = Wal::open(dir.path(), marker(50, 1), SMALL);
    assert!(
        matches!(old, Err(WalError::MarkerReleased { .. })),
        "{old:?}"
    );
}

#[test]
fn markers_are_checked_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_standard(dir.path()).close().expect("close");
    let unknown = Wal::open(dir.path(), marker(60, 1), SMALL);
    assert!(
        matches!(unknown, Err(WalError::MarkerNotFound { .. })),
        "{unknown:?}"
    );
    let wrong_term = Wal::open(dir.path(), marker(50, 2), SMALL);
    assert!(
        matches!(wrong_term, Err(WalError::MarkerNotFound { .. })),
        "{wrong_term:?}"
    );
}

#[test]
fn marker_term_must_match_the_logged_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut wal = Wal::create(dir.path(), META, SMALL).expect("create");
    wal.save(None, &entries(1..=10, 1)).expect("save");
    wal.save_snapshot_marker(marker(5, 9)).expect("marker");
    wal.close().expect("close");
    let open = Wal::open(dir.path(), marker(5, 9), SMALL);
    assert!(
        matches!(open, Err(WalError::MarkerMismatch { found_term: 1, .. })),
        "{open:?}"
    );
}

#[test]
fn a_received_snapshot_inside_the_log_replaces_the_entries_above_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut wal = Wal::create(dir.path(), META, SMALL).expect("create");
    wal.save(Some(b"hs 1"), &entries(1..=10, 1)).expect("save");
    // A leader's snapshot at 5 of another term: the local 5..=10 diverged from it.
    wal.save_received_snapshot_marker(marker(5, 2))
        .expect("marker");
    assert_eq!(wal.last_index(), 5);
    wal.close().expect("close");

    let (mut wal, rec) = Wal::open(dir.path(), marker(5, 2), SMALL).expect("reopen");
    assert_eq!(wal.last_index(), 5);
    assert!(rec.entries.is_empty(), "{:?}", rec.entries);
    // The leader's entries follow the snapshot, across rotations.
    wal.save(Some(b"hs 2"), &entries(6..=60, 2)).expect("save");
    assert!(wal.segment_count() > 1, "rotated");
    wal.close().expect("close");
    let (_wal, rec) = Wal::open(dir.path(), marker(5, 2), SMALL).expect("reopen");
    assert_eq!(rec.entries, entries(6..=60, 2));
    assert_eq!(rec.hard_state.as_deref(), Some(&b"hs 2"[..]));
    drop(_wal);
    // Opening at an older point: the log between it and the snapshot is not held.
    let zero = Wal::open(dir.path(), Marker::ZERO, SMALL);
    assert!(
        matches!(zero, Err(WalError::EntriesUnavailable { .. })),
        "{zero:?}"
    );
}

#[test]
fn a_local_snapshot_marker_keeps_the_entries_above_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut wal = Wal::create(dir.path(), META, SMALL).expect("create");
    wal.save(None, &entries(1..=10, 1)).expect("save");
    wal.save_snapshot_marker(marker(5, 1)).expect("marker");
    assert_eq!(wal.last_index(), 10);
    wal.close().expect("close");
    let (wal, rec) = Wal::open(dir.path(), marker(5, 1), SMALL).expect("reopen");
    assert_eq!(wal.last_index(), 10);
    assert_eq!(rec.entries, entries(6..=10, 1));
}

#[test]
fn a_received_snapshot_moves_the_log_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut wal = Wal::create(dir.path(), META, SMALL).expect("create");
    wal.save(None, &entries(1..=5, 1)).expect("save");
    wal.save_snapshot_marker(marker(100, 3)).expect("marker");
    assert_eq!(wal.last_index(), 100);
    let early = wal.save(None, &[entry(50, 3)]);
    assert!(
        matches!(early, Err(WalError::BelowMarker { .. })),
        "{early:?}"
    );
    wal.save(Some(b"hs"), &entries(101..=110, 3))
        .expect("save after snapshot");
    wal.close().expect("close");
    let (_wal, rec) = Wal::open(dir.path(), marker(100, 3), SMALL).expect("open");
    assert_eq!(rec.entries, entries(101..=110, 3));
    drop(_wal);
    let zero = Wal::open(dir.path(), Marker::ZERO, SMALL);
    assert!(
        matches!(
            zero,
            Err(WalError::EntriesUnavailable {
                found_index: 101,
                ..
            })
        ),
        "{zero:?}"
    );
}

#[test]
fn a_segment_created_but_never_written_is_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_standard(dir.path()).close().expect("close");
    let paths = segments(dir.path());
    let count = paths.len() as u64;
    // Crash after the rename of a preallocated segment, before its first write.
    let unwritten = dir.path().join(format!("{count:016x}-{:016x}.wal", 201));
    std::fs::write(&unwritten, vec![0u8; 4096]).expect("write");
    let (mut wal, rec) = Wal::open(dir.path(), Marker::ZERO, SMALL).expect("open");
    assert!(!unwritten.exists());
    assert_eq!(rec.entries, entries(1..=200, 1));
    wal.save(None, &entries(201..=260, 1)).expect("save");
    wal.close().expect("close");
    let (_wal, rec) = Wal::open(dir.path(), marker(120, 1), SMALL).expect("reopen");
    assert_eq!(rec.entries, entries(121..=260, 1));
}

#[test]
fn a_batch_larger_than_a_segment_is_stored_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut wal = Wal::create(dir.path(), META, SMALL).expect("create");
    let big: Vec<Entry> = (1..=3)
        .map(|index| Entry {
            index,
            term: 1,
            payload: vec![index as u8; 10_000],
        })
        .collect();
    wal.save(None, &big).expect("save");
    wal.save(None, &big[..1]).expect("conflict");
    wal.close().expect("close");
    let (_wal, rec) = Wal::open(dir.path(), Marker::ZERO, SMALL).expect("open");
    assert_eq!(rec.entries, big[..1].to_vec());
}

#[test]
fn corruption_errors_name_file_and_offset() {
    let err = WalError::Corrupt {
        path: "/x/0000000000000001-0000000000000005.wal".into(),
        offset: 4096,
        reason: Corruption::Checksum,
    };
    let text = err.to_string();
    assert!(
        text.contains("0000000000000001-0000000000000005.wal") && text.contains("4096"),
        "{text}"
    );
}
