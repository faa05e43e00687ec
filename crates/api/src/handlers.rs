//! The request handlers: parse, call the store or consensus, answer.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Request, State};
use axum::http::{StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use raftnode::{MembershipChange, RaftError};
use tokio::sync::Semaphore;

use crate::error::{ApiError, ALLOWED_METHODS, STATUS_ALLOWED_METHODS};
use crate::parse;
use crate::status::StatusResponse;
use crate::AppState;

/// `PUT /<key>`: 204 once the write is applied on this node.
pub(crate) async fn put_key(
    State(app): State<AppState>,
    uri: Uri,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let key = parse::key_of(uri.path())?;
    let value = value_of(body, app.config.max_value_bytes)?;
    app.kv.put_value(key, value).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /<key>`: 200 with the value, or 404.
pub(crate) async fn get_key(State(app): State<AppState>, uri: Uri) -> Result<Bytes, ApiError> {
    let key = parse::key_of(uri.path())?;
    let consistency = parse::consistency_of(uri.query())?;
    app.kv
        .get(&key, consistency)
        .await?
        .ok_or(ApiError::NotFound)
}

/// `POST /<id>`, body = peer URL: 204 once the node is added.
pub(crate) async fn add_member(
    State(app): State<AppState>,
    uri: Uri,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let id = parse::node_id_of(uri.path())?;
    let body = value_of(body, app.config.max_value_bytes)?;
    let peer_url = parse::peer_url_of(&body)?;
    change_membership(&app, MembershipChange::AddNode { id, peer_url }).await
}

/// `DELETE /<id>`: 204 once the node is removed.
pub(crate) async fn remove_member(
    State(app): State<AppState>,
    uri: Uri,
) -> Result<StatusCode, ApiError> {
    let id = parse::node_id_of(uri.path())?;
    change_membership(&app, MembershipChange::RemoveNode { id }).await
}

/// `GET /v1/status`.
pub(crate) async fn status(State(app): State<AppState>) -> Json<StatusResponse> {
    Json(StatusResponse::from(app.kv.consensus().status()))
}

/// Any other method on a key path.
pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed {
        allow: ALLOWED_METHODS,
    }
}

/// A path reserved for raftkv's own endpoints, used as a key.
pub(crate) async fn reserved_path(uri: Uri) -> ApiError {
    ApiError::ReservedPath(uri.path().to_string())
}

/// Any other method on `/v1/status`.
pub(crate) async fn status_method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed {
        allow: STATUS_ALLOWED_METHODS,
    }
}

/// Middleware over the whole client port: at most `in_progress` permits'
/// worth of requests (HTTP and gRPC alike) at once; the rest are answered at
/// once rather than queued: 503 over HTTP, and over gRPC etcd's
/// ResourceExhausted "etcdserver: too many requests" (trailers-only).
pub(crate) async fn shed_load(
    State(in_progress): State<Arc<Semaphore>>,
    request: Request,
    next: Next,
) -> Response {
    match in_progress.try_acquire() {
        Ok(_permit) => next.run(request).await,
        Err(_) if crate::v3::is_grpc(&request) => {
            tracing::debug!("gRPC request shed: too many requests in progress");
            crate::v3::V3Error::TooManyRequests.to_status().into_http()
        }
        Err(_) => ApiError::Overloaded.into_response(),
    }
}

async fn change_membership(
    app: &AppState,
    change: MembershipChange,
) -> Result<StatusCode, ApiError> {
    let timeout_ms = app.config.request_timeout_ms;
    let change_applied = app.kv.consensus().change_membership(change);
    match tokio::time::timeout(Duration::from_millis(timeout_ms), change_applied).await {
        Ok(result) => result?,
        Err(_elapsed) => return Err(ApiError::Raft(RaftError::Timeout { timeout_ms })),
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The request body as a value, enforcing the size limit.
fn value_of(
    body: Result<Bytes, BytesRejection>,
    max_value_bytes: usize,
) -> Result<Bytes, ApiError> {
    let value = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::ValueTooLarge { max_value_bytes }
        } else {
            ApiError::BadBody(rejection.body_text())
        }
    })?;
    if value.len() > max_value_bytes {
        return Err(ApiError::ValueTooLarge { max_value_bytes });
    }
    Ok(value)
}
