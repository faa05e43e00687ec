//! Membership: the members' peer URLs and published attributes, and the one
//! membership change in flight.
//!
//! Changes are raft-rs v1 conf changes whose context is the member's peer
//! URL: `AddNode` adds a voter, or promotes a learner, or (of an existing
//! voter) updates its peer URL; `AddLearnerNode` adds a learner or updates a
//! learner's URL; `RemoveNode` removes either. The peer URLs live in every
//! snapshot's envelope, so they survive compaction and restarts.
//!
//! A learner is promoted only when the leader sees its log within
//! [`LEARNER_READY_PERCENT`] of its own (etcd's rule). Only the leader knows
//! the learners' progress: it checks its own promotions when proposing and
//! screens those that followers forward ([`screen_promotions`]): a promotion
//! that is not ready becomes an empty entry naming the request
//! ([`not_ready_marker`]), which tells the follower why once applied.
//!
//! Each member publishes its name and client URLs ([`MemberAttributes`])
//! once it runs, as an empty normal entry whose context carries them
//! ([`attributes_context`]), as etcd members publish theirs; they are kept
//! in the snapshot envelope too.
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

use prost::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeType, Entry, EntryType};
use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::codec::AttributesRecord;
use crate::outbox::Outbox;
use crate::{MemberError, MembershipChange, RaftError, LEARNER_READY_PERCENT, MAX_LEARNERS};

/// What a member tells the others about itself once it runs: etcd's
/// `Attributes` (name and client URLs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberAttributes {
    /// The member's name (raftkv's default is `raftkv-<id>`).
    pub name: String,
    /// Where clients reach it, e.g. `http://127.0.0.1:2379`.
    pub client_urls: Vec<String>,
}

impl MemberAttributes {
    /// Nothing to publish.
    pub fn is_empty(&self) -> bool {
        self.name.is_empty() && self.client_urls.is_empty()
    }
}

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
    /// What members published about themselves.
    attributes: BTreeMap<u64, MemberAttributes>,
    /// This node's own attributes, to publish.
    own: MemberAttributes,
    /// When this node may propose its attributes again (None: now).
    publish_after: Option<Instant>,
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
            attributes: BTreeMap::new(),
            own: MemberAttributes::default(),
            publish_after: None,
            pending: None,
            next_request_id: nonce,
            timeout,
        }
    }

    /// This node's attributes (published once it runs) and what the
    /// members published so far (from the newest snapshot).
    pub(crate) fn with_attributes(
        mut self,
        own: MemberAttributes,
        known: Vec<AttributesRecord>,
    ) -> Membership {
        self.own = own;
        self.attributes = attributes_map(known);
        self
    }

    pub(crate) fn members(&self) -> &BTreeMap<u64, String> {
        &self.members
    }

    pub(crate) fn attributes(&self) -> &BTreeMap<u64, MemberAttributes> {
        &self.attributes
    }

    /// The attributes as the snapshot envelope stores them.
    pub(crate) fn attribute_records(&self) -> Vec<AttributesRecord> {
        self.attributes
            .iter()
            .map(|(id, a)| AttributesRecord {
                id: *id,
                name: a.name.clone(),
                client_urls: a.client_urls.clone(),
            })
            .collect()
    }

    /// The context of an entry publishing this node's attributes, when
    /// they differ from what the log says and a try is due at `now`; the
    /// next try is then one request timeout later.
    pub(crate) fn attributes_to_publish(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.own.is_empty() || self.attributes.get(&self.node) == Some(&self.own) {
            return None;
        }
        if self.publish_after.is_some_and(|after| now < after) {
            return None;
        }
        self.publish_after = Some(now + self.timeout);
        Some(attributes_context(self.node, &self.own))
    }

    pub(crate) fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Checks `change` against the current `voters` and `learners` and
    /// returns the conf change to propose, with a fresh request id. The
    /// readiness of a promoted learner is the leader's to check.
    pub(crate) fn conf_change(
        &mut self,
        change: &MembershipChange,
        voters: &[u64],
        learners: &[u64],
    ) -> Result<ConfChange, RaftError> {
        if self.pending.is_some() {
            return Err(RaftError::MembershipChangeInProgress);
        }
        check_change(change, voters, learners, &self.members)?;
        self.next_request_id += 1;
        let id = self.next_request_id;
        let (change_type, node_id, url) = match change {
            MembershipChange::AddNode { id, peer_url } => {
                (ConfChangeType::AddNode, *id, peer_url.clone())
            }
            MembershipChange::AddLearner { id, peer_url } => {
                (ConfChangeType::AddLearnerNode, *id, peer_url.clone())
            }
            MembershipChange::RemoveNode { id } => (ConfChangeType::RemoveNode, *id, String::new()),
            MembershipChange::PromoteLearner { id } => (
                ConfChangeType::AddNode,
                *id,
                self.members.get(id).cloned().unwrap_or_default(),
            ),
            MembershipChange::UpdatePeerUrl { id, peer_url } => {
                let change_type = if learners.contains(id) {
                    ConfChangeType::AddLearnerNode
                } else {
                    ConfChangeType::AddNode
                };
                (change_type, *id, peer_url.clone())
            }
        };
        Ok(ConfChange {
            change_type: change_type as i32,
            node_id,
            context: url.into_bytes(),
            id,
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
    /// An empty entry may also refuse a promotion that was not ready, or
    /// publish a member's attributes.
    pub(crate) fn on_marker(&mut self, context: &[u8], index: u64) {
        if let Some(request_id) = tagged_id(context, NOT_READY_TAG) {
            if self
                .pending
                .as_ref()
                .is_some_and(|p| p.request_id == request_id)
            {
                info!(
                    node = self.node,
                    request_id, index, "promotion refused: learner not ready"
                );
                self.answer(request_id, Err(MemberError::LearnerNotReady.into()));
            }
            return;
        }
        if let Some(record) = context
            .strip_prefix(ATTRIBUTES_TAG.as_slice())
            .and_then(|bytes| AttributesRecord::decode(bytes).ok())
        {
            info!(node = self.node, member = record.id, name = %record.name, client_urls = ?record.client_urls, index, "member attributes published");
            self.attributes.insert(
                record.id,
                MemberAttributes {
                    name: record.name,
                    client_urls: record.client_urls,
                },
            );
            return;
        }
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
        self.attributes.remove(&id);
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
        attributes: Vec<AttributesRecord>,
        index: u64,
        outbox: &dyn Outbox,
    ) {
        self.attributes = attributes_map(attributes);
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

/// A change that the current configuration (`voters`, `learners`, peer
/// URLs by id) rules out.
fn check_change(
    change: &MembershipChange,
    voters: &[u64],
    learners: &[u64],
    urls: &BTreeMap<u64, String>,
) -> Result<(), RaftError> {
    let is_member = |id: &u64| voters.contains(id) || learners.contains(id);
    let check_url = |id: u64, url: &str| -> Result<(), RaftError> {
        transport::validate_peer_url(url)
            .map_err(|e| RaftError::InvalidMembership(e.to_string()))?;
        if urls
            .iter()
            .any(|(other, other_url)| *other != id && is_member(other) && other_url == url)
        {
            return Err(MemberError::PeerUrlExists.into());
        }
        // A member whose scheme differs from the others' could never talk
        // to them: its peers would dial it in the wrong protocol, and it
        // refuses to start with mixed schemes.
        let scheme = |url: &str| url.split_once("://").map(|(scheme, _)| scheme.to_string());
        if let Some(other_url) = urls
            .iter()
            .find(|(other, other_url)| {
                **other != id && is_member(other) && scheme(other_url) != scheme(url)
            })
            .map(|(_, other_url)| other_url)
        {
            return Err(RaftError::InvalidMembership(format!(
                "peer URL {url} does not use the scheme of the cluster's members \
                 (such as {other_url}): every member's peer URL must be http:// or every one https://"
            )));
        }
        Ok(())
    };
    match change {
        MembershipChange::AddNode { id, peer_url }
        | MembershipChange::AddLearner { id, peer_url } => {
            if *id == 0 {
                return Err(RaftError::InvalidMembership("node id 0 is invalid".into()));
            }
            if is_member(id) {
                return Err(MemberError::IdExists.into());
            }
            if matches!(change, MembershipChange::AddLearner { .. })
                && learners.len() >= MAX_LEARNERS
            {
                return Err(MemberError::TooManyLearners.into());
            }
            check_url(*id, peer_url)
        }
        MembershipChange::RemoveNode { id } => {
            if !is_member(id) {
                return Err(MemberError::NotFound.into());
            }
            if voters == [*id] {
                return Err(MemberError::LastVoter.into());
            }
            Ok(())
        }
        MembershipChange::PromoteLearner { id } => {
            if learners.contains(id) {
                Ok(())
            } else if voters.contains(id) {
                Err(MemberError::NotLearner.into())
            } else {
                Err(MemberError::NotFound.into())
            }
        }
        MembershipChange::UpdatePeerUrl { id, peer_url } => {
            if !is_member(id) {
                return Err(MemberError::NotFound.into());
            }
            check_url(*id, peer_url)
        }
    }
}

/// Whether a learner whose log the leader saw up to `learner_matched` may
/// be promoted by a leader whose own log reaches `leader_matched` (etcd's
/// `isLearnerReady`: at least [`LEARNER_READY_PERCENT`] of it).
pub(crate) fn learner_ready(learner_matched: u64, leader_matched: u64) -> bool {
    u128::from(learner_matched) * 100
        >= u128::from(leader_matched) * u128::from(LEARNER_READY_PERCENT)
}

/// On the leader, in a proposal forwarded by a follower: each conf change
/// promoting one of `learners` that `ready` says is not ready is replaced by
/// an empty entry naming its request ([`not_ready_marker`]). Returns how
/// many were replaced.
pub(crate) fn screen_promotions(
    entries: &mut [Entry],
    learners: &[u64],
    ready: impl Fn(u64) -> bool,
) -> usize {
    let mut refused = 0;
    for entry in entries.iter_mut() {
        if entry.get_entry_type() != EntryType::EntryConfChange {
            continue;
        }
        let Ok(cc) = ConfChange::decode(entry.data.as_slice()) else {
            continue;
        };
        if cc.get_change_type() == ConfChangeType::AddNode
            && learners.contains(&cc.node_id)
            && !ready(cc.node_id)
        {
            *entry = Entry {
                entry_type: EntryType::EntryNormal as i32,
                context: not_ready_marker(cc.id),
                ..Default::default()
            };
            refused += 1;
        }
    }
    refused
}

/// Context of the entry that replaces a promotion refused by the leader.
pub(crate) fn not_ready_marker(request_id: u64) -> Vec<u8> {
    [NOT_READY_TAG.as_slice(), &request_id.to_be_bytes()].concat()
}

/// Context of the empty entry that publishes `node`'s attributes.
pub(crate) fn attributes_context(node: u64, attributes: &MemberAttributes) -> Vec<u8> {
    let record = AttributesRecord {
        id: node,
        name: attributes.name.clone(),
        client_urls: attributes.client_urls.clone(),
    };
    [ATTRIBUTES_TAG.as_slice(), &record.encode_to_vec()].concat()
}

fn attributes_map(records: Vec<AttributesRecord>) -> BTreeMap<u64, MemberAttributes> {
    records
        .into_iter()
        .map(|r| {
            (
                r.id,
                MemberAttributes {
                    name: r.name,
                    client_urls: r.client_urls,
                },
            )
        })
        .collect()
}

fn tagged_id(context: &[u8], tag: &[u8; 8]) -> Option<u64> {
    let id = context.strip_prefix(tag.as_slice())?;
    Some(u64::from_be_bytes(id.try_into().ok()?))
}

/// Tag of the context of a promotion the leader refused.
const NOT_READY_TAG: &[u8; 8] = b"ccnotrdy";
/// Tag of the context of a member's published attributes.
const ATTRIBUTES_TAG: &[u8; 8] = b"mbattrs1";

/// Context of the empty entry proposed right after a membership change: a
/// tag and the change's request id.
pub(crate) fn change_marker(request_id: u64) -> Vec<u8> {
    [CHANGE_MARKER_TAG.as_slice(), &request_id.to_be_bytes()].concat()
}

/// The request id in a marker's context, if it is one.
fn change_marker_id(context: &[u8]) -> Option<u64> {
    tagged_id(context, CHANGE_MARKER_TAG)
}

/// Tag of a membership change marker's context.
const CHANGE_MARKER_TAG: &[u8; 8] = b"ccmarker";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_url_must_use_the_scheme_of_the_other_members() {
        let urls: BTreeMap<u64, String> = [
            (1, "https://127.0.0.1:1".to_string()),
            (2, "https://127.0.0.1:2".to_string()),
        ]
        .into();
        let add = |peer_url: &str| MembershipChange::AddNode {
            id: 3,
            peer_url: peer_url.to_string(),
        };
        let error = check_change(&add("http://127.0.0.1:3"), &[1, 2], &[], &urls).unwrap_err();
        assert!(
            matches!(&error, RaftError::InvalidMembership(text) if text.contains("scheme")),
            "{error}"
        );
        assert!(check_change(&add("https://127.0.0.1:3"), &[1, 2], &[], &urls).is_ok());
        let learner = MembershipChange::AddLearner {
            id: 3,
            peer_url: "http://127.0.0.1:3".into(),
        };
        assert!(check_change(&learner, &[1, 2], &[], &urls).is_err());
        // An update of the only member may change its scheme (nothing to mismatch).
        let update = |id, peer_url: &str| MembershipChange::UpdatePeerUrl {
            id,
            peer_url: peer_url.to_string(),
        };
        let single: BTreeMap<u64, String> = [(1, "http://127.0.0.1:1".to_string())].into();
        assert!(check_change(&update(1, "https://127.0.0.1:1"), &[1], &[], &single).is_ok());
        assert!(check_change(&update(2, "http://127.0.0.1:2"), &[1, 2], &[], &urls).is_err());
    }

    #[test]
    fn a_learner_is_ready_at_ninety_percent_and_the_leader_screens_the_rest() {
        assert!(learner_ready(90, 100));
        assert!(!learner_ready(89, 100));
        assert!(learner_ready(0, 0));
        assert!(learner_ready(u64::MAX, u64::MAX), "no overflow");
        let promote = |node_id, id| Entry {
            entry_type: EntryType::EntryConfChange as i32,
            data: ConfChange {
                change_type: ConfChangeType::AddNode as i32,
                node_id,
                id,
                ..Default::default()
            }
            .encode_to_vec(),
            ..Default::default()
        };
        let marker = Entry {
            context: change_marker(5),
            ..Default::default()
        };
        // Learner 4 is not ready, learner 5 is; 6 is no learner (an update).
        let mut entries = vec![promote(4, 5), marker.clone(), promote(5, 6), promote(6, 7)];
        let refused = screen_promotions(&mut entries, &[4, 5], |id| id == 5);
        assert_eq!(refused, 1);
        assert_eq!(entries[0].get_entry_type(), EntryType::EntryNormal);
        assert_eq!(entries[0].context, not_ready_marker(5));
        assert!(entries[0].data.is_empty());
        assert_eq!(entries[1], marker);
        assert_eq!(entries[2], promote(5, 6));
        assert_eq!(entries[3], promote(6, 7));
        // The proposer hears why when the replacement is applied.
        let mut membership = Membership::new(1, BTreeMap::new(), 4, Duration::from_secs(5));
        let cc = membership
            .conf_change(&MembershipChange::PromoteLearner { id: 4 }, &[1], &[4])
            .unwrap();
        assert_eq!(cc.id, 5);
        let (reply, mut answer) = oneshot::channel();
        membership.proposed(cc.id, reply, Instant::now());
        membership.on_marker(&entries[0].context, 3);
        assert!(matches!(
            answer.try_recv(),
            Ok(Err(RaftError::Member(MemberError::LearnerNotReady)))
        ));
    }

    #[test]
    fn attributes_are_published_until_the_log_has_them() {
        let start = Instant::now();
        let own = MemberAttributes {
            name: "raftkv-1".into(),
            client_urls: vec!["http://127.0.0.1:2379".into()],
        };
        let mut membership = Membership::new(1, BTreeMap::new(), 0, Duration::from_secs(5))
            .with_attributes(own.clone(), Vec::new());
        let context = membership.attributes_to_publish(start).expect("due");
        assert_eq!(
            membership.attributes_to_publish(start),
            None,
            "not again at once"
        );
        assert!(membership
            .attributes_to_publish(start + Duration::from_secs(5))
            .is_some());
        membership.on_marker(&context, 7);
        assert_eq!(membership.attributes().get(&1), Some(&own));
        assert_eq!(
            membership.attributes_to_publish(start + Duration::from_secs(60)),
            None,
            "the log has them"
        );
        assert_eq!(membership.attribute_records()[0].name, "raftkv-1");
    }

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
        let cc = membership.conf_change(&add, &[1, 2, 3], &[]).unwrap();
        assert_eq!((cc.id, cc.node_id), (101, 4));
        let (reply, mut answer) = oneshot::channel();
        membership.proposed(cc.id, reply, start);
        assert!(matches!(
            membership.conf_change(&add, &[1, 2, 3], &[]),
            Err(RaftError::MembershipChangeInProgress)
        ));
        membership.answer(cc.id + 1, Ok(()));
        assert!(membership.is_pending(), "another request's apply");
        membership.on_marker(&change_marker(cc.id), 9);
        assert!(matches!(
            answer.try_recv(),
            Ok(Err(RaftError::MembershipChangeInProgress))
        ));
        let cc = membership.conf_change(&add, &[1, 2, 3], &[]).unwrap();
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
                membership.conf_change(&change, &voters, &[]),
                Err(RaftError::Member(_))
            ));
        }
    }
}
