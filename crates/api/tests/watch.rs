//! The `etcdserverpb.Watch` service over a real socket (tonic client) and
//! the gateway's streaming `POST /v3/watch`.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use etcdproto::etcdserverpb as pb;
use etcdproto::etcdserverpb::watch_request::RequestUnion;
use kvstore::testing::LocalConsensus;
use pb::kv_client::KvClient;
use pb::watch_client::WatchClient;
use tokio::sync::mpsc;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

const MEMBER_ID: u64 = 7;

struct Server {
    consensus: Arc<LocalConsensus>,
    kv: KvClient<Channel>,
    watch: WatchClient<Channel>,
    address: SocketAddr,
}

async fn serve() -> Server {
    let (store, consensus) = kvstore::testing::local_store(kvstore::KvConfig::new(MEMBER_ID));
    let router = api::router(store, api::ApiConfig::default());
    let (address, channel) = common::listen(router).await;
    Server {
        consensus,
        kv: KvClient::new(channel.clone()),
        watch: WatchClient::new(channel),
        address,
    }
}

/// An open watch stream: the request side and the responses.
struct Stream {
    requests: mpsc::Sender<pb::WatchRequest>,
    responses: Streaming<pb::WatchResponse>,
}

impl Stream {
    async fn open(server: &mut Server, require_leader: bool) -> Result<Stream, tonic::Status> {
        let (requests, receiver) = mpsc::channel(16);
        let mut request = tonic::Request::new(ReceiverStream::new(receiver));
        if require_leader {
            request
                .metadata_mut()
                .insert("hasleader", "true".parse().unwrap());
        }
        let responses = server.watch.watch(request).await?.into_inner();
        Ok(Stream {
            requests,
            responses,
        })
    }

    async fn send(&self, request: RequestUnion) {
        self.requests
            .send(pb::WatchRequest {
                request_union: Some(request),
            })
            .await
            .unwrap();
    }

    async fn create(&self, create: pb::WatchCreateRequest) {
        self.send(RequestUnion::CreateRequest(create)).await;
    }

    async fn next(&mut self) -> pb::WatchResponse {
        self.responses
            .message()
            .await
            .expect("a response, not an error")
            .expect("the stream stays open")
    }
}

async fn put(server: &mut Server, key: &str, value: &str) -> i64 {
    server
        .kv
        .put(pb::PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .header
        .unwrap()
        .revision
}

#[tokio::test]
async fn create_receive_events_with_prev_kv_and_cancel_over_grpc() {
    let mut server = serve().await;
    put(&mut server, "/app/a", "1").await; // 2
    let mut stream = Stream::open(&mut server, false).await.unwrap();
    stream
        .create(pb::WatchCreateRequest {
            key: b"/app/".to_vec(),
            range_end: b"/app0".to_vec(),
            prev_kv: true,
            ..Default::default()
        })
        .await;
    let created = stream.next().await;
    assert!(created.created);
    assert_eq!(created.watch_id, 0);
    let header = created.header.unwrap();
    assert_eq!(header.member_id, MEMBER_ID);
    assert_eq!(header.revision, 2);
    put(&mut server, "/other", "x").await; // 3
    put(&mut server, "/app/a", "2").await; // 4
    let events = stream.next().await;
    assert_eq!(events.watch_id, 0);
    assert_eq!(events.header.unwrap().revision, 4);
    assert_eq!(events.events.len(), 1);
    let event = &events.events[0];
    assert_eq!(event.kv.as_ref().unwrap().value, b"2");
    assert_eq!(event.prev_kv.as_ref().unwrap().value, b"1");
    stream
        .send(RequestUnion::CancelRequest(pb::WatchCancelRequest {
            watch_id: 0,
        }))
        .await;
    let cancelled = stream.next().await;
    assert!(cancelled.canceled);
    assert_eq!(cancelled.watch_id, 0);
    // A progress request on the now empty stream: id -1, the revision.
    stream
        .send(RequestUnion::ProgressRequest(pb::WatchProgressRequest {}))
        .await;
    let progress = stream.next().await;
    assert_eq!(progress.watch_id, -1);
    assert_eq!(progress.header.unwrap().revision, 4);
}

#[tokio::test]
async fn history_replay_and_a_compacted_start_over_grpc() {
    let mut server = serve().await;
    for i in 0..5 {
        put(&mut server, "k", &format!("v{i}")).await; // 2..=6
    }
    server
        .kv
        .compact(pb::CompactionRequest {
            revision: 4,
            physical: false,
        })
        .await
        .unwrap();
    let mut stream = Stream::open(&mut server, false).await.unwrap();
    stream
        .create(pb::WatchCreateRequest {
            key: b"k".to_vec(),
            start_revision: 2,
            watch_id: 10,
            ..Default::default()
        })
        .await;
    let created = stream.next().await;
    assert_eq!((created.created, created.watch_id), (true, 10));
    let cancelled = stream.next().await;
    assert!(cancelled.canceled);
    assert_eq!(cancelled.compact_revision, 4);
    assert_eq!(cancelled.watch_id, 10);
    stream
        .create(pb::WatchCreateRequest {
            key: b"k".to_vec(),
            start_revision: 4,
            ..Default::default()
        })
        .await;
    assert!(stream.next().await.created);
    let replay = stream.next().await;
    let revisions: Vec<i64> = replay
        .events
        .iter()
        .map(|event| event.kv.as_ref().unwrap().mod_revision)
        .collect();
    assert_eq!(revisions, vec![4, 5, 6]);
}

#[tokio::test]
async fn a_stream_requiring_a_leader_is_refused_or_ended_without_one() {
    let mut server = serve().await;
    let mut stream = Stream::open(&mut server, true).await.unwrap();
    stream
        .create(pb::WatchCreateRequest {
            key: b"k".to_vec(),
            ..Default::default()
        })
        .await;
    assert!(stream.next().await.created);
    server.consensus.set_no_leader(true);
    let ended = stream
        .responses
        .message()
        .await
        .expect_err("the stream ends with a status");
    assert_eq!(
        (ended.code(), ended.message()),
        (Code::Unavailable, "etcdserver: no leader")
    );
    let refused = Stream::open(&mut server, true)
        .await
        .err()
        .expect("no leader: refused");
    assert_eq!(
        (refused.code(), refused.message()),
        (Code::Unavailable, "etcdserver: no leader")
    );
    // A client that does not ask for a leader still gets its stream.
    let mut stream = Stream::open(&mut server, false).await.unwrap();
    stream
        .create(pb::WatchCreateRequest {
            key: b"k".to_vec(),
            ..Default::default()
        })
        .await;
    assert!(stream.next().await.created);
}

/// Reads the next `\n`-terminated JSON line of a streaming gateway answer.
async fn next_line(response: &mut reqwest::Response, buffer: &mut Vec<u8>) -> serde_json::Value {
    loop {
        if let Some(end) = buffer.iter().position(|byte| *byte == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            return serde_json::from_slice(&line).expect("a JSON line");
        }
        let chunk = response
            .chunk()
            .await
            .expect("the body streams")
            .expect("the stream stays open");
        buffer.extend_from_slice(&chunk);
    }
}

#[tokio::test]
async fn the_gateway_streams_watch_responses_as_json_lines() {
    let mut server = serve().await;
    for prefix in ["/v3", "/v3beta"] {
        let client = reqwest::Client::new();
        // key "k" is "aw==" in base64; range_end "l" is "bA==".
        let mut response = client
            .post(format!("http://{}{prefix}/watch", server.address))
            .body(r#"{"create_request": {"key": "aw==", "range_end": "bA==", "prev_kv": true}}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let mut buffer = Vec::new();
        let created = next_line(&mut response, &mut buffer).await;
        assert_eq!(created["result"]["created"], true, "{created}");
        let revision = put(&mut server, "k1", "v").await;
        let events = next_line(&mut response, &mut buffer).await;
        let event = &events["result"]["events"][0];
        assert_eq!(event["kv"]["key"], "azE=", "{events}");
        assert_eq!(event["kv"]["value"], "dg==");
        assert_eq!(event["kv"]["mod_revision"], revision.to_string());
        assert_eq!(
            events["result"]["header"]["member_id"],
            MEMBER_ID.to_string()
        );
    }
    let bad = reqwest::Client::new()
        .post(format!("http://{}/v3/watch", server.address))
        .body(r#"{"create_request": "#)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn the_gateway_honours_hasleader_as_grpc_gateway_metadata() {
    let server = serve().await;
    server.consensus.set_no_leader(true);
    let url = format!("http://{}/v3/watch", server.address);
    let body = r#"{"create_request": {"key": "aw=="}}"#;
    let refused = reqwest::Client::new()
        .post(&url)
        .header("Grpc-Metadata-Hasleader", "true")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    let error: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(error["error"], "etcdserver: no leader");
    // Without the header the stream opens (a member without a leader still
    // serves its applied log).
    let mut opened = reqwest::Client::new()
        .post(&url)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(opened.status(), 200);
    let created = next_line(&mut opened, &mut Vec::new()).await;
    assert_eq!(created["result"]["created"], true, "{created}");
}
