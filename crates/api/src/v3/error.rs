//! The one place where a failed v3 request becomes etcd's gRPC status (and,
//! through it, the JSON gateway's HTTP answer).
//!
//! Codes and messages are etcd 3.4's (`etcdserver/api/v3rpc/rpctypes`), so
//! etcdctl and the Go client recognise them and print what they print
//! against etcd.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kvstore::KvError;
use raftnode::{MemberError, RaftError};
use tonic::{Code, Status};

/// etcd's message for a write larger than `--max-request-bytes`.
pub const MSG_REQUEST_TOO_LARGE: &str = "etcdserver: request is too large";
/// etcd's message when the cluster has no leader.
pub const MSG_NO_LEADER: &str = "etcdserver: no leader";
/// etcd's message when a request did not finish in time.
pub const MSG_TIMEOUT: &str = "etcdserver: request timed out";
/// etcd's message when the server is shutting down.
pub const MSG_STOPPED: &str = "etcdserver: server stopped";
/// etcd's message when too many requests are pending.
pub const MSG_TOO_MANY_REQUESTS: &str = "etcdserver: too many requests";

/// Why a v3 request failed before or inside the keyspace.
#[derive(Debug, thiserror::Error)]
pub enum V3Error {
    /// The keyspace refused or failed the request.
    #[error(transparent)]
    Kv(#[from] KvError),
    /// A write whose encoding exceeds `max_request_bytes`.
    #[error("{MSG_REQUEST_TOO_LARGE}")]
    RequestTooLarge,
    /// A gateway request body that is not the request's JSON.
    #[error("{0}")]
    BadJson(String),
    /// The gateway body could not be read (or is over the HTTP body limit).
    #[error("{0}")]
    BadBody(String),
    /// The node has `max_concurrent_requests` requests in progress.
    #[error("{MSG_TOO_MANY_REQUESTS}")]
    TooManyRequests,
    /// The leader's answer to a request this member forwarded to it.
    #[error("{}", .0.message())]
    Leader(Status),
    /// A request field raftkv cannot accept (e.g. two peer URLs).
    #[error("{0}")]
    InvalidArgument(String),
    /// An RPC raftkv does not serve.
    #[error("raftkv does not implement {0}")]
    Unimplemented(&'static str),
    /// This member failed on its own (a task died); nothing was changed.
    #[error("raftkv: {0}")]
    Internal(String),
}

impl V3Error {
    /// The gRPC status etcd answers for this error.
    pub fn to_status(&self) -> Status {
        match self {
            V3Error::Kv(error) => kv_status(error),
            V3Error::RequestTooLarge => Status::invalid_argument(MSG_REQUEST_TOO_LARGE),
            V3Error::BadJson(message)
            | V3Error::BadBody(message)
            | V3Error::InvalidArgument(message) => Status::invalid_argument(message.clone()),
            V3Error::TooManyRequests => Status::resource_exhausted(MSG_TOO_MANY_REQUESTS),
            V3Error::Unimplemented(_) => Status::unimplemented(self.to_string()),
            V3Error::Leader(status) => Status::new(status.code(), status.message()),
            V3Error::Internal(_) => Status::internal(self.to_string()),
        }
    }
}

impl From<V3Error> for Status {
    fn from(error: V3Error) -> Self {
        let status = error.to_status();
        tracing::debug!(code = ?status.code(), message = status.message(), "v3 request failed");
        status
    }
}

/// etcd's status for a keyspace error.
pub fn kv_status(error: &KvError) -> Status {
    match error {
        KvError::Raft(error) => raft_status(error),
        KvError::Busy => Status::resource_exhausted(MSG_TOO_MANY_REQUESTS),
        KvError::Timeout { .. } | KvError::ReadTimeout { .. } => Status::unavailable(MSG_TIMEOUT),
        KvError::Stopped => Status::unavailable(MSG_STOPPED),
        // The keyspace's own errors display etcd's exact message.
        KvError::FutureRevision | KvError::Compacted | KvError::LeaseTtlTooLarge => {
            Status::out_of_range(error.to_string())
        }
        KvError::LeaseExists => Status::failed_precondition(error.to_string()),
        KvError::NotLeader => Status::unavailable(error.to_string()),
        KvError::KeyNotFound
        | KvError::EmptyKey
        | KvError::ValueProvided
        | KvError::LeaseProvided
        | KvError::InvalidSortOption
        | KvError::DuplicateKey
        | KvError::TooManyOps => Status::invalid_argument(error.to_string()),
        KvError::NoSpace => Status::resource_exhausted(error.to_string()),
        KvError::LeaseNotFound => Status::not_found(error.to_string()),
    }
}

fn raft_status(error: &RaftError) -> Status {
    match error {
        RaftError::NoLeader => Status::unavailable(MSG_NO_LEADER),
        RaftError::Busy => Status::resource_exhausted(MSG_TOO_MANY_REQUESTS),
        RaftError::ProposalDropped(_) | RaftError::Timeout { .. } => {
            Status::unavailable(MSG_TIMEOUT)
        }
        RaftError::Stopped => Status::unavailable(MSG_STOPPED),
        RaftError::MembershipChangeInProgress | RaftError::InvalidMembership(_) => {
            Status::failed_precondition(error.to_string())
        }
        // The messages are etcd's own (see `raftnode::MemberError`).
        RaftError::Member(MemberError::NotFound) => Status::not_found(error.to_string()),
        RaftError::Member(_) => Status::failed_precondition(error.to_string()),
    }
}

/// The HTTP status grpc-gateway (v1, as etcd 3.4 embeds it) gives a gRPC
/// code.
pub fn http_status_of(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The gateway's error body, as etcd 3.4's grpc-gateway writes it:
/// `{"error": msg, "message": msg, "code": n}` with the HTTP status of the
/// code.
pub fn gateway_error(status: &Status) -> Response {
    let body = serde_json::json!({
        "error": status.message(),
        "message": status.message(),
        "code": status.code() as i32,
    });
    (http_status_of(status.code()), axum::Json(body)).into_response()
}

impl IntoResponse for V3Error {
    fn into_response(self) -> Response {
        gateway_error(&Status::from(self))
    }
}
