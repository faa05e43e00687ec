//! The time seam: the Raft loop reads time only from the [`Clock`] it is
//! given, so a simulation can drive ticks and timeouts without waiting.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A monotonic clock, as the Raft loop sees time.
///
/// # Correctness
/// * `now` never goes backwards (two calls on the same clock return
///   non-decreasing instants).
/// * The loop ticks raft-rs once per turn whose `now` is at or past the next
///   tick (one `tick_ms` after the previous tick), and measures read and
///   membership timeouts against `now`. Nothing else in the loop reads time.
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> Instant;
}

/// The production clock: `std::time::Instant::now`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told to ([`ManualClock::advance`]), for
/// simulations and tests. Clones share the same time.
///
/// Instants are an origin taken at construction plus the time advanced, so
/// only differences between them mean anything (they are never compared
/// with the system clock).
#[derive(Debug, Clone)]
pub struct ManualClock {
    origin: Instant,
    elapsed_ns: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock at its origin.
    pub fn new() -> ManualClock {
        ManualClock {
            origin: Instant::now(),
            elapsed_ns: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Moves time forward by `by`.
    pub fn advance(&self, by: Duration) {
        let ns = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.elapsed_ns.fetch_add(ns, Ordering::SeqCst);
    }

    /// Time advanced since construction.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.elapsed_ns.load(Ordering::SeqCst))
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.origin + self.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced_and_clones_share_it() {
        let clock = ManualClock::new();
        let start = clock.now();
        assert_eq!(clock.now(), start, "no time passes on its own");
        let shared = clock.clone();
        shared.advance(Duration::from_millis(150));
        assert_eq!(clock.now() - start, Duration::from_millis(150));
        assert_eq!(clock.elapsed(), Duration::from_millis(150));
    }
}
