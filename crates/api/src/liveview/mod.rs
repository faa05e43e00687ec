//! The live cluster view: a web page on the client port (`/ui`) that shows
//! every member's role, term and indexes, its lag behind the leader, the
//! traffic between each pair of members, request latency and a timeline of
//! leader changes, membership changes and snapshots, updated live over
//! server-sent events.
//!
//! # How the data flows
//! Each member answers its own [`MemberReport`] on its *peer* port
//! ([`LiveView::peer_router`], `GET` [`MEMBER_REPORT_PATH`]): raftnode's
//! status (indexes, the leader's per-member progress, recent events), the
//! transport's cumulative per-peer counters and the latency of recent client
//! requests (recorded by [`LiveView::serve_on`]'s middleware). The member
//! serving the page polls every member of its configuration every
//! [`POLL_PERIOD`] (each request bounded by [`POLL_TIMEOUT`] and
//! [`MAX_REPORT_BYTES`]; a report that does not parse marks the member
//! unreachable, never panics), combines the reports into a [`ClusterView`]
//! ([`Aggregator`]) and pushes it to every open page. Polling starts with
//! the first request for the view and stops once nobody has looked for
//! [`IDLE_STOP`].
//!
//! # Client-port routes (reserved: `GET`/`PUT` of these paths are not keys)
//! | Route | Answer |
//! |---|---|
//! | `GET /ui` | the page (HTML; its script and style under `/ui/`) |
//! | `GET /ui/cluster.json` | the current [`ClusterView`] as JSON |
//! | `GET /ui/events` | `text/event-stream`: one `data:` line of the [`ClusterView`] per poll |
//!
//! The page's assets are compiled into the binary (`include_str!`): no
//! CDN, no build step.

mod latency;
mod report;
mod view;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use kvstore::KvStore;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::peer_client::PeerClient;

pub use latency::{LatencyRing, LATENCY_WINDOW, MAX_LATENCY_SAMPLES};
pub use report::{
    parse_report, LatencySummary, MemberReport, PeerTraffic, ReportError, ReportedEvent,
    ReportedProgress, EVENT_KINDS, MAX_REPORTED_PEERS, MAX_REPORT_BYTES, ROLES,
};
pub use view::{Aggregator, ClusterView, EventView, LinkView, MemberView, MAX_VIEW_EVENTS};

/// The page's path on the client port (and the prefix of its other routes).
pub const UI_PATH: &str = "/ui";
/// The combined view as JSON.
pub const CLUSTER_JSON_PATH: &str = "/ui/cluster.json";
/// The combined view as server-sent events.
pub const EVENTS_PATH: &str = "/ui/events";
/// Where a member answers its report, on its peer port.
pub const MEMBER_REPORT_PATH: &str = "/raftkv/v1/liveview/member";
/// How often the serving member polls every member.
pub const POLL_PERIOD: Duration = Duration::from_millis(500);
/// Bound on one poll of one member.
pub const POLL_TIMEOUT: Duration = Duration::from_millis(400);
/// Polling stops after this long without an open page or a JSON request.
pub const IDLE_STOP: Duration = Duration::from_secs(30);

const INDEX_HTML: &str = include_str!("../../assets/ui/index.html");
const VIEW_JS: &str = include_str!("../../assets/ui/view.js");
const VIEW_CSS: &str = include_str!("../../assets/ui/view.css");

/// Where a member's transport counters come from (the binary passes the
/// transport's `stats`).
pub type TrafficSource = Arc<dyn Fn() -> transport::TransportStats + Send + Sync>;

/// The live view of one member: its report, the poller and the page.
/// Cheap to clone.
#[derive(Clone)]
pub struct LiveView {
    inner: Arc<Inner>,
}

struct Inner {
    kv: KvStore,
    traffic: TrafficSource,
    latency: Arc<LatencyRing>,
    client: PeerClient<Empty<Bytes>>,
    views: watch::Sender<Arc<ClusterView>>,
    poller: Mutex<Poller>,
    /// Set by [`LiveView::close`]: open event streams end.
    closed: watch::Sender<bool>,
}

#[derive(Default)]
struct Poller {
    task: Option<tokio::task::JoinHandle<()>>,
    last_request: Option<Instant>,
}

impl LiveView {
    /// The view of the member whose store is `kv`, with its transport's
    /// counters from `traffic`.
    /// `latency` is the ring the client port's outermost layer fills
    /// ([`crate::Metrics::latency_ring`] of the metrics the client router
    /// was built with).
    pub fn new(
        kv: KvStore,
        traffic: impl Fn() -> transport::TransportStats + Send + Sync + 'static,
        latency: Arc<LatencyRing>,
    ) -> LiveView {
        LiveView::with_peer_tls(kv, traffic, latency, None)
    }

    /// Like [`LiveView::new`], polling members whose peer URLs are `https://` over TLS with
    /// `peer_tls` (the member's outgoing peer configuration: the peer CA and its peer
    /// certificate). Without it such members show as unreachable.
    pub fn with_peer_tls(
        kv: KvStore,
        traffic: impl Fn() -> transport::TransportStats + Send + Sync + 'static,
        latency: Arc<LatencyRing>,
        peer_tls: Option<tls::ClientTls>,
    ) -> LiveView {
        LiveView {
            inner: Arc::new(Inner {
                kv,
                traffic: Arc::new(traffic),
                latency,
                client: PeerClient::new(peer_tls.as_ref(), Some(POLL_TIMEOUT)),
                views: watch::Sender::new(Arc::default()),
                poller: Mutex::default(),
                closed: watch::Sender::new(false),
            }),
        }
    }

    /// This member's report, as its peer port answers it.
    pub fn report(&self) -> MemberReport {
        let inner = &self.inner;
        report::build_report(
            inner.kv.consensus().status(),
            view::traffic_of(&(inner.traffic)()),
            inner.latency.summary(Instant::now()),
        )
    }

    /// The peer-port route answering this member's report. The binary
    /// merges it into the transport's router.
    pub fn peer_router(&self) -> Router {
        Router::new()
            .route(MEMBER_REPORT_PATH, get(member_report))
            .with_state(self.clone())
    }

    /// `client` (the client router, whose requests the metrics layer times
    /// into this view's latency ring) with the page's routes added (they
    /// are neither timed nor counted against the request bound). No layer
    /// is added: a layer of its own cost about 10 % of the instructions of
    /// a write.
    pub fn serve_on(&self, client: Router) -> Router {
        let timed = client;
        let page = Router::new()
            .route(UI_PATH, get(page))
            .route("/ui/", get(page))
            .route("/ui/view.js", get(script))
            .route("/ui/view.css", get(style))
            .route(CLUSTER_JSON_PATH, get(cluster_json))
            .route(EVENTS_PATH, get(events))
            .with_state(self.clone());
        timed.merge(page)
    }

    /// Ends every open event stream (and refuses new ones), so that a
    /// graceful shutdown of the client server does not wait for open pages.
    pub fn close(&self) {
        self.inner.closed.send_replace(true);
    }

    /// Starts the poller unless it runs, and notes that someone looks.
    fn wake_poller(&self) {
        let mut poller = self.inner.poller.lock();
        poller.last_request = Some(Instant::now());
        if poller.task.as_ref().is_some_and(|task| !task.is_finished()) {
            return;
        }
        let view = self.clone();
        poller.task = Some(tokio::spawn(async move { view.poll_until_idle().await }));
    }

    async fn poll_until_idle(self) {
        let served_by = self.inner.kv.consensus().status().id;
        let mut aggregator = Aggregator::new(served_by);
        let mut interval = tokio::time::interval(POLL_PERIOD);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            interval.tick().await;
            {
                let poller = self.inner.poller.lock();
                let idle = poller
                    .last_request
                    .is_none_or(|at| at.elapsed() > IDLE_STOP);
                if idle && self.inner.views.receiver_count() == 0 {
                    tracing::debug!("nobody looks at the live view; polling stops");
                    return;
                }
            }
            let own = self.report();
            let members: Vec<(u64, String)> = self
                .inner
                .kv
                .consensus()
                .status()
                .members
                .into_iter()
                .map(|member| (member.id, member.peer_url))
                .collect();
            let mut polls = tokio::task::JoinSet::new();
            for (id, peer_url) in members.iter().filter(|(id, _)| *id != served_by) {
                let (id, view) = (*id, self.clone());
                let url = format!("{}{MEMBER_REPORT_PATH}", peer_url.trim_end_matches('/'));
                polls.spawn(async move { (id, view.fetch(&url).await) });
            }
            let mut outcomes = vec![(served_by, Ok(own))];
            while let Some(joined) = polls.join_next().await {
                if let Ok(outcome) = joined {
                    outcomes.push(outcome);
                }
            }
            let (now, now_ms) = (Instant::now(), report::wall_now_ms());
            for (id, outcome) in outcomes {
                aggregator.observe(id, outcome, now, now_ms);
            }
            let view = aggregator.view(&members, now_ms);
            self.inner.views.send_replace(Arc::new(view));
        }
    }

    /// One member's report from `url`, bounded in time and size.
    async fn fetch(&self, url: &str) -> Result<MemberReport, String> {
        let uri: axum::http::Uri = url.parse().map_err(|e| format!("bad peer URL: {e}"))?;
        let exchange = async {
            let request = axum::http::Request::get(uri)
                .body(Empty::new())
                .map_err(|e| format!("bad peer URL: {e}"))?;
            let response = self
                .inner
                .client
                .request(request)
                .await
                .map_err(|e| format!("unreachable: {e}"))?;
            if response.status() != StatusCode::OK {
                return Err(format!("answered {}", response.status()));
            }
            let body = Limited::new(response.into_body(), MAX_REPORT_BYTES)
                .collect()
                .await
                .map_err(|e| format!("report not read: {e}"))?
                .to_bytes();
            parse_report(&body).map_err(|e| e.to_string())
        };
        match tokio::time::timeout(POLL_TIMEOUT, exchange).await {
            Ok(outcome) => outcome,
            Err(_elapsed) => Err(format!("no report within {} ms", POLL_TIMEOUT.as_millis())),
        }
    }

    /// The newest view, waiting for the first poll after a (re)start.
    async fn current(&self) -> Arc<ClusterView> {
        self.wake_poller();
        let mut views = self.inner.views.subscribe();
        let first = async {
            let view = views.wait_for(|view| view.generated_at_ms != 0).await;
            view.map(|view| Arc::clone(&view)).ok()
        };
        let waited = tokio::time::timeout(POLL_PERIOD + POLL_TIMEOUT * 2, first).await;
        match waited {
            Ok(Some(view)) => view,
            _ => Arc::clone(&self.inner.views.borrow()),
        }
    }
}

async fn member_report(State(view): State<LiveView>) -> Json<MemberReport> {
    Json(view.report())
}

async fn page() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", VIEW_JS)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", VIEW_CSS)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn cluster_json(State(view): State<LiveView>) -> Json<ClusterView> {
    Json(view.current().await.as_ref().clone())
}

async fn events(State(view): State<LiveView>) -> Response {
    view.wake_poller();
    let views = view.inner.views.subscribe();
    let closed = view.inner.closed.subscribe();
    let state = (views, closed, true);
    let stream = futures::stream::unfold(state, |(mut views, mut closed, first)| async move {
        if *closed.borrow() {
            return None;
        }
        if !first || views.borrow().generated_at_ms == 0 {
            tokio::select! {
                changed = views.changed() => changed.ok()?,
                _ = closed.wait_for(|closed| *closed) => return None,
            }
        }
        let json = serde_json::to_string(views.borrow_and_update().as_ref()).ok()?;
        Some((
            Ok::<_, std::convert::Infallible>(Event::default().data(json)),
            (views, closed, false),
        ))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}
