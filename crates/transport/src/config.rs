//! Transport configuration.

use crate::error::TransportError;

/// Configuration of one node's transport. Build it with [`TransportConfig::new`] and adjust fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportConfig {
    /// This node's Raft id (never 0).
    pub node_id: u64,
    /// The cluster id; requests carrying another cluster id are refused with 412.
    pub cluster_id: u64,
    /// Largest message frame accepted (413 above it) and the batch budget of outgoing frames.
    pub max_frame_bytes: usize,
    /// Largest snapshot payload accepted on the snapshot path (413 above it).
    pub max_snapshot_bytes: u64,
    /// Bound of each peer's outgoing message queue; messages beyond it are dropped and counted.
    pub peer_queue_len: usize,
    /// Bound of each peer's outgoing snapshot queue; a snapshot beyond it is reported as failed.
    pub snapshot_queue_len: usize,
    /// Message requests served at once; more get 503 at once (load shedding). Each may
    /// buffer up to `max_frame_bytes`. A peer sends one frame at a time, so a cluster needs
    /// one per peer.
    pub max_concurrent_frames: usize,
    /// Snapshot uploads received at once; more get 503 at once.
    pub max_concurrent_snapshots: usize,
    /// Budget of received frames handed to the node and not yet processed by it, in bytes
    /// of decoded memory (estimated); a frame beyond it gets 503. A frame larger than the
    /// whole budget (a big snapshot) is accepted when nothing else is held.
    pub max_inbound_bytes: u64,
    /// Serve `POST /raft/faults` on the router. Off by default: only for chaos testing.
    pub enable_fault_routes: bool,
    /// Time allowed to open a TCP connection to a peer.
    pub connect_timeout_ms: u64,
    /// Time allowed for one message frame request, from send to response.
    pub request_timeout_ms: u64,
    /// Time allowed for one snapshot transfer, from connect to response.
    pub snapshot_timeout_ms: u64,
    /// First reconnection delay after a failure; doubled on each further failure.
    pub backoff_initial_ms: u64,
    /// Cap of the reconnection delay.
    pub backoff_max_ms: u64,
    /// Outgoing TLS for `https://` peer URLs (frames and snapshots): the CA that signed the
    /// peers' certificates and this node's client certificate. `None` (the default): only
    /// `http://` peers can be added.
    pub tls: Option<tls::ClientTls>,
}

impl TransportConfig {
    /// Default of [`TransportConfig::request_timeout_ms`].
    pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 5_000;

    /// A configuration with production defaults for the given node and cluster.
    pub fn new(node_id: u64, cluster_id: u64) -> TransportConfig {
        TransportConfig {
            node_id,
            cluster_id,
            max_frame_bytes: 16 * 1024 * 1024,
            max_snapshot_bytes: 4 * 1024 * 1024 * 1024,
            peer_queue_len: 8192,
            snapshot_queue_len: 2,
            max_concurrent_frames: 16,
            max_concurrent_snapshots: 1,
            max_inbound_bytes: 256 * 1024 * 1024,
            enable_fault_routes: false,
            connect_timeout_ms: 1_000,
            request_timeout_ms: Self::DEFAULT_REQUEST_TIMEOUT_MS,
            snapshot_timeout_ms: 600_000,
            backoff_initial_ms: 50,
            backoff_max_ms: 1_000,
            tls: None,
        }
    }

    /// Checks every field is within its valid range.
    pub fn validate(&self) -> Result<(), TransportError> {
        let bad = |what: &str| Err(TransportError::InvalidConfig(what.to_string()));
        if self.node_id == 0 {
            return bad("node_id must not be 0");
        }
        if self.max_frame_bytes < 1024 || self.max_frame_bytes > u32::MAX as usize {
            return bad("max_frame_bytes must be within [1024, 2^32 - 1]");
        }
        if self.max_concurrent_frames == 0 || self.max_concurrent_snapshots == 0 {
            return bad("max_concurrent_frames and max_concurrent_snapshots must be at least 1");
        }
        if self.max_inbound_bytes < self.max_frame_bytes as u64 {
            return bad("max_inbound_bytes must be at least max_frame_bytes");
        }
        if self.peer_queue_len == 0 || self.snapshot_queue_len == 0 {
            return bad("peer_queue_len and snapshot_queue_len must be at least 1");
        }
        if self.connect_timeout_ms == 0
            || self.request_timeout_ms == 0
            || self.snapshot_timeout_ms == 0
        {
            return bad("timeouts must be at least 1 ms");
        }
        if self.backoff_initial_ms == 0 || self.backoff_initial_ms > self.backoff_max_ms {
            return bad("backoff_initial_ms must be within [1, backoff_max_ms]");
        }
        Ok(())
    }
}
