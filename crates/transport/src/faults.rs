//! Fault injection between this node and chosen peers, for tests and chaos runs.
//!
//! Faults are per link, identified by the peer id. A *cut* link drops everything this node
//! sends to the peer and everything it receives from it. A *drop probability* and a *delay*
//! apply to outgoing traffic only; set them on both ends for a symmetric effect. A *stall*
//! applies to incoming message frames: each is delivered, then its answer is held back, so a
//! stall longer than the peer's request timeout makes the peer give up on a frame this node
//! did deliver (the case where resending would duplicate it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::RwLock;

use crate::error::FaultError;

/// Largest delay a fault may add to a link, so a typo cannot wedge a peer for hours.
pub const MAX_FAULT_DELAY_MS: u64 = 60_000;

/// The faults set on one link. The default value is a healthy link.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LinkFault {
    /// Drop all traffic in both directions.
    pub cut: bool,
    /// Probability in `[0, 1]` of dropping each outgoing message.
    pub drop_probability: f64,
    /// Delay added before each outgoing frame or snapshot.
    pub delay_ms: u64,
    /// Time each incoming message frame's answer is held back after the frame was delivered.
    pub stall_ms: u64,
}

impl LinkFault {
    fn is_healthy(&self) -> bool {
        *self == LinkFault::default()
    }
}

/// The fault table of one transport. Cheap to consult when no fault is set.
#[derive(Debug)]
pub struct Faults {
    links: RwLock<HashMap<u64, LinkFault>>,
    /// True when `links` is not empty: the hot path reads only this flag.
    active: AtomicBool,
    rng_state: AtomicU64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            links: RwLock::new(HashMap::new()),
            active: AtomicBool::new(false),
            rng_state: AtomicU64::new(0x9E37_79B9_7F4A_7C15),
        }
    }
}

impl Faults {
    /// Cuts the link to `peer_id`: traffic in both directions is dropped until healed.
    pub fn cut(&self, peer_id: u64) {
        self.update(peer_id, |f| f.cut = true);
        tracing::info!(peer = peer_id, "fault: link cut");
    }

    /// Removes every fault (cut, drop, delay) on the link to `peer_id`.
    pub fn heal(&self, peer_id: u64) {
        let mut links = self.links.write();
        links.remove(&peer_id);
        self.active.store(!links.is_empty(), Ordering::Release);
        tracing::info!(peer = peer_id, "fault: link healed");
    }

    /// Removes every fault on every link.
    pub fn heal_all(&self) {
        let mut links = self.links.write();
        links.clear();
        self.active.store(false, Ordering::Release);
        tracing::info!("fault: all links healed");
    }

    /// Drops each message sent to `peer_id` with probability `probability` (in `[0, 1]`).
    pub fn set_drop_probability(&self, peer_id: u64, probability: f64) -> Result<(), FaultError> {
        if !(0.0..=1.0).contains(&probability) {
            return Err(FaultError::BadProbability(probability.to_string()));
        }
        self.update(peer_id, |f| f.drop_probability = probability);
        Ok(())
    }

    /// Delays each frame and snapshot sent to `peer_id` by `delay_ms` (at most 60 s).
    pub fn set_delay_ms(&self, peer_id: u64, delay_ms: u64) -> Result<(), FaultError> {
        if delay_ms > MAX_FAULT_DELAY_MS {
            return Err(FaultError::DelayTooLong(delay_ms));
        }
        self.update(peer_id, |f| f.delay_ms = delay_ms);
        Ok(())
    }

    /// Holds back the answer to each message frame received from `peer_id` by `stall_ms`
    /// (at most 60 s), after the frame was delivered.
    pub fn set_stall_ms(&self, peer_id: u64, stall_ms: u64) -> Result<(), FaultError> {
        if stall_ms > MAX_FAULT_DELAY_MS {
            return Err(FaultError::DelayTooLong(stall_ms));
        }
        self.update(peer_id, |f| f.stall_ms = stall_ms);
        tracing::info!(peer = peer_id, stall_ms, "fault: answers stalled");
        Ok(())
    }

    /// The faults currently set on the link to `peer_id`.
    pub fn link(&self, peer_id: u64) -> LinkFault {
        if !self.active.load(Ordering::Acquire) {
            return LinkFault::default();
        }
        self.links.read().get(&peer_id).copied().unwrap_or_default()
    }

    /// Applies commands in the text format of `POST /raft/faults`: one per line, blank lines
    /// ignored: `cut <peer>`, `heal <peer>`, `heal-all`, `drop <peer> <probability>`,
    /// `delay <peer> <ms>`, `stall <peer> <ms>`. Lines before a bad one stay applied.
    pub fn apply_command(&self, text: &str) -> Result<(), FaultError> {
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            self.apply_line(line)?;
        }
        Ok(())
    }

    fn apply_line(&self, line: &str) -> Result<(), FaultError> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let command = words[0];
        let bad = |reason: &str| FaultError::BadArguments {
            command: command.to_string(),
            reason: reason.to_string(),
        };
        let peer = || -> Result<u64, FaultError> {
            words
                .get(1)
                .and_then(|w| w.parse().ok())
                .ok_or_else(|| bad("expected a peer id"))
        };
        let arity = |n: usize| {
            if words.len() == n {
                Ok(())
            } else {
                Err(bad("wrong argument count"))
            }
        };
        match command {
            "cut" => arity(2).and_then(|()| peer()).map(|p| self.cut(p)),
            "heal" => arity(2).and_then(|()| peer()).map(|p| self.heal(p)),
            "heal-all" => arity(1).map(|()| self.heal_all()),
            "drop" => {
                arity(3)?;
                let p: f64 = words[2]
                    .parse()
                    .map_err(|_| bad("expected a probability"))?;
                self.set_drop_probability(peer()?, p)
            }
            "delay" => {
                arity(3)?;
                let ms: u64 = words[2].parse().map_err(|_| bad("expected milliseconds"))?;
                self.set_delay_ms(peer()?, ms)
            }
            "stall" => {
                arity(3)?;
                let ms: u64 = words[2].parse().map_err(|_| bad("expected milliseconds"))?;
                self.set_stall_ms(peer()?, ms)
            }
            other => Err(FaultError::UnknownCommand(other.to_string())),
        }
    }

    /// True when the link to `peer_id` is cut.
    pub(crate) fn is_cut(&self, peer_id: u64) -> bool {
        self.link(peer_id).cut
    }

    /// Draws whether to drop one message under `probability` (a fast, non-crypto generator).
    pub(crate) fn roll_drop(&self, probability: f64) -> bool {
        if probability <= 0.0 {
            return false;
        }
        let mut z = self
            .rng_state
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let unit = (z >> 11) as f64 / (1u64 << 53) as f64;
        unit < probability
    }

    fn update(&self, peer_id: u64, change: impl FnOnce(&mut LinkFault)) {
        let mut links = self.links.write();
        let link = links.entry(peer_id).or_default();
        change(link);
        if link.is_healthy() {
            links.remove(&peer_id);
        }
        self.active.store(!links.is_empty(), Ordering::Release);
    }
}
