//! The `Transport` handle: peer table, routing of outgoing messages, lifecycle.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use raft_proto::eraftpb::{Message, MessageType};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::config::TransportConfig;
use crate::error::TransportError;
use crate::faults::Faults;
use crate::peer::{self, PeerShared};
use crate::stats::{add, CounterTable, TransportStats};
use crate::{Delivery, SnapshotStatus};

/// State shared by the router and the peer tasks (not the peer table, so tasks never keep
/// the table alive).
pub(crate) struct Ctx {
    pub config: TransportConfig,
    pub node: Arc<dyn Delivery>,
    pub faults: Faults,
    pub counters: CounterTable,
    /// Ids removed with `remove_peer` / `remove_peer_at`, with the log index of the removal
    /// when known; their requests get 410 Gone carrying that index.
    pub removed: RwLock<HashMap<u64, Option<u64>>>,
    /// Bounds of the receiving side: concurrent requests and the inbound byte budget.
    pub limits: crate::server::Limits,
}

/// One configured peer: its shared queue, its snapshot queue and its two tasks.
struct Peer {
    shared: Arc<PeerShared>,
    snapshots: mpsc::Sender<Message>,
    tasks: [JoinHandle<()>; 2],
}

impl Drop for Peer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

struct Inner {
    ctx: Arc<Ctx>,
    runtime: Handle,
    peers: RwLock<HashMap<u64, Peer>>,
    shut_down: AtomicBool,
    /// Serialises add/update/remove so a peer is never spawned twice.
    membership: Mutex<()>,
}

/// Carries Raft messages between this node and its peers over HTTP. Cheap to clone.
///
/// Every method except [`Transport::shutdown`] is synchronous, non-blocking and callable from
/// any thread, with or without a tokio runtime context.
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

/// A message queued for a peer, or why it was not.
enum Routed {
    Queued,
    Dropped,
    UnknownPeer,
    SnapshotRefused,
}

impl Transport {
    /// Creates a transport with no peers.
    ///
    /// # Panics
    /// When called outside a tokio runtime or with a configuration that fails
    /// [`TransportConfig::validate`]; use [`Transport::try_new`] to get an error instead.
    pub fn new(config: TransportConfig, node: Arc<dyn Delivery>) -> Transport {
        match Transport::try_new(config, node, Handle::current()) {
            Ok(transport) => transport,
            Err(e) => panic!("Transport::new: {e}"),
        }
    }

    /// Creates a transport that spawns its peer tasks on `runtime`.
    pub fn try_new(
        config: TransportConfig,
        node: Arc<dyn Delivery>,
        runtime: Handle,
    ) -> Result<Transport, TransportError> {
        config.validate()?;
        let limits = crate::server::Limits::new(&config);
        let ctx = Ctx {
            limits,
            config,
            node,
            faults: Faults::default(),
            counters: CounterTable::default(),
            removed: RwLock::new(HashMap::new()),
        };
        let inner = Inner {
            ctx: Arc::new(ctx),
            runtime,
            peers: RwLock::new(HashMap::new()),
            shut_down: AtomicBool::new(false),
            membership: Mutex::new(()),
        };
        Ok(Transport {
            inner: Arc::new(inner),
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> u64 {
        self.inner.ctx.config.node_id
    }

    /// The server side, to be served on this node's peer URL. The endpoints are described in the workspace ARCHITECTURE.md ("Wire format").
    pub fn router(&self) -> axum::Router {
        crate::server::router(Arc::clone(&self.inner.ctx))
    }

    /// Queues messages for their recipients (`msg.to`), in order per recipient. Never blocks.
    ///
    /// A message to an unknown peer is dropped and the peer reported unreachable; a message
    /// to a peer whose queue is full is dropped (Raft retransmits). Both are counted in
    /// [`PeerStats::msgs_dropped`](crate::PeerStats). A `MsgSnapshot` goes to the peer's
    /// snapshot path; its outcome is reported through [`Delivery::report_snapshot`]. Delivery
    /// callbacks for refused messages run on the caller's thread after the routing is done.
    pub fn send(&self, msgs: Vec<Message>) {
        let mut unreachable: Vec<u64> = Vec::new();
        let mut failed_snapshots: Vec<u64> = Vec::new();
        {
            let peers = self.inner.peers.read();
            for msg in msgs {
                let to = msg.to;
                let is_snapshot = msg.msg_type == MessageType::MsgSnapshot as i32;
                match self.route(&peers, msg) {
                    Routed::Queued | Routed::Dropped => {}
                    Routed::UnknownPeer => {
                        unreachable.push(to);
                        // Every MsgSnapshot ends in exactly one report, or the
                        // leader never replicates to that follower again.
                        if is_snapshot {
                            failed_snapshots.push(to);
                        }
                    }
                    Routed::SnapshotRefused => failed_snapshots.push(to),
                }
            }
        }
        let node = &self.inner.ctx.node;
        unreachable.sort_unstable();
        unreachable.dedup();
        for id in unreachable {
            node.report_unreachable(id);
        }
        for id in failed_snapshots {
            node.report_snapshot(id, SnapshotStatus::Failure);
        }
    }

    fn route(&self, peers: &HashMap<u64, Peer>, msg: Message) -> Routed {
        let ctx = &self.inner.ctx;
        let shut_down = self.inner.shut_down.load(Ordering::Acquire);
        let Some(peer) = peers.get(&msg.to).filter(|_| !shut_down) else {
            add(&ctx.counters.get(msg.to).msgs_dropped, 1);
            tracing::debug!(to = msg.to, "message for unknown peer dropped");
            return Routed::UnknownPeer;
        };
        if msg.msg_type == MessageType::MsgSnapshot as i32 {
            if peer.snapshots.try_send(msg).is_err() {
                add(&peer.shared.counters.snapshots_failed, 1);
                tracing::warn!(to = peer.shared.id, "snapshot queue full: snapshot refused");
                return Routed::SnapshotRefused;
            }
            return Routed::Queued;
        }
        if peer.shared.enqueue(msg, ctx.config.peer_queue_len) {
            Routed::Queued
        } else {
            add(&peer.shared.counters.msgs_dropped, 1);
            Routed::Dropped
        }
    }

    /// Adds peer `id` at `url` (`http://host:port`, or `https://host:port` with
    /// [`TransportConfig::tls`](crate::TransportConfig::tls) set) and starts its sender tasks.
    /// Adding a known peer updates its URL; adding this node's own id is accepted and
    /// ignored, so the caller can apply every membership change as it comes.
    pub fn add_peer(&self, id: u64, url: &str) -> Result<(), TransportError> {
        if id == 0 {
            return Err(TransportError::ZeroPeerId);
        }
        let endpoint = self.endpoint(url)?;
        if id == self.node_id() {
            tracing::debug!(id, "add_peer for this node ignored");
            return Ok(());
        }
        let _membership = self.inner.membership.lock();
        if self.inner.shut_down.load(Ordering::Acquire) {
            return Err(TransportError::ShutDown);
        }
        if self.inner.peers.read().contains_key(&id) {
            drop(_membership);
            return self.update_peer(id, url);
        }
        self.inner.ctx.removed.write().remove(&id);
        let peer = self.spawn_peer(id, endpoint);
        self.inner.peers.write().insert(id, peer);
        tracing::info!(peer = id, url, "peer added");
        Ok(())
    }

    fn spawn_peer(&self, id: u64, endpoint: peer::Endpoint) -> Peer {
        let ctx = &self.inner.ctx;
        let shared = Arc::new(PeerShared {
            id,
            queue: Mutex::new(Default::default()),
            notify: Notify::new(),
            endpoint: Mutex::new(Arc::new(endpoint)),
            endpoint_version: AtomicU64::new(0),
            counters: ctx.counters.get(id),
        });
        let (snapshots, snapshot_rx) = mpsc::channel(ctx.config.snapshot_queue_len);
        let span = tracing::info_span!("peer", node = ctx.config.node_id, peer = id);
        let frames = peer::run_frames(Arc::clone(ctx), Arc::clone(&shared));
        let snaps = peer::run_snapshots(Arc::clone(ctx), Arc::clone(&shared), snapshot_rx);
        let tasks = [
            self.inner.runtime.spawn(frames.instrument(span.clone())),
            self.inner.runtime.spawn(snaps.instrument(span)),
        ];
        Peer {
            shared,
            snapshots,
            tasks,
        }
    }

    /// Stops sending to peer `id`, drops its queue, and refuses its requests with 410 from now
    /// on (until it is added again). Unknown ids are ignored. Prefer
    /// [`Transport::remove_peer_at`], which lets a re-added node ignore a stale 410.
    pub fn remove_peer(&self, id: u64) {
        self.remove(id, None);
    }

    /// Like [`Transport::remove_peer`], for a removal applied at log index `index`. The 410
    /// answers carry the index (header `x-raft-removed-at`), so that a node added again with
    /// the same id after that index, hearing from a member that has not applied the re-add
    /// yet, can tell the answer is stale ([`Delivery::report_removed_at`]).
    pub fn remove_peer_at(&self, id: u64, index: u64) {
        self.remove(id, Some(index));
    }

    fn remove(&self, id: u64, index: Option<u64>) {
        let _membership = self.inner.membership.lock();
        self.inner.ctx.removed.write().insert(id, index);
        let removed = self.inner.peers.write().remove(&id);
        if removed.is_some() {
            tracing::info!(peer = id, "peer removed");
        }
    }

    /// Parses `url` and checks that an `https://` URL has TLS configured.
    fn endpoint(&self, url: &str) -> Result<peer::Endpoint, TransportError> {
        let endpoint = peer::parse_url(url)?;
        if endpoint.tls && self.inner.ctx.config.tls.is_none() {
            return Err(TransportError::InvalidUrl {
                url: url.to_string(),
                reason: "https:// peers need TLS configuration (the peer CA file), which this \
                         transport was not given"
                    .to_string(),
            });
        }
        Ok(endpoint)
    }

    /// Points peer `id` at a new URL; the next frame goes over a connection to it. An
    /// `https://` URL needs TLS configuration, as in [`Transport::add_peer`].
    pub fn update_peer(&self, id: u64, url: &str) -> Result<(), TransportError> {
        let endpoint = self.endpoint(url)?;
        let _membership = self.inner.membership.lock();
        let peers = self.inner.peers.read();
        let peer = peers.get(&id).ok_or(TransportError::UnknownPeer(id))?;
        *peer.shared.endpoint.lock() = Arc::new(endpoint);
        peer.shared.endpoint_version.fetch_add(1, Ordering::AcqRel);
        tracing::info!(peer = id, url, "peer URL updated");
        Ok(())
    }

    /// Ids of the configured peers, ascending.
    pub fn peer_ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.inner.peers.read().keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Counters of every peer sent to or heard from, with URL and queue length of configured
    /// peers.
    pub fn stats(&self) -> TransportStats {
        let mut stats = TransportStats {
            peers: self.inner.ctx.counters.snapshot(),
            inbound_bytes: self.inner.ctx.limits.inbound_bytes(),
        };
        for (id, peer) in self.inner.peers.read().iter() {
            let entry = stats.peers.entry(*id).or_default();
            entry.url = Some(peer.shared.endpoint.lock().url.clone());
            entry.queue_len = peer.shared.queue.lock().len();
        }
        stats
    }

    /// The fault-injection table (for tests and chaos runs).
    pub fn faults(&self) -> &Faults {
        &self.inner.ctx.faults
    }

    /// Stops every peer task and waits for them to end. Queued messages are dropped; later
    /// calls to `send` drop their messages and `add_peer` fails. The router keeps answering.
    pub async fn shutdown(&self) {
        let peers: Vec<Peer> = {
            let _membership = self.inner.membership.lock();
            self.inner.shut_down.store(true, Ordering::Release);
            self.inner.peers.write().drain().map(|(_, p)| p).collect()
        };
        for mut peer in peers {
            for task in &mut peer.tasks {
                task.abort();
                if let Err(e) = task.await {
                    if !e.is_cancelled() {
                        tracing::error!(peer = peer.shared.id, error = %e, "peer task failed");
                    }
                }
            }
        }
        tracing::info!(node = self.node_id(), "transport shut down");
    }
}
