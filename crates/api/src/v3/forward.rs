//! Lease requests only the leader can answer, reaching a follower.
//!
//! Only the leader knows lease deadlines (see `kvstore::lessor`), so a
//! `LeaseKeepAlive` or `LeaseTimeToLive` that reaches a follower is
//! forwarded to the leader, as etcd's followers forward them: over HTTP to
//! the leader's *peer* URL (the only address of another member a node
//! knows), where [`peer_router`] serves them. The body is the request's
//! protobuf encoding; the answer is the response's, or the leader's etcd
//! status (`x-raftkv-code`, message in the body).
//!
//! A forwarded request is answered by the leader's store directly and never
//! forwarded again, so a leader change cannot make requests bounce between
//! members: the caller gets "not leader" and the client retries.
//!
//! An `https://` leader peer URL is dialled over TLS with the member's peer TLS
//! configuration ([`V3::with_peer_tls`], set from
//! [`ApiConfig::peer_tls`](crate::ApiConfig::peer_tls)); without it such a leader is
//! unavailable, never asked in clear text.
//!
//! Keep-alives are not sent through the log instead: the renewal and the
//! "expired, TTL 0" answer depend on the leader's deadlines, which are not
//! replicated, so a follower applying a renewal could not tell its client
//! the truth.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use etcdproto::etcdserverpb as pb;
use etcdproto::prost::Message;
use http_body_util::{BodyExt, Full};
use tonic::{Code, Status};

use super::error::V3Error;
use super::keyspace::Keyspace;
use super::service::V3;
use crate::peer_client::PeerClient;

/// Peer-port path of a forwarded keep-alive.
pub const PATH_KEEP_ALIVE: &str = "/raftkv/v3/lease/keepalive";
/// Peer-port path of a forwarded TimeToLive.
pub const PATH_TIME_TO_LIVE: &str = "/raftkv/v3/lease/timetolive";
/// The header carrying the leader's gRPC code on a failure.
const CODE_HEADER: &str = "x-raftkv-code";
/// How long a forwarded request may take (one request timeout of the store).
const FORWARD_TIMEOUT: Duration =
    Duration::from_millis(kvstore::KvConfig::DEFAULT_REQUEST_TIMEOUT_MS);
/// Largest forwarded request or answer body (both are a few bytes, a
/// TimeToLive with keys aside).
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// The routes a member serves on its peer port for followers' lease
/// requests (merge them into the transport's router).
pub fn peer_router<K: Keyspace>(v3: V3<K>) -> Router {
    Router::new()
        .route(
            PATH_KEEP_ALIVE,
            post(|State(v3): State<V3<K>>, body: Bytes| async move {
                answer(
                    pb::LeaseKeepAliveRequest::decode(body),
                    |request| async move { v3.leader_keep_alive(request).await },
                )
                .await
            }),
        )
        .route(
            PATH_TIME_TO_LIVE,
            post(|State(v3): State<V3<K>>, body: Bytes| async move {
                answer(
                    pb::LeaseTimeToLiveRequest::decode(body),
                    |request| async move { v3.leader_time_to_live(request).await },
                )
                .await
            }),
        )
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(v3)
}

async fn answer<Req, Resp, F, Fut>(
    request: Result<Req, etcdproto::prost::DecodeError>,
    call: F,
) -> Response
where
    Resp: Message,
    F: FnOnce(Req) -> Fut,
    Fut: std::future::Future<Output = Result<Resp, V3Error>>,
{
    let result = match request {
        Ok(request) => call(request).await,
        Err(error) => Err(V3Error::BadBody(error.to_string())),
    };
    match result {
        Ok(response) => (StatusCode::OK, response.encode_to_vec()).into_response(),
        Err(error) => {
            let status = error.to_status();
            let mut response = (StatusCode::OK, status.message().to_string()).into_response();
            response
                .headers_mut()
                .insert(CODE_HEADER, HeaderValue::from(status.code() as i32));
            response
        }
    }
}

/// The client side: sends a request to the leader's peer URL (`https://` over TLS when
/// the member has peer TLS configured).
#[derive(Clone)]
pub(crate) struct LeaderLink {
    client: PeerClient<Full<Bytes>>,
}

impl LeaderLink {
    pub(crate) fn new(peer_tls: Option<&tls::ClientTls>) -> Self {
        LeaderLink {
            client: PeerClient::new(peer_tls, None),
        }
    }

    /// Sends `request` to `path` on `peer_url`; answers the leader's
    /// response or its status.
    pub(crate) async fn call<Req: Message, Resp: Message + Default>(
        &self,
        peer_url: &str,
        path: &str,
        request: &Req,
    ) -> Result<Resp, V3Error> {
        let unavailable = |reason: String| {
            tracing::debug!(peer_url, path, %reason, "forwarding to the leader failed");
            V3Error::Leader(Status::unavailable(super::error::MSG_NO_LEADER))
        };
        let uri = format!("{}{path}", peer_url.trim_end_matches('/'));
        let http_request = Request::post(uri)
            .header("content-type", "application/x-protobuf")
            .body(Full::new(Bytes::from(request.encode_to_vec())))
            .map_err(|error| unavailable(error.to_string()))?;
        let exchange = async {
            let response = self
                .client
                .request(http_request)
                .await
                .map_err(|error| unavailable(error.to_string()))?;
            let code = response
                .headers()
                .get(CODE_HEADER)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.parse::<i32>().ok());
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|error| unavailable(error.to_string()))?
                .to_bytes();
            if status != StatusCode::OK {
                return Err(unavailable(format!("HTTP {status}")));
            }
            match code {
                Some(code) => Err(V3Error::Leader(Status::new(
                    Code::from_i32(code),
                    String::from_utf8_lossy(&body).into_owned(),
                ))),
                None => Resp::decode(body).map_err(|error| unavailable(error.to_string())),
            }
        };
        match tokio::time::timeout(FORWARD_TIMEOUT, exchange).await {
            Ok(result) => result,
            Err(_elapsed) => Err(V3Error::Leader(Status::unavailable(
                super::error::MSG_TIMEOUT,
            ))),
        }
    }
}
