//! An HTML timeline of a window of a history: one lane per client,
//! operations as bars (the culprit of a violation outlined), faults as
//! shaded bands. Used by the chaos suite and the simulation for a failing
//! key.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::history::{CasResult, Op, OpKind, Outcome};

/// A fault shown as a band across every lane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Band {
    /// When it began, in the history's microseconds.
    pub start_us: u64,
    /// When it was healed.
    pub end_us: u64,
    /// Its kind, shown on the band.
    pub name: String,
    /// What it did, shown on the band and on hover.
    pub detail: String,
}

/// What a timeline shows.
#[derive(Debug, Clone, Copy)]
pub struct Timeline<'a> {
    /// The page title's first part (`raftkv chaos`, `raftkv sim seed 7`).
    pub title: &'a str,
    /// The checker that failed.
    pub checker: &'a str,
    /// The key that does not linearize.
    pub key: &'a str,
    /// The operation whose addition breaks linearizability.
    pub culprit: &'a Op,
    /// The operations shown (the culprit among them).
    pub ops: &'a [Op],
    /// Faults overlapping the window.
    pub bands: &'a [Band],
}

/// An HTML timeline of `timeline`: one lane per client, operations as
/// bars, faults as shaded bands. Self-contained (no script, no external
/// file).
pub fn timeline_html(window: &Timeline<'_>) -> String {
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
    for fault in window.bands {
        let (left, right) = (
            x(fault.start_us.max(first_us)),
            x(fault.end_us.min(last_us)),
        );
        let _ = write!(
            body,
            "<div class=fault style='left:{left:.0}px;width:{:.0}px;height:{:.0}px' title='{}'>{} {}</div>",
            (right - left).max(2.0),
            lanes.len() as f64 * lane_px + 24.0,
            escape(&fault.detail),
            fault.name,
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
                op == window.culprit,
                top,
                x(op.invoke_us),
                x(op.complete_us),
            ));
        }
    }
    format!(
        "<!doctype html><html><head><meta charset=utf-8><title>{title}: {key}</title><style>\
         body{{font:12px sans-serif}} #t{{position:relative;margin-left:80px;width:{width_px}px;height:{height:.0}px}}\
         .lane{{position:absolute;left:-80px;width:75px;text-align:right}}\
         .op{{position:absolute;height:22px;overflow:hidden;white-space:nowrap;border-radius:3px;padding:0 2px;box-sizing:border-box}}\
         .put{{background:#8fd18f}} .get{{background:#8fb8e8}} .unknown{{background:#ddd;border:1px dashed #666}}\
         .culprit{{outline:3px solid #d00}} .fault{{position:absolute;top:0;background:rgba(255,160,0,.18);border-left:2px solid #f80;font-size:11px}}\
         </style></head><body><h2>{checker}: key {key} does not linearize</h2>\
         <p>Culprit (red): {culprit}. Green: PUT ok, blue: GET, grey dashed: outcome unknown. Orange bands: faults. \
         Hover a bar for its details. Times are ms since the run started ({start:.1} .. {end:.1} ms).</p>\
         <div id=t>{body}</div></body></html>\n",
        title = escape(window.title),
        key = escape(window.key),
        checker = escape(window.checker),
        height = 40.0 + lanes.len() as f64 * lane_px,
        culprit = escape(&describe(window.culprit)),
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
pub fn describe(op: &Op) -> String {
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
