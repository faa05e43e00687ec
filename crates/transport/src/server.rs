//! The receiving side: the axum router served on the node's peer URL.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use parking_lot::Mutex;
use raft_proto::eraftpb::{Entry, Message, MessageType};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::stats::add;
use crate::transport::Ctx;
use crate::wire::{self, FrameError, SnapshotHeadError};

/// Most bytes reserved up front for snapshot data, so a forged length cannot make us commit
/// memory before the data arrives; larger snapshots grow the buffer as they stream in.
const SNAPSHOT_INITIAL_CAPACITY_BYTES: usize = 64 * 1024 * 1024;
/// Most bytes accepted in a fault command body.
const MAX_FAULT_COMMAND_BYTES: usize = 64 * 1024;
/// Most body bytes read and discarded after refusing a request, so a client that writes its
/// whole body before reading still gets the answer instead of a connection reset.
const DRAIN_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Longest time spent discarding a refused request's body.
const DRAIN_TIMEOUT_MS: u64 = 1_000;

/// The receiving side's memory bounds, shared by every router of one transport.
pub(crate) struct Limits {
    /// Message requests being served at once.
    frames: Semaphore,
    /// Snapshot uploads being received at once.
    snapshots: Semaphore,
    /// Bytes of received frames handed to the node and not yet released by it.
    inbound: Arc<InboundBudget>,
}

impl Limits {
    pub(crate) fn new(config: &crate::TransportConfig) -> Limits {
        Limits {
            frames: Semaphore::new(config.max_concurrent_frames),
            snapshots: Semaphore::new(config.max_concurrent_snapshots),
            inbound: Arc::new(InboundBudget {
                used_bytes: Mutex::new(0),
                limit_bytes: config.max_inbound_bytes,
            }),
        }
    }

    /// Bytes currently held by inbound permits.
    pub(crate) fn inbound_bytes(&self) -> u64 {
        *self.inbound.used_bytes.lock()
    }
}

/// The byte budget of frames received and not yet processed by the node.
struct InboundBudget {
    used_bytes: Mutex<u64>,
    limit_bytes: u64,
}

impl InboundBudget {
    /// Reserves `bytes`, or `None` when that would exceed the budget. A frame always fits an
    /// empty budget, so one larger than the budget (a big snapshot) still makes progress.
    fn try_reserve(self: &Arc<Self>, bytes: u64) -> Option<InboundPermit> {
        let mut used = self.used_bytes.lock();
        if *used > 0 && used.saturating_add(bytes) > self.limit_bytes {
            return None;
        }
        *used += bytes;
        Some(InboundPermit {
            budget: Some(Arc::clone(self)),
            bytes,
        })
    }
}

/// A received frame's share of the inbound byte budget (`max_inbound_bytes`), released when
/// dropped. The node keeps it with the frame's messages until it has processed them (see
/// [`crate::Delivery::deliver_frame`]).
#[must_use = "dropping the permit releases the frame's memory budget"]
pub struct InboundPermit {
    budget: Option<Arc<InboundBudget>>,
    bytes: u64,
}

impl InboundPermit {
    /// A permit that reserves nothing (for tests and callers outside the transport).
    pub fn unbudgeted() -> InboundPermit {
        InboundPermit {
            budget: None,
            bytes: 0,
        }
    }

    /// The bytes this permit reserves: an estimate of the decoded frame's memory.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for InboundPermit {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
            let mut used = budget.used_bytes.lock();
            assert!(*used >= self.bytes, "inbound budget released twice");
            *used -= self.bytes;
        }
    }
}

impl std::fmt::Debug for InboundPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundPermit")
            .field("bytes", &self.bytes)
            .finish()
    }
}

/// Memory a decoded frame takes: its wire bytes plus the in-memory overhead of its messages
/// and entries (whose data shares nothing with the wire buffer).
fn decoded_bytes_estimate(msgs: &[Message], wire_bytes: u64) -> u64 {
    let entries: usize = msgs.iter().map(|m| m.entries.len()).sum();
    let overhead = std::mem::size_of_val(msgs) + entries * std::mem::size_of::<Entry>();
    wire_bytes.saturating_add(overhead as u64)
}

/// Why a peer request was refused. Each variant maps to one status code.
#[derive(Debug, thiserror::Error)]
enum Rejection {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("header {0} is not a decimal u64")]
    BadHeader(&'static str),
    #[error("sender id 0 is invalid")]
    ZeroSender,
    #[error("cluster id mismatch: ours {ours}, request {theirs}")]
    ClusterMismatch { ours: u64, theirs: u64 },
    #[error("request addressed to member {theirs}, this is member {ours}")]
    WrongRecipient { ours: u64, theirs: u64 },
    #[error("member {id} was removed from the cluster")]
    RemovedMember { id: u64, at_index: Option<u64> },
    #[error("body of {bytes} bytes exceeds the limit of {limit} bytes")]
    TooLarge { bytes: u64, limit: u64 },
    #[error("body could not be read: {0}")]
    BodyRead(String),
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    #[error("bad snapshot: {0}")]
    SnapshotHead(#[from] SnapshotHeadError),
    #[error("message {index} has from={msg_from}, the sender header says {from}")]
    SenderMismatch {
        index: usize,
        msg_from: u64,
        from: u64,
    },
    #[error("snapshot body is not a MsgSnapshot (type {0})")]
    NotSnapshot(i32),
    #[error("link cut by fault injection")]
    Cut,
    #[error("node overloaded, retry later")]
    Overloaded,
    #[error("too many {what} requests in progress, retry later")]
    Busy { what: &'static str },
    #[error("bad fault command: {0}")]
    Fault(#[from] crate::error::FaultError),
}

impl Rejection {
    fn status(&self) -> StatusCode {
        match self {
            Rejection::ClusterMismatch { .. } | Rejection::WrongRecipient { .. } => {
                StatusCode::PRECONDITION_FAILED
            }
            Rejection::RemovedMember { .. } => StatusCode::GONE,
            Rejection::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::Cut | Rejection::Overloaded | Rejection::Busy { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Rejection::SnapshotHead(
                SnapshotHeadError::MetaTooLarge { .. } | SnapshotHeadError::TooManyEntries { .. },
            )
            | Rejection::Frame(FrameError::TooManyEntries { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let mut response = (self.status(), self.to_string()).into_response();
        if let Rejection::RemovedMember {
            at_index: Some(index),
            ..
        } = self
        {
            response
                .headers_mut()
                .insert(wire::HEADER_REMOVED_AT, index.into());
        }
        response
    }
}

/// Builds the router: `POST /raft/msgs`, `POST /raft/snapshot`, and `POST /raft/faults` when
/// enabled; 404 for any other path.
pub(crate) fn router(ctx: Arc<Ctx>) -> Router {
    let mut router = Router::new()
        .route(wire::PATH_MESSAGES, post(handle_messages))
        .route(wire::PATH_SNAPSHOT, post(handle_snapshot));
    if ctx.config.enable_fault_routes {
        router = router.route(wire::PATH_FAULTS, post(handle_faults));
    }
    router.fallback(not_found).with_state(ctx)
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "unknown path").into_response()
}

/// Turns a handler outcome into a response, logging every refusal once.
fn respond(result: Result<(), Rejection>, headers: &HeaderMap, what: &'static str) -> Response {
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(rejection @ (Rejection::Overloaded | Rejection::Cut | Rejection::Busy { .. })) => {
            // Expected under load or in chaos runs: counted in stats, not worth a warning.
            tracing::debug!(what, %rejection, "peer request refused");
            rejection.into_response()
        }
        Err(rejection) => {
            let from = headers.get(wire::HEADER_FROM).and_then(|v| v.to_str().ok());
            tracing::warn!(from, what, status = %rejection.status(), %rejection, "peer request refused");
            rejection.into_response()
        }
    }
}

async fn handle_messages(State(ctx): State<Arc<Ctx>>, headers: HeaderMap, body: Body) -> Response {
    let mut body = Some(body);
    let result = async {
        let _permit = try_permit(&ctx.limits.frames, "message")?;
        receive_messages(&ctx, &headers, &mut body).await
    }
    .await;
    drain_if_refused(&result, body).await;
    respond(result, &headers, "messages")
}

async fn handle_snapshot(State(ctx): State<Arc<Ctx>>, headers: HeaderMap, body: Body) -> Response {
    let mut body = Some(body);
    let result = async {
        let _permit = try_permit(&ctx.limits.snapshots, "snapshot")?;
        receive_snapshot(&ctx, &headers, &mut body).await
    }
    .await;
    drain_if_refused(&result, body).await;
    respond(result, &headers, "snapshot")
}

/// Takes a permit of `limit` without waiting: load shedding answers 503 at once.
fn try_permit<'a>(
    limit: &'a Semaphore,
    what: &'static str,
) -> Result<SemaphorePermit<'a>, Rejection> {
    limit.try_acquire().map_err(|_| Rejection::Busy { what })
}

/// After a refusal, reads and discards what is left of the body (bounded in bytes and time),
/// so a client that sends its whole body before reading sees the answer rather than a
/// reset. The connection is closed after the response when the body was not all read.
async fn drain_if_refused(result: &Result<(), Rejection>, body: Option<Body>) {
    let (Err(_), Some(mut body)) = (result, body) else {
        return;
    };
    let drain = async {
        let mut drained = 0;
        while drained <= DRAIN_BYTES_MAX {
            match body.frame().await {
                Some(Ok(frame)) => drained += frame.data_ref().map_or(0, Bytes::len),
                Some(Err(_)) | None => return,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(DRAIN_TIMEOUT_MS), drain).await;
}

async fn handle_faults(State(ctx): State<Arc<Ctx>>, headers: HeaderMap, body: Body) -> Response {
    let result = async {
        let bytes = read_body(body, &headers, MAX_FAULT_COMMAND_BYTES).await?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| Rejection::BodyRead("fault commands must be UTF-8".to_string()))?;
        ctx.faults.apply_command(text)?;
        Ok(())
    }
    .await;
    respond(result, &headers, "faults")
}

/// The body of a request, taken out of `body` (which stays set until the body is read, so a
/// refusal before that can drain it).
fn take_body(body: &mut Option<Body>) -> Result<Body, Rejection> {
    body.take()
        .ok_or_else(|| Rejection::BodyRead("body already read".to_string()))
}

async fn receive_messages(
    ctx: &Ctx,
    headers: &HeaderMap,
    body: &mut Option<Body>,
) -> Result<(), Rejection> {
    let from = check_identity(ctx, headers)?;
    if let Some(declared) = content_length(headers) {
        check_declared_length(declared, ctx.config.max_frame_bytes)?;
    }
    let bytes = read_body(take_body(body)?, headers, ctx.config.max_frame_bytes).await?;
    let msgs = wire::decode_frame(&bytes)?;
    check_messages(ctx, from, &msgs)?;
    hand_over(ctx, from, msgs, bytes.len() as u64)?;
    let stall_ms = ctx.faults.link(from).stall_ms;
    if stall_ms > 0 {
        // Fault injection: the frame is delivered, the answer comes late.
        tokio::time::sleep(Duration::from_millis(stall_ms)).await;
    }
    Ok(())
}

/// Gives decoded messages to the node, unless the link is cut or the inbound byte budget is
/// spent, and counts them.
fn hand_over(ctx: &Ctx, from: u64, msgs: Vec<Message>, body_bytes: u64) -> Result<(), Rejection> {
    let counters = ctx.counters.get(from);
    let count = msgs.len() as u64;
    if ctx.faults.is_cut(from) {
        add(&counters.msgs_dropped, count);
        return Err(Rejection::Cut);
    }
    let estimate = decoded_bytes_estimate(&msgs, body_bytes);
    let Some(permit) = ctx.limits.inbound.try_reserve(estimate) else {
        add(&counters.msgs_dropped, count);
        return Err(Rejection::Overloaded);
    };
    if ctx.node.deliver_frame(msgs, permit).is_err() {
        add(&counters.msgs_dropped, count);
        return Err(Rejection::Overloaded);
    }
    add(&counters.msgs_received, count);
    add(&counters.bytes_received, body_bytes);
    Ok(())
}

/// Checks the identity headers; returns the sender id.
fn check_identity(ctx: &Ctx, headers: &HeaderMap) -> Result<u64, Rejection> {
    let cluster_id = header_u64(headers, wire::HEADER_CLUSTER_ID)?;
    if cluster_id != ctx.config.cluster_id {
        return Err(Rejection::ClusterMismatch {
            ours: ctx.config.cluster_id,
            theirs: cluster_id,
        });
    }
    let to = header_u64(headers, wire::HEADER_TO)?;
    if to != ctx.config.node_id {
        return Err(Rejection::WrongRecipient {
            ours: ctx.config.node_id,
            theirs: to,
        });
    }
    let from = header_u64(headers, wire::HEADER_FROM)?;
    if from == 0 {
        return Err(Rejection::ZeroSender);
    }
    if let Some(at_index) = ctx.removed.read().get(&from) {
        return Err(Rejection::RemovedMember {
            id: from,
            at_index: *at_index,
        });
    }
    Ok(from)
}

fn header_u64(headers: &HeaderMap, name: &'static str) -> Result<u64, Rejection> {
    let value = headers.get(name).ok_or(Rejection::MissingHeader(name))?;
    let text = value.to_str().map_err(|_| Rejection::BadHeader(name))?;
    text.trim().parse().map_err(|_| Rejection::BadHeader(name))
}

/// Every message must come from the sender in the header and be addressed to this node.
fn check_messages(ctx: &Ctx, from: u64, msgs: &[Message]) -> Result<(), Rejection> {
    for (index, msg) in msgs.iter().enumerate() {
        if msg.to != ctx.config.node_id {
            return Err(Rejection::WrongRecipient {
                ours: ctx.config.node_id,
                theirs: msg.to,
            });
        }
        if msg.from != from {
            return Err(Rejection::SenderMismatch {
                index,
                msg_from: msg.from,
                from,
            });
        }
    }
    Ok(())
}

/// Reads a whole body of at most `limit_bytes`: 413 above it, 400 when it breaks off.
async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit_bytes: usize,
) -> Result<Bytes, Rejection> {
    if let Some(declared) = content_length(headers) {
        check_declared_length(declared, limit_bytes)?;
    }
    axum::body::to_bytes(body, limit_bytes).await.map_err(|e| {
        let over_limit = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if over_limit {
            Rejection::TooLarge {
                bytes: limit_bytes as u64 + 1,
                limit: limit_bytes as u64,
            }
        } else {
            Rejection::BodyRead(e.to_string())
        }
    })
}

/// 413 for a body announced larger than `limit_bytes`.
fn check_declared_length(declared: u64, limit_bytes: usize) -> Result<(), Rejection> {
    if declared > limit_bytes as u64 {
        return Err(Rejection::TooLarge {
            bytes: declared,
            limit: limit_bytes as u64,
        });
    }
    Ok(())
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

async fn receive_snapshot(
    ctx: &Ctx,
    headers: &HeaderMap,
    body: &mut Option<Body>,
) -> Result<(), Rejection> {
    let from = check_identity(ctx, headers)?;
    // Read through a reference: a refusal part-way leaves the rest to drain.
    let body = body
        .as_mut()
        .ok_or_else(|| Rejection::BodyRead("body already read".to_string()))?;
    let mut head_buf = BytesMut::new();
    let head = loop {
        if let Some(head) = wire::parse_snapshot_head(&mut head_buf, ctx.config.max_frame_bytes)? {
            break head;
        }
        match next_chunk(body).await? {
            Some(chunk) => head_buf.extend_from_slice(&chunk),
            None => {
                return Err(Rejection::BodyRead(
                    "snapshot body ends inside its head".into(),
                ))
            }
        }
    };
    let mut msg = head.msg;
    check_snapshot_msg(ctx, from, &msg)?;
    let limit = ctx.config.max_snapshot_bytes;
    if head.data_bytes > limit {
        return Err(Rejection::TooLarge {
            bytes: head.data_bytes,
            limit,
        });
    }
    let head_bytes = head_buf.len();
    let data = read_snapshot_data(body, head_buf, head.data_bytes).await?;
    let total_bytes = (head_bytes + data.len()) as u64;
    msg.snapshot.get_or_insert_with(Default::default).data = data;
    add(&ctx.counters.get(from).snapshots_received, 1);
    tracing::info!(from, total_bytes, "snapshot received");
    hand_over(ctx, from, vec![msg], total_bytes)
}

fn check_snapshot_msg(ctx: &Ctx, from: u64, msg: &Message) -> Result<(), Rejection> {
    if msg.msg_type != MessageType::MsgSnapshot as i32 {
        return Err(Rejection::NotSnapshot(msg.msg_type));
    }
    check_messages(ctx, from, std::slice::from_ref(msg))
}

/// Reads exactly `data_bytes` of snapshot data into one buffer, starting with `already`.
async fn read_snapshot_data(
    body: &mut Body,
    already: BytesMut,
    data_bytes: u64,
) -> Result<Vec<u8>, Rejection> {
    let expected = usize::try_from(data_bytes).map_err(|_| Rejection::TooLarge {
        bytes: data_bytes,
        limit: usize::MAX as u64,
    })?;
    if already.len() > expected {
        let extra = (already.len() - expected) as u64;
        return Err(FrameError::TrailingBytes { extra }.into());
    }
    let mut data = Vec::with_capacity(expected.min(SNAPSHOT_INITIAL_CAPACITY_BYTES));
    data.extend_from_slice(&already);
    while let Some(chunk) = next_chunk(body).await? {
        if data.len() + chunk.len() > expected {
            let extra = (data.len() + chunk.len() - expected) as u64;
            return Err(FrameError::TrailingBytes { extra }.into());
        }
        data.extend_from_slice(&chunk);
    }
    if data.len() < expected {
        let needed = expected - data.len();
        return Err(FrameError::Truncated {
            offset: data.len(),
            needed,
        }
        .into());
    }
    Ok(data)
}

/// The next data chunk of a body; `None` at its end.
async fn next_chunk(body: &mut Body) -> Result<Option<Bytes>, Rejection> {
    loop {
        match body.frame().await {
            None => return Ok(None),
            Some(Err(e)) => return Err(Rejection::BodyRead(e.to_string())),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
}
