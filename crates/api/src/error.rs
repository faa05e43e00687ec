//! One error type for every failed request, and its HTTP status.

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kvstore::KvError;
use raftnode::RaftError;

/// Methods the key routes answer (the `Allow` header of a 405).
pub const ALLOWED_METHODS: &str = "GET, HEAD, PUT, POST, DELETE";
/// Methods `/v1/status` answers.
pub const STATUS_ALLOWED_METHODS: &str = "GET, HEAD";

/// Why a request failed. Each variant maps to one status (see
/// [`ApiError::status`]); the response body is the plain-text message.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The key-value layer failed (write/read).
    #[error(transparent)]
    Kv(#[from] KvError),
    /// The consensus layer failed (membership change).
    #[error(transparent)]
    Raft(#[from] RaftError),
    /// The request body is larger than `max_value_bytes`.
    #[error("value too large: the limit is {max_value_bytes} bytes")]
    ValueTooLarge {
        /// The configured limit.
        max_value_bytes: usize,
    },
    /// The body could not be read.
    #[error("cannot read request body: {0}")]
    BadBody(String),
    /// A key under `/v1/`, `/v3/` or `/v3beta/`, which raftkv reserves for
    /// its own endpoints and etcd's JSON gateway.
    #[error("path `{0}` is reserved: keys may not start with /v1/, /v3/ or /v3beta/")]
    ReservedPath(String),
    /// A bad read option in the query string.
    #[error("bad query: {0}")]
    BadQuery(String),
    /// `POST`/`DELETE` on a path that is not a node id.
    #[error("bad node id {0}")]
    BadNodeId(String),
    /// `POST /<id>` with a body that is not a peer URL.
    #[error("bad peer URL {0}")]
    BadPeerUrl(String),
    /// `GET` of a key that does not exist.
    #[error("key not found")]
    NotFound,
    /// A method the route does not serve.
    #[error("method not allowed; allowed: {allow}")]
    MethodNotAllowed {
        /// The methods the path does answer (the `Allow` header).
        allow: &'static str,
    },
    /// The server has `max_concurrent_requests` requests in progress.
    #[error("server busy: too many requests in progress; retry")]
    Overloaded,
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Kv(KvError::Raft(error)) | ApiError::Raft(error) => raft_status(error),
            ApiError::Kv(
                KvError::Busy
                | KvError::Timeout { .. }
                | KvError::ReadTimeout { .. }
                | KvError::Stopped
                | KvError::NotLeader,
            ) => StatusCode::SERVICE_UNAVAILABLE,
            // etcd's keyspace errors, with the gateway's statuses for their codes.
            ApiError::Kv(KvError::NoSpace) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Kv(KvError::LeaseNotFound) => StatusCode::NOT_FOUND,
            ApiError::Kv(_) => StatusCode::BAD_REQUEST,
            ApiError::ValueTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BadBody(_)
            | ApiError::ReservedPath(_)
            | ApiError::BadQuery(_)
            | ApiError::BadNodeId(_)
            | ApiError::BadPeerUrl(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

fn raft_status(error: &RaftError) -> StatusCode {
    match error {
        RaftError::InvalidMembership(_) | RaftError::Member(_) => StatusCode::BAD_REQUEST,
        RaftError::NoLeader
        | RaftError::ProposalDropped(_)
        | RaftError::Busy
        | RaftError::Timeout { .. }
        | RaftError::MembershipChangeInProgress
        | RaftError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let allow = match &self {
            ApiError::MethodNotAllowed { allow } => Some(*allow),
            _ => None,
        };
        let message = self.to_string();
        let mut response = (status, format!("{message}\n")).into_response();
        if status.is_server_error() {
            // Logged once, by `log_server_errors`, which knows the request.
            response
                .extensions_mut()
                .insert(ServerErrorMessage(message));
        }
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let Some(allow) = allow {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        response
    }
}

/// The message of a 5xx [`ApiError`], carried on its response to the logging
/// layer.
#[derive(Debug, Clone)]
struct ServerErrorMessage(String);

/// The outermost layer of the router: logs every 5xx answer once, at warn,
/// with the request's method and path and the error's message.
pub(crate) async fn log_server_errors(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    let status = response.status();
    if status.is_server_error() {
        let error = response
            .extensions()
            .get::<ServerErrorMessage>()
            .map_or("", |m| m.0.as_str());
        tracing::warn!(%method, path, status = status.as_u16(), error, "request failed");
    }
    response
}
