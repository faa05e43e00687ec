//! Per-peer counters and the stats snapshot read by the node's status and metrics.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

/// Most peer ids tracked in the counter table, so forged sender ids cannot grow it unbounded.
pub const MAX_TRACKED_PEERS: usize = 4096;

/// Live counters of one peer, updated with relaxed atomics.
#[derive(Debug, Default)]
pub(crate) struct PeerCounters {
    pub msgs_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub msgs_received: AtomicU64,
    pub bytes_received: AtomicU64,
    pub send_failures: AtomicU64,
    pub msgs_dropped: AtomicU64,
    pub snapshots_sent: AtomicU64,
    pub snapshots_failed: AtomicU64,
    pub snapshots_received: AtomicU64,
}

/// Adds `n` to a counter.
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl PeerCounters {
    fn snapshot(&self) -> PeerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PeerStats {
            url: None,
            queue_len: 0,
            msgs_sent: get(&self.msgs_sent),
            bytes_sent: get(&self.bytes_sent),
            msgs_received: get(&self.msgs_received),
            bytes_received: get(&self.bytes_received),
            send_failures: get(&self.send_failures),
            msgs_dropped: get(&self.msgs_dropped),
            snapshots_sent: get(&self.snapshots_sent),
            snapshots_failed: get(&self.snapshots_failed),
            snapshots_received: get(&self.snapshots_received),
        }
    }
}

/// The table of counters by peer id, shared by the sender tasks and the server handlers.
#[derive(Debug, Default)]
pub(crate) struct CounterTable {
    peers: RwLock<HashMap<u64, Arc<PeerCounters>>>,
    /// Counts events for ids beyond `MAX_TRACKED_PEERS`, so nothing goes uncounted.
    overflow: Arc<PeerCounters>,
}

impl CounterTable {
    /// The counters of `peer_id`, created on first use.
    pub fn get(&self, peer_id: u64) -> Arc<PeerCounters> {
        if let Some(c) = self.peers.read().get(&peer_id) {
            return Arc::clone(c);
        }
        let mut peers = self.peers.write();
        if peers.len() >= MAX_TRACKED_PEERS && !peers.contains_key(&peer_id) {
            return Arc::clone(&self.overflow);
        }
        Arc::clone(peers.entry(peer_id).or_default())
    }

    /// A point-in-time copy of every peer's counters.
    pub fn snapshot(&self) -> BTreeMap<u64, PeerStats> {
        self.peers
            .read()
            .iter()
            .map(|(id, c)| (*id, c.snapshot()))
            .collect()
    }
}

/// Counters and state of one peer, as returned by [`crate::Transport::stats`].
/// Counters are cumulative since the transport started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// The peer's URL when it is a configured peer; `None` for a sender we only heard from.
    pub url: Option<String>,
    /// Messages waiting in the peer's outgoing queue.
    pub queue_len: usize,
    /// Messages acknowledged by the peer (2xx).
    pub msgs_sent: u64,
    /// Frame and snapshot body bytes acknowledged by the peer.
    pub bytes_sent: u64,
    /// Messages received from the peer and handed to the node.
    pub msgs_received: u64,
    /// Body bytes received from the peer and handed to the node.
    pub bytes_received: u64,
    /// Failed connection attempts and requests (network errors and timeouts).
    pub send_failures: u64,
    /// Messages to or from the peer that were dropped: full queue, unknown peer, failed or
    /// refused request, fault injection, or a node that was overloaded.
    pub msgs_dropped: u64,
    /// Snapshots acknowledged by the peer.
    pub snapshots_sent: u64,
    /// Snapshots that could not be delivered (reported as `SnapshotStatus::Failure`).
    pub snapshots_failed: u64,
    /// Snapshots received from the peer.
    pub snapshots_received: u64,
}

/// Stats of every peer this transport sends to or heard from, by peer id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Per-peer stats, by peer id.
    pub peers: BTreeMap<u64, PeerStats>,
    /// Bytes of received frames the node holds and has not processed yet (the inbound
    /// byte budget in use, bounded by `max_inbound_bytes`).
    pub inbound_bytes: u64,
}

impl TransportStats {
    /// Sum of every peer's counters (url and queue length excluded).
    pub fn total(&self) -> PeerStats {
        let mut t = PeerStats::default();
        for p in self.peers.values() {
            t.queue_len += p.queue_len;
            t.msgs_sent += p.msgs_sent;
            t.bytes_sent += p.bytes_sent;
            t.msgs_received += p.msgs_received;
            t.bytes_received += p.bytes_received;
            t.send_failures += p.send_failures;
            t.msgs_dropped += p.msgs_dropped;
            t.snapshots_sent += p.snapshots_sent;
            t.snapshots_failed += p.snapshots_failed;
            t.snapshots_received += p.snapshots_received;
        }
        t
    }
}
