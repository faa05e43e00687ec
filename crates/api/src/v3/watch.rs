//! etcd's `Watch` stream over gRPC and the gateway's `POST /v3/watch`: a
//! thin loop between the client and [`kvstore::WatchStream`], which owns
//! the watch rules.

use std::time::Duration;

use etcdproto::etcdserverpb as pb;
use tokio::sync::mpsc;
use tonic::codegen::tokio_stream::{Stream, StreamExt};
use tonic::Status;

use super::error::MSG_NO_LEADER;
use super::keyspace::Keyspace;
use super::service::V3;

/// Responses waiting for the client to read them, per stream: a slow
/// reader stops the stream's work here (its watchers fall behind and catch
/// up from history later, or are cancelled as compacted).
pub const WATCH_STREAM_BUFFER: usize = 4;

/// How often a stream whose client requires a leader (`hasleader: true`)
/// checks that this member knows one.
pub const LEADER_CHECK_INTERVAL_MS: u64 = 500;

/// Consecutive checks without a leader after which such a stream is ended
/// (1.5 s): an election in progress does not cut every watch of the member,
/// a lost leader does (etcd waits three election timeouts).
pub const NO_LEADER_CHECKS_MAX: u32 = 3;

/// Counts consecutive leader checks that found none.
#[derive(Debug, Default)]
pub(crate) struct LeaderLoss {
    checks_without: u32,
}

impl LeaderLoss {
    /// Records one check; answers whether the stream must end now.
    pub(crate) fn observe(&mut self, has_leader: bool) -> bool {
        if has_leader {
            self.checks_without = 0;
            return false;
        }
        self.checks_without += 1;
        self.checks_without >= NO_LEADER_CHECKS_MAX
    }
}

/// The gRPC metadata key etcd clients set to require a leader.
pub const REQUIRE_LEADER_KEY: &str = "hasleader";

/// The same for the gateway: grpc-gateway turns a `Grpc-Metadata-Hasleader`
/// header into that metadata.
pub const GATEWAY_REQUIRE_LEADER_HEADER: &str = "grpc-metadata-hasleader";

/// What a watch stream sends: a response, or the status that ends it.
pub(crate) type Sent = Result<pb::WatchResponse, Status>;

/// Whether `metadata` asks for a leader (`hasleader: true`).
pub(crate) fn requires_leader(metadata: &tonic::metadata::MetadataMap) -> bool {
    metadata
        .get(REQUIRE_LEADER_KEY)
        .is_some_and(|value| value.as_bytes() == b"true")
}

/// etcd's status for a stream whose member has no leader.
pub(crate) fn no_leader() -> Status {
    Status::unavailable(MSG_NO_LEADER)
}

/// Runs one watch stream until the client goes away (or, when it requires
/// a leader, until this member has none): feeds `requests` to the store's
/// stream and sends what it answers, headers filled. A client that closes
/// its sending side keeps receiving, as etcd does.
pub(crate) async fn serve<K, S>(
    v3: V3<K>,
    mut requests: S,
    sender: mpsc::Sender<Sent>,
    require_leader: bool,
) where
    K: Keyspace,
    S: Stream<Item = Result<pb::WatchRequest, Status>> + Unpin,
{
    let mut stream = v3.keyspace().watch(v3.settings().max_request_bytes);
    let mut leader_check = tokio::time::interval(Duration::from_millis(LEADER_CHECK_INTERVAL_MS));
    let mut requests_open = true;
    let mut leader_loss = LeaderLoss::default();
    loop {
        tokio::select! {
            request = requests.next(), if requests_open => match request {
                Some(Ok(request)) => stream.request(request),
                Some(Err(status)) => {
                    tracing::debug!(%status, "watch stream ended by the client");
                    return;
                }
                None => requests_open = false,
            },
            response = stream.next() => {
                let mut response = response;
                v3.fill_header(&mut response.header);
                if sender.send(Ok(response)).await.is_err() {
                    return;
                }
            }
            _ = leader_check.tick(), if require_leader => {
                let has_leader = v3.keyspace().consensus_status().leader_id.is_some();
                if leader_loss.observe(has_leader) {
                    tracing::debug!("watch stream cancelled: no leader");
                    let _gone = sender.send(Err(no_leader())).await;
                    return;
                }
            }
            () = sender.closed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_ends_only_after_consecutive_checks_without_a_leader() {
        let mut loss = LeaderLoss::default();
        // A short election: fewer checks than the limit, then a leader.
        for _ in 1..NO_LEADER_CHECKS_MAX {
            assert!(!loss.observe(false));
        }
        assert!(!loss.observe(true), "a leader resets the count");
        for _ in 1..NO_LEADER_CHECKS_MAX {
            assert!(!loss.observe(false));
        }
        assert!(loss.observe(false), "the limit reached ends the stream");
    }
}
