//! What a run produced: verdicts, the summary text, the history files, and
//! on a violation the failing window as JSON and as an HTML timeline.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::history::{CasResult, Op, OpCounts, OpKind, Outcome};
use super::leases::LeaseCounts;
use super::nemesis::{FaultKind, FaultRecord};
use super::watches::WatchCounts;
use super::ChaosError;

/// A checker's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", content = "reason", rename_all = "snake_case")]
pub enum Verdict {
    /// The property holds on this run.
    Pass,
    /// The property is violated; why, in words.
    Fail(String),
    /// The checker could not decide (search budget exhausted): not a pass.
    Unknown(String),
}

impl Verdict {
    /// Only [`Verdict::Pass`] passes.
    pub fn is_pass(&self) -> bool {
        *self == Verdict::Pass
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Pass => f.write_str("pass"),
            Verdict::Fail(why) => write!(f, "FAIL: {why}"),
            Verdict::Unknown(why) => write!(f, "UNKNOWN: {why}"),
        }
    }
}

fn not_checked() -> Verdict {
    Verdict::Unknown("not checked".into())
}

/// The result of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The seed of the fault schedule and the workload.
    pub seed: u64,
    /// Operations by kind and outcome (workers only).
    pub counts: OpCounts,
    /// Faults in the order injected.
    pub faults: Vec<FaultRecord>,
    /// Checker 1: per-key linearizability of the workers' history.
    pub linearizability: Verdict,
    /// Checker 2: the final reads of every key on every node, added to the
    /// history, still linearize (every acknowledged write included).
    pub durability: Verdict,
    /// Checker 3: a leader and a successful write within the bound after
    /// the last heal, and no fault step that found the cluster wedged.
    pub liveness: Verdict,
    /// Checker 4: after every heal and at the end, every member's
    /// `HashKV` at a common revision is the same.
    #[serde(default = "not_checked")]
    pub consistency: Verdict,
    /// Checker 5: no lease kept alive expired, and every lease left alone
    /// expired with its keys (see the lease client).
    #[serde(default = "not_checked")]
    pub leases: Verdict,
    /// What the lease clients did.
    #[serde(default)]
    pub lease_counts: LeaseCounts,
    /// Checker 6: every watch stream received exactly the history's events
    /// from its first revision to its last, across reconnects, and the
    /// history's events agree with the acknowledged writes.
    #[serde(default = "not_checked")]
    pub watches: Verdict,
    /// What the watch clients received.
    #[serde(default)]
    pub watch_counts: WatchCounts,
    /// How many `HashKV` comparisons across all members were made.
    #[serde(default)]
    pub hash_checks: u64,
    /// Keys written once each (the durability check's unique keys) that
    /// were acknowledged, and read back on every node at the end.
    #[serde(default)]
    pub unique_keys_acked: u64,
    /// The longest time from a heal to the next acknowledged write, over
    /// every fault and the final heal.
    pub recovery_ms: Option<u64>,
    /// Torn WAL tails the nodes repaired on restart (from their logs): how
    /// often the crashes really exercised the repair path.
    pub wal_tail_repairs: u64,
    /// Length of the run (start of the cluster to the end of checking).
    pub elapsed_ms: u64,
    /// Where the history, logs and (on a violation) the window went.
    pub out_dir: PathBuf,
}

impl Report {
    /// Every checker passed.
    pub fn passed(&self) -> bool {
        self.linearizability.is_pass()
            && self.durability.is_pass()
            && self.liveness.is_pass()
            && self.consistency.is_pass()
            && self.leases.is_pass()
            && self.watches.is_pass()
    }

    /// The distinct fault kinds injected.
    pub fn fault_kinds(&self) -> BTreeSet<FaultKind> {
        self.faults.iter().map(|f| f.kind).collect()
    }

    /// The human summary.
    pub fn summary(&self) -> String {
        let c = &self.counts;
        let mut text = format!(
            "chaos: seed {}, {:.1} s\noperations: put ok {}, put fail {}, put unknown {}, get ok {}\n\
             cas register: read ok {}, cas swapped {}, cas refused {}, cas unknown {}\n\
             unique keys acknowledged and read back on every node: {}\nfaults ({}):\n",
            self.seed,
            self.elapsed_ms as f64 / 1000.0,
            c.put_ok,
            c.put_fail,
            c.put_unknown,
            c.get_ok,
            c.read_ok,
            c.cas_swapped,
            c.cas_refused,
            c.cas_unknown,
            self.unique_keys_acked,
            self.faults.len()
        );
        for fault in &self.faults {
            let _ = writeln!(
                text,
                "  {:>7.1} s .. {:>7.1} s  {:<16} {:<32} recovered in {}",
                fault.start_us as f64 / 1e6,
                fault.heal_us as f64 / 1e6,
                fault.kind.name(),
                fault.detail,
                fault
                    .recovery_ms
                    .map_or("(never)".to_string(), |ms| format!("{ms} ms"))
            );
        }
        let recovery = self
            .recovery_ms
            .map(|ms| format!(" (slowest recovery: a write acknowledged {ms} ms after a heal)"));
        let _ = write!(
            text,
            "WAL torn tails repaired on restart: {}\nlinearizability: {}\ndurability: {}\nliveness: {}{}\nconsistency (HashKV across members, {} comparisons): {}\nleases (kept {}, renewed {}, abandoned {}, kept to the end {}; left to expire {}, seen expired with their keys {}): {}\nwatches ({} streams, {} events delivered, {} reconnects; {} events in the replay from revision 1): {}\noutput: {}\nverdict: {}\n",
            self.wal_tail_repairs,
            self.linearizability,
            self.durability,
            self.liveness,
            recovery.unwrap_or_default(),
            self.hash_checks,
            self.consistency,
            self.lease_counts.kept_granted,
            self.lease_counts.renewals,
            self.lease_counts.chains_broken,
            self.lease_counts.kept_at_end,
            self.lease_counts.expiring_granted,
            self.lease_counts.expired_checked,
            self.leases,
            self.watch_counts.watchers,
            self.watch_counts.events_delivered,
            self.watch_counts.reconnects,
            self.watch_counts.reference_events,
            self.watches,
            self.out_dir.display(),
            if self.passed() { "PASS" } else { "FAIL" }
        );
        text
    }
}

/// Writes `value` as pretty JSON to `path`.
pub(crate) fn write_json(path: &Path, value: &impl Serialize) -> Result<(), ChaosError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| ChaosError::Cluster(format!("serializing {}: {e}", path.display())))?;
    std::fs::write(path, text).map_err(|source| ChaosError::Io {
        what: format!("writing {}", path.display()),
        source,
    })
}

/// The failing window around a violation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Window {
    /// Which checker found it.
    pub checker: String,
    /// The key that does not linearize.
    pub key: String,
    /// The operation whose addition makes the shortest failing prefix.
    pub culprit: Op,
    /// Operations on the key around the culprit (plus the writes of every
    /// value they read), by invocation time.
    pub ops: Vec<Op>,
    /// Faults overlapping the window.
    pub faults: Vec<FaultRecord>,
}

/// How far before the culprit the window reaches.
const WINDOW_CONTEXT_US: u64 = 3_000_000;

/// At most this many operations invoked before the culprit open the window
/// (the window may still hold more: those concurrent with it, and the
/// writes of the values read).
const WINDOW_OPS_BEFORE: usize = 40;

/// Cuts the window around `culprit` (an index into `key_ops`).
pub(crate) fn window(
    checker: &str,
    key_ops: &[Op],
    culprit: usize,
    faults: &[FaultRecord],
) -> Window {
    let culprit_op = key_ops[culprit].clone();
    let mut earlier: Vec<u64> = key_ops
        .iter()
        .map(|op| op.invoke_us)
        .filter(|t| *t <= culprit_op.invoke_us)
        .collect();
    earlier.sort_unstable();
    let start_us = earlier
        .iter()
        .rev()
        .nth(WINDOW_OPS_BEFORE)
        .copied()
        .unwrap_or(0)
        .max(culprit_op.invoke_us.saturating_sub(WINDOW_CONTEXT_US));
    let end_us = culprit_op.complete_us;
    let overlaps = |op: &Op| {
        op.invoke_us <= end_us && (op.complete_us >= start_us || op.outcome == Outcome::Unknown)
    };
    let mut ops: Vec<Op> = key_ops.iter().filter(|op| overlaps(op)).cloned().collect();
    let read: BTreeSet<String> = ops
        .iter()
        .filter_map(|op| match &op.kind {
            OpKind::Get { value: Some(v) } | OpKind::Read { value: Some(v), .. } => Some(v.clone()),
            OpKind::Cas {
                result: Some(CasResult::Refused { value: Some(v), .. }),
                ..
            } => Some(v.clone()),
            _ => None,
        })
        .collect();
    for op in key_ops {
        if let OpKind::Put { value } | OpKind::Cas { value, .. } = &op.kind {
            if read.contains(value) && !ops.contains(op) {
                ops.push(op.clone());
            }
        }
    }
    ops.sort_by_key(|op| op.invoke_us);
    let first_us = ops.first().map_or(start_us, |op| op.invoke_us);
    let faults = faults
        .iter()
        .filter(|f| f.start_us <= end_us && f.heal_us >= first_us)
        .cloned()
        .collect();
    Window {
        checker: checker.into(),
        key: culprit_op.key.clone(),
        culprit: culprit_op,
        ops,
        faults,
    }
}

/// An HTML timeline of `window`: one lane per client, operations as bars,
/// faults as shaded bands. Self-contained (no script, no external file).
pub fn timeline_html(window: &Window) -> String {
    let first_us = window.ops.iter().map(|op| op.invoke_us).min().unwrap_or(0);
    let last_us = window
        .ops
        .iter()
        .map(|op| op.complete_us)
        .max()
        .unwrap_or(first_us)
        .max(first_us + 1);
    // At least 4 px per millisecond, so short operations stay visible.
    let width_px = ((last_us - first_us) as f64 / 250.0).clamp(1400.0, 30_000.0);
    let x = |t: u64| (t.saturating_sub(first_us)) as f64 / (last_us - first_us) as f64 * width_px;
    let lanes: Vec<&str> = window
        .ops
        .iter()
        .map(|op| op.client.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let lane_px = 34.0;
    let mut body = String::new();
    for fault in &window.faults {
        let (left, right) = (
            x(fault.start_us.max(first_us)),
            x(fault.heal_us.min(last_us)),
        );
        let _ = write!(
            body,
            "<div class=fault style='left:{left:.0}px;width:{:.0}px;height:{:.0}px' title='{}'>{} {}</div>",
            (right - left).max(2.0),
            lanes.len() as f64 * lane_px + 24.0,
            escape(&fault.detail),
            fault.kind.name(),
            escape(&fault.detail)
        );
    }
    for (lane, client) in lanes.iter().enumerate() {
        let top = 24.0 + lane as f64 * lane_px;
        let _ = write!(
            body,
            "<div class=lane style='top:{top:.0}px'>{}</div>",
            escape(client)
        );
        for op in window.ops.iter().filter(|op| op.client == *client) {
            body.push_str(&bar(
                op,
                op == &window.culprit,
                top,
                x(op.invoke_us),
                x(op.complete_us),
            ));
        }
    }
    format!(
        "<!doctype html><html><head><meta charset=utf-8><title>raftkv chaos: {key}</title><style>\
         body{{font:12px sans-serif}} #t{{position:relative;margin-left:80px;width:{width_px}px;height:{height:.0}px}}\
         .lane{{position:absolute;left:-80px;width:75px;text-align:right}}\
         .op{{position:absolute;height:22px;overflow:hidden;white-space:nowrap;border-radius:3px;padding:0 2px;box-sizing:border-box}}\
         .put{{background:#8fd18f}} .get{{background:#8fb8e8}} .unknown{{background:#ddd;border:1px dashed #666}}\
         .culprit{{outline:3px solid #d00}} .fault{{position:absolute;top:0;background:rgba(255,160,0,.18);border-left:2px solid #f80;font-size:11px}}\
         </style></head><body><h2>{checker}: key {key} does not linearize</h2>\
         <p>Culprit (red): {culprit}. Green: PUT ok, blue: GET, grey dashed: outcome unknown. Orange bands: faults. \
         Hover a bar for its details. Times are ms since the run started ({start:.1} .. {end:.1} ms).</p>\
         <div id=t>{body}</div></body></html>\n",
        key = escape(&window.key),
        checker = escape(&window.checker),
        height = 40.0 + lanes.len() as f64 * lane_px,
        culprit = escape(&describe(&window.culprit)),
        start = first_us as f64 / 1000.0,
        end = last_us as f64 / 1000.0,
    )
}

fn bar(op: &Op, culprit: bool, top: f64, left: f64, right: f64) -> String {
    let class = match (&op.kind, op.outcome) {
        (_, Outcome::Unknown | Outcome::Fail) => "unknown",
        (OpKind::Put { .. } | OpKind::Cas { .. }, _) => "put",
        (OpKind::Get { .. } | OpKind::Read { .. }, _) => "get",
    };
    let label = match &op.kind {
        OpKind::Put { value } => format!("W {value}"),
        OpKind::Get { value } => format!("R {}", value.as_deref().unwrap_or("nil")),
        OpKind::Read {
            value,
            mod_revision,
        } => format!("R {}@{mod_revision}", value.as_deref().unwrap_or("nil")),
        OpKind::Cas {
            expect_mod_revision,
            value,
            result,
        } => match result {
            Some(CasResult::Swapped { revision }) => {
                format!("CAS @{expect_mod_revision} {value}@{revision}")
            }
            Some(CasResult::Refused {
                value: seen,
                mod_revision,
            }) => format!(
                "CAS @{expect_mod_revision} refused, saw {}@{mod_revision}",
                seen.as_deref().unwrap_or("nil")
            ),
            None => format!("CAS @{expect_mod_revision} {value}?"),
        },
    };
    format!(
        "<div class='op {class}{}' style='top:{top:.0}px;left:{left:.0}px;width:{:.0}px' title='{}'>{}</div>",
        if culprit { " culprit" } else { "" },
        (right - left).max(3.0),
        escape(&describe(op)),
        escape(&label)
    )
}

/// One line about an operation.
pub(crate) fn describe(op: &Op) -> String {
    let what = match &op.kind {
        OpKind::Put { value } => format!("PUT {} = {value}", op.key),
        OpKind::Get { value } => format!(
            "GET {} -> {}",
            op.key,
            value.as_deref().unwrap_or("(absent)")
        ),
        OpKind::Read {
            value,
            mod_revision,
        } => format!(
            "Range {} -> {} (mod_revision {mod_revision})",
            op.key,
            value.as_deref().unwrap_or("(absent)")
        ),
        OpKind::Cas {
            expect_mod_revision,
            value,
            result,
        } => {
            let answer = match result {
                Some(CasResult::Swapped { revision }) => format!("swapped at revision {revision}"),
                Some(CasResult::Refused {
                    value: seen,
                    mod_revision,
                }) => format!(
                    "refused, saw {} (mod_revision {mod_revision})",
                    seen.as_deref().unwrap_or("(absent)")
                ),
                None => "no answer".into(),
            };
            format!(
                "Txn {key} if mod_revision = {expect_mod_revision} then put {value}: {answer}",
                key = op.key
            )
        }
    };
    format!(
        "{} on node {}: {what}, {:?}, {:.3} .. {:.3} s",
        op.client,
        op.node,
        op.outcome,
        op.invoke_us as f64 / 1e6,
        op.complete_us as f64 / 1e6
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&#39;")
}

/// Counts the WAL's "repairing a torn write" warnings in the node logs.
pub(crate) fn count_tail_repairs(logs_dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(logs_dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
        .map(|log| log.matches("repairing a torn write").count() as u64)
        .sum()
}
