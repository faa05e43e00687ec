//! `--peers`: the same write scenarios through the neutral scripts of
//! `../shared/peers` (wrk + a read-back of acknowledged keys), for raftkv,
//! raftexample, etcd 3.4 and openraft's raft-kv-memstore, with ratios.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::scenario::{size_label, Kind, Scenario};
use super::BenchError;

/// A system the scripts can measure.
#[derive(Debug, Clone)]
struct Peer {
    /// Short name in the table.
    name: &'static str,
    /// Script file name in the peers dir.
    script: &'static str,
    /// Arguments before SECONDS CONNS VALUE_BYTES SAMPLE.
    leading_args: Vec<String>,
}

/// One script summary line, parsed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PeerLine {
    /// System measured.
    pub system: String,
    /// Connections.
    pub connections: usize,
    /// Value size.
    pub value_bytes: usize,
    /// Acknowledged writes per second (2xx answers / seconds).
    pub acked_per_s: f64,
    /// wrk's p50 in ms.
    pub latency_ms_p50: f64,
    /// wrk's p99 in ms.
    pub latency_ms_p99: f64,
    /// Non-2xx answers plus socket errors.
    pub error_count: u64,
    /// `lost_in_sample(...)` as printed, e.g. `0,0,0 of 2000`.
    pub lost: String,
    /// The raw line, quoted in the report.
    pub raw: String,
}

/// Runs every installed peer for every write scenario in `scenarios`.
pub(crate) fn run(
    scenarios: &[Scenario],
    raftkv: &Path,
    peers_dir: &Path,
    openraft: Option<&Path>,
    duration: Duration,
    sample_keys: usize,
) -> Result<Vec<PeerLine>, BenchError> {
    if !on_path("wrk") {
        return Err(BenchError::Peers(format!(
            "wrk is not installed: run {} first (as root)",
            peers_dir.join("setup").display()
        )));
    }
    let peers = installed_peers(raftkv, openraft);
    let mut lines = Vec::new();
    for scenario in scenarios.iter().filter(|s| s.kind == Kind::Write) {
        for peer in &peers {
            eprintln!(
                "bench: peers: {} {} conns {} ...",
                peer.name,
                scenario.connections,
                size_label(scenario.value_bytes)
            );
            lines.push(run_one(peer, scenario, peers_dir, duration, sample_keys)?);
        }
    }
    Ok(lines)
}

fn installed_peers(raftkv: &Path, openraft: Option<&Path>) -> Vec<Peer> {
    let mut peers = vec![Peer {
        name: "raftkv",
        script: "bench-put",
        leading_args: vec![raftkv.display().to_string()],
    }];
    let raftexample = peers_cache_dir().join("bin/raftexample");
    if raftexample.is_file() {
        peers.push(Peer {
            name: "raftexample",
            script: "bench-put",
            leading_args: vec![raftexample.display().to_string()],
        });
    } else {
        eprintln!(
            "bench: peers: no {} (run setup); skipped",
            raftexample.display()
        );
    }
    if on_path("etcd") {
        peers.push(Peer {
            name: "etcd-3.4",
            script: "bench-etcd",
            leading_args: Vec::new(),
        });
    } else {
        eprintln!("bench: peers: etcd not installed; skipped");
    }
    if let Some(dir) = openraft {
        peers.push(Peer {
            name: "openraft-memstore",
            script: "bench-openraft",
            leading_args: vec![dir.display().to_string()],
        });
    }
    peers
}

/// `$PEERS_DIR`, else `~/.cache/raftkv-peers` (where `setup` installs).
fn peers_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PEERS_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_default();
    PathBuf::from(home).join(".cache/raftkv-peers")
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

fn run_one(
    peer: &Peer,
    scenario: &Scenario,
    peers_dir: &Path,
    duration: Duration,
    sample_keys: usize,
) -> Result<PeerLine, BenchError> {
    let script = peers_dir.join(peer.script);
    let output = Command::new(&script)
        .args(&peer.leading_args)
        .arg(duration.as_secs().to_string())
        .arg(scenario.connections.to_string())
        .arg(scenario.value_bytes.to_string())
        .arg(sample_keys.to_string())
        .output()
        .map_err(|e| BenchError::io(&format!("run {}", script.display()), e))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let Some(raw) = stdout
        .lines()
        .rev()
        .find(|l| l.contains("acked_writes_per_s"))
    else {
        return Err(BenchError::Peers(format!(
            "{} for {} printed no summary (exit {}): {}",
            script.display(),
            peer.name,
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    };
    parse_line(peer.name, scenario, raw)
}

/// Parses `name: acked_writes_per_s N  p50_ms X  p99_ms Y  non2xx A
/// errors B  lost_in_sample(node1,node2,node3) a,b,c of S`.
pub(super) fn parse_line(
    system: &str,
    scenario: &Scenario,
    raw: &str,
) -> Result<PeerLine, BenchError> {
    let bad = || BenchError::Peers(format!("cannot parse script line {raw:?}"));
    let words: Vec<&str> = raw.split_whitespace().collect();
    let field = |name: &str| -> Result<f64, BenchError> {
        let position = words.iter().position(|w| *w == name).ok_or_else(bad)?;
        words
            .get(position + 1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(bad)
    };
    let lost = raw
        .split_once(") ")
        .map(|(_, rest)| rest.trim().to_owned())
        .ok_or_else(bad)?;
    Ok(PeerLine {
        system: system.to_owned(),
        connections: scenario.connections,
        value_bytes: scenario.value_bytes,
        acked_per_s: field("acked_writes_per_s")?,
        latency_ms_p50: field("p50_ms")?,
        latency_ms_p99: field("p99_ms")?,
        error_count: (field("non2xx")? + field("errors")?) as u64,
        lost,
        raw: raw.to_owned(),
    })
}

/// The peers table, with raftkv's acked rate divided by each system's in
/// the same (connections, value size) group.
pub(crate) fn table(lines: &[PeerLine]) -> String {
    let mut text = String::from(
        "| system | conns | value | acked writes/s | p50 ms | p99 ms | errors | lost in sample (n1,n2,n3) | raftkv ÷ system |\n\
         |---|--:|--:|--:|--:|--:|--:|--|--:|\n",
    );
    for line in lines {
        let raftkv = lines.iter().find(|l| {
            l.system == "raftkv"
                && l.connections == line.connections
                && l.value_bytes == line.value_bytes
        });
        let ratio = match raftkv {
            Some(r) if line.acked_per_s > 0.0 => {
                format!("{:.2}×", r.acked_per_s / line.acked_per_s)
            }
            _ => "–".to_owned(),
        };
        text.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {} | {} | {} |\n",
            line.system,
            line.connections,
            size_label(line.value_bytes),
            line.acked_per_s,
            line.latency_ms_p50,
            line.latency_ms_p99,
            line.error_count,
            line.lost,
            ratio
        ));
    }
    text
}
