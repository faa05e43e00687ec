//! The gRPC service `etcdserverpb.Cluster` on raftnode's membership
//! machinery (the same as raftexample's `POST /<id>` and `DELETE /<id>`),
//! and the guard that keeps a learner from serving what etcd's learners do
//! not serve.
//!
//! Members are raftkv's small integer ids; `MemberAdd` picks the next free
//! one (one above the highest current member). A member's `name` and
//! `clientURLs` are what it published through the log once it started
//! (empty before, which etcdctl shows as "unstarted"). Each member has
//! exactly one peer URL.

use etcdproto::etcdserverpb as pb;
use raftnode::{MembershipChange, RaftError};
use tonic::{Request, Response, Status};

use super::error::V3Error;
use super::keyspace::Keyspace;
use super::service::V3;

/// etcd's message for an RPC a learner does not serve.
pub const MSG_NOT_SUPPORTED_FOR_LEARNER: &str = "etcdserver: rpc not supported for learner";

/// The gRPC methods a learner serves, as etcd 3.4's learners do (status and
/// reads; raftkv serves a linearizable Range too, through ReadIndex).
const LEARNER_METHODS: [&str; 2] = ["/etcdserverpb.KV/Range", "/etcdserverpb.Maintenance/Status"];

/// The one peer URL of a request.
fn one_peer_url(urls: &[String]) -> Result<String, V3Error> {
    match urls {
        [url] => Ok(url.clone()),
        _ => Err(V3Error::InvalidArgument(
            "raftkv members have exactly one peer URL; pass one".to_string(),
        )),
    }
}

impl<K: Keyspace> V3<K> {
    /// The members as etcd lists them.
    fn proto_members(&self) -> Vec<pb::Member> {
        self.keyspace()
            .consensus_status()
            .members
            .into_iter()
            .map(|member| pb::Member {
                id: member.id,
                name: member.name,
                peer_ur_ls: vec![member.peer_url],
                client_ur_ls: member.client_urls,
                is_learner: member.is_learner,
            })
            .collect()
    }

    async fn change(&self, change: MembershipChange) -> Result<(), V3Error> {
        self.keyspace()
            .change_membership(change)
            .await
            .map_err(|e: RaftError| V3Error::Kv(kvstore::KvError::Raft(e)))
    }

    /// etcd's Cluster header: cluster, member and term, no revision.
    fn header(&self) -> Option<pb::ResponseHeader> {
        let status = self.keyspace().consensus_status();
        Some(pb::ResponseHeader {
            cluster_id: self.settings().cluster_id,
            member_id: status.id,
            raft_term: status.term,
            revision: 0,
        })
    }

    /// `Cluster.MemberList`: this member's view (raftkv applies membership
    /// through the log, so it is as fresh as this member's log).
    pub async fn member_list(
        &self,
        _req: pb::MemberListRequest,
    ) -> Result<pb::MemberListResponse, V3Error> {
        Ok(pb::MemberListResponse {
            header: self.header(),
            members: self.proto_members(),
        })
    }

    /// `Cluster.MemberAdd`: a voter or a learner with the next free id.
    pub async fn member_add(
        &self,
        req: pb::MemberAddRequest,
    ) -> Result<pb::MemberAddResponse, V3Error> {
        let peer_url = one_peer_url(&req.peer_ur_ls)?;
        let id = next_member_id(&self.keyspace().consensus_status());
        let change = if req.is_learner {
            MembershipChange::AddLearner {
                id,
                peer_url: peer_url.clone(),
            }
        } else {
            MembershipChange::AddNode {
                id,
                peer_url: peer_url.clone(),
            }
        };
        self.change(change).await?;
        Ok(pb::MemberAddResponse {
            header: self.header(),
            member: Some(pb::Member {
                id,
                name: String::new(),
                peer_ur_ls: vec![peer_url],
                client_ur_ls: Vec::new(),
                is_learner: req.is_learner,
            }),
            members: self.proto_members(),
        })
    }

    /// `Cluster.MemberRemove`.
    pub async fn member_remove(
        &self,
        req: pb::MemberRemoveRequest,
    ) -> Result<pb::MemberRemoveResponse, V3Error> {
        self.change(MembershipChange::RemoveNode { id: req.id })
            .await?;
        Ok(pb::MemberRemoveResponse {
            header: self.header(),
            members: self.proto_members(),
        })
    }

    /// `Cluster.MemberUpdate`: a new peer URL.
    pub async fn member_update(
        &self,
        req: pb::MemberUpdateRequest,
    ) -> Result<pb::MemberUpdateResponse, V3Error> {
        let peer_url = one_peer_url(&req.peer_ur_ls)?;
        self.change(MembershipChange::UpdatePeerUrl {
            id: req.id,
            peer_url,
        })
        .await?;
        Ok(pb::MemberUpdateResponse {
            header: self.header(),
            members: self.proto_members(),
        })
    }

    /// `Cluster.MemberPromote`: refused unless the leader sees the
    /// learner's log close to its own (a follower's request is checked by
    /// the leader when it reaches it through Raft).
    pub async fn member_promote(
        &self,
        req: pb::MemberPromoteRequest,
    ) -> Result<pb::MemberPromoteResponse, V3Error> {
        self.change(MembershipChange::PromoteLearner { id: req.id })
            .await?;
        Ok(pb::MemberPromoteResponse {
            header: self.header(),
            members: self.proto_members(),
        })
    }

    /// Whether this member is a learner now.
    pub(crate) fn is_learner(&self) -> bool {
        let status = self.keyspace().consensus_status();
        status
            .members
            .iter()
            .any(|member| member.id == status.id && member.is_learner)
    }
}

/// The id `MemberAdd` gives a new member: one above the highest member (or
/// 1 in a cluster that lists none).
pub fn next_member_id(status: &raftnode::Status) -> u64 {
    status
        .members
        .iter()
        .map(|member| member.id)
        .chain(std::iter::once(status.id))
        .max()
        .unwrap_or(0)
        + 1
}

/// Middleware over the gRPC services: a learner answers only the methods
/// etcd's learners serve, the rest with [`MSG_NOT_SUPPORTED_FOR_LEARNER`].
pub(crate) async fn learner_guard<K: Keyspace>(
    axum::extract::State(v3): axum::extract::State<V3<K>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if !learner_serves(request.uri().path()) && v3.is_learner() {
        return not_supported_for_learner().into_http();
    }
    next.run(request).await
}

/// The same guard on the JSON gateway, whose routes call the same methods
/// (`/v3/kv/range` and `/v3/maintenance/status` are served on a learner).
pub(crate) async fn gateway_learner_guard<K: Keyspace>(
    axum::extract::State(v3): axum::extract::State<V3<K>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let path = request.uri().path();
    let method = super::gateway::GATEWAY_PREFIXES
        .iter()
        .find_map(|prefix| path.strip_prefix(prefix));
    let served = matches!(method, Some("/kv/range" | "/maintenance/status"));
    if !served && v3.is_learner() {
        return super::error::gateway_error(&not_supported_for_learner());
    }
    next.run(request).await
}

/// Whether a learner serves the gRPC method at `path`.
pub(crate) fn learner_serves(path: &str) -> bool {
    LEARNER_METHODS.contains(&path)
}

/// The answer of a learner to a method it does not serve (etcd's).
pub(crate) fn not_supported_for_learner() -> Status {
    Status::unavailable(MSG_NOT_SUPPORTED_FOR_LEARNER)
}

#[tonic::async_trait]
impl<K: Keyspace> pb::cluster_server::Cluster for V3<K> {
    async fn member_add(
        &self,
        request: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        Ok(Response::new(
            V3::member_add(self, request.into_inner()).await?,
        ))
    }

    async fn member_remove(
        &self,
        request: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        Ok(Response::new(
            V3::member_remove(self, request.into_inner()).await?,
        ))
    }

    async fn member_update(
        &self,
        request: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        Ok(Response::new(
            V3::member_update(self, request.into_inner()).await?,
        ))
    }

    async fn member_list(
        &self,
        request: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        Ok(Response::new(
            V3::member_list(self, request.into_inner()).await?,
        ))
    }

    async fn member_promote(
        &self,
        request: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        Ok(Response::new(
            V3::member_promote(self, request.into_inner()).await?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_members_get_the_next_id_and_learners_serve_status_and_range() {
        let mut status = raftnode::Status {
            id: 2,
            leader_id: None,
            role: raftnode::Role::Follower,
            term: 0,
            commit_index: 0,
            applied_index: 0,
            snapshot_index: 0,
            last_index: 0,
            members: Vec::new(),
            progress: Vec::new(),
            events: Vec::new(),
        };
        assert_eq!(next_member_id(&status), 3, "only itself known");
        status.members = [1, 5, 2]
            .into_iter()
            .map(|id| raftnode::Member {
                id,
                peer_url: String::new(),
                is_learner: id == 5,
                name: String::new(),
                client_urls: Vec::new(),
            })
            .collect();
        assert_eq!(next_member_id(&status), 6);
        assert!(learner_serves("/etcdserverpb.Maintenance/Status"));
        assert!(learner_serves("/etcdserverpb.KV/Range"));
        assert!(!learner_serves("/etcdserverpb.KV/Put"));
        assert!(!learner_serves("/etcdserverpb.Cluster/MemberList"));
        assert_eq!(not_supported_for_learner().code(), tonic::Code::Unavailable);
    }
}
