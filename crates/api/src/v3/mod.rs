//! etcd's v3 API: the gRPC services `KV`, `Watch`, `Lease`, `Maintenance`
//! and `Cluster` (tonic) and the JSON gateway, over the multi-version
//! keyspace. A learner serves only what etcd's learners serve
//! ([`cluster`]).
//!
//! Everything shares the client port with raftexample's routes, as etcd
//! serves gRPC and its gateway on one port: [`one_port`] sends requests whose
//! `content-type` is `application/grpc…` to tonic and everything else to
//! axum. Errors become etcd's gRPC statuses in one place
//! ([`error`]); the gateway derives its HTTP answer from that status.
//!
//! # Invariants
//! * Nothing a client sends can panic a handler: decoding is tonic's or
//!   serde's, validation is the keyspace's, and every failure is a typed
//!   [`V3Error`] or [`kvstore::KvError`] mapped to a status.
//! * Writes over `max_request_bytes` are refused before reaching the
//!   keyspace (nothing proposed); gRPC messages over `max_request_bytes` +
//!   [`GRPC_OVERHEAD_BYTES`] are refused while decoding, with
//!   ResourceExhausted as grpc-go words it.

pub mod cluster;
pub mod error;
pub mod forward;
pub mod gateway;
mod keyspace;
mod service;
pub mod watch;

use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::response::Response;
use axum::Router;
use etcdproto::etcdserverpb as pb;
use tower::ServiceExt;

pub use error::V3Error;
pub use forward::peer_router;
pub use keyspace::{Keyspace, KeyspaceInfo};
pub use service::{V3Settings, ETCD_API_VERSION, V3};

/// What a gRPC message may carry beyond `max_request_bytes` (etcd's
/// `grpcOverheadBytes`): the gRPC layer refuses larger messages outright.
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// The gRPC services as an axum router (tonic's routes).
pub fn grpc_router<K: Keyspace>(v3: V3<K>, max_request_bytes: usize) -> Router {
    let limit_bytes = max_request_bytes.saturating_add(GRPC_OVERHEAD_BYTES);
    let kv = pb::kv_server::KvServer::new(v3.clone()).max_decoding_message_size(limit_bytes);
    let lease =
        pb::lease_server::LeaseServer::new(v3.clone()).max_decoding_message_size(limit_bytes);
    let watch =
        pb::watch_server::WatchServer::new(v3.clone()).max_decoding_message_size(limit_bytes);
    let maintenance = pb::maintenance_server::MaintenanceServer::new(v3.clone())
        .max_decoding_message_size(limit_bytes);
    let cluster = pb::cluster_server::ClusterServer::new(v3.clone());
    tonic::service::Routes::new(kv)
        .add_service(watch)
        .add_service(lease)
        .add_service(maintenance)
        .add_service(cluster)
        .into_axum_router()
        .layer(axum::middleware::from_fn_with_state(
            v3,
            cluster::learner_guard::<K>,
        ))
        .layer(axum::middleware::map_response(
            too_large_is_resource_exhausted,
        ))
}

/// One port for everything: gRPC (by content type) to `grpc`, the rest to
/// `http`.
///
/// The split is a middleware on `http` rather than an outer router, so an
/// HTTP request is routed once (an outer router with only a fallback still
/// ran its own path match on every request).
pub fn one_port(http: Router, grpc: Router) -> Router {
    http.layer(axum::middleware::from_fn(
        move |request: Request, next: axum::middleware::Next| {
            let grpc = grpc.clone();
            async move {
                if is_grpc(&request) {
                    grpc.oneshot(request)
                        .await
                        .unwrap_or_else(|never| match never {})
                } else {
                    next.run(request).await
                }
            }
        },
    ))
}

/// Whether `request` is a gRPC call (by its `content-type`).
pub(crate) fn is_grpc(request: &Request) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/grpc"))
}

/// tonic refuses an oversized message with OutOfRange; grpc-go (etcd)
/// answers ResourceExhausted "grpc: received message larger than max (N vs.
/// M)", which clients treat as not retryable. Rewrite the former into the
/// latter (a refused message is answered trailers-only, in the headers).
async fn too_large_is_resource_exhausted(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let is_out_of_range = headers
        .get("grpc-status")
        .is_some_and(|status| status.as_bytes() == b"11");
    if !is_out_of_range {
        return response;
    }
    let Some(message) = headers
        .get("grpc-message")
        .and_then(|message| message.to_str().ok())
    else {
        return response;
    };
    let Some((found, limit)) = oversize_numbers(message) else {
        return response;
    };
    let message = format!("grpc: received message larger than max ({found} vs. {limit})");
    if let Ok(message) = HeaderValue::from_str(&message) {
        headers.insert("grpc-status", HeaderValue::from_static("8"));
        headers.insert("grpc-message", message);
    }
    response
}

/// The sizes in tonic's "decoded message length too large: found N bytes,
/// the limit is: M bytes" (percent-encoded in `grpc-message`).
fn oversize_numbers(message: &str) -> Option<(u64, u64)> {
    let message = message
        .replace("%20", " ")
        .replace("%3A", ":")
        .replace("%2C", ",");
    let rest = message.split("length too large").nth(1)?;
    let mut numbers = rest
        .split(|c: char| !c.is_ascii_digit())
        .filter(|part| !part.is_empty())
        .map(|part| part.parse::<u64>().ok());
    let found = numbers.next()??;
    let limit = numbers.next()??;
    Some((found, limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversize_message_numbers_are_read_encoded_or_not() {
        assert_eq!(
            oversize_numbers(
                "Error, decoded message length too large: found 3145738 bytes, the limit is: 2097152 bytes"
            ),
            Some((3_145_738, 2_097_152))
        );
        assert_eq!(
            oversize_numbers("Error%2C%20decoded message length too large%3A found 10 bytes%2C the limit is%3A 5 bytes"),
            Some((10, 5))
        );
        assert_eq!(
            oversize_numbers("etcdserver: mvcc: required revision has been compacted"),
            None
        );
    }
}
