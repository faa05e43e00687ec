//! api: raftkv's client API on one port: raftexample's routes on axum, and
//! etcd's v3 API (gRPC with tonic, plus the JSON gateway) in [`v3`].
//!
//! # What it owns
//! Parsing requests, enforcing limits (value size, requests in progress) and
//! mapping typed errors ([`ApiError`]) to HTTP statuses. Nothing else: the
//! data lives in [`kvstore::KvStore`], membership and status come from its
//! [`raftnode::Consensus`] handle ([`kvstore::KvStore::consensus`]).
//!
//! # What it does not own
//! Sockets and shutdown (the binary serves [`router`] with `axum::serve`,
//! which speaks HTTP/1.1 and cleartext HTTP/2),
//! Raft, storage, the peer (Raft traffic) endpoint.
//!
//! # Routes
//! | Request | Success | Errors |
//! |---|---|---|
//! | `PUT /<key>`, body = value | 204 once the write is applied here | 413 value too large, 400 reserved path, 503 no leader / busy / timed out (outcome unknown) |
//! | `GET /<key>` | 200 with the value | 404 missing, 400 reserved path or bad option, 503 no leader / read barrier timed out |
//! | `POST /<id>`, body = peer URL | 204 once the node is added (applied here) | 400 bad id / bad URL / invalid change, 503 change in progress / no leader / timed out |
//! | `DELETE /<id>` | 204 once the node is removed (applied here) | 400 bad id / not a member, 503 as above |
//! | `GET /v1/status` | 200, JSON [`StatusResponse`] | |
//! | `GET /metrics` | 200, Prometheus text format 0.0.4 ([`metrics`]) | |
//! | `GET /health` | 200 `{"health":"true"}` | 503 `{"health":"false"}` ([`health`]) |
//! | `GET /livez`, `GET /readyz` (`?verbose`, `?exclude=<check>`) | 200 `ok` | 503 with the failed checks ([`health`]) |
//! | `GET /ui`, `/ui/cluster.json`, `/ui/events` (when the binary mounts [`liveview::LiveView::serve_on`]) | the live cluster view: page, JSON, server-sent events | |
//! | any other method | | 405 with `Allow: GET, HEAD, PUT, POST, DELETE` (`GET, HEAD` on `/v1/status`, `/metrics`, `/health`, `/livez`, `/readyz`) |
//! | `POST /v3/kv/range`, `/v3/kv/put`, `/v3/kv/deleterange`, `/v3/kv/txn`, `/v3/kv/compaction` (JSON gateway; also `/v3beta/…`) | 200, the response's proto3 JSON | etcd's gateway body `{"error","message","code"}`: 400 InvalidArgument / OutOfRange, 404 NotFound, 429 ResourceExhausted, 503 Unavailable |
//! | `POST /v3/maintenance/status`, `/v3/maintenance/hash` (HashKV), `/v3/maintenance/alarm`, `/v3/maintenance/defragment` | as above | as above |
//! | `POST /v3/lease/grant`, `/v3/lease/revoke`, `/v3/lease/keepalive` (one `{"result": …}` line per request), `/v3/lease/timetolive`, `/v3/lease/leases`; `/v3/kv/lease/revoke`, `/v3/kv/lease/timetolive`, `/v3/kv/lease/leases` (etcd 3.4's aliases) | as above | as above |
//! | `POST /v3/watch` (also `/v3beta/watch`): JSON watch requests in the body; the answer streams one `{"result": …}` line per watch response while the connection stays open | `200` | as above |
//! | other methods on a gateway route; `POST` of another `/v3/…` path | | 405 `Method Not Allowed`; 404 `Not Found` (etcd's texts) |
//! | gRPC (`content-type: application/grpc`): `etcdserverpb.KV/*`, `etcdserverpb.Watch/Watch` (`hasleader: true` metadata honoured), `etcdserverpb.Lease/*`, `etcdserverpb.Maintenance/*` | see [`v3`] | etcd's codes and messages ([`v3::error`]) |
//!
//! On the *peer* port ([`peer_router`], merged by the binary): `POST
//! /raftkv/v3/lease/keepalive` and `/raftkv/v3/lease/timetolive`, a
//! follower's forwarded lease requests (protobuf bodies, [`v3::forward`]);
//! and `GET /raftkv/v1/liveview/member`, the member's report for the live
//! view ([`liveview::LiveView::peer_router`]).
//!
//! Every 503 carries `Retry-After: 1`; every error body is a plain-text
//! message. A client's own `x-request-id` ([`REQUEST_ID_HEADER`]; short and
//! printable) is echoed on every answer; a 5xx answer always carries one (a
//! new one when the client sent none). Every 5xx is counted
//! (`raftkv_http_requests_total`) and logged once, at warn, with the request
//! id, method, path, status and message, by the outermost layer, which also
//! counts gRPC calls ([`metrics`]) and logs once those failing with a
//! server-side code; 4xx answers are not logged. A write answered 503 "outcome unknown" may or may not have
//! taken effect.
//!
//! # Differences from raftexample
//! * **The key is the path only.** raftexample uses the whole request URI
//!   (query included) as the key; raftkv keeps the path (as sent, percent
//!   escapes included) and reserves the query string for options:
//!   `GET /<key>?serializable` (or `?consistency=serializable`) reads the
//!   local map without a read barrier (may be stale); the default is
//!   linearizable.
//! * **Reserved paths.** Every path under `/v1/` (and `/v1` itself) belongs
//!   to raftkv's own endpoints, `/ui` and `/ui/` to the live view, and
//!   `/v3/`, `/v3beta/` to etcd's JSON gateway; `GET`/`PUT` of such a key
//!   is answered 400. `/metrics`, `/health`, `/livez` and `/readyz` are
//!   endpoints (other methods 405).
//! * PUT, POST and DELETE answer only after the change is applied on the
//!   answering node, not when it is proposed.
//!
//! # Invariants
//! No client input can panic a handler: every parse is a function returning
//! [`ApiError`]; bodies are bounded by `max_value_bytes` before they are
//! buffered; at most `max_concurrent_requests` requests (HTTP and gRPC
//! together) are served at once, the next ones are refused immediately (503,
//! or gRPC ResourceExhausted "etcdserver: too many requests").
//!
//! # Example
//! ```
//! use axum::body::Body;
//! use axum::http::{Request, StatusCode};
//! use kvstore::KvConfig;
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let (store, _consensus) = kvstore::testing::local_store(KvConfig::new(1));
//! let app = api::router(store, api::ApiConfig::default());
//! let put = Request::put("/fruit").body(Body::from("apple")).unwrap();
//! let response = app.clone().oneshot(put).await.unwrap();
//! assert_eq!(response.status(), StatusCode::NO_CONTENT);
//! let get = Request::get("/fruit").body(Body::empty()).unwrap();
//! assert_eq!(app.oneshot(get).await.unwrap().status(), StatusCode::OK);
//! # }
//! ```

mod error;
mod handlers;
pub mod health;
pub mod liveview;
pub mod metrics;
mod parse;
mod peer_client;
mod status;
pub mod v3;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use kvstore::KvStore;
use tokio::sync::Semaphore;

pub use error::{
    ApiError, ALLOWED_METHODS, REQUEST_ID_HEADER, REQUEST_ID_MAX_BYTES, STATUS_ALLOWED_METHODS,
};
pub use metrics::{Metrics, METRICS_PATH};
pub use parse::{MAX_PEER_URL_BYTES, RESERVED_PREFIX, RESERVED_PREFIXES};
pub use status::{MemberResponse, StatusResponse};

/// Path of the status endpoint.
pub const STATUS_PATH: &str = "/v1/status";

/// Limits of the HTTP API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// Largest value a `PUT` may carry (bytes); larger ones get 413.
    pub max_value_bytes: usize,
    /// How long `POST`/`DELETE /<id>` wait for the membership change to be
    /// applied before answering 503 (outcome unknown). Writes and reads use
    /// the kvstore's own `request_timeout_ms`.
    pub request_timeout_ms: u64,
    /// Requests served at once, HTTP and gRPC together; more are refused at
    /// once (load shedding): 503 over HTTP, ResourceExhausted "etcdserver:
    /// too many requests" over gRPC. 0 sheds every request.
    pub max_concurrent_requests: usize,
    /// Largest v3 write request, encoded (etcd's `--max-request-bytes`);
    /// gRPC messages may exceed it by [`v3::GRPC_OVERHEAD_BYTES`].
    pub max_request_bytes: usize,
    /// The cluster id reported in v3 response headers.
    pub cluster_id: u64,
    /// Outgoing TLS for other members' `https://` peer URLs (the peer CA and this member's
    /// peer certificate): followers forward lease requests to the leader's peer port with
    /// it. `None` (the default): only `http://` peer URLs are reached. The live view takes
    /// the same value through [`liveview::LiveView::with_peer_tls`].
    pub peer_tls: Option<tls::ClientTls>,
}

impl ApiConfig {
    /// Default value limit: 1.5 MiB, so a value fits in one 2 MiB Raft
    /// message with its command framing.
    pub const DEFAULT_MAX_VALUE_BYTES: usize = 1536 * 1024;
    /// Default v3 request limit: 1.5 MiB, etcd's `--max-request-bytes`.
    pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1536 * 1024;
    /// Default membership change timeout: the store's request timeout.
    pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = kvstore::KvConfig::DEFAULT_REQUEST_TIMEOUT_MS;
    /// Default bound on requests in progress: room for every write the store
    /// lets wait ([`kvstore::KvConfig::DEFAULT_MAX_IN_FLIGHT_WRITES`]) and as
    /// many reads, so the store's write bound is reachable.
    pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize =
        2 * kvstore::KvConfig::DEFAULT_MAX_IN_FLIGHT_WRITES;

    /// The request cap that leaves room for `max_in_flight_writes` writes and
    /// as many reads: what the binary uses unless told otherwise.
    pub fn concurrent_requests_for(max_in_flight_writes: usize) -> usize {
        max_in_flight_writes.saturating_mul(2)
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            max_value_bytes: Self::DEFAULT_MAX_VALUE_BYTES,
            request_timeout_ms: Self::DEFAULT_REQUEST_TIMEOUT_MS,
            max_concurrent_requests: Self::DEFAULT_MAX_CONCURRENT_REQUESTS,
            max_request_bytes: Self::DEFAULT_MAX_REQUEST_BYTES,
            cluster_id: 0,
            peer_tls: None,
        }
    }
}

/// The client port's listener for `axum::serve`: every accepted connection
/// gets `TCP_NODELAY`, as etcd's (Go's) connections have by default.
/// Without it a response spanning several TCP segments (a Range of 1,000
/// keys is ~100 KB) can hold its last, partial segment back until the
/// client's delayed ACK (~40 ms on Linux), Nagle's algorithm at work.
pub fn client_listener(listener: tokio::net::TcpListener) -> ClientListener {
    use axum::serve::ListenerExt;
    listener.tap_io(set_nodelay)
}

/// The listener [`client_listener`] returns.
pub type ClientListener =
    axum::serve::TapIo<tokio::net::TcpListener, fn(&mut tokio::net::TcpStream)>;

fn set_nodelay(connection: &mut tokio::net::TcpStream) {
    if let Err(error) = connection.set_nodelay(true) {
        tracing::warn!(%error, "cannot set TCP_NODELAY on a client connection");
    }
}

/// Shared state of every handler.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) kv: KvStore,
    pub(crate) config: Arc<ApiConfig>,
    pub(crate) metrics: Metrics,
}

/// The client API on one port: raftexample's routes, `/v1/status`, the v3
/// JSON gateway and the v3 gRPC services (by content type), all on one
/// keyspace. Serve it with `axum::serve` (HTTP/1.1 and cleartext HTTP/2).
///
/// Its `/metrics` reports the store and the API only; the binary uses
/// [`router_with_metrics`] to add the node's and the transport's figures.
pub fn router(kv: KvStore, config: ApiConfig) -> Router {
    router_with(kv.clone(), kv, config)
}

/// [`router`] reporting into `metrics` (the same value the node was
/// given as its observer).
pub fn router_with_metrics(kv: KvStore, config: ApiConfig, metrics: Metrics) -> Router {
    build_router(kv.clone(), kv, config, metrics)
}

/// [`router`] with the v3 services over another [`v3::Keyspace`] (tests
/// inject faults this way).
pub fn router_with<K: v3::Keyspace>(kv: KvStore, keyspace: K, config: ApiConfig) -> Router {
    build_router(kv, keyspace, config, Metrics::new())
}

fn build_router<K: v3::Keyspace>(
    kv: KvStore,
    keyspace: K,
    config: ApiConfig,
    metrics: Metrics,
) -> Router {
    let v3 = v3::V3::new(
        keyspace,
        v3::V3Settings {
            cluster_id: config.cluster_id,
            max_request_bytes: config.max_request_bytes,
        },
    )
    .with_peer_tls(config.peer_tls.clone());
    // One bound for the whole port: HTTP routes, gateway and gRPC.
    let permits = config.max_concurrent_requests.min(Semaphore::MAX_PERMITS);
    let in_progress = Arc::new(Semaphore::new(permits));
    metrics.set_store(kv.clone());
    metrics.set_request_limit(Arc::clone(&in_progress), permits);
    let grpc = v3::grpc_router(v3.clone(), config.max_request_bytes);
    let gateway = v3::gateway::router(v3, config.max_request_bytes);
    v3::one_port(http_router(kv, gateway, config, metrics.clone()), grpc)
        .layer(axum::middleware::from_fn_with_state(
            in_progress,
            handlers::shed_load,
        ))
        // Outermost: request ids, request counts, one warn line per 5xx.
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            error::log_server_errors,
        ))
}

/// The routes this member serves on its *peer* port for other members:
/// lease keep-alives and TimeToLive forwarded by followers to the leader
/// ([`v3::forward`]). The binary merges them into the transport's router.
pub fn peer_router(kv: KvStore, config: &ApiConfig) -> Router {
    v3::peer_router(v3::V3::new(
        kv,
        v3::V3Settings {
            cluster_id: config.cluster_id,
            max_request_bytes: config.max_request_bytes,
        },
    ))
}

/// raftexample's routes, `/v1/status` and the gateway.
fn http_router(kv: KvStore, gateway: Router, config: ApiConfig, metrics: Metrics) -> Router {
    // Bodies over the limit are cut off while streaming, never buffered whole.
    let body_limit = config.max_value_bytes;
    let state = AppState {
        kv,
        config: Arc::new(config),
        metrics,
    };
    let keys: MethodRouter<AppState> = get(handlers::get_key)
        .put(handlers::put_key)
        .post(handlers::add_member)
        .delete(handlers::remove_member)
        .fallback(handlers::method_not_allowed);
    let mut router = Router::new()
        .route(
            STATUS_PATH,
            get(handlers::status).fallback(handlers::status_method_not_allowed),
        )
        .route(METRICS_PATH, reserved_get(get(metrics::scrape)))
        .route(health::HEALTH_PATH, reserved_get(get(health::health)))
        .route(health::LIVEZ_PATH, reserved_get(get(health::livez)))
        .route(health::READYZ_PATH, reserved_get(get(health::readyz)))
        .route("/", keys.clone())
        .route("/{*key}", keys);
    // The gateway's prefixes are reserved like `/v1/`: a POST names no
    // gateway route (404, as etcd answers), GET/PUT are not keys.
    for prefix in v3::gateway::GATEWAY_PREFIXES {
        let reserved: MethodRouter<AppState> =
            post(v3::gateway::not_found).fallback(handlers::reserved_path);
        router = router
            .route(prefix, reserved.clone())
            .route(&format!("{prefix}/{{*rest}}"), reserved);
    }
    router
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
        .merge(gateway)
}

/// A reserved `GET` endpoint: other methods get 405 like `/v1/status`.
fn reserved_get(route: MethodRouter<AppState>) -> MethodRouter<AppState> {
    route.fallback(handlers::status_method_not_allowed)
}
