//! The v3 gRPC layer in process, over a real socket (tonic client, HTTP/2
//! without TLS, on the same port as the HTTP routes): etcd's codes and
//! messages for every error, bad and oversized input refused without a panic
//! and without anything applied, headers filled, one-port dispatch.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use etcdproto::etcdserverpb as pb;
use kvstore::testing::LocalConsensus;
use pb::kv_client::KvClient;
use pb::maintenance_client::MaintenanceClient;
use tonic::transport::Channel;
use tonic::Code;

const CLUSTER_ID: u64 = 0xc1u64;

struct Server {
    address: SocketAddr,
    consensus: Arc<LocalConsensus>,
    kv: KvClient<Channel>,
    maintenance: MaintenanceClient<Channel>,
}

async fn serve() -> Server {
    serve_with(api::ApiConfig::default()).await.0
}

/// A server with `config` (its cluster id replaced), and its store.
async fn serve_with(config: api::ApiConfig) -> (Server, kvstore::KvStore) {
    let (store, consensus) = kvstore::testing::local_store(kvstore::KvConfig::new(7));
    let config = api::ApiConfig {
        cluster_id: CLUSTER_ID,
        ..config
    };
    let router = api::router(store.clone(), config);
    let (address, channel) = common::listen(router).await;
    let server = Server {
        address,
        consensus,
        kv: KvClient::new(channel.clone()).max_encoding_message_size(64 << 20),
        maintenance: MaintenanceClient::new(channel),
    };
    (server, store)
}

fn put(key: &str, value: &str) -> pb::PutRequest {
    pb::PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    }
}

fn range(key: &str) -> pb::RangeRequest {
    pb::RangeRequest {
        key: key.into(),
        ..Default::default()
    }
}

fn assert_status<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, tonic::Status>,
    code: Code,
    message: &str,
) {
    let status = result.expect_err("the request must fail");
    assert_eq!(
        (status.code(), status.message()),
        (code, message),
        "{status:?}"
    );
}

async fn revision(server: &mut Server) -> i64 {
    let response = server.kv.range(range("any")).await.unwrap().into_inner();
    response.header.unwrap().revision
}

#[tokio::test]
async fn headers_carry_cluster_member_term_and_revision() {
    let mut server = serve().await;
    let response = server.kv.put(put("k", "v")).await.unwrap().into_inner();
    let header = response.header.unwrap();
    assert_eq!(header.cluster_id, CLUSTER_ID);
    assert_eq!(header.member_id, 7);
    assert_eq!(header.raft_term, 1);
    assert_eq!(header.revision, 2, "the first write makes revision 2");
    let status = server
        .maintenance
        .status(pb::StatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.version, api::v3::ETCD_API_VERSION);
    assert_eq!(status.leader, 7);
    assert_eq!(status.header.unwrap().revision, 2);
    let hash = server
        .maintenance
        .hash_kv(pb::HashKvRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hash.header.unwrap().member_id, 7);
}

#[tokio::test]
async fn keyspace_errors_have_etcds_codes_and_messages() {
    let mut server = serve().await;
    server.kv.put(put("k", "v1")).await.unwrap();
    server.kv.put(put("k", "v2")).await.unwrap();
    assert_status(
        server.kv.range(range("")).await,
        Code::InvalidArgument,
        "etcdserver: key is not provided",
    );
    assert_status(
        server
            .kv
            .range(pb::RangeRequest {
                revision: 100,
                ..range("k")
            })
            .await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision is a future revision",
    );
    server
        .kv
        .compact(pb::CompactionRequest {
            revision: 3,
            physical: false,
        })
        .await
        .unwrap();
    assert_status(
        server
            .kv
            .range(pb::RangeRequest {
                revision: 2,
                ..range("k")
            })
            .await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    );
    assert_status(
        server
            .kv
            .put(pb::PutRequest {
                ignore_value: true,
                ..put("missing", "")
            })
            .await,
        Code::InvalidArgument,
        "etcdserver: key not found",
    );
    assert_status(
        server
            .kv
            .put(pb::PutRequest {
                lease: 42,
                ..put("k", "v")
            })
            .await,
        Code::NotFound,
        "etcdserver: requested lease not found",
    );
    let put_op = |key: &str| pb::RequestOp {
        request: Some(pb::request_op::Request::RequestPut(put(key, "x"))),
    };
    assert_status(
        server
            .kv
            .txn(pb::TxnRequest {
                success: vec![put_op("d"), put_op("d")],
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "etcdserver: duplicate key given in txn request",
    );
    assert_status(
        server
            .kv
            .txn(pb::TxnRequest {
                success: (0..129).map(|i| put_op(&format!("k{i}"))).collect(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "etcdserver: too many operations in txn request",
    );
    assert_eq!(revision(&mut server).await, 3, "nothing failed was applied");
}

/// etcd 3.4 panics on this txn (a from-key delete escapes its duplicate-key
/// check, then the ignore_value put of the deleted key fails mid-apply);
/// raftkv refuses it whole.
#[tokio::test]
async fn a_txn_failing_mid_apply_applies_nothing() {
    let mut server = serve().await;
    server.kv.put(put("a/1", "one")).await.unwrap();
    let before = revision(&mut server).await;
    let txn = pb::TxnRequest {
        success: vec![
            pb::RequestOp {
                request: Some(pb::request_op::Request::RequestDeleteRange(
                    pb::DeleteRangeRequest {
                        key: b"a/".to_vec(),
                        range_end: vec![0],
                        prev_kv: false,
                    },
                )),
            },
            pb::RequestOp {
                request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                    ignore_value: true,
                    ..put("a/1", "")
                })),
            },
        ],
        ..Default::default()
    };
    assert_status(
        server.kv.txn(txn).await,
        Code::InvalidArgument,
        "etcdserver: key not found",
    );
    assert_eq!(revision(&mut server).await, before);
    let kept = server.kv.range(range("a/1")).await.unwrap().into_inner();
    assert_eq!(kept.kvs[0].value, b"one");
}

/// gRPC shares the HTTP routes' `max_concurrent_requests`: past it, a gRPC
/// call gets etcd's ResourceExhausted "etcdserver: too many requests" and an
/// HTTP request 503, at once; both are served again once the bound frees.
#[tokio::test]
async fn grpc_requests_are_shed_past_max_concurrent_requests() {
    let (mut server, store) = serve_with(api::ApiConfig {
        max_concurrent_requests: 1,
        ..api::ApiConfig::default()
    })
    .await;
    server.consensus.set_hold_proposals(true);
    let mut held_client = server.kv.clone();
    let held = tokio::spawn(async move { held_client.put(put("held", "1")).await });
    for _ in 0..10_000 {
        if store.pending_writes() == 1 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(store.pending_writes(), 1, "the first put never arrived");
    assert_status(
        server.kv.range(range("any")).await,
        Code::ResourceExhausted,
        "etcdserver: too many requests",
    );
    assert_status(
        server.maintenance.status(pb::StatusRequest {}).await,
        Code::ResourceExhausted,
        "etcdserver: too many requests",
    );
    let http = reqwest::get(format!("http://{}/v1/status", server.address))
        .await
        .unwrap();
    assert_eq!(http.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    server.consensus.release_held();
    held.await.unwrap().expect("the held put succeeds");
    assert_eq!(revision(&mut server).await, 2);
}

#[tokio::test]
async fn consensus_failures_are_unavailable() {
    let mut server = serve().await;
    server.consensus.set_no_leader(true);
    assert_status(
        server.kv.put(put("k", "v")).await,
        Code::Unavailable,
        "etcdserver: no leader",
    );
    server.consensus.set_no_leader(false);
    assert_eq!(revision(&mut server).await, 1);
}

#[tokio::test]
async fn oversized_requests_are_refused_and_nothing_is_applied() {
    let mut server = serve().await;
    let limit = api::ApiConfig::DEFAULT_MAX_REQUEST_BYTES;
    // Over --max-request-bytes but within the gRPC overhead: etcd's own check.
    let value = "x".repeat(limit);
    assert_status(
        server.kv.put(put("big", &value)).await,
        Code::InvalidArgument,
        "etcdserver: request is too large",
    );
    // Over the gRPC message limit: refused while decoding, as grpc-go does.
    let huge = "x".repeat(limit + api::v3::GRPC_OVERHEAD_BYTES + 1);
    let status = server
        .kv
        .put(put("big", &huge))
        .await
        .expect_err("over the gRPC limit");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("grpc: received message larger than max ("),
        "{status:?}"
    );
    let txn = pb::TxnRequest {
        success: vec![pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(put("big", &value))),
        }],
        ..Default::default()
    };
    assert_status(
        server.kv.txn(txn).await,
        Code::InvalidArgument,
        "etcdserver: request is too large",
    );
    let missing = server.kv.range(range("big")).await.unwrap().into_inner();
    assert_eq!(missing.count, 0);
    assert_eq!(missing.header.unwrap().revision, 1);
    // The connection still serves.
    server.kv.put(put("small", "ok")).await.unwrap();
}

#[tokio::test]
async fn unserved_rpcs_answer_unimplemented_and_defragment_succeeds() {
    let mut server = serve().await;
    let status = server
        .maintenance
        .hash(pb::HashRequest::default())
        .await
        .expect_err("unimplemented");
    assert_eq!(status.code(), Code::Unimplemented);
    assert!(status.message().contains("Hash"), "{status:?}");
    let defragmented = server
        .maintenance
        .defragment(pb::DefragmentRequest::default())
        .await
        .expect("Defragment is a no-op that succeeds")
        .into_inner();
    assert_eq!(defragmented.header.expect("header").member_id, 7);
    let status = server
        .maintenance
        .move_leader(pb::MoveLeaderRequest { target_id: 1 })
        .await
        .expect_err("unimplemented");
    assert_eq!(status.code(), Code::Unimplemented);
}

#[tokio::test]
async fn one_port_serves_http_gateway_and_grpc_on_one_keyspace() {
    let mut server = serve().await;
    let http = reqwest::Client::new();
    let url = |path: &str| format!("http://{}{path}", server.address);
    let put = http.put(url("/fruit")).body("apple").send().await.unwrap();
    assert_eq!(put.status(), 204);
    let response = server.kv.range(range("/fruit")).await.unwrap().into_inner();
    assert_eq!(response.kvs[0].value, b"apple");
    assert_eq!(response.kvs[0].version, 1);

    // The gateway: base64 bytes, strings for 64-bit integers, proto names.
    let gateway = http
        .post(url("/v3/kv/range"))
        .body(r#"{"key":"L2ZydWl0"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(gateway.status(), 200);
    let body: serde_json::Value = gateway.json().await.unwrap();
    assert_eq!(body["kvs"][0]["value"], "YXBwbGU=");
    assert_eq!(body["kvs"][0]["create_revision"], "2");
    assert_eq!(body["count"], "1");
    assert_eq!(body["header"]["member_id"], "7");
    let beta = http
        .post(url("/v3beta/kv/put"))
        .body(r#"{"key":"YQ==","value":"Yg=="}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(beta.status(), 200);

    // Gateway errors as etcd's grpc-gateway writes them.
    let refused = http
        .post(url("/v3/kv/range"))
        .body(r#"{"key":"L2ZydWl0","revision":"99"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let body: serde_json::Value = refused.json().await.unwrap();
    let message = "etcdserver: mvcc: required revision is a future revision";
    assert_eq!(
        body,
        serde_json::json!({"error": message, "message": message, "code": 11})
    );
    let bad_json = http
        .post(url("/v3/kv/put"))
        .body("{\"key\":")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_json.status(), 400);

    // Reserved like /v1/: not keys; unknown gateway paths are 404.
    let get = http.get(url("/v3/kv/range")).send().await.unwrap();
    assert_eq!(get.status(), 405);
    let unknown = http.post(url("/v3/nothing")).send().await.unwrap();
    assert_eq!(unknown.status(), 404);
    let key = http.put(url("/v3/mykey")).body("x").send().await.unwrap();
    assert_eq!(key.status(), 400);
    let key = http.get(url("/v3beta")).send().await.unwrap();
    assert_eq!(key.status(), 400);
    // Membership still answers on POST /<id> (not gRPC: no grpc content type).
    let status = http.get(url("/v1/status")).send().await.unwrap();
    assert_eq!(status.status(), 200);
}
