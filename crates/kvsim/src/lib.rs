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

/// The chaos suite's HTML timeline of a key that did not linearize.
pub fn timeline_html(seed: u64, violation: &Violation) -> String {
    let title = format!("raftkv sim seed {seed}");
    lincheck::timeline::timeline_html(&lincheck::timeline::Timeline {
        title: &title,
        checker: violation.checker,
        key: &violation.key,
        culprit: &violation.culprit,
        ops: &violation.ops,
        bands: &[],
    })
}
