//! The JSON body of `GET /v1/status`.

use raftnode::{Role, Status};
use serde::{Deserialize, Serialize};

/// A member in [`StatusResponse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberResponse {
    /// Node id.
    pub id: u64,
    /// Peer URL (Raft traffic).
    pub peer_url: String,
    /// A learner: replicates, does not vote.
    #[serde(default)]
    pub is_learner: bool,
}

/// `GET /v1/status`: what tools and tests need to find the leader and
/// follow progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusResponse {
    /// This node's id.
    pub id: u64,
    /// The leader this node knows of (`null` if none).
    pub leader_id: Option<u64>,
    /// `"leader"`, `"follower"`, `"candidate"` or `"pre_candidate"`.
    pub role: String,
    /// Current term.
    pub term: u64,
    /// Highest log index known committed.
    pub commit_index: u64,
    /// Highest log index applied here.
    pub applied_index: u64,
    /// Index of the newest snapshot (0 if none).
    pub snapshot_index: u64,
    /// Highest index in the local log.
    pub last_index: u64,
    /// Members (voters and learners) with their peer URLs.
    pub members: Vec<MemberResponse>,
}

/// The role's name in reports and `/v1/status`.
pub(crate) fn role_name(role: Role) -> &'static str {
    match role {
        Role::Leader => "leader",
        Role::Follower => "follower",
        Role::Candidate => "candidate",
        Role::PreCandidate => "pre_candidate",
    }
}

impl From<Status> for StatusResponse {
    fn from(status: Status) -> Self {
        let role = role_name(status.role);
        StatusResponse {
            id: status.id,
            leader_id: status.leader_id,
            role: role.to_string(),
            term: status.term,
            commit_index: status.commit_index,
            applied_index: status.applied_index,
            snapshot_index: status.snapshot_index,
            last_index: status.last_index,
            members: status
                .members
                .into_iter()
                .map(|member| MemberResponse {
                    id: member.id,
                    peer_url: member.peer_url,
                    is_learner: member.is_learner,
                })
                .collect(),
        }
    }
}
