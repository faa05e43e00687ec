//! HTTP transport that carries Raft messages (`raft_proto::eraftpb::Message`) between the
//! nodes of a raftkv cluster, identified by node id.
//!
//! # What it owns
//! - The **server side**: [`Transport::router`], an axum router served on the node's peer URL.
//!   It checks each request's identity headers (cluster id, recipient, sender), decodes the
//!   frame, and hands the messages to the node through [`Delivery::deliver`].
//! - The **client side**: one sender per peer with a bounded, ordered queue. Everything queued
//!   while a request is in flight goes out in the next frame, over one kept-alive HTTP/1.1
//!   connection per peer. Failures drop the frame, report the peer unreachable
//!   ([`Delivery::report_unreachable`]) and reconnect with capped exponential backoff.
//! - **Snapshots** (`MsgSnapshot`) on a separate task and connection per peer, streamed
//!   without copying the snapshot data; the outcome goes to [`Delivery::report_snapshot`].
//! - Peer membership at runtime ([`Transport::add_peer`], [`Transport::remove_peer`],
//!   [`Transport::update_peer`]), [`Faults`] for tests, and [`Transport::stats`].
//!
//! # What it does not own
//! No Raft logic (it does not depend on the `raft` crate) and nothing key-value specific.
//! It does not persist anything, does not retry lost messages (Raft retransmits), and does
//! not serve the router itself (the caller binds the socket, and terminates TLS on it, e.g.
//! with `tls::Listener`). It does not load or reload certificates: the `tls` crate does.
//!
//! # TLS
//! `https://` peer URLs are reached over TLS with [`TransportConfig::tls`] (a
//! [`ClientTls`]): frames and snapshots alike, verifying the peer's certificate against the
//! configured CA and the URL's host, and presenting this node's client certificate when one
//! is configured. Adding an `https://` peer without TLS configuration is an error
//! ([`TransportError::InvalidUrl`]); a failed handshake is a connection failure (the peer is
//! reported unreachable and nothing is sent).
//!
//! # Invariants
//! - Messages from this node to one peer are delivered in the order they were passed to
//!   [`Transport::send`], or dropped; never reordered. A frame is sent at most once: it is
//!   retried (once, on a new connection) only when the connection closed before any byte of
//!   it was written; after a timeout or a failure mid-request it is dropped, never resent,
//!   because the peer may have delivered it (a resent frame could carry a forwarded proposal
//!   a second time).
//! - Every queue is bounded: `peer_queue_len` messages per peer plus one frame being sent,
//!   `snapshot_queue_len` snapshots per peer, `max_frame_bytes` and
//!   [`wire::FRAME_ENTRIES_MAX`] entries per received frame, `max_snapshot_bytes` per
//!   received snapshot. Lengths and entry counts read from the network are checked against
//!   these bounds before anything is allocated for them.
//! - The receiving side's memory is bounded: at most `max_concurrent_frames` message
//!   requests and `max_concurrent_snapshots` snapshot uploads at once (more get 503 at
//!   once), and at most `max_inbound_bytes` of received frames held by the node
//!   ([`InboundPermit`], [`Delivery::deliver_frame`]; more get 503).
//! - Every received message has `to` equal to this node and `from` equal to the sender header;
//!   bad input gets a 4xx and a log line, never a panic.
//! - `send`, `add_peer`, `remove_peer` and `update_peer` never block and need no runtime
//!   context, so the Raft loop may run on a plain thread.
//!
//! The wire format is described in the workspace ARCHITECTURE.md ("Wire format").
//!
//! # Example
//! Two transports on loopback; node 1 sends a heartbeat to node 2.
//! ```
//! use std::future::IntoFuture;
//! use std::sync::{Arc, Mutex};
//! use raft_proto::eraftpb::{Message, MessageType};
//! use transport::{Delivery, Overloaded, SnapshotStatus, Transport, TransportConfig};
//!
//! #[derive(Default)]
//! struct Inbox(Mutex<Vec<Message>>);
//! impl Delivery for Inbox {
//!     fn deliver(&self, msgs: Vec<Message>) -> Result<(), Overloaded> {
//!         self.0.lock().unwrap().extend(msgs);
//!         Ok(())
//!     }
//!     fn report_unreachable(&self, _peer_id: u64) {}
//!     fn report_snapshot(&self, _peer_id: u64, _status: SnapshotStatus) {}
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cluster_id = 7;
//! let inbox = Arc::new(Inbox::default());
//! let node2 = Transport::new(TransportConfig::new(2, cluster_id), inbox.clone());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let url = format!("http://{}", listener.local_addr()?);
//! tokio::spawn(axum::serve(listener, node2.router()).into_future());
//!
//! let node1 = Transport::new(TransportConfig::new(1, cluster_id), Arc::new(Inbox::default()));
//! node1.add_peer(2, &url)?;
//! let mut heartbeat = Message::default();
//! heartbeat.set_msg_type(MessageType::MsgHeartbeat);
//! (heartbeat.from, heartbeat.to, heartbeat.term) = (1, 2, 5);
//! node1.send(vec![heartbeat.clone()]);
//!
//! // A message counts as sent once node 2 answered, i.e. after it was delivered.
//! while node1.stats().peers[&2].msgs_sent == 0 {
//!     tokio::time::sleep(std::time::Duration::from_millis(5)).await;
//! }
//! assert_eq!(*inbox.0.lock().unwrap(), vec![heartbeat]);
//! node1.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod config;
mod error;
pub mod faults;
mod peer;
mod server;
mod stats;
mod transport;
pub mod wire;

pub use config::TransportConfig;
pub use error::{FaultError, TransportError};
pub use faults::{Faults, LinkFault};
pub use raft_proto::eraftpb::Message;
pub use server::InboundPermit;
pub use stats::{PeerStats, TransportStats};
/// Outgoing TLS configuration (set [`TransportConfig::tls`] to reach `https://` peers).
pub use tls::{ClientTls, ClientTlsFiles};
pub use transport::Transport;

/// The node was too busy to take a frame; the transport answers the peer 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("node overloaded")]
pub struct Overloaded;

/// Outcome of sending a snapshot, mirroring raft's `SnapshotStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotStatus {
    /// The peer received the whole snapshot and handed it to its node.
    Finish,
    /// The snapshot could not be delivered; the leader should retry later.
    Failure,
}

/// Implemented by the node (raftnode); the transport calls it.
///
/// # Correctness
/// - Every method must be non-blocking: they run on the transport's tasks, on the server's
///   request handlers, and (for refused messages) inside [`Transport::send`] on the caller's
///   thread. Push into a bounded channel and return.
/// - `deliver` receives one frame from one sender, in the order sent. Returning
///   `Err(Overloaded)` drops the frame (the peer gets 503; Raft retransmits).
/// - Every `MsgSnapshot` passed to `send` leads to exactly one `report_snapshot` call for its
///   peer, unless the peer is removed or the transport shut down first.
pub trait Delivery: Send + Sync + 'static {
    /// Hands one received frame of messages (one sender, in order) to the node.
    fn deliver(&self, msgs: Vec<Message>) -> Result<(), Overloaded>;
    /// Like [`Delivery::deliver`], with the frame's share of the inbound byte budget
    /// (`max_inbound_bytes`). A node that queues frames keeps the permit with the messages
    /// and drops it once it has processed them, so the queue is bounded in bytes. The
    /// default releases the permit as soon as `deliver` returns.
    fn deliver_frame(&self, msgs: Vec<Message>, permit: InboundPermit) -> Result<(), Overloaded> {
        let result = self.deliver(msgs);
        drop(permit);
        result
    }
    /// Tells the node that `peer_id` could not be reached (raft's `report_unreachable`).
    fn report_unreachable(&self, peer_id: u64);
    /// Tells the node how sending a snapshot to `peer_id` ended (raft's `report_snapshot`).
    fn report_snapshot(&self, peer_id: u64, status: SnapshotStatus);
    /// Tells the node that `peer_id` answered 410 Gone: it has applied this
    /// node's removal from the cluster (as etcd's peers do), so a removed
    /// node that missed its own removal entry can stop. The default ignores it.
    fn report_removed(&self, peer_id: u64) {
        let _ = peer_id;
    }
    /// Like [`Delivery::report_removed`], with the log index at which `peer_id` applied this
    /// node's removal, when it said. A node that has applied entries at or past that index
    /// cannot be the removed one (it would have stopped on applying its removal): it was
    /// added again with the same id, and the peer has not applied that yet, so it should
    /// ignore the answer. The default treats every 410 as [`Delivery::report_removed`].
    fn report_removed_at(&self, peer_id: u64, removed_at_index: Option<u64>) {
        let _ = removed_at_index;
        self.report_removed(peer_id);
    }
}

/// Checks that `url` is a well-formed peer URL (`http://host[:port][/]` or
/// `https://host[:port][/]`), without adding a peer. Whether an `https://` peer can be
/// reached depends on the TLS configuration, checked by [`Transport::add_peer`].
///
/// ```
/// assert!(transport::validate_peer_url("http://127.0.0.1:12379").is_ok());
/// assert!(transport::validate_peer_url("https://node1.example:12380").is_ok());
/// assert!(transport::validate_peer_url("ftp://x").is_err());
/// ```
pub fn validate_peer_url(url: &str) -> Result<(), TransportError> {
    peer::parse_url(url).map(|_| ())
}
