//! The operator's explicit repair: cut a damaged log at its first damaged record.
//!
//! `Wal::open` refuses every damage it cannot prove to be a torn write. An operator who
//! accepts losing what follows the damage calls [`crate::Wal::repair`]: it keeps every record
//! before the first damaged one, zeroes the rest of that segment, deletes later segments, and
//! reports exactly what it dropped.

use std::path::{Path, PathBuf};

use crate::error::{Corruption, IoContext, WalError};
use crate::filesystem::{FileSystem, OpenMode};
use crate::fs::{list_segments, lock_dir, map_file, sync_dir, SegmentName};
use crate::record::{decode, parse, peek_crc, peek_prev_crc, Body, HEADER_BYTES};
use crate::scan::{scan, Event};
use crate::types::Marker;

/// Chunk of zeros written when a dropped range is wiped.
const ZERO_CHUNK_BYTES: usize = 1 << 20;

/// What [`crate::Wal::repair`] dropped (or, in a dry run, would drop).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairReport {
    /// The damage found; `None` when the WAL opens as it is (a provable torn tail is left for
    /// `Wal::open` to repair).
    pub damage: Option<Damage>,
    /// Whether the files were changed (false for a dry run or when there was nothing to do).
    pub applied: bool,
}

/// The first damaged record of a WAL and everything dropped from it on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The segment holding the first damaged record.
    pub path: PathBuf,
    /// Offset of that record in `path`.
    pub offset: u64,
    /// What is wrong there.
    pub reason: Corruption,
    /// Files cut or deleted, in log order: the damaged segment first.
    pub dropped: Vec<DroppedRange>,
    /// The records that can be identified in the dropped ranges, in order.
    pub records: Vec<DroppedRecord>,
}

/// A byte range dropped from one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedRange {
    /// The file.
    pub path: PathBuf,
    /// First byte dropped.
    pub offset: u64,
    /// Bytes dropped: up to the last non-zero byte of the file.
    pub bytes: u64,
    /// True when the whole file is deleted.
    pub file_deleted: bool,
}

/// A record found in a dropped range by walking the framing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedRecord {
    /// The file holding it.
    pub path: PathBuf,
    /// Its offset.
    pub offset: u64,
    /// What its header and payload say.
    pub kind: DroppedKind,
    /// True when its checksum chains from the record before it (its contents are intact).
    pub verified: bool,
}

/// The kind of a dropped record, as far as it can be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DroppedKind {
    /// A log entry.
    Entry {
        /// Its index.
        index: u64,
        /// Its term.
        term: u64,
    },
    /// A hard state.
    HardState,
    /// A snapshot marker (`received`: from a leader).
    Marker {
        /// The marker.
        marker: Marker,
        /// Whether it is a received snapshot's marker.
        received: bool,
    },
    /// A segment header or metadata record.
    Preamble,
    /// A record whose body does not decode.
    Unreadable,
}

impl std::fmt::Display for DroppedKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Entry { index, term } => write!(f, "entry {index} (term {term})"),
            Self::HardState => write!(f, "hard state"),
            Self::Marker { marker, received } => {
                let origin = if *received { "received " } else { "" };
                write!(f, "{origin}snapshot marker {marker}")
            }
            Self::Preamble => write!(f, "segment header or metadata"),
            Self::Unreadable => write!(f, "record that does not decode"),
        }
    }
}

/// Tracks the log's last index during the repair scan, with replay's rules, so that an entry
/// that skips ahead is found as damage too.
struct LogShape {
    last_index: u64,
}

impl LogShape {
    fn visit(&mut self, event: Event<'_>, path: &Path, offset: u64) -> Result<(), WalError> {
        match event {
            Event::HardState(_) => {}
            Event::Marker {
                marker,
                received: true,
            } => self.last_index = marker.index,
            Event::Marker { marker, .. } => self.last_index = self.last_index.max(marker.index),
            Event::Entry { index, .. } => {
                let expected_index_max = self.last_index.saturating_add(1);
                if index == 0 || index > expected_index_max {
                    return Err(WalError::Corrupt {
                        path: path.to_path_buf(),
                        offset,
                        reason: Corruption::IndexGap {
                            expected_index_max,
                            found_index: index,
                        },
                    });
                }
                self.last_index = index;
            }
        }
        Ok(())
    }
}

/// See [`crate::Wal::repair`].
pub(crate) fn repair(
    fs: &dyn FileSystem,
    dir: &Path,
    dry_run: bool,
) -> Result<RepairReport, WalError> {
    let _lock = lock_dir(fs, dir)?;
    let names = list_segments(fs, dir)?;
    let first = names.first().ok_or_else(|| WalError::NotFound {
        dir: dir.to_path_buf(),
    })?;
    let mut shape = LogShape {
        last_index: first.first_index.saturating_sub(1),
    };
    let (path, offset, reason) = match scan(fs, dir, &names, &mut |event, path, offset| {
        shape.visit(event, path, offset)
    }) {
        Ok(_) => {
            return Ok(RepairReport {
                damage: None,
                applied: false,
            })
        }
        Err(WalError::Corrupt {
            path,
            offset,
            reason,
        }) => (path, offset, reason),
        Err(other) => return Err(other),
    };
    let position = names
        .iter()
        .position(|name| name.path(dir) == path)
        .ok_or_else(|| WalError::Corrupt {
            path: path.clone(),
            offset,
            reason: Corruption::BadRecord("damage reported outside the WAL's segments"),
        })?;
    let damage = plan(fs, dir, &names[position..], &path, offset, reason)?;
    if damage.dropped.first().is_some_and(|d| d.file_deleted) && position == 0 {
        // Nothing before the damage would be left: there is no log to keep.
        return Err(WalError::Corrupt {
            path,
            offset,
            reason: damage.reason,
        });
    }
    if !dry_run {
        apply(fs, dir, &damage)?;
    }
    Ok(RepairReport {
        damage: Some(damage),
        applied: !dry_run,
    })
}

/// Works out what cutting at (`path`, `offset`) drops; `names[0]` is the damaged segment.
fn plan(
    fs: &dyn FileSystem,
    dir: &Path,
    names: &[SegmentName],
    path: &Path,
    offset: u64,
    reason: Corruption,
) -> Result<Damage, WalError> {
    let mut dropped = Vec::new();
    let mut records = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let file = name.path(dir);
        let view = map_file(fs, &file)?;
        let data: &[u8] = &view;
        // A segment cut inside its header or metadata would be unreadable: drop it whole.
        let from = if i == 0 && offset as usize >= preamble_end(data) {
            offset as usize
        } else {
            0
        };
        let end = data
            .iter()
            .rposition(|&b| b != 0)
            .map_or(from, |p| (p + 1).max(from));
        dropped.push(DroppedRange {
            path: file.clone(),
            offset: from as u64,
            bytes: (end - from) as u64,
            file_deleted: from == 0,
        });
        walk_records(&file, data, from, &mut records);
    }
    Ok(Damage {
        path: path.to_path_buf(),
        offset,
        reason,
        dropped,
        records,
    })
}

/// Offset just past a segment's header and metadata, when both parse in the segment's own
/// chain; `usize::MAX` otherwise.
fn preamble_end(data: &[u8]) -> usize {
    let seed = peek_prev_crc(data, 0).unwrap_or(0);
    parse(data, 0, seed)
        .and_then(|header| parse(data, header.next_offset, header.crc))
        .map_or(usize::MAX, |meta| meta.next_offset)
}

/// Lists the records framed from `from` on, following each header's stated length while it
/// is well formed. A record is verified when it chains from the stored CRC of the one before
/// (the first record of a deleted segment: from the CRC its header claims).
fn walk_records(path: &Path, data: &[u8], from: usize, out: &mut Vec<DroppedRecord>) {
    let mut at = from;
    let mut seed = if from == 0 {
        peek_prev_crc(data, 0)
    } else {
        None
    };
    while at + HEADER_BYTES <= data.len() {
        let header = &data[at..at + HEADER_BYTES];
        if header.iter().all(|&b| b == 0) {
            break;
        }
        let parsed = seed.and_then(|s| parse(data, at, s).ok());
        let verified = parsed.is_some();
        let kind = match parsed.as_ref().map(decode) {
            Some(Ok(body)) => kind_of(&body),
            Some(Err(_)) => DroppedKind::Unreadable,
            None => match unverified_kind(data, at) {
                Some(kind) => kind,
                // Not even a well-formed header: the rest is reported as bytes only.
                None => break,
            },
        };
        out.push(DroppedRecord {
            path: path.to_path_buf(),
            offset: at as u64,
            kind,
            verified,
        });
        let payload_bytes = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
        let next = at.saturating_add(crate::record::record_bytes(payload_bytes));
        if next > data.len() {
            break;
        }
        seed = peek_crc(data, at);
        at = next;
    }
}

fn kind_of(body: &Body<'_>) -> DroppedKind {
    match body {
        Body::SegmentHeader(_) | Body::Metadata(_) => DroppedKind::Preamble,
        Body::HardState(_) => DroppedKind::HardState,
        Body::Marker(marker) => DroppedKind::Marker {
            marker: *marker,
            received: false,
        },
        Body::ReceivedMarker(marker) => DroppedKind::Marker {
            marker: *marker,
            received: true,
        },
        Body::Entry { index, term, .. } => DroppedKind::Entry {
            index: *index,
            term: *term,
        },
    }
}

/// Reads a record's kind from its header and payload without its checksum; `None` when the
/// header is not well formed (the walk stops there).
fn unverified_kind(data: &[u8], at: usize) -> Option<DroppedKind> {
    use crate::record::RecordType;
    let header = &data[at..at + HEADER_BYTES];
    if header[5..8] != [0, 0, 0] {
        return None;
    }
    let u64_at = |offset: usize| {
        data.get(offset..offset + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    let payload = at + HEADER_BYTES;
    Some(match RecordType::from_u8(header[4])? {
        RecordType::SegmentHeader | RecordType::Metadata => DroppedKind::Preamble,
        RecordType::HardState => DroppedKind::HardState,
        RecordType::Entry => match (u64_at(payload), u64_at(payload + 8)) {
            (Some(index), Some(term)) => DroppedKind::Entry { index, term },
            _ => DroppedKind::Unreadable,
        },
        kind @ (RecordType::Marker | RecordType::ReceivedMarker) => {
            match (u64_at(payload), u64_at(payload + 8)) {
                (Some(index), Some(term)) => DroppedKind::Marker {
                    marker: Marker { index, term },
                    received: kind == RecordType::ReceivedMarker,
                },
                _ => DroppedKind::Unreadable,
            }
        }
    })
}

/// Deletes the dropped files newest first (the survivors stay a gap-free sequence at every
/// step) and zeroes the dropped range of a cut one, syncing each change.
fn apply(fs: &dyn FileSystem, dir: &Path, damage: &Damage) -> Result<(), WalError> {
    for range in damage.dropped.iter().rev() {
        if range.file_deleted {
            fs.remove_file(&range.path).at(&range.path)?;
            sync_dir(fs, dir)?;
            tracing::warn!(path = %range.path.display(), "repair: deleted WAL segment");
            continue;
        }
        let file = fs.open(&range.path, OpenMode::Existing).at(&range.path)?;
        let zeros = vec![0u8; ZERO_CHUNK_BYTES];
        let (mut at, end) = (range.offset, range.offset + range.bytes);
        while at < end {
            let len =
                usize::try_from(end - at).map_or(ZERO_CHUNK_BYTES, |n| n.min(ZERO_CHUNK_BYTES));
            file.write_all_at(&zeros[..len], at).at(&range.path)?;
            at += len as u64;
        }
        file.sync_all().at(&range.path)?;
        tracing::warn!(
            path = %range.path.display(),
            offset = range.offset,
            bytes = range.bytes,
            "repair: cut WAL segment"
        );
    }
    Ok(())
}
