//! Plain data types shared by the WAL and the snapshot store.

/// Default segment size: 64 MiB.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;
/// Smallest accepted segment size.
pub const MIN_SEGMENT_BYTES: u64 = 4096;
/// Largest accepted segment size (1 TiB).
pub const MAX_SEGMENT_BYTES: u64 = 1 << 40;

/// Tuning of a [`crate::Wal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalConfig {
    /// Size each segment file is preallocated to; a segment is closed once the next batch
    /// does not fit. A single batch larger than this grows its segment beyond it.
    pub segment_bytes: u64,
}

impl Default for WalConfig {
    fn default() -> Self {
        Self {
            segment_bytes: DEFAULT_SEGMENT_BYTES,
        }
    }
}

impl WalConfig {
    /// Checks every field against its bounds.
    pub fn validate(&self) -> Result<(), crate::WalError> {
        if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&self.segment_bytes) {
            return Err(crate::WalError::InvalidConfig(
                "segment_bytes must be between 4 KiB and 1 TiB",
            ));
        }
        Ok(())
    }
}

/// Identity of the WAL's owner; every segment repeats it and `open` refuses a segment whose
/// metadata differs from the first one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Metadata {
    /// The node that owns the log.
    pub node_id: u64,
    /// The cluster the node belongs to.
    pub cluster_id: u64,
}

/// One log entry: an index, a term and bytes the WAL does not interpret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Position in the log, starting at 1.
    pub index: u64,
    /// Term the entry was created in.
    pub term: u64,
    /// Opaque content (raftnode stores an encoded raft `Entry`).
    pub payload: Vec<u8>,
}

/// What [`crate::Wal::save_with`] needs to know of an entry before encoding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryHead {
    /// Position in the log, starting at 1.
    pub index: u64,
    /// Term the entry was created in.
    pub term: u64,
    /// Size of the opaque payload the caller will write.
    pub payload_bytes: usize,
}

/// A snapshot marker: the log up to and including `index` is covered by a snapshot taken at
/// `term`. `Marker { index: 0, term: 0 }` means "no snapshot" and is always valid.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Marker {
    /// Last log index covered by the snapshot.
    pub index: u64,
    /// Term of the entry at `index`.
    pub term: u64,
}

impl Marker {
    /// The "no snapshot" marker.
    pub const ZERO: Marker = Marker { index: 0, term: 0 };
}

impl std::fmt::Display for Marker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "(index {}, term {})", self.index, self.term)
    }
}

/// What `Wal::open` reads back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// The identity recorded at creation.
    pub metadata: Metadata,
    /// The latest hard state saved, if any.
    pub hard_state: Option<Vec<u8>>,
    /// Every entry after the marker the WAL was opened at, contiguous, in index order.
    pub entries: Vec<Entry>,
}
