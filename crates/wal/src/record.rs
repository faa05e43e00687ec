//! Record framing: encoding into a buffer and validating decoding from a byte slice.
//!
//! A record is a 12-byte header (payload length `u32`, type `u8`, three zero bytes, CRC `u32`,
//! all little-endian) followed by the payload and zero padding up to a multiple of 8 bytes.
//! The CRC is crc32 (IEEE) seeded with the previous record's CRC, over header bytes 0..8, the
//! payload and the padding.

use crate::types::{Marker, Metadata};

/// Size of a record header.
pub(crate) const HEADER_BYTES: usize = 12;
/// Bound on a payload read from or written to disk (guards allocations against forged lengths).
pub(crate) const MAX_PAYLOAD_BYTES: usize = 256 << 20;
/// Bytes before an entry's opaque payload (index and term).
pub(crate) const ENTRY_PREFIX_BYTES: usize = 16;
/// Magic number opening every segment header payload.
pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"RAFTKVWL";
/// On-disk format version.
pub(crate) const FORMAT_VERSION: u32 = 1;
/// Payload size of a segment header record.
pub(crate) const SEGMENT_HEADER_BYTES: usize = 32;
/// Offset of `prev_crc` inside a segment header payload.
const PREV_CRC_OFFSET: usize = 12;

/// Record types. Zero is never used, so a zeroed region never parses as a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum RecordType {
    SegmentHeader = 1,
    Metadata = 2,
    HardState = 3,
    Marker = 4,
    Entry = 5,
    /// A snapshot received from a leader: replaces the log up to and including its index.
    ReceivedMarker = 6,
}

impl RecordType {
    pub(crate) fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(Self::SegmentHeader),
            2 => Some(Self::Metadata),
            3 => Some(Self::HardState),
            4 => Some(Self::Marker),
            5 => Some(Self::Entry),
            6 => Some(Self::ReceivedMarker),
            _ => None,
        }
    }
}

/// First record of every segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub seq: u64,
    pub first_index: u64,
    pub prev_crc: u32,
}

/// A decoded record body.
#[derive(Debug)]
pub(crate) enum Body<'a> {
    SegmentHeader(SegmentHeader),
    Metadata(Metadata),
    HardState(&'a [u8]),
    Marker(Marker),
    ReceivedMarker(Marker),
    Entry {
        index: u64,
        term: u64,
        data: &'a [u8],
    },
}

/// Total on-disk size of a record with `payload_bytes` of payload.
pub(crate) fn record_bytes(payload_bytes: usize) -> usize {
    (HEADER_BYTES + payload_bytes + 7) & !7
}

/// Appends one record made of `parts` to `buf`, chaining from and updating `crc`.
pub(crate) fn encode(buf: &mut Vec<u8>, crc: &mut u32, kind: RecordType, parts: &[&[u8]]) {
    let payload_bytes: usize = parts.iter().map(|p| p.len()).sum();
    encode_with(buf, crc, kind, payload_bytes, |buf| {
        for part in parts {
            buf.extend_from_slice(part);
        }
    });
}

/// Appends one record of `payload_bytes` bytes, which `write_payload` appends to `buf`,
/// chaining from and updating `crc`.
///
/// # Panics
/// If `write_payload` appends another number of bytes.
pub(crate) fn encode_with(
    buf: &mut Vec<u8>,
    crc: &mut u32,
    kind: RecordType,
    payload_bytes: usize,
    write_payload: impl FnOnce(&mut Vec<u8>),
) {
    assert!(
        payload_bytes <= MAX_PAYLOAD_BYTES,
        "caller must bound payloads"
    );
    let start = buf.len();
    buf.reserve(record_bytes(payload_bytes));
    buf.extend_from_slice(&(payload_bytes as u32).to_le_bytes());
    buf.extend_from_slice(&[kind as u8, 0, 0, 0]);
    buf.extend_from_slice(&[0; 4]);
    write_payload(buf);
    assert_eq!(
        buf.len() - start - HEADER_BYTES,
        payload_bytes,
        "a record's payload must be as long as announced"
    );
    buf.resize(start + record_bytes(payload_bytes), 0);
    let value = checksum(*crc, &buf[start..]);
    buf[start + 8..start + 12].copy_from_slice(&value.to_le_bytes());
    *crc = value;
}

/// CRC of a whole framed record (`bytes` starts at its header), seeded with `prev`.
fn checksum(prev: u32, bytes: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new_with_initial(prev);
    hasher.update(&bytes[..8]);
    hasher.update(&bytes[HEADER_BYTES..]);
    hasher.finalize()
}

pub(crate) fn encode_segment_header(buf: &mut Vec<u8>, crc: &mut u32, header: SegmentHeader) {
    assert_eq!(
        header.prev_crc, *crc,
        "a segment header chains from prev_crc"
    );
    let parts: [&[u8]; 5] = [
        &SEGMENT_MAGIC,
        &FORMAT_VERSION.to_le_bytes(),
        &header.prev_crc.to_le_bytes(),
        &header.seq.to_le_bytes(),
        &header.first_index.to_le_bytes(),
    ];
    encode(buf, crc, RecordType::SegmentHeader, &parts);
}

pub(crate) fn encode_metadata(buf: &mut Vec<u8>, crc: &mut u32, metadata: Metadata) {
    let parts: [&[u8]; 2] = [
        &metadata.node_id.to_le_bytes(),
        &metadata.cluster_id.to_le_bytes(),
    ];
    encode(buf, crc, RecordType::Metadata, &parts);
}

/// Encodes a snapshot marker: `RecordType::Marker` for a snapshot taken locally (the log
/// above it stays), `RecordType::ReceivedMarker` for one received from a leader (it replaces
/// the log).
pub(crate) fn encode_marker(buf: &mut Vec<u8>, crc: &mut u32, kind: RecordType, marker: Marker) {
    assert!(matches!(
        kind,
        RecordType::Marker | RecordType::ReceivedMarker
    ));
    let parts: [&[u8]; 2] = [&marker.index.to_le_bytes(), &marker.term.to_le_bytes()];
    encode(buf, crc, kind, &parts);
}

/// Appends an entry record: index, term, then `data_bytes` bytes of data that `write_data`
/// appends to the buffer it is given.
pub(crate) fn encode_entry_with(
    buf: &mut Vec<u8>,
    crc: &mut u32,
    index: u64,
    term: u64,
    data_bytes: usize,
    write_data: impl FnOnce(&mut Vec<u8>),
) {
    encode_with(
        buf,
        crc,
        RecordType::Entry,
        ENTRY_PREFIX_BYTES + data_bytes,
        |buf| {
            buf.extend_from_slice(&index.to_le_bytes());
            buf.extend_from_slice(&term.to_le_bytes());
            write_data(buf);
        },
    );
}

/// One record found in a byte slice.
#[derive(Debug)]
pub(crate) struct Parsed<'a> {
    pub kind: RecordType,
    pub payload: &'a [u8],
    /// The record's own CRC (the seed of the next record).
    pub crc: u32,
    /// Offset just past the record (and its padding).
    pub next_offset: usize,
}

/// Why no record could be parsed at an offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Invalid {
    /// The header (and everything up to the end of the slice or the header) is zero: the end
    /// of the written part of a segment.
    End,
    /// The header is malformed or the record runs past the end of the slice.
    Header(&'static str),
    /// The CRC does not match.
    Checksum,
}

/// Parses the record at `offset`, seeded with `prev_crc`. Never panics on any input.
pub(crate) fn parse(data: &[u8], offset: usize, prev_crc: u32) -> Result<Parsed<'_>, Invalid> {
    let rest = data.get(offset..).unwrap_or(&[]);
    if rest.len() < HEADER_BYTES {
        return Err(if rest.iter().all(|&b| b == 0) {
            Invalid::End
        } else {
            Invalid::Header("header cut short")
        });
    }
    let header = &rest[..HEADER_BYTES];
    if header.iter().all(|&b| b == 0) {
        return Err(Invalid::End);
    }
    let payload_bytes = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
    let kind = RecordType::from_u8(header[4]).ok_or(Invalid::Header("unknown record type"))?;
    if header[5..8] != [0, 0, 0] {
        return Err(Invalid::Header("reserved bytes are not zero"));
    }
    if payload_bytes > MAX_PAYLOAD_BYTES {
        return Err(Invalid::Header("length exceeds the maximum payload"));
    }
    let total = record_bytes(payload_bytes);
    if total > rest.len() {
        return Err(Invalid::Header("record runs past the end of the file"));
    }
    let stored = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    if checksum(prev_crc, &rest[..total]) != stored {
        return Err(Invalid::Checksum);
    }
    Ok(Parsed {
        kind,
        payload: &rest[HEADER_BYTES..HEADER_BYTES + payload_bytes],
        crc: stored,
        next_offset: offset + total,
    })
}

/// Reads the `prev_crc` field a segment header at `offset` claims, without validating it.
pub(crate) fn peek_prev_crc(data: &[u8], offset: usize) -> Option<u32> {
    let at = offset + HEADER_BYTES + PREV_CRC_OFFSET;
    data.get(at..at + 4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
}

/// Reads the stored CRC field of the header at `offset`, without validating it.
pub(crate) fn peek_crc(data: &[u8], offset: usize) -> Option<u32> {
    data.get(offset + 8..offset + 12)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
}

/// Computes the CRC the record at `offset` should carry if its length field is right.
pub(crate) fn expected_crc(data: &[u8], offset: usize, prev_crc: u32) -> Option<u32> {
    let rest = data.get(offset..)?;
    let payload_bytes = u32::from_le_bytes(rest.get(0..4)?.try_into().ok()?) as usize;
    let total = record_bytes(payload_bytes.min(MAX_PAYLOAD_BYTES));
    rest.get(..total).map(|bytes| checksum(prev_crc, bytes))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// Decodes a parsed record's payload. Errors name what is wrong.
pub(crate) fn decode<'a>(parsed: &Parsed<'a>) -> Result<Body<'a>, &'static str> {
    let p = parsed.payload;
    match parsed.kind {
        RecordType::SegmentHeader => {
            if p.len() != SEGMENT_HEADER_BYTES {
                return Err("segment header has the wrong size");
            }
            if p[0..8] != SEGMENT_MAGIC {
                return Err("segment header has the wrong magic number");
            }
            if p[8..12] != FORMAT_VERSION.to_le_bytes() {
                return Err("unsupported format version");
            }
            Ok(Body::SegmentHeader(SegmentHeader {
                prev_crc: u32::from_le_bytes(p[12..16].try_into().expect("4 bytes")),
                seq: u64_at(p, 16),
                first_index: u64_at(p, 24),
            }))
        }
        RecordType::Metadata if p.len() == 16 => Ok(Body::Metadata(Metadata {
            node_id: u64_at(p, 0),
            cluster_id: u64_at(p, 8),
        })),
        RecordType::Metadata => Err("metadata record has the wrong size"),
        RecordType::HardState => Ok(Body::HardState(p)),
        RecordType::Marker if p.len() == 16 => Ok(Body::Marker(Marker {
            index: u64_at(p, 0),
            term: u64_at(p, 8),
        })),
        RecordType::Marker => Err("snapshot marker record has the wrong size"),
        RecordType::ReceivedMarker if p.len() == 16 => Ok(Body::ReceivedMarker(Marker {
            index: u64_at(p, 0),
            term: u64_at(p, 8),
        })),
        RecordType::ReceivedMarker => Err("received snapshot marker record has the wrong size"),
        RecordType::Entry if p.len() >= ENTRY_PREFIX_BYTES => Ok(Body::Entry {
            index: u64_at(p, 0),
            term: u64_at(p, 8),
            data: &p[ENTRY_PREFIX_BYTES..],
        }),
        RecordType::Entry => Err("entry record is shorter than its index and term"),
    }
}
