//! go-grpc-prometheus's server metrics, as etcd exposes them:
//! `grpc_server_started_total`, `grpc_server_handled_total` and
//! `grpc_server_handling_seconds`, labelled `grpc_type`, `grpc_service`,
//! `grpc_method` (and `grpc_code` once handled).
//!
//! A call is handled when its status is known: at once for a trailers-only
//! answer (the status in the headers), otherwise when the body's trailers
//! pass, or `Canceled` when the body is dropped before them (the client went
//! away). Only etcd's methods are labelled (a fixed list), so clients cannot
//! grow the label sets; other paths are not counted (they answer
//! Unimplemented).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::http::HeaderMap;
use axum::response::Response;
use http_body::Frame;

use super::{GrpcHandledLabels, GrpcLabels, Metrics};

const UNARY: &str = "unary";
const SERVER_STREAM: &str = "server_stream";
const BIDI_STREAM: &str = "bidi_stream";

/// etcd's gRPC methods that raftkv may serve: (service, method, type).
const METHODS: &[(&str, &str, &str)] = &[
    ("etcdserverpb.KV", "Range", UNARY),
    ("etcdserverpb.KV", "Put", UNARY),
    ("etcdserverpb.KV", "DeleteRange", UNARY),
    ("etcdserverpb.KV", "Txn", UNARY),
    ("etcdserverpb.KV", "Compact", UNARY),
    ("etcdserverpb.Watch", "Watch", BIDI_STREAM),
    ("etcdserverpb.Lease", "LeaseGrant", UNARY),
    ("etcdserverpb.Lease", "LeaseRevoke", UNARY),
    ("etcdserverpb.Lease", "LeaseKeepAlive", BIDI_STREAM),
    ("etcdserverpb.Lease", "LeaseTimeToLive", UNARY),
    ("etcdserverpb.Lease", "LeaseLeases", UNARY),
    ("etcdserverpb.Maintenance", "Alarm", UNARY),
    ("etcdserverpb.Maintenance", "Status", UNARY),
    ("etcdserverpb.Maintenance", "Defragment", UNARY),
    ("etcdserverpb.Maintenance", "Hash", UNARY),
    ("etcdserverpb.Maintenance", "HashKV", UNARY),
    ("etcdserverpb.Maintenance", "Snapshot", SERVER_STREAM),
    ("etcdserverpb.Maintenance", "MoveLeader", UNARY),
    ("etcdserverpb.Maintenance", "Downgrade", UNARY),
    ("etcdserverpb.Cluster", "MemberAdd", UNARY),
    ("etcdserverpb.Cluster", "MemberRemove", UNARY),
    ("etcdserverpb.Cluster", "MemberUpdate", UNARY),
    ("etcdserverpb.Cluster", "MemberList", UNARY),
    ("etcdserverpb.Cluster", "MemberPromote", UNARY),
];

/// The labels of the method at `path` (`/service/method`), if it is one
/// of etcd's.
pub(crate) fn labels_of(path: &str) -> Option<GrpcLabels> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    METHODS
        .iter()
        .find(|(s, m, _)| *s == service && *m == method)
        .map(|(service, method, kind)| GrpcLabels {
            grpc_type: kind,
            grpc_service: service,
            grpc_method: method,
        })
}

/// grpc-go's name of a status code (`codes.Code.String()`).
pub(crate) fn code_name(code: u32) -> &'static str {
    match code {
        0 => "OK",
        1 => "Canceled",
        2 => "Unknown",
        3 => "InvalidArgument",
        4 => "DeadlineExceeded",
        5 => "NotFound",
        6 => "AlreadyExists",
        7 => "PermissionDenied",
        8 => "ResourceExhausted",
        9 => "FailedPrecondition",
        10 => "Aborted",
        11 => "OutOfRange",
        12 => "Unimplemented",
        13 => "Internal",
        14 => "Unavailable",
        15 => "DataLoss",
        16 => "Unauthenticated",
        _ => "Unknown",
    }
}

/// Codes that mean the server failed (the gateway answers them 5xx): such
/// a call is logged once at warn.
fn is_server_failure(code: u32) -> bool {
    matches!(code, 2 | 4 | 13 | 14 | 15)
}

/// The `grpc-status` in `headers`, if any (unparsable counts as Unknown).
fn status_in(headers: &HeaderMap) -> Option<u32> {
    let value = headers.get("grpc-status")?;
    Some(
        value
            .to_str()
            .ok()
            .and_then(|text| text.parse().ok())
            .unwrap_or(2),
    )
}

/// One call in progress: counted as started, finished exactly once.
pub(crate) struct Call {
    metrics: Metrics,
    labels: GrpcLabels,
    started: Instant,
    request_id: String,
}

impl Call {
    /// Counts the start of a call of `labels`.
    pub(crate) fn start(metrics: &Metrics, labels: GrpcLabels, request_id: String) -> Call {
        let recorded = metrics.recorded();
        recorded.grpc_started.get_or_create(&labels).inc();
        recorded.grpc_in_progress.get_or_create(&labels).inc();
        Call {
            metrics: metrics.clone(),
            labels,
            started: Instant::now(),
            request_id,
        }
    }

    /// Counts the end of the call with status `code`.
    fn finish(self, code: u32, message: Option<&str>) {
        let recorded = self.metrics.recorded();
        let labels = &self.labels;
        recorded.grpc_in_progress.get_or_create(labels).dec();
        recorded
            .grpc_handled
            .get_or_create(&GrpcHandledLabels {
                grpc_type: labels.grpc_type,
                grpc_service: labels.grpc_service,
                grpc_method: labels.grpc_method,
                grpc_code: code_name(code),
            })
            .inc();
        recorded
            .grpc_seconds
            .get_or_create(labels)
            .observe(self.started.elapsed().as_secs_f64());
        if is_server_failure(code) {
            tracing::warn!(
                request_id = self.request_id,
                service = labels.grpc_service,
                method = labels.grpc_method,
                code = code_name(code),
                error = message.unwrap_or(""),
                "gRPC request failed"
            );
        }
    }

    /// Finishes the call from `response`'s headers when they carry the
    /// status (trailers-only), otherwise when its body ends.
    pub(crate) fn observe(self, response: Response) -> Response {
        if let Some(code) = status_in(response.headers()) {
            let message = grpc_message(response.headers());
            self.finish(code, message.as_deref());
            return response;
        }
        let (parts, body) = response.into_parts();
        Response::from_parts(
            parts,
            Body::new(ObservedBody {
                inner: body,
                call: Some(self),
            }),
        )
    }
}

fn grpc_message(headers: &HeaderMap) -> Option<String> {
    headers
        .get("grpc-message")
        .and_then(|value| value.to_str().ok())
        .map(str::to_string)
}

/// A gRPC response body that finishes its call at the trailers.
struct ObservedBody {
    inner: Body,
    call: Option<Call>,
}

impl http_body::Body for ObservedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    if let Some(call) = self.call.take() {
                        let code = status_in(trailers).unwrap_or(0);
                        call.finish(code, grpc_message(trailers).as_deref());
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(call) = self.call.take() {
                    call.finish(2, Some("response body failed"));
                }
            }
            Poll::Ready(None) => {
                // Ended without trailers: grpc-go would report OK only with
                // a status; count it Unknown.
                if let Some(call) = self.call.take() {
                    call.finish(2, Some("response ended without a status"));
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        // Dropped before its status: the client went away (a watch closed).
        if let Some(call) = self.call.take() {
            call.finish(1, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_etcd_methods_are_labelled() {
        let watch = labels_of("/etcdserverpb.Watch/Watch").unwrap();
        assert_eq!(watch.grpc_type, "bidi_stream");
        assert_eq!(
            labels_of("/etcdserverpb.KV/Range").unwrap().grpc_type,
            "unary"
        );
        assert_eq!(
            labels_of("/etcdserverpb.Maintenance/Snapshot")
                .unwrap()
                .grpc_type,
            "server_stream"
        );
        assert!(labels_of("/etcdserverpb.KV/Nope").is_none());
        assert!(labels_of("/x").is_none());
        assert!(labels_of("").is_none());
    }
}
