//! The gRPC services `etcdserverpb.KV`, `etcdserverpb.Watch`,
//! `etcdserverpb.Lease` and `etcdserverpb.Maintenance`.

use std::sync::Arc;

use etcdproto::etcdserverpb as pb;
use etcdproto::prost::Message;
use tonic::{Request, Response, Status};

use super::error::V3Error;
use super::forward::{self, LeaderLink};
use super::keyspace::Keyspace;

/// The etcd version raftkv's v3 API follows (reported by
/// `Maintenance.Status`, printed by `etcdctl endpoint status`).
pub const ETCD_API_VERSION: &str = "3.4.0";

/// Settings the v3 services share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V3Settings {
    /// Reported as `header.cluster_id`.
    pub cluster_id: u64,
    /// Largest encoded write request (etcd's `--max-request-bytes`); larger
    /// ones are refused with "etcdserver: request is too large".
    pub max_request_bytes: usize,
}

/// Both services' shared state; cheap to clone.
#[derive(Clone)]
pub struct V3<K> {
    keyspace: K,
    settings: Arc<V3Settings>,
    leader: LeaderLink,
}

impl<K: Keyspace> V3<K> {
    /// The services over `keyspace`.
    pub fn new(keyspace: K, settings: V3Settings) -> Self {
        V3 {
            keyspace,
            settings: Arc::new(settings),
            leader: LeaderLink::new(None),
        }
    }

    /// Forwards followers' lease requests to an `https://` leader peer URL over TLS with
    /// `peer_tls` (the member's outgoing peer configuration). Without it (the default) only
    /// `http://` leaders can be reached; an `https://` one answers "no leader".
    pub fn with_peer_tls(mut self, peer_tls: Option<tls::ClientTls>) -> Self {
        self.leader = LeaderLink::new(peer_tls.as_ref());
        self
    }

    /// The keyspace the services call.
    pub fn keyspace(&self) -> &K {
        &self.keyspace
    }

    /// The services' settings.
    pub fn settings(&self) -> &V3Settings {
        &self.settings
    }

    /// Fills `cluster_id`, `member_id`, `raft_term` (and the revision when
    /// the keyspace left it 0).
    pub(crate) fn fill_header(&self, header: &mut Option<pb::ResponseHeader>) {
        let status = self.keyspace.consensus_status();
        let header = header.get_or_insert_with(Default::default);
        header.cluster_id = self.settings.cluster_id;
        header.member_id = status.id;
        header.raft_term = status.term;
        if header.revision == 0 {
            header.revision = self.keyspace.info().revision;
        }
    }

    fn check_size<M: Message>(&self, request: &M) -> Result<(), V3Error> {
        if request.encoded_len() > self.settings.max_request_bytes {
            return Err(V3Error::RequestTooLarge);
        }
        Ok(())
    }

    /// `KV.Range`.
    pub async fn range(&self, req: pb::RangeRequest) -> Result<pb::RangeResponse, V3Error> {
        let mut response = self.keyspace.range(req).await?;
        self.fill_header(&mut response.header);
        Ok(response)
    }

    /// `KV.Put`.
    pub async fn put(&self, req: pb::PutRequest) -> Result<pb::PutResponse, V3Error> {
        self.check_size(&req)?;
        let mut response = self.keyspace.put(req).await?;
        self.fill_header(&mut response.header);
        Ok(response)
    }

    /// `KV.DeleteRange`.
    pub async fn delete_range(
        &self,
        req: pb::DeleteRangeRequest,
    ) -> Result<pb::DeleteRangeResponse, V3Error> {
        self.check_size(&req)?;
        let mut response = self.keyspace.delete_range(req).await?;
        self.fill_header(&mut response.header);
        Ok(response)
    }

    /// `KV.Txn`.
    pub async fn txn(&self, req: pb::TxnRequest) -> Result<pb::TxnResponse, V3Error> {
        self.check_size(&req)?;
        let mut response = self.keyspace.txn(req).await?;
        self.fill_header(&mut response.header);
        nested_txn_headers(&mut response.responses);
        Ok(response)
    }

    /// `KV.Compact`.
    pub async fn compact(
        &self,
        req: pb::CompactionRequest,
    ) -> Result<pb::CompactionResponse, V3Error> {
        let mut response = self.keyspace.compact(req).await?;
        self.fill_header(&mut response.header);
        Ok(response)
    }

    /// `Maintenance.HashKV`.
    pub async fn hash_kv(&self, req: pb::HashKvRequest) -> Result<pb::HashKvResponse, V3Error> {
        let mut response = self.keyspace.hash_kv(req).await?;
        self.fill_header(&mut response.header);
        Ok(response)
    }

    /// `Maintenance.Alarm`. Like etcd 3.4, the answer carries no header.
    pub async fn alarm(&self, req: pb::AlarmRequest) -> Result<pb::AlarmResponse, V3Error> {
        self.check_size(&req)?;
        Ok(self.keyspace.alarm(req).await?)
    }

    /// `Lease.LeaseGrant`.
    pub async fn lease_grant(
        &self,
        req: pb::LeaseGrantRequest,
    ) -> Result<pb::LeaseGrantResponse, V3Error> {
        let mut response = self.keyspace.lease_grant(req).await?;
        self.fill_header(&mut response.header);
        Ok(response)
    }

    /// `Lease.LeaseRevoke`.
    pub async fn lease_revoke(
        &self,
        req: pb::LeaseRevokeRequest,
    ) -> Result<pb::LeaseRevokeResponse, V3Error> {
        let mut response = self.keyspace.lease_revoke(req).await?;
        self.fill_header(&mut response.header);
        Ok(response)
    }

    /// One message of `Lease.LeaseKeepAlive`: served by this member if it
    /// is the leader, else forwarded to the leader (see [`forward`]).
    pub async fn lease_keep_alive(
        &self,
        req: pb::LeaseKeepAliveRequest,
    ) -> Result<pb::LeaseKeepAliveResponse, V3Error> {
        match self.leader_keep_alive(req).await {
            Err(V3Error::Kv(kvstore::KvError::NotLeader)) => {
                let peer_url = self.leader_peer_url()?;
                let mut response: pb::LeaseKeepAliveResponse = self
                    .leader
                    .call(&peer_url, forward::PATH_KEEP_ALIVE, &req)
                    .await?;
                self.fill_header(&mut response.header);
                Ok(response)
            }
            answered => answered,
        }
    }

    /// `Lease.LeaseTimeToLive`: served by this member if it is the leader,
    /// else forwarded to the leader (see [`forward`]).
    pub async fn lease_time_to_live(
        &self,
        req: pb::LeaseTimeToLiveRequest,
    ) -> Result<pb::LeaseTimeToLiveResponse, V3Error> {
        match self.leader_time_to_live(req).await {
            Err(V3Error::Kv(kvstore::KvError::NotLeader)) => {
                let peer_url = self.leader_peer_url()?;
                let mut response: pb::LeaseTimeToLiveResponse = self
                    .leader
                    .call(&peer_url, forward::PATH_TIME_TO_LIVE, &req)
                    .await?;
                self.fill_header(&mut response.header);
                Ok(response)
            }
            answered => answered,
        }
    }

    /// A keep-alive answered by this member's store (never forwarded).
    pub(crate) async fn leader_keep_alive(
        &self,
        req: pb::LeaseKeepAliveRequest,
    ) -> Result<pb::LeaseKeepAliveResponse, V3Error> {
        let mut response = self.keyspace.lease_keep_alive(req).await?;
        self.fill_header(&mut response.header);
        Ok(response)
    }

    /// A TimeToLive answered by this member's store (never forwarded).
    pub(crate) async fn leader_time_to_live(
        &self,
        req: pb::LeaseTimeToLiveRequest,
    ) -> Result<pb::LeaseTimeToLiveResponse, V3Error> {
        let mut response = self.keyspace.lease_time_to_live(req).await?;
        self.fill_header(&mut response.header);
        Ok(response)
    }

    /// The peer URL of the leader, when it is another member.
    fn leader_peer_url(&self) -> Result<String, V3Error> {
        let status = self.keyspace.consensus_status();
        let not_leader = || V3Error::Kv(kvstore::KvError::NotLeader);
        let leader = status.leader_id.ok_or_else(not_leader)?;
        if leader == status.id {
            return Err(not_leader());
        }
        status
            .members
            .iter()
            .find(|member| member.id == leader)
            .map(|member| member.peer_url.clone())
            .ok_or_else(not_leader)
    }

    /// `Lease.LeaseLeases`.
    pub async fn lease_leases(
        &self,
        req: pb::LeaseLeasesRequest,
    ) -> Result<pb::LeaseLeasesResponse, V3Error> {
        let mut response = self.keyspace.lease_leases(req).await?;
        self.fill_header(&mut response.header);
        Ok(response)
    }

    /// `Maintenance.Snapshot`: this member's replicated state as of one
    /// applied revision (no read barrier, as etcd's), in messages of at most
    /// [`SNAPSHOT_CHUNK_BYTES`]. `remaining_bytes` counts the bytes still to
    /// come after a message (0 in the last one); every header carries the
    /// backup's revision. The file these blobs make is restored with `raftkv
    /// snapshot restore` (it is raftkv's snapshot format, not etcd's bbolt).
    pub async fn snapshot(
        &self,
        _req: pb::SnapshotRequest,
    ) -> Result<Vec<pb::SnapshotResponse>, V3Error> {
        let keyspace = self.keyspace.clone();
        let revision = self.keyspace.info().revision;
        let bytes = tokio::task::spawn_blocking(move || keyspace.backup())
            .await
            .map_err(|e| V3Error::Internal(format!("snapshot encoder stopped: {e}")))?;
        let mut header = Some(pb::ResponseHeader {
            revision,
            ..Default::default()
        });
        self.fill_header(&mut header);
        tracing::info!(
            bytes = bytes.len(),
            revision,
            "streaming a snapshot to a client"
        );
        Ok(snapshot_messages(&bytes, header))
    }

    /// `Maintenance.Defragment`: an honest no-op. The keyspace lives in
    /// memory and a compaction frees superseded versions at once, so there is
    /// no free space in a file to give back; the answer is success and
    /// nothing changes.
    pub async fn defragment(
        &self,
        _req: pb::DefragmentRequest,
    ) -> Result<pb::DefragmentResponse, V3Error> {
        let mut response = pb::DefragmentResponse::default();
        self.fill_header(&mut response.header);
        Ok(response)
    }

    /// `Maintenance.Status`: this member's view, no read barrier.
    pub async fn status(&self, _req: pb::StatusRequest) -> Result<pb::StatusResponse, V3Error> {
        let consensus = self.keyspace.consensus_status();
        let info = self.keyspace.info();
        let mut response = pb::StatusResponse {
            header: Some(pb::ResponseHeader {
                revision: info.revision,
                ..Default::default()
            }),
            version: ETCD_API_VERSION.to_string(),
            db_size: info.db_size_bytes,
            leader: consensus.leader_id.unwrap_or(0),
            raft_index: consensus.commit_index,
            raft_term: consensus.term,
            raft_applied_index: consensus.applied_index,
            errors: info
                .alarms
                .iter()
                .map(|alarm| {
                    let name = pb::AlarmType::try_from(alarm.alarm)
                        .map(|a| a.as_str_name())
                        .unwrap_or("UNKNOWN");
                    format!("memberID:{} alarm:{name} ", alarm.member_id)
                })
                .collect(),
            db_size_in_use: info.db_size_in_use_bytes,
            ..Default::default()
        };
        self.fill_header(&mut response.header);
        Ok(response)
    }
}

/// etcd 3.4 answers a nested txn with an empty (present, all-zero) header;
/// clients that read `header.revision` of a nested txn get 0 either way, but
/// the message on the wire is etcd's.
fn nested_txn_headers(responses: &mut [pb::ResponseOp]) {
    for response in responses {
        if let Some(pb::response_op::Response::ResponseTxn(txn)) = &mut response.response {
            txn.header.get_or_insert_with(Default::default);
            nested_txn_headers(&mut txn.responses);
        }
    }
}

#[tonic::async_trait]
impl<K: Keyspace> pb::kv_server::Kv for V3<K> {
    async fn range(
        &self,
        request: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        Ok(Response::new(V3::range(self, request.into_inner()).await?))
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        Ok(Response::new(V3::put(self, request.into_inner()).await?))
    }

    async fn delete_range(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        Ok(Response::new(
            V3::delete_range(self, request.into_inner()).await?,
        ))
    }

    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        Ok(Response::new(V3::txn(self, request.into_inner()).await?))
    }

    async fn compact(
        &self,
        request: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        Ok(Response::new(
            V3::compact(self, request.into_inner()).await?,
        ))
    }

    type RangeStreamStream = Unserved<pb::RangeStreamResponse>;

    async fn range_stream(
        &self,
        _request: Request<pb::RangeRequest>,
    ) -> Result<Response<Self::RangeStreamStream>, Status> {
        Err(V3Error::Unimplemented("KV.RangeStream (not in etcd 3.4)").into())
    }
}

/// Keep-alive answers waiting for the client to read them, per stream.
const KEEP_ALIVE_STREAM_BUFFER: usize = 16;

#[tonic::async_trait]
impl<K: Keyspace> pb::lease_server::Lease for V3<K> {
    async fn lease_grant(
        &self,
        request: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        Ok(Response::new(
            V3::lease_grant(self, request.into_inner()).await?,
        ))
    }

    async fn lease_revoke(
        &self,
        request: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        Ok(Response::new(
            V3::lease_revoke(self, request.into_inner()).await?,
        ))
    }

    type LeaseKeepAliveStream = Unserved<pb::LeaseKeepAliveResponse>;

    /// Answers each keep-alive in order; a failure other than an unknown
    /// lease (which answers TTL 0) ends the stream with its status, as
    /// etcd's server does (clients open a new stream and retry).
    async fn lease_keep_alive(
        &self,
        request: Request<tonic::Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut incoming = request.into_inner();
        let (sender, receiver) = tokio::sync::mpsc::channel(KEEP_ALIVE_STREAM_BUFFER);
        let v3 = self.clone();
        tokio::spawn(async move {
            loop {
                let next = match incoming.message().await {
                    Ok(Some(next)) => next,
                    Ok(None) => return,
                    Err(status) => {
                        tracing::debug!(%status, "keep-alive stream ended by the client");
                        return;
                    }
                };
                let answer = V3::lease_keep_alive(&v3, next).await.map_err(Status::from);
                let failed = answer.is_err();
                if sender.send(answer).await.is_err() || failed {
                    return;
                }
            }
        });
        let stream = tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(receiver);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        Ok(Response::new(
            V3::lease_time_to_live(self, request.into_inner()).await?,
        ))
    }

    async fn lease_leases(
        &self,
        request: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        Ok(Response::new(
            V3::lease_leases(self, request.into_inner()).await?,
        ))
    }
}

#[tonic::async_trait]
impl<K: Keyspace> pb::watch_server::Watch for V3<K> {
    type WatchStream = Unserved<pb::WatchResponse>;

    /// etcd's watch stream (see `v3::watch`); a client that sent
    /// `hasleader: true` is refused, or its stream ended, with "etcdserver:
    /// no leader" while this member knows no leader.
    async fn watch(
        &self,
        request: Request<tonic::Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let require_leader = super::watch::requires_leader(request.metadata());
        if require_leader && self.keyspace.consensus_status().leader_id.is_none() {
            return Err(super::watch::no_leader());
        }
        let incoming = request.into_inner();
        let (sender, receiver) = tokio::sync::mpsc::channel(super::watch::WATCH_STREAM_BUFFER);
        tokio::spawn(super::watch::serve(
            self.clone(),
            incoming,
            sender,
            require_leader,
        ));
        let stream = tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(receiver);
        Ok(Response::new(Box::pin(stream)))
    }
}

/// The stream type of the streaming RPCs raftkv serves (or does not).
type Unserved<T> =
    std::pin::Pin<Box<dyn tonic::codegen::tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl<K: Keyspace> pb::maintenance_server::Maintenance for V3<K> {
    async fn alarm(
        &self,
        request: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        Ok(Response::new(V3::alarm(self, request.into_inner()).await?))
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        Ok(Response::new(V3::status(self, request.into_inner()).await?))
    }

    async fn defragment(
        &self,
        request: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        Ok(Response::new(
            V3::defragment(self, request.into_inner()).await?,
        ))
    }

    async fn hash(
        &self,
        _request: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        Err(V3Error::Unimplemented("Maintenance.Hash (use HashKV)").into())
    }

    async fn hash_kv(
        &self,
        request: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        Ok(Response::new(
            V3::hash_kv(self, request.into_inner()).await?,
        ))
    }

    type SnapshotStream = Unserved<pb::SnapshotResponse>;

    async fn snapshot(
        &self,
        request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        let messages = V3::snapshot(self, request.into_inner()).await?;
        let stream = tonic::codegen::tokio_stream::iter(messages.into_iter().map(Ok));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn move_leader(
        &self,
        _request: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        Err(V3Error::Unimplemented("Maintenance.MoveLeader").into())
    }

    async fn downgrade(
        &self,
        _request: Request<pb::DowngradeRequest>,
    ) -> Result<Response<pb::DowngradeResponse>, Status> {
        Err(V3Error::Unimplemented("Maintenance.Downgrade").into())
    }
}

/// Largest blob in one `Maintenance.Snapshot` message.
pub const SNAPSHOT_CHUNK_BYTES: usize = 64 * 1024;

/// Splits a backup into `Maintenance.Snapshot` messages (at least one, so an
/// empty stream never looks like a finished one).
fn snapshot_messages(
    bytes: &[u8],
    header: Option<pb::ResponseHeader>,
) -> Vec<pb::SnapshotResponse> {
    let mut messages = Vec::with_capacity(bytes.len() / SNAPSHOT_CHUNK_BYTES + 1);
    let mut sent = 0;
    for chunk in bytes.chunks(SNAPSHOT_CHUNK_BYTES) {
        sent += chunk.len();
        messages.push(pb::SnapshotResponse {
            header,
            remaining_bytes: (bytes.len() - sent) as u64,
            blob: chunk.to_vec(),
            ..Default::default()
        });
    }
    if messages.is_empty() {
        messages.push(pb::SnapshotResponse {
            header,
            ..Default::default()
        });
    }
    messages
}

#[cfg(test)]
mod snapshot_tests {
    use super::*;

    #[test]
    fn snapshot_messages_cover_the_bytes_in_order_and_count_down() {
        for len in [
            0,
            1,
            SNAPSHOT_CHUNK_BYTES,
            SNAPSHOT_CHUNK_BYTES + 1,
            3 * SNAPSHOT_CHUNK_BYTES - 7,
        ] {
            let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let messages = snapshot_messages(&bytes, None);
            let joined: Vec<u8> = messages.iter().flat_map(|m| m.blob.clone()).collect();
            assert_eq!(joined, bytes, "len {len}");
            assert_eq!(messages.last().map(|m| m.remaining_bytes), Some(0));
            let mut remaining = bytes.len() as u64;
            for message in &messages {
                assert!(message.blob.len() <= SNAPSHOT_CHUNK_BYTES);
                remaining -= message.blob.len() as u64;
                assert_eq!(message.remaining_bytes, remaining);
            }
        }
    }
}
