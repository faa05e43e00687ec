//! Snapshot store: atomic writes, fallback past corrupt files, purge, marker filtering.

use std::fs;
use std::path::Path;

use wal::{Marker, SnapshotStore, WalError};

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn m(term: u64, index: u64) -> Marker {
    Marker { index, term }
}

#[test]
fn save_is_atomic_and_round_trips() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SnapshotStore::open(dir.path(), 3).expect("open");
    store.save(2, 100, b"state at 100").expect("save");
    assert_eq!(
        files(dir.path()),
        vec![format!("{:016x}-{:016x}.snap", 2, 100)]
    );
    let loaded = store
        .load_newest(&[m(2, 100)])
        .expect("load")
        .expect("some");
    assert_eq!(
        (loaded.term, loaded.index, loaded.data.as_slice()),
        (2, 100, &b"state at 100"[..])
    );
    assert_eq!(loaded.marker(), m(2, 100));
    // An empty snapshot is valid too.
    store.save(2, 101, b"").expect("save empty");
    assert_eq!(store.load(m(2, 101)).expect("load").data, Vec::<u8>::new());
}

#[test]
fn a_leftover_temporary_file_is_ignored_and_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SnapshotStore::open(dir.path(), 3).expect("open");
    store.save(1, 10, b"ten").expect("save");
    // A crash between write and rename leaves only the temporary file.
    let tmp = dir.path().join(format!("{:016x}-{:016x}.snap.tmp", 1, 20));
    fs::write(&tmp, b"half a snapshot").expect("write");
    let loaded = store
        .load_newest(&[m(1, 10), m(1, 20)])
        .expect("load")
        .expect("some");
    assert_eq!(loaded.index, 10);
    drop(store);
    SnapshotStore::open(dir.path(), 3).expect("reopen");
    assert!(!tmp.exists());
}

#[test]
fn a_corrupt_newest_snapshot_falls_back_to_the_previous_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SnapshotStore::open(dir.path(), 5).expect("open");
    let all = [m(1, 10), m(1, 20), m(2, 30)];
    for marker in all {
        store
            .save(
                marker.term,
                marker.index,
                format!("data {}", marker.index).as_bytes(),
            )
            .expect("save");
    }
    let newest = dir.path().join(format!("{:016x}-{:016x}.snap", 2, 30));
    let mut bytes = fs::read(&newest).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x10;
    fs::write(&newest, &bytes).expect("write");
    let loaded = store.load_newest(&all).expect("load").expect("some");
    assert_eq!(
        (loaded.index, loaded.data.as_slice()),
        (20, &b"data 20"[..])
    );
    let direct = store.load(m(2, 30));
    assert!(
        matches!(direct, Err(WalError::Corrupt { .. })),
        "{direct:?}"
    );

    // A truncated snapshot is skipped the same way.
    let second = dir.path().join(format!("{:016x}-{:016x}.snap", 1, 20));
    fs::OpenOptions::new()
        .write(true)
        .open(&second)
        .expect("open")
        .set_len(20)
        .expect("cut");
    let loaded = store.load_newest(&all).expect("load").expect("some");
    assert_eq!(loaded.index, 10);
}

#[test]
fn only_snapshots_with_a_wal_marker_are_loaded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SnapshotStore::open(dir.path(), 5).expect("open");
    store.save(1, 10, b"ten").expect("save");
    store.save(1, 20, b"twenty").expect("save");
    // The marker of 20 never reached the WAL (crash between the two writes).
    let loaded = store.load_newest(&[m(1, 10)]).expect("load").expect("some");
    assert_eq!(loaded.index, 10);
    assert_eq!(store.load_newest(&[]).expect("load"), None);
}

#[test]
fn old_snapshots_are_purged_beyond_keep_count() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SnapshotStore::open(dir.path(), 2).expect("open");
    for index in 1..=5 {
        store.save(1, index * 10, b"x").expect("save");
        store.purge(m(1, index * 10)).expect("purge");
    }
    assert_eq!(store.list().expect("list"), vec![m(1, 50), m(1, 40)]);
    assert_eq!(files(dir.path()).len(), 2);
}

/// etcd #9263: a new snapshot file whose WAL marker is not written yet
/// must not cost the only snapshot a restart can open at.
#[test]
fn purge_never_removes_the_snapshot_the_wal_marker_points_at() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SnapshotStore::open(dir.path(), 1).expect("open");
    store.save(1, 10, b"old").expect("save");
    store.purge(m(1, 10)).expect("purge");
    // Crash after writing the file of 20 but before its marker.
    store.save(1, 20, b"new").expect("save");
    store.purge(m(1, 10)).expect("purge");
    let loaded = store.load_newest(&[m(1, 10)]).expect("load").expect("some");
    assert_eq!(loaded.index, 10);
    // Once the marker of 20 is durable, 10 may go.
    store.purge(m(1, 20)).expect("purge");
    assert_eq!(store.list().expect("list"), vec![m(1, 20)]);
}

#[test]
fn keep_count_zero_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SnapshotStore::open(dir.path(), 0);
    assert!(
        matches!(store, Err(WalError::InvalidConfig(_))),
        "{store:?}"
    );
}
