//! The watch clients: streams over the whole keyspace through random
//! members while the nemesis runs, resumed from their last revision plus
//! one on another member whenever a stream breaks, and the checker of what
//! they received.
//!
//! After the run, one more stream replays the whole history from revision
//! 1 (the *reference*). The checker ([`check_watches`]) then holds:
//! * the reference against itself: revisions never go back, every event's
//!   `prev_kv` is the key's previous version in the reference, a create has
//!   version 1;
//! * the reference against the clients' history: every acknowledged PUT is
//!   an event with its value, every swap acknowledged at revision R is the
//!   event of R, and no event carries a value that no PUT could have written
//!   (one refused, or never sent);
//! * every client's stream against the reference: from its first revision
//!   to its last it received exactly the reference's events, in order (no
//!   gap, no duplicate, across every reconnect: *resumable*), with the same
//!   `prev_kv`, and never a revision split over two responses (*atomic*).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use etcdproto::etcdserverpb as pb;
use etcdproto::mvccpb;
use pb::watch_client::WatchClient;

use super::cluster::Targets;
use super::history::{CasResult, Op, OpKind, Outcome};
use super::report::Verdict;
use super::v3::{endpoint, GrpcTls, V3};
use super::ChaosError;

/// How long a watch client waits, after the clients stopped, to receive the
/// revision the members had then.
const CATCH_UP: Duration = Duration::from_secs(60);
/// How long one stream may stay silent before the client asks for progress.
const QUIET: Duration = Duration::from_millis(500);

/// One received event: the revision is the key's `mod_revision` (a delete's
/// too).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The revision of the write txn.
    pub revision: i64,
    /// Whether it is a delete.
    pub delete: bool,
    /// The key.
    pub key: Vec<u8>,
    /// The value (empty for a delete).
    pub value: Vec<u8>,
    /// `create_revision`, `version`, `lease` of the new version.
    pub create_revision: i64,
    /// The key's version after the change (0 for a delete).
    pub version: i64,
    /// The lease attached.
    pub lease: i64,
    /// The previous version: value and `mod_revision`, if any.
    pub prev: Option<(Vec<u8>, i64)>,
}

impl Event {
    fn from_pb(event: &mvccpb::Event) -> Event {
        let kv = event.kv.clone().unwrap_or_default();
        Event {
            revision: kv.mod_revision,
            delete: event.r#type == mvccpb::event::EventType::Delete as i32,
            key: kv.key,
            value: kv.value,
            create_revision: kv.create_revision,
            version: kv.version,
            lease: kv.lease,
            prev: event
                .prev_kv
                .as_ref()
                .map(|p| (p.value.clone(), p.mod_revision)),
        }
    }

    fn describe(&self) -> String {
        format!(
            "{} {} at {}{}",
            if self.delete { "DELETE" } else { "PUT" },
            String::from_utf8_lossy(&self.key),
            self.revision,
            if self.delete {
                String::new()
            } else {
                format!(" = {}", String::from_utf8_lossy(&self.value))
            }
        )
    }
}

/// What one watch client received.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WatchLog {
    /// The client's name (`w0`, …).
    pub name: String,
    /// The revision it asked to start from.
    pub first_revision: i64,
    /// Every response's events, in the order received.
    pub responses: Vec<Vec<Event>>,
    /// Streams opened (1 + reconnects).
    pub streams: u64,
    /// The revision the members had when the clients stopped, which the
    /// stream had to reach.
    pub target_revision: i64,
    /// Why the client did not reach its target, if it did not.
    pub stuck: Option<String>,
    /// Compaction cancels: (the revision wanted, the compact revision).
    pub compacted: Vec<(i64, i64)>,
}

impl WatchLog {
    /// The next revision this log needs.
    fn next_revision(&self) -> i64 {
        self.responses
            .iter()
            .rev()
            .find_map(|events| events.last())
            .map_or(self.first_revision, |e| e.revision + 1)
    }

    fn events(&self) -> impl Iterator<Item = &Event> {
        self.responses.iter().flatten()
    }
}

/// What the watch checker counted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchCounts {
    /// Watch clients that ran.
    pub watchers: u64,
    /// Events the clients received (the reference's not included).
    pub events_delivered: u64,
    /// Streams opened again after one broke (a member died, was cut off or
    /// lost its leader).
    pub reconnects: u64,
    /// Events in the reference replay.
    pub reference_events: u64,
}

/// A watch client on its own thread.
pub(crate) struct WatchRunner {
    name: String,
    targets: Targets,
    stop: Arc<AtomicBool>,
    rng: StdRng,
    timeout: Duration,
    tls: Option<GrpcTls>,
}

impl WatchRunner {
    /// Client `name` on `targets` until `stop`, then until it received the
    /// members' revision of that moment.
    pub fn new(
        name: String,
        targets: Targets,
        stop: Arc<AtomicBool>,
        seed: u64,
        timeout: Duration,
        tls: Option<GrpcTls>,
    ) -> WatchRunner {
        WatchRunner {
            name,
            targets,
            stop,
            rng: StdRng::seed_from_u64(seed ^ 0x3a7c4),
            timeout,
            tls,
        }
    }

    fn pick(&mut self) -> Option<(u64, u16)> {
        let targets = self.targets.read().unwrap_or_else(|e| e.into_inner());
        targets.choose(&mut self.rng).copied()
    }

    /// The highest revision any member answers now.
    fn members_revision(&mut self, v3: &mut V3) -> Option<i64> {
        let targets = self
            .targets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        targets
            .iter()
            .filter_map(|(_, port)| v3.status(*port).ok())
            .filter_map(|s| s.header.map(|h| h.revision))
            .max()
    }

    /// Watches from the members' current revision plus one.
    pub fn run(mut self) -> Result<WatchLog, ChaosError> {
        let mut v3 = V3::new(self.timeout, self.tls.clone())?;
        let first = loop {
            if let Some(revision) = self.members_revision(&mut v3) {
                break revision + 1;
            }
            if self.stop.load(Ordering::SeqCst) {
                break 1;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut log = WatchLog {
            name: self.name.clone(),
            first_revision: first,
            ..WatchLog::default()
        };
        let mut target: Option<(i64, Instant)> = None;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| ChaosError::Io {
                what: "starting a tokio runtime for a watch client".into(),
                source,
            })?;
        loop {
            if target.is_none() && self.stop.load(Ordering::SeqCst) {
                if let Some(revision) = self.members_revision(&mut v3) {
                    log.target_revision = revision;
                    target = Some((revision, Instant::now() + CATCH_UP));
                }
            }
            if let Some((revision, give_up)) = target {
                if log.next_revision() > revision {
                    return Ok(log);
                }
                if Instant::now() > give_up {
                    log.stuck = Some(format!(
                        "received up to revision {} of {revision} within {} s of the clients' stop",
                        log.next_revision() - 1,
                        CATCH_UP.as_secs()
                    ));
                    return Ok(log);
                }
            }
            let Some((_, port)) = self.pick() else {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            };
            log.streams += 1;
            let stop = self.stop.clone();
            let until = target.map(|(revision, _)| revision);
            runtime.block_on(stream(port, self.tls.as_ref(), &mut log, &stop, until));
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// One stream from `log.next_revision()` on the member at `port`, until it
/// breaks, is cancelled, reaches `until`, or `stop` is newly set.
async fn stream(
    port: u16,
    tls: Option<&GrpcTls>,
    log: &mut WatchLog,
    stop: &AtomicBool,
    until: Option<i64>,
) {
    let Ok(endpoint) = endpoint(port, tls) else {
        return;
    };
    let Ok(channel) = endpoint
        .connect_timeout(Duration::from_millis(500))
        .connect()
        .await
    else {
        return;
    };
    let (requests, receiver) = tokio::sync::mpsc::channel(4);
    let create = pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                // The whole keyspace.
                key: vec![0],
                range_end: vec![0],
                start_revision: log.next_revision(),
                prev_kv: true,
                ..Default::default()
            },
        )),
    };
    if requests.send(create).await.is_err() {
        return;
    }
    let mut request = tonic::Request::new(
        tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(receiver),
    );
    // A member without a leader must cancel the stream (then this client
    // resumes elsewhere) rather than leave it silent.
    request.metadata_mut().insert(
        "hasleader",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    let mut client = WatchClient::new(channel);
    let opened = tokio::time::timeout(Duration::from_secs(2), client.watch(request)).await;
    let Ok(Ok(response)) = opened else { return };
    let mut responses = response.into_inner();
    let was_stopped = stop.load(Ordering::SeqCst);
    loop {
        if until.is_some_and(|revision| log.next_revision() > revision) {
            return;
        }
        if !was_stopped && stop.load(Ordering::SeqCst) {
            // Pick up the target revision in the caller.
            return;
        }
        let message = match tokio::time::timeout(QUIET, responses.message()).await {
            Ok(message) => message,
            Err(_) => {
                // Silent: ask for progress (an idle stream is not an error).
                let progress = pb::WatchRequest {
                    request_union: Some(pb::watch_request::RequestUnion::ProgressRequest(
                        pb::WatchProgressRequest {},
                    )),
                };
                if requests.send(progress).await.is_err() {
                    return;
                }
                continue;
            }
        };
        let Ok(Some(response)) = message else { return };
        if response.canceled {
            if response.compact_revision > 0 {
                log.compacted
                    .push((log.next_revision(), response.compact_revision));
            }
            return;
        }
        if !response.events.is_empty() {
            log.responses
                .push(response.events.iter().map(Event::from_pb).collect());
        }
    }
}

/// Replays the whole history from revision 1 up to `until` on one member
/// after another until it has it all: the reference of the checker.
pub(crate) fn reference(
    targets: Targets,
    until: i64,
    timeout: Duration,
    tls: Option<GrpcTls>,
) -> Result<WatchLog, ChaosError> {
    // Only its member picking is used: the stop flag is set from the start.
    let mut runner = WatchRunner::new(
        "reference".into(),
        targets,
        Arc::new(AtomicBool::new(true)),
        0,
        timeout,
        tls,
    );
    let mut log = WatchLog {
        name: "reference".into(),
        first_revision: 1,
        target_revision: until,
        ..WatchLog::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| ChaosError::Io {
            what: "starting a tokio runtime for the reference watch".into(),
            source,
        })?;
    let give_up = Instant::now() + CATCH_UP;
    while log.next_revision() <= until {
        if Instant::now() > give_up {
            log.stuck = Some(format!(
                "the reference replay reached only revision {} of {until}",
                log.next_revision() - 1
            ));
            break;
        }
        let Some((_, port)) = runner.pick() else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        log.streams += 1;
        let stop = AtomicBool::new(true);
        runtime.block_on(stream(
            port,
            runner.tls.as_ref(),
            &mut log,
            &stop,
            Some(until),
        ));
    }
    Ok(log)
}

/// Checks the watch clients' logs against the reference and the reference
/// against the clients' history `ops` (see the module docs). Answers the
/// verdict and the counts.
pub fn check_watches(
    reference: &WatchLog,
    logs: &[WatchLog],
    ops: &[Op],
) -> (Verdict, WatchCounts) {
    let counts = WatchCounts {
        watchers: logs.len() as u64,
        events_delivered: logs.iter().map(|l| l.events().count() as u64).sum(),
        reconnects: logs.iter().map(|l| l.streams.saturating_sub(1)).sum(),
        reference_events: reference.events().count() as u64,
    };
    let mut problems = Vec::new();
    if let Some(why) = &reference.stuck {
        problems.push(why.clone());
    }
    let all: Vec<&Event> = reference
        .events()
        .filter(|e| e.revision <= reference.target_revision)
        .collect();
    problems.extend(check_reference(&all));
    problems.extend(check_against_history(&all, ops));
    for log in logs {
        if let Some(why) = &log.stuck {
            problems.push(format!("{}: {why}", log.name));
        }
        problems.extend(check_log(&all, log).map(|why| format!("{}: {why}", log.name)));
    }
    if counts.events_delivered == 0 && !logs.is_empty() {
        problems.push("the watch clients received no event".into());
    }
    let verdict = if problems.is_empty() {
        Verdict::Pass
    } else {
        let total = problems.len();
        problems.truncate(5);
        Verdict::Fail(format!("{total} problem(s): {}", problems.join("; ")))
    };
    (verdict, counts)
}

/// The reference alone: ordered, and each `prev_kv` the key's previous
/// version.
fn check_reference(all: &[&Event]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut last: HashMap<&[u8], &Event> = HashMap::new();
    let mut revision = 0;
    for event in all {
        if event.revision < revision {
            problems.push(format!(
                "the reference goes back from revision {revision} to {}",
                event.describe()
            ));
        }
        revision = event.revision;
        let before = last.get(event.key.as_slice()).filter(|e| !e.delete);
        let expected = before.map(|e| (e.value.clone(), e.revision));
        if event.prev != expected {
            problems.push(format!(
                "{}: prev_kv {:?} but the key's previous version is {:?}",
                event.describe(),
                event.prev.as_ref().map(|p| p.1),
                expected.as_ref().map(|p| p.1)
            ));
        }
        if !event.delete && before.is_none() && event.version != 1 {
            problems.push(format!(
                "{}: a create with version {}",
                event.describe(),
                event.version
            ));
        }
        last.insert(event.key.as_slice(), event);
        if problems.len() > 20 {
            break;
        }
    }
    problems
}

/// The reference against the clients' history: acknowledged writes are
/// there, refused ones are not.
fn check_against_history(all: &[&Event], ops: &[Op]) -> Vec<String> {
    let mut problems = Vec::new();
    // (key, value) -> revision, for every put event.
    let mut written: HashMap<(&[u8], &[u8]), i64> = HashMap::new();
    for event in all.iter().filter(|e| !e.delete) {
        written.insert(
            (event.key.as_slice(), event.value.as_slice()),
            event.revision,
        );
    }
    let mut sent: HashMap<(&[u8], &[u8]), Outcome> = HashMap::new();
    for op in ops {
        let value = match &op.kind {
            OpKind::Put { value } => value,
            OpKind::Cas { value, .. } => value,
            _ => continue,
        };
        sent.insert((op.key.as_bytes(), value.as_bytes()), op.outcome);
        let at = written.get(&(op.key.as_bytes(), value.as_bytes()));
        match (&op.kind, op.outcome, at) {
            (OpKind::Put { .. }, Outcome::Ok, None) => problems.push(format!(
                "the acknowledged PUT {} = {value} is in no event",
                op.key
            )),
            (
                OpKind::Cas {
                    result: Some(CasResult::Swapped { revision }),
                    ..
                },
                _,
                found,
            ) if found != Some(revision) => problems.push(format!(
                "the swap of {} to {value} acknowledged at revision {revision} is an event at {found:?}",
                op.key
            )),
            (_, Outcome::Fail, Some(revision)) => problems.push(format!(
                "the refused PUT {} = {value} is an event at revision {revision}",
                op.key
            )),
            _ => {}
        }
    }
    // Values the workload writes are unique per client; an event of a
    // workload key with a value nobody sent was invented.
    for event in all.iter().filter(|e| !e.delete) {
        let key = String::from_utf8_lossy(&event.key);
        let workload = key.starts_with("/k") || key.starts_with("/u-") || key == "/cas";
        if workload && !sent.contains_key(&(event.key.as_slice(), event.value.as_slice())) {
            problems.push(format!("{} was written by no client", event.describe()));
        }
    }
    problems
}

/// One client's log against the reference: the same events from its first
/// revision to its last, and whole revisions per response.
fn check_log(all: &[&Event], log: &WatchLog) -> Option<String> {
    let received: Vec<&Event> = log.events().collect();
    let last = received.last().map(|e| e.revision)?;
    let expected: Vec<&Event> = all
        .iter()
        .copied()
        .filter(|e| e.revision >= log.first_revision && e.revision <= last)
        .collect();
    for (i, (got, want)) in received.iter().zip(&expected).enumerate() {
        if got != want {
            let what = if got.revision < want.revision {
                "a duplicate or an event from the past"
            } else if got.revision > want.revision {
                "a gap"
            } else {
                "a different event"
            };
            return Some(format!(
                "event {i} of the stream is {} where the history has {}: {what}",
                got.describe(),
                want.describe()
            ));
        }
    }
    if received.len() != expected.len() {
        return Some(format!(
            "received {} events from revision {} to {last}, the history has {}",
            received.len(),
            log.first_revision,
            expected.len()
        ));
    }
    // A revision is never split over two responses.
    let mut previous_last = 0;
    for events in &log.responses {
        if let (Some(first), Some(end)) = (events.first(), events.last()) {
            if first.revision == previous_last {
                return Some(format!(
                    "revision {} split over two responses",
                    first.revision
                ));
            }
            previous_last = end.revision;
        }
    }
    None
}
