//! Property tests: snapshots round-trip any map, reject any corruption, and
//! no payload or snapshot bytes can panic the state machine.

use bytes::Bytes;
use kvstore::testing::encode_put;
use kvstore::{KvConfig, KvStateMachine, RequestId};
use proptest::collection::vec;
use proptest::prelude::*;
use raftnode::StateMachine;

fn machine(node_id: u64) -> KvStateMachine {
    kvstore::new(KvConfig::new(node_id)).1
}

fn puts() -> impl Strategy<Value = Vec<(Vec<u8>, Vec<u8>)>> {
    vec((vec(any::<u8>(), 0..12), vec(any::<u8>(), 0..40)), 0..60)
}

fn fed(node_id: u64, puts: &[(Vec<u8>, Vec<u8>)]) -> KvStateMachine {
    let mut state_machine = machine(node_id);
    for (position, (key, value)) in puts.iter().enumerate() {
        let id = RequestId {
            node_id: 5,
            boot_nonce: 5,
            seq: position as u64,
        };
        let payload = encode_put(
            id,
            &Bytes::copy_from_slice(key),
            &Bytes::copy_from_slice(value),
        );
        state_machine.apply(position as u64 + 1, &payload);
    }
    state_machine
}

proptest! {
    #[test]
    fn snapshot_round_trips_any_map(puts in puts()) {
        let source = fed(1, &puts);
        let snapshot = source.snapshot();
        prop_assert_eq!(&snapshot, &fed(2, &puts).snapshot());
        let mut target = machine(3);
        target.restore(puts.len() as u64, &snapshot).unwrap();
        prop_assert_eq!(target.snapshot(), snapshot);
        prop_assert_eq!(target.len(), source.len());
    }

    #[test]
    fn any_corrupted_byte_is_detected(puts in puts(), position in any::<prop::sample::Index>(), flip in 1..=255u8) {
        let mut snapshot = fed(1, &puts).snapshot();
        let at = position.index(snapshot.len());
        snapshot[at] ^= flip;
        let mut target = machine(2);
        prop_assert!(target.restore(9, &snapshot).is_err());
        prop_assert!(target.is_empty());
    }

    #[test]
    fn arbitrary_snapshot_bytes_never_panic(bytes in vec(any::<u8>(), 0..256)) {
        let mut target = machine(1);
        let _ = target.restore(1, &bytes);
    }

    #[test]
    fn arbitrary_payloads_are_applied_or_skipped(payloads in vec(vec(any::<u8>(), 0..64), 1..20)) {
        let mut state_machine = machine(1);
        for (position, payload) in payloads.iter().enumerate() {
            state_machine.apply(position as u64 + 1, payload);
        }
        prop_assert_eq!(state_machine.applied_index(), payloads.len() as u64);
    }
}
