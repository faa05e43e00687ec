//! `raftkv repair-wal`: the operator's explicit cut of a damaged WAL.
//!
//! A node refuses to start on a WAL with damage that is not a provable torn write (a flipped
//! bit or garbage in an fsynced record). This subcommand keeps every record before the first
//! damaged one and drops the rest, printing exactly what it drops. It asks nothing: run it
//! with `--dry-run` first to see the list.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use wal::{RepairReport, Wal};

/// Cut a damaged WAL at its first damaged record (the node must be stopped).
///
/// Keeps every record before the damage, zeroes the rest of that segment and
/// deletes later segments, printing each file, offset and byte count dropped
/// and the records it can identify there. What is dropped was fsynced and may
/// have been acknowledged: a node that lost entries or a vote can break the
/// cluster's guarantees when it rejoins. The safe alternative is to remove the
/// member and add it back with an empty data directory.
#[derive(Debug, Parser)]
#[command(name = "raftkv repair-wal")]
pub(crate) struct RepairFlags {
    /// The node's data directory (the WAL is <dir>/wal).
    #[arg(long)]
    pub data_dir: PathBuf,

    /// Print what would be dropped and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Runs the subcommand; `args` starts with the program name.
#[allow(clippy::print_stdout)] // The subcommand's output is the report.
pub(crate) fn main(args: impl Iterator<Item = String>) -> ExitCode {
    let flags = RepairFlags::parse_from(args);
    let wal_dir = flags.data_dir.join("wal");
    match Wal::repair(&wal_dir, flags.dry_run) {
        Ok(report) => {
            print!("{}", describe(&report));
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("cannot repair {}: {e}", wal_dir.display());
            ExitCode::FAILURE
        }
    }
}

/// The report as printed: one line per dropped range and per identified record.
fn describe(report: &RepairReport) -> String {
    let Some(damage) = &report.damage else {
        return "the WAL opens as it is: nothing to repair\n".to_string();
    };
    let verb = if report.applied {
        "dropped"
    } else {
        "would drop"
    };
    let mut out = format!(
        "damage at byte {} of {}: {}\n",
        damage.offset,
        damage.path.display(),
        damage.reason
    );
    for range in &damage.dropped {
        let what = if range.file_deleted {
            "whole file"
        } else {
            "cut"
        };
        out.push_str(&format!(
            "{verb} {}: {} bytes from byte {} ({what})\n",
            range.path.display(),
            range.bytes,
            range.offset
        ));
    }
    for record in &damage.records {
        let check = if record.verified {
            "intact"
        } else {
            "unverified"
        };
        out.push_str(&format!(
            "{verb} record at byte {} of {}: {} ({check})\n",
            record.offset,
            record.path.display(),
            record.kind
        ));
    }
    if !report.applied {
        out.push_str("dry run: nothing was changed\n");
    }
    out
}
