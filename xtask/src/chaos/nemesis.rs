//! The nemesis: one fault at a time, on a schedule drawn from the seed,
//! each healed before the next.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::cluster::Cluster;
use super::ChaosError;

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// kill -9 a random member, then restart it.
    Kill,
    /// kill -9 the leader, then restart it.
    KillLeader,
    /// SIGSTOP a random member past the election timeout, then SIGCONT.
    Pause,
    /// Cut the leader off from every other member, then heal.
    PartitionLeader,
    /// Split the members into a random majority and minority, then heal.
    Split,
    /// A bridge: two sides that cannot talk, and one node that talks to
    /// both, then heal.
    Bridge,
    /// Remove a follower, then add a brand-new node (fresh id and data
    /// dir) with `--join`.
    Membership,
    /// Cut the leader off and fire many writes at it (appended, never
    /// committed) while the majority moves on past its catch-up entries;
    /// heal, let it install the new leader's snapshot inside its divergent
    /// log, then kill -9 and restart it.
    IsolatedLeaderWrites,
    /// The leader delivers a follower's frames (its forwarded proposals
    /// included) but answers each one after the peer request timeout, then
    /// heal: a sender that resent a timed-out frame would apply a write twice.
    Stall,
}

impl FaultKind {
    /// Every kind, in a fixed order.
    pub const ALL: [FaultKind; 9] = [
        FaultKind::Kill,
        FaultKind::KillLeader,
        FaultKind::Pause,
        FaultKind::PartitionLeader,
        FaultKind::Split,
        FaultKind::Bridge,
        FaultKind::Membership,
        FaultKind::IsolatedLeaderWrites,
        FaultKind::Stall,
    ];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::KillLeader => "kill-leader",
            FaultKind::Pause => "pause",
            FaultKind::PartitionLeader => "partition-leader",
            FaultKind::Split => "split",
            FaultKind::Bridge => "bridge",
            FaultKind::Membership => "membership",
            FaultKind::IsolatedLeaderWrites => "isolated-leader-writes",
            FaultKind::Stall => "stall",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FaultKind {
    type Err = ChaosError;

    fn from_str(s: &str) -> Result<FaultKind, ChaosError> {
        FaultKind::ALL
            .into_iter()
            .find(|kind| kind.name() == s)
            .ok_or_else(|| ChaosError::Config(format!("unknown fault {s:?}; known: {}", names())))
    }
}

fn names() -> String {
    FaultKind::ALL.map(FaultKind::name).join(", ")
}

/// Parses `all` or a comma-separated list of fault names.
pub fn parse_faults(list: &str) -> Result<Vec<FaultKind>, ChaosError> {
    if list == "all" {
        return Ok(FaultKind::ALL.to_vec());
    }
    let mut kinds = Vec::new();
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let kind: FaultKind = name.parse()?;
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    if kinds.is_empty() {
        return Err(ChaosError::Config("--faults names no fault".into()));
    }
    Ok(kinds)
}

/// One fault as injected, for the report and the timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultRecord {
    /// What kind.
    pub kind: FaultKind,
    /// Which nodes, in words (e.g. `killed 2 (leader)`).
    pub detail: String,
    /// When it was injected, in microseconds since the run started.
    pub start_us: u64,
    /// When it was healed, in microseconds since the run started.
    pub heal_us: u64,
    /// Time from the heal to the next acknowledged write (`None` if the
    /// cluster did not recover within the liveness bound).
    pub recovery_ms: Option<u64>,
}

/// The order of faults: rounds of every selected kind, each round
/// shuffled by the seeded generator. Deterministic for a seed.
pub fn schedule(kinds: &[FaultKind], rounds: usize, rng: &mut StdRng) -> Vec<FaultKind> {
    let mut plan = Vec::with_capacity(kinds.len() * rounds);
    for _ in 0..rounds {
        let mut round = kinds.to_vec();
        round.shuffle(rng);
        plan.extend(round);
    }
    plan
}

/// How long a fault lasts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub hold_ms: u64,
    pub started: Instant,
}

impl Timing {
    fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }
}

/// Injects one fault of `kind`, holds it, heals it and returns its record.
pub(crate) fn inject(
    cluster: &mut Cluster,
    kind: FaultKind,
    rng: &mut StdRng,
    timing: Timing,
) -> Result<FaultRecord, ChaosError> {
    let hold = Duration::from_millis(timing.hold_ms);
    let start_us = timing.now_us();
    let detail = match kind {
        FaultKind::Kill => {
            let victim = pick(&cluster.members(), rng)?;
            kill_and_restart(cluster, victim, hold)?;
            format!("killed {victim}")
        }
        FaultKind::KillLeader => {
            let leader = cluster.wait_leader(Duration::from_secs(10))?;
            kill_and_restart(cluster, leader, hold)?;
            format!("killed leader {leader}")
        }
        FaultKind::Pause => pause(cluster, rng, timing.hold_ms)?,
        FaultKind::PartitionLeader => {
            let leader = cluster.wait_leader(Duration::from_secs(10))?;
            let rest: Vec<u64> = cluster
                .members()
                .into_iter()
                .filter(|id| *id != leader)
                .collect();
            partition(cluster, &[leader], &rest, hold)?
        }
        FaultKind::Split => {
            let mut members = cluster.members();
            members.shuffle(rng);
            let minority = (members.len() - 1) / 2;
            let (small, large) = members.split_at(minority.max(1));
            partition(cluster, small, large, hold)?
        }
        FaultKind::Bridge => bridge(cluster, rng, hold)?,
        FaultKind::Membership => membership(cluster, rng, hold)?,
        FaultKind::IsolatedLeaderWrites => isolated_leader_writes(cluster, hold)?,
        FaultKind::Stall => stall(cluster, rng, timing.hold_ms)?,
    };
    let heal_us = timing.now_us();
    tracing::info!(fault = %kind, %detail, "healed");
    Ok(FaultRecord {
        kind,
        detail,
        start_us,
        heal_us,
        recovery_ms: None,
    })
}

fn pick(ids: &[u64], rng: &mut StdRng) -> Result<u64, ChaosError> {
    ids.choose(rng)
        .copied()
        .ok_or_else(|| ChaosError::Cluster("no member to pick".into()))
}

fn kill_and_restart(cluster: &mut Cluster, victim: u64, hold: Duration) -> Result<(), ChaosError> {
    cluster.kill(victim);
    std::thread::sleep(hold);
    cluster.spawn(victim, false)
}

/// Pauses the leader or a random member for at least three election
/// timeouts (raft-rs randomises the timeout in [1, 2) times the base).
fn pause(cluster: &mut Cluster, rng: &mut StdRng, hold_ms: u64) -> Result<String, ChaosError> {
    let victim = match (rng.gen_bool(0.5), cluster.leader_now()) {
        (true, Some(leader)) => leader,
        _ => pick(&cluster.members(), rng)?,
    };
    let pause_ms = hold_ms.max(3 * cluster.election_timeout_ms());
    cluster.pause(victim, true)?;
    std::thread::sleep(Duration::from_millis(pause_ms));
    cluster.pause(victim, false)?;
    Ok(format!("paused {victim} for {pause_ms} ms"))
}

fn partition(
    cluster: &mut Cluster,
    a: &[u64],
    b: &[u64],
    hold: Duration,
) -> Result<String, ChaosError> {
    cluster.cut(a, b)?;
    std::thread::sleep(hold);
    cluster.heal_network()?;
    Ok(format!("{a:?} | {b:?}"))
}

/// Two sides that cannot talk to each other, one node that talks to both.
fn bridge(cluster: &mut Cluster, rng: &mut StdRng, hold: Duration) -> Result<String, ChaosError> {
    let mut members = cluster.members();
    if members.len() < 3 {
        return Err(ChaosError::Cluster(
            "a bridge needs at least 3 members".into(),
        ));
    }
    members.shuffle(rng);
    let (bridge, rest) = members.split_at(1);
    let (a, b) = rest.split_at(rest.len() / 2);
    cluster.cut(a, b)?;
    std::thread::sleep(hold);
    cluster.heal_network()?;
    Ok(format!("{a:?} <-> {bridge:?} <-> {b:?}"))
}

/// The members other than `leader`.
fn followers_of(cluster: &Cluster, leader: u64) -> Vec<u64> {
    cluster
        .members()
        .into_iter()
        .filter(|id| *id != leader)
        .collect()
}

fn membership(
    cluster: &mut Cluster,
    rng: &mut StdRng,
    hold: Duration,
) -> Result<String, ChaosError> {
    let leader = cluster.wait_leader(Duration::from_secs(10))?;
    let followers = followers_of(cluster, leader);
    let victim = pick(&followers, rng)?;
    cluster.remove_member(victim, Duration::from_secs(20))?;
    std::thread::sleep(hold);
    let added = cluster.add_fresh_member(Duration::from_secs(30))?;
    Ok(format!("removed {victim}, added fresh {added}"))
}

/// Writes fired at the isolated leader: it appends them all before check
/// quorum makes it step down, and they must outnumber what the majority
/// writes meanwhile, so that the snapshot it later gets lies inside its own
/// divergent log.
const ISOLATED_WRITES: usize = 600;
/// Threads firing them, each abandoning a write after `ISOLATED_WRITE_WAIT`.
const ISOLATED_WRITERS: usize = 24;
/// How long a fired write is waited for: long enough to be appended, far
/// shorter than the election timeout.
const ISOLATED_WRITE_WAIT: Duration = Duration::from_millis(25);
/// Writes the majority commits after the cut (beyond the workload's), so
/// that it snapshots and compacts past the old leader's match.
const MAJORITY_WRITES: usize = 100;

/// Isolates the leader, fires writes it can never commit (keys outside the
/// workload's, so the checkers never see them), lets the majority commit
/// more, heals, waits for the old leader to install a snapshot and restarts
/// it with kill -9.
fn isolated_leader_writes(cluster: &mut Cluster, hold: Duration) -> Result<String, ChaosError> {
    let leader = cluster.wait_leader(Duration::from_secs(10))?;
    let rest: Vec<u64> = cluster
        .members()
        .into_iter()
        .filter(|id| *id != leader)
        .collect();
    cluster.cut(&[leader], &rest)?;
    let url = cluster.url(leader, "/nemesis-lost-");
    std::thread::scope(|scope| {
        for writer in 0..ISOLATED_WRITERS {
            let url = url.clone();
            scope.spawn(move || {
                let Ok(client) = reqwest::blocking::Client::builder()
                    .timeout(ISOLATED_WRITE_WAIT)
                    .build()
                else {
                    return;
                };
                for i in (writer..ISOLATED_WRITES).step_by(ISOLATED_WRITERS) {
                    let _ = client.put(format!("{url}{i}")).body("lost").send();
                }
            });
        }
    });
    let mut committed = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while committed < MAJORITY_WRITES && Instant::now() < deadline {
        let node = rest[committed % rest.len()];
        let response = cluster
            .http()
            .put(cluster.url(node, &format!("/nemesis-kept-{committed}")))
            .body("kept")
            .send();
        match response {
            Ok(r) if r.status().is_success() => committed += 1,
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    let snapshot_index = |cluster: &Cluster| cluster.status(leader).map_or(0, |s| s.snapshot_index);
    let before = snapshot_index(cluster);
    std::thread::sleep(hold);
    cluster.heal_network()?;
    // Restart right after the install, before a snapshot of its own (with
    // the marker of which a restart would not replay the divergent tail).
    let deadline = Instant::now() + Duration::from_secs(10);
    while snapshot_index(cluster) <= before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    let installed = snapshot_index(cluster);
    kill_and_restart(cluster, leader, Duration::ZERO)?;
    Ok(format!(
        "isolated leader {leader} got {ISOLATED_WRITES} writes, majority {rest:?} \
         committed {committed}; snapshot index {before} -> {installed}; restarted {leader}"
    ))
}

/// How long the stall fault holds each answer: past the transport's request
/// timeout (the raftkv binary uses the transport's default), so the sender
/// gives up on frames that were delivered.
pub const STALL_MS: u64 = transport::TransportConfig::DEFAULT_REQUEST_TIMEOUT_MS + 1_000;

/// The leader stalls its answers to one follower's frames for longer than
/// the request timeout, for long enough that at least one frame times out
/// after it was delivered; then heal.
fn stall(cluster: &mut Cluster, rng: &mut StdRng, hold_ms: u64) -> Result<String, ChaosError> {
    let leader = cluster.wait_leader(Duration::from_secs(10))?;
    let followers = followers_of(cluster, leader);
    let follower = pick(&followers, rng)?;
    let hold_ms = hold_ms.max(STALL_MS + 500);
    cluster.fault(leader, &format!("stall {follower} {STALL_MS}\n"))?;
    std::thread::sleep(Duration::from_millis(hold_ms));
    cluster.heal_network()?;
    Ok(format!(
        "leader {leader} answers {follower}'s frames after {STALL_MS} ms, for {hold_ms} ms"
    ))
}
