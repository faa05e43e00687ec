//! Deduplication of applied commands by request id.
//!
//! A command can reach the log twice (a proposal forwarded again by a
//! retrying transport, a client library that resends a frame). Applying it
//! twice is wrong: `PUT k=a`, `PUT k=b`, then the duplicate of `k=a` would
//! make readers see `a` again after `b` was acknowledged. So the apply side
//! remembers, per *origin* (node id, boot nonce), which request sequences it
//! applied, and skips a command it has seen.
//!
//! # Bounded and deterministic
//! The window depends only on the applied log, so every node that applied
//! the same entries holds the same window and writes the same snapshot bytes:
//! * Per origin: the highest applied `seq` and a bitmap of the
//!   [`WINDOW_SEQS`] sequences up to it (bit `seq % WINDOW_SEQS`). A sequence
//!   above the highest is new; one inside the window is new unless its bit is
//!   set; one below the window is too old to tell and is skipped (never
//!   applied twice; its writer, if still waiting, times out with "outcome
//!   unknown", which is the truth).
//! * At most [`MAX_ORIGINS`] origins; a new one evicts the origin whose last
//!   applied entry has the lowest log index. Origins change only when a node
//!   restarts, so the evicted one is long gone.
//!
//! # Hooks
//! The state machine calls [`DedupWindow::admit`] before applying a command
//! that carries a request id, and stores the window in its snapshot with
//! [`DedupWindow::encode`] / [`DedupWindow::decode`]. Nothing else here
//! knows about the key-value map, so the module moves with the state machine.

use std::collections::BTreeMap;

use crate::command::RequestId;

/// Sequences remembered below the highest applied one, per origin.
pub const WINDOW_SEQS: u64 = 16_384;
/// Origins (node id, boot nonce) remembered at once.
pub const MAX_ORIGINS: usize = 64;

const WORDS: usize = (WINDOW_SEQS / 64) as usize;
/// Bytes of one encoded origin: four u64 fields and the bitmap.
const ORIGIN_BYTES: usize = 4 * 8 + WORDS * 8;

/// What [`DedupWindow::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Not seen before: apply it (now recorded as applied).
    New,
    /// Already applied: skip it.
    Duplicate,
    /// Older than the window: cannot tell, so it is skipped.
    TooOld,
}

/// The applied sequences of one origin.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    highest_seq: u64,
    /// Log index of the last command admitted for this origin (eviction order).
    last_index: u64,
    bits: Box<[u64; WORDS]>,
}

impl Origin {
    fn new() -> Self {
        Origin {
            highest_seq: 0,
            last_index: 0,
            bits: Box::new([0; WORDS]),
        }
    }

    fn bit(seq: u64) -> (usize, u64) {
        let position = seq % WINDOW_SEQS;
        ((position / 64) as usize, 1u64 << (position % 64))
    }

    fn is_set(&self, seq: u64) -> bool {
        let (word, mask) = Origin::bit(seq);
        self.bits[word] & mask != 0
    }

    fn set(&mut self, seq: u64) {
        let (word, mask) = Origin::bit(seq);
        self.bits[word] |= mask;
    }

    fn clear(&mut self, seq: u64) {
        let (word, mask) = Origin::bit(seq);
        self.bits[word] &= !mask;
    }

    /// Moves the window up to end at `seq`, forgetting the sequences that leave it.
    fn advance_to(&mut self, seq: u64) {
        assert!(seq > self.highest_seq, "the window only moves up");
        if seq - self.highest_seq >= WINDOW_SEQS {
            self.bits.fill(0);
        } else {
            for gone in self.highest_seq + 1..=seq {
                self.clear(gone);
            }
        }
        self.highest_seq = seq;
    }

    fn admit(&mut self, seq: u64) -> Admission {
        if seq > self.highest_seq {
            self.advance_to(seq);
            self.set(seq);
            return Admission::New;
        }
        if self.highest_seq - seq >= WINDOW_SEQS {
            return Admission::TooOld;
        }
        if self.is_set(seq) {
            return Admission::Duplicate;
        }
        self.set(seq);
        Admission::New
    }
}

/// The per-origin windows of applied request sequences (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DedupWindow {
    /// Keyed by (node id, boot nonce): ordered, so the encoding is canonical.
    origins: BTreeMap<(u64, u64), Origin>,
}

impl DedupWindow {
    /// An empty window (a fresh state machine, or a snapshot of the format
    /// before deduplication).
    pub fn new() -> Self {
        DedupWindow::default()
    }

    /// Decides whether the command with `id`, applied at log `index`, is new,
    /// and records it if so. Call it once per command, in log order.
    pub fn admit(&mut self, index: u64, id: RequestId) -> Admission {
        let key = (id.node_id, id.boot_nonce);
        if !self.origins.contains_key(&key) && self.origins.len() >= MAX_ORIGINS {
            self.evict_oldest();
        }
        let origin = self.origins.entry(key).or_insert_with(Origin::new);
        let admission = origin.admit(id.seq);
        if admission == Admission::New {
            origin.last_index = index;
        }
        if admission == Admission::Duplicate
            && raftnode::plant::active(raftnode::PlantedBug::ApplyDuplicate)
        {
            return Admission::New;
        }
        admission
    }

    fn evict_oldest(&mut self) {
        let oldest = self
            .origins
            .iter()
            .min_by_key(|(_, origin)| origin.last_index)
            .map(|(key, _)| *key);
        if let Some(key) = oldest {
            tracing::debug!(
                node = key.0,
                boot_nonce = key.1,
                "dedup window full: forgetting the least recent origin"
            );
            self.origins.remove(&key);
        }
    }

    /// Number of origins remembered.
    pub fn origins(&self) -> usize {
        self.origins.len()
    }

    /// Appends the canonical encoding:
    /// `origin_count u64 LE`, then per origin in (node, nonce) order:
    /// `node_id, boot_nonce, highest_seq, last_index` (u64 LE each) and the
    /// bitmap as `WINDOW_SEQS / 64` u64 LE words.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.reserve(8 + self.origins.len() * ORIGIN_BYTES);
        out.extend_from_slice(&(self.origins.len() as u64).to_le_bytes());
        for ((node_id, boot_nonce), origin) in &self.origins {
            for field in [*node_id, *boot_nonce, origin.highest_seq, origin.last_index] {
                out.extend_from_slice(&field.to_le_bytes());
            }
            for word in origin.bits.iter() {
                out.extend_from_slice(&word.to_le_bytes());
            }
        }
    }

    /// Decodes what [`DedupWindow::encode`] wrote; `data` must hold exactly
    /// that. Refuses unsorted or duplicate origins, more than [`MAX_ORIGINS`],
    /// and bits set outside an origin's window.
    pub fn decode(data: &[u8]) -> Result<DedupWindow, String> {
        let (count, mut rest) = split_u64(data)?;
        if count > MAX_ORIGINS as u64 {
            return Err(format!(
                "dedup window has {count} origins, at most {MAX_ORIGINS} allowed"
            ));
        }
        let expected = count as usize * ORIGIN_BYTES;
        if rest.len() != expected {
            return Err(format!(
                "dedup window of {count} origins needs {expected} bytes, found {}",
                rest.len()
            ));
        }
        let mut window = DedupWindow::new();
        let mut previous: Option<(u64, u64)> = None;
        for _ in 0..count {
            let mut fields = [0u64; 4];
            for field in &mut fields {
                (*field, rest) = split_u64(rest)?;
            }
            let [node_id, boot_nonce, highest_seq, last_index] = fields;
            let key = (node_id, boot_nonce);
            if previous.is_some_and(|p| p >= key) {
                return Err("dedup origins are not in strictly increasing order".into());
            }
            previous = Some(key);
            let mut origin = Origin {
                highest_seq,
                last_index,
                bits: Box::new([0; WORDS]),
            };
            for word in origin.bits.iter_mut() {
                (*word, rest) = split_u64(rest)?;
            }
            let ones = origin
                .bits
                .iter()
                .map(|w| w.count_ones() as u64)
                .sum::<u64>();
            if ones > highest_seq.saturating_add(1) || (ones > 0 && !origin.is_set(highest_seq)) {
                return Err(format!(
                    "dedup origin ({node_id}, {boot_nonce}) has bits that do not fit its window"
                ));
            }
            window.origins.insert(key, origin);
        }
        Ok(window)
    }
}

fn split_u64(data: &[u8]) -> Result<(u64, &[u8]), String> {
    if data.len() < 8 {
        return Err(format!(
            "dedup window truncated: need 8 bytes, {} left",
            data.len()
        ));
    }
    let (head, rest) = data.split_at(8);
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(head);
    Ok((u64::from_le_bytes(bytes), rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(node_id: u64, boot_nonce: u64, seq: u64) -> RequestId {
        RequestId {
            node_id,
            boot_nonce,
            seq,
        }
    }

    #[test]
    fn duplicates_are_refused_in_any_order() {
        let mut window = DedupWindow::new();
        assert_eq!(window.admit(1, id(1, 7, 2)), Admission::New);
        assert_eq!(window.admit(2, id(1, 7, 1)), Admission::New);
        assert_eq!(window.admit(3, id(1, 7, 2)), Admission::Duplicate);
        assert_eq!(window.admit(4, id(1, 7, 1)), Admission::Duplicate);
        // Another incarnation of the same node is another origin.
        assert_eq!(window.admit(5, id(1, 8, 1)), Admission::New);
        assert_eq!(window.admit(6, id(2, 7, 1)), Admission::New);
    }

    #[test]
    fn sequences_below_the_window_are_too_old() {
        let mut window = DedupWindow::new();
        assert_eq!(window.admit(1, id(1, 1, 1)), Admission::New);
        assert_eq!(window.admit(2, id(1, 1, WINDOW_SEQS + 1)), Admission::New);
        assert_eq!(window.admit(3, id(1, 1, 1)), Admission::TooOld);
        assert_eq!(window.admit(4, id(1, 1, 2)), Admission::New);
        assert_eq!(window.admit(5, id(1, 1, 2)), Admission::Duplicate);
        // Sliding by one forgets the bit that left the window.
        assert_eq!(window.admit(6, id(1, 1, WINDOW_SEQS + 2)), Admission::New);
        assert_eq!(window.admit(7, id(1, 1, 2)), Admission::TooOld);
    }

    #[test]
    fn origins_are_bounded_and_the_least_recent_is_evicted() {
        let mut window = DedupWindow::new();
        for origin in 0..MAX_ORIGINS as u64 {
            assert_eq!(
                window.admit(origin + 1, id(origin + 1, 0, 1)),
                Admission::New
            );
        }
        // Origin 1 is active again: origin 2 is now the least recent.
        assert_eq!(window.admit(100, id(1, 0, 2)), Admission::New);
        assert_eq!(window.admit(101, id(999, 0, 1)), Admission::New);
        assert_eq!(window.origins(), MAX_ORIGINS);
        assert_eq!(window.admit(102, id(1, 0, 2)), Admission::Duplicate);
        assert_eq!(window.admit(103, id(2, 0, 1)), Admission::New, "evicted");
    }

    #[test]
    fn encoding_round_trips_and_rejects_damage() {
        let mut window = DedupWindow::new();
        for seq in [1, 5, 3, 40_000, 39_999] {
            window.admit(seq, id(3, 9, seq));
        }
        window.admit(50_000, id(1, 2, 1));
        let mut bytes = Vec::new();
        window.encode(&mut bytes);
        assert_eq!(DedupWindow::decode(&bytes), Ok(window.clone()));
        assert!(DedupWindow::decode(&bytes[..bytes.len() - 1]).is_err());
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(DedupWindow::decode(&extra).is_err());
        let mut empty = Vec::new();
        DedupWindow::new().encode(&mut empty);
        assert_eq!(DedupWindow::decode(&empty), Ok(DedupWindow::new()));
    }
}
