//! The benchmark's scenarios (issue 6): what each one sends, and how much.

use super::BenchError;

/// What a scenario's connections send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `PUT` of distinct keys to the leader.
    Write,
    /// `GET` of existing keys from the leader (ReadIndex).
    ReadLinearizable,
    /// `GET ?serializable` of existing keys from the leader (local read).
    ReadSerializable,
    /// Each request a linearizable read with probability `read_percent`
    /// out of 100, otherwise a write of a distinct key.
    Mixed {
        /// Share of reads, in percent.
        read_percent: u32,
    },
}

impl Kind {
    /// Whether the scenario writes keys that must be read back afterwards.
    pub(crate) fn writes(self) -> bool {
        matches!(self, Kind::Write | Kind::Mixed { .. })
    }

    /// Whether the scenario reads the pre-written keys.
    pub(crate) fn reads(self) -> bool {
        !matches!(self, Kind::Write)
    }
}

/// One row of the results table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scenario {
    /// Stable name, used by `--scenarios` and in key names.
    pub name: String,
    /// What is sent.
    pub kind: Kind,
    /// Concurrent keep-alive connections, each sending back to back.
    pub connections: usize,
    /// Size of every written value.
    pub value_bytes: usize,
}

/// Every scenario of issue 6, in the order they run.
pub(crate) fn all() -> Vec<Scenario> {
    let mut scenarios = Vec::new();
    for (value_bytes, size) in [(64, "64b"), (1024, "1k")] {
        for connections in [1, 64, 256] {
            scenarios.push(Scenario {
                name: format!("write-c{connections}-{size}"),
                kind: Kind::Write,
                connections,
                value_bytes,
            });
        }
    }
    let reads = [
        ("read-lin-c64", Kind::ReadLinearizable),
        ("read-ser-c64", Kind::ReadSerializable),
        ("mixed-c64", Kind::Mixed { read_percent: 90 }),
    ];
    for (name, kind) in reads {
        scenarios.push(Scenario {
            name: name.into(),
            kind,
            connections: 64,
            value_bytes: 64,
        });
    }
    scenarios
}

/// The scenarios whose names start with one of `filters` (all if empty).
pub(crate) fn select(filters: &[String]) -> Result<Vec<Scenario>, BenchError> {
    let chosen: Vec<Scenario> = all()
        .into_iter()
        .filter(|s| filters.is_empty() || filters.iter().any(|f| s.name.starts_with(f.as_str())))
        .collect();
    if chosen.is_empty() {
        let names: Vec<String> = all().into_iter().map(|s| s.name).collect();
        return Err(BenchError::Usage(format!(
            "--scenarios {filters:?} matches none of: {}",
            names.join(" ")
        )));
    }
    Ok(chosen)
}

/// A human label for a value size: `64 B`, `1 KiB`.
pub(crate) fn size_label(value_bytes: usize) -> String {
    if value_bytes >= 1024 && value_bytes.is_multiple_of(1024) {
        format!("{} KiB", value_bytes / 1024)
    } else {
        format!("{value_bytes} B")
    }
}
