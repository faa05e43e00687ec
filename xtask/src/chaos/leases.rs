//! The lease client: leases kept alive through random members while the
//! nemesis runs, and leases left to expire, each with one attached key,
//! over etcd's v3 gRPC API.
//!
//! Two properties are checked, both from what this client saw alone:
//! * **A lease kept alive never expires.** A renewal sent at `s` and
//!   answered with TTL `t` makes the leader's deadline at least `s + t`
//!   (the leader receives the renewal after it is sent; a new leader only
//!   moves deadlines later). So while every renewal is answered before the
//!   protection of the previous one ran out, the lease is *protected*: a
//!   renewal answered TTL 0, or a linearizable read of its key that finds
//!   nothing, is a violation. A renewal answered too late breaks the chain;
//!   the lease is then abandoned (it may legitimately expire) and replaced.
//! * **A lease left alone expires, and its key goes with it.** After the
//!   final heal, every lease not protected any more must vanish from
//!   `LeaseLeases` within a bound, and then no key of any of them may be
//!   readable, while the key of every protected lease must be.
//!
//! Lease ids are chosen by the client, so a grant whose answer was lost is
//! still followed: it must expire like the others.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use etcdproto::etcdserverpb as pb;

use super::cluster::Targets;
use super::report::Verdict;
use super::v3::{prefix_end, V3};
use super::ChaosError;

/// Every key attached to a lease of this client starts with this.
pub(crate) const LEASE_PREFIX: &str = "/lease/";
/// TTL of the kept leases: several renewal periods, so one lost renewal
/// does not break the chain.
const KEPT_TTL_S: i64 = 4;
/// TTL asked for the leases left to expire (the server raises it to its
/// minimum; the answer says what was granted).
const EXPIRING_TTL_S: i64 = 1;
/// Kept leases alive at a time.
const KEPT_LEASES: usize = 2;
/// How often a kept lease is renewed.
const RENEW_EVERY: Duration = Duration::from_millis(800);
/// How often a lease is granted and left to expire.
const GRANT_EXPIRING_EVERY: Duration = Duration::from_millis(700);
/// Taken off each renewal's protection, for the second granularity of the
/// TTL the server reports.
const PROTECTION_MARGIN: Duration = Duration::from_millis(250);
/// Beyond the longest TTL granted and the election timeouts a new leader
/// adds, how long the final check waits for the abandoned leases to go.
const EXPIRY_SLACK: Duration = Duration::from_secs(15);

/// What the lease client did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseCounts {
    /// Leases granted (or tried: an unknown outcome counts) to keep alive.
    pub kept_granted: u64,
    /// Renewals answered with a positive TTL.
    pub renewals: u64,
    /// Kept leases abandoned because a renewal came too late.
    pub chains_broken: u64,
    /// Kept leases still protected at the end, their key read back.
    pub kept_at_end: u64,
    /// Leases granted (or tried) and left to expire.
    pub expiring_granted: u64,
    /// Leases left to expire (abandoned kept ones included) seen gone at
    /// the end, with no key of theirs readable.
    pub expired_checked: u64,
}

/// A lease being kept alive.
struct Kept {
    id: i64,
    key: String,
    /// The attached put was acknowledged.
    key_acked: bool,
    /// Until when the lease cannot have expired.
    protected_until: Instant,
    last_renewal: Instant,
}

/// The lease client's result: counts and the verdict.
pub(crate) struct LeaseRun {
    pub counts: LeaseCounts,
    pub verdict: Verdict,
}

/// One lease client on its own thread.
pub(crate) struct LeaseClient {
    v3: V3,
    targets: Targets,
    stop: Arc<AtomicBool>,
    rng: StdRng,
    election_timeout: Duration,
    next_id: i64,
    kept: Vec<Kept>,
    /// Leases that must expire, with their key: lease id → key.
    expiring: BTreeMap<i64, String>,
    /// The longest TTL any grant answered.
    ttl_max_s: i64,
    counts: LeaseCounts,
    violations: Vec<String>,
    started: Instant,
}

impl LeaseClient {
    /// A client whose requests give up after `timeout`.
    pub fn new(
        targets: Targets,
        stop: Arc<AtomicBool>,
        seed: u64,
        timeout: Duration,
        election_timeout: Duration,
        tls: Option<super::v3::GrpcTls>,
    ) -> Result<LeaseClient, ChaosError> {
        Ok(LeaseClient {
            v3: V3::new(timeout, tls)?,
            targets,
            stop,
            rng: StdRng::seed_from_u64(seed ^ 0x1ea5e),
            election_timeout,
            // Positive, unique per seed and run: (seed's low 20 bits, count).
            next_id: (((seed & 0xf_ffff) as i64) << 32) | (1 << 60),
            kept: Vec::new(),
            expiring: BTreeMap::new(),
            ttl_max_s: KEPT_TTL_S,
            counts: LeaseCounts::default(),
            violations: Vec::new(),
            started: Instant::now(),
        })
    }

    fn at(&self, when: Instant) -> String {
        format!(
            "{:.3} s",
            when.saturating_duration_since(self.started).as_secs_f64()
        )
    }

    fn pick(&mut self) -> Option<u16> {
        let targets = self.targets.read().unwrap_or_else(|e| e.into_inner());
        targets.choose(&mut self.rng).map(|(_, port)| *port)
    }

    /// Keeps leases alive and lets others expire until `stop`, then checks
    /// the end state.
    pub fn run(mut self) -> LeaseRun {
        let mut last_expiring = Instant::now();
        while !self.stop.load(Ordering::SeqCst) {
            self.renew_due();
            if self.kept.len() < KEPT_LEASES {
                self.grant(true);
            }
            if last_expiring.elapsed() >= GRANT_EXPIRING_EVERY {
                last_expiring = Instant::now();
                self.grant(false);
            }
            self.check_a_kept_key();
            std::thread::sleep(Duration::from_millis(50));
        }
        self.finish()
    }

    /// Grants a lease with a client-chosen id and attaches one key.
    fn grant(&mut self, keep: bool) {
        let Some(port) = self.pick() else { return };
        self.next_id += 1;
        let id = self.next_id;
        let (ttl, kind) = if keep {
            (KEPT_TTL_S, "k")
        } else {
            (EXPIRING_TTL_S, "x")
        };
        let key = format!("{LEASE_PREFIX}{kind}/{id:x}");
        let sent = Instant::now();
        let granted = self.v3.lease_grant(port, pb::LeaseGrantRequest { ttl, id });
        match &granted {
            Ok(answer) => self.ttl_max_s = self.ttl_max_s.max(answer.ttl),
            // An id already taken is a definite refusal; anything else may
            // still have granted it.
            Err(status) if status.code() == tonic::Code::FailedPrecondition => return,
            Err(_) => {}
        }
        let answered = Instant::now();
        let acked = granted.is_ok()
            && self
                .v3
                .put(
                    port,
                    pb::PutRequest {
                        key: key.clone().into_bytes(),
                        value: b"leased".to_vec(),
                        lease: id,
                        ..Default::default()
                    },
                )
                .is_ok();
        match granted {
            Ok(answer) if keep && answer.ttl > 0 => {
                self.counts.kept_granted += 1;
                let protected_until = sent + Duration::from_secs(answer.ttl as u64);
                self.kept.push(Kept {
                    id,
                    key,
                    key_acked: acked,
                    protected_until: protected_until
                        .checked_sub(PROTECTION_MARGIN)
                        .unwrap_or(sent),
                    last_renewal: answered,
                });
            }
            _ => {
                if keep {
                    self.counts.kept_granted += 1;
                } else {
                    self.counts.expiring_granted += 1;
                }
                self.expiring.insert(id, key);
            }
        }
    }

    /// Renews every kept lease whose period is up; abandons those whose
    /// chain broke.
    fn renew_due(&mut self) {
        for i in (0..self.kept.len()).rev() {
            if self.kept[i].last_renewal.elapsed() < RENEW_EVERY {
                continue;
            }
            let Some(port) = self.pick() else { return };
            let id = self.kept[i].id;
            let sent = Instant::now();
            let answer = self.v3.lease_keep_alive(port, id);
            let answered = Instant::now();
            let protected_until = self.kept[i].protected_until;
            let in_time = answered <= protected_until;
            match answer {
                Ok(answer) if answer.ttl > 0 && in_time => {
                    self.counts.renewals += 1;
                    let kept = &mut self.kept[i];
                    kept.last_renewal = answered;
                    kept.protected_until = (sent + Duration::from_secs(answer.ttl as u64))
                        .checked_sub(PROTECTION_MARGIN)
                        .unwrap_or(sent)
                        .max(kept.protected_until);
                }
                Ok(answer) if in_time => {
                    self.violations.push(format!(
                        "lease {id:x} answered TTL {} to a renewal sent at {} and answered at {} \
                         through port {port}, although it was kept alive (protected until {})",
                        answer.ttl,
                        self.at(sent),
                        self.at(answered),
                        self.at(protected_until)
                    ));
                    self.abandon(i);
                }
                _ if !in_time => self.abandon(i),
                // A failed renewal within the protection: try again soon.
                _ => self.kept[i].last_renewal = answered,
            }
        }
    }

    fn abandon(&mut self, i: usize) {
        let kept = self.kept.swap_remove(i);
        self.counts.chains_broken += 1;
        self.expiring.insert(kept.id, kept.key);
    }

    /// Reads the key of one protected lease: it must be there.
    fn check_a_kept_key(&mut self) {
        let Some(i) = (0..self.kept.len())
            .collect::<Vec<_>>()
            .choose(&mut self.rng)
            .copied()
        else {
            return;
        };
        if !self.kept[i].key_acked {
            return;
        }
        let Some(port) = self.pick() else { return };
        let (key, id, protected_until) = (
            self.kept[i].key.clone(),
            self.kept[i].id,
            self.kept[i].protected_until,
        );
        let sent = Instant::now();
        let read = self.v3.range(
            port,
            pb::RangeRequest {
                key: key.clone().into_bytes(),
                ..Default::default()
            },
        );
        let answered = Instant::now();
        if let Ok(read) = read {
            if read.kvs.is_empty() && answered <= protected_until {
                self.violations.push(format!(
                    "key {key} of lease {id:x} was gone in a read sent at {} and answered at {} \
                     through port {port}, although the lease was kept alive (protected until {})",
                    self.at(sent),
                    self.at(answered),
                    self.at(protected_until)
                ));
            }
        }
    }

    /// After the final heal: keeps the protected leases alive while the
    /// others must expire, then reads every leased key.
    fn finish(mut self) -> LeaseRun {
        let bound = Duration::from_secs(self.ttl_max_s.max(0) as u64)
            + 2 * self.election_timeout
            + EXPIRY_SLACK;
        let deadline = Instant::now() + bound;
        let mut remaining: Vec<i64> = self.expiring.keys().copied().collect();
        loop {
            self.renew_due();
            if let Some(port) = self.pick() {
                if let Ok(listed) = self.v3.lease_leases(port) {
                    remaining = self
                        .expiring
                        .keys()
                        .copied()
                        .filter(|id| listed.contains(id))
                        .collect();
                    if remaining.is_empty() {
                        break;
                    }
                }
            }
            if Instant::now() > deadline {
                let shown: Vec<String> = remaining
                    .iter()
                    .take(5)
                    .map(|id| format!("{id:x}"))
                    .collect();
                self.violations.push(format!(
                    "{} lease(s) left alone still granted {} s after the final heal: {}",
                    remaining.len(),
                    bound.as_secs(),
                    shown.join(", ")
                ));
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        self.read_back();
        let verdict = if !self.violations.is_empty() {
            Verdict::Fail(self.violations.join("; "))
        } else if self.counts.kept_granted == 0 && self.counts.expiring_granted == 0 {
            Verdict::Unknown("no lease was granted".into())
        } else {
            Verdict::Pass
        };
        LeaseRun {
            counts: self.counts,
            verdict,
        }
    }

    /// Reads every key under [`LEASE_PREFIX`]: none of an expired lease, and
    /// every acknowledged one of a protected lease.
    fn read_back(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let read = loop {
            let Some(port) = self.pick() else {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            };
            let sent = Instant::now();
            match self.v3.range(
                port,
                pb::RangeRequest {
                    key: LEASE_PREFIX.as_bytes().to_vec(),
                    range_end: prefix_end(LEASE_PREFIX.as_bytes()),
                    keys_only: true,
                    ..Default::default()
                },
            ) {
                Ok(read) => break Some((read, Instant::now(), sent)),
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(status) => {
                    self.violations.push(format!(
                        "the final read of the leased keys failed: {}",
                        status.message()
                    ));
                    break None;
                }
            }
        };
        let Some((read, answered, sent)) = read else {
            return;
        };
        let present: std::collections::BTreeSet<String> = read
            .kvs
            .iter()
            .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
            .collect();
        let mut outlived = Vec::new();
        for key in self.expiring.values() {
            if present.contains(key) {
                outlived.push(key.clone());
            } else {
                self.counts.expired_checked += 1;
            }
        }
        if !outlived.is_empty() {
            self.violations.push(format!(
                "{} key(s) outlived their expired lease (read at {}): {}",
                outlived.len(),
                self.at(answered),
                outlived
                    .iter()
                    .take(5)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        for kept in &self.kept {
            if kept.protected_until < answered {
                continue;
            }
            if kept.key_acked && !present.contains(&kept.key) {
                self.violations.push(format!(
                    "key {} of lease {:x} was missing from the final read sent at {}, although \
                     the lease was kept alive (protected until {})",
                    kept.key,
                    kept.id,
                    self.at(sent),
                    self.at(kept.protected_until)
                ));
            } else {
                self.counts.kept_at_end += 1;
            }
        }
    }
}

impl LeaseRun {
    /// Several clients' results as one: counts added, the worst verdict
    /// (any failure, else any unknown), [`Verdict::Pass`] if all passed or
    /// none ran (`lease_clients` 0: the summary's counts show nothing was
    /// checked).
    pub fn merge(runs: Vec<LeaseRun>) -> LeaseRun {
        let mut counts = LeaseCounts::default();
        let (mut failures, mut unknowns) = (Vec::new(), Vec::new());
        for run in &runs {
            let c = &run.counts;
            counts.kept_granted += c.kept_granted;
            counts.renewals += c.renewals;
            counts.chains_broken += c.chains_broken;
            counts.kept_at_end += c.kept_at_end;
            counts.expiring_granted += c.expiring_granted;
            counts.expired_checked += c.expired_checked;
            match &run.verdict {
                Verdict::Pass => {}
                Verdict::Fail(why) => failures.push(why.clone()),
                Verdict::Unknown(why) => unknowns.push(why.clone()),
            }
        }
        let verdict = if !failures.is_empty() {
            Verdict::Fail(failures.join("; "))
        } else if !unknowns.is_empty() {
            Verdict::Unknown(unknowns.join("; "))
        } else {
            Verdict::Pass
        };
        LeaseRun { counts, verdict }
    }
}
