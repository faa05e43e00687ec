//! Lease expiry: the leader-local half of etcd's lessor.
//!
//! Which leases exist, their TTLs and attached keys are replicated state in
//! the keyspace (`mvcc::lease`). *When* a lease expires is not: only the
//! leader tracks deadlines, on a monotonic clock ([`LeaseClock`]), and it
//! expires a lease by proposing an ordinary `LeaseRevoke`, so every member
//! deletes the same keys at the same point of the log. Followers never
//! expire anything (they hold no deadlines at all).
//!
//! [`Lessor`] holds the deadlines and makes the decisions, free of I/O and
//! of real time (fed `now`), so its rules are tested without timing:
//! * It is *primary* only for one term, after the node confirmed it leads
//!   that term and has applied an entry of it (`promote`). Promotion resets
//!   every deadline to now + TTL + one election timeout: the old leader's
//!   deadlines are unknown here, and a lease gets at least its full TTL
//!   from a leader that can renew it (etcd #9395, #13294).
//! * A renewal of a lease whose deadline passed answers "expired" and does
//!   not renew it: the revoke is coming (etcd answers TTL 0).
//! * At most `max_revokes_per_check` expired leases are handed out per
//!   check (etcd's 1000 revokes per second at two checks per second); the
//!   rest wait for the next check.
//! * The remaining TTL it reports is clamped to `[0, granted TTL]`, also
//!   right after a promotion, when the deadline is TTL + an election
//!   timeout away (etcd #17642 reported a huge value there).
//!
//! A clock jump: the clock is monotonic (`Instant`), so a change of the wall
//! clock (NTP step, manual `date`) moves no deadline. A suspended process or
//! a stalled machine sees monotonic time pass at once on resume: its
//! deadlines may all be due together, which is why expiry re-confirms
//! leadership through the read barrier before proposing (etcd #15247): a
//! deposed leader cannot confirm and revokes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often the leader looks for expired leases (etcd: every 500 ms).
pub const EXPIRY_CHECK_INTERVAL: Duration = Duration::from_millis(500);
/// Expiry revokes per second at most (etcd's `leaseRevokeRate`).
pub const MAX_EXPIRY_REVOKES_PER_SECOND: usize = 1000;
/// Expiry revokes per check: the per-second rate spread over the checks.
pub const MAX_EXPIRY_REVOKES_PER_CHECK: usize =
    MAX_EXPIRY_REVOKES_PER_SECOND * EXPIRY_CHECK_INTERVAL.as_millis() as usize / 1000;

/// A monotonic clock for lease deadlines.
pub trait LeaseClock: Send + Sync + 'static {
    /// Time since an arbitrary fixed origin; never goes backwards.
    fn now(&self) -> Duration;
}

/// Production clock: [`Instant`] since creation.
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    origin: Instant,
}

impl MonotonicClock {
    /// A clock starting now.
    pub fn new() -> Self {
        MonotonicClock {
            origin: Instant::now(),
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        MonotonicClock::new()
    }
}

impl LeaseClock for MonotonicClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A clock that moves only when told (tests, simulations).
#[derive(Debug, Default)]
pub struct ManualClock {
    now_ms: AtomicU64,
}

impl ManualClock {
    /// A clock at 0.
    pub fn new() -> Self {
        ManualClock::default()
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.now_ms
            .fetch_add(by.as_millis() as u64, Ordering::AcqRel);
    }
}

impl LeaseClock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_millis(self.now_ms.load(Ordering::Acquire))
    }
}

/// What a keep-alive gets from the lessor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// Renewed for its full TTL (seconds).
    Renewed {
        /// The lease's granted TTL.
        ttl_s: i64,
    },
    /// Its deadline passed: it is (about to be) revoked; not renewed.
    Expired,
    /// This lessor is not primary: only a confirmed leader renews.
    NotPrimary,
}

/// The leader's deadlines (see the module docs).
#[derive(Debug, Clone)]
pub struct Lessor {
    primary_term: Option<u64>,
    deadlines: BTreeMap<i64, Duration>,
    /// Expired leases whose revoke was handed out and not yet seen applied.
    revoking: BTreeSet<i64>,
    election_timeout: Duration,
    max_revokes_per_check: usize,
}

fn ttl(ttl_s: i64) -> Duration {
    Duration::from_secs(u64::try_from(ttl_s).unwrap_or(0))
}

impl Lessor {
    /// A lessor that is not primary.
    pub fn new(election_timeout: Duration, max_revokes_per_check: usize) -> Self {
        assert!(max_revokes_per_check > 0, "expiry must revoke something");
        Lessor {
            primary_term: None,
            deadlines: BTreeMap::new(),
            revoking: BTreeSet::new(),
            election_timeout,
            max_revokes_per_check,
        }
    }

    /// The term this lessor is primary for, if any.
    pub fn primary_term(&self) -> Option<u64> {
        self.primary_term
    }

    /// Becomes primary for `term`: every lease's deadline is reset to
    /// `now + TTL + election timeout`.
    pub fn promote(&mut self, term: u64, now: Duration, leases: &[(i64, i64)]) {
        self.primary_term = Some(term);
        self.revoking.clear();
        self.deadlines = leases
            .iter()
            .map(|&(id, ttl_s)| (id, now + ttl(ttl_s) + self.election_timeout))
            .collect();
        tracing::info!(term, leases = leases.len(), "lessor promoted");
    }

    /// Stops being primary: forgets every deadline.
    pub fn demote(&mut self) {
        if self.primary_term.take().is_some() {
            tracing::info!("lessor demoted");
        }
        self.deadlines.clear();
        self.revoking.clear();
    }

    /// Follows the replicated leases: a lease seen for the first time (just
    /// granted) gets `now + TTL`; deadlines of leases gone are dropped.
    pub fn sync(&mut self, now: Duration, leases: &[(i64, i64)]) {
        if self.primary_term.is_none() {
            return;
        }
        let current: BTreeSet<i64> = leases.iter().map(|(id, _)| *id).collect();
        self.deadlines.retain(|id, _| current.contains(id));
        self.revoking.retain(|id| current.contains(id));
        for &(id, ttl_s) in leases {
            self.deadlines.entry(id).or_insert(now + ttl(ttl_s));
        }
    }

    /// Lease `id` was just granted (or granted again after a revoke): its
    /// deadline is `now + TTL`, whatever an earlier lease of that id had.
    pub fn granted(&mut self, id: i64, ttl_s: i64, now: Duration) {
        if self.primary_term.is_none() {
            return;
        }
        self.revoking.remove(&id);
        self.deadlines.insert(id, now + ttl(ttl_s));
    }

    /// Lease `id` was revoked: its deadline goes.
    pub fn revoked(&mut self, id: i64) {
        self.revoking.remove(&id);
        self.deadlines.remove(&id);
    }

    /// A keep-alive of lease `id` (granted TTL `ttl_s`) at `now`.
    pub fn renew(&mut self, id: i64, ttl_s: i64, now: Duration) -> Renewal {
        if self.primary_term.is_none() {
            return Renewal::NotPrimary;
        }
        let deadline = self.deadlines.entry(id).or_insert(now + ttl(ttl_s));
        if *deadline <= now || self.revoking.contains(&id) {
            return Renewal::Expired;
        }
        *deadline = now + ttl(ttl_s);
        Renewal::Renewed { ttl_s }
    }

    /// Seconds left of lease `id` (granted `ttl_s`), truncated and clamped
    /// to `[0, ttl_s]`; a lessor that is not primary answers `ttl_s`.
    pub fn remaining_s(&self, id: i64, ttl_s: i64, now: Duration) -> i64 {
        let Some(deadline) = self
            .primary_term
            .and_then(|_| self.deadlines.get(&id).copied())
        else {
            return ttl_s;
        };
        let left = deadline.saturating_sub(now);
        let left_s = left.as_millis().div_ceil(1000);
        i64::try_from(left_s)
            .unwrap_or(i64::MAX)
            .clamp(0, ttl_s.max(0))
    }

    /// Leases whose deadline passed, earliest first, at most
    /// `max_revokes_per_check`; each is marked as being revoked.
    pub fn due(&mut self, now: Duration) -> Vec<i64> {
        if self.primary_term.is_none() {
            return Vec::new();
        }
        let mut expired: Vec<(Duration, i64)> = self
            .deadlines
            .iter()
            .filter(|(id, deadline)| **deadline <= now && !self.revoking.contains(id))
            .map(|(id, deadline)| (*deadline, *id))
            .collect();
        expired.sort_unstable();
        expired.truncate(self.max_revokes_per_check);
        let due: Vec<i64> = expired.into_iter().map(|(_, id)| id).collect();
        self.revoking.extend(due.iter().copied());
        due
    }

    /// The revoke of `id` failed (not applied): retry it at the next check.
    pub fn revoke_failed(&mut self, id: i64) {
        self.revoking.remove(&id);
    }
}

/// Runs the leader's expiry check every [`EXPIRY_CHECK_INTERVAL`] until the
/// returned task is aborted or the node stops.
pub fn spawn(store: crate::KvStore) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(EXPIRY_CHECK_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            match store.expire_leases().await {
                Ok(_) => {}
                Err(crate::KvError::Stopped) => return,
                Err(error) => tracing::debug!(%error, "lease expiry check skipped"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn the_per_check_rate_is_half_the_per_second_rate() {
        assert_eq!(MAX_EXPIRY_REVOKES_PER_CHECK, 500);
    }

    #[test]
    fn only_a_primary_lessor_expires_or_renews() {
        let mut lessor = Lessor::new(S, 10);
        lessor.sync(Duration::ZERO, &[(1, 5)]);
        assert_eq!(lessor.due(100 * S), Vec::<i64>::new());
        assert_eq!(lessor.renew(1, 5, S), Renewal::NotPrimary);
        assert_eq!(lessor.remaining_s(1, 5, 100 * S), 5);
    }

    #[test]
    fn promotion_resets_to_ttl_plus_an_election_timeout() {
        let mut lessor = Lessor::new(2 * S, 10);
        lessor.promote(3, 10 * S, &[(1, 5)]);
        assert!(lessor.due(16 * S).is_empty(), "TTL alone is not enough");
        assert_eq!(lessor.remaining_s(1, 5, 10 * S), 5, "clamped to the TTL");
        assert_eq!(lessor.due(17 * S), vec![1]);
        assert!(lessor.due(18 * S).is_empty(), "handed out once");
        lessor.revoke_failed(1);
        assert_eq!(lessor.due(18 * S), vec![1], "retried after a failure");
    }

    #[test]
    fn an_expired_lease_is_not_renewed() {
        let mut lessor = Lessor::new(S, 10);
        lessor.promote(1, Duration::ZERO, &[]);
        lessor.sync(Duration::ZERO, &[(1, 5)]);
        assert_eq!(lessor.renew(1, 5, 4 * S), Renewal::Renewed { ttl_s: 5 });
        assert_eq!(lessor.remaining_s(1, 5, 6 * S), 3);
        assert_eq!(lessor.renew(1, 5, 9 * S), Renewal::Expired);
        assert_eq!(lessor.remaining_s(1, 5, 9 * S), 0);
    }

    #[test]
    fn a_lease_granted_again_gets_a_fresh_deadline() {
        let mut lessor = Lessor::new(S, 10);
        lessor.promote(1, Duration::ZERO, &[(1, 5)]);
        lessor.revoked(1);
        lessor.granted(1, 100, 3 * S);
        assert_eq!(lessor.remaining_s(1, 100, 3 * S), 100);
        assert!(lessor.due(50 * S).is_empty());
    }

    #[test]
    fn due_is_rate_limited_and_earliest_first() {
        let mut lessor = Lessor::new(S, 2);
        lessor.promote(1, Duration::ZERO, &[]);
        lessor.sync(Duration::ZERO, &[(9, 1), (8, 2), (7, 3)]);
        assert_eq!(lessor.due(10 * S), vec![9, 8]);
        assert_eq!(lessor.due(10 * S), vec![7]);
        lessor.sync(10 * S, &[(7, 3)]);
        assert_eq!(lessor.deadlines.len(), 1, "revoked leases are forgotten");
    }
}
