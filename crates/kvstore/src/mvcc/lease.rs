//! Leases as replicated state: etcd's lessor minus the clock.
//!
//! The keyspace holds every granted lease (id and granted TTL) and the keys
//! attached to each. Everything here is a pure function of the log: grant,
//! revoke, attach (a put with a lease), detach (a put without one, a
//! delete). When a lease *expires* is not replicated state: only the
//! leader's [`crate::lessor::Lessor`] tracks it and expires a lease by
//! proposing an ordinary revoke.
//!
//! Attachments are not stored on their own: they are derived from the
//! `lease` field of the live records (a restore rebuilds them), so a
//! snapshot's lease section holds only `(id, ttl)` pairs.

use bytes::Bytes;
use etcdproto::etcdserverpb as pb;

use super::{Keyspace, Span, Writer};
use crate::error::KvError;

/// etcd's `MaxLeaseTTL`: 9,000,000,000 seconds; a larger grant is refused
/// ("too large lease TTL").
pub const MAX_LEASE_TTL_S: i64 = 9_000_000_000;

/// One granted lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LeaseEntry {
    /// The granted TTL in seconds (after raising to the minimum).
    pub(crate) ttl_s: i64,
    /// Keys whose live version carries this lease, in key order.
    pub(crate) keys: imbl::OrdSet<Bytes>,
}

pub(crate) type Leases = imbl::OrdMap<i64, LeaseEntry>;

/// A lease as `LeaseTimeToLive` and `LeaseLeases` see it (replicated part only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    /// The lease id.
    pub id: i64,
    /// The granted TTL in seconds.
    pub granted_ttl_s: i64,
    /// Attached keys, in key order.
    pub keys: Vec<Vec<u8>>,
}

impl Keyspace {
    /// Whether a put may attach `lease`: 0 (no lease) or a granted lease.
    pub(crate) fn lease_exists(&self, lease: i64) -> bool {
        lease == 0 || self.leases.contains_key(&lease)
    }

    /// The granted TTL of `id`, if the lease exists.
    pub fn lease_ttl_s(&self, id: i64) -> Option<i64> {
        self.leases.get(&id).map(|entry| entry.ttl_s)
    }

    /// Number of granted leases.
    pub fn lease_count(&self) -> usize {
        self.leases.len()
    }

    /// Every lease as `(id, granted TTL)`, by id.
    pub fn lease_ttls(&self) -> Vec<(i64, i64)> {
        self.leases
            .iter()
            .map(|(id, entry)| (*id, entry.ttl_s))
            .collect()
    }

    /// The replicated facts of lease `id`.
    pub fn lease_info(&self, id: i64) -> Option<LeaseInfo> {
        self.leases.get(&id).map(|entry| LeaseInfo {
            id,
            granted_ttl_s: entry.ttl_s,
            keys: entry.keys.iter().map(|key| key.to_vec()).collect(),
        })
    }

    /// etcd's `LeaseGrant` as apply runs it: `request.id` was chosen by the
    /// proposer (non-zero) and `request.ttl` already raised to the minimum.
    /// Never moves the revision.
    ///
    /// Errors: `LeaseNotFound` for id 0 (as etcd's lessor), `LeaseExists`,
    /// `LeaseTtlTooLarge`.
    pub fn lease_grant(
        &mut self,
        request: &pb::LeaseGrantRequest,
    ) -> Result<pb::LeaseGrantResponse, KvError> {
        if request.id == 0 {
            return Err(KvError::LeaseNotFound);
        }
        if request.ttl > MAX_LEASE_TTL_S {
            return Err(KvError::LeaseTtlTooLarge);
        }
        if self.leases.contains_key(&request.id) {
            return Err(KvError::LeaseExists);
        }
        self.leases.insert(
            request.id,
            LeaseEntry {
                ttl_s: request.ttl,
                keys: imbl::OrdSet::new(),
            },
        );
        Ok(pb::LeaseGrantResponse {
            header: Keyspace::header(self.revision),
            id: request.id,
            ttl: request.ttl,
            error: String::new(),
        })
    }

    /// etcd's `LeaseRevoke`: deletes every attached key in one write txn
    /// (one revision, keys in order), then forgets the lease.
    ///
    /// Errors: `LeaseNotFound`.
    pub fn lease_revoke(
        &mut self,
        request: &pb::LeaseRevokeRequest,
    ) -> Result<pb::LeaseRevokeResponse, KvError> {
        let Some(entry) = self.leases.get(&request.id) else {
            return Err(KvError::LeaseNotFound);
        };
        let keys: Vec<Bytes> = entry.keys.iter().cloned().collect();
        let mut writer = Writer::begin(self);
        for key in &keys {
            writer.delete_span(Span::One(key));
        }
        let revision = writer.revision();
        let removed = self.leases.remove(&request.id);
        assert!(
            removed.is_some_and(|entry| entry.keys.is_empty()),
            "a revoked lease keeps no key attached"
        );
        Ok(pb::LeaseRevokeResponse {
            header: Keyspace::header(revision),
        })
    }

    /// Moves `key` from lease `from` to lease `to` (0: none).
    pub(crate) fn reattach(&mut self, key: &Bytes, from: i64, to: i64) {
        if from == to {
            return;
        }
        if from != 0 {
            if let Some(entry) = self.leases.get_mut(&from) {
                entry.keys.remove(key);
            }
        }
        if to != 0 {
            if let Some(entry) = self.leases.get_mut(&to) {
                entry.keys.insert(key.clone());
            }
        }
    }

    /// Installs the leases of a snapshot and attaches the live keys that
    /// carry them; a live key naming a lease that is not granted is an error.
    pub(crate) fn restore_leases(&mut self, leases: &[(i64, i64)]) -> Result<(), String> {
        let mut table = Leases::new();
        for &(id, ttl_s) in leases {
            if id == 0 || ttl_s > MAX_LEASE_TTL_S {
                return Err(format!("impossible lease {id} with TTL {ttl_s}"));
            }
            table.insert(
                id,
                LeaseEntry {
                    ttl_s,
                    keys: imbl::OrdSet::new(),
                },
            );
        }
        for (key, modified) in &self.live {
            let Some(record) = self.history.get(&(key.clone(), *modified)) else {
                continue;
            };
            if record.lease == 0 {
                continue;
            }
            let Some(entry) = table.get_mut(&record.lease) else {
                return Err(format!(
                    "key {key:?} is attached to lease {} that the snapshot does not grant",
                    record.lease
                ));
            };
            entry.keys.insert(key.clone());
        }
        self.leases = table;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(
        keyspace: &mut Keyspace,
        id: i64,
        ttl: i64,
    ) -> Result<pb::LeaseGrantResponse, KvError> {
        keyspace.lease_grant(&pb::LeaseGrantRequest { id, ttl })
    }

    fn put(keyspace: &mut Keyspace, key: &str, lease: i64) -> Result<pb::PutResponse, KvError> {
        keyspace.put(&pb::PutRequest {
            key: key.into(),
            value: b"v".to_vec(),
            lease,
            ..Default::default()
        })
    }

    #[test]
    fn grant_keeps_the_revision_and_refuses_duplicates_and_huge_ttls() {
        let mut keyspace = Keyspace::new();
        assert_eq!(grant(&mut keyspace, 7, 10).unwrap().ttl, 10);
        assert_eq!(keyspace.revision(), 1, "a grant is no revision");
        assert_eq!(grant(&mut keyspace, 7, 10), Err(KvError::LeaseExists));
        assert_eq!(
            grant(&mut keyspace, 8, MAX_LEASE_TTL_S + 1),
            Err(KvError::LeaseTtlTooLarge)
        );
        assert_eq!(grant(&mut keyspace, 0, 10), Err(KvError::LeaseNotFound));
        assert_eq!(keyspace.lease_ttls(), vec![(7, 10)]);
    }

    #[test]
    fn revoke_deletes_attached_keys_in_one_revision_in_key_order() {
        let mut keyspace = Keyspace::new();
        grant(&mut keyspace, 7, 10).unwrap();
        put(&mut keyspace, "c", 7).unwrap(); // 2
        put(&mut keyspace, "a", 7).unwrap(); // 3
        put(&mut keyspace, "b", 0).unwrap(); // 4
        let revoked = keyspace
            .lease_revoke(&pb::LeaseRevokeRequest { id: 7 })
            .unwrap();
        assert_eq!(revoked.header.unwrap().revision, 5);
        let at_five: Vec<(Bytes, i64)> = keyspace
            .history
            .keys()
            .filter(|(_, rev)| rev.main == 5)
            .map(|(key, rev)| (key.clone(), rev.sub))
            .collect();
        assert_eq!(
            at_five,
            vec![(Bytes::from("a"), 0), (Bytes::from("c"), 1)],
            "one revision, subs in key order"
        );
        assert_eq!(keyspace.len(), 1, "only the key without a lease is left");
        assert_eq!(keyspace.lease_count(), 0);
        assert_eq!(
            keyspace.lease_revoke(&pb::LeaseRevokeRequest { id: 7 }),
            Err(KvError::LeaseNotFound)
        );
    }

    #[test]
    fn a_revoke_of_a_lease_without_keys_keeps_the_revision() {
        let mut keyspace = Keyspace::new();
        grant(&mut keyspace, 7, 10).unwrap();
        let revoked = keyspace
            .lease_revoke(&pb::LeaseRevokeRequest { id: 7 })
            .unwrap();
        assert_eq!(revoked.header.unwrap().revision, 1);
    }

    #[test]
    fn a_put_with_an_unknown_lease_is_not_found() {
        let mut keyspace = Keyspace::new();
        assert_eq!(put(&mut keyspace, "a", 9), Err(KvError::LeaseNotFound));
        assert_eq!(keyspace.revision(), 1);
    }

    #[test]
    fn re_put_without_lease_and_delete_detach() {
        let mut keyspace = Keyspace::new();
        grant(&mut keyspace, 7, 10).unwrap();
        grant(&mut keyspace, 8, 10).unwrap();
        put(&mut keyspace, "a", 7).unwrap();
        put(&mut keyspace, "b", 7).unwrap();
        put(&mut keyspace, "c", 7).unwrap();
        put(&mut keyspace, "a", 0).unwrap();
        put(&mut keyspace, "c", 8).unwrap();
        keyspace
            .delete_range(&pb::DeleteRangeRequest {
                key: b"b".to_vec(),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(keyspace.lease_info(7).unwrap().keys, Vec::<Vec<u8>>::new());
        assert_eq!(keyspace.lease_info(8).unwrap().keys, vec![b"c".to_vec()]);
        // An ignore_lease put keeps the attachment.
        keyspace
            .put(&pb::PutRequest {
                key: b"c".to_vec(),
                value: b"w".to_vec(),
                ignore_lease: true,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(keyspace.lease_info(8).unwrap().keys, vec![b"c".to_vec()]);
        // Revoking 7 now deletes nothing: "a" was detached.
        let before = keyspace.revision();
        keyspace
            .lease_revoke(&pb::LeaseRevokeRequest { id: 7 })
            .unwrap();
        assert_eq!(keyspace.revision(), before);
        assert_eq!(keyspace.get(b"a").as_deref(), Some(&b"v"[..]));
    }

    #[test]
    fn restore_rebuilds_attachments_and_refuses_a_key_on_an_unknown_lease() {
        let mut keyspace = Keyspace::new();
        grant(&mut keyspace, 7, 10).unwrap();
        put(&mut keyspace, "a", 7).unwrap();
        let mut copy = keyspace.clone();
        copy.leases = Leases::new();
        copy.restore_leases(&[(7, 10)]).unwrap();
        assert_eq!(copy, keyspace);
        assert!(copy.restore_leases(&[]).is_err());
    }
}
