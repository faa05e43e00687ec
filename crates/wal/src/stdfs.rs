//! The production [`FileSystem`]: `std::fs`, read-only mmap for scans, flock, fallocate.
//! The only module of this crate that touches the operating system's files.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::filesystem::{FileBytes, FileBytesInner, FileHandle, FileSystem, LockGuard, OpenMode};

/// The real file system (what [`Wal::open`](crate::Wal::open) and the other constructors
/// without a file-system argument use).
#[derive(Debug, Clone, Copy, Default)]
pub struct StdFs;

#[derive(Debug)]
struct StdFile(File);

/// A read-only memory map of a whole file.
pub(crate) struct Mapping(memmap2::Mmap);

impl Mapping {
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

#[derive(Debug)]
struct StdLock(#[allow(dead_code)] File);

impl LockGuard for StdLock {}

impl FileHandle for StdFile {
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.0.sync_all()
    }

    /// `fallocate`, falling back to `set_len` where it is unsupported.
    #[allow(unsafe_code)]
    fn allocate(&self, bytes: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let len = libc::off_t::try_from(bytes)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "size does not fit off_t"))?;
        // SAFETY: `fallocate` only reads its integer arguments; the descriptor is valid
        // because `self.0` is borrowed for the whole call.
        let rc = unsafe { libc::fallocate(self.0.as_raw_fd(), 0, 0, len) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) | Some(libc::EINVAL) => {
                if self.0.metadata()?.len() < bytes {
                    self.0.set_len(bytes)?;
                }
                Ok(())
            }
            _ => Err(err),
        }
    }

    fn len_bytes(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
}

impl FileSystem for StdFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn is_dir(&self, dir: &Path) -> bool {
        dir.is_dir()
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            if let Some(name) = entry?.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn FileHandle>> {
        let mut options = OpenOptions::new();
        options.read(true).write(true);
        if mode == OpenMode::CreateTruncate {
            options.create(true).truncate(true);
        }
        Ok(Box::new(StdFile(options.open(path)?)))
    }

    /// Maps the file read-only, prefaulted for a sequential read.
    #[allow(unsafe_code)]
    fn read_whole(&self, path: &Path) -> io::Result<FileBytes> {
        let file = File::open(path)?;
        if file.metadata()?.len() == 0 {
            return Ok(FileBytes::from_vec(Vec::new()));
        }
        // SAFETY: the map is read-only and the directory lock (held by every caller) keeps
        // other WAL handles from truncating or writing the file while the map lives; the map
        // is dropped before this process writes to the file again.
        let map = unsafe { memmap2::MmapOptions::new().populate().map(&file) }?;
        if let Err(e) = map.advise(memmap2::Advice::Sequential) {
            // Advice is a hint: without it the read is only slower.
            tracing::debug!(path = %path.display(), error = %e, "madvise(SEQUENTIAL) failed");
        }
        Ok(FileBytes(FileBytesInner::Mapped(Mapping(map))))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn LockGuard>>> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Box::new(StdLock(file)))),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }
}
