//! The write-ahead log handle.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{IoContext, WalError};
use crate::filesystem::{FileHandle, FileSystem, LockGuard, OpenMode, SharedFs};
use crate::fs::{
    create_preallocated, list_segments, lock_dir, remove_temp_files, sync_dir, SegmentName,
    NEXT_SEGMENT_FILE,
};
use crate::record::{
    encode, encode_entry_with, encode_marker, encode_metadata, encode_segment_header, record_bytes,
    RecordType, SegmentHeader, ENTRY_PREFIX_BYTES, MAX_PAYLOAD_BYTES,
};
use crate::repair::RepairReport;
use crate::replay::Replay;
use crate::scan::{scan, Event, ScanOutcome};
use crate::stdfs::StdFs;
use crate::types::{Entry, EntryHead, Marker, Metadata, Recovered, WalConfig};

/// Name of the file the first segment is written to before it is renamed into place.
const FIRST_SEGMENT_TMP: &str = "first.segment.tmp";
/// A write buffer grown beyond this is released after use rather than kept.
const RETAINED_BUFFER_BYTES_MAX: usize = 16 << 20;
/// Chunk of zeros written when a torn tail is wiped.
const ZERO_CHUNK_BYTES: usize = 1 << 20;

/// An open write-ahead log: the only writer of its directory while it lives.
///
/// Every method that writes issues exactly one `write` and one `fdatasync` on the newest
/// segment. Starting a new segment adds a rename and a directory fsync, not a data sync.
pub struct Wal {
    /// Every file-system call goes through it.
    fs: SharedFs,
    dir: PathBuf,
    config: WalConfig,
    /// Holds the flock on `dir/LOCK` until the handle is dropped.
    _lock: Box<dyn LockGuard>,
    metadata: Metadata,
    /// Live segments, oldest first; the last one is being appended to.
    segments: Vec<SegmentName>,
    /// The newest segment, open for writing.
    file: Box<dyn FileHandle>,
    /// Offset of the next write in `file`.
    tail_bytes: u64,
    /// Offset just past the newest segment's preamble.
    preamble_end_bytes: u64,
    /// CRC of the last record written (the seed of the next one).
    crc: u32,
    last_index: u64,
    hard_state: Option<Vec<u8>>,
    marker: Marker,
    /// The preallocated file the next segment will be renamed from.
    next_segment: Option<Box<dyn FileHandle>>,
    /// Reused encoding buffer: one batch, one write.
    buf: Vec<u8>,
    /// Reused by `save_with`: the heads of the entries being saved.
    heads: Vec<EntryHead>,
    fsync_count: u64,
    /// Told how long each data fsync took (metrics); none by default.
    sync_observer: Option<SyncObserver>,
    /// Set while a write is in flight; stays set if it failed.
    poisoned: bool,
}

/// Receives the duration of every data fsync a [`Wal`] issues (for a latency histogram).
/// Called on the writing thread right after the fsync returns; it must be cheap.
pub type SyncObserver = std::sync::Arc<dyn Fn(std::time::Duration) + Send + Sync>;

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.dir)
            .field("segments", &self.segments.len())
            .field("tail_bytes", &self.tail_bytes)
            .field("last_index", &self.last_index)
            .field("marker", &self.marker)
            .field("fsync_count", &self.fsync_count)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

/// Encodes a segment's preamble (header, metadata, latest marker, latest hard state), so that
/// releasing older segments never loses them. Returns the preamble's size.
fn encode_preamble(
    buf: &mut Vec<u8>,
    crc: &mut u32,
    name: SegmentName,
    metadata: Metadata,
    marker: Marker,
    hard_state: Option<&[u8]>,
) -> usize {
    let start = buf.len();
    let header = SegmentHeader {
        seq: name.seq,
        first_index: name.first_index,
        prev_crc: *crc,
    };
    encode_segment_header(buf, crc, header);
    encode_metadata(buf, crc, metadata);
    if marker != Marker::ZERO {
        // Always a plain marker: replayed at the start of a segment, it must not cut the
        // entries the previous segment holds above it.
        encode_marker(buf, crc, RecordType::Marker, marker);
    }
    if let Some(state) = hard_state {
        encode(buf, crc, RecordType::HardState, &[state]);
    }
    buf.len() - start
}

fn check_payload(bytes: usize) -> Result<(), WalError> {
    if bytes > MAX_PAYLOAD_BYTES {
        return Err(WalError::RecordTooLarge {
            bytes: bytes as u64,
            max_bytes: MAX_PAYLOAD_BYTES as u64,
        });
    }
    Ok(())
}

fn require_dir(fs: &dyn FileSystem, dir: &Path) -> Result<(), WalError> {
    if fs.is_dir(dir) {
        Ok(())
    } else {
        Err(WalError::NotFound {
            dir: dir.to_path_buf(),
        })
    }
}

impl Wal {
    /// True when `dir` holds at least one WAL segment.
    pub fn exists(dir: &Path) -> bool {
        Wal::exists_in(&StdFs, dir)
    }

    /// [`Wal::exists`] on the file system `fs`.
    pub fn exists_in(fs: &dyn FileSystem, dir: &Path) -> bool {
        list_segments(fs, dir).is_ok_and(|names| !names.is_empty())
    }

    /// Creates a new WAL in `dir` (created if missing) recording `metadata`.
    ///
    /// The first segment is written under a temporary name, synced and renamed, so a crash
    /// leaves either no WAL or a complete one. Fails with [`WalError::AlreadyExists`] if `dir`
    /// already holds segments and [`WalError::Locked`] if another handle owns it.
    pub fn create(dir: &Path, metadata: Metadata, config: WalConfig) -> Result<Wal, WalError> {
        Wal::create_in(Arc::new(StdFs), dir, metadata, config)
    }

    /// [`Wal::create`] on the file system `fs`.
    pub fn create_in(
        fs: SharedFs,
        dir: &Path,
        metadata: Metadata,
        config: WalConfig,
    ) -> Result<Wal, WalError> {
        config.validate()?;
        fs.create_dir_all(dir).at(dir)?;
        let lock = lock_dir(&*fs, dir)?;
        if !list_segments(&*fs, dir)?.is_empty() {
            return Err(WalError::AlreadyExists {
                dir: dir.to_path_buf(),
            });
        }
        remove_temp_files(&*fs, dir)?;
        let name = SegmentName {
            seq: 0,
            first_index: 1,
        };
        let tmp = dir.join(FIRST_SEGMENT_TMP);
        let file = create_preallocated(&*fs, &tmp, config.segment_bytes)?;
        let mut buf = Vec::new();
        let mut crc = 0;
        let preamble_bytes =
            encode_preamble(&mut buf, &mut crc, name, metadata, Marker::ZERO, None);
        file.write_all_at(&buf, 0).at(&tmp)?;
        file.sync_all().at(&tmp)?;
        let path = name.path(dir);
        fs.rename(&tmp, &path).at(&path)?;
        sync_dir(&*fs, dir)?;
        tracing::info!(
            dir = %dir.display(),
            node_id = metadata.node_id,
            cluster_id = metadata.cluster_id,
            "created WAL"
        );
        let mut wal = Wal {
            fs,
            dir: dir.to_path_buf(),
            config,
            _lock: lock,
            metadata,
            segments: vec![name],
            file,
            tail_bytes: preamble_bytes as u64,
            preamble_end_bytes: preamble_bytes as u64,
            crc,
            last_index: 0,
            hard_state: None,
            marker: Marker::ZERO,
            next_segment: None,
            buf,
            heads: Vec::new(),
            fsync_count: 0,
            sync_observer: None,
            poisoned: false,
        };
        wal.prepare_next_segment();
        Ok(wal)
    }

    /// Opens the WAL in `dir` at snapshot marker `at` (a marker recorded in this WAL, or
    /// [`Marker::ZERO`]) and reads it back: metadata, latest hard state and every entry after
    /// `at.index`.
    ///
    /// Every record's checksum is verified. A torn write at the tail of the newest segment (an
    /// invalid record with nothing valid after it and an all-zero 512-byte sector) is cut off
    /// (with a warning) and its bytes zeroed; any other damage is refused with
    /// [`WalError::Corrupt`] naming the file and byte offset, and left in place.
    pub fn open(dir: &Path, at: Marker, config: WalConfig) -> Result<(Wal, Recovered), WalError> {
        Wal::open_in(Arc::new(StdFs), dir, at, config)
    }

    /// [`Wal::open`] on the file system `fs`.
    pub fn open_in(
        fs: SharedFs,
        dir: &Path,
        at: Marker,
        config: WalConfig,
    ) -> Result<(Wal, Recovered), WalError> {
        config.validate()?;
        require_dir(&*fs, dir)?;
        let lock = lock_dir(&*fs, dir)?;
        let names = list_segments(&*fs, dir)?;
        let first = names.first().ok_or_else(|| WalError::NotFound {
            dir: dir.to_path_buf(),
        })?;
        if at.index.saturating_add(1) < first.first_index {
            return Err(WalError::MarkerReleased {
                marker: at,
                first_index: first.first_index,
            });
        }
        let mut replay = Replay::new(at, first.first_index.saturating_sub(1));
        let outcome = scan(&*fs, dir, &names, &mut |event, path, offset| {
            replay.apply(event, path, offset)
        })?;
        replay.check_marker()?;
        let file = repair(&*fs, dir, &outcome, config)?;
        remove_temp_files(&*fs, dir)?;
        let recovered = Recovered {
            metadata: outcome.metadata,
            hard_state: replay.hard_state.clone(),
            entries: std::mem::take(&mut replay.entries),
        };
        let mut wal = Wal {
            fs,
            dir: dir.to_path_buf(),
            config,
            _lock: lock,
            metadata: outcome.metadata,
            segments: outcome.segments,
            file,
            tail_bytes: outcome.tail.end_offset,
            preamble_end_bytes: outcome.tail.preamble_end,
            crc: outcome.tail.crc,
            last_index: replay.last_index,
            hard_state: replay.hard_state,
            marker: replay.latest_marker,
            next_segment: None,
            buf: Vec::new(),
            heads: Vec::new(),
            fsync_count: 0,
            sync_observer: None,
            poisoned: false,
        };
        wal.prepare_next_segment();
        tracing::info!(
            dir = %dir.display(),
            segments = wal.segments.len(),
            last_index = wal.last_index,
            entries = recovered.entries.len(),
            "opened WAL"
        );
        Ok((wal, recovered))
    }

    /// The operator's explicit repair of a WAL that [`Wal::open`] refuses as corrupt: keeps
    /// every record before the first damaged one, zeroes the rest of that segment and deletes
    /// every later segment (a segment damaged in its header or metadata is deleted whole).
    /// With `dry_run`, changes nothing. The report names every file, offset and byte count
    /// dropped and the records that can be identified there.
    ///
    /// What is dropped was fsynced and may have been acknowledged: a Raft node that lost
    /// entries or a vote can break the cluster's guarantees. Only an operator decides this;
    /// nothing calls it on its own. A WAL that opens as it is (a provable torn tail included)
    /// is left alone, and damage in the first segment's header or metadata cannot be repaired.
    pub fn repair(dir: &Path, dry_run: bool) -> Result<RepairReport, WalError> {
        Wal::repair_in(&StdFs, dir, dry_run)
    }

    /// [`Wal::repair`] on the file system `fs`.
    pub fn repair_in(
        fs: &dyn FileSystem,
        dir: &Path,
        dry_run: bool,
    ) -> Result<RepairReport, WalError> {
        require_dir(fs, dir)?;
        crate::repair::repair(fs, dir, dry_run)
    }

    /// Every snapshot marker recorded in the WAL in `dir`, oldest first, without duplicates.
    /// Validates the whole WAL like [`Wal::open`] but repairs nothing.
    pub fn markers(dir: &Path) -> Result<Vec<Marker>, WalError> {
        Wal::markers_in(&StdFs, dir)
    }

    /// [`Wal::markers`] on the file system `fs`.
    pub fn markers_in(fs: &dyn FileSystem, dir: &Path) -> Result<Vec<Marker>, WalError> {
        require_dir(fs, dir)?;
        let _lock = lock_dir(fs, dir)?;
        let names = list_segments(fs, dir)?;
        if names.is_empty() {
            return Err(WalError::NotFound {
                dir: dir.to_path_buf(),
            });
        }
        let mut markers: Vec<Marker> = Vec::new();
        scan(fs, dir, &names, &mut |event, _, _| {
            if let Event::Marker { marker, .. } = event {
                if markers.last() != Some(&marker) {
                    markers.push(marker);
                }
            }
            Ok(())
        })?;
        Ok(markers)
    }

    /// Appends `entries` and then `hard_state` as one write followed by one fdatasync; does
    /// nothing at all when both are empty.
    ///
    /// `entries` must be contiguous. The first may be at or below [`Wal::last_index`]: it then
    /// replaces the old tail from its index on (Raft log conflict), and replay does the same.
    /// It must be above the latest snapshot marker and at most `last_index() + 1`: save a
    /// received snapshot's marker before the entries that follow it.
    pub fn save(&mut self, hard_state: Option<&[u8]>, entries: &[Entry]) -> Result<(), WalError> {
        self.save_with(
            hard_state,
            entries,
            |e| EntryHead {
                index: e.index,
                term: e.term,
                payload_bytes: e.payload.len(),
            },
            |e, buf| buf.extend_from_slice(&e.payload),
        )
    }

    /// [`Wal::save`] of entries of the caller's own type, each payload encoded straight into
    /// the WAL's write buffer (no payload buffer of its own per entry): `head` tells an
    /// entry's index, term and payload size (asked once per entry per call), and
    /// `write_payload` appends exactly that many bytes to the buffer it is given.
    ///
    /// # Panics
    /// If `write_payload` writes another number of bytes than `head` announced.
    pub fn save_with<T>(
        &mut self,
        hard_state: Option<&[u8]>,
        entries: &[T],
        head: impl Fn(&T) -> EntryHead,
        mut write_payload: impl FnMut(&T, &mut Vec<u8>),
    ) -> Result<(), WalError> {
        self.check_usable()?;
        if hard_state.is_none() && entries.is_empty() {
            return Ok(());
        }
        let mut heads = std::mem::take(&mut self.heads);
        heads.clear();
        heads.extend(entries.iter().map(&head));
        let result = self.save_heads(hard_state, entries, &heads, &mut write_payload);
        self.heads = heads;
        result
    }

    fn save_heads<T>(
        &mut self,
        hard_state: Option<&[u8]>,
        entries: &[T],
        heads: &[EntryHead],
        write_payload: &mut impl FnMut(&T, &mut Vec<u8>),
    ) -> Result<(), WalError> {
        self.check_entries(heads)?;
        if let Some(state) = hard_state {
            check_payload(state.len())?;
        }
        let entry_bytes: usize = heads
            .iter()
            .map(|h| record_bytes(ENTRY_PREFIX_BYTES + h.payload_bytes))
            .sum();
        let batch_bytes = entry_bytes + hard_state.map_or(0, |s| record_bytes(s.len()));
        let skip_sync = crate::plant::active(crate::plant::PlantedBug::SkipFsync);
        self.write_batch(batch_bytes, skip_sync, |buf, crc| {
            for (entry, h) in entries.iter().zip(heads) {
                encode_entry_with(buf, crc, h.index, h.term, h.payload_bytes, |buf| {
                    write_payload(entry, buf)
                });
            }
            // After the entries: a torn batch never keeps a hard state without its entries.
            if let Some(state) = hard_state {
                encode(buf, crc, RecordType::HardState, &[state]);
            }
        })?;
        if let Some(last) = heads.last() {
            self.last_index = last.index;
        }
        if let Some(state) = hard_state {
            let stored = self.hard_state.get_or_insert_with(Vec::new);
            stored.clear();
            stored.extend_from_slice(state);
        }
        Ok(())
    }

    /// Records the marker of a snapshot taken locally, durably (one write, one fdatasync).
    /// Markers must not go backwards. The entries above it stay: they are the log after the
    /// snapshot. A marker beyond [`Wal::last_index`] moves the log's end to it (WALs written
    /// before [`Wal::save_received_snapshot_marker`] existed recorded received snapshots so).
    pub fn save_snapshot_marker(&mut self, marker: Marker) -> Result<(), WalError> {
        self.write_marker(RecordType::Marker, marker)?;
        self.last_index = self.last_index.max(marker.index);
        Ok(())
    }

    /// Records the marker of a snapshot received from a leader, durably (one write, one
    /// fdatasync). The snapshot replaces the log: every entry above `marker.index` is dropped
    /// (a divergent tail the leader's snapshot superseded), now and on replay, and the log
    /// ends at the marker. The next entry saved is `marker.index + 1`.
    pub fn save_received_snapshot_marker(&mut self, marker: Marker) -> Result<(), WalError> {
        self.write_marker(RecordType::ReceivedMarker, marker)?;
        self.last_index = marker.index;
        Ok(())
    }

    fn write_marker(&mut self, kind: RecordType, marker: Marker) -> Result<(), WalError> {
        self.check_usable()?;
        if marker.index == u64::MAX {
            return Err(WalError::IndexOutOfRange {
                index: marker.index,
            });
        }
        if marker.index < self.marker.index {
            return Err(WalError::MarkerRegression {
                index: marker.index,
                latest_index: self.marker.index,
            });
        }
        let skip_sync = crate::plant::active(crate::plant::PlantedBug::SkipFsync)
            || (kind == RecordType::ReceivedMarker
                && crate::plant::active(crate::plant::PlantedBug::SnapshotBeforeMarker));
        self.write_batch(record_bytes(16), skip_sync, |buf, crc| {
            encode_marker(buf, crc, kind, marker)
        })?;
        self.marker = marker;
        Ok(())
    }

    /// Deletes, oldest first, the segments all of whose entries are below `index`. The newest
    /// segment is never deleted, and neither are entries above the latest snapshot marker
    /// (`index` is capped at `marker.index + 1`).
    ///
    /// A failed removal or directory sync poisons the handle like a failed write: which
    /// removals are durable is then unknown, and a later directory sync may report success
    /// without having retried them (a gap in the sequence would make the WAL unopenable).
    pub fn release_to(&mut self, index: u64) -> Result<(), WalError> {
        self.check_usable()?;
        self.poisoned = true;
        self.release_to_in(index)?;
        self.poisoned = false;
        Ok(())
    }

    fn release_to_in(&mut self, index: u64) -> Result<(), WalError> {
        let limit = index.min(self.marker.index.saturating_add(1));
        let mut count = 0;
        while count + 1 < self.segments.len() && self.segments[count + 1].first_index <= limit {
            count += 1;
        }
        for _ in 0..count {
            let path = self.segments[0].path(&self.dir);
            self.fs.remove_file(&path).at(&path)?;
            self.segments.remove(0);
            // One directory sync per removal keeps the survivors a gap-free sequence.
            sync_dir(&*self.fs, &self.dir)?;
            tracing::debug!(path = %path.display(), "released WAL segment");
        }
        Ok(())
    }

    /// Index of the last entry (or of the latest marker, if a snapshot jumped past the log).
    pub fn last_index(&self) -> u64 {
        self.last_index
    }

    /// Reports the duration of every later data fsync (of `save` and `save_snapshot_marker`)
    /// to `observer`. Without one, nothing is timed.
    pub fn observe_syncs(&mut self, observer: SyncObserver) {
        self.sync_observer = Some(observer);
    }

    /// Number of fdatasync calls this handle made for `save` and `save_snapshot_marker`,
    /// counted where they are issued.
    pub fn fsync_count(&self) -> u64 {
        self.fsync_count
    }

    /// The identity recorded at creation.
    pub fn metadata(&self) -> Metadata {
        self.metadata
    }

    /// The latest snapshot marker recorded ([`Marker::ZERO`] if none).
    pub fn latest_marker(&self) -> Marker {
        self.marker
    }

    /// Number of segment files currently holding the log.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Closes the WAL and releases the directory lock. Everything saved is already durable;
    /// fails with [`WalError::Poisoned`] if an earlier write failed.
    pub fn close(self) -> Result<(), WalError> {
        self.check_usable()?;
        tracing::debug!(dir = %self.dir.display(), "closed WAL");
        Ok(())
    }

    fn check_usable(&self) -> Result<(), WalError> {
        if self.poisoned {
            return Err(WalError::Poisoned);
        }
        Ok(())
    }

    fn check_entries(&self, entries: &[EntryHead]) -> Result<(), WalError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        if first.index <= self.marker.index {
            return Err(WalError::BelowMarker {
                index: first.index,
                marker_index: self.marker.index,
            });
        }
        let expected_index = self.last_index.saturating_add(1);
        if first.index > expected_index {
            return Err(WalError::NonContiguous {
                expected_index,
                found_index: first.index,
            });
        }
        for pair in entries.windows(2) {
            let expected_index = pair[0].index.saturating_add(1);
            if pair[1].index != expected_index || pair[0].index == u64::MAX {
                return Err(WalError::NonContiguous {
                    expected_index,
                    found_index: pair[1].index,
                });
            }
        }
        entries
            .iter()
            .try_for_each(|e| check_payload(ENTRY_PREFIX_BYTES + e.payload_bytes))
    }

    /// Encodes a batch of `batch_bytes` (after a new segment's preamble if it does not fit),
    /// writes it at the tail and syncs it (unless a planted bug, `skip_sync`, says not to).
    /// The handle is poisoned if this fails.
    fn write_batch(
        &mut self,
        batch_bytes: usize,
        skip_sync: bool,
        encode_batch: impl FnOnce(&mut Vec<u8>, &mut u32),
    ) -> Result<(), WalError> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        self.poisoned = true;
        let result = self.write_batch_in(&mut buf, batch_bytes, skip_sync, encode_batch);
        if buf.capacity() <= RETAINED_BUFFER_BYTES_MAX {
            self.buf = buf;
        }
        result?;
        self.poisoned = false;
        Ok(())
    }

    fn write_batch_in(
        &mut self,
        buf: &mut Vec<u8>,
        batch_bytes: usize,
        skip_sync: bool,
        encode_batch: impl FnOnce(&mut Vec<u8>, &mut u32),
    ) -> Result<(), WalError> {
        let mut crc = self.crc;
        let full = self.tail_bytes + batch_bytes as u64 > self.config.segment_bytes;
        let rotate = full && self.tail_bytes > self.preamble_end_bytes;
        if rotate {
            let name = self.start_segment()?;
            let marker = self.marker;
            let preamble_bytes = encode_preamble(
                buf,
                &mut crc,
                name,
                self.metadata,
                marker,
                self.hard_state.as_deref(),
            );
            self.preamble_end_bytes = preamble_bytes as u64;
        }
        encode_batch(buf, &mut crc);
        assert_eq!(
            buf.len() as u64,
            batch_bytes as u64 + if rotate { self.preamble_end_bytes } else { 0 },
            "the batch size estimate must match the encoding"
        );
        // The segment's path is formatted only for an error's message.
        let path = || self.segments.last().expect("never empty").path(&self.dir);
        if let Err(e) = self.file.write_all_at(buf, self.tail_bytes) {
            return Err(e).at(&path());
        }
        if !skip_sync {
            let started = self
                .sync_observer
                .as_ref()
                .map(|_| std::time::Instant::now());
            if let Err(e) = self.file.sync_data() {
                return Err(e).at(&path());
            }
            self.fsync_count += 1;
            if let (Some(observer), Some(started)) = (&self.sync_observer, started) {
                observer(started.elapsed());
            }
        }
        self.tail_bytes += buf.len() as u64;
        self.crc = crc;
        if rotate {
            self.prepare_next_segment();
        }
        Ok(())
    }

    /// Makes the preallocated file the newest segment (rename + directory sync).
    fn start_segment(&mut self) -> Result<SegmentName, WalError> {
        let previous = *self.segments.last().expect("never empty");
        let seq = previous
            .seq
            .checked_add(1)
            .ok_or(WalError::IndexOutOfRange {
                index: previous.seq,
            })?;
        let name = SegmentName {
            seq,
            first_index: self.last_index.saturating_add(1),
        };
        let path = name.path(&self.dir);
        let file = match self.next_segment.take() {
            Some(file) => {
                self.fs
                    .rename(&self.dir.join(NEXT_SEGMENT_FILE), &path)
                    .at(&path)?;
                file
            }
            None => create_preallocated(&*self.fs, &path, self.config.segment_bytes)?,
        };
        sync_dir(&*self.fs, &self.dir)?;
        self.file = file;
        self.segments.push(name);
        self.tail_bytes = 0;
        tracing::debug!(path = %path.display(), "started WAL segment");
        Ok(name)
    }

    /// Preallocates the next segment ahead of time. A failure only costs the next rotation
    /// the allocation, so it is logged, not returned.
    fn prepare_next_segment(&mut self) {
        let path = self.dir.join(NEXT_SEGMENT_FILE);
        let prepared = create_preallocated(&*self.fs, &path, self.config.segment_bytes)
            .and_then(|file| sync_dir(&*self.fs, &self.dir).map(|()| file));
        match prepared {
            Ok(file) => self.next_segment = Some(file),
            Err(e) => tracing::warn!(error = %e, "could not preallocate the next WAL segment"),
        }
    }
}

/// Removes a never-written newest segment, wipes a torn tail, and opens the newest segment
/// for writing.
fn repair(
    fs: &dyn FileSystem,
    dir: &Path,
    outcome: &ScanOutcome,
    config: WalConfig,
) -> Result<Box<dyn FileHandle>, WalError> {
    if let Some(name) = outcome.unwritten_newest {
        let path = name.path(dir);
        tracing::warn!(
            path = %path.display(),
            "removing a WAL segment whose first write never completed"
        );
        fs.remove_file(&path).at(&path)?;
        sync_dir(fs, dir)?;
    }
    let newest = outcome
        .segments
        .last()
        .expect("scan keeps at least one segment");
    let path = newest.path(dir);
    let file = fs.open(&path, OpenMode::Existing).at(&path)?;
    let tail = outcome.tail;
    if tail.dirty_end > tail.end_offset {
        tracing::warn!(
            path = %path.display(),
            offset = tail.end_offset,
            torn_bytes = tail.dirty_end - tail.end_offset,
            "repairing a torn write at the WAL tail"
        );
        zero_range(&*file, &path, tail.end_offset, tail.dirty_end)?;
    }
    file.allocate(config.segment_bytes).at(&path)?;
    file.sync_all().at(&path)?;
    Ok(file)
}

/// Overwrites `[start, end)` of `file` with zeros.
fn zero_range(file: &dyn FileHandle, path: &Path, start: u64, end: u64) -> Result<(), WalError> {
    let zeros = vec![0u8; ZERO_CHUNK_BYTES];
    let mut offset = start;
    while offset < end {
        let len =
            usize::try_from(end - offset).map_or(ZERO_CHUNK_BYTES, |n| n.min(ZERO_CHUNK_BYTES));
        file.write_all_at(&zeros[..len], offset).at(path)?;
        offset += len as u64;
    }
    Ok(())
}
