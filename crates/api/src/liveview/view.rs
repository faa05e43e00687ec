//! The combined view of the cluster (`/ui/cluster.json` and the page's
//! server-sent events), built from the members' reports by [`Aggregator`]:
//! pure bookkeeping, no I/O.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::report::{MemberReport, PeerTraffic};

/// Most events the combined timeline keeps (the newest).
pub const MAX_VIEW_EVENTS: usize = 200;

/// The whole cluster as the serving member sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterView {
    /// The member serving the view.
    pub served_by: u64,
    /// The leader: the reachable member that reports itself leader in the
    /// highest term, else the leader the serving member knows of.
    pub leader_id: Option<u64>,
    /// When the view was built, in milliseconds since the Unix epoch.
    pub generated_at_ms: u64,
    /// Every member of the configuration, by id; an unreachable one keeps
    /// the state it last reported.
    pub members: Vec<MemberView>,
    /// Traffic between each pair of members, by sender then receiver.
    pub links: Vec<LinkView>,
    /// Leader changes, membership changes and snapshots, oldest first.
    pub events: Vec<EventView>,
}

/// One member in a [`ClusterView`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemberView {
    /// Its id.
    pub id: u64,
    /// Its peer URL.
    pub peer_url: String,
    /// Whether its latest report arrived.
    pub reachable: bool,
    /// Why its latest report did not arrive.
    pub error: Option<String>,
    /// When its last report arrived (ms since the Unix epoch); `None` if
    /// it never did.
    pub last_seen_ms: Option<u64>,
    /// Its role, or `"unknown"` before its first report.
    pub role: String,
    /// Its term.
    pub term: u64,
    /// Highest index in its log.
    pub last_index: u64,
    /// Highest index it knows committed.
    pub commit_index: u64,
    /// Highest index it applied.
    pub applied_index: u64,
    /// Its newest snapshot's index.
    pub snapshot_index: u64,
    /// The leader's matched index for it, if the leader reported one.
    pub matched_index: Option<u64>,
    /// How far it is behind the leader's log: the leader's last index minus
    /// its matched index (or its own last index without one).
    pub lag: Option<u64>,
    /// Client requests it answered in the latency window.
    pub requests: u64,
    /// Median latency of those requests, in milliseconds.
    pub latency_p50_ms: f64,
    /// 99th percentile, in milliseconds.
    pub latency_p99_ms: f64,
}

/// Traffic from one member to another, per second, between their last two
/// reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LinkView {
    /// The sender.
    pub from: u64,
    /// The receiver.
    pub to: u64,
    /// Messages per second the receiver acknowledged.
    pub msgs_per_s: f64,
    /// Bytes per second the receiver acknowledged.
    pub bytes_per_s: f64,
}

/// One event of the combined timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventView {
    /// When (ms since the Unix epoch), as the first member to report it saw it.
    pub at_ms: u64,
    /// The member that reported it first.
    pub member: u64,
    /// The event kind: one of [`super::report::EVENT_KINDS`], or
    /// `"member_unreachable"` / `"member_reachable"` when the serving
    /// member's poll of `subject` started failing or succeeded again.
    pub kind: String,
    /// The new leader, or the added or removed member.
    pub subject: Option<u64>,
    /// Its log index.
    pub index: u64,
    /// Its term.
    pub term: u64,
}

struct Sample {
    report: MemberReport,
    seen_ms: u64,
    at: Instant,
}

/// Reports in, views out: remembers each member's last report, derives
/// rates from consecutive reports and merges the members' timelines.
#[derive(Default)]
pub struct Aggregator {
    served_by: u64,
    last: BTreeMap<u64, Sample>,
    errors: BTreeMap<u64, String>,
    links: BTreeMap<(u64, u64), LinkView>,
    /// Events keyed so that one leader change (or membership change)
    /// reported by several members appears once.
    events: BTreeMap<(String, u64, u64, u64), EventView>,
}

impl Aggregator {
    /// An aggregator for the view served by member `served_by`.
    pub fn new(served_by: u64) -> Aggregator {
        Aggregator {
            served_by,
            ..Aggregator::default()
        }
    }

    /// Takes member `id`'s report (or why there is none), received at
    /// `at` (`now_ms` in wall time).
    pub fn observe(
        &mut self,
        id: u64,
        outcome: Result<MemberReport, String>,
        at: Instant,
        now_ms: u64,
    ) {
        let report = match outcome {
            Ok(report) if report.id == id => report,
            Ok(report) => {
                let error = format!("answered as member {}", report.id);
                return self.unreachable(id, error, now_ms);
            }
            Err(error) => return self.unreachable(id, error, now_ms),
        };
        if self.errors.remove(&id).is_some() {
            self.poller_event("member_reachable", id, report.term, now_ms);
        }
        if let Some(previous) = self.last.get(&id) {
            let seconds = at.saturating_duration_since(previous.at).as_secs_f64();
            if seconds > 0.0 {
                for peer in &report.peers {
                    let before = previous
                        .report
                        .peers
                        .iter()
                        .find(|p| p.id == peer.id)
                        .copied()
                        .unwrap_or_default();
                    let rate = |now: u64, then: u64| now.saturating_sub(then) as f64 / seconds;
                    self.links.insert(
                        (id, peer.id),
                        LinkView {
                            from: id,
                            to: peer.id,
                            msgs_per_s: rate(peer.msgs_sent, before.msgs_sent),
                            bytes_per_s: rate(peer.bytes_sent, before.bytes_sent),
                        },
                    );
                }
            }
        }
        for event in &report.events {
            let second = match event.kind.as_str() {
                "leader_changed" => 0,
                "member_added" | "member_removed" => 0,
                _ => id,
            };
            let key = (
                event.kind.clone(),
                second,
                event.term,
                event.subject.unwrap_or(event.index),
            );
            self.events.entry(key).or_insert_with(|| EventView {
                at_ms: event.at_ms,
                member: id,
                kind: event.kind.clone(),
                subject: event.subject,
                index: event.index,
                term: event.term,
            });
        }
        self.trim_events();
        self.last.insert(
            id,
            Sample {
                report,
                seen_ms: now_ms,
                at,
            },
        );
    }

    fn unreachable(&mut self, id: u64, error: String, now_ms: u64) {
        let term = self.last.get(&id).map_or(0, |sample| sample.report.term);
        if self.errors.insert(id, error).is_none() {
            self.poller_event("member_unreachable", id, term, now_ms);
        }
        self.links.retain(|(from, _), _| *from != id);
    }

    /// An event the poller saw itself: member `id` stopped or resumed
    /// answering (`term`: the last one it reported).
    fn poller_event(&mut self, kind: &str, id: u64, term: u64, now_ms: u64) {
        let event = EventView {
            at_ms: now_ms,
            member: self.served_by,
            kind: kind.to_string(),
            subject: Some(id),
            index: 0,
            term,
        };
        self.events
            .insert((kind.to_string(), id, term, now_ms), event);
        self.trim_events();
    }

    fn trim_events(&mut self) {
        while self.events.len() > MAX_VIEW_EVENTS {
            let oldest = self
                .events
                .iter()
                .min_by_key(|(_, event)| event.at_ms)
                .map(|(key, _)| key.clone());
            match oldest {
                Some(key) => self.events.remove(&key),
                None => break,
            };
        }
    }

    /// The view of `members` (id and peer URL, the configuration the
    /// serving member knows), at wall time `now_ms`.
    pub fn view(&self, members: &[(u64, String)], now_ms: u64) -> ClusterView {
        let reachable = |id: &u64| self.last.contains_key(id) && !self.errors.contains_key(id);
        let leader = self
            .last
            .iter()
            .filter(|(id, sample)| reachable(id) && sample.report.role == "leader")
            .max_by_key(|(_, sample)| sample.report.term)
            .map(|(id, sample)| (*id, &sample.report));
        let leader_id = leader.map(|(id, _)| id).or_else(|| {
            self.last
                .get(&self.served_by)
                .and_then(|sample| sample.report.leader_id)
        });
        let member_views = members
            .iter()
            .map(|(id, peer_url)| {
                let mut view = MemberView {
                    id: *id,
                    peer_url: peer_url.clone(),
                    reachable: reachable(id),
                    error: self.errors.get(id).cloned(),
                    role: "unknown".to_string(),
                    ..MemberView::default()
                };
                if let Some(sample) = self.last.get(id) {
                    let report = &sample.report;
                    view.last_seen_ms = Some(sample.seen_ms);
                    view.role = report.role.clone();
                    view.term = report.term;
                    view.last_index = report.last_index;
                    view.commit_index = report.commit_index;
                    view.applied_index = report.applied_index;
                    view.snapshot_index = report.snapshot_index;
                    view.requests = report.latency.count;
                    view.latency_p50_ms = report.latency.p50_us as f64 / 1000.0;
                    view.latency_p99_ms = report.latency.p99_us as f64 / 1000.0;
                }
                if let Some((_, leader)) = leader {
                    view.matched_index = leader
                        .progress
                        .iter()
                        .find(|progress| progress.id == *id)
                        .map(|progress| progress.matched);
                    let behind = view
                        .matched_index
                        .or(view.last_seen_ms.map(|_| view.last_index));
                    view.lag = behind.map(|index| leader.last_index.saturating_sub(index));
                }
                view
            })
            .collect();
        let mut events: Vec<EventView> = self.events.values().cloned().collect();
        events.sort_by_key(|event| (event.at_ms, event.term, event.index));
        ClusterView {
            served_by: self.served_by,
            leader_id,
            generated_at_ms: now_ms,
            members: member_views,
            links: self.links.values().copied().collect(),
            events,
        }
    }
}

/// The traffic counters of a transport's stats, as a report lists them.
pub(crate) fn traffic_of(stats: &transport::TransportStats) -> Vec<PeerTraffic> {
    stats
        .peers
        .iter()
        .map(|(id, peer)| PeerTraffic {
            id: *id,
            msgs_sent: peer.msgs_sent,
            bytes_sent: peer.bytes_sent,
            msgs_received: peer.msgs_received,
            bytes_received: peer.bytes_received,
            send_failures: peer.send_failures,
        })
        .collect()
}
