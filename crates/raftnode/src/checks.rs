//! Sanity checks on peer messages before they reach `RawNode::step`.
//!
//! raft-rs trusts its input and panics on some inconsistent messages (etcd's
//! fuzzing found the same class of bugs in its raft). A message that fails
//! these checks is dropped with a log line; it never reaches raft.

use raft::eraftpb::{ConfState, Message, MessageType};

/// Why a peer message was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Rejection {
    WrongRecipient { to: u64 },
    BadSender { from: u64 },
    NotAMember { from: u64 },
    LocalMessageType(i32),
    UnknownMessageType(i32),
    EntriesNotContiguous { at: u64 },
    EntryFromTheFuture { index: u64, term: u64 },
    SnapshotMissing,
}

/// Checks `msg` received by node `self_id` whose configuration is
/// `conf_state` (empty for a node that has not joined yet, which accepts any
/// sender).
pub(crate) fn check_peer_message(
    self_id: u64,
    conf_state: &ConfState,
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
    if !sender_allowed(conf_state, msg.from) {
        return Err(Rejection::NotAMember { from: msg.from });
    }
    for (i, entry) in msg.entries.iter().enumerate() {
        if msg_type == MessageType::MsgAppend && entry.index != msg.index + 1 + i as u64 {
            return Err(Rejection::EntriesNotContiguous { at: entry.index });
        }
        if entry.term > msg.term && msg.term != 0 {
            return Err(Rejection::EntryFromTheFuture {
                index: entry.index,
                term: entry.term,
            });
        }
    }
    if msg_type == MessageType::MsgSnapshot && msg.snapshot.is_none() {
        return Err(Rejection::SnapshotMissing);
    }
    Ok(())
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

fn sender_allowed(conf_state: &ConfState, from: u64) -> bool {
    let unconfigured = conf_state.voters.is_empty() && conf_state.learners.is_empty();
    unconfigured
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
    fn a_well_formed_append_passes() {
        assert_eq!(
            check_peer_message(1, &conf(), &append(2, 10, &[(11, 5), (12, 5)])),
            Ok(())
        );
    }

    #[test]
    fn malformed_messages_are_refused() {
        let c = conf();
        assert_eq!(
            check_peer_message(2, &c, &append(2, 10, &[])),
            Err(Rejection::WrongRecipient { to: 1 })
        );
        assert_eq!(
            check_peer_message(1, &c, &append(9, 10, &[])),
            Err(Rejection::NotAMember { from: 9 })
        );
        assert_eq!(
            check_peer_message(1, &c, &append(0, 10, &[])),
            Err(Rejection::BadSender { from: 0 })
        );
        assert_eq!(
            check_peer_message(1, &c, &append(2, 10, &[(11, 5), (13, 5)])),
            Err(Rejection::EntriesNotContiguous { at: 13 })
        );
        assert_eq!(
            check_peer_message(1, &c, &append(2, 10, &[(11, 6)])),
            Err(Rejection::EntryFromTheFuture { index: 11, term: 6 })
        );
        let mut hup = append(2, 0, &[]);
        hup.msg_type = MessageType::MsgHup as i32;
        assert!(matches!(
            check_peer_message(1, &c, &hup),
            Err(Rejection::LocalMessageType(_))
        ));
        let mut unknown = append(2, 0, &[]);
        unknown.msg_type = 999;
        assert_eq!(
            check_peer_message(1, &c, &unknown),
            Err(Rejection::UnknownMessageType(999))
        );
        let mut snap = append(2, 0, &[]);
        snap.msg_type = MessageType::MsgSnapshot as i32;
        assert_eq!(
            check_peer_message(1, &c, &snap),
            Err(Rejection::SnapshotMissing)
        );
    }

    #[test]
    fn a_node_that_has_not_joined_accepts_any_sender() {
        assert_eq!(
            check_peer_message(4, &ConfState::default(), &{
                let mut m = append(1, 0, &[]);
                m.to = 4;
                m
            }),
            Ok(())
        );
    }
}
