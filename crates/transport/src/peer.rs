//! The sending side of one peer: a bounded ordered queue, a frame sender task that batches
//! and reconnects with backoff, and a snapshot sender task on its own connection.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderValue, Method, Request, StatusCode, Uri};
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Body, Frame};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use prost::Message as _;
use raft_proto::eraftpb::Message;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};

use crate::error::TransportError;
use crate::stats::{add, PeerCounters};
use crate::transport::Ctx;
use crate::wire;
use crate::SnapshotStatus;

/// A parsed peer URL: where to connect and what to put in the `Host` header.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub url: String,
    /// `host:port`, the address to connect to.
    pub authority: String,
    pub host_header: HeaderValue,
    /// `https://`: connect with TLS, verifying the certificate against `host`.
    pub tls: bool,
    /// The host part (DNS name or IP literal, IPv6 in brackets).
    pub host: String,
}

/// Parses a peer URL of the form `http://host[:port][/]` or `https://host[:port][/]`.
pub(crate) fn parse_url(url: &str) -> Result<Endpoint, TransportError> {
    let bad = |reason: &str| TransportError::InvalidUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let uri: Uri = url
        .parse()
        .map_err(|e: axum::http::uri::InvalidUri| bad(&e.to_string()))?;
    let (tls, default_port) = match uri.scheme_str() {
        Some("http") => (false, 80),
        Some("https") => (true, 443),
        _ => return Err(bad("scheme must be http or https")),
    };
    let authority = uri.authority().ok_or_else(|| bad("missing host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("user info is not supported"));
    }
    if authority.host().is_empty() {
        return Err(bad("missing host"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(bad("a peer URL has no path or query"));
    }
    let host = authority.host().to_string();
    let authority = format!("{host}:{}", uri.port_u16().unwrap_or(default_port));
    let host_header = HeaderValue::from_str(&authority).map_err(|e| bad(&e.to_string()))?;
    Ok(Endpoint {
        url: url.to_string(),
        authority,
        host_header,
        tls,
        host,
    })
}

/// State of one peer shared between `Transport::send` (any thread) and the peer's tasks.
pub(crate) struct PeerShared {
    pub id: u64,
    pub queue: Mutex<VecDeque<Message>>,
    pub notify: Notify,
    pub endpoint: Mutex<Arc<Endpoint>>,
    /// Bumped on every URL change so the sender drops its connection to the old URL.
    pub endpoint_version: AtomicU64,
    pub counters: Arc<PeerCounters>,
}

impl PeerShared {
    /// Queues `msg` unless the queue is full. Never blocks; returns false when dropped.
    pub fn enqueue(&self, msg: Message, queue_len_max: usize) -> bool {
        let mut queue = self.queue.lock();
        if queue.len() >= queue_len_max {
            return false;
        }
        let was_empty = queue.is_empty();
        queue.push_back(msg);
        drop(queue);
        if was_empty {
            // A stored permit covers the race with a sender task about to wait.
            self.notify.notify_one();
        }
        true
    }

    /// Waits until the queue has messages and moves them all into the empty `into`.
    async fn take_queue(&self, into: &mut VecDeque<Message>) {
        assert!(
            into.is_empty(),
            "pending messages must be sent before taking more"
        );
        loop {
            {
                let mut queue = self.queue.lock();
                if !queue.is_empty() {
                    std::mem::swap(&mut *queue, into);
                    return;
                }
            }
            self.notify.notified().await;
        }
    }

    fn endpoint(&self) -> (Arc<Endpoint>, u64) {
        let endpoint = self.endpoint.lock();
        (
            Arc::clone(&endpoint),
            self.endpoint_version.load(Ordering::Acquire),
        )
    }
}

/// Why a request to a peer failed.
#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("connect to {addr} failed: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("TLS handshake with {addr} failed: {source}")]
    Tls {
        addr: String,
        source: std::io::Error,
    },
    #[error("HTTP handshake failed: {0}")]
    Handshake(hyper::Error),
    #[error("request failed: {0}")]
    Request(hyper::Error),
    /// The connection closed before any byte of the request was written: the peer
    /// cannot have seen it, so it is the only failure that may be retried.
    #[error("request not sent: {0}")]
    NotSent(hyper::Error),
    /// There was no connection to send on: nothing was sent.
    #[error("no open connection")]
    NotConnected,
    #[error("timed out after {0} ms")]
    Timeout(u64),
}

/// Opens a connection to `endpoint` (TLS for `https://`) and spawns its driver task.
async fn connect<B>(ctx: &Ctx, endpoint: &Endpoint) -> Result<SendRequest<B>, SendError>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(&endpoint.authority)
        .await
        .map_err(|source| SendError::Connect {
            addr: endpoint.authority.clone(),
            source,
        })?;
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "could not set TCP_NODELAY");
    }
    if !endpoint.tls {
        return http_handshake(stream).await;
    }
    // `Transport::add_peer` refuses https:// URLs without TLS configuration.
    let Some(tls) = &ctx.config.tls else {
        return Err(SendError::Tls {
            addr: endpoint.authority.clone(),
            source: std::io::Error::other("no TLS configuration for an https:// peer"),
        });
    };
    let stream = tls
        .connect(&endpoint.host, stream)
        .await
        .map_err(|source| SendError::Tls {
            addr: endpoint.authority.clone(),
            source,
        })?;
    http_handshake(stream).await
}

/// Starts HTTP/1.1 on an open connection and spawns its driver task.
async fn http_handshake<B, S>(stream: S) -> Result<SendRequest<B>, SendError>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(SendError::Handshake)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "peer connection closed");
        }
    });
    Ok(send)
}

/// Builds a POST to `path` with the identity headers of the wire format.
fn request<B>(
    ctx: &Ctx,
    peer_id: u64,
    endpoint: &Endpoint,
    path: &'static str,
    body: B,
) -> Request<B> {
    let mut req = Request::new(body);
    *req.method_mut() = Method::POST;
    *req.uri_mut() = Uri::from_static(path);
    let headers = req.headers_mut();
    headers.insert(header::HOST, endpoint.host_header.clone());
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(wire::HEADER_FROM, HeaderValue::from(ctx.config.node_id));
    headers.insert(wire::HEADER_TO, HeaderValue::from(peer_id));
    headers.insert(
        wire::HEADER_CLUSTER_ID,
        HeaderValue::from(ctx.config.cluster_id),
    );
    req
}

impl SendError {
    /// True when the peer provably did not receive any byte of the request, so sending it
    /// again cannot duplicate it. A timeout or an error after the request started is never
    /// such a case: the peer may have read and delivered it.
    fn provably_not_sent(&self) -> bool {
        matches!(self, SendError::NotSent(_) | SendError::NotConnected)
    }
}

/// A peer's answer to one request.
struct Answer {
    status: StatusCode,
    /// The start of the body (an error message for refusals).
    text: String,
    /// For a 410: the log index at which the peer applied this node's removal.
    removed_at_index: Option<u64>,
}

/// Sends `req` and reads the whole (small) response.
async fn round_trip<B>(send: &mut SendRequest<B>, req: Request<B>) -> Result<Answer, SendError>
where
    B: Body + Send + 'static,
{
    // A connection that closes while idle fails `ready` before the request is handed over.
    send.ready().await.map_err(SendError::NotSent)?;
    let resp = send.try_send_request(req).await.map_err(|mut e| {
        // hyper gives the request back only when it never started writing it.
        if e.take_message().is_some() {
            SendError::NotSent(e.into_error())
        } else {
            SendError::Request(e.into_error())
        }
    })?;
    let status = resp.status();
    let removed_at_index = resp
        .headers()
        .get(wire::HEADER_REMOVED_AT)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(SendError::Request)?
        .to_bytes();
    let text = String::from_utf8_lossy(&body[..body.len().min(256)]).into_owned();
    Ok(Answer {
        status,
        text,
        removed_at_index,
    })
}

async fn with_timeout<T>(
    timeout_ms: u64,
    fut: impl std::future::Future<Output = Result<T, SendError>>,
) -> Result<T, SendError> {
    match tokio::time::timeout(Duration::from_millis(timeout_ms), fut).await {
        Ok(result) => result,
        Err(_) => Err(SendError::Timeout(timeout_ms)),
    }
}

/// A kept-alive connection of the frame sender.
struct Conn {
    send: SendRequest<Full<Bytes>>,
    endpoint: Arc<Endpoint>,
    endpoint_version: u64,
    /// True once a request succeeded on it: a failure then may be a stale connection.
    reused: bool,
}

/// The frame sender of one peer: owns its connection, pending batch and backoff.
struct FrameSender {
    ctx: Arc<Ctx>,
    peer: Arc<PeerShared>,
    pending: VecDeque<Message>,
    buf: BytesMut,
    conn: Option<Conn>,
    backoff_ms: u64,
    failing: bool,
}

/// Runs the frame sender of `peer` until the task is aborted.
pub(crate) async fn run_frames(ctx: Arc<Ctx>, peer: Arc<PeerShared>) {
    let backoff_ms = ctx.config.backoff_initial_ms;
    let mut sender = FrameSender {
        ctx,
        peer,
        pending: VecDeque::new(),
        buf: BytesMut::new(),
        conn: None,
        backoff_ms,
        failing: false,
    };
    loop {
        sender.turn().await;
    }
}

impl FrameSender {
    /// One turn: take what is queued, send one frame of it, handle the outcome.
    async fn turn(&mut self) {
        if self.pending.is_empty() {
            self.peer.take_queue(&mut self.pending).await;
        }
        let link = self.ctx.faults.link(self.peer.id);
        if link.cut {
            let dropped = self.drop_pending();
            tracing::trace!(dropped, "link cut: dropped outgoing messages");
            self.ctx.node.report_unreachable(self.peer.id);
            return;
        }
        if let Err(e) = self.ensure_connected().await {
            self.on_failure(e, 0).await;
            return;
        }
        let count = self.build_frame(link.drop_probability);
        if count == 0 {
            return;
        }
        let frame = self.buf.split().freeze();
        if link.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(link.delay_ms)).await;
        }
        self.deliver(frame, count).await;
    }

    /// Makes sure `conn` is an open connection to the current URL.
    async fn ensure_connected(&mut self) -> Result<(), SendError> {
        let (endpoint, version) = self.peer.endpoint();
        if let Some(conn) = &self.conn {
            if conn.endpoint_version == version && !conn.send.is_closed() {
                return Ok(());
            }
        }
        self.conn = None;
        let timeout_ms = self.ctx.config.connect_timeout_ms;
        let send = with_timeout(timeout_ms, connect(&self.ctx, &endpoint)).await?;
        tracing::debug!(url = %endpoint.url, "connected");
        self.conn = Some(Conn {
            send,
            endpoint,
            endpoint_version: version,
            reused: false,
        });
        Ok(())
    }

    /// Encodes pending messages into `buf` up to the frame budget; returns how many.
    fn build_frame(&mut self, drop_probability: f64) -> u64 {
        let max_frame_bytes = self.ctx.config.max_frame_bytes;
        let mut count = 0;
        let mut entries = 0;
        while let Some(msg) = self.pending.front() {
            let msg_bytes = msg.encoded_len();
            let msg_entries = msg.entries.len();
            if wire::LEN_PREFIX_BYTES + msg_bytes > max_frame_bytes
                || msg_entries > wire::FRAME_ENTRIES_MAX
            {
                tracing::error!(
                    msg_bytes,
                    max_frame_bytes,
                    msg_entries,
                    "message larger than a frame: dropped"
                );
                self.pending.pop_front();
                add(&self.peer.counters.msgs_dropped, 1);
                continue;
            }
            let frame_full = self.buf.len() + wire::LEN_PREFIX_BYTES + msg_bytes > max_frame_bytes
                || count as usize == wire::FRAME_MESSAGES_MAX
                || entries + msg_entries > wire::FRAME_ENTRIES_MAX;
            if count > 0 && frame_full {
                break;
            }
            if drop_probability > 0.0 && self.ctx.faults.roll_drop(drop_probability) {
                self.pending.pop_front();
                add(&self.peer.counters.msgs_dropped, 1);
                continue;
            }
            wire::put_message(&mut self.buf, msg, msg_bytes);
            self.pending.pop_front();
            count += 1;
            entries += msg_entries;
        }
        count
    }

    /// Posts one frame; retries once on a fresh connection if a reused one failed before
    /// any byte of the request was written. Anything else (a timeout, a reset after the
    /// request started) is not retried: the peer may have delivered the frame, and a second
    /// copy could apply a forwarded proposal twice.
    async fn deliver(&mut self, frame: Bytes, count: u64) {
        let reused = self.conn.as_ref().is_some_and(|c| c.reused);
        let mut result = self.post(frame.clone()).await;
        if reused && result.as_ref().is_err_and(SendError::provably_not_sent) {
            tracing::debug!(
                "reused connection closed before the frame was sent; retrying on a new one"
            );
            result = match self.ensure_connected().await {
                Ok(()) => self.post(frame.clone()).await,
                Err(e) => Err(e),
            };
        }
        match result {
            Ok(answer) if answer.status.is_success() => self.on_success(count, frame.len()),
            Ok(answer) => self.on_refused(&answer, count),
            Err(e) => self.on_failure(e, count).await,
        }
    }

    async fn post(&mut self, frame: Bytes) -> Result<Answer, SendError> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(SendError::NotConnected);
        };
        let req = request(
            &self.ctx,
            self.peer.id,
            &conn.endpoint,
            wire::PATH_MESSAGES,
            Full::new(frame),
        );
        let timeout_ms = self.ctx.config.request_timeout_ms;
        let result = with_timeout(timeout_ms, round_trip(&mut conn.send, req)).await;
        match &result {
            Ok(_) => conn.reused = true,
            Err(_) => self.conn = None,
        }
        result
    }

    fn on_success(&mut self, count: u64, frame_bytes: usize) {
        add(&self.peer.counters.msgs_sent, count);
        add(&self.peer.counters.bytes_sent, frame_bytes as u64);
        self.backoff_ms = self.ctx.config.backoff_initial_ms;
        if self.failing {
            self.failing = false;
            tracing::info!("peer reachable again");
        }
    }

    fn on_refused(&mut self, answer: &Answer, count: u64) {
        let (status, text) = (answer.status, answer.text.as_str());
        add(&self.peer.counters.msgs_dropped, count);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            tracing::debug!(count, reason = text, "peer busy: frame dropped");
        } else if status == StatusCode::GONE {
            let removed_at_index = answer.removed_at_index;
            tracing::warn!(
                count,
                reason = text,
                removed_at_index,
                "peer says this node was removed"
            );
            self.ctx
                .node
                .report_removed_at(self.peer.id, removed_at_index);
        } else {
            tracing::warn!(%status, count, reason = text, "peer refused frame");
        }
    }

    /// Drops the frame and everything pending, tells the node, and waits out the backoff.
    async fn on_failure(&mut self, error: SendError, count: u64) {
        add(&self.peer.counters.send_failures, 1);
        add(&self.peer.counters.msgs_dropped, count);
        let dropped = self.drop_pending() + count;
        if self.failing {
            tracing::debug!(%error, dropped, backoff_ms = self.backoff_ms, "peer still unreachable");
        } else {
            tracing::warn!(%error, dropped, backoff_ms = self.backoff_ms, "peer unreachable");
        }
        self.failing = true;
        self.ctx.node.report_unreachable(self.peer.id);
        tokio::time::sleep(Duration::from_millis(self.backoff_ms)).await;
        self.backoff_ms = (self.backoff_ms * 2).min(self.ctx.config.backoff_max_ms);
    }

    fn drop_pending(&mut self) -> u64 {
        let dropped = self.pending.len() as u64;
        self.pending.clear();
        add(&self.peer.counters.msgs_dropped, dropped);
        dropped
    }
}

/// Runs the snapshot sender of `peer`: one snapshot at a time, each on its own connection.
pub(crate) async fn run_snapshots(
    ctx: Arc<Ctx>,
    peer: Arc<PeerShared>,
    mut snapshots: mpsc::Receiver<Message>,
) {
    while let Some(msg) = snapshots.recv().await {
        let status = match send_snapshot(&ctx, &peer, msg).await {
            Ok(total_bytes) => {
                add(&peer.counters.snapshots_sent, 1);
                add(&peer.counters.msgs_sent, 1);
                add(&peer.counters.bytes_sent, total_bytes);
                tracing::info!(total_bytes, "snapshot sent");
                SnapshotStatus::Finish
            }
            Err(reason) => {
                add(&peer.counters.snapshots_failed, 1);
                add(&peer.counters.msgs_dropped, 1);
                tracing::warn!(%reason, "snapshot failed");
                ctx.node.report_unreachable(peer.id);
                SnapshotStatus::Failure
            }
        };
        ctx.node.report_snapshot(peer.id, status);
    }
}

/// Streams one snapshot: the head, then the data chunk moved out of the message (no copy).
async fn send_snapshot(ctx: &Ctx, peer: &PeerShared, msg: Message) -> Result<u64, String> {
    let link = ctx.faults.link(peer.id);
    if link.cut {
        return Err("link cut by fault injection".to_string());
    }
    if link.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(link.delay_ms)).await;
    }
    let (endpoint, _) = peer.endpoint();
    let (head, data) = wire::encode_snapshot(msg);
    let total_bytes = (head.len() + data.len()) as u64;
    let chunks = [
        Ok::<_, Infallible>(Frame::data(head)),
        Ok(Frame::data(data)),
    ];
    let body = StreamBody::new(futures::stream::iter(chunks));
    let mut req = request(ctx, peer.id, &endpoint, wire::PATH_SNAPSHOT, body);
    req.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(total_bytes));
    let outcome = with_timeout(ctx.config.snapshot_timeout_ms, async {
        let mut send = with_timeout(ctx.config.connect_timeout_ms, connect(ctx, &endpoint)).await?;
        round_trip(&mut send, req).await
    })
    .await;
    match outcome {
        Ok(answer) if answer.status.is_success() => Ok(total_bytes),
        Ok(answer) => Err(format!("peer answered {}: {}", answer.status, answer.text)),
        Err(e) => Err(e.to_string()),
    }
}
