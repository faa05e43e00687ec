//! A simulated disk for deterministic tests: [`SimFs`], an in-memory [`FileSystem`] that
//! models what a power loss does to data that was written but not synced.
//!
//! # What it models
//! - **Page cache vs. platter.** Every file has what readers see and what is durable. A write
//!   is visible at once and durable only after `sync_data`/`sync_all` on that file succeeds.
//! - **Crash** ([`SimFs::crash`]): every open handle and lock of the old "process" goes stale
//!   (calls fail), and each write not yet synced survives whole, is lost whole, or is torn:
//!   each 512-byte sector of it (aligned to the file, as a disk writes) is independently kept
//!   or left as it was before the write (zeros in a preallocated segment). Size changes
//!   (allocation, truncation) not synced survive or vanish whole. Unsynced operations of one
//!   file are replayed in order, so a later write never lands under an earlier lost one's
//!   size change in a way the real disk could not produce.
//! - **Directory entries** (create, rename, remove) are durable only after
//!   [`FileSystem::sync_dir`] on their directory. On a crash, a random prefix of each
//!   directory's unsynced entry changes survives (a journaling file system commits them in
//!   order), so a rename not followed by a directory sync can vanish. A file whose name did
//!   not survive is gone with its data.
//! - **Sync failures** ([`SimFs::fail_sync_after`]): a chosen `fsync`/`fdatasync`/directory
//!   sync returns `EIO` and leaves the data it should have made durable unsynced (it may
//!   still be lost on the next crash, as Linux may drop the dirty pages).
//! - **Media damage** ([`SimFs::corrupt`]): overwrite bytes of a file, durably.
//!
//! Every random choice comes from one RNG seeded by [`SimFs::new`]: the same seed and the
//! same sequence of calls reproduce the same damage. Directories themselves are created
//! durably (the WAL never depends on a directory's own entry in its parent).
//!
//! Cross-directory renames are refused (`EXDEV`-like): the WAL renames within a directory.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::filesystem::{FileBytes, FileHandle, FileSystem, LockGuard, OpenMode};

/// The sector size of the simulated disk: a torn write keeps or loses whole sectors.
pub const SIM_SECTOR_BYTES: u64 = 512;

/// What a crash does to data not yet synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashLoss {
    /// Everything written survives (a clean process kill: the page cache reaches the disk).
    KeepAll,
    /// Nothing unsynced survives (no write or entry change since the last sync reached the
    /// disk).
    LoseAll,
    /// Each unsynced write survives whole, vanishes or is torn by sector; a random prefix of
    /// each directory's unsynced entry changes survives. Drawn from the seeded RNG.
    Random,
}

/// A seeded in-memory file system with truthful crash semantics (see the module docs).
/// Clones share the same disk.
#[derive(Clone, Debug)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

/// Counters of what the simulated disk did, for tests and simulation summaries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Crashes simulated.
    pub crashes: u64,
    /// File syncs that succeeded.
    pub file_syncs: u64,
    /// Directory syncs that succeeded.
    pub dir_syncs: u64,
    /// Syncs made to fail.
    pub failed_syncs: u64,
    /// Unsynced writes lost whole at a crash.
    pub writes_lost: u64,
    /// Unsynced writes torn by sector at a crash.
    pub writes_torn: u64,
    /// Torn writes of which a sector reached the disk after an earlier sector of the same
    /// write did not (a disk may persist a write's sectors in any order). The WAL cannot tell
    /// such a write from damage to committed data, so it refuses to open until repaired.
    pub writes_torn_out_of_order: u64,
    /// Unsynced directory entry changes lost at a crash.
    pub dir_ops_lost: u64,
}

/// splitmix64: small, fast and good enough to draw faults from. The one
/// seeded random source of the simulations (the disk here, `raftnode::sim`,
/// the tests): a seed gives the same sequence on every build and platform.
#[derive(Debug, Clone)]
pub struct SimRng(u64);

impl SimRng {
    /// A generator whose sequence is fixed by `seed`.
    pub fn new(seed: u64) -> SimRng {
        SimRng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `p` percent.
    pub fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
}

#[derive(Debug)]
enum FileOp {
    Write { offset: u64, bytes: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Default)]
struct Inode {
    /// What readers see.
    data: Vec<u8>,
    /// What survives a crash.
    durable: Vec<u8>,
    /// Changes since the last successful sync, in order.
    pending: Vec<FileOp>,
}

#[derive(Debug, Clone)]
enum DirOp {
    Link(String, u64),
    Unlink(String),
    Rename(String, String),
}

#[derive(Debug, Default)]
struct Dir {
    entries: BTreeMap<String, u64>,
    durable: BTreeMap<String, u64>,
    pending: Vec<DirOp>,
}

#[derive(Debug)]
struct State {
    rng: SimRng,
    /// Bumped by every crash: handles and locks of an older generation are stale.
    generation: u64,
    next_id: u64,
    inodes: HashMap<u64, Inode>,
    dirs: BTreeMap<PathBuf, Dir>,
    /// Locked path → lock id.
    locks: HashMap<PathBuf, u64>,
    /// Successful syncs left before one fails (`None`: none scheduled).
    sync_failure_after: Option<u64>,
    stats: SimStats,
}

fn apply_op(target: &mut Vec<u8>, op: &FileOp) {
    match op {
        FileOp::Write { offset, bytes } => {
            let start = *offset as usize;
            let end = start + bytes.len();
            if target.len() < end {
                target.resize(end, 0);
            }
            target[start..end].copy_from_slice(bytes);
        }
        FileOp::SetLen(len) => target.resize(*len as usize, 0),
    }
}

fn apply_dir_op(entries: &mut BTreeMap<String, u64>, op: &DirOp) {
    match op {
        DirOp::Link(name, id) => {
            entries.insert(name.clone(), *id);
        }
        DirOp::Unlink(name) => {
            entries.remove(name);
        }
        DirOp::Rename(from, to) => {
            if let Some(id) = entries.remove(from) {
                entries.insert(to.clone(), id);
            }
        }
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("simulated: no such file or directory: {}", path.display()),
    )
}

fn split(path: &Path) -> io::Result<(&Path, String)> {
    match (path.parent(), path.file_name().and_then(|n| n.to_str())) {
        (Some(parent), Some(name)) => Ok((parent, name.to_owned())),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("simulated: not a file path: {}", path.display()),
        )),
    }
}

impl State {
    fn lookup(&self, path: &Path) -> io::Result<u64> {
        let (parent, name) = split(path)?;
        self.dirs
            .get(parent)
            .and_then(|d| d.entries.get(&name))
            .copied()
            .ok_or_else(|| not_found(path))
    }

    /// Draws whether the next sync fails.
    fn sync_fails(&mut self) -> bool {
        match self.sync_failure_after {
            Some(0) => {
                self.sync_failure_after = None;
                self.stats.failed_syncs += 1;
                true
            }
            Some(n) => {
                self.sync_failure_after = Some(n - 1);
                false
            }
            None => false,
        }
    }

    fn create(&mut self, path: &Path) -> io::Result<u64> {
        let (parent, name) = split(path)?;
        if !self.dirs.contains_key(parent) {
            return Err(not_found(parent));
        }
        let id = self.next_id;
        self.next_id += 1;
        self.inodes.insert(id, Inode::default());
        let dir = self.dirs.get_mut(parent).expect("checked above");
        dir.entries.insert(name.clone(), id);
        dir.pending.push(DirOp::Link(name, id));
        Ok(id)
    }

    fn crash(&mut self, loss: CrashLoss) {
        self.generation += 1;
        self.locks.clear();
        self.stats.crashes += 1;
        let mut ids: Vec<u64> = self.inodes.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let inode = self.inodes.get_mut(&id).expect("listed");
            let pending = std::mem::take(&mut inode.pending);
            for op in &pending {
                let keep = match loss {
                    CrashLoss::KeepAll => 0,
                    CrashLoss::LoseAll => 1,
                    CrashLoss::Random => self.rng.below(3),
                };
                match (keep, op) {
                    (0, _) => apply_op(&mut inode.durable, op),
                    (2, FileOp::Write { offset, bytes }) => {
                        self.stats.writes_torn += 1;
                        let end = offset + bytes.len() as u64;
                        let mut at = *offset;
                        let (mut lost_before, mut out_of_order) = (false, false);
                        while at < end {
                            let sector_end = ((at / SIM_SECTOR_BYTES) + 1) * SIM_SECTOR_BYTES;
                            let piece_end = sector_end.min(end);
                            if self.rng.below(2) == 0 {
                                let from = (at - offset) as usize;
                                let to = (piece_end - offset) as usize;
                                let piece = FileOp::Write {
                                    offset: at,
                                    bytes: bytes[from..to].to_vec(),
                                };
                                apply_op(&mut inode.durable, &piece);
                                out_of_order |= lost_before;
                            } else {
                                lost_before = true;
                            }
                            at = piece_end;
                        }
                        if out_of_order {
                            self.stats.writes_torn_out_of_order += 1;
                        }
                    }
                    _ => {
                        if matches!(op, FileOp::Write { .. }) {
                            self.stats.writes_lost += 1;
                        }
                    }
                }
            }
            inode.data = inode.durable.clone();
        }
        let mut live = BTreeSet::new();
        for dir in self.dirs.values_mut() {
            let pending = std::mem::take(&mut dir.pending);
            let kept = match loss {
                CrashLoss::KeepAll => pending.len(),
                CrashLoss::LoseAll => 0,
                CrashLoss::Random => self.rng.below(pending.len() as u64 + 1) as usize,
            };
            self.stats.dir_ops_lost += (pending.len() - kept) as u64;
            for op in &pending[..kept] {
                apply_dir_op(&mut dir.durable, op);
            }
            dir.entries = dir.durable.clone();
            live.extend(dir.entries.values().copied());
        }
        self.inodes.retain(|id, _| live.contains(id));
    }
}

impl SimFs {
    /// An empty disk whose random choices all come from `seed`.
    pub fn new(seed: u64) -> SimFs {
        SimFs {
            state: Arc::new(Mutex::new(State {
                rng: SimRng::new(seed),
                generation: 0,
                next_id: 1,
                inodes: HashMap::new(),
                dirs: BTreeMap::new(),
                locks: HashMap::new(),
                sync_failure_after: None,
                stats: SimStats::default(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while the state was held leaves it consistent enough for tests to report.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Simulates a power loss followed by a restart: see the module docs. Handles and locks
    /// taken before stay stale forever.
    pub fn crash(&self, loss: CrashLoss) {
        self.lock().crash(loss);
    }

    /// After `successful` more syncs (file or directory) succeed, the next one fails with
    /// `EIO`, once. Replaces any failure scheduled before.
    pub fn fail_sync_after(&self, successful: u64) {
        self.lock().sync_failure_after = Some(successful);
    }

    /// Cancels a sync failure scheduled by [`SimFs::fail_sync_after`] that has not fired.
    pub fn cancel_sync_failure(&self) {
        self.lock().sync_failure_after = None;
    }

    /// Overwrites `bytes` of the file `path` at `offset`, visible and durable at once (media
    /// damage, or a test planting a state). Extends the file if needed.
    pub fn corrupt(&self, path: &Path, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let mut state = self.lock();
        let id = state.lookup(path)?;
        let inode = state.inodes.get_mut(&id).expect("linked inodes exist");
        let op = FileOp::Write {
            offset,
            bytes: bytes.to_vec(),
        };
        apply_op(&mut inode.data, &op);
        apply_op(&mut inode.durable, &op);
        Ok(())
    }

    /// Sets the size of the file `path`, visibly and durably (a test planting a state).
    pub fn set_len_durably(&self, path: &Path, len_bytes: u64) -> io::Result<()> {
        let mut state = self.lock();
        let id = state.lookup(path)?;
        let inode = state.inodes.get_mut(&id).expect("linked inodes exist");
        inode.data.resize(len_bytes as usize, 0);
        inode.durable.resize(len_bytes as usize, 0);
        Ok(())
    }

    /// The bytes a reader of `path` sees now.
    pub fn contents(&self, path: &Path) -> io::Result<Vec<u8>> {
        let state = self.lock();
        let id = state.lookup(path)?;
        Ok(state.inodes[&id].data.clone())
    }

    /// What the disk has done so far.
    pub fn stats(&self) -> SimStats {
        self.lock().stats
    }
}

#[derive(Debug)]
struct SimFile {
    state: Arc<Mutex<State>>,
    id: u64,
    generation: u64,
}

impl SimFile {
    fn with<T>(&self, f: impl FnOnce(&mut State, u64) -> io::Result<T>) -> io::Result<T> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.generation != self.generation || !state.inodes.contains_key(&self.id) {
            return Err(io::Error::other(
                "simulated: file handle from before a crash",
            ));
        }
        f(&mut state, self.id)
    }

    fn sync(&self) -> io::Result<()> {
        self.with(|state, id| {
            if state.sync_fails() {
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
            state.stats.file_syncs += 1;
            let inode = state.inodes.get_mut(&id).expect("checked");
            for op in std::mem::take(&mut inode.pending) {
                apply_op(&mut inode.durable, &op);
            }
            Ok(())
        })
    }
}

impl FileHandle for SimFile {
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.with(|state, id| {
            let inode = state.inodes.get_mut(&id).expect("checked");
            let op = FileOp::Write {
                offset,
                bytes: buf.to_vec(),
            };
            apply_op(&mut inode.data, &op);
            inode.pending.push(op);
            Ok(())
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        self.sync()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync()
    }

    fn allocate(&self, bytes: u64) -> io::Result<()> {
        self.with(|state, id| {
            let inode = state.inodes.get_mut(&id).expect("checked");
            if (inode.data.len() as u64) < bytes {
                let op = FileOp::SetLen(bytes);
                apply_op(&mut inode.data, &op);
                inode.pending.push(op);
            }
            Ok(())
        })
    }

    fn len_bytes(&self) -> io::Result<u64> {
        self.with(|state, id| Ok(state.inodes[&id].data.len() as u64))
    }
}

#[derive(Debug)]
struct SimLock {
    state: Arc<Mutex<State>>,
    path: PathBuf,
    id: u64,
}

impl LockGuard for SimLock {}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.locks.get(&self.path) == Some(&self.id) {
            state.locks.remove(&self.path);
        }
    }
}

impl FileSystem for SimFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        for ancestor in dir.ancestors() {
            if ancestor.as_os_str().is_empty() {
                break;
            }
            state.dirs.entry(ancestor.to_path_buf()).or_default();
        }
        Ok(())
    }

    fn is_dir(&self, dir: &Path) -> bool {
        self.lock().dirs.contains_key(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = self.lock();
        let dir_state = state.dirs.get(dir).ok_or_else(|| not_found(dir))?;
        Ok(dir_state.entries.keys().cloned().collect())
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn FileHandle>> {
        let mut state = self.lock();
        let id = match (state.lookup(path), mode) {
            (Ok(id), OpenMode::Existing) => id,
            (Ok(id), OpenMode::CreateTruncate) => {
                let inode = state.inodes.get_mut(&id).expect("linked inodes exist");
                if !inode.data.is_empty() {
                    inode.data.clear();
                    inode.pending.push(FileOp::SetLen(0));
                }
                id
            }
            (Err(e), OpenMode::Existing) => return Err(e),
            (Err(_), OpenMode::CreateTruncate) => state.create(path)?,
        };
        Ok(Box::new(SimFile {
            state: Arc::clone(&self.state),
            id,
            generation: state.generation,
        }))
    }

    fn read_whole(&self, path: &Path) -> io::Result<FileBytes> {
        self.read(path).map(FileBytes::from_vec)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let state = self.lock();
        let id = state.lookup(path)?;
        Ok(state.inodes[&id].data.clone())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.lock();
        let (from_dir, from_name) = split(from)?;
        let (to_dir, to_name) = split(to)?;
        if from_dir != to_dir {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "simulated: rename across directories",
            ));
        }
        let id = state.lookup(from)?;
        let dir = state.dirs.get_mut(from_dir).expect("lookup found it");
        dir.entries.remove(&from_name);
        dir.entries.insert(to_name.clone(), id);
        dir.pending.push(DirOp::Rename(from_name, to_name));
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.lookup(path)?;
        let (parent, name) = split(path)?;
        let dir = state.dirs.get_mut(parent).expect("lookup found it");
        dir.entries.remove(&name);
        dir.pending.push(DirOp::Unlink(name));
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        if !state.dirs.contains_key(dir) {
            return Err(not_found(dir));
        }
        if state.sync_fails() {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        state.stats.dir_syncs += 1;
        let dir_state = state.dirs.get_mut(dir).expect("checked");
        for op in std::mem::take(&mut dir_state.pending) {
            apply_dir_op(&mut dir_state.durable, &op);
        }
        Ok(())
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn LockGuard>>> {
        let mut state = self.lock();
        if state.lookup(path).is_err() {
            state.create(path)?;
        }
        if state.locks.contains_key(path) {
            return Ok(None);
        }
        let id = state.next_id;
        state.next_id += 1;
        state.locks.insert(path.to_path_buf(), id);
        Ok(Some(Box::new(SimLock {
            state: Arc::clone(&self.state),
            path: path.to_path_buf(),
            id,
        })))
    }
}
