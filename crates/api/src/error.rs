//! One error type for every failed request, and its HTTP status.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kvstore::KvError;
use raftnode::RaftError;

use crate::metrics::{HttpLabels, Metrics};

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

/// The header carrying a request's id: taken from the request when the
/// client sent a usable one, otherwise made up; always echoed in the
/// response, and named in the warn line of a failed request.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Longest client-supplied request id kept (longer ones are replaced).
pub const REQUEST_ID_MAX_BYTES: usize = 64;

/// The outermost layer of the client port (around load shedding): gives
/// every request an id, times it (for the live view's latency ring), counts
/// every HTTP answer by route class and status
/// (`raftkv_http_requests_total`) and every gRPC call
/// ([`crate::metrics::grpc`]), and logs each 5xx answer (and each gRPC call
/// failing with a server-side code) once, at warn, with the request id,
/// method, path, status and the error's message. 4xx answers are not logged.
pub(crate) async fn log_server_errors(
    State(metrics): State<Metrics>,
    request: Request,
    next: Next,
) -> Response {
    let started = std::time::Instant::now();
    // Only a client's own id is carried on every answer; one is made up only
    // for a request that fails on the server (the only ones logged): making
    // and inserting an id for every request cost about 7 % of the
    // instructions of a write.
    let client_id = request_id_of(&request);
    if crate::v3::is_grpc(&request) {
        let call = crate::metrics::grpc::labels_of(request.uri().path())
            .map(|labels| crate::metrics::grpc::Call::start(&metrics, labels, client_id.clone()));
        let mut response = next.run(request).await;
        let now = std::time::Instant::now();
        metrics.record_latency(now, now - started);
        if let Some(value) = client_id
            .as_deref()
            .and_then(|id| HeaderValue::from_str(id).ok())
        {
            response.headers_mut().insert(REQUEST_ID_HEADER, value);
        }
        return match call {
            Some(call) => call.observe(response),
            None => response,
        };
    }
    let method = request.method().clone();
    let route = route_class(&method, request.uri().path());
    let uri = request.uri().clone();
    let mut response = next.run(request).await;
    let now = std::time::Instant::now();
    metrics.record_latency(now, now - started);
    let status = response.status();
    metrics
        .recorded()
        .http_requests
        .get_or_create(&HttpLabels {
            route,
            code: status.as_u16(),
        })
        .inc();
    let request_id = if status.is_server_error() {
        let request_id = client_id.unwrap_or_else(|| metrics.next_request_id());
        let error = response
            .extensions()
            .get::<ServerErrorMessage>()
            .map_or("", |m| m.0.as_str());
        tracing::warn!(
            request_id,
            %method,
            path = uri.path(),
            status = status.as_u16(),
            error,
            "request failed"
        );
        Some(request_id)
    } else {
        client_id
    };
    if let Some(value) = request_id
        .as_deref()
        .and_then(|id| HeaderValue::from_str(id).ok())
    {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// The client's request id, if it sent one that is short and printable.
fn request_id_of(request: &Request) -> Option<String> {
    let value = request.headers().get(REQUEST_ID_HEADER)?.to_str().ok()?;
    let usable = !value.is_empty()
        && value.len() <= REQUEST_ID_MAX_BYTES
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    usable.then(|| value.to_string())
}

/// The route class of an HTTP request (the `route` label): a fixed set, so
/// clients cannot grow the label sets.
pub(crate) fn route_class(method: &Method, path: &str) -> &'static str {
    match path {
        crate::STATUS_PATH => "status",
        crate::metrics::METRICS_PATH => "metrics",
        crate::health::HEALTH_PATH | crate::health::LIVEZ_PATH | crate::health::READYZ_PATH => {
            "health"
        }
        _ if path.starts_with("/v3/") || path.starts_with("/v3beta/") => "gateway",
        _ if path == "/v1" || path.starts_with("/v1/") => "reserved",
        _ if *method == Method::POST || *method == Method::DELETE => "member",
        _ => "key",
    }
}
