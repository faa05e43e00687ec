//! A fixed apply workload for counting instructions (not a pass/fail test):
//!
//! ```sh
//! cargo test --release -p kvstore --test apply_cost --no-run
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/deps/apply_cost-* --ignored --exact apply_puts_for_callgrind
//! ```
//!
//! Comparing the totals of two builds at the same `RAFTKV_APPLY_PUTS` gives
//! what a change costs per applied put (the payloads are encoded alike).

use kvstore::testing::{encode_request, Request};
use kvstore::{KvConfig, RequestId};
use raftnode::StateMachine;

#[test]
#[ignore = "a workload for callgrind, not a test"]
fn apply_puts_for_callgrind() {
    let puts: u64 = std::env::var("RAFTKV_APPLY_PUTS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(20_000);
    let (_unattached, mut state_machine) = kvstore::new(KvConfig::new(1));
    let value = vec![b'v'; 100];
    for seq in 0..puts {
        let id = RequestId {
            node_id: 2,
            boot_nonce: 7,
            seq: seq + 1,
        };
        let payload = encode_request(
            id,
            Request::Put(etcdproto::etcdserverpb::PutRequest {
                key: format!("key-{:04}", seq % 1000).into_bytes(),
                value: value.clone(),
                ..Default::default()
            }),
        );
        state_machine.apply(seq + 1, &payload);
    }
    assert_eq!(state_machine.len(), 1000.min(puts as usize));
}
