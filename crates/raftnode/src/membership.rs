//! Membership: the members' peer URLs, and the one membership change in
//! flight.
//!
//! raft-rs accepts a second conf change while one is pending and then
//! silently replaces it with an empty entry, so requests are serialised here:
//! one in flight, matched to its applied `ConfChange` by request id. A
//! follower cannot see the leader's pending change, so every change is
//! proposed with a marker entry naming its request (`change_marker`): when
//! the marker is applied but the change was not, the leader replaced it and
//! the caller hears so at once. A change also times out.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use raft::eraftpb::{ConfChange, ConfChangeType};
use tokio::sync::oneshot;
use tracing::warn;

use crate::outbox::Outbox;
use crate::{MembershipChange, RaftError};

/// Where a membership request is answered.
pub(crate) type Reply = oneshot::Sender<Result<(), RaftError>>;

struct PendingChange {
    request_id: u64,
    reply: Reply,
    deadline: Instant,
}

/// The members and the change in flight.
pub(crate) struct Membership {
    node: u64,
    /// Peer URLs of the members (and of members being added).
    members: BTreeMap<u64, String>,
    pending: Option<PendingChange>,
    next_request_id: u64,
    timeout: Duration,
}

impl Membership {
    /// `nonce` starts the request ids, so an earlier incarnation's ids never
    /// match this one's.
    pub(crate) fn new(
        node: u64,
        members: BTreeMap<u64, String>,
        nonce: u64,
        timeout: Duration,
    ) -> Membership {
        Membership {
            node,
            members,
            pending: None,
            next_request_id: nonce,
            timeout,
        }
    }

    pub(crate) fn members(&self) -> &BTreeMap<u64, String> {
        &self.members
    }

    pub(crate) fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Checks `change` against the current `voters` and returns the conf
    /// change to propose, with a fresh request id.
    pub(crate) fn conf_change(
        &mut self,
        change: &MembershipChange,
        voters: &[u64],
    ) -> Result<ConfChange, RaftError> {
        if self.pending.is_some() {
            return Err(RaftError::MembershipChangeInProgress);
        }
        check_change(change, voters)?;
        self.next_request_id += 1;
        let id = self.next_request_id;
        Ok(match change {
            MembershipChange::AddNode {
                id: node_id,
                peer_url,
            } => ConfChange {
                change_type: ConfChangeType::AddNode as i32,
                node_id: *node_id,
                context: peer_url.as_bytes().to_vec(),
                id,
            },
            MembershipChange::RemoveNode { id: node_id } => ConfChange {
                change_type: ConfChangeType::RemoveNode as i32,
                node_id: *node_id,
                context: Vec::new(),
                id,
            },
        })
    }

    /// The change `request_id` was proposed at `now`: it waits for its apply.
    pub(crate) fn proposed(&mut self, request_id: u64, reply: Reply, now: Instant) {
        self.pending = Some(PendingChange {
            request_id,
            reply,
            deadline: now + self.timeout,
        });
    }

    /// Answers the change `request_id` if it is the one waiting.
    pub(crate) fn answer(&mut self, request_id: u64, result: Result<(), RaftError>) {
        if self
            .pending
            .as_ref()
            .is_some_and(|p| p.request_id == request_id)
        {
            if let Some(pending) = self.pending.take() {
                let _ = pending.reply.send(result);
            }
        }
    }

    /// An empty entry at `index` was applied: if its context is the marker
    /// of the change still waiting, the leader replaced that change.
    pub(crate) fn on_marker(&mut self, context: &[u8], index: u64) {
        let Some(request_id) = change_marker_id(context) else {
            return;
        };
        if self
            .pending
            .as_ref()
            .is_some_and(|p| p.request_id == request_id)
        {
            warn!(
                node = self.node,
                request_id,
                index,
                "the leader dropped this membership change: another one was in progress"
            );
            self.answer(request_id, Err(RaftError::MembershipChangeInProgress));
        }
    }

    /// Times out the change in flight once `now` passed its deadline.
    pub(crate) fn expire(&mut self, now: Instant) {
        if self.pending.as_ref().is_some_and(|p| now >= p.deadline) {
            if let Some(pending) = self.pending.take() {
                let _ = pending.reply.send(Err(RaftError::Timeout {
                    timeout_ms: self.timeout.as_millis() as u64,
                }));
            }
        }
    }

    /// Answers the change in flight with `error` (the loop is stopping).
    pub(crate) fn fail(&mut self, error: RaftError) {
        if let Some(pending) = self.pending.take() {
            let _ = pending.reply.send(Err(error));
        }
    }

    /// Member `id` was added at `url`. The transport ignores this node's own
    /// id, so every member goes through it unfiltered.
    pub(crate) fn added(&mut self, id: u64, url: String, outbox: &dyn Outbox) {
        if let Err(e) = outbox.add_peer(id, &url) {
            warn!(node = self.node, peer = id, %url, error = %e, "cannot reach new member");
        }
        self.members.insert(id, url);
    }

    /// Member `id` was removed by the change at `index`.
    pub(crate) fn removed(&mut self, id: u64, index: u64, outbox: &dyn Outbox) {
        self.members.remove(&id);
        if id != self.node {
            outbox.remove_peer_at(id, index);
        }
    }

    /// Replaces the members (from a snapshot at `index`) and the outbox's
    /// peers. A member missing from the snapshot was removed at or before
    /// `index`.
    pub(crate) fn replace(
        &mut self,
        members: BTreeMap<u64, String>,
        index: u64,
        outbox: &dyn Outbox,
    ) {
        for old in self.members.keys() {
            if !members.contains_key(old) && *old != self.node {
                outbox.remove_peer_at(*old, index);
            }
        }
        for (id, url) in &members {
            if self.members.get(id) != Some(url) {
                if let Err(e) = outbox.add_peer(*id, url) {
                    warn!(node = self.node, peer = id, %url, error = %e, "bad peer URL in snapshot");
                }
            }
        }
        self.members = members;
    }
}

/// A change that the current configuration (`voters`) rules out.
fn check_change(change: &MembershipChange, voters: &[u64]) -> Result<(), RaftError> {
    match change {
        MembershipChange::AddNode { id, peer_url } => {
            if *id == 0 {
                return Err(RaftError::InvalidMembership("node id 0 is invalid".into()));
            }
            if voters.contains(id) {
                return Err(RaftError::InvalidMembership(format!(
                    "node {id} is already a member"
                )));
            }
            transport::validate_peer_url(peer_url)
                .map_err(|e| RaftError::InvalidMembership(e.to_string()))
        }
        MembershipChange::RemoveNode { id } => {
            if !voters.contains(id) {
                return Err(RaftError::InvalidMembership(format!(
                    "node {id} is not a member"
                )));
            }
            if voters.len() == 1 {
                return Err(RaftError::InvalidMembership(
                    "cannot remove the last member".into(),
                ));
            }
            Ok(())
        }
    }
}

/// Context of the empty entry proposed right after a membership change: a
/// tag and the change's request id.
pub(crate) fn change_marker(request_id: u64) -> Vec<u8> {
    [CHANGE_MARKER_TAG.as_slice(), &request_id.to_be_bytes()].concat()
}

/// The request id in a marker's context, if it is one.
fn change_marker_id(context: &[u8]) -> Option<u64> {
    let id = context.strip_prefix(CHANGE_MARKER_TAG.as_slice())?;
    Some(u64::from_be_bytes(id.try_into().ok()?))
}

/// Tag of a membership change marker's context.
const CHANGE_MARKER_TAG: &[u8; 8] = b"ccmarker";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_markers_round_trip() {
        assert_eq!(change_marker_id(&change_marker(42)), Some(42));
        assert_eq!(change_marker_id(b""), None);
        assert_eq!(change_marker_id(b"ccmarker1"), None);
    }

    #[test]
    fn one_change_at_a_time_answered_by_apply_marker_or_timeout() {
        let start = Instant::now();
        let mut membership = Membership::new(1, BTreeMap::new(), 100, Duration::from_secs(5));
        let add = MembershipChange::AddNode {
            id: 4,
            peer_url: "http://127.0.0.1:4".into(),
        };
        let cc = membership.conf_change(&add, &[1, 2, 3]).unwrap();
        assert_eq!((cc.id, cc.node_id), (101, 4));
        let (reply, mut answer) = oneshot::channel();
        membership.proposed(cc.id, reply, start);
        assert!(matches!(
            membership.conf_change(&add, &[1, 2, 3]),
            Err(RaftError::MembershipChangeInProgress)
        ));
        membership.answer(cc.id + 1, Ok(()));
        assert!(membership.is_pending(), "another request's apply");
        membership.on_marker(&change_marker(cc.id), 9);
        assert!(matches!(
            answer.try_recv(),
            Ok(Err(RaftError::MembershipChangeInProgress))
        ));
        let cc = membership.conf_change(&add, &[1, 2, 3]).unwrap();
        let (reply, mut answer) = oneshot::channel();
        membership.proposed(cc.id, reply, start);
        membership.expire(start + Duration::from_secs(4));
        assert!(membership.is_pending());
        membership.expire(start + Duration::from_secs(5));
        assert!(matches!(
            answer.try_recv(),
            Ok(Err(RaftError::Timeout { .. }))
        ));
        for (change, voters) in [
            (MembershipChange::RemoveNode { id: 1 }, vec![1]),
            (MembershipChange::RemoveNode { id: 9 }, vec![1, 2]),
            (add.clone(), vec![1, 4]),
        ] {
            assert!(matches!(
                membership.conf_change(&change, &voters),
                Err(RaftError::InvalidMembership(_))
            ));
        }
    }
}
