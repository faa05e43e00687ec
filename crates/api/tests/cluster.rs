//! The gRPC `Cluster` service and the learner guard, in process over a real
//! socket: etcd's codes and messages for each membership rule, the response
//! headers and member lists, the JSON gateway's routes.

mod common;

use etcdproto::etcdserverpb as pb;
use pb::cluster_client::ClusterClient;
use pb::kv_client::KvClient;
use pb::maintenance_client::MaintenanceClient;
use tonic::Code;

const CLUSTER_ID: u64 = 0xc1u64;
const NODE_ID: u64 = 7;

struct Server {
    app: common::TestApp,
    cluster: ClusterClient<tonic::transport::Channel>,
    channel: tonic::transport::Channel,
}

async fn serve() -> Server {
    let app = common::app_with(
        kvstore::KvConfig::new(NODE_ID),
        api::ApiConfig {
            cluster_id: CLUSTER_ID,
            ..api::ApiConfig::default()
        },
    );
    let (_, channel) = common::listen(app.router.clone()).await;
    Server {
        app,
        cluster: ClusterClient::new(channel.clone()),
        channel,
    }
}

fn failed(result: Result<impl std::fmt::Debug, tonic::Status>) -> (Code, String) {
    let status = result.expect_err("refused");
    (status.code(), status.message().to_string())
}

fn add(url: &str, is_learner: bool) -> pb::MemberAddRequest {
    pb::MemberAddRequest {
        peer_ur_ls: vec![url.to_string()],
        is_learner,
    }
}

#[tokio::test]
async fn members_are_added_promoted_updated_and_removed_with_etcds_errors() {
    let mut server = serve().await;
    let cluster = &mut server.cluster;
    let list = cluster
        .member_list(pb::MemberListRequest::default())
        .await
        .unwrap()
        .into_inner();
    let header = list.header.expect("header");
    assert_eq!((header.cluster_id, header.member_id), (CLUSTER_ID, NODE_ID));
    assert!(header.raft_term >= 1, "{header:?}");
    assert_eq!(
        header.revision, 0,
        "etcd's Cluster headers carry no revision"
    );
    assert_eq!(list.members.len(), 1);
    assert_eq!(list.members[0].id, NODE_ID);
    assert_eq!(list.members[0].name, format!("raftkv-{NODE_ID}"));
    assert!(!list.members[0].is_learner);

    let added = cluster
        .member_add(add("http://127.0.0.1:40001", true))
        .await
        .unwrap()
        .into_inner();
    let member = added.member.expect("the new member");
    assert_eq!(member.id, NODE_ID + 1, "the next free id");
    assert!(member.is_learner);
    assert_eq!(member.peer_ur_ls, vec!["http://127.0.0.1:40001"]);
    assert_eq!(added.members.len(), 2);
    assert_eq!(added.header.expect("header").member_id, NODE_ID);
    let learner = member.id;

    let refusals = [
        (
            failed(
                cluster
                    .member_add(add("http://127.0.0.1:40002", true))
                    .await,
            ),
            (
                Code::FailedPrecondition,
                "etcdserver: too many learner members in cluster",
            ),
        ),
        (
            failed(
                cluster
                    .member_add(add("http://127.0.0.1:40001", false))
                    .await,
            ),
            (
                Code::FailedPrecondition,
                "etcdserver: Peer URLs already exists",
            ),
        ),
        (
            failed(
                cluster
                    .member_promote(pb::MemberPromoteRequest { id: learner })
                    .await,
            ),
            (
                Code::FailedPrecondition,
                "etcdserver: can only promote a learner member which is in sync with leader",
            ),
        ),
        (
            failed(
                cluster
                    .member_promote(pb::MemberPromoteRequest { id: NODE_ID })
                    .await,
            ),
            (Code::FailedPrecondition, "etcdserver: member not a learner"),
        ),
        (
            failed(
                cluster
                    .member_remove(pb::MemberRemoveRequest { id: 99 })
                    .await,
            ),
            (Code::NotFound, "etcdserver: member not found"),
        ),
        (
            failed(
                cluster
                    .member_update(pb::MemberUpdateRequest {
                        id: 99,
                        peer_ur_ls: vec!["http://127.0.0.1:40009".into()],
                    })
                    .await,
            ),
            (Code::NotFound, "etcdserver: member not found"),
        ),
    ];
    for ((code, message), (want_code, want_message)) in refusals {
        assert_eq!((code, message.as_str()), (want_code, want_message));
    }
    let (code, _) = failed(
        cluster
            .member_add(pb::MemberAddRequest {
                peer_ur_ls: vec!["http://a:1".into(), "http://b:2".into()],
                is_learner: false,
            })
            .await,
    );
    assert_eq!(code, Code::InvalidArgument, "two peer URLs");

    server.app.consensus.set_learners_ready(true);
    let promoted = cluster
        .member_promote(pb::MemberPromoteRequest { id: learner })
        .await
        .unwrap()
        .into_inner();
    assert!(promoted.members.iter().all(|m| !m.is_learner));
    let updated = cluster
        .member_update(pb::MemberUpdateRequest {
            id: learner,
            peer_ur_ls: vec!["http://127.0.0.1:40003".into()],
        })
        .await
        .unwrap()
        .into_inner();
    let member = updated.members.iter().find(|m| m.id == learner).unwrap();
    assert_eq!(member.peer_ur_ls, vec!["http://127.0.0.1:40003"]);
    let removed = cluster
        .member_remove(pb::MemberRemoveRequest { id: learner })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(removed.members.len(), 1);
    assert_eq!(
        failed(
            cluster
                .member_remove(pb::MemberRemoveRequest { id: NODE_ID })
                .await
        ),
        (
            Code::FailedPrecondition,
            "etcdserver: cannot remove the last voting member".to_string()
        )
    );
}

#[tokio::test]
async fn a_learner_serves_only_status_and_range() {
    let mut server = serve().await;
    server.app.consensus.set_learner(true);
    let mut kv = KvClient::new(server.channel.clone());
    let mut maintenance = MaintenanceClient::new(server.channel.clone());
    let refused = failed(
        kv.put(pb::PutRequest {
            key: b"k".to_vec(),
            ..Default::default()
        })
        .await,
    );
    assert_eq!(
        refused,
        (
            Code::Unavailable,
            "etcdserver: rpc not supported for learner".to_string()
        )
    );
    assert_eq!(
        failed(
            server
                .cluster
                .member_list(pb::MemberListRequest::default())
                .await
        )
        .0,
        Code::Unavailable
    );
    kv.range(pb::RangeRequest {
        key: b"k".to_vec(),
        serializable: true,
        ..Default::default()
    })
    .await
    .expect("a learner serves a serializable Range");
    maintenance
        .status(pb::StatusRequest::default())
        .await
        .expect("a learner serves Status");
    // The gateway alike.
    let put = server
        .app
        .send("POST", "/v3/kv/put", r#"{"key":"aw=="}"#)
        .await;
    assert_eq!(put.status, 503, "{}", put.text());
    assert!(put
        .text()
        .contains("etcdserver: rpc not supported for learner"));
    let range = server
        .app
        .send("POST", "/v3/kv/range", r#"{"key":"aw=="}"#)
        .await;
    assert_eq!(range.status, 200, "{}", range.text());
    server.app.consensus.set_learner(false);
    kv.put(pb::PutRequest {
        key: b"k".to_vec(),
        ..Default::default()
    })
    .await
    .expect("a voter again");
}

#[tokio::test]
async fn the_gateway_lists_and_adds_members() {
    let server = serve().await;
    let list = server
        .app
        .send("POST", "/v3/cluster/member/list", "{}")
        .await;
    assert_eq!(list.status, 200, "{}", list.text());
    let body: serde_json::Value = serde_json::from_slice(&list.body).unwrap();
    assert_eq!(body["members"][0]["ID"], NODE_ID.to_string(), "{body}");
    assert_eq!(body["members"][0]["name"], format!("raftkv-{NODE_ID}"));
    let added = server
        .app
        .send(
            "POST",
            "/v3/cluster/member/add",
            r#"{"peerURLs":["http://127.0.0.1:40001"],"isLearner":true}"#,
        )
        .await;
    assert_eq!(added.status, 200, "{}", added.text());
    let body: serde_json::Value = serde_json::from_slice(&added.body).unwrap();
    assert_eq!(body["member"]["ID"], (NODE_ID + 1).to_string(), "{body}");
    assert_eq!(body["member"]["isLearner"], true, "{body}");
    let refused = server
        .app
        .send("POST", "/v3/cluster/member/remove", r#"{"ID":"99"}"#)
        .await;
    assert_eq!(refused.status, 404, "{}", refused.text());
    assert!(refused.text().contains("etcdserver: member not found"));
}
