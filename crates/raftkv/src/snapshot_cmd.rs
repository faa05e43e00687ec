//! `raftkv snapshot status|restore`: backups taken with `Maintenance.Snapshot`
//! (`etcdctl snapshot save`), inspected and turned into a new cluster.
//!
//! A backup is raftkv's snapshot format (see `kvstore::backup`), not etcd's
//! bbolt file: `etcdctl snapshot status` and `etcdctl snapshot restore`
//! cannot read it, these subcommands can. Restore works like etcdctl's: run it
//! once per member of the *new* cluster, with the same file and the same
//! `--cluster`, then start each member with the flags it prints.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use kvstore::BackupSummary;
use raftnode::NodeConfig;

use crate::flags;

/// Inspect a backup file, or build a new member's data directory from one.
#[derive(Debug, Parser)]
#[command(name = "raftkv snapshot")]
pub(crate) struct SnapshotFlags {
    #[command(subcommand)]
    command: SnapshotCommand,
}

#[derive(Debug, Subcommand)]
enum SnapshotCommand {
    /// Check a backup (checksum, format) and print its hash, revision, keys and size.
    Status {
        /// The backup file (from `etcdctl snapshot save` against raftkv).
        file: PathBuf,
        /// Output format.
        #[arg(long, short = 'w', value_enum, default_value_t = OutputFormat::Simple)]
        write_out: OutputFormat,
    },
    /// Build a member's data directory of a new cluster from a backup.
    Restore(RestoreFlags),
}

/// How `status` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OutputFormat {
    /// One line: hash, revision, total keys, total size (as etcdctl's simple output).
    Simple,
    /// A table with a header row.
    Table,
    /// One JSON object.
    Json,
}

/// `raftkv snapshot restore`: one member of the new cluster.
#[derive(Debug, Parser)]
struct RestoreFlags {
    /// The backup file.
    file: PathBuf,

    /// The new member's id: its 1-based position in --cluster.
    #[arg(long)]
    id: u64,

    /// Comma-separated peer URLs of the *new* cluster, in id order (the same
    /// value for every member, and later for `raftkv --cluster`).
    #[arg(long)]
    cluster: String,

    /// The new cluster's token (its cluster id); use a new one, so members of
    /// the old and the new cluster can never exchange messages.
    #[arg(long, default_value = "raftkv")]
    cluster_token: String,

    /// The member's data directory; it must not exist yet (or be empty).
    /// Default: raftkv-<id> in the working directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// Why a snapshot subcommand failed.
#[derive(Debug, thiserror::Error)]
enum SnapshotCmdError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Invalid {
        path: PathBuf,
        source: kvstore::InvalidBackup,
    },
    #[error("{0}")]
    Flags(String),
    #[error("{path} already exists and is not empty; restore only into a new data directory")]
    DataDirExists { path: PathBuf },
    #[error("cannot prepare {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot build the data directory: {0}")]
    Node(#[from] raftnode::NodeError),
}

/// Runs the subcommand; `args` starts with the program name.
pub(crate) fn main(args: impl Iterator<Item = String>) -> ExitCode {
    let flags = SnapshotFlags::parse_from(args);
    let result = match flags.command {
        SnapshotCommand::Status { file, write_out } => status(&file, write_out),
        SnapshotCommand::Restore(restore_flags) => restore(&restore_flags),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Reads and checks a backup file.
fn read_backup(path: &Path) -> Result<(Vec<u8>, BackupSummary), SnapshotCmdError> {
    let bytes = std::fs::read(path).map_err(|source| SnapshotCmdError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let (_keyspace, summary) =
        kvstore::inspect_backup(&bytes).map_err(|source| SnapshotCmdError::Invalid {
            path: path.to_path_buf(),
            source,
        })?;
    Ok((bytes, summary))
}

#[allow(clippy::print_stdout)] // The subcommand's output is the report.
fn status(path: &Path, format: OutputFormat) -> Result<(), SnapshotCmdError> {
    let (_bytes, summary) = read_backup(path)?;
    print!("{}", describe(&summary, format));
    Ok(())
}

/// The summary as `status` prints it.
fn describe(summary: &BackupSummary, format: OutputFormat) -> String {
    let size = human_bytes(summary.total_bytes);
    match format {
        OutputFormat::Simple => format!(
            "{:x}, {}, {}, {}\n",
            summary.hash, summary.revision, summary.keys, size
        ),
        OutputFormat::Table => {
            let header = [
                "HASH",
                "REVISION",
                "COMPACTED",
                "TOTAL KEYS",
                "REVISIONS",
                "LEASES",
                "TOTAL SIZE",
            ];
            let row = [
                format!("{:x}", summary.hash),
                summary.revision.to_string(),
                summary.compact_revision.to_string(),
                summary.keys.to_string(),
                summary.retained_revisions.to_string(),
                summary.leases.to_string(),
                size,
            ];
            let widths: Vec<usize> = header
                .iter()
                .zip(&row)
                .map(|(h, r)| h.len().max(r.len()))
                .collect();
            let rule: String = widths
                .iter()
                .map(|w| format!("+{}", "-".repeat(w + 2)))
                .collect::<String>()
                + "+\n";
            let line = |cells: &mut dyn Iterator<Item = String>| {
                cells
                    .zip(&widths)
                    .map(|(cell, w)| format!("| {cell:>w$} "))
                    .collect::<String>()
                    + "|\n"
            };
            format!(
                "{rule}{}{rule}{}{rule}",
                line(&mut header.iter().map(|h| h.to_string())),
                line(&mut row.into_iter())
            )
        }
        OutputFormat::Json => format!(
            "{}\n",
            serde_json::json!({
                "hash": summary.hash,
                "revision": summary.revision,
                "compactRevision": summary.compact_revision,
                "totalKey": summary.keys,
                "retainedRevisions": summary.retained_revisions,
                "leases": summary.leases,
                "totalSize": summary.total_bytes,
                "formatVersion": summary.format_version,
            })
        ),
    }
}

/// Bytes as etcdctl prints a size (powers of 1024, one decimal).
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn restore(flags: &RestoreFlags) -> Result<(), SnapshotCmdError> {
    // Progress and the start command are the subcommand's output, on stdout.
    let mut out = std::io::stdout().lock();
    let members = flags::parse_cluster(&flags.cluster).map_err(SnapshotCmdError::Flags)?;
    if !members.iter().any(|(id, _)| *id == flags.id) {
        return Err(SnapshotCmdError::Flags(format!(
            "--id {} is out of range: --cluster has {} peer URL(s)",
            flags.id,
            members.len()
        )));
    }
    let data_dir = flags
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("raftkv-{}", flags.id)));
    if !is_absent_or_empty(&data_dir)? {
        return Err(SnapshotCmdError::DataDirExists { path: data_dir });
    }
    let _ = writeln!(out, "reading {}", flags.file.display());
    let (bytes, summary) = read_backup(&flags.file)?;
    let _ = writeln!(
        out,
        "checked: revision {}, {} keys, {} leases, {}, hash {:x}",
        summary.revision,
        summary.keys,
        summary.leases,
        human_bytes(summary.total_bytes),
        summary.hash
    );
    // Built beside the target and renamed into place, so an interrupted
    // restore never leaves a data directory a node would start from.
    let partial = partial_dir(&data_dir);
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(|source| SnapshotCmdError::Io {
            path: partial.clone(),
            source,
        })?;
    }
    let mut config = NodeConfig::new(flags.id, members.clone(), partial.clone());
    config.cluster_id = flags::cluster_id(&flags.cluster_token);
    let _ = writeln!(
        out,
        "writing member {} of {} into {}",
        flags.id,
        members.len(),
        data_dir.display()
    );
    let state = kvstore::backup_state(&bytes)
        .map_err(|source| SnapshotCmdError::Invalid {
            path: flags.file.clone(),
            source,
        })?
        .to_vec();
    raftnode::bootstrap_with_state(&config, state)?;
    if data_dir.exists() {
        // Empty (checked above): rename needs it gone.
        std::fs::remove_dir(&data_dir).map_err(|source| SnapshotCmdError::Io {
            path: data_dir.clone(),
            source,
        })?;
    }
    std::fs::rename(&partial, &data_dir).map_err(|source| SnapshotCmdError::Io {
        path: data_dir.clone(),
        source,
    })?;
    sync_parent(&data_dir)?;
    let _ = writeln!(
        out,
        "restored; start the member with:\n  raftkv --id {} --cluster {} --cluster-token {} --data-dir {} --port <client port>",
        flags.id,
        flags.cluster,
        flags.cluster_token,
        data_dir.display()
    );
    let _ = out.flush();
    Ok(())
}

/// `<dir>.restoring`, beside `dir`.
fn partial_dir(data_dir: &Path) -> PathBuf {
    let mut name = data_dir
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".restoring");
    data_dir.with_file_name(name)
}

fn is_absent_or_empty(dir: &Path) -> Result<bool, SnapshotCmdError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(source) => Err(SnapshotCmdError::Io {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

/// Makes the rename durable: fsync of the directory that holds `path`.
fn sync_parent(path: &Path) -> Result<(), SnapshotCmdError> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::File::open(&parent)
        .and_then(|dir| dir.sync_all())
        .map_err(|source| SnapshotCmdError::Io {
            path: parent,
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> BackupSummary {
        BackupSummary {
            format_version: 2,
            revision: 42,
            compact_revision: -1,
            keys: 7,
            retained_revisions: 41,
            leases: 1,
            total_bytes: 2048,
            hash: 0xbeef,
        }
    }

    #[test]
    fn status_prints_etcdctls_simple_line_a_table_and_json() {
        assert_eq!(
            describe(&summary(), OutputFormat::Simple),
            "beef, 42, 7, 2.0 kB\n"
        );
        let table = describe(&summary(), OutputFormat::Table);
        assert!(
            table.contains("| HASH |") && table.contains("| beef |"),
            "{table}"
        );
        assert_eq!(table.lines().count(), 5);
        let json: serde_json::Value =
            serde_json::from_str(&describe(&summary(), OutputFormat::Json)).unwrap();
        assert_eq!(json["revision"], 42);
        assert_eq!(json["totalKey"], 7);
        assert_eq!(human_bytes(5), "5 B");
    }

    #[test]
    fn the_partial_directory_sits_beside_the_target() {
        assert_eq!(
            partial_dir(Path::new("/data/raftkv-1")),
            PathBuf::from("/data/raftkv-1.restoring")
        );
        assert_eq!(
            partial_dir(Path::new("raftkv-2")),
            PathBuf::from("raftkv-2.restoring")
        );
    }
}
