//! The crate's error type.

use std::io;
use std::path::PathBuf;

use crate::types::{Marker, Metadata};

/// Why a file was judged corrupt. Carried by [`WalError::Corrupt`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Corruption {
    /// The record's CRC does not match its bytes (or the chain leading to it).
    Checksum,
    /// The record header is malformed (unknown type, non-zero reserved bytes, length past the
    /// end of the file).
    BadHeader(&'static str),
    /// The record passed its checksum but its body is not what the format requires.
    BadRecord(&'static str),
    /// The segment does not continue the checksum chain of the segment before it: it was
    /// written by another WAL, or the sequence was reordered.
    ChainBroken,
    /// The segment belongs to another node or cluster.
    ForeignSegment {
        /// Metadata of the first segment of this WAL.
        expected: Metadata,
        /// Metadata found in this segment.
        found: Metadata,
    },
    /// A segment of the sequence is missing just before this file.
    MissingSegment {
        /// The sequence number that should exist.
        expected_seq: u64,
    },
    /// An entry index skips ahead of the log.
    IndexGap {
        /// The largest index the entry could have had.
        expected_index_max: u64,
        /// The index found.
        found_index: u64,
    },
    /// Valid records follow an invalid one in the newest segment, so the damage is not a torn
    /// write at the tail.
    NotATornTail,
    /// Deciding whether the damage is a torn write would hash more than
    /// [`crate::TAIL_CHECK_BYTES_MAX`] bytes (many plausible record headers after it), so it
    /// is not proven torn.
    CheckBudgetExhausted {
        /// Bytes hashed before giving up.
        bytes: u64,
    },
}

impl std::fmt::Display for Corruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Checksum => write!(f, "checksum mismatch"),
            Self::BadHeader(why) => write!(f, "bad record header: {why}"),
            Self::BadRecord(why) => write!(f, "bad record: {why}"),
            Self::ChainBroken => write!(
                f,
                "segment does not continue the checksum chain of the previous segment"
            ),
            Self::ForeignSegment { expected, found } => write!(
                f,
                "segment belongs to node {} of cluster {}, expected node {} of cluster {}",
                found.node_id, found.cluster_id, expected.node_id, expected.cluster_id
            ),
            Self::MissingSegment { expected_seq } => {
                write!(
                    f,
                    "segment with sequence number {expected_seq:#x} is missing"
                )
            }
            Self::IndexGap {
                expected_index_max,
                found_index,
            } => write!(
                f,
                "entry index {found_index} skips ahead (at most {expected_index_max} expected)"
            ),
            Self::NotATornTail => write!(
                f,
                "invalid record followed by valid records (damage before the tail)"
            ),
            Self::CheckBudgetExhausted { bytes } => write!(
                f,
                "invalid record not proven to be a torn write (gave up after hashing {bytes} bytes)"
            ),
        }
    }
}

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// An I/O operation failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Another process (or another handle in this process) holds the directory lock.
    #[error("{path} is locked by another WAL owner")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// `create` found an existing WAL.
    #[error("a WAL already exists in {dir}")]
    AlreadyExists {
        /// The WAL directory.
        dir: PathBuf,
    },
    /// `open` or `markers` found no WAL.
    #[error("no WAL in {dir}")]
    NotFound {
        /// The WAL directory.
        dir: PathBuf,
    },
    /// A file is corrupt: the node must not start on it.
    #[error("corrupt file {path} at byte {offset}: {reason}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Byte offset of the first bad record (or of the bad field) in that file.
        offset: u64,
        /// What is wrong.
        reason: Corruption,
    },
    /// `open` was asked for a marker that the WAL never recorded.
    #[error("snapshot marker {marker} is not recorded in the WAL")]
    MarkerNotFound {
        /// The requested marker.
        marker: Marker,
    },
    /// `open` was asked for a marker whose following entries were released.
    #[error("entries after snapshot marker {marker} were released (WAL starts at {first_index})")]
    MarkerReleased {
        /// The requested marker.
        marker: Marker,
        /// First index still held by the WAL.
        first_index: u64,
    },
    /// The entry at the marker's index has another term.
    #[error("snapshot marker {marker} disagrees with the logged entry of term {found_term}")]
    MarkerMismatch {
        /// The requested marker.
        marker: Marker,
        /// Term of the entry found at that index.
        found_term: u64,
    },
    /// The entries after the marker are not contiguous in the WAL (a later snapshot marker
    /// jumped over them): open at a newer marker.
    #[error(
        "entries after snapshot marker {marker} are not contiguous (next found: {found_index})"
    )]
    EntriesUnavailable {
        /// The requested marker.
        marker: Marker,
        /// Index of the entry that broke contiguity.
        found_index: u64,
    },
    /// `save` got entries that do not extend or overwrite the log contiguously.
    #[error("entry index {found_index} is not contiguous (expected {expected_index})")]
    NonContiguous {
        /// The index that was expected (or the largest acceptable one for the first entry).
        expected_index: u64,
        /// The index supplied.
        found_index: u64,
    },
    /// `save` got an entry at or below the latest snapshot marker, which is committed.
    #[error("entry index {index} is at or below the latest snapshot marker index {marker_index}")]
    BelowMarker {
        /// The index supplied.
        index: u64,
        /// Index of the latest snapshot marker.
        marker_index: u64,
    },
    /// `save_snapshot_marker` got a marker older than the latest one.
    #[error("snapshot marker index {index} is older than the latest marker index {latest_index}")]
    MarkerRegression {
        /// The index supplied.
        index: u64,
        /// Index of the latest marker.
        latest_index: u64,
    },
    /// A record would exceed the format's size bound.
    #[error("record of {bytes} bytes exceeds the maximum of {max_bytes} bytes")]
    RecordTooLarge {
        /// Size requested.
        bytes: u64,
        /// The bound.
        max_bytes: u64,
    },
    /// An index or segment sequence number reached `u64::MAX`.
    #[error("index or sequence number {index} is out of range")]
    IndexOutOfRange {
        /// The value that cannot be extended.
        index: u64,
    },
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(&'static str),
    /// A previous write or fsync failed; the on-disk state is unknown, so the handle refuses
    /// further writes. Reopen the WAL to repair and continue.
    #[error("the WAL handle is unusable after an earlier write or sync failure")]
    Poisoned,
}

/// Attaches a path to an `io::Error`.
pub(crate) trait IoContext<T> {
    /// Converts the error into [`WalError::Io`] naming `path`.
    fn at(self, path: &std::path::Path) -> Result<T, WalError>;
}

impl<T> IoContext<T> for Result<T, io::Error> {
    fn at(self, path: &std::path::Path) -> Result<T, WalError> {
        self.map_err(|source| WalError::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}
