//! The snapshot format (version 2) of the key-value map and the
//! deduplication window.
//!
//! ```text
//! magic        4 bytes   b"RKVS"
//! version      u32 LE    2
//! entry_count  u64 LE
//! entry_count times, keys in strictly increasing byte order:
//!     key_bytes    u64 LE, then the key
//!     value_bytes  u64 LE, then the value
//! dedup window           (version 2 only) see `DedupWindow::encode`
//! crc32        u32 LE    CRC-32 (IEEE) of every byte before it
//! ```
//!
//! Version 1 (written before deduplication) has no dedup window; it is still
//! read, with an empty window. A version above 2 is refused with an error
//! that names both versions.
//!
//! The encoding is canonical: one state has exactly one encoding, so nodes
//! that applied the same log produce byte-identical snapshots. Decoding
//! checks the checksum first, bounds every length by the bytes that remain
//! (no allocation is sized by a length read from the input), and rejects
//! unsorted or duplicate keys and trailing bytes.

use bytes::Bytes;

use crate::dedup::DedupWindow;

/// First four bytes of every snapshot.
pub const SNAPSHOT_MAGIC: [u8; 4] = *b"RKVS";
/// The map type of the store: ordered (deterministic snapshots) and
/// persistent (O(1) clones for snapshots taken off the Raft loop).
pub(crate) type Map = imbl::OrdMap<Bytes, Bytes>;

/// The snapshot format version this crate writes (it also reads version 1).
pub const SNAPSHOT_VERSION: u32 = 2;
/// The first version, without the dedup window.
const SNAPSHOT_VERSION_V1: u32 = 1;

const HEADER_BYTES: usize = 4 + 4 + 8;
const CRC_BYTES: usize = 4;

/// Encodes the whole map and the dedup window.
pub(crate) fn encode(map: &Map, dedup: &DedupWindow) -> Vec<u8> {
    let payload_bytes: usize = map.iter().map(|(k, v)| 16 + k.len() + v.len()).sum();
    let mut out = Vec::with_capacity(HEADER_BYTES + payload_bytes + CRC_BYTES);
    out.extend_from_slice(&SNAPSHOT_MAGIC);
    out.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    out.extend_from_slice(&(map.len() as u64).to_le_bytes());
    for (key, value) in map {
        out.extend_from_slice(&(key.len() as u64).to_le_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
        out.extend_from_slice(value);
    }
    dedup.encode(&mut out);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes a snapshot, or says why it is not one.
pub(crate) fn decode(data: &[u8]) -> Result<(Map, DedupWindow), String> {
    if data.len() < HEADER_BYTES + CRC_BYTES {
        return Err(format!("{} bytes is too short for a snapshot", data.len()));
    }
    let (body, crc_bytes) = data.split_at(data.len() - CRC_BYTES);
    let stored_crc = u32::from_le_bytes(crc_bytes.try_into().map_err(|_| "crc field")?);
    let actual_crc = crc32fast::hash(body);
    if stored_crc != actual_crc {
        return Err(format!(
            "checksum mismatch: stored {stored_crc:#010x}, computed {actual_crc:#010x}"
        ));
    }
    let mut reader = Reader { rest: body };
    let magic = reader.take(4)?;
    if magic != SNAPSHOT_MAGIC {
        return Err(format!("bad magic {magic:?}, expected {SNAPSHOT_MAGIC:?}"));
    }
    let version = u32::from_le_bytes(reader.take(4)?.try_into().map_err(|_| "version field")?);
    if version != SNAPSHOT_VERSION && version != SNAPSHOT_VERSION_V1 {
        return Err(format!(
            "unsupported snapshot version {version} (this build reads versions \
             {SNAPSHOT_VERSION_V1} and {SNAPSHOT_VERSION})"
        ));
    }
    let entry_count = reader.u64()?;
    let map = decode_entries(&mut reader, entry_count)?;
    if version == SNAPSHOT_VERSION_V1 {
        if !reader.rest.is_empty() {
            return Err(format!(
                "{} trailing bytes after {entry_count} entries",
                reader.rest.len()
            ));
        }
        return Ok((map, DedupWindow::new()));
    }
    let dedup = DedupWindow::decode(reader.rest)?;
    Ok((map, dedup))
}

fn decode_entries(reader: &mut Reader<'_>, entry_count: u64) -> Result<Map, String> {
    let mut map = Map::new();
    let mut previous_key: Option<Bytes> = None;
    for entry in 0..entry_count {
        let key = Bytes::copy_from_slice(reader.sized()?);
        let value = Bytes::copy_from_slice(reader.sized()?);
        if previous_key
            .as_ref()
            .is_some_and(|previous| *previous >= key)
        {
            return Err(format!(
                "entry {entry}: keys are not in strictly increasing order"
            ));
        }
        previous_key = Some(key.clone());
        map.insert(key, value);
    }
    Ok(map)
}

/// A cursor that never reads past the end of its input.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], String> {
        if count > self.rest.len() {
            return Err(format!(
                "truncated: need {count} bytes, {} left",
                self.rest.len()
            ));
        }
        let (head, tail) = self.rest.split_at(count);
        self.rest = tail;
        Ok(head)
    }

    fn u64(&mut self) -> Result<u64, String> {
        let bytes = self.take(8)?;
        Ok(u64::from_le_bytes(
            bytes.try_into().map_err(|_| "u64 field")?,
        ))
    }

    /// A length-prefixed byte string; the length is checked against what is left.
    fn sized(&mut self) -> Result<&'a [u8], String> {
        let length = self.u64()?;
        let length = usize::try_from(length)
            .map_err(|_| format!("length {length} does not fit in memory"))?;
        self.take(length)
    }
}
