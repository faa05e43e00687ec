//! File-system helpers over [`FileSystem`]: segment names, directory listing, locking,
//! preallocation, whole-file reads.

use std::path::{Path, PathBuf};

use crate::error::{IoContext, WalError};
use crate::filesystem::{FileBytes, FileHandle, FileSystem, LockGuard, OpenMode};

/// Name of the lock file inside the WAL directory.
pub(crate) const LOCK_FILE: &str = "LOCK";
/// Name of the preallocated, not yet used, next segment.
pub(crate) const NEXT_SEGMENT_FILE: &str = "next.segment.tmp";
/// Extension of segment files.
const SEGMENT_EXT: &str = ".wal";

/// A segment file name: `<seq as 16 hex digits>-<first index as 16 hex digits>.wal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentName {
    /// Position in the sequence, starting at 0, without gaps.
    pub seq: u64,
    /// `last_index + 1` when the segment was started.
    pub first_index: u64,
}

impl SegmentName {
    pub(crate) fn file_name(&self) -> String {
        format!("{:016x}-{:016x}{SEGMENT_EXT}", self.seq, self.first_index)
    }

    pub(crate) fn path(&self, dir: &Path) -> PathBuf {
        dir.join(self.file_name())
    }

    /// Parses a file name; `None` for anything that is not a segment name.
    pub(crate) fn parse(name: &str) -> Option<SegmentName> {
        let stem = name.strip_suffix(SEGMENT_EXT)?;
        let (seq, first) = stem.split_once('-')?;
        if seq.len() != 16 || first.len() != 16 {
            return None;
        }
        Some(SegmentName {
            seq: u64::from_str_radix(seq, 16).ok()?,
            first_index: u64::from_str_radix(first, 16).ok()?,
        })
    }
}

/// Lists the segments in `dir`, sorted by sequence number (unchecked for gaps).
pub(crate) fn list_segments(fs: &dyn FileSystem, dir: &Path) -> Result<Vec<SegmentName>, WalError> {
    let entries = match fs.list(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).at(dir),
    };
    let mut names: Vec<SegmentName> = entries
        .iter()
        .filter_map(|name| SegmentName::parse(name))
        .collect();
    names.sort_by_key(|n| n.seq);
    Ok(names)
}

/// Makes a directory's entries (creations, renames, removals) durable.
pub(crate) fn sync_dir(fs: &dyn FileSystem, dir: &Path) -> Result<(), WalError> {
    fs.sync_dir(dir).at(dir)
}

/// Takes the exclusive lock on `dir/LOCK` (created if missing); the lock lives as long as the
/// returned guard.
pub(crate) fn lock_dir(fs: &dyn FileSystem, dir: &Path) -> Result<Box<dyn LockGuard>, WalError> {
    let path = dir.join(LOCK_FILE);
    match fs.try_lock(&path).at(&path)? {
        Some(guard) => Ok(guard),
        None => Err(WalError::Locked { path }),
    }
}

/// Creates (or truncates) `path` and reserves `bytes` for it.
pub(crate) fn create_preallocated(
    fs: &dyn FileSystem,
    path: &Path,
    bytes: u64,
) -> Result<Box<dyn FileHandle>, WalError> {
    let file = fs.open(path, OpenMode::CreateTruncate).at(path)?;
    file.allocate(bytes).at(path)?;
    Ok(file)
}

/// Reads `path` whole for a scan (mapped by the production file system).
pub(crate) fn map_file(fs: &dyn FileSystem, path: &Path) -> Result<FileBytes, WalError> {
    fs.read_whole(path).at(path)
}

/// Removes leftover temporary files (names ending in `.tmp`) from `dir`.
pub(crate) fn remove_temp_files(fs: &dyn FileSystem, dir: &Path) -> Result<usize, WalError> {
    let mut removed = 0;
    for name in fs.list(dir).at(dir)? {
        if name.ends_with(".tmp") {
            let path = dir.join(&name);
            fs.remove_file(&path).at(&path)?;
            removed += 1;
        }
    }
    Ok(removed)
}
