//! The keyspace's section of a snapshot (see `crate::snapshot` for the
//! framing around it).
//!
//! ```text
//! revision          i64 LE
//! compact_revision  i64 LE
//! alarm_count       u64 LE, then per alarm (ascending): member_id u64 LE, alarm i32 LE
//! version_count     u64 LE, then per retained version, by key then revision:
//!     key_bytes u64 LE, key
//!     main i64 LE, sub i64 LE, create_revision i64 LE, version i64 LE, lease i64 LE
//!     value_bytes u64 LE, value
//! ```
//! A tombstone has `version` 0. The encoding is canonical (one keyspace,
//! one encoding); decoding bounds every length by the input and rejects
//! unordered versions and revisions above the current one.

use bytes::Bytes;

use super::{History, Keyspace, Record, Revision};
use crate::snapshot::Reader;

/// Appends the keyspace section to `out`.
pub(crate) fn encode_section(keyspace: &Keyspace, out: &mut Vec<u8>) {
    out.extend_from_slice(&keyspace.revision.to_le_bytes());
    out.extend_from_slice(&keyspace.compact_revision.to_le_bytes());
    out.extend_from_slice(&(keyspace.alarms.len() as u64).to_le_bytes());
    for (member_id, alarm) in &keyspace.alarms {
        out.extend_from_slice(&member_id.to_le_bytes());
        out.extend_from_slice(&alarm.to_le_bytes());
    }
    out.extend_from_slice(&(keyspace.history.len() as u64).to_le_bytes());
    for ((key, rev), record) in &keyspace.history {
        out.extend_from_slice(&(key.len() as u64).to_le_bytes());
        out.extend_from_slice(key);
        for field in [
            rev.main,
            rev.sub,
            record.create_revision,
            record.version,
            record.lease,
        ] {
            out.extend_from_slice(&field.to_le_bytes());
        }
        out.extend_from_slice(&(record.value.len() as u64).to_le_bytes());
        out.extend_from_slice(&record.value);
    }
}

/// Decodes a keyspace section, rebuilding the live view; consumes exactly it.
pub(crate) fn decode_section(reader: &mut Reader<'_>) -> Result<Keyspace, String> {
    let revision = reader.i64()?;
    let compact_revision = reader.i64()?;
    if revision < super::INITIAL_REVISION || compact_revision > revision {
        return Err(format!(
            "revision {revision} with compacted revision {compact_revision} is impossible"
        ));
    }
    let alarm_count = reader.u64()?;
    let mut alarms = imbl::OrdSet::new();
    for _ in 0..alarm_count {
        let member_id = reader.u64()?;
        let alarm = reader.i32()?;
        alarms.insert((member_id, alarm));
    }
    let version_count = reader.u64()?;
    let mut history = History::new();
    let mut previous: Option<(Bytes, Revision)> = None;
    for entry in 0..version_count {
        let key = Bytes::copy_from_slice(reader.sized()?);
        let rev = Revision {
            main: reader.i64()?,
            sub: reader.i64()?,
        };
        let create_revision = reader.i64()?;
        let version = reader.i64()?;
        let lease = reader.i64()?;
        let value = Bytes::copy_from_slice(reader.sized()?);
        if rev.main > revision || version < 0 {
            return Err(format!(
                "version {entry}: revision {rev:?} / version {version} impossible at revision {revision}"
            ));
        }
        // Share one allocation among the versions of a key.
        let key = match &previous {
            Some((previous_key, previous_rev)) => {
                if (previous_key, previous_rev) >= (&key, &rev) {
                    return Err(format!("version {entry}: not in (key, revision) order"));
                }
                if *previous_key == key {
                    previous_key.clone()
                } else {
                    key
                }
            }
            None => key,
        };
        previous = Some((key.clone(), rev));
        history.insert(
            (key, rev),
            Record {
                value,
                create_revision,
                version,
                lease,
            },
        );
    }
    Ok(Keyspace::from_parts(
        revision,
        compact_revision,
        history,
        alarms,
    ))
}

/// Appends the lease section: `lease_count u64 LE`, then per lease by
/// ascending id `id i64 LE, ttl_s i64 LE`. Attachments are not written: a
/// restore derives them from the live records' `lease`.
pub(crate) fn encode_leases(keyspace: &Keyspace, out: &mut Vec<u8>) {
    out.extend_from_slice(&(keyspace.leases.len() as u64).to_le_bytes());
    for (id, entry) in &keyspace.leases {
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&entry.ttl_s.to_le_bytes());
    }
}

/// Decodes a lease section as `(id, ttl_s)` pairs, refusing unordered or
/// duplicate ids; consumes exactly it.
pub(crate) fn decode_leases(reader: &mut Reader<'_>) -> Result<Vec<(i64, i64)>, String> {
    let count = reader.u64()?;
    let mut leases: Vec<(i64, i64)> = Vec::new();
    for entry in 0..count {
        let id = reader.i64()?;
        let ttl_s = reader.i64()?;
        if leases.last().is_some_and(|(previous, _)| *previous >= id) {
            return Err(format!("lease {entry}: ids not in increasing order"));
        }
        leases.push((id, ttl_s));
    }
    Ok(leases)
}
