//! The disk seam: every file-system call the WAL and the snapshot store make goes through
//! [`FileSystem`] (**architecture invariant**). [`StdFs`](crate::StdFs) is the production
//! implementation (std::fs, mmap, flock, fallocate); [`SimFs`](crate::sim::SimFs) is an
//! in-memory disk that loses unsynced data on a simulated crash.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

/// How [`FileSystem::open`] opens a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// An existing file, for reading and writing.
    Existing,
    /// Created if missing and truncated to zero bytes, for reading and writing.
    CreateTruncate,
}

/// An open file: positioned writes, syncs and size changes. Reads go through
/// [`FileSystem::read_whole`] and [`FileSystem::read`].
pub trait FileHandle: Send + Sync + fmt::Debug {
    /// Writes all of `buf` at `offset` (like `pwrite` until done).
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes the file's data (and the size needed to read it) durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// Makes the file's data and metadata durable (`fsync`).
    fn sync_all(&self) -> io::Result<()>;
    /// Reserves `bytes` for the file so that writes below it do not allocate; never shrinks
    /// it. Bytes not written before read back as zeros.
    fn allocate(&self, bytes: u64) -> io::Result<()>;
    /// The file's current size.
    fn len_bytes(&self) -> io::Result<u64>;
}

/// Holds a directory lock taken with [`FileSystem::try_lock`]; dropping it releases the lock.
pub trait LockGuard: Send + Sync + fmt::Debug {}

/// A whole file read for scanning: a memory map where the file system offers one, owned
/// bytes otherwise.
pub struct FileBytes(pub(crate) FileBytesInner);

pub(crate) enum FileBytesInner {
    /// A memory map of a non-empty file (production file system).
    Mapped(crate::stdfs::Mapping),
    /// Bytes read into memory (or an empty file, which cannot be mapped).
    Owned(Vec<u8>),
}

impl FileBytes {
    /// Wraps bytes read into memory.
    pub fn from_vec(bytes: Vec<u8>) -> FileBytes {
        FileBytes(FileBytesInner::Owned(bytes))
    }
}

impl std::ops::Deref for FileBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.0 {
            FileBytesInner::Mapped(map) => map.bytes(),
            FileBytesInner::Owned(bytes) => bytes,
        }
    }
}

impl fmt::Debug for FileBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileBytes")
            .field("len", &self.len())
            .finish()
    }
}

/// The file-system calls of the WAL and the snapshot store. Paths are absolute or relative
/// to the process's working directory, as `std::fs` takes them. Errors are `std::io` errors
/// (a missing file or directory is [`io::ErrorKind::NotFound`]).
///
/// # Correctness
/// The WAL's durability argument rests on these rules; an implementation must keep them:
/// - A write is visible to every later read at once, and durable (survives a crash) only
///   once a later [`FileHandle::sync_data`] or [`FileHandle::sync_all`] of that file returned
///   `Ok`. A sync that fails promises nothing, not even for writes before it.
/// - A creation, rename or removal is visible at once and durable only once a later
///   [`FileSystem::sync_dir`] of its directory returned `Ok`. A rename is atomic: after a
///   crash the name refers to the old file or the new one, never to a mix.
/// - Bytes never written read back as zeros (in particular below an [`FileHandle::allocate`]d
///   size), and a write that a crash interrupts changes whole 512-byte sectors only.
/// - [`FileSystem::try_lock`] is exclusive among all holders until the guard is dropped.
pub trait FileSystem: Send + Sync + fmt::Debug {
    /// Creates `dir` and its missing parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// True when `dir` exists and is a directory.
    fn is_dir(&self, dir: &Path) -> bool;
    /// Names of the entries of `dir` (files only need to be listed; order unspecified).
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Opens `path` for reading and writing.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn FileHandle>>;
    /// The whole file, read-only, for a sequential scan (the production file system maps it).
    /// The caller holds the directory lock, so nobody else writes the file meanwhile.
    fn read_whole(&self, path: &Path) -> io::Result<FileBytes>;
    /// The whole file copied into memory.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Renames `from` to `to`, replacing `to`; durable once the directory is synced.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes the file `path`; durable once the directory is synced.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Makes the entries of `dir` (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes the exclusive lock on the file `path` (created if missing); `Ok(None)` when
    /// someone else holds it.
    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn LockGuard>>>;
}

/// A shared file system, as the WAL and the snapshot store hold it.
pub type SharedFs = Arc<dyn FileSystem>;
