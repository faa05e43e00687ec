//! The member report: what each member answers on its *peer* port for the
//! live view, and the bounded, validating parser of a peer's report
//! (untrusted bytes: a bad report is an error, never a panic).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use raftnode::{EventKind, Status};
use serde::{Deserialize, Serialize};

/// Largest report accepted from a peer (bytes); a member's own report of
/// [`raftnode::MAX_EVENTS`] events and [`MAX_REPORTED_PEERS`] peers is a
/// few kilobytes.
pub const MAX_REPORT_BYTES: usize = 64 * 1024;

/// Most peers (traffic counters, progress entries) a report may list.
pub const MAX_REPORTED_PEERS: usize = 64;

/// Longest role or event kind text accepted.
const MAX_NAME_BYTES: usize = 32;

/// One member's state as it reports it (`GET /raftkv/v1/liveview/member`
/// on its peer port).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberReport {
    /// The reporting member's id.
    pub id: u64,
    /// The leader it knows of.
    pub leader_id: Option<u64>,
    /// `"leader"`, `"follower"`, `"candidate"` or `"pre_candidate"`.
    pub role: String,
    /// Its current term.
    pub term: u64,
    /// Highest index in its log.
    pub last_index: u64,
    /// Highest index it knows committed.
    pub commit_index: u64,
    /// Highest index it applied.
    pub applied_index: u64,
    /// Index of its newest snapshot (0 if none).
    pub snapshot_index: u64,
    /// On a leader: each member's matched index.
    pub progress: Vec<ReportedProgress>,
    /// Its transport's cumulative counters, per peer.
    pub peers: Vec<PeerTraffic>,
    /// Latency of its recent client requests.
    pub latency: LatencySummary,
    /// Its recent events, oldest first.
    pub events: Vec<ReportedEvent>,
}

/// The leader's view of one member's replication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportedProgress {
    /// The member.
    pub id: u64,
    /// Highest index known replicated on it.
    pub matched: u64,
}

/// Cumulative transport counters towards and from one peer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerTraffic {
    /// The peer.
    pub id: u64,
    /// Messages the peer acknowledged.
    pub msgs_sent: u64,
    /// Bytes the peer acknowledged.
    pub bytes_sent: u64,
    /// Messages received from the peer.
    pub msgs_received: u64,
    /// Bytes received from the peer.
    pub bytes_received: u64,
    /// Failed sends to the peer.
    pub send_failures: u64,
}

/// Percentiles of the recent client requests' latencies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Requests in the window.
    pub count: u64,
    /// Median, in microseconds (0 without requests).
    pub p50_us: u64,
    /// 99th percentile, in microseconds (0 without requests).
    pub p99_us: u64,
    /// The window the percentiles cover, in milliseconds.
    pub window_ms: u64,
}

/// One event of a member's timeline, in wall time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportedEvent {
    /// `"leader_changed"`, `"member_added"`, `"member_removed"`,
    /// `"snapshot_taken"` or `"snapshot_installed"`.
    pub kind: String,
    /// The new leader, or the added or removed member.
    pub subject: Option<u64>,
    /// The log index it concerns.
    pub index: u64,
    /// Its term.
    pub term: u64,
    /// When, in milliseconds since the Unix epoch (the reporter's clock).
    pub at_ms: u64,
}

/// The event kinds a report may name.
pub const EVENT_KINDS: [&str; 5] = [
    "leader_changed",
    "member_added",
    "member_removed",
    "snapshot_taken",
    "snapshot_installed",
];

/// The roles a report may name.
pub const ROLES: [&str; 4] = ["leader", "follower", "candidate", "pre_candidate"];

/// Why a peer's report was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    /// Larger than [`MAX_REPORT_BYTES`].
    #[error("member report over {MAX_REPORT_BYTES} bytes")]
    TooLarge,
    /// Not a report's JSON.
    #[error("member report does not parse: {0}")]
    Malformed(String),
    /// Parsed, but outside the bounds a member's report keeps.
    #[error("member report out of bounds: {0}")]
    Invalid(String),
}

/// Parses and checks a peer's report.
pub fn parse_report(bytes: &[u8]) -> Result<MemberReport, ReportError> {
    if bytes.len() > MAX_REPORT_BYTES {
        return Err(ReportError::TooLarge);
    }
    let report: MemberReport =
        serde_json::from_slice(bytes).map_err(|e| ReportError::Malformed(e.to_string()))?;
    let invalid = |what: String| Err(ReportError::Invalid(what));
    if !ROLES.contains(&report.role.as_str()) {
        return invalid(format!("unknown role {:?}", truncated(&report.role)));
    }
    if report.events.len() > raftnode::MAX_EVENTS {
        return invalid(format!("{} events", report.events.len()));
    }
    if report.peers.len() > MAX_REPORTED_PEERS || report.progress.len() > MAX_REPORTED_PEERS {
        return invalid("too many peers".to_string());
    }
    if let Some(event) = report
        .events
        .iter()
        .find(|event| !EVENT_KINDS.contains(&event.kind.as_str()))
    {
        return invalid(format!("unknown event kind {:?}", truncated(&event.kind)));
    }
    Ok(report)
}

fn truncated(text: &str) -> String {
    text.chars().take(MAX_NAME_BYTES).collect()
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn wall_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

/// This member's report from its status, transport counters and latency.
pub(crate) fn build_report(
    status: Status,
    peers: Vec<PeerTraffic>,
    latency: LatencySummary,
) -> MemberReport {
    let (now, now_ms) = (Instant::now(), wall_now_ms());
    let events = status
        .events
        .iter()
        .map(|event| {
            let (kind, subject) = match event.kind {
                EventKind::LeaderChanged { leader } => ("leader_changed", Some(leader)),
                EventKind::MemberAdded { id } => ("member_added", Some(id)),
                EventKind::MemberRemoved { id } => ("member_removed", Some(id)),
                EventKind::SnapshotTaken => ("snapshot_taken", None),
                EventKind::SnapshotInstalled => ("snapshot_installed", None),
            };
            let age_ms = now.saturating_duration_since(event.at).as_millis() as u64;
            ReportedEvent {
                kind: kind.to_string(),
                subject,
                index: event.index,
                term: event.term,
                at_ms: now_ms.saturating_sub(age_ms),
            }
        })
        .collect();
    MemberReport {
        id: status.id,
        leader_id: status.leader_id,
        role: crate::status::role_name(status.role).to_string(),
        term: status.term,
        last_index: status.last_index,
        commit_index: status.commit_index,
        applied_index: status.applied_index,
        snapshot_index: status.snapshot_index,
        progress: status
            .progress
            .iter()
            .take(MAX_REPORTED_PEERS)
            .map(|progress| ReportedProgress {
                id: progress.id,
                matched: progress.matched,
            })
            .collect(),
        peers: peers.into_iter().take(MAX_REPORTED_PEERS).collect(),
        latency,
        events,
    }
}
