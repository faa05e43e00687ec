//! The keyspace's rules, one test per rule, with the answers a real etcd
//! 3.4 gives for the same requests (checked by hand with etcdctl).

use etcdproto::etcdserverpb as pb;
use etcdproto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use etcdproto::etcdserverpb::range_request::{SortOrder, SortTarget};
use etcdproto::etcdserverpb::request_op::Request;
use etcdproto::etcdserverpb::response_op::Response;
use kvstore::mvcc::check_txn_request;
use kvstore::{Keyspace, KvError};

fn put(keyspace: &mut Keyspace, key: &str, value: &str) -> i64 {
    keyspace
        .put(&pb::PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        })
        .unwrap()
        .header
        .unwrap()
        .revision
}

fn delete(keyspace: &mut Keyspace, key: &str, range_end: &str) -> pb::DeleteRangeResponse {
    keyspace
        .delete_range(&pb::DeleteRangeRequest {
            key: key.into(),
            range_end: range_end.into(),
            prev_kv: true,
        })
        .unwrap()
}

fn range(key: &str, range_end: &[u8]) -> pb::RangeRequest {
    pb::RangeRequest {
        key: key.into(),
        range_end: range_end.to_vec(),
        ..Default::default()
    }
}

fn keys(response: &pb::RangeResponse) -> Vec<String> {
    response
        .kvs
        .iter()
        .map(|kv| String::from_utf8(kv.key.clone()).unwrap())
        .collect()
}

fn put_op(key: &str, value: &str) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(Request::RequestPut(pb::PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        })),
    }
}

fn delete_op(key: &str, range_end: &str) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(Request::RequestDeleteRange(pb::DeleteRangeRequest {
            key: key.into(),
            range_end: range_end.into(),
            prev_kv: false,
        })),
    }
}

fn range_op(request: pb::RangeRequest) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(Request::RequestRange(request)),
    }
}

fn txn_op(txn: pb::TxnRequest) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(Request::RequestTxn(txn)),
    }
}

fn compare(
    key: &str,
    target: CompareTarget,
    result: CompareResult,
    union: TargetUnion,
) -> pb::Compare {
    pb::Compare {
        result: result as i32,
        target: target as i32,
        key: key.into(),
        target_union: Some(union),
        range_end: vec![],
    }
}

/// a=1@2, b=1@3, c=1@4, a=2@5, ab=1@6 (a: version 2).
fn sample() -> Keyspace {
    let mut keyspace = Keyspace::new();
    put(&mut keyspace, "a", "1");
    put(&mut keyspace, "b", "1");
    put(&mut keyspace, "c", "1");
    put(&mut keyspace, "a", "2");
    put(&mut keyspace, "ab", "1");
    keyspace
}

#[test]
fn range_forms_single_prefix_and_from_key() {
    let keyspace = sample();
    assert_eq!(keys(&keyspace.range(&range("a", b"")).unwrap()), ["a"]);
    assert_eq!(
        keys(&keyspace.range(&range("a", b"b")).unwrap()),
        ["a", "ab"]
    );
    assert_eq!(
        keys(&keyspace.range(&range("ab", b"\0")).unwrap()),
        ["ab", "b", "c"]
    );
    assert_eq!(
        keys(&keyspace.range(&range("c", b"a")).unwrap()),
        Vec::<String>::new()
    );
    assert_eq!(keyspace.range(&range("", b"")), Err(KvError::EmptyKey));
}

#[test]
fn range_at_a_revision_reports_the_current_revision_in_its_header() {
    let keyspace = sample();
    let old = keyspace
        .range(&pb::RangeRequest {
            revision: 3,
            ..range("a", b"\0")
        })
        .unwrap();
    assert_eq!(keys(&old), ["a", "b"]);
    assert_eq!(old.kvs[0].value, b"1");
    assert_eq!(old.header.unwrap().revision, 6);
    assert_eq!(
        keyspace.range(&pb::RangeRequest {
            revision: 7,
            ..range("a", b"")
        }),
        Err(KvError::FutureRevision)
    );
}

#[test]
fn range_at_the_compacted_revision_is_allowed_below_it_is_not() {
    let mut keyspace = sample();
    keyspace
        .compact(&pb::CompactionRequest {
            revision: 4,
            physical: true,
        })
        .unwrap();
    let at = |revision| {
        keyspace.range(&pb::RangeRequest {
            revision,
            ..range("a", b"\0")
        })
    };
    assert_eq!(keys(&at(4).unwrap()), ["a", "b", "c"]);
    assert_eq!(
        at(4).unwrap().kvs[0].value,
        b"1",
        "a's version at 4 survived"
    );
    assert_eq!(at(3), Err(KvError::Compacted));
    assert_eq!(
        keyspace.revision(),
        6,
        "compaction never bumps the revision"
    );
}

#[test]
fn limit_more_and_count_ignoring_limit_and_filters() {
    let keyspace = sample();
    let limited = keyspace
        .range(&pb::RangeRequest {
            limit: 2,
            ..range("a", b"\0")
        })
        .unwrap();
    assert_eq!(keys(&limited), ["a", "ab"]);
    assert!(limited.more);
    assert_eq!(limited.count, 4);
    let filtered = keyspace
        .range(&pb::RangeRequest {
            min_mod_revision: 4,
            max_create_revision: 5,
            ..range("a", b"\0")
        })
        .unwrap();
    assert_eq!(
        keys(&filtered),
        ["a", "c"],
        "a: mod 5 create 2; c: mod 4 create 4"
    );
    assert_eq!(filtered.count, 4, "count ignores the filters");
    let counted = keyspace
        .range(&pb::RangeRequest {
            count_only: true,
            limit: 1,
            ..range("a", b"\0")
        })
        .unwrap();
    assert!(counted.kvs.is_empty());
    assert_eq!((counted.count, counted.more), (4, false));
}

#[test]
fn sort_orders_targets_and_keys_only() {
    let keyspace = sample();
    let by_mod_desc = keyspace
        .range(&pb::RangeRequest {
            sort_order: SortOrder::Descend as i32,
            sort_target: SortTarget::Mod as i32,
            keys_only: true,
            ..range("a", b"\0")
        })
        .unwrap();
    assert_eq!(keys(&by_mod_desc), ["ab", "a", "c", "b"]);
    assert!(by_mod_desc.kvs.iter().all(|kv| kv.value.is_empty()));
    // A non-key target without an order sorts ascending.
    let by_version = keyspace
        .range(&pb::RangeRequest {
            sort_target: SortTarget::Version as i32,
            ..range("a", b"\0")
        })
        .unwrap();
    assert_eq!(
        keys(&by_version),
        ["ab", "b", "c", "a"],
        "ties keep key order"
    );
    assert_eq!(
        keyspace.range(&pb::RangeRequest {
            sort_order: 7,
            ..range("a", b"")
        }),
        Err(KvError::InvalidSortOption)
    );
}

#[test]
fn put_prev_kv_ignore_value_ignore_lease_and_leases() {
    let mut keyspace = sample();
    let response = keyspace
        .put(&pb::PutRequest {
            key: "a".into(),
            ignore_value: true,
            prev_kv: true,
            ..Default::default()
        })
        .unwrap();
    let prev = response.prev_kv.unwrap();
    assert_eq!(
        (prev.value.as_slice(), prev.version, prev.mod_revision),
        (&b"2"[..], 2, 5)
    );
    let now = keyspace.range(&range("a", b"")).unwrap().kvs.remove(0);
    assert_eq!(
        (now.value.as_slice(), now.version, now.create_revision),
        (&b"2"[..], 3, 2)
    );
    let missing = pb::PutRequest {
        key: "zz".into(),
        ignore_value: true,
        ..Default::default()
    };
    assert_eq!(keyspace.put(&missing), Err(KvError::KeyNotFound));
    let both = pb::PutRequest {
        key: "a".into(),
        value: "v".into(),
        ignore_value: true,
        ..Default::default()
    };
    assert_eq!(keyspace.put(&both), Err(KvError::ValueProvided));
    let lease = pb::PutRequest {
        key: "a".into(),
        lease: 5,
        ..Default::default()
    };
    assert_eq!(keyspace.put(&lease), Err(KvError::LeaseNotFound));
    assert_eq!(keyspace.revision(), 7, "failed puts change nothing");
}

/// etcd's apply checks a plain Put's lease before its key, and a Put inside
/// a Txn's key before its lease.
#[test]
fn plain_put_checks_the_lease_before_ignore_value_a_txn_put_the_key_first() {
    let mut keyspace = Keyspace::new();
    let put = pb::PutRequest {
        key: "missing".into(),
        lease: 12_345,
        ignore_value: true,
        ..Default::default()
    };
    assert_eq!(keyspace.put(&put), Err(KvError::LeaseNotFound));
    let txn = pb::TxnRequest {
        success: vec![pb::RequestOp {
            request: Some(Request::RequestPut(put)),
        }],
        ..Default::default()
    };
    assert_eq!(keyspace.txn(&txn), Err(KvError::KeyNotFound));
    assert_eq!(keyspace.revision(), 1, "failed puts change nothing");
}

#[test]
fn delete_range_answers_prev_kvs_in_key_order_and_one_revision() {
    let mut keyspace = sample();
    let response = delete(&mut keyspace, "a", "c");
    assert_eq!(response.deleted, 3);
    let deleted: Vec<&[u8]> = response
        .prev_kvs
        .iter()
        .map(|kv| kv.key.as_slice())
        .collect();
    assert_eq!(deleted, [&b"a"[..], b"ab", b"b"]);
    assert_eq!(response.header.unwrap().revision, 7);
    assert_eq!(keyspace.revision(), 7);
    let recreated = put(&mut keyspace, "a", "new");
    let kv = keyspace.range(&range("a", b"")).unwrap().kvs.remove(0);
    assert_eq!(
        (kv.create_revision, kv.version),
        (recreated, 1),
        "a new generation"
    );
}

#[test]
fn txn_compares_every_target_and_result() {
    let keyspace = sample();
    let holds = |c: pb::Compare| {
        let mut copy = keyspace.clone();
        copy.txn(&pb::TxnRequest {
            compare: vec![c],
            ..Default::default()
        })
        .unwrap()
        .succeeded
    };
    use CompareResult::*;
    use CompareTarget::*;
    assert!(holds(compare("a", Version, Equal, TargetUnion::Version(2))));
    assert!(holds(compare(
        "a",
        Create,
        Equal,
        TargetUnion::CreateRevision(2)
    )));
    assert!(holds(compare(
        "a",
        Mod,
        Greater,
        TargetUnion::ModRevision(4)
    )));
    assert!(holds(compare(
        "a",
        Value,
        Less,
        TargetUnion::Value("3".into())
    )));
    assert!(holds(compare("a", Lease, Equal, TargetUnion::Lease(0))));
    assert!(holds(compare(
        "a",
        Value,
        NotEqual,
        TargetUnion::Value("1".into())
    )));
    assert!(!holds(compare("a", Mod, Less, TargetUnion::ModRevision(5))));
    // A missing key compares as a zero KeyValue, but a VALUE compare fails.
    assert!(holds(compare(
        "zz",
        Version,
        Equal,
        TargetUnion::Version(0)
    )));
    assert!(holds(compare(
        "zz",
        Create,
        Equal,
        TargetUnion::CreateRevision(0)
    )));
    assert!(!holds(compare(
        "zz",
        Value,
        Equal,
        TargetUnion::Value(vec![])
    )));
    // Over a range, every key must match.
    let over = |c: pb::Compare| pb::Compare {
        range_end: "b".into(),
        ..c
    };
    assert!(holds(over(compare(
        "a",
        Mod,
        Greater,
        TargetUnion::ModRevision(4)
    ))));
    assert!(!holds(over(compare(
        "a",
        Version,
        Equal,
        TargetUnion::Version(2)
    ))));
}

#[test]
fn txn_compares_see_the_state_before_the_txn_and_later_ops_see_earlier_ones() {
    let mut keyspace = sample();
    let inner = pb::TxnRequest {
        // Evaluated before the outer put changes a's value.
        compare: vec![compare(
            "a",
            CompareTarget::Value,
            CompareResult::Equal,
            TargetUnion::Value("2".into()),
        )],
        success: vec![put_op("b", "inner-then")],
        failure: vec![put_op("c", "inner-else")],
    };
    let response = keyspace
        .txn(&pb::TxnRequest {
            compare: vec![],
            success: vec![put_op("a", "3"), range_op(range("a", b"")), txn_op(inner)],
            failure: vec![],
        })
        .unwrap();
    assert!(response.succeeded);
    assert_eq!(response.header.unwrap().revision, 7);
    let Some(Response::ResponseRange(seen)) = &response.responses[1].response else {
        panic!("a range response");
    };
    assert_eq!(seen.kvs[0].value, b"3", "the range sees the put before it");
    assert_eq!(seen.header.as_ref().unwrap().revision, 7);
    let Some(Response::ResponseTxn(nested)) = &response.responses[2].response else {
        panic!("a txn response");
    };
    assert!(
        nested.succeeded,
        "the nested compare saw a=2, before the put"
    );
    assert_eq!(nested.header, None, "nested txn responses carry no header");
    let b = keyspace.range(&range("b", b"")).unwrap().kvs.remove(0);
    assert_eq!(
        (b.value.as_slice(), b.mod_revision),
        (&b"inner-then"[..], 7)
    );
    assert_eq!(keyspace.revision(), 7, "one write txn, one revision");
}

#[test]
fn a_txn_that_changes_nothing_keeps_the_revision() {
    let mut keyspace = sample();
    let response = keyspace
        .txn(&pb::TxnRequest {
            compare: vec![],
            success: vec![delete_op("zz", ""), range_op(range("a", b""))],
            failure: vec![],
        })
        .unwrap();
    assert_eq!(response.header.unwrap().revision, 6);
    assert_eq!(keyspace.revision(), 6);
}

#[test]
fn duplicate_keys_anywhere_on_a_path_are_refused() {
    let txn = |success: Vec<pb::RequestOp>| pb::TxnRequest {
        compare: vec![],
        success,
        failure: vec![],
    };
    let nested = |success: Vec<pb::RequestOp>, failure: Vec<pb::RequestOp>| {
        txn_op(pb::TxnRequest {
            compare: vec![],
            success,
            failure,
        })
    };
    let refused = [
        txn(vec![put_op("a", "1"), put_op("a", "2")]),
        txn(vec![delete_op("a", "c"), put_op("b", "2")]),
        txn(vec![put_op("b", "2"), delete_op("b", "")]),
        txn(vec![
            delete_op("a", "c"),
            nested(vec![put_op("b", "1")], vec![]),
        ]),
        txn(vec![
            put_op("b", "1"),
            nested(vec![put_op("b", "2")], vec![]),
        ]),
    ];
    for request in &refused {
        assert_eq!(
            check_txn_request(request, 128),
            Err(KvError::DuplicateKey),
            "{request:?}"
        );
        assert_eq!(Keyspace::new().txn(request), Err(KvError::DuplicateKey));
    }
    let allowed = [
        // Then and else exclude each other.
        txn(vec![nested(vec![put_op("b", "1")], vec![put_op("b", "2")])]),
        // Deletes may overlap deletes.
        txn(vec![delete_op("a", "c"), delete_op("b", "")]),
        // etcd takes "\0" literally in this check: a from-key delete overlaps no put.
        txn(vec![delete_op("a", "\0"), put_op("b", "1")]),
    ];
    for request in &allowed {
        assert_eq!(check_txn_request(request, 128), Ok(()), "{request:?}");
    }
}

#[test]
fn too_many_ops_counts_per_level_with_what_the_parent_leaves() {
    let puts = |count: usize| {
        (0..count)
            .map(|i| put_op(&format!("k{i}"), "v"))
            .collect::<Vec<_>>()
    };
    let flat = |count| pb::TxnRequest {
        compare: vec![],
        success: puts(count),
        failure: vec![],
    };
    assert_eq!(check_txn_request(&flat(128), 128), Ok(()));
    assert_eq!(check_txn_request(&flat(129), 128), Err(KvError::TooManyOps));
    // The parent uses 2 of 4, so a nested txn may use 2.
    let parent = |nested_count: usize| pb::TxnRequest {
        compare: vec![],
        success: vec![
            txn_op(pb::TxnRequest {
                compare: vec![],
                success: (0..nested_count)
                    .map(|i| put_op(&format!("n{i}"), "v"))
                    .collect(),
                failure: vec![],
            }),
            range_op(range("a", b"")),
        ],
        failure: vec![],
    };
    assert_eq!(check_txn_request(&parent(2), 4), Ok(()));
    assert_eq!(check_txn_request(&parent(3), 4), Err(KvError::TooManyOps));
}

#[test]
fn a_txn_reading_a_compacted_revision_fails_whole_and_changes_nothing() {
    // etcd #18667: decided from replicated state only, so every member agrees.
    let mut keyspace = sample();
    keyspace
        .compact(&pb::CompactionRequest {
            revision: 5,
            physical: false,
        })
        .unwrap();
    let before = keyspace.clone();
    let request = pb::TxnRequest {
        compare: vec![],
        success: vec![
            put_op("x", "1"),
            range_op(pb::RangeRequest {
                revision: 3,
                ..range("a", b"")
            }),
        ],
        failure: vec![],
    };
    assert_eq!(keyspace.txn(&request), Err(KvError::Compacted));
    assert_eq!(keyspace, before);
}

#[test]
fn compaction_rules_and_errors() {
    let mut keyspace = Keyspace::new();
    assert_eq!(
        keyspace.compact(&pb::CompactionRequest {
            revision: 0,
            physical: false
        }),
        Ok(pb::CompactionResponse {
            header: Some(pb::ResponseHeader {
                revision: 1,
                ..Default::default()
            })
        }),
        "compact 0 on a new store is accepted, as etcd's compacted revision starts at -1"
    );
    put(&mut keyspace, "a", "1"); // 2
    put(&mut keyspace, "a", "2"); // 3
    put(&mut keyspace, "b", "1"); // 4
    delete(&mut keyspace, "b", ""); // 5
    put(&mut keyspace, "c", "1"); // 6
    let compact = |keyspace: &mut Keyspace, revision| {
        keyspace.compact(&pb::CompactionRequest {
            revision,
            physical: false,
        })
    };
    assert_eq!(compact(&mut keyspace, 7), Err(KvError::FutureRevision));
    compact(&mut keyspace, 5).unwrap();
    assert_eq!(compact(&mut keyspace, 5), Err(KvError::Compacted));
    assert_eq!(compact(&mut keyspace, 4), Err(KvError::Compacted));
    // a@3 kept (newest at or below 5), a@2 dropped; b's tombstone at exactly 5
    // kept; c@6 kept.
    assert_eq!(keyspace.retained_revisions(), 3);
    compact(&mut keyspace, 6).unwrap();
    assert_eq!(
        keyspace.retained_revisions(),
        2,
        "the tombstone below 6 goes"
    );
    assert_eq!(keyspace.revision(), 6);
}

#[test]
fn hash_kv_follows_content_and_checks_revisions() {
    let mut a = sample();
    let mut b = sample();
    assert_eq!(a.hash_kv(0), b.hash_kv(0));
    assert_eq!(a.hash_kv(4), b.hash_kv(4));
    assert_ne!(a.hash_kv(4).unwrap().hash, a.hash_kv(5).unwrap().hash);
    put(&mut b, "a", "other");
    assert_ne!(a.hash_kv(0).unwrap().hash, b.hash_kv(0).unwrap().hash);
    assert_eq!(
        a.hash_kv(5).unwrap().hash,
        b.hash_kv(5).unwrap().hash,
        "same past"
    );
    assert_eq!(a.hash_kv(9), Err(KvError::FutureRevision));
    a.compact(&pb::CompactionRequest {
        revision: 4,
        physical: false,
    })
    .unwrap();
    assert_eq!(a.hash_kv(3), Err(KvError::Compacted));
    let response = a.hash_kv(0).unwrap();
    assert_eq!(
        (response.compact_revision, response.header.unwrap().revision),
        (4, 6)
    );
    assert_eq!(Keyspace::new().hash_kv(0).unwrap().compact_revision, -1);
}

#[test]
fn nospace_alarm_blocks_puts_until_disarmed() {
    let mut keyspace = sample();
    let alarm = |action: pb::alarm_request::AlarmAction| pb::AlarmRequest {
        action: action as i32,
        member_id: 7,
        alarm: pb::AlarmType::Nospace as i32,
    };
    let armed = keyspace
        .alarm(&alarm(pb::alarm_request::AlarmAction::Activate))
        .unwrap();
    assert_eq!(armed.alarms.len(), 1);
    assert!(keyspace.no_space());
    let put_request = pb::PutRequest {
        key: "a".into(),
        value: "v".into(),
        ..Default::default()
    };
    assert_eq!(keyspace.put(&put_request), Err(KvError::NoSpace));
    assert_eq!(
        keyspace.txn(&pb::TxnRequest {
            compare: vec![],
            success: vec![],
            failure: vec![put_op("x", "1")],
        }),
        Err(KvError::NoSpace),
        "a txn that may put is refused whichever branch runs"
    );
    assert_eq!(
        delete(&mut keyspace, "c", "").deleted,
        1,
        "deletes still work"
    );
    let listed = keyspace
        .alarm(&pb::AlarmRequest {
            action: pb::alarm_request::AlarmAction::Get as i32,
            member_id: 0,
            alarm: pb::AlarmType::None as i32,
        })
        .unwrap();
    assert_eq!(listed.alarms, armed.alarms);
    keyspace
        .alarm(&alarm(pb::alarm_request::AlarmAction::Deactivate))
        .unwrap();
    assert!(!keyspace.no_space());
    assert!(keyspace.put(&put_request).is_ok());
}
