//! Watch: events from the apply-fed hub, replay from history, compaction,
//! snapshot restore, slow consumers, and the etcd watch bugs raftkv must not
//! have (one test each, named after the issue).

use std::sync::Arc;

use etcdproto::etcdserverpb as pb;
use etcdproto::etcdserverpb::watch_create_request::FilterType;
use etcdproto::etcdserverpb::watch_request::RequestUnion;
use etcdproto::mvccpb::event::EventType;
use kvstore::testing::{encode_request, local_store, LocalConsensus, Request};
use kvstore::{KvConfig, KvStore, RequestId, WatchConfig, WatchStream};

const BUDGET_BYTES: usize = 1536 * 1024;

fn store_with(watch: WatchConfig) -> (KvStore, Arc<LocalConsensus>) {
    local_store(KvConfig {
        watch,
        ..KvConfig::new(1)
    })
}

fn store() -> (KvStore, Arc<LocalConsensus>) {
    store_with(WatchConfig::default())
}

/// A ring of `revisions` write revisions: watchers further behind read the
/// keyspace's history.
fn tiny_ring(revisions: usize) -> WatchConfig {
    WatchConfig {
        ring_max_revisions: revisions,
        ..WatchConfig::default()
    }
}

async fn put(store: &KvStore, key: &str, value: &str) -> i64 {
    store
        .put(pb::PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        })
        .await
        .expect("put")
        .header
        .expect("header")
        .revision
}

async fn delete(store: &KvStore, key: &str) -> i64 {
    store
        .delete_range(pb::DeleteRangeRequest {
            key: key.into(),
            ..Default::default()
        })
        .await
        .expect("delete")
        .header
        .expect("header")
        .revision
}

async fn compact(store: &KvStore, revision: i64) {
    store
        .compact(pb::CompactionRequest {
            revision,
            physical: false,
        })
        .await
        .expect("compact");
}

fn create(key: &str, range_end: &str, start_revision: i64) -> pb::WatchCreateRequest {
    pb::WatchCreateRequest {
        key: key.into(),
        range_end: range_end.into(),
        start_revision,
        ..Default::default()
    }
}

fn request(create: pb::WatchCreateRequest) -> pb::WatchRequest {
    pb::WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(create)),
    }
}

fn progress_request() -> pb::WatchRequest {
    pb::WatchRequest {
        request_union: Some(RequestUnion::ProgressRequest(pb::WatchProgressRequest {})),
    }
}

fn cancel_request(watch_id: i64) -> pb::WatchRequest {
    pb::WatchRequest {
        request_union: Some(RequestUnion::CancelRequest(pb::WatchCancelRequest {
            watch_id,
        })),
    }
}

/// Opens a watcher and returns its id (from the created response).
fn open(stream: &mut WatchStream, create: pb::WatchCreateRequest) -> i64 {
    stream.request(request(create));
    let created = stream.try_next().expect("created response");
    assert!(created.created, "{created:?}");
    assert!(!created.canceled, "{created:?}");
    created.watch_id
}

/// Every response owed now.
fn drain(stream: &mut WatchStream) -> Vec<pb::WatchResponse> {
    let mut out = Vec::new();
    while let Some(response) = stream.try_next() {
        out.push(response);
    }
    out
}

/// (revision, key, is delete, value) of every event, in order.
fn events(responses: &[pb::WatchResponse]) -> Vec<(i64, String, bool, String)> {
    responses
        .iter()
        .flat_map(|response| &response.events)
        .map(|event| {
            let kv = event.kv.as_ref().expect("kv");
            (
                kv.mod_revision,
                String::from_utf8_lossy(&kv.key).into_owned(),
                event.r#type == EventType::Delete as i32,
                String::from_utf8_lossy(&kv.value).into_owned(),
            )
        })
        .collect()
}

fn revisions(responses: &[pb::WatchResponse]) -> Vec<i64> {
    events(responses).iter().map(|event| event.0).collect()
}

/// Applies `request` as another node's committed entry (a follower's view).
fn apply(consensus: &LocalConsensus, seq: u64, request: Request) {
    let id = RequestId {
        node_id: 9,
        boot_nonce: 9,
        seq,
    };
    consensus.apply_payload(&encode_request(id, request));
}

fn put_request(key: &str, value: &str) -> Request {
    Request::Put(pb::PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    })
}

#[tokio::test]
async fn events_arrive_in_revision_order_exactly_once_a_txn_in_one_response() {
    let (store, _consensus) = store();
    let mut stream = store.watch(BUDGET_BYTES);
    let id = open(&mut stream, create("/a/", "/a0", 0));
    put(&store, "/a/1", "x").await; // 2
    put(&store, "/b/1", "outside").await; // 3
    store
        .txn(pb::TxnRequest {
            success: vec![
                pb::RequestOp {
                    request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                        key: b"/a/2".to_vec(),
                        value: b"y".to_vec(),
                        ..Default::default()
                    })),
                },
                pb::RequestOp {
                    request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                        key: b"/a/3".to_vec(),
                        value: b"z".to_vec(),
                        ..Default::default()
                    })),
                },
            ],
            ..Default::default()
        })
        .await
        .expect("txn"); // 4
    delete(&store, "/a/1").await; // 5
    let responses = drain(&mut stream);
    assert!(responses.iter().all(|response| response.watch_id == id));
    assert_eq!(
        events(&responses),
        vec![
            (2, "/a/1".into(), false, "x".into()),
            (4, "/a/2".into(), false, "y".into()),
            (4, "/a/3".into(), false, "z".into()),
            (5, "/a/1".into(), true, "".into()),
        ]
    );
    // Whatever the grouping, a revision never spans two responses.
    for revision in [2, 4, 5] {
        let holding = responses
            .iter()
            .filter(|response| {
                response
                    .events
                    .iter()
                    .any(|event| event.kv.as_ref().unwrap().mod_revision == revision)
            })
            .count();
        assert_eq!(holding, 1, "revision {revision} split");
    }
    assert!(drain(&mut stream).is_empty(), "nothing delivered twice");
    put(&store, "/a/4", "w").await; // 6
    assert_eq!(revisions(&drain(&mut stream)), vec![6]);
}

#[tokio::test]
async fn prev_kv_is_the_version_before_and_filters_drop_puts_or_deletes() {
    let (store, _consensus) = store();
    let mut stream = store.watch(BUDGET_BYTES);
    let all = open(
        &mut stream,
        pb::WatchCreateRequest {
            prev_kv: true,
            ..create("k", "", 0)
        },
    );
    let no_put = open(
        &mut stream,
        pb::WatchCreateRequest {
            filters: vec![FilterType::Noput as i32],
            ..create("k", "", 0)
        },
    );
    let no_delete = open(
        &mut stream,
        pb::WatchCreateRequest {
            filters: vec![FilterType::Nodelete as i32],
            ..create("k", "", 0)
        },
    );
    put(&store, "k", "v1").await; // 2
    put(&store, "k", "v2").await; // 3
    delete(&store, "k").await; // 4
    let responses = drain(&mut stream);
    let of = |id: i64| -> Vec<pb::WatchResponse> {
        responses
            .iter()
            .filter(|response| response.watch_id == id)
            .cloned()
            .collect()
    };
    let with_prev: Vec<Option<(i64, Vec<u8>)>> = of(all)
        .iter()
        .flat_map(|response| &response.events)
        .map(|event| {
            event
                .prev_kv
                .as_ref()
                .map(|prev| (prev.mod_revision, prev.value.clone()))
        })
        .collect();
    assert_eq!(
        with_prev,
        vec![None, Some((2, b"v1".to_vec())), Some((3, b"v2".to_vec()))]
    );
    assert_eq!(revisions(&of(no_put)), vec![4]);
    assert_eq!(revisions(&of(no_delete)), vec![2, 3]);
    assert!(of(no_put)
        .iter()
        .flat_map(|response| &response.events)
        .all(|event| event.prev_kv.is_none()));
}

#[tokio::test]
async fn an_old_start_revision_replays_from_the_ring_and_from_history_alike() {
    for ring in [WatchConfig::default(), tiny_ring(2)] {
        let (store, _consensus) = store_with(ring);
        for i in 0..10 {
            put(&store, &format!("k{}", i % 3), &format!("v{i}")).await; // 2..=11
        }
        delete(&store, "k1").await; // 12
        let mut stream = store.watch(BUDGET_BYTES);
        open(
            &mut stream,
            pb::WatchCreateRequest {
                prev_kv: true,
                ..create("k", "l", 5)
            },
        );
        let responses = drain(&mut stream);
        assert_eq!(revisions(&responses), (5..=12).collect::<Vec<_>>());
        let last = responses.last().unwrap().events.last().unwrap();
        assert_eq!(last.r#type, EventType::Delete as i32);
        assert_eq!(
            last.prev_kv.as_ref().map(|prev| prev.value.clone()),
            Some(b"v7".to_vec()),
            "prev_kv of the delete: k1's version at 9"
        );
        put(&store, "k2", "after").await; // 13
        assert_eq!(revisions(&drain(&mut stream)), vec![13]);
    }
}

#[tokio::test]
async fn a_start_below_the_compaction_is_cancelled_with_the_compact_revision() {
    let (store, _consensus) = store();
    for i in 0..5 {
        put(&store, "k", &format!("v{i}")).await; // 2..=6
    }
    compact(&store, 5).await;
    let mut stream = store.watch(BUDGET_BYTES);
    stream.request(request(create("k", "", 3)));
    let responses = drain(&mut stream);
    assert_eq!(responses.len(), 2, "{responses:?}");
    assert!(responses[0].created);
    assert!(responses[1].canceled);
    assert_eq!(responses[1].compact_revision, 5);
    assert_eq!(responses[1].watch_id, responses[0].watch_id);
    assert_eq!(stream.watcher_count(), 0);
    // At the compaction revision itself, history is still whole.
    let id = open(&mut stream, create("k", "", 5));
    let responses = drain(&mut stream);
    assert!(responses.iter().all(|response| response.watch_id == id));
    assert_eq!(revisions(&responses), vec![5, 6]);
}

#[tokio::test]
async fn prev_kv_is_left_out_when_its_revision_is_compacted() {
    let (store, _consensus) = store_with(tiny_ring(1));
    put(&store, "k", "v1").await; // 2
    put(&store, "k", "v2").await; // 3
    put(&store, "k", "v3").await; // 4
    compact(&store, 3).await;
    let mut stream = store.watch(BUDGET_BYTES);
    open(
        &mut stream,
        pb::WatchCreateRequest {
            prev_kv: true,
            ..create("k", "", 3)
        },
    );
    let responses = drain(&mut stream);
    let prevs: Vec<Option<Vec<u8>>> = responses
        .iter()
        .flat_map(|response| &response.events)
        .map(|event| event.prev_kv.as_ref().map(|prev| prev.value.clone()))
        .collect();
    assert_eq!(prevs, vec![None, Some(b"v2".to_vec())]);
}

#[tokio::test]
async fn ids_are_automatic_from_zero_or_chosen_and_a_duplicate_is_refused() {
    let (store, _consensus) = store();
    let mut stream = store.watch(BUDGET_BYTES);
    assert_eq!(open(&mut stream, create("a", "", 0)), 0);
    assert_eq!(
        open(
            &mut stream,
            pb::WatchCreateRequest {
                watch_id: 7,
                ..create("b", "", 0)
            }
        ),
        7
    );
    assert_eq!(open(&mut stream, create("c", "", 0)), 1);
    stream.request(request(pb::WatchCreateRequest {
        watch_id: 7,
        ..create("d", "", 0)
    }));
    let refused = stream.try_next().unwrap();
    assert!(refused.created && refused.canceled);
    assert_eq!(refused.watch_id, -1);
    assert_eq!(
        refused.cancel_reason,
        kvstore::watch::CANCEL_REASON_DUPLICATE_ID
    );
    stream.request(request(create("z", "a", 0)));
    let empty = stream.try_next().unwrap();
    assert!(empty.canceled);
    assert_eq!(
        empty.cancel_reason,
        kvstore::watch::CANCEL_REASON_EMPTY_RANGE
    );
    assert_eq!(stream.watcher_count(), 3);
    // Cancel: acknowledged once; the watcher gets nothing after it.
    stream.request(cancel_request(7));
    let cancelled = stream.try_next().unwrap();
    assert!(cancelled.canceled);
    assert_eq!(cancelled.watch_id, 7);
    stream.request(cancel_request(7));
    put(&store, "b", "1").await;
    put(&store, "a", "1").await;
    let responses = drain(&mut stream);
    assert_eq!(responses.len(), 1, "{responses:?}");
    assert_eq!(responses[0].watch_id, 0);
}

#[tokio::test]
async fn a_large_revision_is_fragmented_only_when_asked() {
    let (store, _consensus) = store();
    let budget_bytes = 4096;
    let mut stream = store.watch(budget_bytes);
    let whole = open(&mut stream, create("f/", "f0", 0));
    let split = open(
        &mut stream,
        pb::WatchCreateRequest {
            fragment: true,
            ..create("f/", "f0", 0)
        },
    );
    let value = "x".repeat(1000);
    let ops = (0..10)
        .map(|i| pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                key: format!("f/{i}").into_bytes(),
                value: value.clone().into_bytes(),
                ..Default::default()
            })),
        })
        .collect();
    store
        .txn(pb::TxnRequest {
            success: ops,
            ..Default::default()
        })
        .await
        .expect("txn");
    let responses = drain(&mut stream);
    let whole: Vec<_> = responses.iter().filter(|r| r.watch_id == whole).collect();
    assert_eq!(whole.len(), 1);
    assert_eq!(whole[0].events.len(), 10);
    assert!(!whole[0].fragment);
    let split: Vec<_> = responses.iter().filter(|r| r.watch_id == split).collect();
    assert!(split.len() > 1, "{} fragments", split.len());
    assert_eq!(split.iter().map(|r| r.events.len()).sum::<usize>(), 10);
    for (i, fragment) in split.iter().enumerate() {
        assert_eq!(fragment.fragment, i + 1 < split.len(), "fragment {i}");
        assert!(etcdproto::prost::Message::encoded_len(*fragment) <= budget_bytes);
    }
}

#[tokio::test]
async fn a_progress_request_is_answered_with_id_minus_one_and_the_revision() {
    let (store, _consensus) = store();
    let mut stream = store.watch(BUDGET_BYTES);
    stream.request(progress_request());
    let response = stream.try_next().unwrap();
    assert_eq!(response.watch_id, -1);
    assert_eq!(response.header.unwrap().revision, 1);
    open(&mut stream, create("k", "", 0));
    put(&store, "k", "v").await;
    put(&store, "other", "v").await;
    stream.request(progress_request());
    let responses = drain(&mut stream);
    assert_eq!(responses.len(), 2, "{responses:?}");
    assert_eq!(revisions(&responses[..1]), vec![2]);
    assert_eq!(responses[1].watch_id, -1);
    assert_eq!(responses[1].header.as_ref().unwrap().revision, 3);
    // A watcher waiting for a future revision is caught up; the answer is
    // still the current revision, not its start.
    open(&mut stream, create("f", "", 100));
    stream.request(progress_request());
    let response = stream.try_next().unwrap();
    assert_eq!(response.watch_id, -1);
    assert_eq!(response.header.unwrap().revision, 3);
}

#[tokio::test]
async fn progress_notify_reports_a_caught_up_watcher_periodically() {
    let (store, _consensus) = store_with(WatchConfig {
        progress_notify_interval_ms: 10,
        ..WatchConfig::default()
    });
    put(&store, "x", "1").await; // 2
    let mut stream = store.watch(BUDGET_BYTES);
    let id = open(
        &mut stream,
        pb::WatchCreateRequest {
            progress_notify: true,
            ..create("k", "", 0)
        },
    );
    let response = stream.next().await;
    assert_eq!(response.watch_id, id);
    assert!(response.events.is_empty());
    assert_eq!(response.header.unwrap().revision, 2);
}

#[tokio::test]
async fn a_slow_consumer_costs_bounded_memory_and_still_gets_every_event() {
    let ring = WatchConfig {
        ring_max_revisions: 16,
        ring_max_bytes: 4096,
        ..WatchConfig::default()
    };
    let (store, _consensus) = store_with(ring);
    let budget_bytes = 2048;
    let mut stream = store.watch(budget_bytes);
    open(&mut stream, create("k", "l", 0));
    for i in 0..500 {
        put(&store, &format!("k{}", i % 7), &format!("value-{i:04}")).await;
        let (revisions, bytes) = store.watch_ring_usage();
        assert!(revisions <= 16 && bytes <= 4096, "{revisions} {bytes}");
    }
    let mut seen = Vec::new();
    let mut responses = 0;
    while let Some(response) = stream.try_next() {
        // Queued responses are bounded by the budget (one revision over at most).
        assert!(stream.queued_bytes() <= 2 * budget_bytes + 256);
        seen.extend(revisions(std::slice::from_ref(&response)));
        responses += 1;
    }
    assert_eq!(seen, (2..=501).collect::<Vec<_>>());
    assert!(responses > 1, "the catch-up came a budget at a time");
}

#[tokio::test]
async fn thousands_of_watchers_on_one_stream_all_get_their_events() {
    let (store, _consensus) = store();
    let mut stream = store.watch(64 * 1024);
    for i in 0..2000 {
        open(&mut stream, create(&format!("w{i:04}"), "", 0));
    }
    for i in 0..2000 {
        put(&store, &format!("w{i:04}"), "v").await;
    }
    let mut count = 0;
    while let Some(response) = stream.try_next() {
        assert!(stream.queued_bytes() <= 2 * 64 * 1024 + 256);
        for event in &response.events {
            let key = &event.kv.as_ref().unwrap().key;
            assert_eq!(key, format!("w{:04}", response.watch_id).as_bytes());
            count += 1;
        }
    }
    assert_eq!(count, 2000);
}

#[tokio::test]
async fn a_restore_resyncs_watchers_without_gap_or_duplicate() {
    // The leader's state: revisions 2..=30.
    let (leader, leader_consensus) = store();
    for i in 0..29 {
        put(&leader, &format!("k{}", i % 4), &format!("v{i}")).await;
    }
    // A follower that applied up to revision 6, then installs the leader's
    // snapshot (it fell behind the leader's log).
    let (follower, follower_consensus) = store();
    let mut stream = follower.watch(BUDGET_BYTES);
    open(&mut stream, create("k", "l", 0));
    for i in 0..5 {
        apply(
            &follower_consensus,
            i + 1,
            put_request(&format!("k{}", i % 4), &format!("v{i}")),
        );
    }
    let mut seen = revisions(&drain(&mut stream)[..]);
    assert_eq!(seen, vec![2, 3, 4, 5, 6]);
    let snapshot = leader_consensus.snapshot();
    follower_consensus
        .restore(1000, &snapshot)
        .expect("restore");
    apply(&follower_consensus, 100, put_request("k9", "after")); // 31
    seen.extend(revisions(&drain(&mut stream)));
    assert_eq!(seen, (2..=31).collect::<Vec<_>>());
}

#[tokio::test]
async fn etcd_15271_watch_on_a_follower_sees_no_gap_or_duplicate_across_a_snapshot_install() {
    // Mid-read: the watcher has read some of what the follower applied
    // when the snapshot arrives; the rest and everything after come once.
    let (leader, leader_consensus) = store();
    for i in 0..40 {
        put(&leader, "key", &format!("v{i}")).await; // 2..=41
    }
    let (follower, follower_consensus) = store_with(tiny_ring(4));
    let mut stream = follower.watch(BUDGET_BYTES);
    open(&mut stream, create("key", "", 0));
    for i in 0..10 {
        apply(
            &follower_consensus,
            i + 1,
            put_request("key", &format!("v{i}")),
        ); // 2..=11
    }
    let first = stream.try_next().expect("events");
    let mut seen = revisions(std::slice::from_ref(&first));
    follower_consensus
        .restore(500, &leader_consensus.snapshot())
        .expect("restore");
    seen.extend(revisions(&drain(&mut stream)));
    assert_eq!(seen, (2..=41).collect::<Vec<_>>());
    let values: Vec<String> = events(&drain(&mut stream))
        .into_iter()
        .map(|event| event.3)
        .collect();
    assert!(values.is_empty());
}

#[tokio::test]
async fn etcd_18089_a_delete_at_exactly_the_compaction_revision_is_delivered() {
    for ring in [WatchConfig::default(), tiny_ring(1)] {
        let (store, _consensus) = store_with(ring);
        put(&store, "k", "v").await; // 2
        let deleted_at = delete(&store, "k").await; // 3
        put(&store, "other", "v").await; // 4
        compact(&store, deleted_at).await;
        let mut stream = store.watch(BUDGET_BYTES);
        open(&mut stream, create("k", "", deleted_at));
        let responses = drain(&mut stream);
        assert_eq!(
            events(&responses),
            vec![(deleted_at, "k".to_string(), true, String::new())]
        );
    }
}

#[tokio::test]
async fn etcd_15220_a_progress_notification_never_overtakes_pending_events() {
    let (store, _consensus) = store_with(tiny_ring(4));
    let mut stream = store.watch(512);
    open(&mut stream, create("k", "l", 0));
    for i in 0..50 {
        put(&store, &format!("k{}", i % 5), &"x".repeat(100)).await; // 2..=51
    }
    stream.request(progress_request());
    let responses = drain(&mut stream);
    let progress_at = responses
        .iter()
        .position(|response| response.watch_id == -1)
        .expect("the progress request is answered");
    assert_eq!(
        progress_at,
        responses.len() - 1,
        "answered after every event"
    );
    let progress = responses[progress_at].header.as_ref().unwrap().revision;
    let delivered = revisions(&responses[..progress_at]);
    assert_eq!(delivered, (2..=51).collect::<Vec<_>>());
    assert_eq!(progress, 51);
}

#[tokio::test]
async fn etcd_17529_a_starved_watcher_is_cancelled_as_compacted_never_left_with_a_gap() {
    let (store, _consensus) = store_with(tiny_ring(8));
    let mut stream = store.watch(1024);
    let id = open(&mut stream, create("k", "l", 0));
    for i in 0..20 {
        put(&store, &format!("k{}", i % 3), &"x".repeat(200)).await; // 2..=21
    }
    // The client reads one response, then stalls while the log moves on
    // and is compacted past what it has read.
    let first = stream.try_next().expect("events");
    let mut seen = revisions(std::slice::from_ref(&first));
    for i in 0..20 {
        put(&store, &format!("k{}", i % 3), "y").await; // 22..=41
    }
    compact(&store, 30).await;
    let rest = drain(&mut stream);
    let (cancel, events_before) = rest.split_last().expect("a cancel");
    seen.extend(revisions(events_before));
    assert!(cancel.canceled, "{cancel:?}");
    assert_eq!(cancel.watch_id, id);
    assert_eq!(cancel.compact_revision, 30);
    // What came is a gap-free prefix of the log, ending before the compaction.
    let expected: Vec<i64> = (2..2 + seen.len() as i64).collect();
    assert_eq!(seen, expected);
    assert!(seen.last().copied().unwrap_or(1) < 30);
    assert_eq!(stream.watcher_count(), 0);
}

#[tokio::test]
async fn etcd_20221_a_watch_on_a_future_revision_never_sees_an_older_event() {
    for ring in [WatchConfig::default(), tiny_ring(2)] {
        let (store, _consensus) = store_with(ring);
        put(&store, "k", "old").await; // 2
        let mut stream = store.watch(BUDGET_BYTES);
        open(&mut stream, create("k", "", 6));
        for i in 0..8 {
            put(&store, "k", &format!("v{i}")).await; // 3..=10
        }
        assert_eq!(revisions(&drain(&mut stream)), (6..=10).collect::<Vec<_>>());
    }
}

#[tokio::test]
async fn lease_revoke_deletes_are_delivered_as_delete_events() {
    let (store, _consensus) = store();
    let lease = store
        .lease_grant(pb::LeaseGrantRequest { ttl: 60, id: 5 })
        .await
        .expect("grant");
    store
        .put(pb::PutRequest {
            key: b"leased".to_vec(),
            value: b"v".to_vec(),
            lease: lease.id,
            ..Default::default()
        })
        .await
        .expect("put");
    let mut stream = store.watch(BUDGET_BYTES);
    open(&mut stream, create("leased", "", 0));
    store
        .lease_revoke(pb::LeaseRevokeRequest { id: lease.id })
        .await
        .expect("revoke");
    let seen = events(&drain(&mut stream));
    assert_eq!(seen, vec![(3, "leased".to_string(), true, String::new())]);
}
