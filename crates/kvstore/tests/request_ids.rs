//! Request ids never collide across nodes or incarnations of one node.

use std::collections::HashSet;

use bytes::Bytes;
use kvstore::testing::{local_store, request_id_of};
use kvstore::{KvConfig, KvStore, RequestId};

const PUTS_PER_STORE: usize = 200;

async fn until_pending(store: &KvStore, count: usize) {
    for _ in 0..100_000 {
        if store.pending_writes() == count {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("never reached {count} pending writes");
}

/// Proposes `PUTS_PER_STORE` writes on a fresh store for `node_id` (a new
/// incarnation each call) and returns the ids they carried.
async fn ids_of_one_incarnation(node_id: u64) -> Vec<RequestId> {
    let (store, consensus) = local_store(KvConfig {
        max_in_flight_writes: PUTS_PER_STORE,
        ..KvConfig::new(node_id)
    });
    consensus.set_hold_proposals(true);
    let writers: Vec<_> = (0..PUTS_PER_STORE)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .put_value(Bytes::from(format!("/k{i}")), Bytes::new())
                    .await
            })
        })
        .collect();
    until_pending(&store, PUTS_PER_STORE).await;
    let ids: Vec<RequestId> = consensus
        .take_held()
        .iter()
        .map(|payload| request_id_of(payload).expect("a command"))
        .collect();
    for writer in writers {
        writer.abort();
    }
    ids
}

#[tokio::test]
async fn ids_are_unique_across_nodes_and_incarnations() {
    let mut all = HashSet::new();
    let mut nonces = HashSet::new();
    for node_id in [1, 2, 1, 2, 3] {
        let ids = ids_of_one_incarnation(node_id).await;
        assert_eq!(ids.len(), PUTS_PER_STORE);
        assert!(ids.iter().all(|id| id.node_id == node_id));
        assert!(
            nonces.insert(ids[0].boot_nonce),
            "two incarnations drew the same boot nonce"
        );
        for id in ids {
            assert!(all.insert(id), "request id {id:?} used twice");
        }
    }
    assert_eq!(all.len(), 5 * PUTS_PER_STORE);
}

#[tokio::test]
async fn old_incarnation_entry_does_not_ack_new_incarnation() {
    // Incarnation A of node 1 proposes a write that is applied only after
    // node 1 restarted as incarnation B, whose first write has the same seq.
    let (store_a, consensus_a) = local_store(KvConfig::new(1));
    consensus_a.set_hold_proposals(true);
    let writer_a = tokio::spawn({
        let store = store_a.clone();
        async move {
            store
                .put_value(Bytes::from_static(b"/x"), Bytes::from_static(b"a"))
                .await
        }
    });
    until_pending(&store_a, 1).await;
    let payload_a = consensus_a.take_held().pop().expect("held proposal");
    writer_a.abort();

    let (store_b, consensus_b) = local_store(KvConfig::new(1));
    consensus_b.set_hold_proposals(true);
    let writer_b = tokio::spawn({
        let store = store_b.clone();
        async move {
            store
                .put_value(Bytes::from_static(b"/x"), Bytes::from_static(b"a"))
                .await
        }
    });
    until_pending(&store_b, 1).await;
    let payload_b = consensus_b.take_held().pop().expect("held proposal");
    let (id_a, id_b) = (
        request_id_of(&payload_a).unwrap(),
        request_id_of(&payload_b).unwrap(),
    );
    assert_eq!((id_a.node_id, id_a.seq), (id_b.node_id, id_b.seq));

    consensus_b.apply_payload(&payload_a);
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert!(
        !writer_b.is_finished(),
        "old incarnation's entry acknowledged a new write"
    );
    consensus_b.apply_payload(&payload_b);
    writer_b.await.unwrap().unwrap();
}
