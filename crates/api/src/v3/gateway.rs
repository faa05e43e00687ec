//! The JSON gateway: etcd 3.4's grpc-gateway routes (`POST /v3/kv/range`,
//! …, also under `/v3beta/`), with the proto3 JSON mapping etcd uses
//! (proto field names, 64-bit integers as strings, base64 bytes, zero values
//! omitted) and its error body. `POST /v3/watch` and
//! `POST /v3/lease/keepalive` stream one `{"result": …}` line per response.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, MethodRouter};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::codegen::tokio_stream::{self, StreamExt};

use etcdproto::etcdserverpb as pb;

use super::error::V3Error;
use super::keyspace::Keyspace;
use super::service::V3;

/// The gateway's API prefixes: etcd 3.4 serves both.
pub const GATEWAY_PREFIXES: [&str; 2] = ["/v3", "/v3beta"];

/// Bytes of JSON a gateway body may have beyond the request itself
/// (base64 grows bytes by 4/3; field names and quotes add a little).
fn body_limit_bytes(max_request_bytes: usize) -> usize {
    max_request_bytes
        .saturating_mul(4)
        .div_ceil(3)
        .saturating_add(64 * 1024)
}

/// The gateway's routes (for both prefixes); unknown paths under them answer
/// 404 `Not Found` for POST, like etcd.
pub fn router<K: Keyspace>(v3: V3<K>, max_request_bytes: usize) -> Router {
    let mut router = Router::new();
    for prefix in GATEWAY_PREFIXES {
        router = router
            .route(
                &format!("{prefix}/kv/range"),
                route(|v3: V3<K>, req| async move { v3.range(req).await }),
            )
            .route(
                &format!("{prefix}/kv/put"),
                route(|v3: V3<K>, req| async move { v3.put(req).await }),
            )
            .route(
                &format!("{prefix}/kv/deleterange"),
                route(|v3: V3<K>, req| async move { v3.delete_range(req).await }),
            )
            .route(
                &format!("{prefix}/kv/txn"),
                route(|v3: V3<K>, req| async move { v3.txn(req).await }),
            )
            .route(
                &format!("{prefix}/kv/compaction"),
                route(|v3: V3<K>, req| async move { v3.compact(req).await }),
            )
            .route(
                &format!("{prefix}/maintenance/status"),
                route(|v3: V3<K>, req| async move { v3.status(req).await }),
            )
            // etcd maps both Hash and HashKV to this path (Hash wins there);
            // raftkv has no database file to hash and answers HashKV.
            .route(
                &format!("{prefix}/maintenance/hash"),
                route(|v3: V3<K>, req| async move { v3.hash_kv(req).await }),
            )
            .route(
                &format!("{prefix}/maintenance/defragment"),
                route(|v3: V3<K>, req| async move { v3.defragment(req).await }),
            )
            .route(
                &format!("{prefix}/maintenance/alarm"),
                route(|v3: V3<K>, req| async move { v3.alarm(req).await }),
            )
            .route(
                &format!("{prefix}/lease/grant"),
                route(|v3: V3<K>, req| async move { v3.lease_grant(req).await }),
            )
            .route(
                &format!("{prefix}/lease/keepalive"),
                post(keep_alive::<K>).fallback(method_not_allowed),
            )
            .route(
                &format!("{prefix}/watch"),
                post(watch::<K>).fallback(method_not_allowed),
            )
            .route(
                &format!("{prefix}/cluster/member/list"),
                route(|v3: V3<K>, req| async move { v3.member_list(req).await }),
            )
            .route(
                &format!("{prefix}/cluster/member/add"),
                route(|v3: V3<K>, req| async move { v3.member_add(req).await }),
            )
            .route(
                &format!("{prefix}/cluster/member/remove"),
                route(|v3: V3<K>, req| async move { v3.member_remove(req).await }),
            )
            .route(
                &format!("{prefix}/cluster/member/update"),
                route(|v3: V3<K>, req| async move { v3.member_update(req).await }),
            )
            .route(
                &format!("{prefix}/cluster/member/promote"),
                route(|v3: V3<K>, req| async move { v3.member_promote(req).await }),
            );
        // etcd 3.4 binds revoke, timetolive and leases under /kv/lease too.
        for lease_prefix in [format!("{prefix}/lease"), format!("{prefix}/kv/lease")] {
            router = router
                .route(
                    &format!("{lease_prefix}/revoke"),
                    route(|v3: V3<K>, req| async move { v3.lease_revoke(req).await }),
                )
                .route(
                    &format!("{lease_prefix}/timetolive"),
                    route(|v3: V3<K>, req| async move { v3.lease_time_to_live(req).await }),
                )
                .route(
                    &format!("{lease_prefix}/leases"),
                    route(|v3: V3<K>, req| async move { v3.lease_leases(req).await }),
                );
        }
    }
    router
        .layer(DefaultBodyLimit::max(body_limit_bytes(max_request_bytes)))
        .layer(axum::middleware::from_fn_with_state(
            v3.clone(),
            super::cluster::gateway_learner_guard::<K>,
        ))
        .with_state(v3)
}

/// `POST /v3/lease/keepalive`, grpc-gateway's streaming form: the body
/// holds one or more JSON requests; the answer is one line per request,
/// `{"result": …}`, or `{"error": …}` for the failure that ends the stream.
async fn keep_alive<K: Keyspace>(
    State(v3): State<V3<K>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return V3Error::BadBody(rejection.body_text()).into_response(),
    };
    let mut lines = Vec::new();
    let requests = serde_json::Deserializer::from_slice(&body)
        .into_iter::<etcdproto::etcdserverpb::LeaseKeepAliveRequest>();
    for request in requests {
        let answer = match request {
            Ok(request) => v3.lease_keep_alive(request).await,
            Err(error) => Err(V3Error::BadJson(error.to_string())),
        };
        match answer {
            Ok(response) => {
                let line = serde_json::json!({ "result": response });
                lines.push(line);
            }
            Err(error) => {
                lines.push(stream_error(&error.to_status()));
                break;
            }
        }
    }
    let mut out = Vec::new();
    for line in &lines {
        if serde_json::to_writer(&mut out, line).is_err() {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot encode the response",
            )
                .into_response();
        }
        out.push(b'\n');
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        out,
    )
        .into_response()
}

/// grpc-gateway's line for the status that ends a stream.
fn stream_error(status: &tonic::Status) -> serde_json::Value {
    let code = status.code();
    serde_json::json!({ "error": {
        "grpc_code": code as i32,
        "http_code": super::error::http_status_of(code).as_u16(),
        "message": status.message(),
        "http_status": super::error::http_status_of(code)
            .canonical_reason()
            .unwrap_or(""),
    }})
}

/// `POST /v3/watch`, grpc-gateway's streaming form: the body holds one or
/// more JSON watch requests; the answer streams one line per response,
/// `{"result": …}`, for as long as the client keeps the connection open.
async fn watch<K: Keyspace>(
    State(v3): State<V3<K>>,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // grpc-gateway passes `Grpc-Metadata-<key>` headers on as gRPC metadata.
    let require_leader = headers
        .get(super::watch::GATEWAY_REQUIRE_LEADER_HEADER)
        .is_some_and(|value| value.as_bytes() == b"true");
    if require_leader && v3.keyspace().consensus_status().leader_id.is_none() {
        return super::error::gateway_error(&super::watch::no_leader());
    }
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return V3Error::BadBody(rejection.body_text()).into_response(),
    };
    let mut requests = Vec::new();
    for request in serde_json::Deserializer::from_slice(&body).into_iter::<pb::WatchRequest>() {
        match request {
            Ok(request) => requests.push(Ok(request)),
            Err(error) => return V3Error::BadJson(error.to_string()).into_response(),
        }
    }
    let (sender, receiver) = tokio::sync::mpsc::channel(super::watch::WATCH_STREAM_BUFFER);
    tokio::spawn(super::watch::serve(
        v3,
        tokio_stream::iter(requests),
        sender,
        require_leader,
    ));
    let lines = tokio_stream::wrappers::ReceiverStream::new(receiver).map(|sent| {
        let line = match sent {
            Ok(response) => serde_json::json!({ "result": response }),
            Err(status) => stream_error(&status),
        };
        let mut out = serde_json::to_vec(&line).unwrap_or_else(|error| {
            tracing::error!(%error, "cannot encode a watch response");
            b"{}".to_vec()
        });
        out.push(b'\n');
        Ok::<_, std::convert::Infallible>(Bytes::from(out))
    });
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        axum::body::Body::from_stream(lines),
    )
        .into_response()
}

/// A POST route decoding `Req` from JSON, calling `call`, encoding the answer.
fn route<K, Req, Resp, F, Fut>(call: F) -> MethodRouter<V3<K>>
where
    K: Keyspace,
    Req: DeserializeOwned + Default + Send + 'static,
    Resp: Serialize + Send + 'static,
    F: Fn(V3<K>, Req) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Resp, V3Error>> + Send + 'static,
{
    post(
        move |State(v3): State<V3<K>>, body: Result<Bytes, BytesRejection>| async move {
            let response = async {
                let body = body.map_err(|rejection| {
                    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                        V3Error::RequestTooLarge
                    } else {
                        V3Error::BadBody(rejection.body_text())
                    }
                })?;
                let request = decode::<Req>(&body)?;
                call(v3, request).await
            }
            .await;
            match response {
                Ok(response) => json_response(&response),
                Err(error) => error.into_response(),
            }
        },
    )
    .fallback(method_not_allowed)
}

/// An empty body is the empty request (as grpc-gateway reads it).
fn decode<Req: DeserializeOwned + Default>(body: &[u8]) -> Result<Req, V3Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Req::default());
    }
    serde_json::from_slice(body).map_err(|error| V3Error::BadJson(error.to_string()))
}

fn json_response<T: Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot encode a gateway response");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot encode the response",
            )
                .into_response()
        }
    }
}

/// Any method but POST on a gateway route, as etcd's gateway answers it.
async fn method_not_allowed() -> Response {
    (StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n").into_response()
}

/// A POST under a gateway prefix that names no route, as etcd answers it.
pub(crate) async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "Not Found\n").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcdproto::etcdserverpb as pb;

    #[test]
    fn empty_body_is_the_default_request() {
        let request: pb::RangeRequest = decode(b"").unwrap();
        assert_eq!(request, pb::RangeRequest::default());
        let request: pb::RangeRequest = decode(b" \n").unwrap();
        assert_eq!(request, pb::RangeRequest::default());
    }

    #[test]
    fn json_uses_proto_names_strings_for_64_bit_and_base64() {
        let request: pb::RangeRequest =
            decode(br#"{"key":"Zm9v","range_end":"AA==","limit":"5","keysOnly":true}"#).unwrap();
        assert_eq!(request.key, b"foo");
        assert_eq!(request.range_end, b"\0");
        assert_eq!(request.limit, 5);
        assert!(request.keys_only);
        let response = pb::RangeResponse {
            count: 3,
            kvs: vec![etcdproto::mvccpb::KeyValue {
                key: b"foo".to_vec(),
                create_revision: 2,
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&response).unwrap(),
            r#"{"kvs":[{"key":"Zm9v","create_revision":"2"}],"count":"3"}"#
        );
    }

    #[test]
    fn bad_json_is_invalid_argument() {
        let error = decode::<pb::RangeRequest>(br#"{"key":"#).unwrap_err();
        assert_eq!(error.to_status().code(), tonic::Code::InvalidArgument);
        let error = decode::<pb::RangeRequest>(br#"{"sort_order":"BOGUS"}"#).unwrap_err();
        assert_eq!(error.to_status().code(), tonic::Code::InvalidArgument);
    }
}
