//! kvsim: the deterministic simulation of whole raftkv nodes. Every node
//! runs the real wal, raftnode and kvstore code (`raftnode::sim` drives
//! the cluster, its disks, network and clocks from one seed and injects
//! the faults); concurrent simulated clients send PUTs, linearizable GETs
//! and serializable GETs through each node's [`kvstore::KvStore`], the
//! production request path (propose, then wait for that entry's apply; a
//! read barrier before a linearizable read). The stores' futures are
//! polled on the run's thread with a no-op waker each step, and their
//! deadlines run on the simulation's clock, so a seed replays exactly
//! (client requests and answers are part of the hashed trace).
//!
//! Besides `raftnode::sim`'s checks after every turn, each seed ends with:
//! * every client history is linearizable, per key, with unknown outcomes
//!   for PUTs that timed out or whose node went away (`lincheck`, the
//!   chaos suite's checker);
//! * no acknowledged write is lost: a final local read of every key on
//!   every member, added to the history, still linearizes;
//! * every member's keyspace is identical (HashKV, revision and compacted
//!   revision);
//! * a serializable read returned absence or a value written before it.
//!
//! Resent proposals (an earlier command proposed again through another
//! node) test that the store applies a command once.
//!
//! A failure can be written as the JSON trace and, when a key did not
//! linearize, the chaos suite's HTML timeline of that key
//! ([`timeline_html`]).

mod workload;

use lincheck::timeline::Band;

pub use raftnode::sim::{
    trace_json, Faults, SimError, SimOptions, SimOutcome, TraceEvent, FAULT_KINDS, FAULT_MIXES,
    TRACE_KINDS,
};
pub use raftnode::PlantedBug;
pub use workload::{ClientCounts, ClientOptions, KvWorkload, Violation, STEP_MS};

/// What a run does: the cluster and faults, and the clients.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KvSimOptions {
    /// The cluster, the faults and the planted bug (`raftnode::sim`).
    pub sim: SimOptions,
    /// The clients.
    pub clients: ClientOptions,
}

/// What a run observed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KvSimOutcome {
    /// The cluster's side (trace hash, faults, simulated time).
    pub sim: SimOutcome,
    /// The clients' side.
    pub clients: ClientCounts,
}

/// A run's result, with what a replay needs.
pub struct KvSimRun {
    /// The outcome, or the first broken invariant.
    pub result: Result<KvSimOutcome, SimError>,
    /// Every event, if the run recorded them.
    pub events: Vec<TraceEvent>,
    /// The key that did not linearize, if that is why the run failed.
    pub violation: Option<Violation>,
}

/// Runs one seed (see the crate docs).
pub fn run(seed: u64, options: &KvSimOptions) -> Result<KvSimOutcome, SimError> {
    run_recording(seed, options, false).result
}

/// Runs one seed; `record` keeps every event of the trace (slower; for a
/// replay of a failed seed). The same seed gives the same events.
pub fn run_recording(seed: u64, options: &KvSimOptions, record: bool) -> KvSimRun {
    let mut workload = KvWorkload::new(seed, options.clients);
    let (result, events) = raftnode::sim::run_with(seed, &options.sim, &mut workload, record);
    let result = result.map(|mut sim| {
        sim.proposals_ok = workload.proposals_accepted();
        KvSimOutcome {
            sim,
            clients: workload.counts(),
        }
    });
    let violation = match &result {
        Err(_) => workload.violation().cloned(),
        Ok(_) => None,
    };
    KvSimRun {
        result,
        events,
        violation,
    }
}

/// The chaos suite's HTML timeline of a key that did not linearize, with
/// the faults of the recorded `events` that overlap it as bands (a node
/// down from its crash to its next start, a partition until it healed, a
/// slow disk, a membership change until the node was added).
pub fn timeline_html(seed: u64, violation: &Violation, events: &[TraceEvent]) -> String {
    let title = format!("raftkv sim seed {seed}");
    let first_us = violation
        .ops
        .iter()
        .map(|op| op.invoke_us)
        .min()
        .unwrap_or(0);
    let last_us = violation
        .ops
        .iter()
        .map(|op| op.complete_us)
        .max()
        .unwrap_or(0);
    let bands: Vec<Band> = fault_bands(events)
        .into_iter()
        .filter(|band| band.start_us <= last_us && band.end_us >= first_us)
        .collect();
    lincheck::timeline::timeline_html(&lincheck::timeline::Timeline {
        title: &title,
        checker: violation.checker,
        key: &violation.key,
        culprit: &violation.culprit,
        ops: &violation.ops,
        bands: &bands,
    })
}

/// The faults of a recorded trace as timeline bands, in the clients'
/// microseconds (`STEP_MS` per step).
fn fault_bands(events: &[TraceEvent]) -> Vec<Band> {
    let us = |step: u64| step * STEP_MS * 1000;
    // The step of the first event of `kind` for `node` after position `at`.
    let next = |at: usize, kind: &str, node: u64| {
        events[at + 1..]
            .iter()
            .find(|e| e.kind == kind && e.fields.first() == Some(&node))
            .map(|e| e.step)
    };
    let end_step = events.last().map_or(0, |e| e.step);
    let mut bands = Vec::new();
    for (at, event) in events.iter().enumerate() {
        let field = |i: usize| event.fields.get(i).copied().unwrap_or(0);
        let (name, end, detail) = match event.kind {
            "crash" => (
                "crash",
                next(at, "open", field(0)).unwrap_or(end_step),
                format!("node {} down", field(0)),
            ),
            "partition" => {
                let direction = match (field(1), field(2)) {
                    (1, 1) => "both ways",
                    (1, _) => "outbound",
                    _ => "inbound",
                };
                (
                    "partition",
                    next(at, "heal", field(0)).unwrap_or(field(3)),
                    format!("node {} cut off {direction}", field(0)),
                )
            }
            "slow_disk" => (
                "slow disk",
                field(1),
                format!("node {} stuck in fsync", field(0)),
            ),
            "membership_change" => (
                "membership",
                next(at, "added", field(1)).unwrap_or(end_step),
                format!("remove {}, then add {}", field(0), field(1)),
            ),
            _ => continue,
        };
        bands.push(Band {
            start_us: us(event.step),
            end_us: us(end.max(event.step)),
            name: name.to_string(),
            detail,
        });
    }
    bands
}
