//! etcd requests through `KvStore`: what the waiter hands back, which
//! requests propose, the quota and its alarm, restarts and garbage commands.

use etcdproto::etcdserverpb as pb;
use etcdproto::etcdserverpb::request_op::Request as OpRequest;
use kvstore::testing::{encode_request, local_store, LocalConsensus, Request};
use kvstore::{KvConfig, KvError, KvStateMachine, RequestId};
use proptest::prelude::*;
use raftnode::StateMachine;

fn put(key: &str, value: &str) -> pb::PutRequest {
    pb::PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    }
}

fn revision_of(header: Option<pb::ResponseHeader>) -> i64 {
    header.expect("a header").revision
}

#[tokio::test]
async fn the_waiter_returns_what_apply_computed() {
    let (store, _consensus) = local_store(KvConfig::new(1));
    let first = store.put(put("/a", "1")).await.unwrap();
    assert_eq!(revision_of(first.header), 2);
    assert_eq!(first.prev_kv, None);
    let second = store
        .put(pb::PutRequest {
            prev_kv: true,
            ..put("/a", "2")
        })
        .await
        .unwrap();
    assert_eq!(revision_of(second.header), 3);
    assert_eq!(second.prev_kv.unwrap().value, b"1");
    // An error decided at apply (the key is missing) comes back the same way.
    let missing = store
        .put(pb::PutRequest {
            key: "/zz".into(),
            ignore_value: true,
            ..Default::default()
        })
        .await;
    assert_eq!(missing, Err(KvError::KeyNotFound));
    let deleted = store
        .delete_range(pb::DeleteRangeRequest {
            key: "/a".into(),
            range_end: vec![],
            prev_kv: true,
        })
        .await
        .unwrap();
    assert_eq!((deleted.deleted, revision_of(deleted.header)), (1, 4));
    assert_eq!(
        store
            .compact(pb::CompactionRequest {
                revision: 9,
                physical: false
            })
            .await,
        Err(KvError::FutureRevision)
    );
}

#[tokio::test]
async fn reads_and_read_only_txns_never_propose() {
    let (store, consensus) = local_store(KvConfig::new(1));
    store.put(put("/a", "1")).await.unwrap();
    let proposals = consensus.proposals_seen();
    let range = pb::RangeRequest {
        key: "/a".into(),
        ..Default::default()
    };
    let read = store.range(range.clone()).await.unwrap();
    assert_eq!(read.kvs[0].value, b"1");
    let txn = pb::TxnRequest {
        compare: vec![],
        success: vec![pb::RequestOp {
            request: Some(OpRequest::RequestRange(range.clone())),
        }],
        failure: vec![],
    };
    let answered = store.txn(txn).await.unwrap();
    assert_eq!(revision_of(answered.header), 2);
    store
        .hash_kv(pb::HashKvRequest { revision: 0 })
        .await
        .unwrap();
    assert_eq!(consensus.proposals_seen(), proposals);
    // Linearizable reads wait for the barrier; serializable ones do not.
    consensus.set_stall_reads(true);
    let serializable = pb::RangeRequest {
        serializable: true,
        ..range
    };
    assert!(store.range(serializable).await.is_ok());
}

#[tokio::test]
async fn request_checks_run_before_proposing() {
    let (store, consensus) = local_store(KvConfig {
        max_txn_ops: 2,
        ..KvConfig::new(1)
    });
    let ops = (0..3)
        .map(|i| pb::RequestOp {
            request: Some(OpRequest::RequestPut(put(&format!("/k{i}"), "v"))),
        })
        .collect();
    let txn = pb::TxnRequest {
        compare: vec![],
        success: ops,
        failure: vec![],
    };
    assert_eq!(store.txn(txn).await, Err(KvError::TooManyOps));
    assert_eq!(store.put(put("", "v")).await, Err(KvError::EmptyKey));
    assert_eq!(consensus.proposals_seen(), 0);
}

#[tokio::test]
async fn quota_raises_nospace_until_compaction_and_disarm() {
    let (store, _consensus) = local_store(KvConfig {
        quota_bytes: 100,
        ..KvConfig::new(1)
    });
    let value = "x".repeat(30);
    for _ in 0..3 {
        store.put(put("/k", &value)).await.unwrap(); // 32 bytes retained each
    }
    assert_eq!(store.put(put("/k", &value)).await, Err(KvError::NoSpace));
    let status = store.keyspace_status();
    assert_eq!(status.alarms.len(), 1, "the NOSPACE alarm is armed");
    assert_eq!(status.alarms[0].alarm, pb::AlarmType::Nospace as i32);
    assert_eq!(status.alarms[0].member_id, 1);
    assert_eq!(status.db_size_bytes, 96);
    // Armed: even a small write fails, but compaction works.
    assert_eq!(store.put(put("/s", "")).await, Err(KvError::NoSpace));
    store
        .compact(pb::CompactionRequest {
            revision: status.revision,
            physical: true,
        })
        .await
        .unwrap();
    assert_eq!(store.keyspace_status().db_size_bytes, 32);
    assert_eq!(
        store.put(put("/s", "")).await,
        Err(KvError::NoSpace),
        "still armed"
    );
    let listed = store
        .alarm(pb::AlarmRequest {
            action: pb::alarm_request::AlarmAction::Get as i32,
            member_id: 0,
            alarm: pb::AlarmType::None as i32,
        })
        .await
        .unwrap();
    for member in listed.alarms {
        store
            .alarm(pb::AlarmRequest {
                action: pb::alarm_request::AlarmAction::Deactivate as i32,
                member_id: member.member_id,
                alarm: member.alarm,
            })
            .await
            .unwrap();
    }
    assert!(store.keyspace_status().alarms.is_empty());
    store.put(put("/k", &value)).await.unwrap();
}

fn id(seq: u64) -> RequestId {
    RequestId {
        node_id: 2,
        boot_nonce: 3,
        seq,
    }
}

#[test]
fn restart_never_lowers_the_revision() {
    // etcd #17780 / #6633: compacting a trailing tombstone then restarting
    // made the revision go back. Here the revision is in the snapshot.
    let (_unattached, mut machine) = kvstore::new(KvConfig::new(1));
    let log = [
        Request::Put(put("/a", "1")),
        Request::Put(put("/b", "1")),
        Request::DeleteRange(pb::DeleteRangeRequest {
            key: "/b".into(),
            range_end: vec![],
            prev_kv: false,
        }),
        Request::Compaction(pb::CompactionRequest {
            revision: 4,
            physical: true,
        }),
        Request::Compaction(pb::CompactionRequest {
            revision: 4,
            physical: true,
        }),
    ];
    for (index, request) in log.into_iter().enumerate() {
        machine.apply(index as u64 + 1, &encode_request(id(index as u64), request));
    }
    assert_eq!(machine.keyspace().revision(), 4);
    let snapshot = machine.snapshot();
    let (_unattached, mut restarted) = kvstore::new(KvConfig::new(1));
    restarted.restore(5, &snapshot).unwrap();
    let keyspace = restarted.keyspace();
    assert_eq!((keyspace.revision(), keyspace.compact_revision()), (4, 4));
    restarted.apply(6, &encode_request(id(9), Request::Put(put("/c", "1"))));
    assert_eq!(restarted.keyspace().revision(), 5);
}

#[tokio::test]
async fn snapshots_carry_history_compaction_and_alarms() {
    let (store, consensus) = local_store(KvConfig::new(1));
    for i in 0..20 {
        store
            .put(put(&format!("/k{}", i % 4), &format!("v{i}")))
            .await
            .unwrap();
    }
    store
        .compact(pb::CompactionRequest {
            revision: 10,
            physical: false,
        })
        .await
        .unwrap();
    store
        .alarm(pb::AlarmRequest {
            action: pb::alarm_request::AlarmAction::Activate as i32,
            member_id: 5,
            alarm: pb::AlarmType::Corrupt as i32,
        })
        .await
        .unwrap();
    let snapshot = consensus.snapshot();
    let (_unattached, mut copy) = kvstore::new(KvConfig::new(2));
    copy.restore(100, &snapshot).unwrap();
    assert_eq!(copy.keyspace(), store.keyspace());
    let at_12 = copy
        .keyspace()
        .range(&pb::RangeRequest {
            key: "/k0".into(),
            range_end: "/k9".into(),
            revision: 12,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(at_12.kvs.len(), 4);
    assert_eq!(copy.keyspace().status().alarms.len(), 1);
    assert_eq!(copy.snapshot(), snapshot, "re-encoding is byte-identical");
}

#[test]
fn a_restore_over_a_running_machine_replaces_everything() {
    let mut machine: KvStateMachine = kvstore::new(KvConfig::new(1)).1;
    machine.apply(1, &encode_request(id(1), Request::Put(put("/old", "1"))));
    let empty = kvstore::new(KvConfig::new(1)).1.snapshot();
    machine.restore(7, &empty).unwrap();
    assert!(machine.is_empty());
    assert_eq!(machine.keyspace().revision(), 1);
}

/// Command payloads whose op field holds arbitrary bytes: they decode as an
/// etcd request often enough to exercise apply on nonsense fields.
fn wrapped(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![(tag << 3) | 2];
    let mut length = body.len();
    loop {
        let byte = (length & 0x7f) as u8;
        length >>= 7;
        if length == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(body);
    out
}

proptest! {
    #[test]
    fn garbage_commands_never_panic_apply(tag in 2u8..8, body in proptest::collection::vec(any::<u8>(), 0..200)) {
        let consensus = LocalConsensus::new(kvstore::new(KvConfig::new(1)).1);
        consensus.apply_payload(&encode_request(id(1), Request::Put(put("/a", "1"))));
        let index = consensus.apply_payload(&wrapped(tag, &body));
        let snapshot = consensus.snapshot();
        let (_unattached, mut copy) = kvstore::new(KvConfig::new(1));
        prop_assert!(copy.restore(index, &snapshot).is_ok());
    }
}

#[test]
fn first_format_puts_and_map_snapshots_still_restore() {
    // A first-format command: field 2 holding { 1: key, 2: value }.
    let inner = [&wrapped(1, b"/old")[..], &wrapped(2, b"v")[..]].concat();
    let payload = wrapped(2, &inner);
    let (_unattached, mut machine) = kvstore::new(KvConfig::new(1));
    machine.apply(1, &payload);
    assert_eq!(machine.keyspace().get(b"/old").as_deref(), Some(&b"v"[..]));
    assert_eq!(machine.keyspace().revision(), 2);

    // A version 1 snapshot (a plain sorted map) becomes one write txn.
    let mut map = kvstore::SNAPSHOT_MAGIC.to_vec();
    map.extend_from_slice(&1u32.to_le_bytes());
    map.extend_from_slice(&2u64.to_le_bytes());
    for (key, value) in [(&b"/a"[..], &b"1"[..]), (b"/b", b"2")] {
        map.extend_from_slice(&(key.len() as u64).to_le_bytes());
        map.extend_from_slice(key);
        map.extend_from_slice(&(value.len() as u64).to_le_bytes());
        map.extend_from_slice(value);
    }
    let crc = crc32fast::hash(&map);
    map.extend_from_slice(&crc.to_le_bytes());
    machine.restore(5, &map).unwrap();
    let keyspace = machine.keyspace();
    assert_eq!((keyspace.len(), keyspace.revision()), (2, 2));
    assert_eq!(keyspace.get(b"/b").as_deref(), Some(&b"2"[..]));
}
