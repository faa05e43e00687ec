//! Metrics: `GET /metrics` in the Prometheus text format (version 0.0.4).
//!
//! # Design
//! One [`Metrics`] value per node, made by whoever builds the node (the
//! binary) and passed explicitly: to raftnode as its
//! [`raftnode::NodeObserver`] (leader changes, refused proposals, WAL fsync
//! and snapshot save durations) and to [`crate::router_with_metrics`]. There
//! is no process-global registry, so several nodes in one process (tests,
//! simulations) never share a counter.
//!
//! Most figures are read at scrape time from state the layers already keep
//! ([`collect`]): the node's [`raftnode::Status`], the keyspace's status, the
//! store's pending writes, the transport's per-peer counters, the watch
//! ring, the requests in progress, the TLS ports' handshake counters and
//! certificates. Only events nobody keeps are recorded as
//! they happen: the node's observer callbacks, and the request counters of
//! the outermost layer ([`crate::error::log_server_errors`] for HTTP,
//! [`grpc`] for gRPC).
//!
//! etcd's names are used where the meaning is the same (etcd 3.4's
//! `/metrics`, including `etcd_server_proposals_committed_total` and
//! `_applied_total`, which are gauges of Raft indexes in etcd despite the
//! suffix); raftkv's own figures are under `raftkv_`. The list, with what
//! to alert on, is in `docs/operations.md`.

mod collect;
pub(crate) mod grpc;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use kvstore::KvStore;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::sync::Semaphore;

use crate::AppState;

/// Path of the metrics endpoint.
pub const METRICS_PATH: &str = "/metrics";

/// The `Content-Type` of `/metrics`: Prometheus text format 0.0.4, as
/// etcd serves it.
pub const METRICS_CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Buckets of etcd's disk histograms (WAL fsync, backend commit): 1 ms
/// doubling to about 8 s.
fn disk_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.001, 2.0, 14)
}

/// Buckets of `grpc_server_handling_seconds` (go-grpc-prometheus's
/// defaults, Prometheus's `DefBuckets`).
const GRPC_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The per-peer traffic source: the transport's counters, read at scrape
/// time.
pub type PeerSource = Box<dyn Fn() -> transport::TransportStats + Send + Sync>;

/// A TLS port's figures: its configuration's status, read at scrape time
/// (the binary passes [`tls::ServerTls::status`] of each TLS port).
pub type TlsSource = Box<dyn Fn() -> tls::TlsStatus + Send + Sync>;

/// A node's metrics: a registry of its own and the sources read at scrape
/// time. Cheap to clone (one `Arc`); every clone is the same metrics.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

struct Inner {
    registry: Registry,
    recorded: Recorded,
    sources: Arc<Sources>,
    /// Request ids: this process's tag and the next sequence number.
    request_tag: u32,
    request_seq: AtomicU64,
    /// Latency of recent client requests, for the live view (fed by the
    /// same layer that counts requests, so timing costs no layer of its own).
    latency: Arc<crate::liveview::LatencyRing>,
}

/// What is recorded as it happens (everything else is read at scrape time).
#[derive(Clone)]
pub(crate) struct Recorded {
    leader_changes: Counter,
    wal_fsync_seconds: Histogram,
    snapshot_save_seconds: Histogram,
    snapshots_saved: Counter,
    pub(crate) http_requests: Family<HttpLabels, Counter>,
    pub(crate) grpc_started: Family<GrpcLabels, Counter>,
    pub(crate) grpc_handled: Family<GrpcHandledLabels, Counter>,
    pub(crate) grpc_seconds: Family<GrpcLabels, Histogram, fn() -> Histogram>,
    pub(crate) grpc_in_progress: Family<GrpcLabels, Gauge>,
}

/// Labels of `raftkv_http_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct HttpLabels {
    /// The route class ([`crate::error::route_class`]).
    pub(crate) route: &'static str,
    /// The HTTP status.
    pub(crate) code: u16,
}

/// go-grpc-prometheus's labels of one method.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct GrpcLabels {
    pub(crate) grpc_type: &'static str,
    pub(crate) grpc_service: &'static str,
    pub(crate) grpc_method: &'static str,
}

/// go-grpc-prometheus's labels of a finished call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct GrpcHandledLabels {
    pub(crate) grpc_type: &'static str,
    pub(crate) grpc_service: &'static str,
    pub(crate) grpc_method: &'static str,
    pub(crate) grpc_code: &'static str,
}

/// The state read at scrape time, attached once the layers exist.
#[derive(Default)]
pub(crate) struct Sources {
    store: RwLock<Option<KvStore>>,
    peers: RwLock<Option<PeerSource>>,
    /// The TLS ports' configurations (none while both ports are plain).
    tls: RwLock<Vec<TlsSource>>,
    /// The client port's request permits and their number.
    requests: RwLock<Option<(Arc<Semaphore>, usize)>>,
    /// Proposals raftnode refused (its observer's `proposal_failed`); the
    /// store's timed-out writes are added at scrape time.
    proposals_refused: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Fresh metrics with a registry of their own.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let recorded = Recorded {
            leader_changes: Counter::default(),
            wal_fsync_seconds: Histogram::new(disk_buckets()),
            snapshot_save_seconds: Histogram::new(disk_buckets()),
            snapshots_saved: Counter::default(),
            http_requests: Family::default(),
            grpc_started: Family::default(),
            grpc_handled: Family::default(),
            grpc_seconds: Family::new_with_constructor(|| Histogram::new(GRPC_BUCKETS)),
            grpc_in_progress: Family::default(),
        };
        // Counters are registered without `_total`: the encoder appends it.
        registry.register(
            "etcd_server_leader_changes_seen",
            "The number of leader changes seen",
            recorded.leader_changes.clone(),
        );
        registry.register(
            "etcd_disk_wal_fsync_duration_seconds",
            "The latency distributions of fsync called by WAL",
            recorded.wal_fsync_seconds.clone(),
        );
        registry.register(
            "etcd_disk_backend_commit_duration_seconds",
            "raftkv has no backend database: the latency distributions of saving a snapshot \
             file (write and fsync), raftkv's equivalent of etcd's backend commit",
            recorded.snapshot_save_seconds.clone(),
        );
        registry.register(
            "raftkv_snapshots_saved",
            "Snapshots this member took and saved to disk",
            recorded.snapshots_saved.clone(),
        );
        registry.register(
            "raftkv_http_requests",
            "HTTP requests answered on the client port (gRPC excluded), by route class and status",
            recorded.http_requests.clone(),
        );
        registry.register(
            "grpc_server_started",
            "Total number of RPCs started on the server",
            recorded.grpc_started.clone(),
        );
        registry.register(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure",
            recorded.grpc_handled.clone(),
        );
        registry.register(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been application-level \
             handled by the server",
            recorded.grpc_seconds.clone(),
        );
        registry.register(
            "raftkv_grpc_requests_in_progress",
            "gRPC calls in progress (open streams for Watch and LeaseKeepAlive)",
            recorded.grpc_in_progress.clone(),
        );
        let sources = Arc::new(Sources::default());
        registry.register_collector(Box::new(collect::Collector::new(Arc::clone(&sources))));
        Metrics {
            inner: Arc::new(Inner {
                registry,
                recorded,
                sources,
                request_tag: process_tag(),
                request_seq: AtomicU64::new(1),
                latency: Arc::default(),
            }),
        }
    }

    /// Reads the per-peer traffic from `source` at each scrape (the binary
    /// passes the transport's [`transport::Transport::stats`]).
    pub fn set_peer_source(&self, source: PeerSource) {
        *write(&self.inner.sources.peers) = Some(source);
    }

    /// Adds a TLS configuration whose handshakes, reloads and certificate
    /// expiry are read at each scrape (the binary adds each TLS port's
    /// [`tls::ServerTls::status`]).
    pub fn add_tls_source(&self, source: TlsSource) {
        write(&self.inner.sources.tls).push(source);
    }

    /// The store whose node and keyspace are reported (set by the router).
    pub(crate) fn set_store(&self, store: KvStore) {
        *write(&self.inner.sources.store) = Some(store);
    }

    /// The client port's request permits (set by the router).
    pub(crate) fn set_request_limit(&self, permits: Arc<Semaphore>, limit: usize) {
        *write(&self.inner.sources.requests) = Some((permits, limit));
    }

    pub(crate) fn recorded(&self) -> &Recorded {
        &self.inner.recorded
    }

    /// Everything, in the Prometheus text format 0.0.4.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if let Err(error) =
            prometheus_client::encoding::prometheus_text::encode(&mut text, &self.inner.registry)
        {
            // Writing to a String cannot fail; a collector's error lands here.
            tracing::warn!(%error, "cannot encode the metrics");
        }
        text
    }

    /// A new request id: this process's tag and a sequence number.
    /// The ring of recent client request latencies that the client port's
    /// outermost layer fills: hand it to [`crate::liveview::LiveView::new`].
    pub fn latency_ring(&self) -> Arc<crate::liveview::LatencyRing> {
        Arc::clone(&self.inner.latency)
    }

    /// Records one client request's latency, ended at `now`.
    pub(crate) fn record_latency(&self, now: std::time::Instant, took: Duration) {
        self.inner.latency.record(now, took);
    }

    pub(crate) fn next_request_id(&self) -> String {
        let seq = self.inner.request_seq.fetch_add(1, Ordering::Relaxed);
        format!("{:08x}-{seq}", self.inner.request_tag)
    }
}

impl raftnode::NodeObserver for Metrics {
    fn leader_changed(&self, _leader_id: u64) {
        self.inner.recorded.leader_changes.inc();
    }

    fn proposal_failed(&self) {
        self.inner
            .sources
            .proposals_refused
            .fetch_add(1, Ordering::Relaxed);
    }

    fn wal_fsync(&self, elapsed: Duration) {
        self.inner
            .recorded
            .wal_fsync_seconds
            .observe(elapsed.as_secs_f64());
    }

    fn snapshot_saved(&self, elapsed: Duration) {
        let recorded = &self.inner.recorded;
        recorded
            .snapshot_save_seconds
            .observe(elapsed.as_secs_f64());
        recorded.snapshots_saved.inc();
    }
}

/// A lock's contents even if a panicking writer poisoned it (the sources
/// are plain values, always consistent).
fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// 32 random bits per process (from the standard library's hash seed), so
/// request ids of two runs differ.
fn process_tag() -> u32 {
    use std::hash::BuildHasher;
    let hash = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
    (hash >> 32) as u32
}

/// `GET /metrics`.
pub(crate) async fn scrape(State(app): State<AppState>) -> Response {
    let mut response = app.metrics.encode().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(METRICS_CONTENT_TYPE),
    );
    response
}
