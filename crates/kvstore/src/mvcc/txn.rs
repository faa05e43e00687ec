//! etcd's `Txn`: compares evaluated on the state before the txn (nested
//! txns' compares too), then the chosen branch's operations in order, each
//! seeing the earlier ones; plus the request checks (empty keys, sizes,
//! duplicate keys) shared by the request side and apply.

use std::collections::BTreeSet;

use etcdproto::etcdserverpb as pb;
use etcdproto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use etcdproto::etcdserverpb::request_op::Request;
use etcdproto::etcdserverpb::response_op::Response;
use etcdproto::mvccpb::KeyValue;

use super::range::{self, check_range};
use super::{Keyspace, Span, Writer};
use crate::error::KvError;

/// The request-only checks of a put (etcd's `checkPutRequest`).
pub(crate) fn check_put(request: &pb::PutRequest) -> Result<(), KvError> {
    if request.key.is_empty() {
        return Err(KvError::EmptyKey);
    }
    if request.ignore_value && !request.value.is_empty() {
        return Err(KvError::ValueProvided);
    }
    if request.ignore_lease && request.lease != 0 {
        return Err(KvError::LeaseProvided);
    }
    Ok(())
}

/// The request-only checks of a delete-range.
pub(crate) fn check_delete(request: &pb::DeleteRangeRequest) -> Result<(), KvError> {
    if request.key.is_empty() {
        return Err(KvError::EmptyKey);
    }
    Ok(())
}

/// The request-only checks of a txn, as etcd's `checkTxnRequest` then
/// `checkIntervals`: at most `max_txn_ops` compares or operations per branch
/// at each level (a nested txn gets what its parent leaves), non-empty keys,
/// and no key written twice (or put and deleted) on one path.
pub fn check_txn_request(request: &pb::TxnRequest, max_txn_ops: usize) -> Result<(), KvError> {
    check_sizes(request, max_txn_ops as i64)?;
    check_intervals(&request.success)?;
    check_intervals(&request.failure)?;
    Ok(())
}

fn check_sizes(request: &pb::TxnRequest, max_txn_ops: i64) -> Result<(), KvError> {
    let ops = request
        .compare
        .len()
        .max(request.success.len())
        .max(request.failure.len()) as i64;
    if ops > max_txn_ops {
        return Err(KvError::TooManyOps);
    }
    if request.compare.iter().any(|compare| compare.key.is_empty()) {
        return Err(KvError::EmptyKey);
    }
    for op in request.success.iter().chain(&request.failure) {
        match &op.request {
            Some(Request::RequestRange(range)) => check_range(range)?,
            Some(Request::RequestPut(put)) => check_put(put)?,
            Some(Request::RequestDeleteRange(delete)) => check_delete(delete)?,
            Some(Request::RequestTxn(nested)) => check_sizes(nested, max_txn_ops - ops)?,
            None => {}
        }
    }
    Ok(())
}

/// A delete's interval as etcd's duplicate check sees it: a point for an
/// empty `range_end`, else `[key, range_end)` taken literally (so a
/// `"\0"` from-key delete overlaps nothing, as in etcd).
#[derive(Debug, Clone)]
struct DeleteInterval {
    key: Vec<u8>,
    range_end: Vec<u8>,
}

impl DeleteInterval {
    fn contains(&self, point: &[u8]) -> bool {
        if self.range_end.is_empty() {
            return point == self.key.as_slice();
        }
        point >= self.key.as_slice() && point < self.range_end.as_slice()
    }
}

fn overlaps(deletes: &[DeleteInterval], key: &[u8]) -> bool {
    deletes.iter().any(|delete| delete.contains(key))
}

/// etcd's `checkIntervals`: the puts and deletes of `ops` (and nested txns),
/// or `DuplicateKey`.
fn check_intervals(
    ops: &[pb::RequestOp],
) -> Result<(BTreeSet<Vec<u8>>, Vec<DeleteInterval>), KvError> {
    let mut deletes: Vec<DeleteInterval> = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(Request::RequestDeleteRange(delete)) => Some(DeleteInterval {
                key: delete.key.clone(),
                range_end: delete.range_end.clone(),
            }),
            _ => None,
        })
        .collect();
    let mut puts: BTreeSet<Vec<u8>> = BTreeSet::new();
    for op in ops {
        let Some(Request::RequestTxn(nested)) = &op.request else {
            continue;
        };
        let (puts_then, deletes_then) = check_intervals(&nested.success)?;
        let (puts_else, deletes_else) = check_intervals(&nested.failure)?;
        for key in &puts_then {
            if puts.contains(key) || overlaps(&deletes, key) {
                return Err(KvError::DuplicateKey);
            }
            puts.insert(key.clone());
        }
        for key in &puts_else {
            // The two branches exclude each other: a key in both is fine.
            if (puts.contains(key) && !puts_then.contains(key)) || overlaps(&deletes, key) {
                return Err(KvError::DuplicateKey);
            }
            puts.insert(key.clone());
        }
        deletes.extend(deletes_then);
        deletes.extend(deletes_else);
    }
    for op in ops {
        let Some(Request::RequestPut(put)) = &op.request else {
            continue;
        };
        if puts.contains(&put.key) || overlaps(&deletes, &put.key) {
            return Err(KvError::DuplicateKey);
        }
        puts.insert(put.key.clone());
    }
    Ok((puts, deletes))
}

/// Whether no branch, at any depth, writes (such a txn needs no proposal).
pub fn is_txn_read_only(request: &pb::TxnRequest) -> bool {
    request
        .success
        .iter()
        .chain(&request.failure)
        .all(|op| match &op.request {
            Some(Request::RequestPut(_)) | Some(Request::RequestDeleteRange(_)) => false,
            Some(Request::RequestTxn(nested)) => is_txn_read_only(nested),
            Some(Request::RequestRange(_)) | None => true,
        })
}

/// Whether any branch, at any depth, puts (etcd's quota cost > 0).
pub(crate) fn txn_has_put(request: &pb::TxnRequest) -> bool {
    request
        .success
        .iter()
        .chain(&request.failure)
        .any(|op| match &op.request {
            Some(Request::RequestPut(_)) => true,
            Some(Request::RequestTxn(nested)) => txn_has_put(nested),
            _ => false,
        })
}

fn compare_ints(actual: i64, expected: i64) -> std::cmp::Ordering {
    actual.cmp(&expected)
}

/// etcd's `compareKV`: an unknown target compares equal, an unknown result
/// holds.
fn compare_kv(compare: &pb::Compare, kv: &KeyValue) -> bool {
    use std::cmp::Ordering;
    let union = compare.target_union.as_ref();
    let ordering = match CompareTarget::try_from(compare.target) {
        Ok(CompareTarget::Value) => {
            let expected: &[u8] = match union {
                Some(TargetUnion::Value(value)) => value,
                _ => &[],
            };
            kv.value.as_slice().cmp(expected)
        }
        Ok(CompareTarget::Create) => {
            let expected = match union {
                Some(TargetUnion::CreateRevision(rev)) => *rev,
                _ => 0,
            };
            compare_ints(kv.create_revision, expected)
        }
        Ok(CompareTarget::Mod) => {
            let expected = match union {
                Some(TargetUnion::ModRevision(rev)) => *rev,
                _ => 0,
            };
            compare_ints(kv.mod_revision, expected)
        }
        Ok(CompareTarget::Version) => {
            let expected = match union {
                Some(TargetUnion::Version(version)) => *version,
                _ => 0,
            };
            compare_ints(kv.version, expected)
        }
        Ok(CompareTarget::Lease) => {
            let expected = match union {
                Some(TargetUnion::Lease(lease)) => *lease,
                _ => 0,
            };
            compare_ints(kv.lease, expected)
        }
        Err(_) => Ordering::Equal,
    };
    match CompareResult::try_from(compare.result) {
        Ok(CompareResult::Equal) => ordering == Ordering::Equal,
        Ok(CompareResult::NotEqual) => ordering != Ordering::Equal,
        Ok(CompareResult::Greater) => ordering == Ordering::Greater,
        Ok(CompareResult::Less) => ordering == Ordering::Less,
        Err(_) => true,
    }
}

/// etcd's `applyCompare`: every key in the range must match; no key at all
/// compares as a zero KeyValue, except that a VALUE compare then fails.
fn apply_compare(keyspace: &Keyspace, compare: &pb::Compare) -> bool {
    let span = Span::of(&compare.key, &compare.range_end);
    let found = keyspace.visible(span, keyspace.revision);
    if found.is_empty() {
        if compare.target == CompareTarget::Value as i32 {
            return false;
        }
        return compare_kv(compare, &KeyValue::default());
    }
    found
        .iter()
        .all(|(key, modified, record)| compare_kv(compare, &record.key_value(key, *modified)))
}

/// etcd's `compareToPath`: the branch taken at this txn and, depth first, at
/// every nested txn of the taken branches, all on the state before the txn.
fn compare_to_path(keyspace: &Keyspace, request: &pb::TxnRequest, path: &mut Vec<bool>) {
    let succeeded = request
        .compare
        .iter()
        .all(|compare| apply_compare(keyspace, compare));
    path.push(succeeded);
    let branch = if succeeded {
        &request.success
    } else {
        &request.failure
    };
    for op in branch {
        if let Some(Request::RequestTxn(nested)) = &op.request {
            compare_to_path(keyspace, nested, path);
        }
    }
}

/// Which of etcd's two passes of `checkRequests` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Puts,
    Ranges,
}

/// The state-dependent checks of the taken path (etcd's `checkRequests`):
/// puts with `ignore_*` need their key, leases must exist, ranges must be
/// readable. All on the state before the txn.
fn check_path(
    keyspace: &Keyspace,
    request: &pb::TxnRequest,
    path: &[bool],
    next: &mut usize,
    check: Check,
) -> Result<(), KvError> {
    let succeeded = path.get(*next).copied().unwrap_or(false);
    *next += 1;
    let branch = if succeeded {
        &request.success
    } else {
        &request.failure
    };
    for op in branch {
        match &op.request {
            Some(Request::RequestPut(put)) if check == Check::Puts => {
                if (put.ignore_value || put.ignore_lease)
                    && keyspace.live.get(put.key.as_slice()).is_none()
                {
                    return Err(KvError::KeyNotFound);
                }
                if !keyspace.lease_exists(put.lease) {
                    return Err(KvError::LeaseNotFound);
                }
            }
            Some(Request::RequestRange(range)) if check == Check::Ranges => {
                keyspace.read_revision(range.revision)?;
            }
            Some(Request::RequestTxn(nested)) => check_path(keyspace, nested, path, next, check)?,
            _ => {}
        }
    }
    Ok(())
}

/// Runs the taken branch; answers the responses and how much of `path` the
/// nested txns used.
fn apply_path(
    writer: &mut Writer<'_>,
    request: &pb::TxnRequest,
    path: &[bool],
    next: &mut usize,
) -> Result<pb::TxnResponse, KvError> {
    let succeeded = path.get(*next).copied().unwrap_or(false);
    *next += 1;
    let branch = if succeeded {
        &request.success
    } else {
        &request.failure
    };
    let mut responses = Vec::with_capacity(branch.len());
    for op in branch {
        let response = match &op.request {
            Some(Request::RequestRange(range)) => Some(Response::ResponseRange(range::range(
                writer.keyspace(),
                range,
            )?)),
            Some(Request::RequestPut(put)) => Some(Response::ResponsePut(writer.put(put)?)),
            Some(Request::RequestDeleteRange(delete)) => {
                Some(Response::ResponseDeleteRange(writer.delete_range(delete)))
            }
            Some(Request::RequestTxn(nested)) => Some(Response::ResponseTxn(apply_path(
                writer, nested, path, next,
            )?)),
            None => None,
        };
        responses.push(pb::ResponseOp { response });
    }
    Ok(pb::TxnResponse {
        header: None,
        succeeded,
        responses,
    })
}

/// etcd's `Txn` on `keyspace` (request checks other than the op count
/// included). On any error the keyspace is left as it was.
pub(crate) fn txn(
    keyspace: &mut Keyspace,
    request: &pb::TxnRequest,
) -> Result<pb::TxnResponse, KvError> {
    check_sizes(request, i64::MAX)?;
    check_intervals(&request.success)?;
    check_intervals(&request.failure)?;
    let has_put = txn_has_put(request);
    if has_put && keyspace.no_space() {
        return Err(KvError::NoSpace);
    }
    let mut path = Vec::new();
    compare_to_path(keyspace, request, &mut path);
    if !is_txn_read_only(request) {
        check_path(keyspace, request, &path, &mut 0, Check::Puts)?;
    }
    check_path(keyspace, request, &path, &mut 0, Check::Ranges)?;
    // The checks above make the ops infallible in practice; the O(1) copy
    // keeps the txn all-or-nothing should one still fail.
    let before = keyspace.clone();
    let mut writer = Writer::begin(keyspace);
    match apply_path(&mut writer, request, &path, &mut 0) {
        Ok(mut response) => {
            response.header = Keyspace::header(writer.revision());
            Ok(response)
        }
        Err(error) => {
            *keyspace = before;
            Err(error)
        }
    }
}
