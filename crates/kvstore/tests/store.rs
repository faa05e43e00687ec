//! put / get behaviour of `KvStore` on `LocalConsensus`.

use std::sync::Arc;

use bytes::Bytes;
use kvstore::testing::{encode_put, local_store, request_id_of, LocalConsensus};
use kvstore::{KvConfig, KvError, KvStore, ReadConsistency, RequestId};
use raftnode::{BoxFuture, Consensus, MembershipChange, RaftError, StateMachine, Status};

fn b(text: &'static str) -> Bytes {
    Bytes::from_static(text.as_bytes())
}

fn config(node_id: u64) -> KvConfig {
    KvConfig {
        node_id,
        request_timeout_ms: 5_000,
        max_in_flight_writes: 64,
        ..KvConfig::new(1)
    }
}

/// Yields until `store` has `count` writes waiting (bounded, never hangs).
async fn until_pending(store: &KvStore, count: usize) {
    for _ in 0..10_000 {
        if store.pending_writes() == count {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!(
        "store never reached {count} pending writes (has {})",
        store.pending_writes()
    );
}

#[tokio::test]
async fn put_then_get_round_trips_both_consistencies() {
    let (store, _consensus) = local_store(config(1));
    store.put_value(b("/a"), b("1")).await.unwrap();
    store.put_value(b("/b"), b("2")).await.unwrap();
    store.put_value(b("/a"), b("3")).await.unwrap();
    assert_eq!(
        store
            .get(b"/a", ReadConsistency::Linearizable)
            .await
            .unwrap(),
        Some(b("3"))
    );
    assert_eq!(
        store
            .get(b"/b", ReadConsistency::Serializable)
            .await
            .unwrap(),
        Some(b("2"))
    );
    assert_eq!(
        store
            .get(b"/missing", ReadConsistency::default())
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.len(), 2);
    assert_eq!(store.applied_index(), 3);
    assert_eq!(store.pending_writes(), 0);
}

#[tokio::test]
async fn empty_key_is_refused_and_empty_value_is_stored() {
    let (store, consensus) = local_store(config(1));
    assert_eq!(
        store.put_value(Bytes::new(), b("v")).await,
        Err(KvError::EmptyKey),
        "etcd refuses an empty key before proposing"
    );
    assert_eq!(consensus.proposals_seen(), 0);
    store.put_value(b("/k"), Bytes::new()).await.unwrap();
    assert_eq!(
        store
            .get(b"/k", ReadConsistency::Linearizable)
            .await
            .unwrap(),
        Some(Bytes::new())
    );
}

#[tokio::test]
async fn put_resolves_only_on_its_own_apply() {
    let (store, consensus) = local_store(config(1));
    consensus.set_hold_proposals(true);
    let writer = tokio::spawn({
        let store = store.clone();
        async move { store.put_value(b("/k"), b("mine")).await }
    });
    until_pending(&store, 1).await;
    let held = consensus.take_held();
    assert_eq!(held.len(), 1);
    let mine = request_id_of(&held[0]).expect("a command");

    // The same key and value, proposed by another node: applied, but not ours.
    let other_node = RequestId { node_id: 2, ..mine };
    consensus.apply_payload(&encode_put(other_node, &b("/k"), &b("mine")));
    // Same node id and sequence, but another incarnation (boot nonce).
    let old_incarnation = RequestId {
        boot_nonce: mine.boot_nonce.wrapping_add(1),
        ..mine
    };
    consensus.apply_payload(&encode_put(old_incarnation, &b("/k"), &b("mine")));
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert!(
        !writer.is_finished(),
        "a foreign entry acknowledged our write"
    );
    assert_eq!(store.pending_writes(), 1);
    assert_eq!(
        store
            .get(b"/k", ReadConsistency::Serializable)
            .await
            .unwrap(),
        Some(b("mine"))
    );

    consensus.apply_payload(&held[0]);
    writer.await.unwrap().unwrap();
    assert_eq!(store.pending_writes(), 0);
}

#[tokio::test]
async fn dropped_proposal_times_out_and_never_succeeds() {
    let (store, consensus) = local_store(KvConfig {
        request_timeout_ms: 30,
        ..config(1)
    });
    consensus.set_drop_proposals(true);
    let error = store.put_value(b("/lost"), b("v")).await.unwrap_err();
    assert_eq!(error, KvError::Timeout { timeout_ms: 30 });
    assert!(error.to_string().contains("outcome is unknown"), "{error}");
    assert_eq!(
        store.pending_writes(),
        0,
        "a timed-out write left its waiter behind"
    );
    assert_eq!(consensus.proposals_seen(), 1);
    assert_eq!(
        store
            .get(b"/lost", ReadConsistency::Linearizable)
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn late_apply_after_timeout_is_harmless() {
    let (store, consensus) = local_store(KvConfig {
        request_timeout_ms: 20,
        ..config(1)
    });
    consensus.set_hold_proposals(true);
    let error = store.put_value(b("/late"), b("v")).await.unwrap_err();
    assert!(matches!(error, KvError::Timeout { .. }));
    assert_eq!(consensus.release_held(), 1);
    // The write did take effect: that is why the error says "unknown".
    assert_eq!(
        store
            .get(b"/late", ReadConsistency::Serializable)
            .await
            .unwrap(),
        Some(b("v"))
    );
    consensus.set_hold_proposals(false);
    store.put_value(b("/next"), b("w")).await.unwrap();
}

#[tokio::test]
async fn busy_when_in_flight_bound_is_reached() {
    let (store, consensus) = local_store(KvConfig {
        max_in_flight_writes: 2,
        ..config(1)
    });
    consensus.set_hold_proposals(true);
    let writers: Vec<_> = (0..2)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(
                async move { store.put_value(Bytes::from(format!("/w{i}")), b("v")).await },
            )
        })
        .collect();
    until_pending(&store, 2).await;
    assert_eq!(
        store.put_value(b("/third"), b("v")).await,
        Err(KvError::Busy)
    );
    assert_eq!(
        consensus.proposals_seen(),
        2,
        "a busy write must not be proposed"
    );
    assert_eq!(consensus.release_held(), 2);
    for writer in writers {
        writer.await.unwrap().unwrap();
    }
    consensus.set_hold_proposals(false);
    store.put_value(b("/third"), b("v")).await.unwrap();
}

#[tokio::test]
async fn raft_errors_reach_the_caller() {
    let (store, consensus) = local_store(config(1));
    store.put_value(b("/k"), b("v")).await.unwrap();
    consensus.set_no_leader(true);
    assert_eq!(
        store.put_value(b("/k"), b("w")).await,
        Err(KvError::Raft(RaftError::NoLeader))
    );
    assert_eq!(
        store.get(b"/k", ReadConsistency::Linearizable).await,
        Err(KvError::Raft(RaftError::NoLeader))
    );
    // A serializable read needs no leader.
    assert_eq!(
        store
            .get(b"/k", ReadConsistency::Serializable)
            .await
            .unwrap(),
        Some(b("v"))
    );
    consensus.set_no_leader(false);
    consensus.set_busy(true);
    assert_eq!(
        store.put_value(b("/k"), b("w")).await,
        Err(KvError::Raft(RaftError::Busy))
    );
    assert_eq!(store.pending_writes(), 0);
}

#[tokio::test]
async fn stalled_read_barrier_times_out() {
    let (store, consensus) = local_store(KvConfig {
        request_timeout_ms: 20,
        ..config(1)
    });
    consensus.set_stall_reads(true);
    let error = store
        .get(b"/k", ReadConsistency::Linearizable)
        .await
        .unwrap_err();
    assert_eq!(error, KvError::ReadTimeout { timeout_ms: 20 });
}

#[tokio::test]
async fn undecodable_entries_are_skipped() {
    let (store, consensus) = local_store(config(1));
    store.put_value(b("/k"), b("v")).await.unwrap();
    let index = consensus.apply_payload(&[0xff, 0xff, 0xff, 0x07, 0x01]);
    consensus.apply_payload(b"");
    assert_eq!(store.applied_index(), index + 1);
    assert_eq!(store.len(), 1);
    assert_eq!(
        store
            .get(b"/k", ReadConsistency::Linearizable)
            .await
            .unwrap(),
        Some(b("v"))
    );
}

/// Accepts every proposal and never applies anything.
struct BlackHole;

impl Consensus for BlackHole {
    fn propose(&self, _data: Vec<u8>) -> BoxFuture<'_, Result<(), RaftError>> {
        Box::pin(async { Ok(()) })
    }
    fn propose_then(&self, _data: Vec<u8>, then: raftnode::ProposalHook) -> Result<(), RaftError> {
        then(Ok(()));
        Ok(())
    }
    fn read_barrier(&self) -> BoxFuture<'_, Result<(), RaftError>> {
        Box::pin(async { Ok(()) })
    }
    fn change_membership(&self, _change: MembershipChange) -> BoxFuture<'_, Result<(), RaftError>> {
        Box::pin(async { Err(RaftError::Stopped) })
    }
    fn status(&self) -> Status {
        unreachable!("not used by kvstore")
    }
}

#[tokio::test]
async fn dropping_the_state_machine_stops_waiting_writes() {
    let (unattached, state_machine) = kvstore::new(config(1));
    let store = unattached.attach(Arc::new(BlackHole));
    let writer = tokio::spawn({
        let store = store.clone();
        async move { store.put_value(b("/k"), b("v")).await }
    });
    until_pending(&store, 1).await;
    drop(state_machine);
    assert_eq!(writer.await.unwrap(), Err(KvError::Stopped));
    assert_eq!(
        store.put_value(b("/k"), b("v")).await,
        Err(KvError::Stopped)
    );
}

#[test]
#[should_panic(expected = "indexes must strictly increase")]
fn apply_rejects_going_backwards() {
    let (_unattached, mut state_machine) = kvstore::new(config(1));
    state_machine.apply(5, b"");
    state_machine.apply(5, b"");
}

#[test]
#[should_panic(expected = "node_id must be non-zero")]
fn node_id_zero_is_refused() {
    let _ = kvstore::new(config(0));
}

#[tokio::test]
async fn local_consensus_reports_status() {
    let (unattached, state_machine) = kvstore::new(config(7));
    let consensus = Arc::new(LocalConsensus::new(state_machine));
    let store = unattached.attach(consensus.clone());
    store.put_value(b("/k"), b("v")).await.unwrap();
    let status = store.consensus().status();
    assert_eq!(
        (status.id, status.leader_id, status.applied_index),
        (7, Some(7), 1)
    );
    assert_eq!(status.members.len(), 1);
}
