//! The real WAL recovery code on the simulated disk (`wal::sim::SimFs`): random histories of
//! saves, rotations, snapshot markers and releases, crashes that lose or tear unsynced
//! writes and directory entries, and fsync failures. Every seed is reproducible.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{entry, hard_state, META, SMALL};
use proptest::prelude::*;
use wal::sim::{CrashLoss, SimFs, SimRng, SimStats};
use wal::{Entry, FileSystem, Marker, SnapshotStore, Wal, WalError};

/// The state a sequence of successful WAL calls implies.
#[derive(Debug, Clone, PartialEq)]
struct Model {
    entries: BTreeMap<u64, Entry>,
    hard_state: Option<Vec<u8>>,
    marker: Marker,
    last_index: u64,
}

impl Model {
    fn new() -> Model {
        Model {
            entries: BTreeMap::new(),
            hard_state: None,
            marker: Marker::ZERO,
            last_index: 0,
        }
    }

    fn save(&mut self, hs: Option<&[u8]>, batch: &[Entry]) {
        if let Some(first) = batch.first() {
            self.entries.split_off(&first.index);
            for e in batch {
                self.entries.insert(e.index, e.clone());
            }
            self.last_index = batch.last().expect("non-empty").index;
        }
        if let Some(hs) = hs {
            self.hard_state = Some(hs.to_vec());
        }
    }

    fn local_marker(&mut self, marker: Marker) {
        self.marker = marker;
        self.last_index = self.last_index.max(marker.index);
    }

    fn received_marker(&mut self, marker: Marker) {
        self.marker = marker;
        self.entries.split_off(&(marker.index + 1));
        self.last_index = marker.index;
    }

    /// Entries a WAL opened at `at` returns.
    fn entries_after(&self, at: u64) -> Vec<Entry> {
        self.entries
            .range(at + 1..)
            .map(|(_, e)| e.clone())
            .collect()
    }
}

/// An entry whose payload spans up to a few sectors and ends in a non-zero byte.
fn sized_entry(index: u64, term: u64, payload_bytes: usize) -> Entry {
    let mut payload: Vec<u8> = (0..payload_bytes)
        .map(|i| (index as u8) ^ (i as u8).wrapping_mul(31) ^ (term as u8))
        .collect();
    payload.push(0xEE);
    Entry {
        index,
        term,
        payload,
    }
}

/// What one reopen saw, for the run's summary.
#[derive(Debug, Default)]
struct Tally {
    reopens: u64,
    repaired_out_of_order_tears: u64,
    failed_ops: u64,
}

/// Crashes `fs`, reopens the WAL at its newest marker and checks the recovery against the
/// candidates (the state of the last successful call, and each state a failed call may have
/// left). Returns the reopened WAL and the candidate it matched.
fn crash_and_reopen(
    fs: &SimFs,
    dir: &Path,
    loss: CrashLoss,
    candidates: &[Model],
    tally: &mut Tally,
) -> (Wal, Model) {
    fs.cancel_sync_failure();
    let torn_before = fs.stats().writes_torn_out_of_order;
    fs.crash(loss);
    let shared: Arc<dyn FileSystem> = Arc::new(fs.clone());
    let markers = Wal::markers_in(fs, dir);
    let opened = match markers {
        Ok(markers) => {
            let at = markers.last().copied().unwrap_or(Marker::ZERO);
            Wal::open_in(Arc::clone(&shared), dir, at, SMALL).map(|(w, r)| (w, r, at))
        }
        Err(e) => Err(e),
    };
    let (mut wal, recovered, at) = match opened {
        Ok(opened) => opened,
        Err(WalError::Corrupt {
            path,
            offset,
            reason,
        }) => {
            // Only a write whose sectors reached the disk out of order looks like damage to
            // committed data; nothing synced may be damaged.
            assert!(
                fs.stats().writes_torn_out_of_order > torn_before,
                "refused after a crash without an out-of-order torn write: \
                 {path:?} at {offset}: {reason:?}"
            );
            tally.repaired_out_of_order_tears += 1;
            let report = Wal::repair_in(fs, dir, false).expect("repair");
            assert!(report.damage.is_some(), "repair must cut something");
            let markers = Wal::markers_in(fs, dir).expect("markers after repair");
            let at = markers.last().copied().unwrap_or(Marker::ZERO);
            let (w, r) = Wal::open_in(shared, dir, at, SMALL).expect("open after repair");
            (w, r, at)
        }
        Err(other) => panic!("reopen failed: {other:?}"),
    };
    tally.reopens += 1;
    let matched = candidates.iter().find(|m| {
        m.marker == at
            && recovered.entries == m.entries_after(at.index)
            && recovered.hard_state == m.hard_state
            && wal.last_index() == m.last_index
    });
    let Some(matched) = matched else {
        panic!(
            "recovery matches no candidate: at {at:?}, {} entries {:?}..{:?}, last_index {}, \
             hard state {:?}; candidates: {:?}",
            recovered.entries.len(),
            recovered.entries.first().map(|e| (e.index, e.term)),
            recovered.entries.last().map(|e| (e.index, e.term)),
            wal.last_index(),
            recovered.hard_state.as_deref().map(String::from_utf8_lossy),
            candidates
                .iter()
                .map(|m| (m.marker, m.last_index, m.entries.len()))
                .collect::<Vec<_>>()
        );
    };
    assert_eq!(recovered.metadata, META);
    // The reopened WAL accepts appends.
    let mut model = matched.clone();
    let next = sized_entry(model.last_index + 1, 1 << 20, 100);
    wal.save(None, std::slice::from_ref(&next))
        .expect("append after reopen");
    model.save(None, std::slice::from_ref(&next));
    (wal, model)
}

/// Runs one seeded history; returns what happened.
fn run_history(seed: u64, steps: usize) -> (Tally, SimStats) {
    let mut rng = SimRng::new(seed);
    let fs = SimFs::new(seed);
    let dir = PathBuf::from("/sim/wal");
    let shared: Arc<dyn FileSystem> = Arc::new(fs.clone());
    let mut wal = Wal::create_in(shared, &dir, META, SMALL).expect("create");
    let mut model = Model::new();
    // Terms of appends after a reopen are 1 << 20; histories stay below.
    let mut term = 1;
    let mut tally = Tally::default();
    for _ in 0..steps {
        let roll = rng.below(100);
        // Each step: the model if the call succeeds, and the states a failure may leave.
        let mut after = model.clone();
        let mut partial: Vec<Model> = Vec::new();
        let result = match roll {
            0..=54 => {
                let back = rng.below(3);
                if back > 0 {
                    term += 1;
                }
                let first = (model.last_index + 1)
                    .saturating_sub(back)
                    .max(model.marker.index + 1);
                let count = 1 + rng.below(6);
                let batch: Vec<Entry> = (first..first + count)
                    .map(|i| sized_entry(i, term, rng.below(700) as usize))
                    .collect();
                let hs = (rng.below(2) == 0).then(|| hard_state(rng.below(1000)));
                for k in 1..batch.len() {
                    let mut m = model.clone();
                    m.save(None, &batch[..k]);
                    partial.push(m);
                }
                let mut whole = model.clone();
                whole.save(None, &batch);
                partial.push(whole);
                after.save(hs.as_deref(), &batch);
                wal.save(hs.as_deref(), &batch)
            }
            55..=64 if model.last_index > model.marker.index => {
                let index =
                    model.marker.index + 1 + rng.below(model.last_index - model.marker.index);
                let marker = Marker {
                    index,
                    term: model.entries.get(&index).map_or(term, |e| e.term),
                };
                after.local_marker(marker);
                wal.save_snapshot_marker(marker)
            }
            65..=69 => {
                let index = model
                    .marker
                    .index
                    .max(model.last_index.saturating_sub(2) + rng.below(5));
                term += 1;
                let marker = Marker { index, term };
                after.received_marker(marker);
                wal.save_received_snapshot_marker(marker)
            }
            70..=77 => wal.release_to(model.marker.index + 1),
            78..=84 => {
                fs.fail_sync_after(rng.below(4));
                Ok(())
            }
            _ => {
                let loss = match rng.below(10) {
                    0 => CrashLoss::KeepAll,
                    1 => CrashLoss::LoseAll,
                    _ => CrashLoss::Random,
                };
                drop(wal);
                let (reopened, matched) =
                    crash_and_reopen(&fs, &dir, loss, &[model.clone()], &mut tally);
                wal = reopened;
                model = matched;
                continue;
            }
        };
        match result {
            Ok(()) => model = after,
            Err(WalError::Io { .. }) => {
                tally.failed_ops += 1;
                // Poisoned: nothing more is accepted, nothing after is claimed durable.
                let next = entry(model.last_index + 1, term);
                assert!(matches!(
                    wal.save(None, std::slice::from_ref(&next)),
                    Err(WalError::Poisoned)
                ));
                drop(wal);
                let mut candidates = vec![model.clone(), after];
                candidates.extend(partial);
                let (reopened, matched) =
                    crash_and_reopen(&fs, &dir, CrashLoss::Random, &candidates, &mut tally);
                wal = reopened;
                model = matched;
            }
            Err(other) => panic!("unexpected error: {other:?}"),
        }
    }
    drop(wal);
    let (_wal, _) = crash_and_reopen(&fs, &dir, CrashLoss::Random, &[model], &mut tally);
    (tally, fs.stats())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, .. ProptestConfig::default() })]

    /// Whatever was saved with `Ok` survives any crash intact; a failed call leaves either
    /// nothing or a prefix of what it wrote; nothing failing its checksum is returned; the
    /// reopened WAL accepts appends. Replay a failure with its seed: `run_history(seed, 120)`.
    #[test]
    fn synced_data_survives_random_crashes_torn_writes_and_fsync_failures(seed in any::<u64>()) {
        run_history(seed, 120);
    }
}

/// The histories above are not vacuous: across a fixed set of seeds, every kind of damage
/// happens, and the WAL recovered from each.
#[test]
fn histories_exercise_every_fault() {
    let (mut tally, mut stats) = (Tally::default(), SimStats::default());
    for seed in 0..40 {
        let (t, s) = run_history(seed, 150);
        tally.reopens += t.reopens;
        tally.failed_ops += t.failed_ops;
        tally.repaired_out_of_order_tears += t.repaired_out_of_order_tears;
        stats.writes_lost += s.writes_lost;
        stats.writes_torn += s.writes_torn;
        stats.writes_torn_out_of_order += s.writes_torn_out_of_order;
        stats.dir_ops_lost += s.dir_ops_lost;
        stats.failed_syncs += s.failed_syncs;
    }
    let summary = format!("{tally:?} {stats:?}");
    assert!(tally.reopens > 100, "{summary}");
    assert!(tally.failed_ops > 10, "{summary}");
    assert!(stats.writes_lost > 10, "{summary}");
    assert!(stats.writes_torn > 10, "{summary}");
    assert!(stats.writes_torn_out_of_order > 0, "{summary}");
    assert!(stats.dir_ops_lost > 10, "{summary}");
}

#[test]
fn the_same_seed_does_the_same_damage() {
    let image = |seed: u64| {
        let fs = SimFs::new(seed);
        let dir = PathBuf::from("/sim/wal");
        let mut wal = Wal::create_in(Arc::new(fs.clone()), &dir, META, SMALL).expect("create");
        for i in 1..=40 {
            wal.save(Some(&hard_state(i)), &[sized_entry(i, 1, 600)])
                .expect("save");
        }
        fs.fail_sync_after(0);
        assert!(wal.save(None, &[sized_entry(41, 1, 3000)]).is_err());
        drop(wal);
        fs.crash(CrashLoss::Random);
        let mut names = fs.list(&dir).expect("list");
        names.sort();
        let files: Vec<Vec<u8>> = names
            .iter()
            .map(|n| fs.contents(&dir.join(n)).expect("read"))
            .collect();
        (names, files, fs.stats())
    };
    assert_eq!(image(7), image(7));
    let distinct = (0..8).map(image).collect::<Vec<_>>();
    assert!(
        distinct.windows(2).any(|w| w[0] != w[1]),
        "different seeds must do different damage"
    );
}

#[test]
fn an_fsync_failure_poisons_the_wal_and_nothing_after_it_is_durable() {
    let fs = SimFs::new(1);
    let dir = PathBuf::from("/sim/wal");
    let mut wal = Wal::create_in(Arc::new(fs.clone()), &dir, META, SMALL).expect("create");
    let synced = common::entries(1..=10, 1);
    wal.save(Some(&hard_state(1)), &synced).expect("save");
    fs.fail_sync_after(0);
    let failed = wal.save(Some(&hard_state(2)), &[entry(11, 1)]);
    assert!(matches!(failed, Err(WalError::Io { .. })), "{failed:?}");
    // Poisoned: every later call fails, even ones that would not write.
    assert!(matches!(
        wal.save(None, &[entry(11, 1)]),
        Err(WalError::Poisoned)
    ));
    assert!(matches!(
        wal.save_snapshot_marker(Marker { index: 5, term: 1 }),
        Err(WalError::Poisoned)
    ));
    assert!(matches!(wal.release_to(5), Err(WalError::Poisoned)));
    assert!(matches!(wal.close(), Err(WalError::Poisoned)));
    fs.crash(CrashLoss::LoseAll);
    let (mut wal, rec) =
        Wal::open_in(Arc::new(fs.clone()), &dir, Marker::ZERO, SMALL).expect("reopen");
    assert_eq!(rec.entries, synced, "exactly what was synced");
    assert_eq!(rec.hard_state, Some(hard_state(1)));
    wal.save(None, &[entry(11, 2)])
        .expect("append after reopen");
}

#[test]
fn a_directory_sync_failure_while_releasing_poisons_the_wal() {
    let fs = SimFs::new(5);
    let dir = PathBuf::from("/sim/wal");
    let mut wal = Wal::create_in(Arc::new(fs.clone()), &dir, META, SMALL).expect("create");
    let all = common::entries(1..=200, 1);
    for batch in all.chunks(4) {
        wal.save(None, batch).expect("save");
    }
    assert!(wal.segment_count() > 3);
    wal.save_snapshot_marker(Marker {
        index: 190,
        term: 1,
    })
    .expect("marker");
    fs.fail_sync_after(0);
    let released = wal.release_to(191);
    assert!(matches!(released, Err(WalError::Io { .. })), "{released:?}");
    // The removal's durability is unknown: later calls must not go on as if it were known.
    assert!(matches!(
        wal.save(None, &[entry(201, 1)]),
        Err(WalError::Poisoned)
    ));
    assert!(matches!(wal.release_to(191), Err(WalError::Poisoned)));
    drop(wal);
    fs.crash(CrashLoss::Random);
    let at = Marker {
        index: 190,
        term: 1,
    };
    let (_wal, rec) = Wal::open_in(Arc::new(fs.clone()), &dir, at, SMALL).expect("reopen");
    assert_eq!(rec.entries, common::entries(191..=200, 1));
}

#[test]
fn a_directory_sync_failure_while_rotating_poisons_the_wal() {
    let dir = PathBuf::from("/sim/wal");
    let all = common::entries(1..=100, 1);
    // Which save starts the second segment (same writes, same layout on any disk).
    let rotating = {
        let fs = SimFs::new(6);
        let mut wal = Wal::create_in(Arc::new(fs), &dir, META, SMALL).expect("create");
        (0..all.len())
            .find(|&i| {
                wal.save(None, &all[i..=i]).expect("save");
                wal.segment_count() > 1
            })
            .expect("rotates")
    };
    let fs = SimFs::new(6);
    let mut wal = Wal::create_in(Arc::new(fs.clone()), &dir, META, SMALL).expect("create");
    for e in &all[..rotating] {
        wal.save(None, std::slice::from_ref(e)).expect("save");
    }
    let before = fs.stats();
    // The rotating save's first sync is the directory sync after the rename.
    fs.fail_sync_after(0);
    let failed = wal.save(None, &all[rotating..=rotating]);
    assert!(matches!(failed, Err(WalError::Io { .. })), "{failed:?}");
    let after = fs.stats();
    assert_eq!(after.failed_syncs, before.failed_syncs + 1);
    assert_eq!(
        after.file_syncs, before.file_syncs,
        "no data sync was reached"
    );
    assert!(matches!(
        wal.save(None, &all[rotating..=rotating]),
        Err(WalError::Poisoned)
    ));
    drop(wal);
    fs.crash(CrashLoss::LoseAll);
    // The rename of the preallocated segment was never made durable: it vanished.
    let mut names = fs.list(&dir).expect("list");
    names.sort();
    assert_eq!(
        names,
        [
            "0000000000000000-0000000000000001.wal",
            "LOCK",
            "next.segment.tmp"
        ]
    );
    for loss in [CrashLoss::LoseAll, CrashLoss::Random] {
        fs.crash(loss);
        let (_wal, rec) =
            Wal::open_in(Arc::new(fs.clone()), &dir, Marker::ZERO, SMALL).expect("reopen");
        assert_eq!(rec.entries, all[..rotating], "{loss:?}");
    }
}

#[test]
fn a_rename_without_a_directory_sync_can_vanish() {
    let fs = SimFs::new(3);
    let dir = PathBuf::from("/sim/d");
    fs.create_dir_all(&dir).expect("dir");
    let tmp = dir.join("a.tmp");
    let file = fs
        .open(&tmp, wal::OpenMode::CreateTruncate)
        .expect("create");
    file.write_all_at(b"hello", 0).expect("write");
    file.sync_all().expect("sync");
    fs.sync_dir(&dir).expect("sync dir");
    fs.rename(&tmp, &dir.join("a")).expect("rename");
    fs.crash(CrashLoss::LoseAll);
    let names = fs.list(&dir).expect("list");
    assert_eq!(names, vec!["a.tmp".to_owned()], "the rename vanished");
    assert_eq!(fs.read(&tmp).expect("read"), b"hello");
    assert!(
        file.sync_all().is_err(),
        "handles from before a crash are stale"
    );
}

#[test]
fn crashes_after_synced_rotations_lose_nothing() {
    // Every rotation syncs the directory after its rename, so the segments survive any
    // crash; the preallocated next segment (never synced) may vanish or stay, and open
    // replaces it either way.
    for seed in 0..20 {
        let fs = SimFs::new(seed);
        let dir = PathBuf::from("/sim/wal");
        let mut wal = Wal::create_in(Arc::new(fs.clone()), &dir, META, SMALL).expect("create");
        let all = common::entries(1..=60, 1);
        for batch in all.chunks(3) {
            wal.save(None, batch).expect("save");
        }
        assert!(wal.segment_count() > 2);
        drop(wal);
        fs.crash(CrashLoss::Random);
        let (mut wal, rec) =
            Wal::open_in(Arc::new(fs.clone()), &dir, Marker::ZERO, SMALL).expect("reopen");
        assert_eq!(rec.entries, all);
        assert!(
            !fs.list(&dir)
                .expect("list")
                .iter()
                .any(|n| n.ends_with(".tmp") && n != "next.segment.tmp"),
            "leftover temporary files are removed"
        );
        for batch in common::entries(61..=120, 1).chunks(3) {
            wal.save(None, batch).expect("save after reopen");
        }
        drop(wal);
        fs.crash(CrashLoss::Random);
        let (_wal, rec) =
            Wal::open_in(Arc::new(fs.clone()), &dir, Marker::ZERO, SMALL).expect("reopen");
        assert_eq!(rec.entries.len(), 120);
    }
}

#[test]
fn a_snapshot_is_loaded_only_once_its_rename_and_marker_are_durable() {
    let fs = SimFs::new(4);
    let shared: Arc<dyn FileSystem> = Arc::new(fs.clone());
    let (wal_dir, snap_dir) = (PathBuf::from("/sim/wal"), PathBuf::from("/sim/snap"));
    let mut wal = Wal::create_in(Arc::clone(&shared), &wal_dir, META, SMALL).expect("create");
    wal.save(None, &common::entries(1..=20, 1)).expect("save");
    let snapshots = SnapshotStore::open_in(Arc::clone(&shared), &snap_dir, 2).expect("store");
    snapshots.save(1, 10, b"state at 10").expect("snapshot 10");
    wal.save_snapshot_marker(Marker { index: 10, term: 1 })
        .expect("marker 10");
    // A snapshot whose directory sync fails: the rename is not durable, and no marker
    // follows it (raftnode writes the marker only after the file is saved).
    fs.fail_sync_after(2); // header data sync, final sync_all, then the directory sync
    assert!(snapshots.save(1, 15, b"state at 15").is_err());
    drop(wal);
    fs.crash(CrashLoss::LoseAll);
    let snapshots = SnapshotStore::open_in(Arc::clone(&shared), &snap_dir, 2).expect("store");
    let listed = snapshots.list().expect("list");
    assert_eq!(
        listed,
        vec![Marker { index: 10, term: 1 }],
        "the rename vanished"
    );
    let markers = Wal::markers_in(&fs, &wal_dir).expect("markers");
    let snapshot = snapshots
        .load_newest(&markers)
        .expect("load")
        .expect("a snapshot");
    assert_eq!(snapshot.marker(), Marker { index: 10, term: 1 });
    assert_eq!(snapshot.data, b"state at 10");
    let (_wal, rec) = Wal::open_in(shared, &wal_dir, snapshot.marker(), SMALL).expect("open");
    assert_eq!(rec.entries, common::entries(11..=20, 1));
}
