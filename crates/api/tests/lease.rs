//! The `etcdserverpb.Lease` service over a real socket (tonic client) and
//! the gateway's lease routes: etcd's answers, codes and messages.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use etcdproto::etcdserverpb as pb;
use kvstore::testing::LocalConsensus;
use pb::kv_client::KvClient;
use pb::lease_client::LeaseClient;
use tokio::net::TcpListener;
use tonic::transport::Channel;
use tonic::Code;

struct Server {
    consensus: Arc<LocalConsensus>,
    kv: KvClient<Channel>,
    lease: LeaseClient<Channel>,
    _address: SocketAddr,
}

async fn serve() -> Server {
    let (store, consensus) = kvstore::testing::local_store(kvstore::KvConfig::new(7));
    let router = api::router(store, api::ApiConfig::default());
    let (address, channel) = common::listen(router).await;
    Server {
        consensus,
        kv: KvClient::new(channel.clone()),
        lease: LeaseClient::new(channel),
        _address: address,
    }
}

fn assert_status<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, tonic::Status>,
    code: Code,
    message: &str,
) {
    let status = result.expect_err("the request must fail");
    assert_eq!((status.code(), status.message()), (code, message));
}

#[tokio::test]
async fn grant_put_time_to_live_keep_alive_revoke_over_grpc() {
    let mut server = serve().await;
    let granted = server
        .lease
        .lease_grant(pb::LeaseGrantRequest { ttl: 1, id: 0 })
        .await
        .unwrap()
        .into_inner();
    assert!(granted.id > 0);
    assert_eq!(granted.ttl, 2, "raised to the minimum");
    assert_eq!(granted.header.unwrap().member_id, 7, "header filled");
    let id = granted.id;
    server
        .kv
        .put(pb::PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            lease: id,
            ..Default::default()
        })
        .await
        .unwrap();
    let ttl = server
        .lease
        .lease_time_to_live(pb::LeaseTimeToLiveRequest { id, keys: true })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((ttl.id, ttl.granted_ttl), (id, 2));
    assert!((0..=2).contains(&ttl.ttl));
    assert_eq!(ttl.keys, vec![b"k".to_vec()]);
    let leases = server
        .lease
        .lease_leases(pb::LeaseLeasesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(leases.leases, vec![pb::LeaseStatus { id }]);

    let requests = tokio_stream_of(vec![
        pb::LeaseKeepAliveRequest { id },
        pb::LeaseKeepAliveRequest { id: id + 1 },
    ]);
    let mut answers = server
        .lease
        .lease_keep_alive(requests)
        .await
        .unwrap()
        .into_inner();
    let first = answers.message().await.unwrap().unwrap();
    assert_eq!((first.id, first.ttl), (id, 2));
    let unknown = answers.message().await.unwrap().unwrap();
    assert_eq!(
        (unknown.id, unknown.ttl),
        (id + 1, 0),
        "unknown lease: TTL 0"
    );
    assert!(
        answers.message().await.unwrap().is_none(),
        "ends with the client"
    );

    let revoked = server
        .lease
        .lease_revoke(pb::LeaseRevokeRequest { id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.header.unwrap().revision, 3, "the delete's revision");
    let range = server
        .kv
        .range(pb::RangeRequest {
            key: b"k".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(range.kvs.is_empty(), "the key went with its lease");
    let gone = server
        .lease
        .lease_time_to_live(pb::LeaseTimeToLiveRequest { id, keys: false })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(gone.ttl, -1);
}

/// A stream of the given messages (then end of stream).
fn tokio_stream_of(
    items: Vec<pb::LeaseKeepAliveRequest>,
) -> impl tonic::codegen::tokio_stream::Stream<Item = pb::LeaseKeepAliveRequest> {
    tonic::codegen::tokio_stream::iter(items)
}

#[tokio::test]
async fn lease_errors_are_etcds() {
    let mut server = serve().await;
    assert_status(
        server
            .lease
            .lease_revoke(pb::LeaseRevokeRequest { id: 5 })
            .await,
        Code::NotFound,
        "etcdserver: requested lease not found",
    );
    assert_status(
        server
            .kv
            .put(pb::PutRequest {
                key: b"k".to_vec(),
                lease: 5,
                ..Default::default()
            })
            .await,
        Code::NotFound,
        "etcdserver: requested lease not found",
    );
    server
        .lease
        .lease_grant(pb::LeaseGrantRequest { ttl: 10, id: 5 })
        .await
        .unwrap();
    assert_status(
        server
            .lease
            .lease_grant(pb::LeaseGrantRequest { ttl: 10, id: 5 })
            .await,
        Code::FailedPrecondition,
        "etcdserver: lease already exists",
    );
    assert_status(
        server
            .lease
            .lease_grant(pb::LeaseGrantRequest {
                ttl: 9_000_000_001,
                id: 6,
            })
            .await,
        Code::OutOfRange,
        "etcdserver: too large lease TTL",
    );
    // A member that is not the leader serves neither keep-alive nor TTL.
    server.consensus.set_no_leader(true);
    assert_status(
        server
            .lease
            .lease_time_to_live(pb::LeaseTimeToLiveRequest { id: 5, keys: false })
            .await,
        Code::Unavailable,
        "etcdserver: not leader",
    );
    let mut answers = server
        .lease
        .lease_keep_alive(tokio_stream_of(vec![pb::LeaseKeepAliveRequest { id: 5 }]))
        .await
        .unwrap()
        .into_inner();
    let status = answers.message().await.expect_err("the stream fails");
    assert_eq!(
        (status.code(), status.message()),
        (Code::Unavailable, "etcdserver: not leader")
    );
}

#[tokio::test]
async fn gateway_lease_routes_and_their_3_4_aliases() {
    let app = common::app();
    let granted = app
        .send("POST", "/v3/lease/grant", r#"{"TTL":"30","ID":"5"}"#)
        .await;
    assert_eq!(granted.status, 200, "{}", granted.text());
    let body: serde_json::Value = serde_json::from_slice(&granted.body).unwrap();
    assert_eq!((&body["ID"], &body["TTL"]), (&"5".into(), &"30".into()));
    let put = app
        .send(
            "POST",
            "/v3/kv/put",
            r#"{"key":"Zm9v","value":"YmFy","lease":"5"}"#,
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.text());
    for path in ["/v3/lease/timetolive", "/v3/kv/lease/timetolive"] {
        let ttl = app.send("POST", path, r#"{"ID":"5","keys":true}"#).await;
        assert_eq!(ttl.status, 200, "{path}: {}", ttl.text());
        let body: serde_json::Value = serde_json::from_slice(&ttl.body).unwrap();
        assert_eq!(body["grantedTTL"], "30", "{path}: {body}");
        assert_eq!(body["keys"], serde_json::json!(["Zm9v"]));
    }
    for path in [
        "/v3/lease/leases",
        "/v3/kv/lease/leases",
        "/v3beta/lease/leases",
    ] {
        let leases = app.send("POST", path, "{}").await;
        let body: serde_json::Value = serde_json::from_slice(&leases.body).unwrap();
        assert_eq!(body["leases"], serde_json::json!([{"ID": "5"}]), "{path}");
    }
    let kept = app
        .send(
            "POST",
            "/v3/lease/keepalive",
            "{\"ID\":\"5\"}\n{\"ID\":\"6\"}",
        )
        .await;
    assert_eq!(kept.status, 200);
    let lines: Vec<serde_json::Value> = kept
        .text()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{}", kept.text());
    assert_eq!(lines[0]["result"]["TTL"], "30");
    assert_eq!(lines[1]["result"]["ID"], "6");
    assert!(lines[1]["result"].get("TTL").is_none(), "TTL 0 is omitted");
    let revoked = app
        .send("POST", "/v3/kv/lease/revoke", r#"{"ID":"5"}"#)
        .await;
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    let again = app.send("POST", "/v3/lease/revoke", r#"{"ID":"5"}"#).await;
    assert_eq!(again.status, 404);
    let body: serde_json::Value = serde_json::from_slice(&again.body).unwrap();
    assert_eq!(body["message"], "etcdserver: requested lease not found");
    assert_eq!(body["code"], 5);
}

/// A follower forwards keep-alives and TimeToLive to the leader's peer URL,
/// where `api::v3::peer_router` answers them from the leader's deadlines.
#[tokio::test]
async fn a_follower_forwards_keep_alive_and_time_to_live_to_the_leader() {
    // The leader: its store, and its peer port serving forwarded requests.
    let (leader_store, leader_consensus) = kvstore::testing::local_store(kvstore::KvConfig::new(1));
    let leader_v3 = api::v3::V3::new(
        leader_store.clone(),
        api::v3::V3Settings {
            cluster_id: 0,
            max_request_bytes: 1 << 20,
        },
    );
    let peer_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer_url = format!("http://{}", peer_listener.local_addr().unwrap());
    let peer_router = api::v3::peer_router(leader_v3);
    tokio::spawn(async move { axum::serve(peer_listener, peer_router).await });
    let granted = leader_store
        .lease_grant(pb::LeaseGrantRequest { id: 9, ttl: 30 })
        .await
        .unwrap();
    assert_eq!(granted.id, 9);

    // The follower: its own client port; it knows the leader's peer URL.
    let mut follower = serve().await;
    follower.consensus.set_follower_of(Some(raftnode::Member {
        id: 1,
        peer_url: peer_url.clone(),
        ..Default::default()
    }));
    let ttl = follower
        .lease
        .lease_time_to_live(pb::LeaseTimeToLiveRequest { id: 9, keys: false })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((ttl.id, ttl.granted_ttl), (9, 30), "the leader's lease");
    assert_eq!(ttl.header.unwrap().member_id, 7, "the follower's header");
    let mut answers = follower
        .lease
        .lease_keep_alive(tokio_stream_of(vec![
            pb::LeaseKeepAliveRequest { id: 9 },
            pb::LeaseKeepAliveRequest { id: 10 },
        ]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answers.message().await.unwrap().unwrap().ttl, 30);
    assert_eq!(answers.message().await.unwrap().unwrap().ttl, 0);

    // A leader that is itself not leading answers "not leader"; the
    // follower passes that on instead of forwarding again.
    leader_consensus.set_no_leader(true);
    assert_status(
        follower
            .lease
            .lease_time_to_live(pb::LeaseTimeToLiveRequest { id: 9, keys: false })
            .await,
        Code::Unavailable,
        "etcdserver: not leader",
    );
    // No reachable leader: unavailable, not a hang.
    follower.consensus.set_follower_of(Some(raftnode::Member {
        id: 1,
        peer_url: "http://127.0.0.1:1".to_string(),
        ..Default::default()
    }));
    let unreachable = follower
        .lease
        .lease_time_to_live(pb::LeaseTimeToLiveRequest { id: 9, keys: false })
        .await
        .expect_err("no leader to ask");
    assert_eq!(unreachable.code(), Code::Unavailable);
}

/// A leader's peer port served over TLS with peer client-cert auth.
async fn tls_leader(
    pki: &tls::dev::Pki,
) -> (
    String,
    tls::ServerTls,
    kvstore::KvStore,
    Arc<LocalConsensus>,
) {
    let (leader_store, leader_consensus) = kvstore::testing::local_store(kvstore::KvConfig::new(1));
    let leader_v3 = api::v3::V3::new(
        leader_store.clone(),
        api::v3::V3Settings {
            cluster_id: 0,
            max_request_bytes: 1 << 20,
        },
    );
    let (cert_file, key_file) = pki.issue("leader", "member-1", &["127.0.0.1"], 30).unwrap();
    let server_tls = tls::ServerTls::load(
        tls::PortKind::Peer,
        tls::ServerTlsFiles {
            cert_file,
            key_file,
            trusted_ca_file: Some(pki.ca_file.clone()),
            client_cert_auth: true,
            allowed_cn: None,
            allowed_hostname: None,
        },
    )
    .unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer_url = format!("https://{}", tcp.local_addr().unwrap());
    let listener = tls::Listener::tls(tcp, server_tls.clone(), tls::ListenerConfig::default());
    let peer_router = api::v3::peer_router(leader_v3);
    tokio::spawn(async move { axum::serve(listener, peer_router).await });
    (peer_url, server_tls, leader_store, leader_consensus)
}

/// A follower whose client port forwards with `peer_tls`, following the leader at `peer_url`.
async fn tls_follower(peer_tls: Option<tls::ClientTls>, peer_url: &str) -> LeaseClient<Channel> {
    let (store, consensus) = kvstore::testing::local_store(kvstore::KvConfig::new(7));
    let router = api::router(
        store,
        api::ApiConfig {
            peer_tls,
            ..api::ApiConfig::default()
        },
    );
    let (_address, channel) = common::listen(router).await;
    consensus.set_follower_of(Some(raftnode::Member {
        id: 1,
        peer_url: peer_url.to_string(),
        ..Default::default()
    }));
    LeaseClient::new(channel)
}

/// With `https://` peer URLs a follower forwards over TLS, presenting its peer certificate;
/// without peer TLS, or with a certificate from another CA, the leader is unavailable.
#[tokio::test]
async fn a_follower_forwards_to_an_https_leader_with_its_peer_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = tls::dev::Pki::generate(&dir.path().join("ca"), "peer CA").unwrap();
    let (peer_url, server_tls, leader_store, _leader_consensus) = tls_leader(&pki).await;
    leader_store
        .lease_grant(pb::LeaseGrantRequest { id: 9, ttl: 30 })
        .await
        .unwrap();

    let (cert, key) = pki
        .issue("follower", "member-7", &["127.0.0.1"], 30)
        .unwrap();
    let peer_tls = tls::ClientTls::load(tls::ClientTlsFiles {
        trusted_ca_file: Some(pki.ca_file.clone()),
        cert_file: Some(cert),
        key_file: Some(key),
    })
    .unwrap();
    let mut follower = tls_follower(Some(peer_tls), &peer_url).await;
    let ttl = follower
        .lease_time_to_live(pb::LeaseTimeToLiveRequest { id: 9, keys: false })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (ttl.id, ttl.granted_ttl),
        (9, 30),
        "the leader's lease over https"
    );
    assert!(server_tls.status().handshakes_total >= 1);

    // No peer TLS: an https:// leader cannot be reached (never in clear text).
    let mut plain = tls_follower(None, &peer_url).await;
    let err = plain
        .lease_time_to_live(pb::LeaseTimeToLiveRequest { id: 9, keys: false })
        .await
        .expect_err("no TLS configured");
    assert_eq!(err.code(), Code::Unavailable);

    // A certificate from another CA is refused at the handshake.
    let rogue = tls::dev::Pki::generate(&dir.path().join("rogue"), "rogue CA").unwrap();
    let (cert, key) = rogue
        .issue("rogue", "member-7", &["127.0.0.1"], 30)
        .unwrap();
    let rogue_tls = tls::ClientTls::load(tls::ClientTlsFiles {
        trusted_ca_file: Some(pki.ca_file.clone()),
        cert_file: Some(cert),
        key_file: Some(key),
    })
    .unwrap();
    let mut rogue_follower = tls_follower(Some(rogue_tls), &peer_url).await;
    let err = rogue_follower
        .lease_time_to_live(pb::LeaseTimeToLiveRequest { id: 9, keys: false })
        .await
        .expect_err("refused by the leader");
    assert_eq!(err.code(), Code::Unavailable);
    assert!(server_tls.status().failures("unknown_ca") >= 1);
}
