//! Reading segments back: checksum chain, preamble checks, and the torn-tail decision.

use std::path::Path;

use crate::error::{Corruption, WalError};
use crate::filesystem::FileSystem;
use crate::fs::{map_file, SegmentName};
use crate::record::{
    decode, expected_crc, parse, peek_crc, peek_prev_crc, record_bytes, Body, Invalid, RecordType,
    HEADER_BYTES, MAX_PAYLOAD_BYTES,
};
use crate::types::{Marker, Metadata};

/// Size of the unit a disk writes atomically, as far as the torn-write rule is concerned: a
/// write that never fully reached the disk leaves whole sectors of it unwritten (zero in a
/// preallocated segment).
pub(crate) const SECTOR_BYTES: usize = 512;

/// Most bytes re-hashed while deciding what one invalid record means (whether anything after
/// it validates, whether its length field was damaged). Payloads can plant any number of
/// plausible record headers with large lengths; without a bound, opening a damaged segment
/// would hash for hours. When the bound is reached the damage is not proven to be a torn
/// write, so it is refused like any other corruption.
pub const TAIL_CHECK_BYTES_MAX: u64 = 1 << 30;

/// Counts the bytes hashed by the checks after an invalid record, against a bound.
#[derive(Debug)]
pub(crate) struct CheckBudget {
    used_bytes: u64,
    max_bytes: u64,
}

impl CheckBudget {
    pub(crate) fn new(max_bytes: u64) -> Self {
        Self {
            used_bytes: 0,
            max_bytes,
        }
    }

    /// Reserves `bytes` of hashing; false (and nothing reserved) when that would exceed the
    /// bound.
    fn charge(&mut self, bytes: usize) -> bool {
        let after = self.used_bytes.saturating_add(bytes as u64);
        if after > self.max_bytes {
            return false;
        }
        self.used_bytes = after;
        true
    }

    /// Bytes hashed so far.
    pub(crate) fn used_bytes(&self) -> u64 {
        self.used_bytes
    }
}

/// Outcome of a bounded check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    /// The check found what it looked for.
    Found,
    /// It did not, having looked everywhere it had to.
    NotFound,
    /// The budget ran out first.
    Exhausted,
}

/// A record handed to the scan's visitor.
#[derive(Debug)]
pub(crate) enum Event<'a> {
    HardState(&'a [u8]),
    /// A snapshot marker; `received` when the snapshot came from a leader and replaces the log.
    Marker {
        marker: Marker,
        received: bool,
    },
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
    fs: &dyn FileSystem,
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
        let view = map_file(fs, &path)?;
        let is_newest = i + 1 == names.len();
        let may_be_unwritten = is_newest && i > 0;
        match scan_segment(
            &path,
            *name,
            &view,
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
    let mut budget = CheckBudget::new(TAIL_CHECK_BYTES_MAX);
    if may_be_unwritten && preamble_unwritten(data, seed, &mut budget) {
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
                    Body::Marker(marker) => Event::Marker {
                        marker,
                        received: false,
                    },
                    Body::ReceivedMarker(marker) => Event::Marker {
                        marker,
                        received: true,
                    },
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
                let tail =
                    end_of_records(path, data, offset, crc, invalid, is_newest, &mut budget)?;
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
///
/// The invalid record is a torn write only if nothing after it validates *and* a
/// 512-byte-aligned sector overlapping its extent is all zero; in an older segment, a zero
/// header is the clean end of that segment. Everything else is corruption.
fn end_of_records(
    path: &Path,
    data: &[u8],
    offset: usize,
    crc: u32,
    invalid: Invalid,
    is_newest: bool,
    budget: &mut CheckBudget,
) -> Result<Tail, WalError> {
    match valid_data_after(data, offset, crc, budget) {
        Check::Found => {
            let reason = match invalid {
                Invalid::End => Corruption::NotATornTail,
                other => reason_of(other),
            };
            return Err(corrupt(path, offset, reason));
        }
        Check::Exhausted => return Err(exhausted(path, offset, budget)),
        Check::NotFound => {}
    }
    let tail = Tail {
        end_offset: offset as u64,
        crc,
        preamble_end: 0,
        dirty_end: dirty_end(data, offset) as u64,
    };
    if !is_newest {
        // Older segments were fully synced before the next one started: no torn tail there.
        return match invalid {
            Invalid::End => Ok(tail),
            other => Err(corrupt(path, offset, reason_of(other))),
        };
    }
    if !has_unwritten_sector(data, offset, stated_end(data, offset))
        && !crate::plant::active(crate::plant::PlantedBug::CorruptTailAsTorn)
    {
        // Every sector of the record was written: it was damaged after it reached the disk.
        return Err(corrupt(path, offset, reason_of(invalid)));
    }
    match valid_with_corrected_length(data, offset, crc, budget) {
        Check::Found => Err(corrupt(
            path,
            offset,
            Corruption::BadHeader("damaged length field"),
        )),
        Check::Exhausted => Err(exhausted(path, offset, budget)),
        Check::NotFound => Ok(tail),
    }
}

fn exhausted(path: &Path, offset: usize, budget: &CheckBudget) -> WalError {
    corrupt(
        path,
        offset,
        Corruption::CheckBudgetExhausted {
            bytes: budget.used_bytes(),
        },
    )
}

/// End of the record at `at` as its header states it: the stated length if the header is
/// well formed, else just the header.
fn stated_end(data: &[u8], at: usize) -> usize {
    match plausible_total(data, at) {
        Some(total) => at.saturating_add(total),
        None => at.saturating_add(HEADER_BYTES),
    }
}

/// True when part of `[start, end)` was never written: it runs past the end of the file, or
/// a chunk of it from `start` (or a sector boundary inside it) to the end of that 512-byte
/// sector is all zero. A sector a write never reached keeps its old content, which is zero in
/// a preallocated segment, including the bytes after the record.
pub(crate) fn has_unwritten_sector(data: &[u8], start: usize, end: usize) -> bool {
    if end > data.len() {
        return true;
    }
    let mut chunk_start = start;
    while chunk_start < end {
        let sector_end = (chunk_start / SECTOR_BYTES + 1) * SECTOR_BYTES;
        let chunk = &data[chunk_start..sector_end.min(data.len())];
        if chunk.iter().all(|&b| b == 0) {
            return true;
        }
        chunk_start = sector_end;
    }
    false
}

/// True when the record at `at` validates with one bit of its length field flipped to a
/// shorter length: an intact record whose length was damaged, which would otherwise look
/// torn (the stated extent runs into the zeros after it, or past the end of the file).
fn valid_with_corrected_length(
    data: &[u8],
    at: usize,
    prev_crc: u32,
    budget: &mut CheckBudget,
) -> Check {
    if plausible_total(data, at).is_none() {
        return Check::NotFound;
    }
    let Some(stored) = peek_crc(data, at) else {
        return Check::NotFound;
    };
    let header = &data[at..at + HEADER_BYTES];
    let stated = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
    for bit in 0..32 {
        let candidate = stated ^ (1 << bit);
        if candidate > stated || candidate as usize > MAX_PAYLOAD_BYTES {
            continue;
        }
        let total = record_bytes(candidate as usize);
        let Some(record) = data.get(at..at + total) else {
            continue;
        };
        if !budget.charge(total) {
            return Check::Exhausted;
        }
        let mut hasher = crc32fast::Hasher::new_with_initial(prev_crc);
        hasher.update(&candidate.to_le_bytes());
        hasher.update(&header[4..8]);
        hasher.update(&record[HEADER_BYTES..]);
        if hasher.finalize() == stored {
            return Check::Found;
        }
    }
    Check::NotFound
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

/// True when a segment's header or metadata record is unreadable, nothing valid follows and
/// that record has an unwritten sector: the process stopped between creating the segment and
/// its first write.
fn preamble_unwritten(data: &[u8], seed: u32, budget: &mut CheckBudget) -> bool {
    let torn_at = |at: usize, crc: u32, budget: &mut CheckBudget| {
        valid_data_after(data, at, crc, budget) == Check::NotFound
            && has_unwritten_sector(data, at, stated_end(data, at))
    };
    match parse(data, 0, seed) {
        Err(_) => !own_chain_header(data) && torn_at(0, seed, budget),
        Ok(header) => match parse(data, header.next_offset, header.crc) {
            Err(_) => torn_at(header.next_offset, header.crc, budget),
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

/// Size of the record at `offset` if parsing it would get as far as hashing it (a non-zero,
/// well-formed header whose record fits in `data`).
fn hashed_total(data: &[u8], offset: usize) -> Option<usize> {
    let total = plausible_total(data, offset)?;
    let header = data.get(offset..offset + HEADER_BYTES)?;
    let payload_bytes = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
    (payload_bytes <= MAX_PAYLOAD_BYTES && offset.checked_add(total)? <= data.len())
        .then_some(total)
}

/// Whether the record at `offset` validates seeded with `seed`, charging its hashing.
fn validates(data: &[u8], offset: usize, seed: u32, budget: &mut CheckBudget) -> Check {
    let Some(total) = hashed_total(data, offset) else {
        return Check::NotFound;
    };
    if !budget.charge(total) {
        return Check::Exhausted;
    }
    if parse(data, offset, seed).is_ok() {
        Check::Found
    } else {
        Check::NotFound
    }
}

/// Whether some record after the invalid position `bad` is provably part of the log: it
/// chains from the CRC stored in (or computed for) the record at `bad`, or it is followed by a
/// record that chains from it. A torn write leaves nothing like that behind; damage to
/// committed data does. The hashing is bounded by `budget`.
pub(crate) fn valid_data_after(
    data: &[u8],
    bad: usize,
    running_crc: u32,
    budget: &mut CheckBudget,
) -> Check {
    // The CRC the record at `bad` should carry, if its stated length fits in the file.
    let expected = match hashed_total(data, bad) {
        Some(total) if !budget.charge(total) => return Check::Exhausted,
        Some(_) => expected_crc(data, bad, running_crc),
        None => None,
    };
    let stored = peek_crc(data, bad);
    let seeds: Vec<u32> = match (stored, expected) {
        (Some(a), Some(b)) if a == b => vec![a],
        (a, b) => a.into_iter().chain(b).collect(),
    };
    let mut y = bad + 8;
    while y + HEADER_BYTES <= data.len() {
        if let Some(total) = plausible_total(data, y) {
            for &seed in &seeds {
                match validates(data, y, seed, budget) {
                    Check::NotFound => {}
                    found_or_exhausted => return found_or_exhausted,
                }
            }
            let next = y.saturating_add(total);
            if let Some(own) = peek_crc(data, y) {
                if next < data.len() {
                    match validates(data, next, own, budget) {
                        Check::NotFound => {}
                        found_or_exhausted => return found_or_exhausted,
                    }
                }
            }
        }
        y += 8;
    }
    Check::NotFound
}

/// Offset just past the last non-zero byte at or after `offset` (or `offset` if none).
fn dirty_end(data: &[u8], offset: usize) -> usize {
    let rest = data.get(offset..).unwrap_or(&[]);
    offset + rest.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plausible entry header claiming `payload_bytes`, with a CRC that matches nothing.
    fn planted_header(payload_bytes: u32) -> [u8; HEADER_BYTES] {
        let mut header = [0u8; HEADER_BYTES];
        header[0..4].copy_from_slice(&payload_bytes.to_le_bytes());
        header[4] = RecordType::Entry as u8;
        header[8..12].copy_from_slice(&0xDEAD_BEEF_u32.to_le_bytes());
        header
    }

    /// `count` planted headers every 16 bytes from offset 16, each claiming a record that
    /// runs to within a few bytes of the end of a `file_bytes` file.
    fn planted(count: usize, file_bytes: usize) -> Vec<u8> {
        let mut data = vec![0u8; file_bytes];
        data[0..HEADER_BYTES].copy_from_slice(&planted_header(8));
        for k in 0..count {
            let at = 16 + 16 * k;
            let payload_bytes = (file_bytes - at - 64) as u32;
            data[at..at + HEADER_BYTES].copy_from_slice(&planted_header(payload_bytes));
        }
        data
    }

    #[test]
    fn the_check_after_an_invalid_record_hashes_at_most_its_budget() {
        let (count, file_bytes) = (4096, 4 << 20);
        let data = planted(count, file_bytes);
        // Unbounded, each candidate would be hashed once per seed: about count * file size.
        let unbounded_bytes = (count as u64) * (file_bytes as u64);
        let max_bytes = 64 << 20;
        assert!(unbounded_bytes > 100 * max_bytes);
        let mut budget = CheckBudget::new(max_bytes);
        assert_eq!(valid_data_after(&data, 0, 0, &mut budget), Check::Exhausted);
        assert!(budget.used_bytes() <= max_bytes);
        assert!(budget.used_bytes() > max_bytes - (file_bytes as u64));
    }

    #[test]
    fn a_few_planted_headers_are_checked_within_the_budget() {
        let data = planted(4, 1 << 20);
        let mut budget = CheckBudget::new(TAIL_CHECK_BYTES_MAX);
        assert_eq!(valid_data_after(&data, 0, 0, &mut budget), Check::NotFound);
        assert!(budget.used_bytes() > 0);
        assert!(budget.used_bytes() <= 4 * 3 * (1 << 20));
    }

    #[test]
    fn unwritten_sectors_are_whole_sector_chunks_or_past_the_end() {
        let mut data = vec![1u8; 2048];
        assert!(!has_unwritten_sector(&data, 8, 2048));
        assert!(has_unwritten_sector(&data, 8, 2056), "runs past the end");
        data[1024..1536].fill(0);
        assert!(has_unwritten_sector(&data, 8, 2048));
        assert!(!has_unwritten_sector(&data, 8, 1024));
        // Zeros from the record's start to the end of its sector count; a zero run that
        // stops short of the sector's end does not.
        data[600..1024].fill(0);
        assert!(has_unwritten_sector(&data, 600, 700));
        data[1100..1536].fill(1);
        assert!(!has_unwritten_sector(&data, 1040, 1100));
    }
}
