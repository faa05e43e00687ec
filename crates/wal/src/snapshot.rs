//! The snapshot store: one checksummed file per snapshot, written atomically.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Corruption, IoContext, WalError};
use crate::filesystem::{OpenMode, SharedFs};
use crate::fs::{remove_temp_files, sync_dir};
use crate::stdfs::StdFs;
use crate::types::Marker;

/// Magic number opening every snapshot file.
const SNAPSHOT_MAGIC: [u8; 8] = *b"RAFTKVSN";
/// Snapshot file format version.
const SNAPSHOT_VERSION: u32 = 1;
/// Size of the snapshot file header.
const SNAPSHOT_HEADER_BYTES: usize = 40;
/// Extension of snapshot files.
const SNAPSHOT_EXT: &str = ".snap";

/// A snapshot file is written and flushed in slices of this size, so a large
/// one never floods the device queue that the WAL's fdatasync waits in.
pub const SNAPSHOT_FLUSH_BYTES: usize = 4 * 1024 * 1024;

/// A snapshot read back from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSnapshot {
    /// Term of the last entry the snapshot covers.
    pub term: u64,
    /// Index of the last entry the snapshot covers.
    pub index: u64,
    /// The state machine's opaque snapshot bytes.
    pub data: Vec<u8>,
}

impl StoredSnapshot {
    /// The WAL marker to open the log at after restoring this snapshot.
    pub fn marker(&self) -> Marker {
        Marker {
            index: self.index,
            term: self.term,
        }
    }
}

/// A directory of snapshot files named `<term as 16 hex>-<index as 16 hex>.snap`.
///
/// Each file holds a 40-byte header (magic, version, CRC, term, index, data length) and the
/// data. Only the newest `keep_count` snapshots are kept.
#[derive(Debug)]
pub struct SnapshotStore {
    /// Every file-system call goes through it.
    fs: SharedFs,
    dir: PathBuf,
    keep_count: usize,
}

fn file_name(term: u64, index: u64) -> String {
    format!("{term:016x}-{index:016x}{SNAPSHOT_EXT}")
}

fn parse_name(name: &str) -> Option<Marker> {
    let stem = name.strip_suffix(SNAPSHOT_EXT)?;
    let (term, index) = stem.split_once('-')?;
    if term.len() != 16 || index.len() != 16 {
        return None;
    }
    Some(Marker {
        term: u64::from_str_radix(term, 16).ok()?,
        index: u64::from_str_radix(index, 16).ok()?,
    })
}

fn snapshot_crc(header: &[u8], data: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[16..SNAPSHOT_HEADER_BYTES]);
    hasher.update(data);
    hasher.finalize()
}

fn encode_header(term: u64, index: u64, data: &[u8]) -> [u8; SNAPSHOT_HEADER_BYTES] {
    let mut header = [0u8; SNAPSHOT_HEADER_BYTES];
    header[0..8].copy_from_slice(&SNAPSHOT_MAGIC);
    header[8..12].copy_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    header[16..24].copy_from_slice(&term.to_le_bytes());
    header[24..32].copy_from_slice(&index.to_le_bytes());
    header[32..40].copy_from_slice(&(data.len() as u64).to_le_bytes());
    let crc = snapshot_crc(&header, data);
    header[12..16].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Validates a snapshot file's bytes against the (term, index) of its name.
fn decode(path: &Path, expected: Marker, mut bytes: Vec<u8>) -> Result<StoredSnapshot, WalError> {
    let bad = |offset: u64, reason: Corruption| WalError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason,
    };
    if bytes.len() < SNAPSHOT_HEADER_BYTES {
        return Err(bad(
            0,
            Corruption::BadHeader("snapshot file shorter than its header"),
        ));
    }
    let field = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    if bytes[0..8] != SNAPSHOT_MAGIC || bytes[8..12] != SNAPSHOT_VERSION.to_le_bytes() {
        return Err(bad(
            0,
            Corruption::BadHeader("wrong snapshot magic number or version"),
        ));
    }
    let (term, index, data_bytes) = (field(16), field(24), field(32));
    if data_bytes != (bytes.len() - SNAPSHOT_HEADER_BYTES) as u64 {
        return Err(bad(
            32,
            Corruption::BadHeader("data length disagrees with the file size"),
        ));
    }
    let stored = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes"));
    if snapshot_crc(
        &bytes[..SNAPSHOT_HEADER_BYTES],
        &bytes[SNAPSHOT_HEADER_BYTES..],
    ) != stored
    {
        return Err(bad(0, Corruption::Checksum));
    }
    if (Marker { term, index }) != expected {
        return Err(bad(
            16,
            Corruption::BadRecord("term and index disagree with the file name"),
        ));
    }
    let data = bytes.split_off(SNAPSHOT_HEADER_BYTES);
    Ok(StoredSnapshot { term, index, data })
}

impl SnapshotStore {
    /// Opens (creating if needed) the store in `dir`, removing leftover temporary files.
    /// `keep_count` (at least 1) is how many snapshots `save` keeps.
    pub fn open(dir: &Path, keep_count: usize) -> Result<SnapshotStore, WalError> {
        SnapshotStore::open_in(Arc::new(StdFs), dir, keep_count)
    }

    /// [`SnapshotStore::open`] on the file system `fs`.
    pub fn open_in(fs: SharedFs, dir: &Path, keep_count: usize) -> Result<SnapshotStore, WalError> {
        if keep_count == 0 {
            return Err(WalError::InvalidConfig("keep_count must be at least 1"));
        }
        fs.create_dir_all(dir).at(dir)?;
        if remove_temp_files(&*fs, dir)? > 0 {
            sync_dir(&*fs, dir)?;
        }
        Ok(SnapshotStore {
            fs,
            dir: dir.to_path_buf(),
            keep_count,
        })
    }

    /// Writes a snapshot atomically: temporary file (flushed every
    /// [`SNAPSHOT_FLUSH_BYTES`]), fsync, rename, directory fsync.
    ///
    /// Nothing is deleted here: until the WAL holds this snapshot's marker,
    /// an older snapshot may be the only one a restart can use. Call
    /// [`SnapshotStore::purge`] once the marker is written.
    pub fn save(&self, term: u64, index: u64, data: &[u8]) -> Result<(), WalError> {
        let name = file_name(term, index);
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!("{name}.tmp"));
        let file = self.fs.open(&tmp, OpenMode::CreateTruncate).at(&tmp)?;
        let header = encode_header(term, index, data);
        file.write_all_at(&header, 0).at(&tmp)?;
        let mut offset = header.len() as u64;
        // Flushed in slices: one burst of a large snapshot would queue in
        // front of the WAL's fdatasync on the same device and stall writes.
        for chunk in data.chunks(SNAPSHOT_FLUSH_BYTES) {
            file.write_all_at(chunk, offset).at(&tmp)?;
            offset += chunk.len() as u64;
            file.sync_data().at(&tmp)?;
        }
        file.sync_all().at(&tmp)?;
        drop(file);
        self.fs.rename(&tmp, &path).at(&path)?;
        sync_dir(&*self.fs, &self.dir)?;
        tracing::info!(
            path = %path.display(),
            term,
            index,
            data_bytes = data.len(),
            "saved snapshot"
        );
        Ok(())
    }

    /// Every snapshot file's (term, index), newest (highest index, then term) first.
    pub fn list(&self) -> Result<Vec<Marker>, WalError> {
        let mut markers = Vec::new();
        for name in self.fs.list(&self.dir).at(&self.dir)? {
            if let Some(marker) = parse_name(&name) {
                markers.push(marker);
            }
        }
        markers.sort_by_key(|m| std::cmp::Reverse((m.index, m.term)));
        Ok(markers)
    }

    /// Reads and validates the snapshot of `marker`.
    pub fn load(&self, marker: Marker) -> Result<StoredSnapshot, WalError> {
        let path = self.dir.join(file_name(marker.term, marker.index));
        let bytes = self.fs.read(&path).at(&path)?;
        decode(&path, marker, bytes)
    }

    /// The newest valid snapshot whose (term, index) is one of `markers` (those recorded in
    /// the WAL). A corrupt snapshot is logged and skipped in favour of an older one.
    pub fn load_newest(&self, markers: &[Marker]) -> Result<Option<StoredSnapshot>, WalError> {
        for marker in self.list()? {
            if !markers.contains(&marker) {
                continue;
            }
            match self.load(marker) {
                Ok(snapshot) => return Ok(Some(snapshot)),
                Err(e @ WalError::Corrupt { .. }) => {
                    tracing::warn!(error = %e, "skipping a corrupt snapshot");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Deletes old snapshot files once `latest_marker` (a marker the WAL
    /// holds) is durable: keeps that snapshot and the `keep_count - 1`
    /// newest below it, and never touches a file above it (its marker may
    /// not be written yet).
    pub fn purge(&self, latest_marker: Marker) -> Result<(), WalError> {
        let covered: Vec<Marker> = self
            .list()?
            .into_iter()
            .filter(|m| (m.index, m.term) <= (latest_marker.index, latest_marker.term))
            .collect();
        let stale = covered.get(self.keep_count..).unwrap_or(&[]);
        for marker in stale {
            let path = self.dir.join(file_name(marker.term, marker.index));
            self.fs.remove_file(&path).at(&path)?;
            tracing::debug!(path = %path.display(), "purged snapshot");
        }
        if !stale.is_empty() {
            sync_dir(&*self.fs, &self.dir)?;
        }
        Ok(())
    }
}
