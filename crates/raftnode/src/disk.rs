//! `Disk`: the node's durable state (WAL + snapshot store) in Raft's terms.
//!
//! This is the only module that turns raft-proto types into the WAL's opaque
//! records and back. Ordering rules it enforces (etcd #9263, #12691):
//! a snapshot file is written and fsynced *before* its WAL marker, and on
//! start the WAL is opened at the newest snapshot that has a marker.

use std::collections::BTreeMap;
use std::sync::Arc;

use prost::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use tracing::{info, warn};
use wal::{Marker, Metadata, SharedFs, SnapshotStore, Wal, WalConfig};

use crate::codec::{
    envelope_attributes, split_envelope, AttributesRecord, MemberRecord, SnapshotEnvelope,
    ENVELOPE_VERSION,
};
use crate::storage::LogStore;
use crate::{NodeConfig, NodeError, StartKind, StateMachine};

/// The WAL and the snapshot store of one node.
pub(crate) struct Disk {
    wal: Wal,
    /// Shared with the background snapshot writer.
    snaps: Arc<SnapshotStore>,
    /// Index of the newest snapshot on disk (0 if none).
    snapshot_index: u64,
}

/// What start-up recovered.
pub(crate) struct Recovered {
    pub disk: Disk,
    pub store: LogStore,
    pub kind: StartKind,
    /// Highest index the state machine holds (the snapshot's).
    pub applied: u64,
    /// Peer URLs known from the snapshot (or the initial configuration).
    pub members: BTreeMap<u64, String>,
    /// What members published about themselves (from the snapshot).
    pub attributes: Vec<AttributesRecord>,
}

impl Disk {
    /// Opens the node's data on `fs` (production: `wal::StdFs`), creating it
    /// on first start. Restores the state machine from the newest snapshot.
    pub(crate) fn open(
        config: &NodeConfig,
        fs: SharedFs,
        sm: &mut dyn StateMachine,
    ) -> Result<Recovered, NodeError> {
        let wal_config = WalConfig {
            segment_bytes: config.wal_segment_bytes,
        };
        let snaps = Arc::new(SnapshotStore::open_in(
            Arc::clone(&fs),
            &config.snap_dir,
            config.snapshot_keep_count,
        )?);
        if Wal::exists_in(&*fs, &config.wal_dir) {
            return Self::restart(config, fs, wal_config, snaps, sm);
        }
        let metadata = Metadata {
            node_id: config.id,
            cluster_id: config.cluster_id,
        };
        let mut wal = Wal::create_in(fs, &config.wal_dir, metadata, wal_config)?;
        observe_syncs(&mut wal, config);
        if config.join {
            info!(
                node = config.id,
                "fresh data directory: joining an existing cluster"
            );
            return Ok(Recovered {
                disk: Disk {
                    wal,
                    snaps,
                    snapshot_index: 0,
                },
                store: LogStore::default(),
                kind: StartKind::Join,
                applied: 0,
                members: config.initial_members.iter().cloned().collect(),
                attributes: Vec::new(),
            });
        }
        Self::bootstrap(config, wal, snaps, sm)
    }

    /// First start of an initial member: the bootstrap snapshot (file, then
    /// WAL marker) and the hard state it implies.
    fn bootstrap(
        config: &NodeConfig,
        wal: Wal,
        snaps: Arc<SnapshotStore>,
        sm: &mut dyn StateMachine,
    ) -> Result<Recovered, NodeError> {
        let mut disk = Disk {
            wal,
            snaps,
            snapshot_index: 0,
        };
        let members: BTreeMap<u64, String> = config.initial_members.iter().cloned().collect();
        let mut store = LogStore::default();
        let snapshot = bootstrap_snapshot(&members, (sm.snapshot())());
        let attributes = Vec::new();
        disk.save_snapshot(&snapshot)?;
        store.install_snapshot(snapshot);
        disk.persist(&[], Some(store.hard_state()))?;
        Ok(Recovered {
            disk,
            store,
            kind: StartKind::Fresh,
            applied: 1,
            members,
            attributes,
        })
    }

    fn restart(
        config: &NodeConfig,
        fs: SharedFs,
        wal_config: WalConfig,
        snaps: Arc<SnapshotStore>,
        sm: &mut dyn StateMachine,
    ) -> Result<Recovered, NodeError> {
        let markers = Wal::markers_in(&*fs, &config.wal_dir)?;
        let stored = snaps.load_newest(&markers)?;
        let mut store = LogStore::default();
        let mut members: BTreeMap<u64, String> = config.initial_members.iter().cloned().collect();
        let mut attributes = Vec::new();
        let mut marker = Marker { index: 0, term: 0 };
        if let Some(stored) = stored {
            let snapshot = Snapshot::decode(stored.data.as_slice()).map_err(|e| {
                NodeError::Corrupt(format!("snapshot {}/{}: {e}", stored.term, stored.index))
            })?;
            marker = Marker {
                index: stored.index,
                term: stored.term,
            };
            members = restore_state_machine(sm, &snapshot)?;
            attributes = envelope_attributes(&snapshot.data);
            store.install_snapshot(snapshot);
        }
        let (mut wal, recovered) = Wal::open_in(fs, &config.wal_dir, marker, wal_config)?;
        observe_syncs(&mut wal, config);
        check_metadata(config, &recovered.metadata)?;
        let never_started =
            marker.index == 0 && recovered.entries.is_empty() && recovered.hard_state.is_none();
        if never_started && !config.join {
            // Killed between creating the WAL and writing the bootstrap
            // snapshot's marker: nothing was ever voted or appended, so
            // bootstrapping again is safe (and identical).
            warn!(
                node = config.id,
                "WAL has no bootstrap marker; bootstrapping again"
            );
            return Self::bootstrap(config, wal, snaps, sm);
        }
        let entries = decode_entries(&recovered.entries)?;
        store.append(entries);
        if let Some(bytes) = recovered.hard_state {
            let mut hard_state = HardState::decode(bytes.as_slice())
                .map_err(|e| NodeError::Corrupt(format!("hard state in the WAL: {e}")))?;
            // A snapshot's contents are committed even if the commit index
            // recorded next to it is older (apply may run ahead of the
            // persisted commit index).
            hard_state.commit = hard_state.commit.max(marker.index);
            if marker.term > hard_state.term {
                // The snapshot's hard state was not written (stopped between the
                // marker and it). The recorded vote belongs to the older term;
                // in the snapshot's term this node cast none (a vote is
                // persisted before it is sent), so it must not carry over.
                hard_state.term = marker.term;
                hard_state.vote = raft::INVALID_ID;
            }
            if hard_state.commit > store.last() {
                return Err(NodeError::Corrupt(format!(
                    "hard state commit {} is beyond the last log index {}",
                    hard_state.commit,
                    store.last()
                )));
            }
            store.set_hard_state(hard_state);
        }
        let disk = Disk {
            wal,
            snaps,
            snapshot_index: marker.index,
        };
        info!(
            node = config.id,
            snapshot_index = marker.index,
            first_index = store.first(),
            last_index = store.last(),
            commit = store.hard_state().commit,
            "restarting from the data directory"
        );
        Ok(Recovered {
            disk,
            store,
            kind: StartKind::Restart,
            applied: marker.index,
            members,
            attributes,
        })
    }

    /// Index of the newest snapshot on disk.
    pub(crate) fn snapshot_index(&self) -> u64 {
        self.snapshot_index
    }

    /// Persists new entries and the hard state: one WAL write, at most one
    /// fdatasync, nothing when both are empty.
    pub(crate) fn persist(
        &mut self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<(), NodeError> {
        if entries.is_empty() && hard_state.is_none() {
            return Ok(());
        }
        let hard_state_bytes = hard_state.map(|hs| hs.encode_to_vec());
        // Each entry is encoded straight into the WAL's write buffer, its
        // size computed once.
        self.wal.save_with(
            hard_state_bytes.as_deref(),
            entries,
            |entry| wal::EntryHead {
                index: entry.index,
                term: entry.term,
                payload_bytes: entry.encoded_len(),
            },
            |entry, buf| entry.encode_raw(buf),
        )?;
        Ok(())
    }

    /// Writes a snapshot from the leader (or the bootstrap snapshot) to a
    /// file (fsynced) and then its WAL marker, as a *received* marker: the
    /// snapshot replaces the log, as raft-rs replaces its in-memory log.
    ///
    /// raft-rs installs a snapshot (S, T) only when the local log does not
    /// hold index S with term T, so every local entry above S, and the one at
    /// S, is a divergent or stale tail: the WAL drops them, now and on
    /// replay, and the log ends at S with term T. The next entries follow it.
    pub(crate) fn save_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), NodeError> {
        let meta = snapshot.get_metadata();
        assert!(
            meta.index >= self.snapshot_index,
            "snapshot index went backwards"
        );
        self.snaps
            .save(meta.term, meta.index, &snapshot.encode_to_vec())?;
        let marker = Marker {
            index: meta.index,
            term: meta.term,
        };
        self.wal.save_received_snapshot_marker(marker)?;
        self.marker_saved(marker)
    }

    /// The snapshot store, for the background snapshot writer.
    pub(crate) fn snapshot_store(&self) -> Arc<SnapshotStore> {
        Arc::clone(&self.snaps)
    }

    /// Records the WAL marker of a snapshot taken locally whose file is
    /// already saved and fsynced (by the background writer). The entries
    /// above it stay: they are this node's log after the snapshot.
    pub(crate) fn save_marker(&mut self, index: u64, term: u64) -> Result<(), NodeError> {
        assert!(
            index >= self.snapshot_index,
            "snapshot marker went backwards"
        );
        let marker = Marker { index, term };
        self.wal.save_snapshot_marker(marker)?;
        self.marker_saved(marker)
    }

    fn marker_saved(&mut self, marker: Marker) -> Result<(), NodeError> {
        self.snapshot_index = marker.index;
        // Old snapshot files go only now that the new marker is durable.
        self.snaps.purge(marker)?;
        Ok(())
    }

    /// Releases WAL segments whose entries are all below `index`.
    pub(crate) fn release_to(&mut self, index: u64) -> Result<(), NodeError> {
        self.wal.release_to(index)?;
        Ok(())
    }
}

/// The production file system.
/// Builds the data directory of an initial member of a *new* cluster whose
/// replicated state starts as `state` (a backup): the same first start as a
/// fresh member's, with `state` in the bootstrap snapshot instead of an empty
/// state machine. Every member restored from the same bytes with the same
/// members gets an identical log at index 1, as fresh members do.
pub(crate) fn bootstrap_with_state(config: &NodeConfig, state: Vec<u8>) -> Result<(), NodeError> {
    if config.join {
        return Err(NodeError::Config(
            "a restored member starts a new cluster; it cannot join one".into(),
        ));
    }
    if !config
        .initial_members
        .iter()
        .any(|(id, _)| *id == config.id)
    {
        return Err(NodeError::Config(format!(
            "node {} is not among the initial members",
            config.id
        )));
    }
    let fs = std_fs();
    if Wal::exists_in(&*fs, &config.wal_dir) {
        return Err(NodeError::Config(format!(
            "{} already holds a WAL; restore only into a new data directory",
            config.wal_dir.display()
        )));
    }
    let mut fixed = FixedState(Some(state));
    Disk::open(config, fs, &mut fixed)?;
    Ok(())
}

/// A state machine that only hands out one given state (see
/// [`bootstrap_with_state`]).
struct FixedState(Option<Vec<u8>>);

impl StateMachine for FixedState {
    fn apply(&mut self, _index: u64, _data: &[u8]) {}
    fn snapshot(&mut self) -> crate::SnapshotJob {
        let state = self.0.take().unwrap_or_default();
        Box::new(move || state)
    }
    fn restore(&mut self, _index: u64, _data: &[u8]) -> Result<(), crate::RestoreError> {
        Ok(())
    }
}

pub(crate) fn std_fs() -> SharedFs {
    Arc::new(wal::StdFs)
}

/// The snapshot every initial member writes at first start: index 1, term 1,
/// the initial voters. It is identical on every member, so their logs agree
/// at index 1, and a node that joins later gets the configuration from it.
fn bootstrap_snapshot(members: &BTreeMap<u64, String>, state: Vec<u8>) -> Snapshot {
    let mut snapshot = Snapshot {
        data: envelope(members, Vec::new(), state),
        ..Default::default()
    };
    let meta = snapshot.mut_metadata();
    meta.index = 1;
    meta.term = 1;
    meta.set_conf_state(ConfState {
        voters: members.keys().copied().collect(),
        ..Default::default()
    });
    snapshot
}

/// Encodes the members, their attributes and the state machine's bytes as a
/// snapshot's data.
pub(crate) fn envelope(
    members: &BTreeMap<u64, String>,
    attributes: Vec<AttributesRecord>,
    state: Vec<u8>,
) -> Vec<u8> {
    SnapshotEnvelope {
        version: ENVELOPE_VERSION,
        members: members
            .iter()
            .map(|(id, url)| MemberRecord {
                id: *id,
                peer_url: url.clone(),
            })
            .collect(),
        state,
        attributes,
    }
    .encode_to_bytes()
}

/// Restores the state machine from a Raft snapshot and returns its members.
/// The state bytes are passed on borrowed from the snapshot, not copied.
pub(crate) fn restore_state_machine(
    sm: &mut dyn StateMachine,
    snapshot: &Snapshot,
) -> Result<BTreeMap<u64, String>, NodeError> {
    let index = snapshot.get_metadata().index;
    let (members, state) = split_envelope(&snapshot.data)
        .map_err(|e| NodeError::Corrupt(format!("snapshot at index {index}: {e}")))?;
    sm.restore(index, state)
        .map_err(|e| NodeError::Corrupt(e.to_string()))?;
    Ok(members.into_iter().map(|m| (m.id, m.peer_url)).collect())
}

fn decode_entries(records: &[wal::Entry]) -> Result<Vec<Entry>, NodeError> {
    records
        .iter()
        .map(|record| {
            let entry = Entry::decode(record.payload.as_slice()).map_err(|e| {
                NodeError::Corrupt(format!("WAL entry {} does not decode: {e}", record.index))
            })?;
            if entry.index != record.index || entry.term != record.term {
                return Err(NodeError::Corrupt(format!(
                    "WAL entry {} (term {}) holds raft entry {} (term {})",
                    record.index, record.term, entry.index, entry.term
                )));
            }
            Ok(entry)
        })
        .collect()
}

fn check_metadata(config: &NodeConfig, metadata: &Metadata) -> Result<(), NodeError> {
    if metadata.node_id != config.id {
        return Err(NodeError::Config(format!(
            "{} belongs to node {}, not node {}",
            config.wal_dir.display(),
            metadata.node_id,
            config.id
        )));
    }
    if metadata.cluster_id != config.cluster_id {
        warn!(
            stored = metadata.cluster_id,
            configured = config.cluster_id,
            "cluster id differs from the one in the WAL"
        );
        return Err(NodeError::Config(format!(
            "{} belongs to cluster {:#x}, not {:#x}",
            config.wal_dir.display(),
            metadata.cluster_id,
            config.cluster_id
        )));
    }
    Ok(())
}

/// Reports the WAL's fsync durations to the node's observer, if it has one.
fn observe_syncs(wal: &mut Wal, config: &NodeConfig) {
    if let Some(observer) = &config.observer {
        wal.observe_syncs(crate::observer::wal_sync_observer(observer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{RestoreError, SnapshotJob};

    /// A state machine with no state.
    struct Empty;

    impl StateMachine for Empty {
        fn apply(&mut self, _index: u64, _data: &[u8]) {}

        fn snapshot(&mut self) -> SnapshotJob {
            Box::new(Vec::new)
        }

        fn restore(&mut self, _index: u64, _data: &[u8]) -> Result<(), RestoreError> {
            Ok(())
        }
    }

    /// A snapshot from a leader of a later term is written (file, then WAL marker) but the
    /// hard state of the same Ready is not (the process stopped in between). The restart
    /// raises the term to the snapshot's; the vote recorded belongs to the older term and must
    /// not carry over to the new one.
    #[test]
    fn a_restart_that_raises_the_term_to_a_markers_clears_the_old_vote() {
        let dir = tempfile::tempdir().expect("tempdir");
        let members = vec![(1, "http://127.0.0.1:1".to_string())];
        let config = NodeConfig::new(1, members, dir.path().to_path_buf());
        let mut disk = Disk::open(&config, std_fs(), &mut Empty)
            .expect("bootstrap")
            .disk;
        let voted = HardState {
            term: 2,
            vote: 3,
            commit: 1,
        };
        disk.persist(&[], Some(&voted)).expect("persist");
        let members: BTreeMap<u64, String> = config.initial_members.iter().cloned().collect();
        let mut snapshot = bootstrap_snapshot(&members, Vec::new());
        snapshot.mut_metadata().index = 5;
        snapshot.mut_metadata().term = 4;
        disk.save_snapshot(&snapshot).expect("snapshot");
        drop(disk);

        let recovered = Disk::open(&config, std_fs(), &mut Empty).expect("restart");
        let hard_state = recovered.store.hard_state();
        assert_eq!((hard_state.term, hard_state.commit), (4, 5));
        assert_eq!(
            hard_state.vote, 0,
            "a vote of term 2 carried over to term 4"
        );

        // When the recorded term is not below the marker's, the vote stays.
        let mut disk = recovered.disk;
        let voted = HardState {
            term: 4,
            vote: 1,
            commit: 5,
        };
        disk.persist(&[], Some(&voted)).expect("persist");
        drop(disk);
        let recovered = Disk::open(&config, std_fs(), &mut Empty).expect("restart");
        assert_eq!(recovered.store.hard_state(), &voted);
    }

    /// Records what a restart restores.
    #[derive(Default)]
    struct Recording(Option<(u64, Vec<u8>)>);

    impl StateMachine for Recording {
        fn apply(&mut self, _index: u64, _data: &[u8]) {}

        fn snapshot(&mut self) -> SnapshotJob {
            Box::new(Vec::new)
        }

        fn restore(&mut self, index: u64, data: &[u8]) -> Result<(), RestoreError> {
            self.0 = Some((index, data.to_vec()));
            Ok(())
        }
    }

    /// A data directory built from a backup restarts with the backup as the
    /// state at index 1 and the new members; a second build into it is refused
    /// and leaves it as it was.
    #[test]
    fn a_member_built_from_a_backup_restarts_with_that_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        let members = vec![
            (1, "http://127.0.0.1:1".to_string()),
            (2, "http://127.0.0.1:2".to_string()),
        ];
        let config = NodeConfig::new(2, members.clone(), dir.path().to_path_buf());
        bootstrap_with_state(&config, b"backup".to_vec()).expect("restore");
        let refused = bootstrap_with_state(&config, b"other".to_vec());
        assert!(matches!(refused, Err(NodeError::Config(_))), "{refused:?}");

        let mut recording = Recording::default();
        let recovered = Disk::open(&config, std_fs(), &mut recording).expect("restart");
        assert!(matches!(recovered.kind, StartKind::Restart));
        assert_eq!(recording.0, Some((1, b"backup".to_vec())));
        assert_eq!(recovered.applied, 1);
        assert_eq!(recovered.members, members.into_iter().collect());
        assert_eq!(recovered.store.hard_state().commit, 1);

        let mut outsider = NodeConfig::new(3, Vec::new(), dir.path().join("other"));
        outsider.initial_members = vec![(1, "http://127.0.0.1:1".to_string())];
        assert!(bootstrap_with_state(&outsider, Vec::new()).is_err());
        outsider.id = 1;
        outsider.join = true;
        assert!(bootstrap_with_state(&outsider, Vec::new()).is_err());
    }
}
