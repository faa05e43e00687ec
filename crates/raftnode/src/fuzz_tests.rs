//! Property test: random peer messages, filtered by the checks and stepped
//! into a follower (and whatever it becomes), never panic the Raft code.
//!
//! The harness mirrors the Ready loop without disk: entries and hard state
//! go into the `LogStore`, a snapshot is installed, committed entries are
//! "applied", then `advance` and `advance_apply`.

use proptest::prelude::*;
use raft::eraftpb::{ConfState, Entry, HardState, Message, MessageType, Snapshot};
use raft::RawNode;

use crate::checks::check_peer_message;
use crate::disk::envelope;
use crate::storage::LogStore;

const SELF_ID: u64 = 1;

/// A follower of node 2 at term 2: snapshot (1, 1), entries 2..=10 (term 2),
/// commit 5, applied 1.
fn follower() -> RawNode<LogStore> {
    let mut store = LogStore::default();
    let mut snapshot = Snapshot::default();
    snapshot.mut_metadata().index = 1;
    snapshot.mut_metadata().term = 1;
    snapshot.mut_metadata().set_conf_state(ConfState {
        voters: vec![1, 2, 3],
        ..Default::default()
    });
    store.install_snapshot(snapshot);
    store.append(
        (2..=10)
            .map(|index| Entry {
                index,
                term: 2,
                ..Default::default()
            })
            .collect(),
    );
    store.set_hard_state(HardState {
        term: 2,
        vote: 2,
        commit: 5,
    });
    let config = raft::Config {
        id: SELF_ID,
        election_tick: 10,
        heartbeat_tick: 1,
        applied: 1,
        check_quorum: true,
        pre_vote: true,
        ..Default::default()
    };
    RawNode::new(&config, store, &crate::logger::raft_logger(SELF_ID)).unwrap()
}

/// Node 1 elected leader at term 3 by node 2's votes.
fn leader() -> RawNode<LogStore> {
    let mut raw = follower();
    raw.campaign().unwrap();
    handle_ready(&mut raw);
    for msg_type in [
        MessageType::MsgRequestPreVoteResponse,
        MessageType::MsgRequestVoteResponse,
    ] {
        let mut vote = Message::default();
        vote.set_msg_type(msg_type);
        (vote.to, vote.from, vote.term) = (SELF_ID, 2, 3);
        raw.step(vote).unwrap();
        handle_ready(&mut raw);
    }
    assert_eq!(raw.raft.state, raft::StateRole::Leader);
    raw
}

/// The loop's checks, as `RaftLoop::step` calls them.
fn checked(raw: &RawNode<LogStore>, msg: &Message) -> bool {
    check_peer_message(SELF_ID, raw.store().conf_state(), raw.store().last(), msg).is_ok()
}

/// One Ready cycle without disk.
fn handle_ready(raw: &mut RawNode<LogStore>) {
    if !raw.has_ready() {
        return;
    }
    let mut ready = raw.ready();
    if !ready.snapshot().is_empty() {
        let snapshot = ready.snapshot().clone();
        raw.mut_store().install_snapshot(snapshot);
    }
    let _ = ready.take_committed_entries();
    let entries = ready.take_entries();
    raw.mut_store().append(entries);
    if let Some(hard_state) = ready.hs() {
        raw.mut_store().set_hard_state(hard_state.clone());
    }
    let mut light = raw.advance(ready);
    if let Some(commit) = light.commit_index() {
        raw.mut_store().set_commit(commit);
    }
    let _ = light.take_committed_entries();
    raw.advance_apply();
}

/// Values where off-by-one and overflow bugs live.
fn edgy() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(2),
        Just(3),
        Just(5),
        Just(9),
        Just(10),
        Just(11),
        Just(1 << 40),
        Just(u64::MAX - 2),
        Just(u64::MAX - 1),
        Just(u64::MAX),
        0u64..20,
        any::<u64>(),
    ]
}

fn entry() -> impl Strategy<Value = Entry> {
    (
        edgy(),
        edgy(),
        0i32..4,
        prop::collection::vec(any::<u8>(), 0..4),
    )
        .prop_map(|(index, term, entry_type, data)| Entry {
            index,
            term,
            entry_type,
            data,
            ..Default::default()
        })
}

fn snapshot() -> impl Strategy<Value = Option<Snapshot>> {
    let data = prop_oneof![
        Just(Vec::new()),
        Just(vec![0xff, 0xff, 0xff]),
        Just(envelope(&Default::default(), Vec::new(), Vec::new())),
    ];
    let voters = prop::collection::vec(0u64..5, 0..4);
    prop::option::of(
        (edgy(), edgy(), voters, data).prop_map(|(index, term, voters, data)| {
            let mut snapshot = Snapshot {
                data,
                ..Default::default()
            };
            snapshot.mut_metadata().index = index;
            snapshot.mut_metadata().term = term;
            snapshot.mut_metadata().mut_conf_state().voters = voters;
            snapshot
        }),
    )
}

/// The types a follower or leader gets most from its peers.
fn common_type() -> impl Strategy<Value = i32> {
    use raft::eraftpb::MessageType::*;
    prop::sample::select(vec![
        MsgAppend as i32,
        MsgAppendResponse as i32,
        MsgHeartbeat as i32,
        MsgHeartbeatResponse as i32,
        MsgRequestVote as i32,
        MsgRequestVoteResponse as i32,
        MsgRequestPreVote as i32,
        MsgRequestPreVoteResponse as i32,
        MsgSnapshot as i32,
        MsgPropose as i32,
        MsgReadIndex as i32,
        MsgReadIndexResp as i32,
        MsgTimeoutNow as i32,
    ])
}

prop_compose! {
    fn message()(
        msg_type in prop_oneof![3 => common_type(), 1 => 0i32..22],
        to in prop_oneof![9 => Just(SELF_ID), 1 => 0u64..5],
        from in prop_oneof![9 => 2u64..4, 1 => 0u64..5],
        term in prop_oneof![3 => 1u64..5, 1 => edgy()],
        log_term in prop_oneof![3 => 1u64..4, 1 => edgy()],
        index in edgy(),
        commit in edgy(),
        reject in any::<bool>(),
        reject_hint in edgy(),
        request_snapshot in edgy(),
        contiguous in any::<bool>(),
        plausible in any::<bool>(),
        mut entries in prop::collection::vec(entry(), 0..4),
        snapshot in snapshot(),
    ) -> Message {
        let (mut to, mut term, mut log_term) = (to, term, log_term);
        if plausible {
            // Close to what a real peer of this log sends.
            to = SELF_ID;
            term = 2 + term % 2;
            log_term = match index { 0 => 0, 1 => 1, _ => 2 };
            if [MessageType::MsgPropose as i32, MessageType::MsgReadIndex as i32].contains(&msg_type) {
                term = 0;
            }
        }
        if contiguous || plausible {
            for (i, entry) in entries.iter_mut().enumerate() {
                entry.index = index.wrapping_add(1 + i as u64);
                if plausible {
                    entry.term = term;
                }
            }
        }
        Message {
            msg_type,
            to,
            from,
            term,
            log_term,
            index,
            commit,
            reject,
            reject_hint,
            request_snapshot,
            entries,
            snapshot,
            ..Default::default()
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 5000, ..ProptestConfig::default() })]

    #[test]
    fn checked_peer_messages_never_panic_the_raft_code(
        messages in prop::collection::vec(message(), 1..8),
        ticks in 0usize..30,
        as_leader in any::<bool>(),
    ) {
        let mut raw = if as_leader { leader() } else { follower() };
        for (i, msg) in messages.into_iter().enumerate() {
            if checked(&raw, &msg) {
                let _ = raw.step(msg);
            }
            handle_ready(&mut raw);
            if i == 0 {
                // Let it campaign (and maybe lead) before the next messages.
                for _ in 0..ticks {
                    raw.tick();
                    handle_ready(&mut raw);
                }
            }
        }
    }
}
