//! The `etcd-client` crate as a real Rust client of raftkv's v3 API: every
//! call of the KV, Lease and Cluster services and the served Maintenance calls, through a client
//! balanced over all three members, with the answers etcd gives.

mod common;

use common::{Cluster, FAST};
use etcd_client::{
    AlarmAction, AlarmOptions, AlarmType, Client, CompactionOptions, Compare, CompareOp,
    DeleteOptions, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse,
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn endpoints(cluster: &Cluster) -> Vec<String> {
    cluster
        .nodes()
        .map(|node| format!("127.0.0.1:{}", node.client_port))
        .collect()
}

fn grpc_code(error: etcd_client::Error) -> (tonic::Code, String) {
    match error {
        etcd_client::Error::GRpcStatus(status) => (status.code(), status.message().to_string()),
        other => panic!("expected a gRPC status, got {other}"),
    }
}

fn keys(response: &etcd_client::GetResponse) -> Vec<String> {
    response
        .kvs()
        .iter()
        .map(|kv| kv.key_str().expect("utf-8 key").to_string())
        .collect()
}

#[test]
fn the_etcd_client_crate_works_against_a_cluster() {
    let cluster = Cluster::start(3, FAST);
    cluster.leader();
    runtime().block_on(async {
        let mut client = Client::connect(endpoints(&cluster), None)
            .await
            .expect("connect");

        // Put and Get: revisions start at 1, the first write is 2.
        let put = client.put("fruit/apple", "red", None).await.expect("put");
        let first = put.header().expect("header").revision();
        assert_eq!(
            first, 2,
            "the first write of an empty keyspace is revision 2"
        );
        let put = client
            .put(
                "fruit/apple",
                "green",
                Some(PutOptions::new().with_prev_key()),
            )
            .await
            .expect("put with prev_kv");
        let prev = put.prev_key().expect("prev_kv");
        assert_eq!(prev.value(), b"red");
        assert_eq!(put.header().expect("header").revision(), first + 1);
        for (key, value) in [
            ("fruit/banana", "yellow"),
            ("fruit/cherry", "dark"),
            ("veg/leek", "long"),
        ] {
            client.put(key, value, None).await.expect("put");
        }
        let apple = client.get("fruit/apple", None).await.expect("get");
        let kv = &apple.kvs()[0];
        assert_eq!(kv.value(), b"green");
        assert_eq!(
            (kv.create_revision(), kv.mod_revision(), kv.version()),
            (first, first + 1, 2)
        );

        // Range options.
        let prefix = client
            .get("fruit/", Some(GetOptions::new().with_prefix()))
            .await
            .expect("prefix");
        assert_eq!(
            keys(&prefix),
            ["fruit/apple", "fruit/banana", "fruit/cherry"]
        );
        let limited = client
            .get(
                "fruit/",
                Some(
                    GetOptions::new()
                        .with_prefix()
                        .with_limit(2)
                        .with_sort(SortTarget::Key, SortOrder::Descend),
                ),
            )
            .await
            .expect("limit and sort");
        assert_eq!(keys(&limited), ["fruit/cherry", "fruit/banana"]);
        assert!(limited.more());
        assert_eq!(limited.count(), 3);
        let counted = client
            .get(
                "fruit/",
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await
            .expect("count only");
        assert!(counted.kvs().is_empty());
        assert_eq!(counted.count(), 3);
        let keys_only = client
            .get(
                "veg/",
                Some(
                    GetOptions::new()
                        .with_prefix()
                        .with_keys_only()
                        .with_serializable(),
                ),
            )
            .await
            .expect("keys only");
        assert_eq!(keys(&keys_only), ["veg/leek"]);
        assert!(keys_only.kvs()[0].value().is_empty());
        let from_key = client
            .get("fruit/c", Some(GetOptions::new().with_from_key()))
            .await
            .expect("from key");
        assert_eq!(keys(&from_key), ["fruit/cherry", "veg/leek"]);
        let historical = client
            .get("fruit/apple", Some(GetOptions::new().with_revision(first)))
            .await
            .expect("historical read");
        assert_eq!(historical.kvs()[0].value(), b"red");
        let head = historical.header().expect("header").revision();
        assert_eq!(
            head,
            first + 4,
            "a historical read's header carries the current revision"
        );

        // Txn: compare-and-swap on mod_revision, both branches.
        let swap = |revision: i64| {
            Txn::new()
                .when([Compare::mod_revision(
                    "fruit/apple",
                    CompareOp::Equal,
                    revision,
                )])
                .and_then([TxnOp::put("fruit/apple", "yellow", None)])
                .or_else([TxnOp::get("fruit/apple", None)])
        };
        let won = client.txn(swap(first + 1)).await.expect("txn");
        assert!(won.succeeded());
        let lost = client.txn(swap(first + 1)).await.expect("txn");
        assert!(!lost.succeeded());
        match &lost.op_responses()[..] {
            [TxnOpResponse::Get(get)] => assert_eq!(get.kvs()[0].value(), b"yellow"),
            other => panic!("expected one range response, got {other:?}"),
        }

        // Delete with prev_kvs in key order.
        let deleted = client
            .delete(
                "fruit/b",
                Some(DeleteOptions::new().with_range("fruit/d").with_prev_key()),
            )
            .await
            .expect("delete range");
        assert_eq!(deleted.deleted(), 2);
        let prev_keys: Vec<&[u8]> = deleted.prev_kvs().iter().map(|kv| kv.key()).collect();
        assert_eq!(
            prev_keys,
            [b"fruit/banana".as_slice(), b"fruit/cherry".as_slice()]
        );

        // Compaction: reads below it fail with etcd's error, at it succeed.
        let head = deleted.header().expect("header").revision();
        let compacted = head - 1;
        client
            .compact(compacted, Some(CompactionOptions::new().with_physical()))
            .await
            .expect("compact");
        let (code, message) = grpc_code(
            client
                .get("fruit/apple", Some(GetOptions::new().with_revision(first)))
                .await
                .expect_err("a read below the compacted revision"),
        );
        assert_eq!(code, tonic::Code::OutOfRange);
        assert_eq!(
            message,
            "etcdserver: mvcc: required revision has been compacted"
        );
        let (code, message) = grpc_code(
            client
                .get(
                    "fruit/apple",
                    Some(GetOptions::new().with_revision(head + 100)),
                )
                .await
                .expect_err("a read above the current revision"),
        );
        assert_eq!(code, tonic::Code::OutOfRange);
        assert_eq!(
            message,
            "etcdserver: mvcc: required revision is a future revision"
        );

        // Invalid input gets etcd's InvalidArgument with the reason.
        let (code, message) = grpc_code(client.put("", "x", None).await.expect_err("empty key"));
        assert_eq!(code, tonic::Code::InvalidArgument);
        assert_eq!(message, "etcdserver: key is not provided");

        // Maintenance: Status, HashKV (equal on every member), Alarm.
        let status = client.status().await.expect("status");
        assert_eq!(status.leader(), cluster.leader());
        assert!(status.raft_index() > 0);
        let revision = client
            .get("veg/leek", None)
            .await
            .expect("get")
            .header()
            .expect("header")
            .revision();
        let mut hashes = Vec::new();
        for endpoint in endpoints(&cluster) {
            let mut member = Client::connect([endpoint], None).await.expect("connect");
            // A member that has not applied `revision` yet answers a
            // future-revision error; one that has not applied the compaction
            // yet hashes the versions it still keeps and says so in its
            // compact revision (as etcd does): compare hashes of one state.
            let hash = loop {
                match member.hash_kv(revision).await {
                    Ok(answer) if answer.compact_version() == compacted => break answer.hash(),
                    Ok(answer) => assert!(answer.compact_version() < compacted),
                    Err(error) => {
                        let (code, _) = grpc_code(error);
                        assert_eq!(code, tonic::Code::OutOfRange, "hash_kv");
                    }
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            };
            hashes.push(hash);
        }
        assert!(
            hashes.windows(2).all(|pair| pair[0] == pair[1]),
            "HashKV differs: {hashes:?}"
        );
        let alarms = client
            .alarm(AlarmAction::Get, AlarmType::None, None)
            .await
            .expect("alarm list");
        assert!(alarms.alarms().is_empty());
        // Leases: `the_etcd_client_crate_uses_leases`.
    });
}

#[test]
fn the_etcd_client_crate_sees_and_clears_a_nospace_alarm() {
    // A quota small enough that a few 64 KiB values exceed it.
    let cluster = Cluster::start(1, &[FAST, &["--quota-backend-bytes", "262144"]].concat());
    cluster.leader();
    runtime().block_on(async {
        let mut client = Client::connect(endpoints(&cluster), None)
            .await
            .expect("connect");
        let value = vec![b'v'; 64 * 1024];
        let mut refused = None;
        for round in 0..64 {
            match client
                .put(format!("big/{}", round % 2), value.clone(), None)
                .await
            {
                Ok(_) => continue,
                Err(error) => {
                    refused = Some(grpc_code(error));
                    break;
                }
            }
        }
        let (code, message) = refused.expect("the quota refuses a write");
        assert_eq!(code, tonic::Code::ResourceExhausted);
        assert_eq!(message, "etcdserver: mvcc: database space exceeded");
        let alarms = client
            .alarm(AlarmAction::Get, AlarmType::None, None)
            .await
            .expect("alarm list");
        let raised: Vec<AlarmType> = alarms.alarms().iter().map(|alarm| alarm.alarm()).collect();
        assert_eq!(raised, [AlarmType::Nospace]);
        let member_id = alarms.alarms()[0].member_id();
        assert_eq!(member_id, 1, "the alarm names the member that raised it");

        // Compact to head, disarm: writes are accepted again. As in etcd, a
        // disarm names the member (etcdctl sends one per listed alarm); one
        // for member 0 disarms nothing.
        let head = client
            .get("big/0", None)
            .await
            .expect("get")
            .header()
            .expect("header")
            .revision();
        client.compact(head, None).await.expect("compact");
        let untouched = client
            .alarm(AlarmAction::Deactivate, AlarmType::Nospace, None)
            .await
            .expect("alarm disarm without a member");
        assert!(
            untouched.alarms().is_empty(),
            "no alarm of member 0 to disarm"
        );
        let mut options = AlarmOptions::new();
        options.with_member(member_id);
        let disarmed = client
            .alarm(AlarmAction::Deactivate, AlarmType::Nospace, Some(options))
            .await
            .expect("alarm disarm");
        assert_eq!(disarmed.alarms().len(), 1);
        let alarms = client
            .alarm(AlarmAction::Get, AlarmType::None, None)
            .await
            .expect("alarm list");
        assert!(alarms.alarms().is_empty(), "the alarm is cleared");
        client
            .put("small", "ok", None)
            .await
            .expect("a write after disarm");
    });
}

/// The crate's lease calls, balanced over all three members (followers
/// forward keep-alives and TimeToLive to the leader): grant, put with the
/// lease, keep-alive stream, TimeToLive with keys, list, revoke.
#[test]
fn the_etcd_client_crate_uses_leases() {
    use etcd_client::{LeaseGrantOptions, LeaseTimeToLiveOptions};
    let cluster = Cluster::start(3, FAST);
    cluster.leader();
    runtime().block_on(async {
        let mut client = Client::connect(endpoints(&cluster), None)
            .await
            .expect("connect");
        let granted = client
            .lease_grant(60, Some(LeaseGrantOptions::new().with_id(0x7e57)))
            .await
            .expect("grant");
        assert_eq!((granted.id(), granted.ttl()), (0x7e57, 60));
        let chosen = client.lease_grant(1, None).await.expect("grant");
        assert!(chosen.id() > 0);
        assert!(chosen.ttl() >= 1, "raised to the minimum");
        client
            .put(
                "svc/a",
                "up",
                Some(PutOptions::new().with_lease(granted.id())),
            )
            .await
            .expect("put with a lease");
        let (mut keeper, mut answers) = client
            .lease_keep_alive(granted.id())
            .await
            .expect("keep-alive stream");
        for _ in 0..3 {
            keeper.keep_alive().await.expect("keep-alive");
            let answer = answers
                .message()
                .await
                .expect("keep-alive answer")
                .expect("stream open");
            assert_eq!((answer.id(), answer.ttl()), (granted.id(), 60));
        }
        let ttl = client
            .lease_time_to_live(
                granted.id(),
                Some(LeaseTimeToLiveOptions::new().with_keys()),
            )
            .await
            .expect("time to live");
        assert_eq!(ttl.granted_ttl(), 60);
        assert!((55..=60).contains(&ttl.ttl()), "{}", ttl.ttl());
        assert_eq!(ttl.keys(), [b"svc/a".to_vec()]);
        let mut ids: Vec<i64> = client
            .leases()
            .await
            .expect("leases")
            .leases()
            .iter()
            .map(|lease| lease.id())
            .collect();
        ids.sort_unstable();
        let mut expected = vec![granted.id(), chosen.id()];
        expected.sort_unstable();
        assert_eq!(ids, expected);
        client.lease_revoke(granted.id()).await.expect("revoke");
        let gone = client.get("svc/a", None).await.expect("get");
        assert!(gone.kvs().is_empty(), "the key went with its lease");
        let error = client
            .put(
                "svc/b",
                "up",
                Some(PutOptions::new().with_lease(granted.id())),
            )
            .await
            .expect_err("the lease is gone");
        assert_eq!(
            grpc_code(error),
            (
                tonic::Code::NotFound,
                "etcdserver: requested lease not found".to_string()
            )
        );
    });
}

#[test]
fn the_etcd_client_crate_lists_adds_and_removes_members() {
    let cluster = Cluster::start(3, FAST);
    cluster.leader();
    runtime().block_on(async {
        let mut client = Client::connect(endpoints(&cluster), None)
            .await
            .expect("connect");
        // Members publish their name and client URL once they run.
        let deadline = std::time::Instant::now() + common::WAIT;
        let members = loop {
            let list = client.member_list().await.expect("member list");
            if list.members().iter().all(|m| !m.name().is_empty()) {
                break list.members().to_vec();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "names never published"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        };
        assert_eq!(members.len(), 3);
        for (member, client_url) in members.iter().zip(endpoints(&cluster)) {
            assert_eq!(member.name(), format!("raftkv-{}", member.id()));
            assert_eq!(member.client_urls(), [client_url]);
            assert!(!member.is_learner());
        }

        let port = testcluster::reserve_port().expect("a port");
        let added = client
            .member_add(
                [format!("http://127.0.0.1:{port}")],
                Some(etcd_client::MemberAddOptions::new().with_is_learner()),
            )
            .await
            .expect("member add");
        let member = added.member().expect("the new member");
        assert_eq!(member.id(), 4);
        assert!(member.is_learner());
        assert_eq!(added.member_list().len(), 4);
        let (code, message) = grpc_code(client.member_promote(4).await.expect_err("not in sync"));
        assert_eq!(code, tonic::Code::FailedPrecondition);
        assert_eq!(
            message,
            "etcdserver: can only promote a learner member which is in sync with leader"
        );
        let removed = client.member_remove(4).await.expect("member remove");
        assert_eq!(removed.members().len(), 3);
        let (code, message) = grpc_code(client.member_remove(4).await.expect_err("gone"));
        assert_eq!(
            (code, message.as_str()),
            (tonic::Code::NotFound, "etcdserver: member not found")
        );
    });
}
