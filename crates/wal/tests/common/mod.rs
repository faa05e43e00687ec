//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use wal::{Entry, Metadata, WalConfig};

/// Small segments so tests rotate often.
pub const SMALL: WalConfig = WalConfig {
    segment_bytes: 4096,
};

pub const META: Metadata = Metadata {
    node_id: 1,
    cluster_id: 0xC1,
};

/// A deterministic entry whose payload ends in a non-zero byte.
pub fn entry(index: u64, term: u64) -> Entry {
    let len = 20 + (index * 37 % 150) as usize;
    let mut payload: Vec<u8> = (0..len)
        .map(|i| (index as u8) ^ (i as u8) ^ (term as u8))
        .collect();
    payload.push(0xEE);
    Entry {
        index,
        term,
        payload,
    }
}

pub fn entries(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    range.map(|i| entry(i, term)).collect()
}

pub fn hard_state(n: u64) -> Vec<u8> {
    format!("hard-state-{n}").into_bytes()
}

/// Segment files of a WAL directory, oldest first.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    paths.sort();
    paths
}

/// `(start, end)` of every record in a segment, walking the documented framing.
pub fn record_spans(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut at = 0;
    while at + 12 <= bytes.len() && bytes[at..at + 12].iter().any(|&b| b != 0) {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let end = at + ((12 + len + 7) & !7);
        spans.push((at, end));
        at = end;
    }
    spans
}

/// Copies every file of `from` into `to` (created).
pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create dir");
    for e in fs::read_dir(from).expect("read dir") {
        let e = e.expect("dir entry");
        fs::copy(e.path(), to.join(e.file_name())).expect("copy");
    }
}

/// One disk a scenario runs on: a temporary directory on the real file system, or a
/// simulated disk. Crash-matrix scenarios are written once against it and run on both.
pub enum Disk {
    /// `wal::StdFs` under a temporary directory.
    Std(tempfile::TempDir),
    /// `wal::sim::SimFs` under `/sim`.
    Sim(wal::sim::SimFs),
}

impl Disk {
    pub fn std() -> Disk {
        Disk::Std(tempfile::tempdir().expect("tempdir"))
    }

    pub fn sim() -> Disk {
        let sim = wal::sim::SimFs::new(0x5EED);
        wal::FileSystem::create_dir_all(&sim, Path::new("/sim")).expect("root");
        Disk::Sim(sim)
    }

    /// Where the scenario's directories go.
    pub fn root(&self) -> PathBuf {
        match self {
            Disk::Std(dir) => dir.path().to_path_buf(),
            Disk::Sim(_) => PathBuf::from("/sim"),
        }
    }

    pub fn fs(&self) -> wal::SharedFs {
        match self {
            Disk::Std(_) => std::sync::Arc::new(wal::StdFs),
            Disk::Sim(sim) => std::sync::Arc::new(sim.clone()),
        }
    }

    pub fn read(&self, path: &Path) -> Vec<u8> {
        self.fs().read(path).expect("read")
    }

    /// Replaces the contents of `path` (created if missing), durably.
    pub fn write(&self, path: &Path, bytes: &[u8]) {
        let fs = self.fs();
        let file = fs
            .open(path, wal::OpenMode::CreateTruncate)
            .expect("open for writing");
        file.write_all_at(bytes, 0).expect("write");
        file.sync_all().expect("sync");
        fs.sync_dir(path.parent().expect("parent"))
            .expect("sync dir");
    }

    /// Cuts (or extends) `path` to `len_bytes`, durably.
    pub fn set_len(&self, path: &Path, len_bytes: u64) {
        match self {
            Disk::Std(_) => fs::OpenOptions::new()
                .write(true)
                .open(path)
                .and_then(|f| f.set_len(len_bytes))
                .expect("truncate"),
            Disk::Sim(sim) => sim.set_len_durably(path, len_bytes).expect("truncate"),
        }
    }

    pub fn remove(&self, path: &Path) {
        let fs = self.fs();
        fs.remove_file(path).expect("remove");
        fs.sync_dir(path.parent().expect("parent"))
            .expect("sync dir");
    }

    /// Removes every file of `dir` (the directory itself may stay).
    pub fn remove_dir(&self, dir: &Path) {
        for name in self.fs().list(dir).expect("list") {
            self.remove(&dir.join(name));
        }
    }

    /// Copies every file of `from` into `to` (created).
    pub fn copy_dir(&self, from: &Path, to: &Path) {
        self.fs().create_dir_all(to).expect("create dir");
        for name in self.fs().list(from).expect("list") {
            let bytes = self.read(&from.join(&name));
            self.write(&to.join(&name), &bytes);
        }
    }

    /// Segment files of a WAL directory, oldest first.
    pub fn segments(&self, dir: &Path) -> Vec<PathBuf> {
        let mut names: Vec<String> = self
            .fs()
            .list(dir)
            .expect("list")
            .into_iter()
            .filter(|n| n.ends_with(".wal"))
            .collect();
        names.sort();
        names.into_iter().map(|n| dir.join(n)).collect()
    }
}

/// Runs each named scenario `fn(&Disk)` of the enclosing module as two tests, one on the real
/// file system (`std_fs::name`) and one on the simulated disk (`sim_fs::name`).
#[macro_export]
macro_rules! on_both_disks {
    ($($name:ident),* $(,)?) => {
        mod std_fs {
            $( #[test] fn $name() { super::$name(&super::common::Disk::std()) } )*
        }
        mod sim_fs {
            $( #[test] fn $name() { super::$name(&super::common::Disk::sim()) } )*
        }
    };
}
