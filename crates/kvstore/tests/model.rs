//! Model-based property test: random sequences of etcd requests applied to
//! the [`Keyspace`] and to a deliberately naive model of etcd's semantics
//! (the full state at every revision, kept in a `Vec`), comparing every
//! response and error. Also: two state machines fed the same random log end
//! with byte-identical snapshots and equal HashKV.

use std::collections::BTreeMap;

use etcdproto::etcdserverpb as pb;
use etcdproto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use etcdproto::etcdserverpb::range_request::{SortOrder, SortTarget};
use etcdproto::etcdserverpb::request_op::Request as OpRequest;
use etcdproto::etcdserverpb::response_op::Response as OpResponse;
use etcdproto::mvccpb::KeyValue;
use kvstore::testing::{encode_request, Request};
use kvstore::{Keyspace, KvConfig, KvError, RequestId};
use proptest::prelude::*;
use raftnode::StateMachine;

type State = BTreeMap<Vec<u8>, KeyValue>;

/// etcd as a list of whole states: `states[r]` is the keyspace at revision r.
#[derive(Debug, Clone)]
struct Model {
    states: Vec<State>,
    compacted: i64,
}

fn in_span(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    match end {
        [] => key == start,
        [0] => key >= start,
        end => key >= start && key < end,
    }
}

impl Model {
    fn new() -> Model {
        Model {
            states: vec![State::new(), State::new()],
            compacted: -1,
        }
    }

    fn rev(&self) -> i64 {
        self.states.len() as i64 - 1
    }

    fn head(&self) -> &State {
        self.states.last().unwrap()
    }

    fn header(revision: i64) -> Option<pb::ResponseHeader> {
        Some(pb::ResponseHeader {
            revision,
            ..Default::default()
        })
    }

    fn range_in(&self, state: &State, r: &pb::RangeRequest) -> Result<pb::RangeResponse, KvError> {
        if r.key.is_empty() {
            return Err(KvError::EmptyKey);
        }
        let at = if r.revision <= 0 {
            self.rev()
        } else {
            r.revision
        };
        if r.revision > self.rev() {
            return Err(KvError::FutureRevision);
        }
        if at < self.compacted {
            return Err(KvError::Compacted);
        }
        let state = if r.revision <= 0 {
            state
        } else {
            &self.states[at as usize]
        };
        let all: Vec<KeyValue> = state
            .values()
            .filter(|kv| in_span(&kv.key, &r.key, &r.range_end))
            .cloned()
            .collect();
        let count = all.len() as i64;
        if r.count_only {
            return Ok(pb::RangeResponse {
                header: Self::header(self.rev()),
                kvs: vec![],
                more: false,
                count,
            });
        }
        let filtered = r.min_mod_revision != 0
            || r.max_mod_revision != 0
            || r.min_create_revision != 0
            || r.max_create_revision != 0;
        let mut kvs: Vec<KeyValue> = if r.sort_order == 0 && !filtered && r.limit > 0 {
            // etcd reads limit + 1 in key order when it neither sorts nor filters.
            all.into_iter().take(r.limit as usize + 1).collect()
        } else {
            all
        };
        kvs.retain(|kv| {
            (r.max_mod_revision == 0 || kv.mod_revision <= r.max_mod_revision)
                && (r.min_mod_revision == 0 || kv.mod_revision >= r.min_mod_revision)
                && (r.max_create_revision == 0 || kv.create_revision <= r.max_create_revision)
                && (r.min_create_revision == 0 || kv.create_revision >= r.min_create_revision)
        });
        let order = if r.sort_target != 0 && r.sort_order == 0 {
            1
        } else {
            r.sort_order
        };
        if order != 0 {
            let key = |kv: &KeyValue| -> (i64, Vec<u8>) {
                match r.sort_target {
                    1 => (kv.version, vec![]),
                    2 => (kv.create_revision, vec![]),
                    3 => (kv.mod_revision, vec![]),
                    4 => (0, kv.value.clone()),
                    _ => (0, kv.key.clone()),
                }
            };
            kvs.sort_by(|a, b| {
                let o = key(a).cmp(&key(b));
                if order == 2 {
                    o.reverse()
                } else {
                    o
                }
            });
        }
        let mut more = false;
        if r.limit > 0 && kvs.len() > r.limit as usize {
            kvs.truncate(r.limit as usize);
            more = true;
        }
        if r.keys_only {
            for kv in &mut kvs {
                kv.value.clear();
            }
        }
        Ok(pb::RangeResponse {
            header: Self::header(self.rev()),
            kvs,
            more,
            count,
        })
    }

    /// Applies one write to `work` at revision `rev`, `sub` changes so far.
    fn put_in(work: &mut State, rev: i64, p: &pb::PutRequest) -> Option<KeyValue> {
        let previous = work.get(&p.key).cloned();
        let kv = KeyValue {
            key: p.key.clone(),
            create_revision: previous.as_ref().map_or(rev, |kv| kv.create_revision),
            mod_revision: rev,
            version: previous.as_ref().map_or(1, |kv| kv.version + 1),
            value: p.value.clone(),
            lease: 0,
        };
        work.insert(p.key.clone(), kv);
        previous.filter(|_| p.prev_kv)
    }

    fn delete_in(work: &mut State, d: &pb::DeleteRangeRequest) -> Vec<KeyValue> {
        let doomed: Vec<Vec<u8>> = work
            .keys()
            .filter(|k| in_span(k, &d.key, &d.range_end))
            .cloned()
            .collect();
        doomed.iter().map(|k| work.remove(k).unwrap()).collect()
    }

    fn commit(&mut self, work: State, changed: bool) -> i64 {
        if changed {
            self.states.push(work);
        }
        self.rev()
    }

    fn put(&mut self, p: &pb::PutRequest) -> Result<pb::PutResponse, KvError> {
        if p.key.is_empty() {
            return Err(KvError::EmptyKey);
        }
        let mut work = self.head().clone();
        let prev_kv = Self::put_in(&mut work, self.rev() + 1, p);
        let rev = self.commit(work, true);
        Ok(pb::PutResponse {
            header: Self::header(rev),
            prev_kv,
        })
    }

    fn delete(&mut self, d: &pb::DeleteRangeRequest) -> Result<pb::DeleteRangeResponse, KvError> {
        if d.key.is_empty() {
            return Err(KvError::EmptyKey);
        }
        let mut work = self.head().clone();
        let deleted = Self::delete_in(&mut work, d);
        let rev = self.commit(work, !deleted.is_empty());
        Ok(pb::DeleteRangeResponse {
            header: Self::header(rev),
            deleted: deleted.len() as i64,
            prev_kvs: if d.prev_kv { deleted } else { vec![] },
        })
    }

    fn compare(&self, c: &pb::Compare) -> bool {
        let kvs: Vec<&KeyValue> = self
            .head()
            .values()
            .filter(|kv| in_span(&kv.key, &c.key, &c.range_end))
            .collect();
        let zero = KeyValue::default();
        if kvs.is_empty() && c.target == CompareTarget::Value as i32 {
            return false;
        }
        let check = |kv: &KeyValue| {
            let o = match (c.target, c.target_union.as_ref()) {
                (0, Some(TargetUnion::Version(v))) => kv.version.cmp(v),
                (1, Some(TargetUnion::CreateRevision(v))) => kv.create_revision.cmp(v),
                (2, Some(TargetUnion::ModRevision(v))) => kv.mod_revision.cmp(v),
                (3, Some(TargetUnion::Value(v))) => kv.value.cmp(v),
                (4, Some(TargetUnion::Lease(v))) => kv.lease.cmp(v),
                _ => unreachable!("the generator pairs targets and unions"),
            };
            match c.result {
                0 => o.is_eq(),
                1 => o.is_gt(),
                2 => o.is_lt(),
                _ => o.is_ne(),
            }
        };
        if kvs.is_empty() {
            check(&zero)
        } else {
            kvs.into_iter().all(check)
        }
    }

    /// One-level txns whose ops write distinct keys (the generator makes sure).
    fn txn(&mut self, t: &pb::TxnRequest) -> Result<pb::TxnResponse, KvError> {
        let succeeded = t.compare.iter().all(|c| self.compare(c));
        let ops = if succeeded { &t.success } else { &t.failure };
        for op in ops {
            if let Some(OpRequest::RequestRange(r)) = &op.request {
                if r.revision > self.rev() {
                    return Err(KvError::FutureRevision);
                }
                if r.revision > 0 && r.revision < self.compacted {
                    return Err(KvError::Compacted);
                }
            }
        }
        let mut work = self.head().clone();
        let mut changed = false;
        let next = self.rev() + 1;
        let mut responses = vec![];
        for op in ops {
            let current = if changed { next } else { self.rev() };
            let response = match &op.request {
                Some(OpRequest::RequestPut(p)) => {
                    let prev_kv = Self::put_in(&mut work, next, p);
                    changed = true;
                    OpResponse::ResponsePut(pb::PutResponse {
                        header: Self::header(next),
                        prev_kv,
                    })
                }
                Some(OpRequest::RequestDeleteRange(d)) => {
                    let deleted = Self::delete_in(&mut work, d);
                    changed |= !deleted.is_empty();
                    OpResponse::ResponseDeleteRange(pb::DeleteRangeResponse {
                        header: Self::header(if changed { next } else { current }),
                        deleted: deleted.len() as i64,
                        prev_kvs: if d.prev_kv { deleted } else { vec![] },
                    })
                }
                Some(OpRequest::RequestRange(r)) => {
                    // Ranges in txns read the txn's own view at head.
                    let mut view = self.clone();
                    if changed {
                        view.states.push(work.clone());
                    }
                    OpResponse::ResponseRange(view.range_in(&work, r)?)
                }
                _ => unreachable!(),
            };
            responses.push(pb::ResponseOp {
                response: Some(response),
            });
        }
        let rev = self.commit(work, changed);
        Ok(pb::TxnResponse {
            header: Self::header(rev),
            succeeded,
            responses,
        })
    }

    fn compact(&mut self, c: &pb::CompactionRequest) -> Result<pb::CompactionResponse, KvError> {
        if c.revision <= self.compacted {
            return Err(KvError::Compacted);
        }
        if c.revision > self.rev() {
            return Err(KvError::FutureRevision);
        }
        self.compacted = c.revision;
        Ok(pb::CompactionResponse {
            header: Self::header(self.rev()),
        })
    }
}

#[derive(Debug, Clone)]
enum Op {
    Put(pb::PutRequest),
    Delete(pb::DeleteRangeRequest),
    Range(pb::RangeRequest),
    Txn(pb::TxnRequest),
    Compact(pb::CompactionRequest),
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"a".to_vec()),
        Just(b"ab".to_vec()),
        Just(b"b".to_vec()),
        Just(b"c".to_vec()),
        Just(b"d".to_vec()),
        Just(vec![0xff]),
    ]
}

fn range_end() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => Just(vec![]),
        1 => Just(vec![0]),
        1 => Just(b"b".to_vec()),
        1 => Just(b"c".to_vec()),
        1 => Just(b"e".to_vec()),
    ]
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"".to_vec()),
        Just(b"x".to_vec()),
        Just(b"y".to_vec()),
        Just(b"zz".to_vec())
    ]
}

fn put() -> impl Strategy<Value = pb::PutRequest> {
    (key(), value(), any::<bool>()).prop_map(|(key, value, prev_kv)| pb::PutRequest {
        key,
        value,
        prev_kv,
        ..Default::default()
    })
}

fn delete() -> impl Strategy<Value = pb::DeleteRangeRequest> {
    (key(), range_end(), any::<bool>()).prop_map(|(key, range_end, prev_kv)| {
        pb::DeleteRangeRequest {
            key,
            range_end,
            prev_kv,
        }
    })
}

fn range() -> impl Strategy<Value = pb::RangeRequest> {
    (
        (key(), range_end(), -1i64..14, 0i64..4),
        (0i32..3, 0i32..5, any::<bool>(), any::<bool>()),
        (0i64..3, 0i64..3, 0i64..3, 0i64..3),
    )
        .prop_map(
            |(
                (key, range_end, revision, limit),
                (sort_order, sort_target, keys_only, count_only),
                (min_mod, max_mod, min_create, max_create),
            )| {
                let scale = |v: i64| if v == 0 { 0 } else { v * 3 };
                pb::RangeRequest {
                    key,
                    range_end,
                    limit,
                    revision,
                    sort_order,
                    sort_target,
                    serializable: false,
                    keys_only,
                    count_only: count_only && revision % 3 == 0,
                    min_mod_revision: scale(min_mod),
                    max_mod_revision: scale(max_mod) + if max_mod > 0 { 4 } else { 0 },
                    min_create_revision: scale(min_create),
                    max_create_revision: scale(max_create) + if max_create > 0 { 4 } else { 0 },
                }
            },
        )
}

fn compare() -> impl Strategy<Value = pb::Compare> {
    (
        key(),
        prop_oneof![3 => Just(vec![]), 1 => range_end()],
        0i32..4,
        0i32..5,
        0i64..6,
        value(),
    )
        .prop_map(|(key, range_end, result, target, number, value)| {
            let target_union = match target {
                0 => TargetUnion::Version(number),
                1 => TargetUnion::CreateRevision(number * 2),
                2 => TargetUnion::ModRevision(number * 2),
                3 => TargetUnion::Value(value),
                _ => TargetUnion::Lease(number % 2),
            };
            pb::Compare {
                result,
                target,
                key,
                target_union: Some(target_union),
                range_end,
            }
        })
}

/// Ops of one branch: puts on distinct keys, ranges, and deletes that do not
/// overlap a put (so the txn is valid).
fn branch() -> impl Strategy<Value = Vec<pb::RequestOp>> {
    proptest::collection::vec(
        prop_oneof![
            put().prop_map(OpRequest::RequestPut),
            range().prop_map(|r| OpRequest::RequestRange(pb::RangeRequest { revision: 0, ..r })),
            (key(), any::<bool>()).prop_map(|(key, prev_kv)| OpRequest::RequestDeleteRange(
                pb::DeleteRangeRequest {
                    key,
                    range_end: vec![],
                    prev_kv
                }
            )),
        ],
        0..4,
    )
    .prop_map(|ops| {
        let mut written: Vec<Vec<u8>> = vec![];
        ops.into_iter()
            .filter(|op| match op {
                OpRequest::RequestPut(p) => {
                    let fresh = !written.contains(&p.key);
                    written.push(p.key.clone());
                    fresh
                }
                OpRequest::RequestDeleteRange(d) => {
                    let fresh = !written.contains(&d.key);
                    written.push(d.key.clone());
                    fresh
                }
                _ => true,
            })
            .map(|request| pb::RequestOp {
                request: Some(request),
            })
            .collect()
    })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => put().prop_map(Op::Put),
        2 => delete().prop_map(Op::Delete),
        5 => range().prop_map(Op::Range),
        3 => (proptest::collection::vec(compare(), 0..3), branch(), branch()).prop_map(
            |(compare, success, failure)| Op::Txn(pb::TxnRequest {
                compare,
                success,
                failure
            })
        ),
        1 => (0i64..14).prop_map(|revision| Op::Compact(pb::CompactionRequest {
            revision,
            physical: false
        })),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn keyspace_matches_the_naive_model(ops in proptest::collection::vec(op(), 1..60)) {
        let mut keyspace = Keyspace::new();
        let mut model = Model::new();
        for (step, op) in ops.iter().enumerate() {
            match op {
                Op::Put(p) => prop_assert_eq!(keyspace.put(p), model.put(p), "step {} {:?}", step, op),
                Op::Delete(d) => {
                    prop_assert_eq!(keyspace.delete_range(d), model.delete(d), "step {} {:?}", step, op)
                }
                Op::Range(r) => {
                    let head = model.head().clone();
                    prop_assert_eq!(keyspace.range(r), model.range_in(&head, r), "step {} {:?}", step, op)
                }
                Op::Txn(t) => prop_assert_eq!(keyspace.txn(t), model.txn(t), "step {} {:?}", step, op),
                Op::Compact(c) => {
                    prop_assert_eq!(keyspace.compact(c), model.compact(c), "step {} {:?}", step, op)
                }
            }
            prop_assert_eq!(keyspace.revision(), model.rev());
        }
        // Every readable revision answers exactly as the model's state then.
        for revision in model.compacted.max(1)..=model.rev() {
            let all = pb::RangeRequest {
                key: vec![0],
                range_end: vec![0],
                revision,
                ..Default::default()
            };
            let head = model.head().clone();
            prop_assert_eq!(keyspace.range(&all), model.range_in(&head, &all), "revision {}", revision);
        }
    }

    #[test]
    fn same_log_gives_identical_snapshots_and_hashes(ops in proptest::collection::vec(op(), 1..60)) {
        let log: Vec<Vec<u8>> = ops
            .iter()
            .enumerate()
            .map(|(seq, op)| {
                let id = RequestId { node_id: 1 + seq as u64 % 3, boot_nonce: 9, seq: seq as u64 };
                let request = match op.clone() {
                    Op::Put(p) => Request::Put(p),
                    Op::Delete(d) => Request::DeleteRange(d),
                    Op::Range(r) => Request::Txn(pb::TxnRequest {
                        compare: vec![],
                        success: vec![pb::RequestOp { request: Some(OpRequest::RequestRange(r)) }],
                        failure: vec![],
                    }),
                    Op::Txn(t) => Request::Txn(t),
                    Op::Compact(c) => Request::Compaction(c),
                };
                encode_request(id, request)
            })
            .collect();
        let mut machines: Vec<_> = (1..=2).map(|node| kvstore::new(KvConfig::new(node)).1).collect();
        for machine in &mut machines {
            for (index, payload) in log.iter().enumerate() {
                machine.apply(index as u64 + 1, payload);
            }
        }
        prop_assert_eq!(machines[0].snapshot(), machines[1].snapshot());
        let (a, b) = (machines[0].keyspace(), machines[1].keyspace());
        prop_assert_eq!(a.hash_kv(0), b.hash_kv(0));
        // A restored copy is the same keyspace, down to the bytes.
        let mut restored = kvstore::new(KvConfig::new(3)).1;
        restored.restore(log.len() as u64, &machines[0].snapshot()).unwrap();
        prop_assert_eq!(restored.keyspace(), a);
        prop_assert_eq!(restored.snapshot(), machines[0].snapshot());
    }
}

#[test]
fn sort_and_compare_enums_are_etcds() {
    // Guards the model's numeric encoding against the generated enums.
    assert_eq!(SortOrder::Descend as i32, 2);
    assert_eq!(SortTarget::Value as i32, 4);
    assert_eq!(CompareResult::NotEqual as i32, 3);
    assert_eq!(CompareTarget::Lease as i32, 4);
}
