//! Node configuration.

use std::path::PathBuf;

use crate::NodeError;

/// How a node starts, and the knobs of its Raft loop.
///
/// Defaults follow raftexample: 100 ms ticks, elections after 10 ticks,
/// heartbeats every tick, a snapshot every 10,000 applied entries with
/// 10,000 entries kept after it, 1 MiB per append message, 256 in flight.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's id (non-zero).
    pub id: u64,
    /// Cluster id: peers with another one are refused by the transport.
    pub cluster_id: u64,
    /// Initial members as `(id, peer URL)`; must contain this node unless
    /// `join` is set. Ignored on restart except to learn the URLs of the
    /// initial members.
    pub initial_members: Vec<(u64, String)>,
    /// Start with no configuration and wait to be added by the cluster.
    pub join: bool,
    /// WAL directory.
    pub wal_dir: PathBuf,
    /// Snapshot directory.
    pub snap_dir: PathBuf,
    /// WAL segment size.
    pub wal_segment_bytes: u64,
    /// Length of one Raft tick.
    pub tick_ms: u64,
    /// Ticks without a heartbeat before a follower campaigns.
    pub election_ticks: usize,
    /// Ticks between leader heartbeats.
    pub heartbeat_ticks: usize,
    /// raft-rs draws each election timeout at random from
    /// `[election_ticks, 2 * election_ticks)` (thread RNG). When set, the
    /// timeout is always `election_ticks`, so runs are reproducible; a
    /// simulation then jitters each node's clock from its seed instead, so
    /// nodes still time out at different moments. Off in production.
    pub election_ticks_pinned: bool,
    /// Applied entries between two snapshots (at least).
    pub snapshot_count: u64,
    /// A snapshot also waits until the log written since the previous one
    /// is at least this percentage of that snapshot's size, so the cost of
    /// snapshots stays proportional to the write volume however large the
    /// state grows. 0 snapshots every `snapshot_count` entries exactly, as
    /// raftexample does.
    pub snapshot_log_percent: u64,
    /// Entries kept in the log after a snapshot for slow followers.
    pub catch_up_entries: u64,
    /// Snapshot files kept on disk.
    pub snapshot_keep_count: usize,
    /// Maximum bytes of entries in one append message.
    pub max_size_per_msg: u64,
    /// Maximum append messages in flight to one follower.
    pub max_inflight_msgs: usize,
    /// How long a read barrier or membership change may wait.
    pub request_timeout_ms: u64,
    /// Capacity of the queue of requests into the Raft loop.
    pub request_queue_len: usize,
    /// Capacity of the queue of inbound peer frames into the Raft loop.
    pub inbound_queue_len: usize,
    /// Serve the transport's fault-injection routes (tests and chaos only).
    pub enable_fault_routes: bool,
    /// Outgoing TLS for `https://` peer URLs (the peer CA and this member's client
    /// certificate), handed to the transport; `None` (the default): only `http://` peers.
    pub peer_tls: Option<transport::ClientTls>,
    /// This member's name and client URLs, published through the log once
    /// it runs so that every member can list them (empty: nothing is
    /// published).
    pub attributes: crate::MemberAttributes,
    /// Told of leader changes, refused proposals and disk latencies
    /// (metrics); `None` (the default) observes nothing.
    pub observer: crate::SharedObserver,
}

impl NodeConfig {
    /// A configuration with raftexample's defaults for node `id` with its
    /// data under `data_dir` (`wal/` and `snap/`).
    pub fn new(id: u64, initial_members: Vec<(u64, String)>, data_dir: PathBuf) -> NodeConfig {
        NodeConfig {
            id,
            cluster_id: 0,
            initial_members,
            join: false,
            wal_dir: data_dir.join("wal"),
            snap_dir: data_dir.join("snap"),
            wal_segment_bytes: 64 * 1024 * 1024,
            tick_ms: 100,
            election_ticks: 10,
            heartbeat_ticks: 1,
            election_ticks_pinned: false,
            snapshot_count: 10_000,
            snapshot_log_percent: 100,
            catch_up_entries: 10_000,
            snapshot_keep_count: 3,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            request_timeout_ms: 5_000,
            request_queue_len: 16 * 1024,
            inbound_queue_len: 4 * 1024,
            enable_fault_routes: false,
            peer_tls: None,
            attributes: crate::MemberAttributes::default(),
            observer: None,
        }
    }

    /// Checks the configuration for values raft-rs would reject or that
    /// make no sense, with a message naming the field.
    pub fn validate(&self) -> Result<(), NodeError> {
        let bad = |reason: String| Err(NodeError::Config(reason));
        if self.id == 0 {
            return bad("node id must be at least 1".into());
        }
        if !self.join && !self.initial_members.iter().any(|(id, _)| *id == self.id) {
            return bad(format!(
                "node {} is not among the initial members; pass --join to join a running cluster",
                self.id
            ));
        }
        if let Some((id, _)) = self.initial_members.iter().find(|(id, _)| *id == 0) {
            return bad(format!("member id {id} is invalid: ids start at 1"));
        }
        if self.heartbeat_ticks == 0 || self.election_ticks <= self.heartbeat_ticks {
            return bad(format!(
                "election_ticks ({}) must exceed heartbeat_ticks ({}) > 0",
                self.election_ticks, self.heartbeat_ticks
            ));
        }
        if self.tick_ms == 0 || self.snapshot_count == 0 || self.request_queue_len == 0 {
            return bad("tick_ms, snapshot_count and request_queue_len must be > 0".into());
        }
        Ok(())
    }
}
