//! The simulation stays out of production: no production crate depends on
//! `kvsim` or `lincheck`, and none turns the planted bugs on.

use std::path::Path;

/// The crates the `raftkv` binary is built from.
const PRODUCTION: [&str; 7] = [
    "raftkv",
    "api",
    "kvstore",
    "raftnode",
    "transport",
    "wal",
    "etcdproto",
];

/// The text of the `[dependencies]` table of `crate_name`'s manifest.
fn dependencies(crate_name: &str) -> String {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(crate_name)
        .join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .unwrap_or_else(|e| panic!("read {}: {e}", manifest.display()));
    let mut in_dependencies = false;
    let mut out = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            in_dependencies = trimmed == "[dependencies]";
            continue;
        }
        if in_dependencies && !trimmed.starts_with('#') {
            out.push_str(trimmed);
            out.push('\n');
        }
    }
    out
}

#[test]
fn no_production_crate_depends_on_the_simulation_or_plants_bugs() {
    for name in PRODUCTION {
        let dependencies = dependencies(name);
        assert!(
            !dependencies.is_empty(),
            "{name}: no [dependencies] table found"
        );
        for forbidden in ["kvsim", "lincheck", "planted-bugs"] {
            assert!(
                !dependencies.contains(forbidden),
                "{name}'s [dependencies] mention {forbidden}:\n{dependencies}"
            );
        }
    }
}
