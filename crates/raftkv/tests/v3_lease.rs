//! Leases across a leader change, with real processes: etcd #15247 (an old
//! leader stalled past the TTL revokes nothing while clients keep the lease
//! alive through the new leader) and #17642 (TimeToLive stays sane while
//! the leadership moves).

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, FAST};
use etcdproto::etcdserverpb as pb;
use pb::kv_client::KvClient;
use pb::lease_client::LeaseClient;
use tonic::transport::Channel;

async fn channel(url: &str) -> Channel {
    Channel::from_shared(url.to_string())
        .expect("url")
        .connect()
        .await
        .expect("connect")
}

/// One keep-alive on a fresh stream, given up after a second as a client
/// does (a keep-alive forwarded to a stalled leader hangs); the TTL
/// answered, or the error.
async fn keep_alive(lease: &mut LeaseClient<Channel>, id: i64) -> Result<i64, tonic::Status> {
    let exchange = async {
        let requests = tonic::codegen::tokio_stream::iter(vec![pb::LeaseKeepAliveRequest { id }]);
        let mut answers = lease.lease_keep_alive(requests).await?.into_inner();
        let answer = answers
            .message()
            .await?
            .ok_or_else(|| tonic::Status::unknown("stream ended"))?;
        Ok(answer.ttl)
    };
    tokio::time::timeout(Duration::from_secs(1), exchange)
        .await
        .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("keep-alive")))
}

fn signal(cluster: &Cluster, id: u64, signal: &str) {
    let pid = cluster.pid(id).expect("running node");
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {signal} {pid}");
}

/// The end-to-end scenario of the bug. With raft-rs, a proposal the
/// resumed old leader makes in its stale term is also discarded by Raft's
/// term rules, so this test passes even without the lessor's leadership
/// confirmation (checked: it does); the confirmation itself is what
/// `kvstore`'s `etcd_15247_a_stalled_leader_that_cannot_confirm_revokes_nothing`
/// proves, and that test fails without it.
#[test]
fn etcd_15247_a_stalled_old_leader_revokes_nothing_while_clients_keep_alive_through_the_new_one() {
    let cluster = Cluster::start(3, FAST);
    let old_leader = cluster.leader();
    let survivor = (1..=3).find(|id| *id != old_leader).expect("a follower");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let survivor_channel = channel(&cluster.url(survivor, "")).await;
        let mut lease = LeaseClient::new(survivor_channel.clone());
        let mut kv = KvClient::new(survivor_channel);
        let ttl_s = 3;
        lease
            .lease_grant(pb::LeaseGrantRequest { id: 77, ttl: ttl_s })
            .await
            .expect("grant");
        kv.put(pb::PutRequest {
            key: b"held".to_vec(),
            value: b"yes".to_vec(),
            lease: 77,
            ..Default::default()
        })
        .await
        .expect("put");
        // The old leader tracks the lease (the keep-alive is forwarded to it).
        assert_eq!(keep_alive(&mut lease, 77).await.expect("keep-alive"), ttl_s);

        // Stall the leader well past the TTL while the client keeps the
        // lease alive through whoever leads now.
        signal(&cluster, old_leader, "-STOP");
        let stalled_until = Instant::now() + Duration::from_secs(3 * ttl_s as u64);
        let mut renewed_by_new_leader = 0;
        while Instant::now() < stalled_until {
            if let Ok(ttl) = keep_alive(&mut lease, 77).await {
                assert_eq!(ttl, ttl_s, "the lease was never let expire");
                renewed_by_new_leader += 1;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        assert!(
            renewed_by_new_leader > 0,
            "no keep-alive reached a new leader"
        );
        // Resume it: its deadlines are long past, but it cannot confirm
        // that it still leads, so it must revoke nothing.
        signal(&cluster, old_leader, "-CONT");
        let watch_until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < watch_until {
            let _ = keep_alive(&mut lease, 77).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let held = kv
            .range(pb::RangeRequest {
                key: b"held".to_vec(),
                ..Default::default()
            })
            .await
            .expect("range")
            .into_inner();
        assert_eq!(held.kvs.len(), 1, "the kept-alive key was revoked");
        let ttl = lease
            .lease_time_to_live(pb::LeaseTimeToLiveRequest { id: 77, keys: true })
            .await
            .expect("time to live")
            .into_inner();
        assert_eq!(ttl.granted_ttl, ttl_s);
        // etcd #17642: during and after the change, within [0, TTL].
        assert!((0..=ttl_s).contains(&ttl.ttl), "{ttl:?}");
        assert_eq!(ttl.keys, vec![b"held".to_vec()]);
    });
}

/// etcd #17642: TimeToLive asked of every member while the leadership
/// moves (the leader is stopped) never answers more than the granted TTL.
#[test]
fn etcd_17642_time_to_live_is_sane_during_a_leader_change() {
    let mut cluster = Cluster::start(3, FAST);
    let old_leader = cluster.leader();
    let others: Vec<u64> = (1..=3).filter(|id| *id != old_leader).collect();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let mut leases = Vec::new();
        for id in &others {
            leases.push(LeaseClient::new(channel(&cluster.url(*id, "")).await));
        }
        leases[0]
            .lease_grant(pb::LeaseGrantRequest { id: 5, ttl: 30 })
            .await
            .expect("grant");
        cluster.kill(old_leader);
        let until = Instant::now() + Duration::from_secs(4);
        let mut answered = 0;
        while Instant::now() < until {
            for lease in &mut leases {
                if let Ok(ttl) = lease
                    .lease_time_to_live(pb::LeaseTimeToLiveRequest { id: 5, keys: false })
                    .await
                {
                    let ttl = ttl.into_inner();
                    assert!((0..=30).contains(&ttl.ttl), "{ttl:?}");
                    answered += 1;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(answered > 0, "no TimeToLive answered during the change");
    });
}
