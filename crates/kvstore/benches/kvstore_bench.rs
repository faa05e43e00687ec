//! Throughput of the kvstore layer on `LocalConsensus` (no Raft, no disk):
//! the cost this crate adds to every write and read, and snapshot speed.
#![allow(clippy::print_stdout)]
#![allow(missing_docs)]

use std::time::Instant;

use bytes::Bytes;
use kvstore::testing::{encode_put, local_store};
use kvstore::{KvConfig, ReadConsistency, RequestId};
use raftnode::StateMachine;

const WRITES: usize = 200_000;
const CONCURRENT_TASKS: usize = 64;
const SNAPSHOT_KEYS: usize = 200_000;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        sequential_puts().await;
        concurrent_puts().await;
        linearizable_gets().await;
    });
    snapshot_and_restore();
}

fn key(i: usize) -> Bytes {
    Bytes::from(format!("/key-{i:08}"))
}

async fn sequential_puts() {
    let (store, _consensus) = local_store(KvConfig::new(1));
    let value = Bytes::from(vec![7u8; 100]);
    let started = Instant::now();
    for i in 0..WRITES {
        store.put_value(key(i), value.clone()).await.expect("put");
    }
    report("put, 1 task, 100 B values", WRITES, started);
}

async fn concurrent_puts() {
    let (store, _consensus) = local_store(KvConfig::new(1));
    let value = Bytes::from(vec![7u8; 100]);
    let per_task = WRITES / CONCURRENT_TASKS;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..CONCURRENT_TASKS {
        let store = store.clone();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_task {
                store
                    .put_value(key(task * per_task + i), value.clone())
                    .await
                    .expect("put");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    report(
        "put, 64 tasks, 100 B values",
        per_task * CONCURRENT_TASKS,
        started,
    );
}

async fn linearizable_gets() {
    let (store, _consensus) = local_store(KvConfig::new(1));
    for i in 0..1_000 {
        store
            .put_value(key(i), Bytes::from_static(b"v"))
            .await
            .expect("put");
    }
    let started = Instant::now();
    for i in 0..WRITES {
        let value = store
            .get(&key(i % 1_000), ReadConsistency::Linearizable)
            .await
            .expect("get");
        assert!(value.is_some());
    }
    report(
        "get (linearizable, immediate barrier), 1 task",
        WRITES,
        started,
    );
}

fn snapshot_and_restore() {
    let (_source_store, mut source) = kvstore::new(KvConfig::new(1));
    let (_target_store, mut target) = kvstore::new(KvConfig::new(2));
    let value = Bytes::from(vec![3u8; 100]);
    for i in 0..SNAPSHOT_KEYS {
        let id = RequestId {
            node_id: 9,
            boot_nonce: 9,
            seq: i as u64 + 1,
        };
        source.apply(i as u64 + 1, &encode_put(id, &key(i), &value));
    }
    let started = Instant::now();
    let bytes = source.snapshot();
    let snapshot_ms = started.elapsed().as_secs_f64() * 1e3;
    let started = Instant::now();
    target
        .restore(SNAPSHOT_KEYS as u64, &bytes)
        .expect("restore");
    let restore_ms = started.elapsed().as_secs_f64() * 1e3;
    println!(
        "snapshot of {SNAPSHOT_KEYS} keys ({} bytes): encode {snapshot_ms:.1} ms, restore {restore_ms:.1} ms",
        bytes.len()
    );
}

fn report(name: &str, operations: usize, started: Instant) {
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{name}: {operations} ops in {seconds:.2} s = {:.0} ops/s",
        operations as f64 / seconds
    );
}
