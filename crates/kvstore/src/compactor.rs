//! Auto-compaction, etcd's `--auto-compaction-mode` and
//! `--auto-compaction-retention`: only the leader runs it, and it compacts
//! by proposing an ordinary compaction, so every member compacts at the
//! same point of the log.
//!
//! * `revision` mode keeps the last `retention` revisions: every check
//!   interval (5 minutes, as etcd) the leader compacts at
//!   `current - retention` unless that is not positive or was the last one.
//! * `periodic` mode keeps `retention` of history: the compactor samples the
//!   revision every tenth of min(retention, 1 h) and, once `retention` has
//!   passed since the last success (then every min(retention, 1 h)),
//!   compacts at the oldest sample, the revision of about `retention` ago.
//!
//! The decisions live in [`Compactor`], a clock-free state machine fed
//! `(now, revision, is_leader)`, so they are tested without timing; the
//! task in [`spawn`] only feeds it and proposes what it says.

use std::collections::VecDeque;
use std::time::Duration;

use etcdproto::etcdserverpb as pb;
use raftnode::Role;
use tokio::task::JoinHandle;

use crate::error::KvError;
use crate::KvStore;

/// How often revision mode checks (5 minutes, as etcd).
pub const REVISION_CHECK_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// Periodic mode compacts at most this far apart once started (etcd's hour).
pub const PERIODIC_INTERVAL_MAX: Duration = Duration::from_secs(60 * 60);
/// Periodic mode samples this many times per compaction interval.
const PERIODIC_SAMPLES_PER_INTERVAL: u32 = 10;

/// The auto-compaction policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AutoCompaction {
    /// No auto-compaction (a retention of 0).
    #[default]
    Off,
    /// Keep the last `retention` revisions.
    Revision {
        /// Revisions kept behind the current one.
        retention: i64,
    },
    /// Keep `retention` of history.
    Periodic {
        /// How much history is kept.
        retention: Duration,
    },
}

impl AutoCompaction {
    /// Default of `--auto-compaction-mode` (etcd's).
    pub const DEFAULT_MODE: &'static str = "periodic";
    /// Default of `--auto-compaction-retention` (etcd's: off).
    pub const DEFAULT_RETENTION: &'static str = "0";

    /// Parses etcd's flags: `mode` is `periodic` or `revision`; `retention`
    /// is a revision count in revision mode, and in periodic mode a
    /// duration (`"30m"`, `"1h30m"`, `"90s"`) or a bare number of hours.
    /// A retention of 0 turns auto-compaction off.
    pub fn parse(mode: &str, retention: &str) -> Result<AutoCompaction, String> {
        let retention = retention.trim();
        match mode {
            "revision" => {
                let revisions: i64 = retention.parse().map_err(|_| {
                    format!("revision retention {retention:?} is not a revision count")
                })?;
                match revisions {
                    0 => Ok(AutoCompaction::Off),
                    r if r < 0 => Err(format!("revision retention {r} is negative")),
                    r => Ok(AutoCompaction::Revision { retention: r }),
                }
            }
            "periodic" => {
                let period = match retention.parse::<u64>() {
                    Ok(hours) => Duration::from_secs(hours.saturating_mul(3600)),
                    Err(_) => parse_duration(retention)?,
                };
                if period.is_zero() {
                    Ok(AutoCompaction::Off)
                } else {
                    Ok(AutoCompaction::Periodic { retention: period })
                }
            }
            other => Err(format!(
                "auto-compaction mode {other:?} is neither \"periodic\" nor \"revision\""
            )),
        }
    }

    /// How often the compactor looks.
    pub fn tick(&self) -> Option<Duration> {
        match *self {
            AutoCompaction::Off => None,
            AutoCompaction::Revision { .. } => Some(REVISION_CHECK_INTERVAL),
            AutoCompaction::Periodic { retention } => Some(
                (retention.min(PERIODIC_INTERVAL_MAX) / PERIODIC_SAMPLES_PER_INTERVAL)
                    .max(Duration::from_millis(1)),
            ),
        }
    }
}

/// Parses a Go-style duration: one or more `<number><unit>` with units
/// `h`, `m`, `s`, `ms`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("retention {text:?} is not a duration like \"1h\" or \"30m\"");
    let mut total = Duration::ZERO;
    let mut rest = text;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let (unit_ms, unit_len) = if rest.starts_with("ms") {
            (1, 2)
        } else if rest.starts_with('h') {
            (3_600_000, 1)
        } else if rest.starts_with('m') {
            (60_000, 1)
        } else if rest.starts_with('s') {
            (1_000, 1)
        } else {
            return Err(bad());
        };
        rest = &rest[unit_len..];
        total = total.saturating_add(Duration::from_millis(number.saturating_mul(unit_ms)));
    }
    Ok(total)
}

/// The compactor's decisions, free of clocks and I/O.
#[derive(Debug, Clone)]
pub struct Compactor {
    policy: AutoCompaction,
    /// Revision mode: the last revision compacted at.
    last_compacted: i64,
    /// Periodic mode: revisions sampled at each tick, oldest first.
    samples: VecDeque<i64>,
    /// Periodic mode: when the last compaction succeeded (or the start).
    last_success: Duration,
    /// Periodic mode: how long after `last_success` the next one is due.
    due_after: Duration,
}

impl Compactor {
    /// A compactor for `policy`, started at `now` (any monotonic origin).
    pub fn new(policy: AutoCompaction, now: Duration) -> Compactor {
        let due_after = match policy {
            AutoCompaction::Periodic { retention } => retention,
            _ => Duration::ZERO,
        };
        Compactor {
            policy,
            last_compacted: 0,
            samples: VecDeque::new(),
            last_success: now,
            due_after,
        }
    }

    /// One tick at `now` with the current `revision`: the revision to
    /// compact at, if any. A follower samples (periodic) but never compacts.
    pub fn tick(&mut self, now: Duration, revision: i64, is_leader: bool) -> Option<i64> {
        match self.policy {
            AutoCompaction::Off => None,
            AutoCompaction::Revision { retention } => {
                let target = revision - retention;
                if !is_leader || target <= 0 || target == self.last_compacted {
                    return None;
                }
                Some(target)
            }
            AutoCompaction::Periodic { retention } => {
                let tick = self.policy.tick().unwrap_or(retention);
                let keep = (retention.as_millis() / tick.as_millis().max(1)) as usize + 1;
                self.samples.push_back(revision);
                while self.samples.len() > keep {
                    self.samples.pop_front();
                }
                if !is_leader || now.saturating_sub(self.last_success) < self.due_after {
                    return None;
                }
                self.samples.front().copied()
            }
        }
    }

    /// Records the outcome of compacting at `revision` (etcd counts an
    /// already-compacted revision as success).
    pub fn compacted(&mut self, now: Duration, revision: i64, result: &Result<(), KvError>) {
        if matches!(result, Ok(()) | Err(KvError::Compacted)) {
            self.last_compacted = revision;
            self.last_success = now;
            if let AutoCompaction::Periodic { retention } = self.policy {
                self.due_after = retention.min(PERIODIC_INTERVAL_MAX);
            }
        }
    }
}

/// Runs `policy` for `store` until the returned task is aborted (or the
/// node stops); `None` when the policy is off. Only while this node is the
/// leader does it propose compactions.
pub fn spawn(store: KvStore, policy: AutoCompaction) -> Option<JoinHandle<()>> {
    let tick = policy.tick()?;
    tracing::info!(?policy, "auto-compaction on");
    Some(tokio::spawn(async move {
        let origin = tokio::time::Instant::now();
        let mut compactor = Compactor::new(policy, Duration::ZERO);
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval.tick().await;
        loop {
            interval.tick().await;
            let now = origin.elapsed();
            let is_leader = store.consensus().status().role == Role::Leader;
            let revision = store.keyspace_status().revision;
            let Some(target) = compactor.tick(now, revision, is_leader) else {
                continue;
            };
            let result = store
                .compact(pb::CompactionRequest {
                    revision: target,
                    physical: false,
                })
                .await
                .map(|_| ());
            match &result {
                Ok(()) => tracing::info!(revision = target, "auto-compacted"),
                Err(error) => tracing::warn!(revision = target, %error, "auto-compaction failed"),
            }
            if matches!(result, Err(KvError::Stopped)) {
                return;
            }
            compactor.compacted(origin.elapsed(), target, &result);
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn parses_etcds_flag_forms() {
        assert_eq!(
            AutoCompaction::parse("revision", "1000"),
            Ok(AutoCompaction::Revision { retention: 1000 })
        );
        assert_eq!(
            AutoCompaction::parse("periodic", "1"),
            Ok(AutoCompaction::Periodic {
                retention: 60 * MINUTE
            })
        );
        assert_eq!(
            AutoCompaction::parse("periodic", "1h30m"),
            Ok(AutoCompaction::Periodic {
                retention: 90 * MINUTE
            })
        );
        assert_eq!(
            AutoCompaction::parse("periodic", "0"),
            Ok(AutoCompaction::Off)
        );
        assert!(AutoCompaction::parse("revision", "5m").is_err());
        assert!(AutoCompaction::parse("weekly", "1").is_err());
        assert!(AutoCompaction::parse("periodic", "5x").is_err());
    }

    #[test]
    fn revision_mode_keeps_retention_revisions_and_only_on_the_leader() {
        let mut compactor =
            Compactor::new(AutoCompaction::Revision { retention: 10 }, Duration::ZERO);
        assert_eq!(
            compactor.tick(MINUTE, 5, true),
            None,
            "nothing to compact yet"
        );
        assert_eq!(
            compactor.tick(MINUTE, 25, false),
            None,
            "followers never compact"
        );
        assert_eq!(compactor.tick(MINUTE, 25, true), Some(15));
        compactor.compacted(MINUTE, 15, &Ok(()));
        assert_eq!(compactor.tick(MINUTE, 25, true), None, "same target twice");
        assert_eq!(compactor.tick(MINUTE, 40, true), Some(30));
    }

    #[test]
    fn periodic_mode_compacts_at_the_revision_of_one_retention_ago() {
        let retention = 10 * MINUTE;
        let policy = AutoCompaction::Periodic { retention };
        let tick = policy.tick().unwrap();
        assert_eq!(tick, MINUTE);
        let mut compactor = Compactor::new(policy, Duration::ZERO);
        let mut now = Duration::ZERO;
        let mut decided = None;
        // One write per minute: the revision is 100 + minutes.
        for minute in 1..=10u32 {
            now = MINUTE * minute;
            decided = compactor.tick(now, 100 + i64::from(minute), true);
            if minute < 10 {
                assert_eq!(decided, None, "not due before the retention passed");
            }
        }
        assert_eq!(
            decided,
            Some(101),
            "the oldest sample, about ten minutes back"
        );
        compactor.compacted(now, 101, &Ok(()));
        for minute in 11..20u32 {
            assert_eq!(
                compactor.tick(MINUTE * minute, 100 + i64::from(minute), true),
                None
            );
        }
        assert_eq!(compactor.tick(MINUTE * 20, 120, true), Some(110));
        assert_eq!(
            compactor.tick(MINUTE * 40, 140, false),
            None,
            "followers never compact"
        );
    }
}
