//! The snapshot format (version 2): framed sections, checksummed.
//!
//! ```text
//! magic          4 bytes   b"RKVS"
//! version        u32 LE    2
//! section_count  u32 LE
//! section_count times, tags strictly increasing:
//!     tag          u32 LE   (1 = keyspace, see `mvcc::codec`)
//!     body_bytes   u64 LE, then the body
//! crc32          u32 LE    CRC-32 (IEEE) of every byte before it
//! ```
//!
//! Tag 2 is the request-dedup window (see `DedupWindow::encode`), tag 3 the
//! granted leases (see `mvcc::codec::encode_leases`; a snapshot written
//! before leases existed has no tag 3 and restores with none). Sections
//! let replicated state travel in the same snapshot under its own tag
//! without touching the keyspace's encoding. Unknown tags are refused, never skipped: a
//! snapshot this build cannot fully restore must not be half-restored.
//!
//! Version 1 (raftexample's plain map: `entry_count u64`, then sorted
//! `key_bytes u64, key, value_bytes u64, value`) is still read: its keys
//! become one write txn at revision 2.
//!
//! The encoding is canonical: one state has exactly one encoding, so nodes
//! that applied the same log produce byte-identical snapshots. Decoding
//! checks the checksum first, bounds every length by the bytes that remain
//! (no allocation is sized by a length read from the input), and rejects
//! unsorted or duplicate entries and trailing bytes.

use bytes::Bytes;
use etcdproto::etcdserverpb as pb;

use crate::mvcc::{self, Keyspace};

use crate::dedup::DedupWindow;

/// First four bytes of every snapshot.
pub const SNAPSHOT_MAGIC: [u8; 4] = *b"RKVS";

/// The snapshot format version this crate writes.
pub const SNAPSHOT_VERSION: u32 = 2;

/// The raftexample-era format, still readable.
const SNAPSHOT_VERSION_MAP: u32 = 1;

/// Section tag of the keyspace.
pub(crate) const SECTION_KEYSPACE: u32 = 1;
/// Section tag of the request-dedup window.
pub(crate) const SECTION_DEDUP: u32 = 2;
/// Section tag of the granted leases.
pub(crate) const SECTION_LEASES: u32 = 3;

const HEADER_BYTES: usize = 4 + 4;
const CRC_BYTES: usize = 4;

/// What a snapshot restores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Restored {
    pub(crate) keyspace: Keyspace,
    pub(crate) dedup: DedupWindow,
}

/// Encodes the replicated state.
pub(crate) fn encode(keyspace: &Keyspace, dedup: &DedupWindow) -> Vec<u8> {
    let mut body = Vec::new();
    mvcc::encode_section(keyspace, &mut body);
    let mut dedup_body = Vec::new();
    dedup.encode(&mut dedup_body);
    let mut lease_body = Vec::new();
    mvcc::encode_leases(keyspace, &mut lease_body);
    let sections = [
        (SECTION_KEYSPACE, body),
        (SECTION_DEDUP, dedup_body),
        (SECTION_LEASES, lease_body),
    ];
    let total: usize = sections.iter().map(|(_, body)| 12 + body.len()).sum();
    let mut out = Vec::with_capacity(HEADER_BYTES + 4 + total + CRC_BYTES);
    out.extend_from_slice(&SNAPSHOT_MAGIC);
    out.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    out.extend_from_slice(&(sections.len() as u32).to_le_bytes());
    for (tag, body) in &sections {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(body);
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes a snapshot, or says why it is not one.
pub(crate) fn decode(data: &[u8]) -> Result<Restored, String> {
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
    let restored = match version {
        SNAPSHOT_VERSION => decode_sections(&mut reader)?,
        SNAPSHOT_VERSION_MAP => decode_map(&mut reader)?,
        other => {
            return Err(format!(
                "unsupported snapshot version {other} (this build reads {SNAPSHOT_VERSION_MAP} and {SNAPSHOT_VERSION})"
            ))
        }
    };
    if !reader.rest.is_empty() {
        return Err(format!("{} trailing bytes", reader.rest.len()));
    }
    Ok(restored)
}

fn decode_sections(reader: &mut Reader<'_>) -> Result<Restored, String> {
    let section_count = reader.u32()?;
    let mut keyspace = None;
    let mut dedup = DedupWindow::new();
    let mut leases = Vec::new();
    let mut previous_tag = 0;
    for _ in 0..section_count {
        let tag = reader.u32()?;
        if tag <= previous_tag {
            return Err(format!("section {tag} out of order"));
        }
        previous_tag = tag;
        let mut section = Reader {
            rest: reader.sized()?,
        };
        match tag {
            SECTION_KEYSPACE => keyspace = Some(mvcc::decode_section(&mut section)?),
            SECTION_DEDUP => {
                dedup = DedupWindow::decode(section.rest)?;
                section.rest = &[];
            }
            SECTION_LEASES => leases = mvcc::decode_leases(&mut section)?,
            other => return Err(format!("unknown snapshot section {other}")),
        }
        if !section.rest.is_empty() {
            return Err(format!(
                "{} trailing bytes in section {tag}",
                section.rest.len()
            ));
        }
    }
    let mut keyspace: Keyspace = keyspace.ok_or("no keyspace section")?;
    keyspace.restore_leases(&leases)?;
    Ok(Restored { keyspace, dedup })
}

/// Version 1: a plain sorted map, restored as one write txn at revision 2.
fn decode_map(reader: &mut Reader<'_>) -> Result<Restored, String> {
    let entry_count = reader.u64()?;
    let mut ops = Vec::new();
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
        ops.push(pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                key: key.to_vec(),
                value: value.to_vec(),
                ..Default::default()
            })),
        });
    }
    let mut keyspace = Keyspace::new();
    if !ops.is_empty() {
        keyspace
            .txn(&pb::TxnRequest {
                compare: Vec::new(),
                success: ops,
                failure: Vec::new(),
            })
            .map_err(|error| format!("version 1 map: {error}"))?;
    }
    Ok(Restored {
        keyspace,
        dedup: DedupWindow::new(),
    })
}

/// A cursor that never reads past the end of its input.
pub(crate) struct Reader<'a> {
    pub(crate) rest: &'a [u8],
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

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        self.take(N)?
            .try_into()
            .map_err(|_| format!("{N}-byte field"))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    pub(crate) fn i32(&mut self) -> Result<i32, String> {
        Ok(i32::from_le_bytes(self.array()?))
    }

    /// A length-prefixed byte string; the length is checked against what is left.
    pub(crate) fn sized(&mut self) -> Result<&'a [u8], String> {
        let length = self.u64()?;
        let length = usize::try_from(length)
            .map_err(|_| format!("length {length} does not fit in memory"))?;
        self.take(length)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version 2 snapshot as written before leases existed: sections 1
    /// and 2 only.
    fn without_lease_section(keyspace: &Keyspace) -> Vec<u8> {
        let mut body = Vec::new();
        mvcc::encode_section(keyspace, &mut body);
        let mut dedup_body = Vec::new();
        DedupWindow::new().encode(&mut dedup_body);
        let mut out = Vec::new();
        out.extend_from_slice(&SNAPSHOT_MAGIC);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        out.extend_from_slice(&2u32.to_le_bytes());
        for (tag, body) in [(SECTION_KEYSPACE, body), (SECTION_DEDUP, dedup_body)] {
            out.extend_from_slice(&tag.to_le_bytes());
            out.extend_from_slice(&(body.len() as u64).to_le_bytes());
            out.extend_from_slice(&body);
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    #[test]
    fn a_snapshot_without_the_lease_section_restores_with_no_leases() {
        let mut keyspace = Keyspace::new();
        keyspace
            .put(&pb::PutRequest {
                key: b"a".to_vec(),
                value: b"1".to_vec(),
                ..Default::default()
            })
            .unwrap();
        let restored = decode(&without_lease_section(&keyspace)).unwrap();
        assert_eq!(restored.keyspace, keyspace);
        assert_eq!(restored.keyspace.lease_count(), 0);
    }

    #[test]
    fn leases_round_trip_and_a_key_on_a_missing_lease_is_refused() {
        let mut keyspace = Keyspace::new();
        keyspace
            .lease_grant(&pb::LeaseGrantRequest { id: 5, ttl: 10 })
            .unwrap();
        keyspace
            .put(&pb::PutRequest {
                key: b"a".to_vec(),
                value: b"1".to_vec(),
                lease: 5,
                ..Default::default()
            })
            .unwrap();
        let bytes = encode(&keyspace, &DedupWindow::new());
        assert_eq!(decode(&bytes).unwrap().keyspace, keyspace);
        let error = decode(&without_lease_section(&keyspace)).unwrap_err();
        assert!(error.contains("lease 5"), "{error}");
    }
}
