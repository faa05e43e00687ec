//! Sanity checks on peer messages before they reach `RawNode::step`.
//!
//! raft-rs trusts its input and panics on some inconsistent messages (etcd's
//! fuzzing found the same class of bugs in its raft): a heartbeat committing
//! beyond the local log, an append whose previous entry has term 0 far
//! beyond the log, indices that overflow, a term near `u64::MAX` (raft adds
//! one to it when campaigning), an empty forwarded proposal. A message that
//! fails these checks is dropped with a log line; it never reaches raft.
//! `fuzz_tests.rs` feeds random messages through these checks into a node.

use raft::eraftpb::{ConfState, EntryType, Message, MessageType};

use crate::codec::check_envelope;

/// Largest term or index a peer message may carry. A real cluster never
/// gets near it (2^62 entries or elections), and raft-rs adds to terms and
/// indices without overflow checks.
pub(crate) const TERM_INDEX_MAX: u64 = 1 << 62;

/// Why a peer message was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Rejection {
    WrongRecipient {
        to: u64,
    },
    BadSender {
        from: u64,
    },
    NotAMember {
        from: u64,
    },
    LocalMessageType(i32),
    UnknownMessageType(i32),
    Unsupported(i32),
    UnknownEntryType(i32),
    OutOfRange {
        field: &'static str,
        value: u64,
    },
    /// A term missing where raft always sets one, or set where it never does.
    MissingTerm,
    EntriesNotContiguous {
        at: u64,
    },
    EntryFromTheFuture {
        index: u64,
        term: u64,
    },
    EntryTermsOutOfOrder {
        index: u64,
        term: u64,
    },
    PreviousTermMissing {
        index: u64,
    },
    CommitBeyondLog {
        commit: u64,
        last_index: u64,
    },
    AckBeyondLog {
        index: u64,
        last_index: u64,
    },
    EmptyProposal,
    BadReadContext {
        entries: usize,
    },
    SnapshotMissing,
    SnapshotWithoutThisNode,
    /// A vote request to a node that has no configuration yet (it started
    /// empty to join and has heard from no leader).
    VoteWithoutConfiguration,
    BadSnapshotData(String),
}

/// Checks `msg` received by node `self_id` whose configuration is
/// `conf_state` (empty for a node that has not joined yet, which accepts any
/// sender) and whose log ends at `last_index`.
pub(crate) fn check_peer_message(
    self_id: u64,
    conf_state: &ConfState,
    last_index: u64,
    msg: &Message,
) -> Result<(), Rejection> {
    if msg.to != self_id {
        return Err(Rejection::WrongRecipient { to: msg.to });
    }
    if msg.from == 0 || msg.from == self_id {
        return Err(Rejection::BadSender { from: msg.from });
    }
    let msg_type =
        MessageType::from_i32(msg.msg_type).ok_or(Rejection::UnknownMessageType(msg.msg_type))?;
    if is_local(msg_type) {
        return Err(Rejection::LocalMessageType(msg.msg_type));
    }
    // raftnode never transfers leadership; raft-rs panics when it forwards
    // a transfer request it received from a peer.
    if matches!(
        msg_type,
        MessageType::MsgTransferLeader | MessageType::MsgTimeoutNow
    ) {
        return Err(Rejection::Unsupported(msg.msg_type));
    }
    if !sender_allowed(conf_state, msg.from) {
        return Err(Rejection::NotAMember { from: msg.from });
    }
    // A node that joined with an empty log knows neither the members nor
    // the log it may be missing: its vote would let any candidate, however
    // stale, count it towards a quorum (its id may even be a member that
    // was removed and added again with a fresh disk). It votes once a
    // leader gave it a configuration.
    if is_unconfigured(conf_state)
        && matches!(
            msg_type,
            MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
        )
    {
        return Err(Rejection::VoteWithoutConfiguration);
    }
    check_ranges(msg)?;
    // raft-proto's `get_entry_type` panics on an unknown type.
    if let Some(entry) = msg
        .entries
        .iter()
        .find(|entry| EntryType::from_i32(entry.entry_type).is_none())
    {
        return Err(Rejection::UnknownEntryType(entry.entry_type));
    }
    // raft-rs sends every message with its term except forwarded proposals
    // and read requests, which carry none. A term of 0 on another message
    // would make raft treat it as local (an append from "the current
    // leader"); a term on a forwarded one makes raft panic when it forwards
    // it again.
    let forwarded = matches!(
        msg_type,
        MessageType::MsgPropose | MessageType::MsgReadIndex
    );
    if (msg.term == 0) != forwarded {
        return Err(Rejection::MissingTerm);
    }
    match msg_type {
        MessageType::MsgAppend => check_append(msg)?,
        MessageType::MsgHeartbeat if msg.commit > last_index => {
            return Err(Rejection::CommitBeyondLog {
                commit: msg.commit,
                last_index,
            })
        }
        MessageType::MsgAppendResponse if !msg.reject && msg.index > last_index => {
            return Err(Rejection::AckBeyondLog {
                index: msg.index,
                last_index,
            })
        }
        MessageType::MsgPropose if msg.entries.is_empty() => return Err(Rejection::EmptyProposal),
        MessageType::MsgReadIndex | MessageType::MsgReadIndexResp if msg.entries.len() != 1 => {
            return Err(Rejection::BadReadContext {
                entries: msg.entries.len(),
            })
        }
        MessageType::MsgSnapshot => check_snapshot(self_id, msg)?,
        _ => {}
    }
    Ok(())
}

/// Every term and index is at most [`TERM_INDEX_MAX`].
fn check_ranges(msg: &Message) -> Result<(), Rejection> {
    let mut fields = vec![
        ("term", msg.term),
        ("log_term", msg.log_term),
        ("index", msg.index),
        ("commit", msg.commit),
        ("commit_term", msg.commit_term),
        ("reject_hint", msg.reject_hint),
        ("request_snapshot", msg.request_snapshot),
    ];
    for entry in &msg.entries {
        fields.push(("entry index", entry.index));
        fields.push(("entry term", entry.term));
    }
    if let Some(snapshot) = &msg.snapshot {
        fields.push(("snapshot index", snapshot.get_metadata().index));
        fields.push(("snapshot term", snapshot.get_metadata().term));
    }
    match fields
        .into_iter()
        .find(|(_, value)| *value > TERM_INDEX_MAX)
    {
        Some((field, value)) => Err(Rejection::OutOfRange { field, value }),
        None => Ok(()),
    }
}

/// An append's entries follow `index` without gaps, with terms that never
/// decrease, start at `log_term` or later and do not exceed the message's.
fn check_append(msg: &Message) -> Result<(), Rejection> {
    // Raft gives every entry after index 0 a term of at least 1; raft-rs
    // reads term 0 for any index beyond its log, so (index, 0) would match.
    if msg.index > 0 && msg.log_term == 0 {
        return Err(Rejection::PreviousTermMissing { index: msg.index });
    }
    if msg.log_term > msg.term {
        return Err(Rejection::EntryFromTheFuture {
            index: msg.index,
            term: msg.log_term,
        });
    }
    let mut previous_term = msg.log_term;
    for (i, entry) in msg.entries.iter().enumerate() {
        let expected = (i as u64)
            .checked_add(1)
            .and_then(|offset| msg.index.checked_add(offset));
        if expected != Some(entry.index) {
            return Err(Rejection::EntriesNotContiguous { at: entry.index });
        }
        if entry.term > msg.term {
            return Err(Rejection::EntryFromTheFuture {
                index: entry.index,
                term: entry.term,
            });
        }
        if entry.term == 0 || entry.term < previous_term {
            return Err(Rejection::EntryTermsOutOfOrder {
                index: entry.index,
                term: entry.term,
            });
        }
        previous_term = entry.term;
    }
    Ok(())
}

/// A snapshot must name this node in its configuration and carry an
/// envelope this version can restore: a snapshot raft accepted is
/// installed, so anything that would fail later must fail here.
fn check_snapshot(self_id: u64, msg: &Message) -> Result<(), Rejection> {
    let Some(snapshot) = &msg.snapshot else {
        return Err(Rejection::SnapshotMissing);
    };
    let meta = snapshot.get_metadata();
    if meta.index == 0 || meta.term == 0 {
        return Err(Rejection::SnapshotMissing);
    }
    if meta.term > msg.term {
        return Err(Rejection::EntryFromTheFuture {
            index: meta.index,
            term: meta.term,
        });
    }
    let conf_state = meta.get_conf_state();
    if !(conf_state.voters.contains(&self_id) || conf_state.learners.contains(&self_id)) {
        return Err(Rejection::SnapshotWithoutThisNode);
    }
    let ids = [
        &conf_state.voters,
        &conf_state.learners,
        &conf_state.voters_outgoing,
        &conf_state.learners_next,
    ];
    if ids.iter().any(|ids| ids.contains(&0)) {
        return Err(Rejection::SnapshotWithoutThisNode);
    }
    check_envelope(&snapshot.data).map_err(Rejection::BadSnapshotData)
}

fn is_local(msg_type: MessageType) -> bool {
    matches!(
        msg_type,
        MessageType::MsgHup
            | MessageType::MsgBeat
            | MessageType::MsgUnreachable
            | MessageType::MsgSnapStatus
            | MessageType::MsgCheckQuorum
    )
}

fn is_unconfigured(conf_state: &ConfState) -> bool {
    conf_state.voters.is_empty() && conf_state.learners.is_empty()
}

fn sender_allowed(conf_state: &ConfState, from: u64) -> bool {
    is_unconfigured(conf_state)
        || conf_state.voters.contains(&from)
        || conf_state.learners.contains(&from)
        || conf_state.voters_outgoing.contains(&from)
        || conf_state.learners_next.contains(&from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::Entry;

    fn conf() -> ConfState {
        ConfState {
            voters: vec![1, 2, 3],
            ..Default::default()
        }
    }

    fn append(from: u64, index: u64, entries: &[(u64, u64)]) -> Message {
        Message {
            msg_type: MessageType::MsgAppend as i32,
            to: 1,
            from,
            term: 5,
            index,
            log_term: if index > 0 { 4 } else { 0 },
            entries: entries
                .iter()
                .map(|&(index, term)| Entry {
                    index,
                    term,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_node_without_a_configuration_refuses_vote_requests_but_takes_appends() {
        let empty = ConfState::default();
        for vote in [MessageType::MsgRequestVote, MessageType::MsgRequestPreVote] {
            let request = Message {
                msg_type: vote as i32,
                to: 1,
                from: 2,
                term: 5,
                index: 10,
                log_term: 4,
                ..Default::default()
            };
            assert_eq!(
                check_peer_message(1, &empty, 0, &request),
                Err(Rejection::VoteWithoutConfiguration)
            );
            assert_eq!(check_peer_message(1, &conf(), 100, &request), Ok(()));
        }
        assert_eq!(check_peer_message(1, &empty, 0, &append(2, 0, &[])), Ok(()));
    }

    #[test]
    fn a_well_formed_append_passes() {
        assert_eq!(
            check_peer_message(1, &conf(), 100, &append(2, 10, &[(11, 5), (12, 5)])),
            Ok(())
        );
    }

    #[test]
    fn malformed_messages_are_refused() {
        let c = conf();
        assert_eq!(
            check_peer_message(2, &c, 100, &append(2, 10, &[])),
            Err(Rejection::WrongRecipient { to: 1 })
        );
        assert_eq!(
            check_peer_message(1, &c, 100, &append(9, 10, &[])),
            Err(Rejection::NotAMember { from: 9 })
        );
        assert_eq!(
            check_peer_message(1, &c, 100, &append(0, 10, &[])),
            Err(Rejection::BadSender { from: 0 })
        );
        assert_eq!(
            check_peer_message(1, &c, 100, &append(2, 10, &[(11, 5), (13, 5)])),
            Err(Rejection::EntriesNotContiguous { at: 13 })
        );
        assert_eq!(
            check_peer_message(1, &c, 100, &append(2, 10, &[(11, 6)])),
            Err(Rejection::EntryFromTheFuture { index: 11, term: 6 })
        );
        let mut hup = append(2, 0, &[]);
        hup.msg_type = MessageType::MsgHup as i32;
        assert!(matches!(
            check_peer_message(1, &c, 100, &hup),
            Err(Rejection::LocalMessageType(_))
        ));
        let mut unknown = append(2, 0, &[]);
        unknown.msg_type = 999;
        assert_eq!(
            check_peer_message(1, &c, 100, &unknown),
            Err(Rejection::UnknownMessageType(999))
        );
        let mut snap = append(2, 0, &[]);
        snap.msg_type = MessageType::MsgSnapshot as i32;
        assert_eq!(
            check_peer_message(1, &c, 100, &snap),
            Err(Rejection::SnapshotMissing)
        );
    }

    #[test]
    fn values_raft_would_panic_or_overflow_on_are_refused() {
        let c = conf();
        let mut heartbeat = append(2, 0, &[]);
        heartbeat.msg_type = MessageType::MsgHeartbeat as i32;
        heartbeat.commit = 1 << 40;
        assert_eq!(
            check_peer_message(1, &c, 100, &heartbeat),
            Err(Rejection::CommitBeyondLog {
                commit: 1 << 40,
                last_index: 100
            })
        );
        heartbeat.commit = 100;
        assert_eq!(check_peer_message(1, &c, 100, &heartbeat), Ok(()));

        let mut far = append(2, u64::MAX - 1, &[]);
        far.log_term = 0;
        assert!(matches!(
            check_peer_message(1, &c, 100, &far),
            Err(Rejection::OutOfRange { field: "index", .. })
        ));
        let mut no_prev_term = append(2, 1000, &[]);
        no_prev_term.log_term = 0;
        assert_eq!(
            check_peer_message(1, &c, 100, &no_prev_term),
            Err(Rejection::PreviousTermMissing { index: 1000 })
        );
        let mut wraps = append(2, TERM_INDEX_MAX, &[(TERM_INDEX_MAX + 1, 5)]);
        wraps.entries[0].index = 0;
        assert_eq!(
            check_peer_message(1, &c, 100, &wraps),
            Err(Rejection::EntriesNotContiguous { at: 0 })
        );
        assert_eq!(
            check_peer_message(1, &c, 100, &append(2, 0, &[(0, 5)])),
            Err(Rejection::EntriesNotContiguous { at: 0 })
        );
        assert_eq!(
            check_peer_message(1, &c, 100, &append(2, 10, &[(11, 5), (12, 4)])),
            Err(Rejection::EntryTermsOutOfOrder { index: 12, term: 4 })
        );
        let mut huge_term = append(2, 10, &[]);
        huge_term.term = u64::MAX;
        assert!(matches!(
            check_peer_message(1, &c, 100, &huge_term),
            Err(Rejection::OutOfRange { field: "term", .. })
        ));
        let mut no_term = append(2, 0, &[]);
        no_term.term = 0;
        assert_eq!(
            check_peer_message(1, &c, 100, &no_term),
            Err(Rejection::MissingTerm)
        );
        let mut ack = append(2, 101, &[]);
        ack.msg_type = MessageType::MsgAppendResponse as i32;
        assert_eq!(
            check_peer_message(1, &c, 100, &ack),
            Err(Rejection::AckBeyondLog {
                index: 101,
                last_index: 100
            })
        );
        ack.reject = true;
        assert_eq!(check_peer_message(1, &c, 100, &ack), Ok(()));
        let mut proposal = append(2, 0, &[]);
        proposal.msg_type = MessageType::MsgPropose as i32;
        proposal.term = 0;
        assert_eq!(
            check_peer_message(1, &c, 100, &proposal),
            Err(Rejection::EmptyProposal)
        );
        proposal.entries = vec![Entry {
            entry_type: 7,
            ..Default::default()
        }];
        assert_eq!(
            check_peer_message(1, &c, 100, &proposal),
            Err(Rejection::UnknownEntryType(7))
        );
    }

    #[test]
    fn snapshots_must_name_this_node_and_carry_a_readable_envelope() {
        use raft::eraftpb::Snapshot;
        let c = conf();
        let good = crate::disk::envelope(&Default::default(), Vec::new(), vec![1, 2, 3]);
        let snapshot = |voters: Vec<u64>, data: Vec<u8>| {
            let mut msg = append(2, 0, &[]);
            msg.msg_type = MessageType::MsgSnapshot as i32;
            let mut snapshot = Snapshot {
                data,
                ..Default::default()
            };
            snapshot.mut_metadata().index = 50;
            snapshot.mut_metadata().term = 5;
            snapshot.mut_metadata().mut_conf_state().voters = voters;
            msg.snapshot = Some(snapshot);
            msg
        };
        assert_eq!(
            check_peer_message(1, &c, 10, &snapshot(vec![1, 2, 3], good.clone())),
            Ok(())
        );
        assert_eq!(
            check_peer_message(1, &c, 10, &snapshot(vec![2, 3], good)),
            Err(Rejection::SnapshotWithoutThisNode)
        );
        assert!(matches!(
            check_peer_message(1, &c, 10, &snapshot(vec![1, 2, 3], vec![0xff; 3])),
            Err(Rejection::BadSnapshotData(_))
        ));
    }

    #[test]
    fn a_node_that_has_not_joined_accepts_any_sender() {
        assert_eq!(
            check_peer_message(4, &ConfState::default(), 0, &{
                let mut m = append(1, 0, &[]);
                m.to = 4;
                m
            }),
            Ok(())
        );
    }
}
