//! File-system helpers: segment names, directory listing, locking, preallocation, mapping.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use crate::error::{IoContext, WalError};

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
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<SegmentName>, WalError> {
    let mut names = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
        Err(e) => return Err(e).at(dir),
    };
    for entry in entries {
        let entry = entry.at(dir)?;
        if let Some(name) = entry.file_name().to_str().and_then(SegmentName::parse) {
            names.push(name);
        }
    }
    names.sort_by_key(|n| n.seq);
    Ok(names)
}

/// Makes a directory's entries (creations, renames, removals) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir).at(dir)?.sync_all().at(dir)
}

/// Takes the exclusive lock on `dir/LOCK` (created if missing); the lock lives as long as the
/// returned file.
pub(crate) fn lock_dir(dir: &Path) -> Result<File, WalError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .at(&path)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(WalError::Locked { path }),
        Err(std::fs::TryLockError::Error(e)) => Err(e).at(&path),
    }
}

/// Reserves `bytes` for `file` so appends do not allocate (falls back to `set_len` where
/// `fallocate` is unsupported). Never shrinks the file.
#[allow(unsafe_code)]
pub(crate) fn preallocate(file: &File, path: &Path, bytes: u64) -> Result<(), WalError> {
    use std::os::fd::AsRawFd;
    let len = libc::off_t::try_from(bytes)
        .map_err(|_| WalError::InvalidConfig("segment_bytes does not fit in off_t"))?;
    // SAFETY: `fallocate` only reads its integer arguments; the descriptor is valid because
    // `file` is borrowed for the whole call.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) | Some(libc::EINVAL) => {
            let current = file.metadata().at(path)?.len();
            if current < bytes {
                file.set_len(bytes).at(path)?;
            }
            Ok(())
        }
        _ => Err(err).at(path),
    }
}

/// Read-only view of a whole file.
pub(crate) enum FileView {
    /// A memory map of a non-empty file.
    Mapped(memmap2::Mmap),
    /// An empty file (which cannot be mapped).
    Empty,
}

impl FileView {
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Self::Mapped(map) => map,
            Self::Empty => &[],
        }
    }
}

/// Maps `path` read-only, prefaulting it for a sequential read.
#[allow(unsafe_code)]
pub(crate) fn map_file(path: &Path) -> Result<FileView, WalError> {
    let file = File::open(path).at(path)?;
    if file.metadata().at(path)?.len() == 0 {
        return Ok(FileView::Empty);
    }
    // SAFETY: the map is read-only and the directory lock (held by every caller) keeps other
    // WAL handles from truncating or writing the file while the map lives; the map is dropped
    // before this process writes to the file again.
    let map = unsafe { memmap2::MmapOptions::new().populate().map(&file) }.at(path)?;
    if let Err(e) = map.advise(memmap2::Advice::Sequential) {
        // Advice is a hint: without it the read is only slower.
        tracing::debug!(path = %path.display(), error = %e, "madvise(SEQUENTIAL) failed");
    }
    Ok(FileView::Mapped(map))
}

/// Removes leftover temporary files (names ending in `.tmp`) from `dir`.
pub(crate) fn remove_temp_files(dir: &Path) -> Result<usize, WalError> {
    let mut removed = 0;
    for entry in fs::read_dir(dir).at(dir)? {
        let entry = entry.at(dir)?;
        if entry.file_name().to_string_lossy().ends_with(".tmp") {
            fs::remove_file(entry.path()).at(&entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}
