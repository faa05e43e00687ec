//! raft-rs logs through `slog`; this drain turns its records into `tracing`
//! events with target `raft_rs`, so `RUST_LOG=raft_rs=debug` controls them.

use slog::{Drain, Level, OwnedKVList, Record};

/// Forwards each slog record as one `tracing` event (message only).
struct TracingDrain;

impl Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, _values: &OwnedKVList) -> Result<(), slog::Never> {
        let message = record.msg();
        match record.level() {
            Level::Critical | Level::Error => tracing::error!(target: "raft_rs", "{message}"),
            Level::Warning => tracing::warn!(target: "raft_rs", "{message}"),
            Level::Info => tracing::info!(target: "raft_rs", "{message}"),
            Level::Debug => tracing::debug!(target: "raft_rs", "{message}"),
            Level::Trace => tracing::trace!(target: "raft_rs", "{message}"),
        }
        Ok(())
    }
}

/// A slog logger for raft-rs whose records become `tracing` events.
pub(crate) fn raft_logger(node_id: u64) -> slog::Logger {
    slog::Logger::root(TracingDrain, slog::o!("node" => node_id))
}
