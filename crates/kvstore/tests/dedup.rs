//! A command that reaches the log twice is applied once: the apply side
//! deduplicates by request id, with a window carried in snapshots.

use bytes::Bytes;
use kvstore::testing::{encode_put, local_store};
use kvstore::{KvConfig, KvStateMachine, ReadConsistency, RequestId};
use raftnode::StateMachine;

fn put(node_id: u64, boot_nonce: u64, seq: u64, key: &str, value: &str) -> Vec<u8> {
    let id = RequestId {
        node_id,
        boot_nonce,
        seq,
    };
    encode_put(
        id,
        &Bytes::from(key.to_string()),
        &Bytes::from(value.to_string()),
    )
}

fn fed(entries: &[Vec<u8>]) -> KvStateMachine {
    let (_unattached, mut state_machine) = kvstore::new(KvConfig::new(1));
    for (position, payload) in entries.iter().enumerate() {
        state_machine.apply(position as u64 + 1, payload);
    }
    state_machine
}

#[tokio::test]
async fn duplicate_put_after_a_later_put_leaves_the_later_value() {
    let (store, consensus) = local_store(KvConfig::new(1));
    let first = put(2, 11, 1, "/k", "a");
    consensus.apply_payload(&first);
    consensus.apply_payload(&put(2, 11, 2, "/k", "b"));
    let duplicate_index = consensus.apply_payload(&first);
    assert_eq!(store.applied_index(), duplicate_index);
    let value = store.get(b"/k", ReadConsistency::Serializable).await;
    assert_eq!(value, Ok(Some(Bytes::from_static(b"b"))));
}

/// The window travels in the snapshot: a duplicate applied after a restore
/// is still refused, and the restored node snapshots the same bytes.
#[tokio::test]
async fn window_survives_a_snapshot_round_trip() {
    let first = put(2, 11, 1, "/k", "a");
    let log = vec![first.clone(), put(2, 11, 2, "/k", "b")];
    let original = fed(&log);
    let snapshot = original.snapshot();

    let (store, consensus) = local_store(KvConfig::new(3));
    consensus.restore(2, &snapshot).expect("restore");
    consensus.apply_payload(&first);
    let value = store.get(b"/k", ReadConsistency::Serializable).await;
    assert_eq!(value, Ok(Some(Bytes::from_static(b"b"))));

    let mut expected = log.clone();
    expected.push(first);
    assert_eq!(consensus.snapshot(), fed(&expected).snapshot());
}

/// Duplicates, reordering and many origins (more than the window keeps)
/// give byte-identical snapshots on every node fed the same log.
#[test]
fn same_log_with_duplicates_gives_identical_snapshots() {
    let mut log = Vec::new();
    for i in 0..3_000u64 {
        let origin = i % 90;
        log.push(put(
            origin + 1,
            origin * 7,
            i / 90 + 1,
            &format!("/k{}", i % 13),
            "v",
        ));
        if i % 5 == 0 {
            let again = log[(i / 2) as usize].clone();
            log.push(again);
        }
    }
    let a = fed(&log).snapshot();
    let b = fed(&log).snapshot();
    assert_eq!(a, b);
    let (_unattached, mut restored) = kvstore::new(KvConfig::new(2));
    restored.restore(log.len() as u64, &a).expect("restore");
    assert_eq!(restored.snapshot(), a);
}
