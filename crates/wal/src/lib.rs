//! A CRC-framed, segmented write-ahead log and snapshot store: raftkv's durability layer.
//!
//! # What this crate owns
//! - [`Wal`]: an indexed log of opaque entries plus the latest opaque hard state, snapshot
//!   markers and the owner's [`Metadata`], stored as preallocated segment files in one
//!   directory that is locked (flock on `LOCK`) while open.
//! - [`SnapshotStore`]: one checksummed file per snapshot in its own directory, written
//!   atomically, newest valid one loaded, old ones purged.
//! - [`Wal::repair`]: the operator's explicit cut of a WAL that `open` refuses, reporting
//!   every file, offset, byte count and identifiable record it drops ([`RepairReport`]).
//!
//! - The disk seam: every file-system call goes through the [`FileSystem`] trait
//!   (**architecture invariant**, enforced by `tests/t90_architecture.rs`). [`StdFs`] is the
//!   production implementation (std::fs, a read-only mmap for scans, flock, fallocate) that
//!   [`Wal::open`], [`Wal::create`], [`SnapshotStore::open`] and the other constructors
//!   without a file-system argument use; [`Wal::open_in`], [`Wal::create_in`],
//!   [`Wal::markers_in`], [`Wal::repair_in`], [`Wal::exists_in`] and
//!   [`SnapshotStore::open_in`] take any [`SharedFs`]. [`sim::SimFs`] is a seeded in-memory
//!   disk whose crashes lose or tear (by 512-byte sector) unsynced writes, lose unsynced
//!   directory entries (creations, renames, removals), and whose syncs can be made to fail:
//!   the real recovery code runs on it (`tests/t70_simfs.rs`, and the crash matrix runs on
//!   both file systems).
//! - Planted bugs ([`plant`], feature `planted-bugs`): deliberate mistakes (no fsync, a
//!   corrupt last record taken as torn, an unsynced received-snapshot marker) a simulation
//!   switches on for its own thread to prove that it catches them. Off, and inert, otherwise.
//!
//! # What it does not own
//! It knows nothing of Raft or protobuf (**architecture invariant**: only raftnode imports
//! `raft`). Payloads and hard states are bytes; raftnode encodes raft-proto's `Entry` and
//! `HardState` into them. It decides nothing about when to snapshot or what to release.
//!
//! # Invariants
//! - Every record read back passed its CRC, and CRCs are chained across records and segments:
//!   a stale, foreign or reordered record never passes as current.
//! - A torn write at the tail of the newest segment is cut off on open, with a warning. A
//!   record is torn only if nothing after it validates *and* a 512-byte-aligned sector
//!   overlapping it is all zero (what a write that never fully reached a preallocated segment
//!   leaves). Any other damage (a flipped bit or garbage even in the last record, a bad
//!   checksum before the tail, a missing segment, a segment of another WAL or node) is refused
//!   with [`WalError::Corrupt`] naming the file and byte offset, and nothing is wiped: the
//!   record was fsynced and may have been acknowledged. Committed data is never silently
//!   skipped. The checks are bounded ([`TAIL_CHECK_BYTES_MAX`]).
//! - `save` is one `write` and one `fdatasync` (none when there is nothing to write); when
//!   it returns, the batch survives a crash.
//! - A failed write, sync, rename or removal poisons the handle ([`WalError::Poisoned`]):
//!   what reached the disk is then unknown, so nothing after it is claimed durable.
//! - Every segment starts with the metadata, the latest marker and the latest hard state, so
//!   releasing old segments never loses them.
//! - Replay reproduces log conflicts exactly: an entry at an index at or below the last one
//!   replaces the old tail from that index, and a snapshot received from a leader
//!   ([`Wal::save_received_snapshot_marker`]) replaces the log up to its index (entries above
//!   it are dropped). A locally taken snapshot's marker ([`Wal::save_snapshot_marker`]) keeps
//!   them.
//!
//! The on-disk format is described byte by byte in the workspace ARCHITECTURE.md ("On-disk format").
//!
//! # Example
//! ```
//! use wal::{Entry, Marker, Metadata, SnapshotStore, Wal, WalConfig};
//!
//! # fn main() -> Result<(), wal::WalError> {
//! let data = tempfile::tempdir().expect("temp dir");
//! let (wal_dir, snap_dir) = (data.path().join("wal"), data.path().join("snap"));
//! let metadata = Metadata { node_id: 1, cluster_id: 7 };
//!
//! let mut wal = Wal::create(&wal_dir, metadata, WalConfig::default())?;
//! let entries: Vec<Entry> = (1..=3)
//!     .map(|index| Entry { index, term: 1, payload: format!("put k{index}").into_bytes() })
//!     .collect();
//! wal.save(Some(b"hard state 1"), &entries)?;
//! // A conflicting entry at index 3 replaces the old one.
//! wal.save(None, &[Entry { index: 3, term: 2, payload: b"put k3 again".to_vec() }])?;
//! assert_eq!(wal.fsync_count(), 2);
//!
//! // Snapshot at index 2: file first, then the WAL marker (the order raftnode uses).
//! let snapshots = SnapshotStore::open(&snap_dir, 2)?;
//! snapshots.save(1, 2, b"state machine at index 2")?;
//! wal.save_snapshot_marker(Marker { index: 2, term: 1 })?;
//! // Old snapshot files go only once the new marker is durable.
//! snapshots.purge(Marker { index: 2, term: 1 })?;
//! wal.close()?;
//!
//! // Restart: newest snapshot that has a marker, then the WAL at that marker.
//! let markers = Wal::markers(&wal_dir)?;
//! let snapshot = snapshots.load_newest(&markers)?.expect("a snapshot");
//! let (_wal, recovered) = Wal::open(&wal_dir, snapshot.marker(), WalConfig::default())?;
//! assert_eq!(recovered.metadata, metadata);
//! assert_eq!(recovered.hard_state.as_deref(), Some(&b"hard state 1"[..]));
//! assert_eq!(recovered.entries.len(), 1);
//! assert_eq!((recovered.entries[0].index, recovered.entries[0].term), (3, 2));
//! # Ok(())
//! # }
//! ```

mod error;
mod filesystem;
mod fs;
pub mod plant;
mod record;
mod repair;
mod replay;
mod scan;
pub mod sim;
mod snapshot;
mod stdfs;
mod types;
mod wal;

pub use crate::error::{Corruption, WalError};
pub use crate::filesystem::{FileBytes, FileHandle, FileSystem, LockGuard, OpenMode, SharedFs};
pub use crate::repair::{Damage, DroppedKind, DroppedRange, DroppedRecord, RepairReport};
pub use crate::scan::TAIL_CHECK_BYTES_MAX;
pub use crate::snapshot::{SnapshotStore, StoredSnapshot, SNAPSHOT_FLUSH_BYTES};
pub use crate::stdfs::StdFs;
pub use crate::types::{
    Entry, EntryHead, Marker, Metadata, Recovered, WalConfig, DEFAULT_SEGMENT_BYTES,
    MAX_SEGMENT_BYTES, MIN_SEGMENT_BYTES,
};
pub use crate::wal::{SyncObserver, Wal};
