//! etcd's `Range`: one key, a range or every key from one; at head or at a
//! revision; with limit, count, sorting, filters, keys-only and count-only.

use etcdproto::etcdserverpb as pb;
use etcdproto::etcdserverpb::range_request::{SortOrder, SortTarget};
use etcdproto::mvccpb::KeyValue;

use super::{Keyspace, Span};
use crate::error::KvError;

/// The request-only checks of a range (etcd's `checkRangeRequest`).
pub(crate) fn check_range(request: &pb::RangeRequest) -> Result<(), KvError> {
    if request.key.is_empty() {
        return Err(KvError::EmptyKey);
    }
    if SortOrder::try_from(request.sort_order).is_err()
        || SortTarget::try_from(request.sort_target).is_err()
    {
        return Err(KvError::InvalidSortOption);
    }
    Ok(())
}

/// Answers `request` on `keyspace` (see the module docs). `header.revision`
/// is the keyspace's current revision even for a historical read.
pub(crate) fn range(
    keyspace: &Keyspace,
    request: &pb::RangeRequest,
) -> Result<pb::RangeResponse, KvError> {
    check_range(request)?;
    let at = keyspace.read_revision(request.revision)?;
    let span = Span::of(&request.key, &request.range_end);
    let found = keyspace.visible(span, at);
    let count = found.len() as i64;
    let header = Keyspace::header(keyspace.revision);
    if request.count_only {
        return Ok(pb::RangeResponse {
            header,
            kvs: Vec::new(),
            more: false,
            count,
        });
    }
    let filtered = request.min_mod_revision != 0
        || request.max_mod_revision != 0
        || request.min_create_revision != 0
        || request.max_create_revision != 0;
    let mut sort_order = SortOrder::try_from(request.sort_order).unwrap_or(SortOrder::None);
    let sort_target = SortTarget::try_from(request.sort_target).unwrap_or(SortTarget::Key);
    if sort_target != SortTarget::Key && sort_order == SortOrder::None {
        // Results come in ascending key order; any other target sorts ascending.
        sort_order = SortOrder::Ascend;
    }
    let limit = usize::try_from(request.limit).unwrap_or(0);
    // Without sorting or filters only `limit + 1` pairs are needed (the
    // extra one tells `more`); otherwise every pair, truncated afterwards.
    let fetch = if request.sort_order != SortOrder::None as i32 || filtered || limit == 0 {
        found.len()
    } else {
        limit.saturating_add(1).min(found.len())
    };
    let mut kvs: Vec<KeyValue> = found[..fetch]
        .iter()
        .map(|(key, modified, record)| record.key_value(key, *modified))
        .filter(|kv| {
            (request.max_mod_revision == 0 || kv.mod_revision <= request.max_mod_revision)
                && (request.min_mod_revision == 0 || kv.mod_revision >= request.min_mod_revision)
                && (request.max_create_revision == 0
                    || kv.create_revision <= request.max_create_revision)
                && (request.min_create_revision == 0
                    || kv.create_revision >= request.min_create_revision)
        })
        .collect();
    if sort_order != SortOrder::None {
        // Stable: ties keep ascending key order, in both directions.
        let descending = sort_order == SortOrder::Descend;
        kvs.sort_by(|a, b| {
            let ordering = match sort_target {
                SortTarget::Key => a.key.cmp(&b.key),
                SortTarget::Version => a.version.cmp(&b.version),
                SortTarget::Create => a.create_revision.cmp(&b.create_revision),
                SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
                SortTarget::Value => a.value.cmp(&b.value),
            };
            if descending {
                ordering.reverse()
            } else {
                ordering
            }
        });
    }
    let mut more = false;
    if limit > 0 && kvs.len() > limit {
        kvs.truncate(limit);
        more = true;
    }
    if request.keys_only {
        for kv in &mut kvs {
            kv.value = Vec::new();
        }
    }
    Ok(pb::RangeResponse {
        header,
        kvs,
        more,
        count,
    })
}
