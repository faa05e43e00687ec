//! Latency of recent client requests: a bounded ring of samples, and the
//! middleware that records every request of the client port.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use parking_lot::Mutex;

use super::report::LatencySummary;

/// Samples kept (the newest); older ones are dropped first.
pub const MAX_LATENCY_SAMPLES: usize = 4096;

/// Samples older than this are left out of the percentiles.
pub const LATENCY_WINDOW: Duration = Duration::from_secs(10);

/// The ring of recent request latencies.
#[derive(Debug, Default)]
pub struct LatencyRing {
    samples: Mutex<VecDeque<(Instant, u64)>>,
}

impl LatencyRing {
    /// Records one request that took `took`, finished at `at`.
    pub fn record(&self, at: Instant, took: Duration) {
        let mut samples = self.samples.lock();
        if samples.len() == MAX_LATENCY_SAMPLES {
            samples.pop_front();
        }
        samples.push_back((at, took.as_micros().min(u64::MAX as u128) as u64));
    }

    /// Percentiles of the samples of the last [`LATENCY_WINDOW`] before `now`.
    pub fn summary(&self, now: Instant) -> LatencySummary {
        let mut recent: Vec<u64> = self
            .samples
            .lock()
            .iter()
            .filter(|(at, _)| now.saturating_duration_since(*at) <= LATENCY_WINDOW)
            .map(|(_, us)| *us)
            .collect();
        recent.sort_unstable();
        let at_rank = |percent: usize| match recent.len() {
            0 => 0,
            n => recent[((n * percent).div_ceil(100)).clamp(1, n) - 1],
        };
        LatencySummary {
            count: recent.len() as u64,
            p50_us: at_rank(50),
            p99_us: at_rank(99),
            window_ms: LATENCY_WINDOW.as_millis() as u64,
        }
    }
}

/// Middleware: records how long each client request took until its
/// response head (a stream's first byte, not its end). The view's own
/// routes are not served through it.
pub(crate) async fn record_latency(
    State(ring): State<Arc<LatencyRing>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let response = next.run(request).await;
    let now = Instant::now();
    ring.record(now, now - started);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_cover_the_window_only() {
        let ring = LatencyRing::default();
        let start = Instant::now();
        ring.record(start, Duration::from_secs(5));
        let later = start + LATENCY_WINDOW + Duration::from_secs(1);
        for ms in 1..=100 {
            ring.record(later, Duration::from_millis(ms));
        }
        let summary = ring.summary(later);
        assert_eq!(summary.count, 100);
        assert_eq!(summary.p50_us, 50_000);
        assert_eq!(summary.p99_us, 99_000);
        assert_eq!(LatencyRing::default().summary(later).p99_us, 0);
    }

    #[test]
    fn the_ring_is_bounded() {
        let ring = LatencyRing::default();
        let now = Instant::now();
        for _ in 0..(MAX_LATENCY_SAMPLES + 10) {
            ring.record(now, Duration::from_micros(1));
        }
        assert_eq!(ring.summary(now).count, MAX_LATENCY_SAMPLES as u64);
    }
}
