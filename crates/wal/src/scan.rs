//! Reading segments back: checksum chain, preamble checks, and the torn-tail decision.

use std::path::Path;

use crate::error::{Corruption, WalError};
use crate::fs::{map_file, SegmentName};
use crate::record::{
    decode, expected_crc, parse, peek_crc, peek_prev_crc, record_bytes, Body, Invalid, RecordType,
    HEADER_BYTES,
};
use crate::types::{Marker, Metadata};

/// A record handed to the scan's visitor.
#[derive(Debug)]
pub(crate) enum Event<'a> {
    HardState(&'a [u8]),
    Marker(Marker),
    Entry {
        index: u64,
        term: u64,
        data: &'a [u8],
    },
}

/// Receives every valid record after the preambles, in log order, with its file and offset.
pub(crate) type Visitor<'v> = dyn FnMut(Event<'_>, &Path, u64) -> Result<(), WalError> + 'v;

/// Where the newest segment's valid records end.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tail {
    /// Offset just past the last valid record.
    pub end_offset: u64,
    /// CRC of the last valid record (seed of the next append).
    pub crc: u32,
    /// Offset just past the segment's header and metadata records.
    pub preamble_end: u64,
    /// Offset just past the last non-zero byte; beyond `end_offset` means a torn write.
    pub dirty_end: u64,
}

/// Result of a successful scan.
#[derive(Debug)]
pub(crate) struct ScanOutcome {
    /// Identity recorded in every segment.
    pub metadata: Metadata,
    /// Segments holding valid data, oldest first (never empty).
    pub segments: Vec<SegmentName>,
    /// The tail of the last entry of `segments`.
    pub tail: Tail,
    /// A newest segment whose preamble was never fully written (crash during rotation).
    pub unwritten_newest: Option<SegmentName>,
}

enum SegmentEnd {
    Tail(Tail),
    Unwritten,
}

/// State carried from one segment to the next.
struct Chain {
    crc: Option<u32>,
    metadata: Option<Metadata>,
}

fn corrupt(path: &Path, offset: usize, reason: Corruption) -> WalError {
    WalError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason,
    }
}

fn reason_of(invalid: Invalid) -> Corruption {
    match invalid {
        Invalid::End => Corruption::BadHeader("zeroed record header"),
        Invalid::Header(why) => Corruption::BadHeader(why),
        Invalid::Checksum => Corruption::Checksum,
    }
}

/// Checks that sequence numbers have no gap or duplicate.
fn check_sequence(dir: &Path, names: &[SegmentName]) -> Result<(), WalError> {
    for pair in names.windows(2) {
        let expected_seq = pair[0].seq.saturating_add(1);
        if pair[1].seq != expected_seq {
            let path = pair[1].path(dir);
            let reason = if pair[1].seq == pair[0].seq {
                Corruption::BadRecord("two segment files share this sequence number")
            } else {
                Corruption::MissingSegment { expected_seq }
            };
            return Err(corrupt(&path, 0, reason));
        }
    }
    Ok(())
}

/// Validates every segment in `names` (sorted by sequence number) and feeds their records to
/// `visit`. Only the newest segment may end in a torn write; only the newest of several may be
/// entirely unwritten.
pub(crate) fn scan(
    dir: &Path,
    names: &[SegmentName],
    visit: &mut Visitor<'_>,
) -> Result<ScanOutcome, WalError> {
    assert!(!names.is_empty(), "callers check for an empty WAL");
    check_sequence(dir, names)?;
    let mut chain = Chain {
        crc: None,
        metadata: None,
    };
    let mut tail = None;
    let mut unwritten_newest = None;
    for (i, name) in names.iter().enumerate() {
        let path = name.path(dir);
        let view = map_file(&path)?;
        let is_newest = i + 1 == names.len();
        let may_be_unwritten = is_newest && i > 0;
        match scan_segment(
            &path,
            *name,
            view.bytes(),
            &mut chain,
            is_newest,
            may_be_unwritten,
            visit,
        )? {
            SegmentEnd::Tail(t) => tail = Some(t),
            SegmentEnd::Unwritten => unwritten_newest = Some(*name),
        }
    }
    let kept = names.len() - usize::from(unwritten_newest.is_some());
    Ok(ScanOutcome {
        metadata: chain.metadata.expect("at least one segment was read"),
        segments: names[..kept].to_vec(),
        tail: tail.expect("at least one segment was read"),
        unwritten_newest,
    })
}

fn scan_segment(
    path: &Path,
    name: SegmentName,
    data: &[u8],
    chain: &mut Chain,
    is_newest: bool,
    may_be_unwritten: bool,
    visit: &mut Visitor<'_>,
) -> Result<SegmentEnd, WalError> {
    let seed = chain.crc.unwrap_or(0);
    if may_be_unwritten && preamble_unwritten(data, seed) {
        return Ok(SegmentEnd::Unwritten);
    }
    let (preamble_end, mut crc) = read_preamble(path, name, data, chain)?;
    let mut offset = preamble_end;
    loop {
        match parse(data, offset, crc) {
            Ok(parsed) => {
                let body = decode(&parsed)
                    .map_err(|why| corrupt(path, offset, Corruption::BadRecord(why)))?;
                let event = match body {
                    Body::HardState(bytes) => Event::HardState(bytes),
                    Body::Marker(marker) => Event::Marker(marker),
                    Body::Entry { index, term, data } => Event::Entry { index, term, data },
                    Body::SegmentHeader(_) | Body::Metadata(_) => {
                        let why = "segment header or metadata after the preamble";
                        return Err(corrupt(path, offset, Corruption::BadRecord(why)));
                    }
                };
                visit(event, path, offset as u64)?;
                crc = parsed.crc;
                offset = parsed.next_offset;
            }
            Err(invalid) => {
                let tail = end_of_records(path, data, offset, crc, invalid, is_newest)?;
                chain.crc = Some(crc);
                return Ok(SegmentEnd::Tail(Tail {
                    preamble_end: preamble_end as u64,
                    ..tail
                }));
            }
        }
    }
}

/// Decides what the first unreadable position `offset` of a segment means.
fn end_of_records(
    path: &Path,
    data: &[u8],
    offset: usize,
    crc: u32,
    invalid: Invalid,
    is_newest: bool,
) -> Result<Tail, WalError> {
    if valid_data_after(data, offset, crc) {
        let reason = match invalid {
            Invalid::End => Corruption::NotATornTail,
            other => reason_of(other),
        };
        return Err(corrupt(path, offset, reason));
    }
    if invalid != Invalid::End && !is_newest {
        // Older segments were fully synced before the next one started: no torn tail there.
        return Err(corrupt(path, offset, reason_of(invalid)));
    }
    Ok(Tail {
        end_offset: offset as u64,
        crc,
        preamble_end: 0,
        dirty_end: dirty_end(data, offset) as u64,
    })
}

/// Reads and checks the segment header and metadata records; returns the offset after them
/// and the CRC to continue from.
fn read_preamble(
    path: &Path,
    name: SegmentName,
    data: &[u8],
    chain: &mut Chain,
) -> Result<(usize, u32), WalError> {
    let claimed = peek_prev_crc(data, 0).unwrap_or(0);
    let seed = chain.crc.unwrap_or(claimed);
    let header = match parse(data, 0, seed) {
        Ok(parsed) => parsed,
        Err(invalid) => {
            if claimed != seed && parse(data, 0, claimed).is_ok() {
                return Err(corrupt(path, 0, Corruption::ChainBroken));
            }
            return Err(corrupt(path, 0, reason_of(invalid)));
        }
    };
    let bad = |why| corrupt(path, 0, Corruption::BadRecord(why));
    let Body::SegmentHeader(h) = decode(&header).map_err(bad)? else {
        return Err(bad("segment does not start with a segment header"));
    };
    if h.seq != name.seq || h.first_index != name.first_index {
        return Err(bad("segment header disagrees with the file name"));
    }
    let at = header.next_offset;
    let meta = parse(data, at, header.crc).map_err(|i| corrupt(path, at, reason_of(i)))?;
    let bad = |why| corrupt(path, at, Corruption::BadRecord(why));
    let Body::Metadata(found) = decode(&meta).map_err(bad)? else {
        return Err(bad("segment header is not followed by metadata"));
    };
    match chain.metadata {
        Some(expected) if expected != found => {
            return Err(corrupt(
                path,
                at,
                Corruption::ForeignSegment { expected, found },
            ));
        }
        Some(_) => {}
        None => chain.metadata = Some(found),
    }
    Ok((meta.next_offset, meta.crc))
}

/// True when a segment's header or metadata record is unreadable and nothing valid follows:
/// the process stopped between creating the segment and its first write.
fn preamble_unwritten(data: &[u8], seed: u32) -> bool {
    match parse(data, 0, seed) {
        Err(_) => !valid_data_after(data, 0, seed) && !own_chain_header(data),
        Ok(header) => match parse(data, header.next_offset, header.crc) {
            Err(_) => !valid_data_after(data, header.next_offset, header.crc),
            Ok(_) => false,
        },
    }
}

/// True when the header at 0 is valid in its own chain (a segment from elsewhere).
fn own_chain_header(data: &[u8]) -> bool {
    peek_prev_crc(data, 0).is_some_and(|claimed| parse(data, 0, claimed).is_ok())
}

/// Header length of a plausible record at `offset`, if its type and reserved bytes are sane.
fn plausible_total(data: &[u8], offset: usize) -> Option<usize> {
    let header = data.get(offset..offset + HEADER_BYTES)?;
    if RecordType::from_u8(header[4]).is_none() || header[5..8] != [0, 0, 0] {
        return None;
    }
    let payload_bytes = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
    Some(record_bytes(payload_bytes))
}

/// True when some record after the invalid position `bad` is provably part of the log: it
/// chains from the CRC stored in (or computed for) the record at `bad`, or it is followed by a
/// record that chains from it. A torn write leaves nothing like that behind; damage to
/// committed data does.
pub(crate) fn valid_data_after(data: &[u8], bad: usize, running_crc: u32) -> bool {
    let seeds = [peek_crc(data, bad), expected_crc(data, bad, running_crc)];
    let mut y = bad + 8;
    while y + HEADER_BYTES <= data.len() {
        if let Some(total) = plausible_total(data, y) {
            if seeds
                .iter()
                .flatten()
                .any(|&seed| parse(data, y, seed).is_ok())
            {
                return true;
            }
            let next = y.saturating_add(total);
            if let Some(own) = peek_crc(data, y) {
                if next < data.len() && parse(data, next, own).is_ok() {
                    return true;
                }
            }
        }
        y += 8;
    }
    false
}

/// Offset just past the last non-zero byte at or after `offset` (or `offset` if none).
fn dirty_end(data: &[u8], offset: usize) -> usize {
    let rest = data.get(offset..).unwrap_or(&[]);
    offset + rest.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1)
}
