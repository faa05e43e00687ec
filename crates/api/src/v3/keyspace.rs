//! What the v3 layer needs from the keyspace: the seam between api and kvstore.

use std::future::Future;

use etcdproto::etcdserverpb as pb;
use kvstore::KvError;

/// The keyspace's size and alarms, for `Maintenance.Status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyspaceInfo {
    /// Current revision.
    pub revision: i64,
    /// Bytes the keyspace retains (keys, values and history): `db_size`.
    pub db_size_bytes: i64,
    /// Bytes in use (`db_size_in_use`); raftkv frees nothing lazily, so
    /// usually equal to `db_size_bytes`.
    pub db_size_in_use_bytes: i64,
    /// Raised alarms, as etcd reports them.
    pub alarms: Vec<pb::AlarmMember>,
}

/// The etcd v3 operations of the multi-version keyspace (implemented by
/// [`kvstore::KvStore`]). Responses carry `header.revision` only; the v3
/// layer fills the rest of the header.
pub trait Keyspace: Clone + Send + Sync + 'static {
    /// `KV.Range`: linearizable unless `serializable`.
    fn range(
        &self,
        req: pb::RangeRequest,
    ) -> impl Future<Output = Result<pb::RangeResponse, KvError>> + Send;
    /// `KV.Put`.
    fn put(
        &self,
        req: pb::PutRequest,
    ) -> impl Future<Output = Result<pb::PutResponse, KvError>> + Send;
    /// `KV.DeleteRange`.
    fn delete_range(
        &self,
        req: pb::DeleteRangeRequest,
    ) -> impl Future<Output = Result<pb::DeleteRangeResponse, KvError>> + Send;
    /// `KV.Txn`.
    fn txn(
        &self,
        req: pb::TxnRequest,
    ) -> impl Future<Output = Result<pb::TxnResponse, KvError>> + Send;
    /// `KV.Compact`.
    fn compact(
        &self,
        req: pb::CompactionRequest,
    ) -> impl Future<Output = Result<pb::CompactionResponse, KvError>> + Send;
    /// `Maintenance.HashKV`.
    fn hash_kv(
        &self,
        req: pb::HashKvRequest,
    ) -> impl Future<Output = Result<pb::HashKvResponse, KvError>> + Send;
    /// `Maintenance.Alarm`.
    fn alarm(
        &self,
        req: pb::AlarmRequest,
    ) -> impl Future<Output = Result<pb::AlarmResponse, KvError>> + Send;
    /// `Lease.LeaseGrant`.
    fn lease_grant(
        &self,
        req: pb::LeaseGrantRequest,
    ) -> impl Future<Output = Result<pb::LeaseGrantResponse, KvError>> + Send;
    /// `Lease.LeaseRevoke`.
    fn lease_revoke(
        &self,
        req: pb::LeaseRevokeRequest,
    ) -> impl Future<Output = Result<pb::LeaseRevokeResponse, KvError>> + Send;
    /// One keep-alive of `Lease.LeaseKeepAlive` (the leader's).
    fn lease_keep_alive(
        &self,
        req: pb::LeaseKeepAliveRequest,
    ) -> impl Future<Output = Result<pb::LeaseKeepAliveResponse, KvError>> + Send;
    /// `Lease.LeaseTimeToLive` (the leader's).
    fn lease_time_to_live(
        &self,
        req: pb::LeaseTimeToLiveRequest,
    ) -> impl Future<Output = Result<pb::LeaseTimeToLiveResponse, KvError>> + Send;
    /// `Lease.LeaseLeases`.
    fn lease_leases(
        &self,
        req: pb::LeaseLeasesRequest,
    ) -> impl Future<Output = Result<pb::LeaseLeasesResponse, KvError>> + Send;
    /// Opens a watch stream whose responses hold about
    /// `max_response_bytes` of events at most (see [`kvstore::WatchStream`]).
    fn watch(&self, max_response_bytes: usize) -> kvstore::WatchStream;
    /// Revision, size and alarms (no barrier: a local, possibly stale view).
    fn info(&self) -> KeyspaceInfo;
    /// The node's consensus status (term, leader, indexes).
    fn consensus_status(&self) -> raftnode::Status;
    /// A membership change, answered once it is applied on this member
    /// (or refused).
    fn change_membership(
        &self,
        change: raftnode::MembershipChange,
    ) -> impl Future<Output = Result<(), raftnode::RaftError>> + Send;
    /// This member's replicated state as a backup file's bytes
    /// (`Maintenance.Snapshot`; see [`kvstore::backup`]). O(size).
    fn backup(&self) -> Vec<u8>;
}

impl Keyspace for kvstore::KvStore {
    async fn range(&self, req: pb::RangeRequest) -> Result<pb::RangeResponse, KvError> {
        kvstore::KvStore::range(self, req).await
    }

    async fn put(&self, req: pb::PutRequest) -> Result<pb::PutResponse, KvError> {
        kvstore::KvStore::put(self, req).await
    }

    async fn delete_range(
        &self,
        req: pb::DeleteRangeRequest,
    ) -> Result<pb::DeleteRangeResponse, KvError> {
        kvstore::KvStore::delete_range(self, req).await
    }

    async fn txn(&self, req: pb::TxnRequest) -> Result<pb::TxnResponse, KvError> {
        kvstore::KvStore::txn(self, req).await
    }

    async fn compact(&self, req: pb::CompactionRequest) -> Result<pb::CompactionResponse, KvError> {
        kvstore::KvStore::compact(self, req).await
    }

    async fn hash_kv(&self, req: pb::HashKvRequest) -> Result<pb::HashKvResponse, KvError> {
        kvstore::KvStore::hash_kv(self, req).await
    }

    async fn alarm(&self, req: pb::AlarmRequest) -> Result<pb::AlarmResponse, KvError> {
        kvstore::KvStore::alarm(self, req).await
    }

    async fn lease_grant(
        &self,
        req: pb::LeaseGrantRequest,
    ) -> Result<pb::LeaseGrantResponse, KvError> {
        kvstore::KvStore::lease_grant(self, req).await
    }

    async fn lease_revoke(
        &self,
        req: pb::LeaseRevokeRequest,
    ) -> Result<pb::LeaseRevokeResponse, KvError> {
        kvstore::KvStore::lease_revoke(self, req).await
    }

    async fn lease_keep_alive(
        &self,
        req: pb::LeaseKeepAliveRequest,
    ) -> Result<pb::LeaseKeepAliveResponse, KvError> {
        kvstore::KvStore::lease_keep_alive(self, req).await
    }

    async fn lease_time_to_live(
        &self,
        req: pb::LeaseTimeToLiveRequest,
    ) -> Result<pb::LeaseTimeToLiveResponse, KvError> {
        kvstore::KvStore::lease_time_to_live(self, req).await
    }

    async fn lease_leases(
        &self,
        req: pb::LeaseLeasesRequest,
    ) -> Result<pb::LeaseLeasesResponse, KvError> {
        kvstore::KvStore::lease_leases(self, req).await
    }

    fn watch(&self, max_response_bytes: usize) -> kvstore::WatchStream {
        kvstore::KvStore::watch(self, max_response_bytes)
    }

    fn info(&self) -> KeyspaceInfo {
        let status = self.keyspace_status();
        let size = i64::try_from(status.db_size_bytes).unwrap_or(i64::MAX);
        KeyspaceInfo {
            revision: status.revision,
            db_size_bytes: size,
            db_size_in_use_bytes: size,
            alarms: status.alarms,
        }
    }

    fn consensus_status(&self) -> raftnode::Status {
        self.consensus().status()
    }

    async fn change_membership(
        &self,
        change: raftnode::MembershipChange,
    ) -> Result<(), raftnode::RaftError> {
        // raftnode answers within its own request timeout; this bound is a
        // safety net should its loop stall.
        let timeout_ms = 2 * kvstore::KvConfig::DEFAULT_REQUEST_TIMEOUT_MS;
        let applied = self.consensus().change_membership(change);
        tokio::time::timeout(std::time::Duration::from_millis(timeout_ms), applied)
            .await
            .unwrap_or(Err(raftnode::RaftError::Timeout { timeout_ms }))
    }

    fn backup(&self) -> Vec<u8> {
        kvstore::KvStore::backup(self)
    }
}
