//! Planted bugs: deliberate mistakes the deterministic simulation must catch,
//! compiled in only with the `planted-bugs` feature (enabled by test builds
//! and `cargo xtask sim`, never by the `raftkv` binary's own dependencies).
//!
//! A bug is selected per thread at run time with [`set`]; a simulation runs
//! its whole cluster on one thread, so parallel tests do not see each
//! other's bugs. Without the feature [`active`] is a constant `false` and
//! [`set`] refuses. The code paths that consult [`active`] are in `wal`
//! (skip the fsync; a corrupt last record taken as torn; a received
//! snapshot's marker not synced), in `raftnode` (persisted messages sent
//! before the fsync; a snapshot report dropped) and in `kvstore` (a PUT
//! acknowledged on propose; a linearizable read without its barrier; a
//! duplicated command applied twice), which reaches [`active`] through
//! `raftnode::plant`.

/// A deliberate mistake in the durability or replication path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PlantedBug {
    /// raftnode sends the Ready's persisted messages (votes, append
    /// responses) before the WAL write and its fsync.
    SendBeforeFsync,
    /// The WAL never calls fdatasync after a write.
    SkipFsync,
    /// WAL recovery treats a damaged, fully written last record as a torn
    /// write and truncates it instead of refusing to open.
    CorruptTailAsTorn,
    /// raftnode ignores the transport's report of how a snapshot transfer
    /// ended (raft-rs then keeps that follower paused after a failure).
    DropSnapshotReport,
    /// The marker of a snapshot received from a leader is written without
    /// its fsync: the node restores the snapshot, acknowledges it and purges
    /// older snapshot files before the marker is durable.
    SnapshotBeforeMarker,
    /// kvstore acknowledges a PUT as soon as its proposal is accepted,
    /// without waiting for its entry to be applied.
    AckPutOnPropose,
    /// kvstore answers a linearizable read without the read barrier (as a
    /// serializable one).
    ReadWithoutBarrier,
    /// kvstore applies a command whose request id it already applied (the
    /// dedup window lets a resent proposal through).
    ApplyDuplicate,
}

impl PlantedBug {
    /// Every planted bug, in a fixed order.
    pub const ALL: [PlantedBug; 8] = [
        PlantedBug::SendBeforeFsync,
        PlantedBug::SkipFsync,
        PlantedBug::CorruptTailAsTorn,
        PlantedBug::DropSnapshotReport,
        PlantedBug::SnapshotBeforeMarker,
        PlantedBug::AckPutOnPropose,
        PlantedBug::ReadWithoutBarrier,
        PlantedBug::ApplyDuplicate,
    ];

    /// The bugs of the durability and replication path (wal and raftnode),
    /// which a simulation without a key-value store can catch.
    pub const RAFT: [PlantedBug; 5] = [
        PlantedBug::SendBeforeFsync,
        PlantedBug::SkipFsync,
        PlantedBug::CorruptTailAsTorn,
        PlantedBug::DropSnapshotReport,
        PlantedBug::SnapshotBeforeMarker,
    ];

    /// The bug's name on command lines (`--plant NAME`).
    pub fn name(self) -> &'static str {
        match self {
            PlantedBug::SendBeforeFsync => "send-before-fsync",
            PlantedBug::SkipFsync => "skip-fsync",
            PlantedBug::CorruptTailAsTorn => "corrupt-tail-as-torn",
            PlantedBug::DropSnapshotReport => "drop-snapshot-report",
            PlantedBug::SnapshotBeforeMarker => "snapshot-before-marker",
            PlantedBug::AckPutOnPropose => "ack-put-on-propose",
            PlantedBug::ReadWithoutBarrier => "read-without-barrier",
            PlantedBug::ApplyDuplicate => "apply-duplicate",
        }
    }

    /// The bug named `name` (see [`PlantedBug::name`]).
    pub fn from_name(name: &str) -> Option<PlantedBug> {
        PlantedBug::ALL.into_iter().find(|bug| bug.name() == name)
    }
}

/// Whether the bugs can be selected in this build.
pub const COMPILED_IN: bool = cfg!(feature = "planted-bugs");

#[cfg(feature = "planted-bugs")]
thread_local! {
    static ACTIVE: std::cell::Cell<Option<PlantedBug>> = const { std::cell::Cell::new(None) };
}

/// Selects `bug` (or none) for code running on this thread. Fails when the
/// build does not have the `planted-bugs` feature and a bug is asked for.
pub fn set(bug: Option<PlantedBug>) -> Result<(), &'static str> {
    #[cfg(feature = "planted-bugs")]
    {
        ACTIVE.with(|active| active.set(bug));
        Ok(())
    }
    #[cfg(not(feature = "planted-bugs"))]
    match bug {
        None => Ok(()),
        Some(_) => Err("planted bugs are not compiled in (feature `planted-bugs`)"),
    }
}

/// Whether `bug` is selected on this thread (always false without the
/// feature).
#[inline]
pub fn active(bug: PlantedBug) -> bool {
    #[cfg(feature = "planted-bugs")]
    {
        ACTIVE.with(|active| active.get() == Some(bug))
    }
    #[cfg(not(feature = "planted-bugs"))]
    {
        let _ = bug;
        false
    }
}
