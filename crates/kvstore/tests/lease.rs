//! The lessor's rules through the store: grant, attach, revoke, snapshot,
//! and expiry (leader only, confirmed, rate-limited, reset by a new leader),
//! on a manual clock and an in-process consensus.

use std::sync::Arc;
use std::time::Duration;

use etcdproto::etcdserverpb as pb;
use kvstore::testing::LocalConsensus;
use kvstore::{KvConfig, KvError, KvStore, ManualClock};
use raftnode::{Consensus, StateMachine};

const SECOND: Duration = Duration::from_secs(1);

struct Node {
    store: KvStore,
    consensus: Arc<LocalConsensus>,
    clock: Arc<ManualClock>,
}

fn node_with(config: KvConfig) -> Node {
    let clock = Arc::new(ManualClock::new());
    let (unattached, state_machine) = kvstore::new(config);
    let consensus = Arc::new(LocalConsensus::new(state_machine));
    let store = unattached
        .with_lease_clock(Arc::clone(&clock) as Arc<dyn kvstore::LeaseClock>)
        .attach(Arc::clone(&consensus) as Arc<dyn Consensus>);
    Node {
        store,
        consensus,
        clock,
    }
}

/// Election timeout 1 s: minimum TTL 2 s, a new leader adds 1 s.
fn node() -> Node {
    node_with(KvConfig {
        request_timeout_ms: 300,
        ..KvConfig::new(1)
    })
}

async fn grant(store: &KvStore, id: i64, ttl: i64) -> pb::LeaseGrantResponse {
    store
        .lease_grant(pb::LeaseGrantRequest { id, ttl })
        .await
        .expect("grant")
}

async fn put(store: &KvStore, key: &str, lease: i64) -> Result<pb::PutResponse, KvError> {
    store
        .put(pb::PutRequest {
            key: key.into(),
            value: b"v".to_vec(),
            lease,
            ..Default::default()
        })
        .await
}

fn exists(store: &KvStore, key: &str) -> bool {
    store.keyspace().get(key.as_bytes()).is_some()
}

async fn keep_alive(store: &KvStore, id: i64) -> Result<i64, KvError> {
    store
        .lease_keep_alive(pb::LeaseKeepAliveRequest { id })
        .await
        .map(|response| response.ttl)
}

async fn time_to_live(store: &KvStore, id: i64) -> Result<pb::LeaseTimeToLiveResponse, KvError> {
    store
        .lease_time_to_live(pb::LeaseTimeToLiveRequest { id, keys: true })
        .await
}

#[tokio::test]
async fn grant_raises_the_ttl_and_chooses_positive_unique_ids() {
    let node = node();
    let short = grant(&node.store, 0, 1).await;
    assert_eq!(short.ttl, 2, "raised to 1.5 election timeouts, rounded up");
    assert!(short.id > 0);
    let other = grant(&node.store, 0, 60).await;
    assert!(other.id > 0 && other.id != short.id);
    assert_eq!(grant(&node.store, 42, 60).await.id, 42, "the client's id");
    assert_eq!(
        node.store
            .lease_grant(pb::LeaseGrantRequest { id: 42, ttl: 60 })
            .await,
        Err(KvError::LeaseExists)
    );
    assert_eq!(
        node.store
            .lease_grant(pb::LeaseGrantRequest {
                id: 43,
                ttl: 9_000_000_001
            })
            .await,
        Err(KvError::LeaseTtlTooLarge)
    );
    let leases = node
        .store
        .lease_leases(pb::LeaseLeasesRequest {})
        .await
        .unwrap();
    assert_eq!(leases.leases.len(), 3);
    assert_eq!(
        node.store.keyspace_status().revision,
        1,
        "grants are no revision"
    );
}

#[tokio::test]
async fn put_attaches_time_to_live_lists_keys_and_revoke_deletes_them() {
    let node = node();
    grant(&node.store, 7, 30).await;
    assert_eq!(put(&node.store, "x", 99).await, Err(KvError::LeaseNotFound));
    put(&node.store, "b", 7).await.unwrap();
    put(&node.store, "a", 7).await.unwrap();
    let ttl = time_to_live(&node.store, 7).await.unwrap();
    assert_eq!(ttl.granted_ttl, 30);
    assert_eq!(ttl.keys, vec![b"a".to_vec(), b"b".to_vec()]);
    let revoked = node
        .store
        .lease_revoke(pb::LeaseRevokeRequest { id: 7 })
        .await
        .unwrap();
    assert_eq!(
        revoked.header.unwrap().revision,
        4,
        "both deletes in one revision"
    );
    assert!(!exists(&node.store, "a") && !exists(&node.store, "b"));
    assert_eq!(time_to_live(&node.store, 7).await.unwrap().ttl, -1);
    assert_eq!(
        keep_alive(&node.store, 7).await,
        Ok(0),
        "unknown lease: TTL 0"
    );
    assert_eq!(
        node.store
            .lease_revoke(pb::LeaseRevokeRequest { id: 7 })
            .await,
        Err(KvError::LeaseNotFound)
    );
}

#[tokio::test]
async fn leases_survive_a_snapshot_round_trip_exactly() {
    let node = node();
    grant(&node.store, 7, 30).await;
    grant(&node.store, 8, 40).await;
    put(&node.store, "a", 7).await.unwrap();
    put(&node.store, "b", 8).await.unwrap();
    put(&node.store, "c", 0).await.unwrap();
    let bytes = node.consensus.snapshot();
    let (_unattached, mut restored) = kvstore::new(KvConfig::new(2));
    restored.restore(10, &bytes).unwrap();
    assert_eq!(restored.keyspace(), node.store.keyspace());
    assert_eq!(restored.keyspace().lease_ttls(), vec![(7, 30), (8, 40)]);
    assert_eq!(
        restored.keyspace().lease_info(8).unwrap().keys,
        vec![b"b".to_vec()]
    );
    assert_eq!(restored.snapshot(), bytes, "canonical");
}

#[tokio::test]
async fn only_the_leader_expires_and_only_after_ttl() {
    let node = node();
    node.store.expire_leases().await.unwrap(); // promotes the lessor
    grant(&node.store, 7, 5).await;
    put(&node.store, "k", 7).await.unwrap();
    node.clock.advance(4 * SECOND);
    assert!(node.store.expire_leases().await.unwrap().is_empty());
    node.consensus.set_no_leader(true);
    node.clock.advance(60 * SECOND);
    assert!(
        node.store.expire_leases().await.unwrap().is_empty(),
        "a follower never expires"
    );
    assert!(exists(&node.store, "k"));
    assert_eq!(keep_alive(&node.store, 7).await, Err(KvError::NotLeader));
    node.consensus.set_no_leader(false);
    // Leader again: the demotion forgot the deadlines, so the promotion
    // gives the lease TTL + an election timeout from now.
    node.store.expire_leases().await.unwrap();
    node.clock.advance(5 * SECOND);
    assert!(node.store.expire_leases().await.unwrap().is_empty());
    node.clock.advance(SECOND + Duration::from_millis(10));
    assert_eq!(node.store.expire_leases().await.unwrap(), vec![7]);
    assert!(!exists(&node.store, "k"), "the key went with its lease");
}

#[tokio::test]
async fn keep_alive_renews_until_the_deadline_but_not_after_it() {
    let node = node();
    node.store.expire_leases().await.unwrap();
    grant(&node.store, 7, 5).await;
    put(&node.store, "k", 7).await.unwrap();
    for _ in 0..5 {
        node.clock.advance(4 * SECOND);
        assert_eq!(keep_alive(&node.store, 7).await, Ok(5));
        assert!(node.store.expire_leases().await.unwrap().is_empty());
    }
    node.clock.advance(6 * SECOND);
    // Expired but not yet revoked: answered as etcd does, not renewed.
    assert_eq!(keep_alive(&node.store, 7).await, Ok(0));
    assert_eq!(time_to_live(&node.store, 7).await.unwrap().ttl, 0);
    assert_eq!(node.store.expire_leases().await.unwrap(), vec![7]);
    assert!(!exists(&node.store, "k"));
}

#[tokio::test]
async fn expiry_revokes_are_rate_limited_per_check() {
    let node = node();
    node.store.expire_leases().await.unwrap();
    let total = kvstore::lessor::MAX_EXPIRY_REVOKES_PER_CHECK + 100;
    for id in 1..=total as i64 {
        grant(&node.store, id, 2).await;
    }
    node.clock.advance(3 * SECOND);
    let first = node.store.expire_leases().await.unwrap();
    assert_eq!(first.len(), kvstore::lessor::MAX_EXPIRY_REVOKES_PER_CHECK);
    let second = node.store.expire_leases().await.unwrap();
    assert_eq!(second.len(), 100);
    assert_eq!(node.store.keyspace().lease_count(), 0);
}

#[tokio::test]
async fn a_new_leader_term_resets_deadlines_to_ttl_plus_an_election_timeout() {
    let node = node();
    node.store.expire_leases().await.unwrap();
    grant(&node.store, 7, 5).await;
    node.clock.advance(4 * SECOND);
    node.consensus.set_term(2);
    assert!(node.store.expire_leases().await.unwrap().is_empty());
    node.clock.advance(5 * SECOND + Duration::from_millis(500));
    assert!(
        node.store.expire_leases().await.unwrap().is_empty(),
        "the old term's deadline (1 s left) is not kept"
    );
    node.clock.advance(SECOND);
    assert_eq!(node.store.expire_leases().await.unwrap(), vec![7]);
}

/// etcd #15247: a leader stalled past the TTL must not revoke on resuming
/// before it confirmed it still leads; here its read barrier cannot pass.
#[tokio::test]
async fn etcd_15247_a_stalled_leader_that_cannot_confirm_revokes_nothing() {
    let node = node();
    node.store.expire_leases().await.unwrap();
    grant(&node.store, 7, 5).await;
    put(&node.store, "k", 7).await.unwrap();
    node.clock.advance(60 * SECOND);
    node.consensus.set_stall_reads(true);
    assert!(matches!(
        node.store.expire_leases().await,
        Err(KvError::ReadTimeout { .. })
    ));
    assert!(matches!(
        keep_alive(&node.store, 7).await,
        Err(KvError::ReadTimeout { .. })
    ));
    assert!(
        exists(&node.store, "k"),
        "nothing revoked without confirmation"
    );
    assert_eq!(node.store.keyspace().lease_count(), 1);
    node.consensus.set_stall_reads(false);
    assert_eq!(node.store.expire_leases().await.unwrap(), vec![7]);
}

/// etcd #17642: TimeToLive during a leader change returned a huge value.
#[tokio::test]
async fn etcd_17642_time_to_live_stays_within_the_granted_ttl_across_leader_changes() {
    let node = node();
    grant(&node.store, 7, 5).await;
    // The first confirmed request promotes the lessor: deadline 5 s + 1 s
    // away, reported as the granted 5.
    assert_eq!(time_to_live(&node.store, 7).await.unwrap().ttl, 5);
    node.clock.advance(3 * SECOND);
    assert_eq!(time_to_live(&node.store, 7).await.unwrap().ttl, 3);
    node.consensus.set_term(2);
    // A new term: deadline now + 5 s + 1 s, reported as at most 5.
    let ttl = time_to_live(&node.store, 7).await.unwrap();
    assert_eq!((ttl.ttl, ttl.granted_ttl), (5, 5));
    node.consensus.set_no_leader(true);
    assert_eq!(
        time_to_live(&node.store, 7).await,
        Err(KvError::NotLeader),
        "a member without the deadlines does not guess"
    );
}

/// Found by the differential test: a lease revoked and granted again under
/// the same id between two expiry checks kept the first grant's deadline.
#[tokio::test]
async fn a_lease_id_granted_again_gets_its_new_ttl() {
    let node = node();
    node.store.expire_leases().await.unwrap();
    grant(&node.store, 5, 10).await;
    node.clock.advance(8 * SECOND);
    node.store
        .lease_revoke(pb::LeaseRevokeRequest { id: 5 })
        .await
        .unwrap();
    grant(&node.store, 5, 100).await;
    assert_eq!(time_to_live(&node.store, 5).await.unwrap().ttl, 100);
    node.clock.advance(20 * SECOND);
    assert!(node.store.expire_leases().await.unwrap().is_empty());
    assert_eq!(time_to_live(&node.store, 5).await.unwrap().ttl, 80);
}

/// A grant applied from another member's proposal (the log) reaches the
/// leader's lessor too, with its full TTL from then.
#[tokio::test]
async fn a_grant_from_the_log_is_tracked_by_the_leader() {
    let node = node();
    node.store.expire_leases().await.unwrap();
    let other = kvstore::RequestId {
        node_id: 2,
        boot_nonce: 9,
        seq: 1,
    };
    node.consensus
        .apply_payload(&kvstore::testing::encode_request(
            other,
            kvstore::testing::Request::LeaseGrant(pb::LeaseGrantRequest { id: 3, ttl: 4 }),
        ));
    node.clock.advance(3 * SECOND);
    assert_eq!(time_to_live(&node.store, 3).await.unwrap().ttl, 4);
    node.clock.advance(5 * SECOND);
    assert_eq!(node.store.expire_leases().await.unwrap(), vec![3]);
}
