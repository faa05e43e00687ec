//! The multi-version keyspace: etcd's v3 data model as a pure value.
//!
//! [`Keyspace`] holds the current and compacted revisions, every retained
//! version of every key (puts and delete tombstones), the live view at head
//! and the alarms. Its write methods are deterministic functions of the
//! keyspace and the request only (no clock, no member-local configuration),
//! so every member that applies the same log reaches the same keyspace, and
//! the same snapshot bytes (etcd #18667).
//!
//! Both maps are persistent (`imbl::OrdMap`): cloning a keyspace is O(1), so
//! snapshots and read-only requests work on a frozen copy while writes go on.
//!
//! Layout:
//! * `history`: `(key, revision) -> Record`, ordered by key then revision:
//!   every retained version, a delete being a tombstone (`version == 0`).
//! * `live`: `key -> mod revision` for keys that exist at head, so reads at
//!   head never walk a key's older versions (the record itself lives once,
//!   in `history`).

mod changes;
mod codec;
mod lease;
mod range;
mod txn;

use std::ops::Bound;

use bytes::Bytes;
use etcdproto::etcdserverpb as pb;
use etcdproto::mvccpb::KeyValue;

use crate::error::KvError;

pub(crate) use changes::Change;
use changes::ChangeRecorder;
pub(crate) use codec::{decode_leases, decode_section, encode_leases, encode_section};
pub use lease::{LeaseInfo, MAX_LEASE_TTL_S};
pub(crate) use range::check_range;
pub(crate) use txn::{check_delete, check_put, txn_has_put};
pub use txn::{check_txn_request, is_txn_read_only};

/// The revision of a new, empty keyspace; the first write makes it 2.
pub const INITIAL_REVISION: i64 = 1;
/// The compacted revision of a keyspace never compacted (etcd's -1, so
/// `compact 0` is accepted).
pub const NEVER_COMPACTED: i64 = -1;

/// A change's position in the history: `main` is the write txn's revision,
/// `sub` numbers the changes inside it from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision {
    /// The cluster-wide revision of the write txn.
    pub main: i64,
    /// The change's number within that txn.
    pub sub: i64,
}

impl Revision {
    const MIN: Revision = Revision {
        main: i64::MIN,
        sub: i64::MIN,
    };
}

/// One version of a key. `version == 0` marks a delete (tombstone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) value: Bytes,
    pub(crate) create_revision: i64,
    pub(crate) version: i64,
    pub(crate) lease: i64,
}

impl Record {
    pub(crate) fn is_tombstone(&self) -> bool {
        self.version == 0
    }

    fn tombstone() -> Record {
        Record {
            value: Bytes::new(),
            create_revision: 0,
            version: 0,
            lease: 0,
        }
    }

    pub(crate) fn key_value(&self, key: &[u8], modified: Revision) -> KeyValue {
        KeyValue {
            key: key.to_vec(),
            create_revision: self.create_revision,
            mod_revision: modified.main,
            version: self.version,
            value: self.value.to_vec(),
            lease: self.lease,
        }
    }
}

pub(crate) type History = imbl::OrdMap<(Bytes, Revision), Record>;
pub(crate) type Live = imbl::OrdMap<Bytes, Revision>;

/// The alarm types of etcd's `AlarmType`.
fn known_alarm(alarm: i32) -> bool {
    alarm == pb::AlarmType::Nospace as i32 || alarm == pb::AlarmType::Corrupt as i32
}

/// A point-in-time summary for `Maintenance.Status` and tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyspaceStatus {
    /// The current revision.
    pub revision: i64,
    /// The compacted revision (`-1` if never compacted).
    pub compact_revision: i64,
    /// Bytes the quota counts: key plus value of every retained version.
    pub db_size_bytes: u64,
    /// Retained versions (puts and tombstones).
    pub retained_revisions: u64,
    /// Keys that exist at head.
    pub keys: u64,
    /// Armed alarms, by member then type.
    pub alarms: Vec<pb::AlarmMember>,
}

/// The multi-version keyspace (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyspace {
    revision: i64,
    compact_revision: i64,
    history: History,
    live: Live,
    alarms: imbl::OrdSet<(u64, i32)>,
    retained_bytes: u64,
    /// Granted leases and their attached keys (see `lease.rs`).
    leases: lease::Leases,
    /// The changes of the current write txn, for the watch hub (not part of
    /// the keyspace's value: see `changes.rs`).
    recorder: ChangeRecorder,
}

impl Default for Keyspace {
    fn default() -> Self {
        Keyspace::new()
    }
}

/// How a key and `range_end` select keys (etcd's three forms).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Span<'a> {
    /// `range_end` empty: the key alone.
    One(&'a [u8]),
    /// `[key, end)`; `end == None` is `"\0"`: every key from `key` on.
    Range(&'a [u8], Option<&'a [u8]>),
}

impl<'a> Span<'a> {
    pub(crate) fn of(key: &'a [u8], range_end: &'a [u8]) -> Span<'a> {
        match range_end {
            [] => Span::One(key),
            [0] => Span::Range(key, None),
            end => Span::Range(key, Some(end)),
        }
    }

    pub(crate) fn contains(&self, candidate: &[u8]) -> bool {
        match *self {
            Span::One(key) => candidate == key,
            Span::Range(key, None) => candidate >= key,
            Span::Range(key, Some(end)) => candidate >= key && candidate < end,
        }
    }

    /// Whether the span cannot hold any key (`end <= key`).
    pub(crate) fn is_empty(&self) -> bool {
        matches!(*self, Span::Range(key, Some(end)) if end <= key)
    }
}

impl Keyspace {
    /// An empty keyspace at revision 1, never compacted.
    pub fn new() -> Keyspace {
        Keyspace {
            revision: INITIAL_REVISION,
            compact_revision: NEVER_COMPACTED,
            history: History::new(),
            live: Live::new(),
            alarms: imbl::OrdSet::new(),
            retained_bytes: 0,
            leases: lease::Leases::new(),
            recorder: ChangeRecorder::default(),
        }
    }

    /// The current revision.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The compacted revision (`-1` if never compacted).
    pub fn compact_revision(&self) -> i64 {
        self.compact_revision
    }

    /// Bytes the quota counts: key plus value of every retained version.
    pub fn retained_bytes(&self) -> u64 {
        self.retained_bytes
    }

    /// Number of retained versions (puts and tombstones).
    pub fn retained_revisions(&self) -> usize {
        self.history.len()
    }

    /// Number of keys that exist at head.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether no key exists at head.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// The value of `key` at head, if it exists.
    pub fn get(&self, key: &[u8]) -> Option<Bytes> {
        let (key, modified) = self.live.get_key_value(key)?;
        self.record(key, *modified)
            .map(|record| record.value.clone())
    }

    /// Whether the NOSPACE alarm is armed (writes that add data fail).
    pub fn no_space(&self) -> bool {
        self.alarms
            .iter()
            .any(|(_, alarm)| *alarm == pb::AlarmType::Nospace as i32)
    }

    /// A summary of the keyspace.
    pub fn status(&self) -> KeyspaceStatus {
        KeyspaceStatus {
            revision: self.revision,
            compact_revision: self.compact_revision,
            db_size_bytes: self.retained_bytes,
            retained_revisions: self.history.len() as u64,
            keys: self.live.len() as u64,
            alarms: self.alarm_members(pb::AlarmType::None as i32),
        }
    }

    fn header(revision: i64) -> Option<pb::ResponseHeader> {
        Some(pb::ResponseHeader {
            revision,
            ..Default::default()
        })
    }

    /// Checks a read revision the way etcd's `rangeKeys` does; answers the
    /// revision to read at.
    fn read_revision(&self, requested: i64) -> Result<i64, KvError> {
        if requested > self.revision {
            return Err(KvError::FutureRevision);
        }
        let at = if requested <= 0 {
            self.revision
        } else {
            requested
        };
        if at < self.compact_revision {
            return Err(KvError::Compacted);
        }
        Ok(at)
    }

    /// Every key in `span` that exists at revision `at`, in key order, with
    /// its modifying revision and record (reference-counted, not copied).
    pub(crate) fn visible(&self, span: Span<'_>, at: i64) -> Vec<(Bytes, Revision, Record)> {
        let mut out = Vec::new();
        if span.is_empty() {
            return out;
        }
        if at >= self.revision {
            match span {
                Span::One(key) => {
                    if let Some((k, modified)) = self.live.get_key_value(key) {
                        if let Some(record) = self.record(k, *modified) {
                            out.push((k.clone(), *modified, record.clone()));
                        }
                    }
                }
                Span::Range(key, end) => {
                    let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
                    let bounds: (Bound<&[u8]>, Bound<&[u8]>) = (Bound::Included(key), upper);
                    for (k, modified) in self.live.range::<_, [u8]>(bounds) {
                        if let Some(record) = self.record(k, *modified) {
                            out.push((k.clone(), *modified, record.clone()));
                        }
                    }
                }
            }
            return out;
        }
        let start = match span {
            Span::One(key) | Span::Range(key, _) => key,
        };
        let lower = (Bytes::copy_from_slice(start), Revision::MIN);
        let mut newest: Option<(&Bytes, Revision, &Record)> = None;
        let mut flush = |newest: Option<(&Bytes, Revision, &Record)>| {
            if let Some((k, modified, record)) = newest {
                if !record.is_tombstone() {
                    out.push((k.clone(), modified, record.clone()));
                }
            }
        };
        for ((k, modified), record) in self.history.range(lower..) {
            // Keys start at `start`, so the first key outside the span is past its end.
            if !span.contains(k) {
                break;
            }
            if newest.is_some_and(|(previous, _, _)| previous != k) {
                flush(newest.take());
            }
            if modified.main <= at {
                newest = Some((k, *modified, record));
            }
        }
        flush(newest);
        out
    }

    /// The record of `key` at exactly `modified`. Every `live` entry points
    /// at a `history` entry (an invariant of the write paths); a miss would
    /// read as an absent key rather than panic apply.
    fn record(&self, key: &Bytes, modified: Revision) -> Option<&Record> {
        let record = self.history.get(&(key.clone(), modified));
        debug_assert!(record.is_some(), "live entry without its history entry");
        record
    }

    /// etcd's `Range` (see `range.rs` for the options).
    pub fn range(&self, request: &pb::RangeRequest) -> Result<pb::RangeResponse, KvError> {
        range::range(self, request)
    }

    /// etcd's `HashKV`: a digest of every retained version at or below
    /// `revision` (0: the current revision).
    pub fn hash_kv(&self, revision: i64) -> Result<pb::HashKvResponse, KvError> {
        if revision > self.revision {
            return Err(KvError::FutureRevision);
        }
        if revision > 0 && revision < self.compact_revision {
            return Err(KvError::Compacted);
        }
        let at = if revision <= 0 {
            self.revision
        } else {
            revision
        };
        let mut hasher = crc32fast::Hasher::new();
        for ((key, modified), record) in &self.history {
            if modified.main > at {
                continue;
            }
            hasher.update(&(key.len() as u64).to_le_bytes());
            hasher.update(key);
            hasher.update(&modified.main.to_le_bytes());
            hasher.update(&modified.sub.to_le_bytes());
            hasher.update(&record.create_revision.to_le_bytes());
            hasher.update(&record.version.to_le_bytes());
            hasher.update(&record.lease.to_le_bytes());
            hasher.update(&(record.value.len() as u64).to_le_bytes());
            hasher.update(&record.value);
        }
        Ok(pb::HashKvResponse {
            header: Keyspace::header(self.revision),
            hash: hasher.finalize(),
            compact_revision: self.compact_revision,
            // etcd 3.4 does not fill `hash_revision` (a 3.6 field).
            hash_revision: 0,
        })
    }

    /// etcd's `Put` as its own write txn. Unlike a put inside a txn, a plain
    /// put checks its lease before its key (`ignore_value`/`ignore_lease` of
    /// a missing key with an unknown lease is NotFound "requested lease not
    /// found", as etcd's apply answers).
    pub fn put(&mut self, request: &pb::PutRequest) -> Result<pb::PutResponse, KvError> {
        txn::check_put(request)?;
        if self.no_space() {
            return Err(KvError::NoSpace);
        }
        if !self.lease_exists(request.lease) {
            return Err(KvError::LeaseNotFound);
        }
        let mut writer = Writer::begin(self);
        let response = writer.put(request)?;
        Ok(response)
    }

    /// etcd's `DeleteRange` as its own write txn.
    pub fn delete_range(
        &mut self,
        request: &pb::DeleteRangeRequest,
    ) -> Result<pb::DeleteRangeResponse, KvError> {
        txn::check_delete(request)?;
        let mut writer = Writer::begin(self);
        Ok(writer.delete_range(request))
    }

    /// etcd's `Txn`: compares on the state before it, then one branch (see
    /// `txn.rs`). Request-only checks other than `max_txn_ops` run here too.
    pub fn txn(&mut self, request: &pb::TxnRequest) -> Result<pb::TxnResponse, KvError> {
        txn::txn(self, request)
    }

    /// etcd's `Compact`: keeps, per key, the newest version at or below
    /// `revision` (dropping it too if it is a tombstone below `revision`) and
    /// everything above. Never changes the current revision.
    pub fn compact(
        &mut self,
        request: &pb::CompactionRequest,
    ) -> Result<pb::CompactionResponse, KvError> {
        let at = request.revision;
        if at <= self.compact_revision {
            return Err(KvError::Compacted);
        }
        if at > self.revision {
            return Err(KvError::FutureRevision);
        }
        // One pass in (key, revision) order: per key, every version older
        // than the newest one at or below `at` goes, and that one too if it
        // is a tombstone below `at`.
        let mut doomed: Vec<&(Bytes, Revision)> = Vec::new();
        let mut survivors: Vec<(&(Bytes, Revision), &Record)> = Vec::new();
        let mut freed_bytes = 0u64;
        let mut versions: Vec<(&(Bytes, Revision), &Record)> = Vec::new();
        let mut entries = self.history.iter().peekable();
        while let Some(entry) = entries.next() {
            versions.push(entry);
            let key_ends = entries
                .peek()
                .is_none_or(|((next_key, _), _)| *next_key != entry.0 .0);
            if !key_ends {
                continue;
            }
            let end = match versions.iter().rposition(|((_, rev), _)| rev.main <= at) {
                Some(keep) => {
                    let ((_, rev), record) = versions[keep];
                    if record.is_tombstone() && rev.main < at {
                        keep + 1
                    } else {
                        keep
                    }
                }
                None => 0,
            };
            for (i, (position, record)) in versions.drain(..).enumerate() {
                if i < end {
                    freed_bytes += (position.0.len() + record.value.len()) as u64;
                    doomed.push(position);
                } else {
                    survivors.push((position, record));
                }
            }
        }
        let removed = doomed.len();
        if survivors.len() < doomed.len() {
            // Mostly dropping: rebuilding from the survivors is cheaper than
            // removing one by one.
            let rebuilt: History = survivors
                .into_iter()
                .map(|(position, record)| (position.clone(), record.clone()))
                .collect();
            self.history = rebuilt;
        } else {
            let doomed: Vec<(Bytes, Revision)> = doomed.into_iter().cloned().collect();
            drop(survivors);
            for position in &doomed {
                self.history.remove(position);
            }
        }
        self.retained_bytes -= freed_bytes;
        self.compact_revision = at;
        tracing::debug!(revision = at, removed, "compacted keyspace history");
        Ok(pb::CompactionResponse {
            header: Keyspace::header(self.revision),
        })
    }

    fn alarm_members(&self, alarm: i32) -> Vec<pb::AlarmMember> {
        self.alarms
            .iter()
            .filter(|(_, kind)| alarm == pb::AlarmType::None as i32 || *kind == alarm)
            .map(|(member_id, kind)| pb::AlarmMember {
                member_id: *member_id,
                alarm: *kind,
            })
            .collect()
    }

    /// etcd's `Maintenance.Alarm`: GET lists armed alarms (all for
    /// `NONE`), ACTIVATE arms one, DEACTIVATE disarms one; each answers the
    /// alarms it touched.
    pub fn alarm(&mut self, request: &pb::AlarmRequest) -> Result<pb::AlarmResponse, KvError> {
        let mut alarms = Vec::new();
        let member = (request.member_id, request.alarm);
        match pb::alarm_request::AlarmAction::try_from(request.action) {
            Ok(pb::alarm_request::AlarmAction::Get) => {
                alarms = self.alarm_members(request.alarm);
            }
            Ok(pb::alarm_request::AlarmAction::Activate) => {
                if known_alarm(request.alarm) {
                    if self.alarms.insert(member).is_none() {
                        tracing::warn!(member_id = member.0, alarm = member.1, "alarm activated");
                    }
                    alarms.push(pb::AlarmMember {
                        member_id: member.0,
                        alarm: member.1,
                    });
                }
            }
            Ok(pb::alarm_request::AlarmAction::Deactivate) => {
                if self.alarms.remove(&member).is_some() {
                    tracing::info!(member_id = member.0, alarm = member.1, "alarm disarmed");
                    alarms.push(pb::AlarmMember {
                        member_id: member.0,
                        alarm: member.1,
                    });
                }
            }
            Err(_) => {}
        }
        Ok(pb::AlarmResponse {
            header: Keyspace::header(self.revision),
            alarms,
        })
    }

    /// Rebuilds the live view and the byte count from `history` (restore).
    fn from_parts(
        revision: i64,
        compact_revision: i64,
        history: History,
        alarms: imbl::OrdSet<(u64, i32)>,
    ) -> Keyspace {
        let mut live = Live::new();
        let mut retained_bytes = 0u64;
        for ((key, rev), record) in &history {
            retained_bytes += (key.len() + record.value.len()) as u64;
            if record.is_tombstone() {
                live.remove(key);
            } else {
                live.insert(key.clone(), *rev);
            }
        }
        Keyspace {
            revision,
            compact_revision,
            history,
            live,
            alarms,
            retained_bytes,
            leases: lease::Leases::new(),
            recorder: ChangeRecorder::default(),
        }
    }
}

/// One write txn: every change gets `main = begin + 1` and the next `sub`;
/// the keyspace's revision moves to `begin + 1` with the first change only.
pub(crate) struct Writer<'a> {
    keyspace: &'a mut Keyspace,
    begin: i64,
    changes: i64,
}

impl<'a> Writer<'a> {
    pub(crate) fn begin(keyspace: &'a mut Keyspace) -> Writer<'a> {
        let begin = keyspace.revision;
        Writer {
            keyspace,
            begin,
            changes: 0,
        }
    }

    pub(crate) fn keyspace(&self) -> &Keyspace {
        self.keyspace
    }

    /// The revision this txn's responses report: `begin + 1` once it changed
    /// something, else `begin`.
    pub(crate) fn revision(&self) -> i64 {
        self.keyspace.revision
    }

    fn next_revision(&mut self) -> Revision {
        let rev = Revision {
            main: self.begin + 1,
            sub: self.changes,
        };
        self.changes += 1;
        self.keyspace.revision = self.begin + 1;
        rev
    }

    /// A put inside this txn (checks that depend on state run here).
    pub(crate) fn put(&mut self, request: &pb::PutRequest) -> Result<pb::PutResponse, KvError> {
        // One lookup of the live index: the key's shared bytes (its earlier
        // versions already hold them) and its current version, if any.
        let live = self
            .keyspace
            .live
            .get_key_value(request.key.as_slice())
            .map(|(key, modified)| (key.clone(), *modified));
        let previous = live.as_ref().and_then(|(key, modified)| {
            let record = self.keyspace.record(key, *modified)?;
            Some((*modified, record.clone()))
        });
        if (request.ignore_value || request.ignore_lease) && previous.is_none() {
            return Err(KvError::KeyNotFound);
        }
        if !request.ignore_lease && !self.keyspace.lease_exists(request.lease) {
            return Err(KvError::LeaseNotFound);
        }
        let key = match live {
            Some((key, _)) => key,
            None => Bytes::copy_from_slice(&request.key),
        };
        let value = match (&previous, request.ignore_value) {
            (Some((_, record)), true) => record.value.clone(),
            _ => Bytes::copy_from_slice(&request.value),
        };
        let lease = match (&previous, request.ignore_lease) {
            (Some((_, record)), true) => record.lease,
            _ => request.lease,
        };
        let rev = self.next_revision();
        let (create_revision, version) = match &previous {
            Some((_, record)) => (record.create_revision, record.version.saturating_add(1)),
            None => (rev.main, 1),
        };
        let record = Record {
            value,
            create_revision,
            version,
            lease,
        };
        self.keyspace.retained_bytes += (key.len() + record.value.len()) as u64;
        if self.keyspace.recorder.is_recording() {
            self.keyspace.recorder.record(Change {
                key: key.clone(),
                revision: rev,
                record: record.clone(),
                prev: previous.clone(),
            });
        }
        self.keyspace.history.insert((key.clone(), rev), record);
        self.keyspace.live.insert(key.clone(), rev);
        let previous_lease = previous.as_ref().map_or(0, |(_, record)| record.lease);
        self.keyspace.reattach(&key, previous_lease, lease);
        let prev_kv = match previous {
            Some((modified, record)) if request.prev_kv => {
                Some(record.key_value(&request.key, modified))
            }
            _ => None,
        };
        Ok(pb::PutResponse {
            header: Keyspace::header(self.revision()),
            prev_kv,
        })
    }

    /// Deletes every key of `span` that exists at head (one change each, in
    /// key order, detached from its lease); answers what was deleted.
    pub(crate) fn delete_span(&mut self, span: Span<'_>) -> Vec<(Bytes, Revision, Record)> {
        let doomed = self.keyspace.visible(span, self.keyspace.revision);
        for (key, modified, record) in &doomed {
            let rev = self.next_revision();
            self.keyspace.retained_bytes += key.len() as u64;
            if self.keyspace.recorder.is_recording() {
                self.keyspace.recorder.record(Change {
                    key: key.clone(),
                    revision: rev,
                    record: Record::tombstone(),
                    prev: Some((*modified, record.clone())),
                });
            }
            self.keyspace
                .history
                .insert((key.clone(), rev), Record::tombstone());
            self.keyspace.live.remove(key);
            self.keyspace.reattach(key, record.lease, 0);
        }
        doomed
    }

    /// A delete-range inside this txn: one change per deleted key, in key order.
    pub(crate) fn delete_range(
        &mut self,
        request: &pb::DeleteRangeRequest,
    ) -> pb::DeleteRangeResponse {
        let doomed = self.delete_span(Span::of(&request.key, &request.range_end));
        let prev_kvs = if request.prev_kv {
            doomed
                .iter()
                .map(|(key, modified, record)| record.key_value(key, *modified))
                .collect()
        } else {
            Vec::new()
        };
        pb::DeleteRangeResponse {
            header: Keyspace::header(self.revision()),
            deleted: doomed.len() as i64,
            prev_kvs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(keyspace: &mut Keyspace, key: &str, value: &str) -> pb::PutResponse {
        keyspace
            .put(&pb::PutRequest {
                key: key.into(),
                value: value.into(),
                ..Default::default()
            })
            .expect("put")
    }

    #[test]
    fn first_write_is_revision_two_and_sub_revisions_share_main() {
        let mut keyspace = Keyspace::new();
        assert_eq!(keyspace.revision(), 1);
        assert_eq!(put(&mut keyspace, "a", "1").header.unwrap().revision, 2);
        put(&mut keyspace, "b", "1");
        let deleted = keyspace
            .delete_range(&pb::DeleteRangeRequest {
                key: b"a".to_vec(),
                range_end: b"c".to_vec(),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(deleted.deleted, 2);
        assert_eq!(keyspace.revision(), 4);
        let subs: Vec<Revision> = keyspace
            .history
            .keys()
            .filter(|(_, rev)| rev.main == 4)
            .map(|(_, rev)| *rev)
            .collect();
        assert_eq!(
            subs,
            vec![Revision { main: 4, sub: 0 }, Revision { main: 4, sub: 1 }]
        );
    }

    #[test]
    fn a_delete_that_matches_nothing_does_not_bump_the_revision() {
        let mut keyspace = Keyspace::new();
        put(&mut keyspace, "a", "1");
        let response = keyspace
            .delete_range(&pb::DeleteRangeRequest {
                key: b"zz".to_vec(),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(response.deleted, 0);
        assert_eq!(response.header.unwrap().revision, 2);
        assert_eq!(keyspace.revision(), 2);
    }

    #[test]
    fn compaction_keeps_a_tombstone_at_exactly_the_compaction_revision() {
        let mut keyspace = Keyspace::new();
        put(&mut keyspace, "a", "1"); // 2
        keyspace
            .delete_range(&pb::DeleteRangeRequest {
                key: b"a".to_vec(),
                ..Default::default()
            })
            .unwrap(); // 3
        keyspace
            .compact(&pb::CompactionRequest {
                revision: 3,
                physical: false,
            })
            .unwrap();
        assert_eq!(keyspace.retained_revisions(), 1, "the tombstone at 3 stays");
        put(&mut keyspace, "b", "1"); // 4
        keyspace
            .compact(&pb::CompactionRequest {
                revision: 4,
                physical: false,
            })
            .unwrap();
        assert_eq!(keyspace.retained_revisions(), 1, "only b@4 remains");
        assert_eq!(
            keyspace.revision(),
            4,
            "compaction never bumps the revision"
        );
        assert_eq!(keyspace.retained_bytes(), 2);
    }
}
