//! The send seam: the Raft loop hands messages and peer changes to an
//! [`Outbox`]. Production uses the HTTP transport; a simulation collects the
//! messages and delivers them itself.

use raft::eraftpb::Message;

/// Where the Raft loop sends messages, and the peers it can reach.
///
/// # Correctness
/// * `send` is called only with messages raft-rs allows to leave at that
///   point of the Ready cycle: persisted messages (votes, append responses)
///   only after the state they acknowledge is durable. An outbox may delay,
///   reorder, drop or duplicate messages (Raft tolerates all four) but must
///   never alter one.
/// * `send` must not block the loop for long (queue, do not wait).
/// * A peer removed with `remove_peer_at(id, index)` was removed by the
///   membership change at log `index`; a later `add_peer` of the same id is
///   a new member.
pub trait Outbox: Send {
    /// Sends messages to their `to` peers.
    fn send(&self, msgs: Vec<Message>);
    /// Makes peer `id` reachable at `url`.
    fn add_peer(&self, id: u64, url: &str) -> Result<(), PeerError>;
    /// Forgets peer `id`, removed by the membership change at `index`.
    fn remove_peer_at(&self, id: u64, index: u64);
}

/// A peer the outbox cannot add (for example an invalid URL).
#[derive(Debug, thiserror::Error)]
#[error("cannot add peer: {reason}")]
pub struct PeerError {
    /// Why not.
    pub reason: String,
}

impl Outbox for transport::Transport {
    fn send(&self, msgs: Vec<Message>) {
        transport::Transport::send(self, msgs);
    }

    fn add_peer(&self, id: u64, url: &str) -> Result<(), PeerError> {
        transport::Transport::add_peer(self, id, url).map_err(|e| PeerError {
            reason: e.to_string(),
        })
    }

    fn remove_peer_at(&self, id: u64, index: u64) {
        transport::Transport::remove_peer_at(self, id, index);
    }
}
