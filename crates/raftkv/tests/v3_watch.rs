//! Watch with real processes: etcd #15271, a watcher on a follower that
//! installs a leader snapshot mid-stream sees every revision once, in
//! order, with no gap and no duplicate.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Cluster, FAST, WAIT};
use etcdproto::etcdserverpb as pb;
use pb::watch_client::WatchClient;
use pb::watch_request::RequestUnion;
use tonic::transport::Channel;

fn fast_snapshots() -> Vec<&'static str> {
    let mut args = FAST.to_vec();
    args.extend(["--snapshot-count", "40", "--catch-up-entries", "10"]);
    args
}

/// (mod revision, key) of every event a watch on `prefix` receives, in
/// order, appended to `seen`; `created` is set once the watch exists.
async fn watch_into(
    url: String,
    prefix: &'static str,
    seen: Arc<Mutex<Vec<(i64, String)>>>,
    created: Arc<Mutex<bool>>,
) {
    let channel = Channel::from_shared(url)
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut client = WatchClient::new(channel);
    let mut range_end = prefix.as_bytes().to_vec();
    if let Some(last) = range_end.last_mut() {
        *last += 1;
    }
    let create = pb::WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(pb::WatchCreateRequest {
            key: prefix.as_bytes().to_vec(),
            range_end,
            ..Default::default()
        })),
    };
    // The request side stays open for the whole test.
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    sender.send(create).await.expect("queue the create");
    let requests = tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(receiver);
    let mut responses = client.watch(requests).await.expect("watch").into_inner();
    while let Ok(Some(response)) = responses.message().await {
        if response.created {
            *created.lock().unwrap() = true;
        }
        let mut seen = seen.lock().unwrap();
        for event in response.events {
            let kv = event.kv.unwrap_or_default();
            seen.push((
                kv.mod_revision,
                String::from_utf8_lossy(&kv.key).into_owned(),
            ));
        }
    }
    drop(sender);
}

#[test]
fn etcd_15271_a_watch_on_a_follower_survives_its_snapshot_install_without_gap_or_duplicate() {
    let mut cluster = Cluster::start(3, &fast_snapshots());
    let leader = cluster.leader();
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let created = Arc::new(Mutex::new(false));
    runtime.spawn(watch_into(
        cluster.url(follower, ""),
        "/w",
        Arc::clone(&seen),
        Arc::clone(&created),
    ));
    let deadline = Instant::now() + WAIT;
    while !*created.lock().unwrap() {
        assert!(Instant::now() < deadline, "the watch was never created");
        std::thread::sleep(Duration::from_millis(20));
    }
    let total = 720;
    for i in 0..10 {
        cluster.put_ok(leader, &format!("/w{i:03}"), "before");
    }
    // The follower stops while the leader writes far past its catch-up
    // entries and what raft keeps in flight to a follower (256 appends),
    // and compacts its log: it comes back through a snapshot.
    cluster.pause(follower, true).expect("pause");
    for i in 10..710 {
        cluster.put_ok(leader, &format!("/w{i:03}"), "during");
    }
    cluster.pause(follower, false).expect("resume");
    for i in 710..total {
        cluster.put_ok(leader, &format!("/w{i:03}"), "after");
    }
    let deadline = Instant::now() + WAIT;
    while seen.lock().unwrap().len() < total {
        if Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let seen = seen.lock().unwrap().clone();
    let keys: Vec<String> = seen.iter().map(|(_, key)| key.clone()).collect();
    let expected: Vec<String> = (0..total).map(|i| format!("/w{i:03}")).collect();
    assert_eq!(keys, expected, "every put once, in order");
    let first = seen[0].0;
    let revisions: Vec<i64> = seen.iter().map(|(revision, _)| *revision).collect();
    assert_eq!(
        revisions,
        (first..first + total as i64).collect::<Vec<_>>(),
        "consecutive revisions"
    );
    assert!(
        cluster.log(follower).contains("installing snapshot"),
        "the follower caught up without a snapshot: {}",
        cluster.log(follower)
    );
}

#[test]
fn progress_notify_follows_the_interval_flag() {
    let mut args = FAST.to_vec();
    args.extend(["--watch-progress-notify-interval-ms", "100"]);
    let cluster = Cluster::start(1, &args);
    cluster.leader();
    cluster.put_ok(1, "/p", "v");
    let url = cluster.url(1, "");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (created, progress) = runtime.block_on(async move {
        let channel = Channel::from_shared(url)
            .expect("url")
            .connect()
            .await
            .expect("connect");
        let mut client = WatchClient::new(channel);
        let create = pb::WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(pb::WatchCreateRequest {
                key: b"/p".to_vec(),
                progress_notify: true,
                ..Default::default()
            })),
        };
        let (sender, receiver) = tokio::sync::mpsc::channel(1);
        sender.send(create).await.expect("queue the create");
        let requests = tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(receiver);
        let mut responses = client.watch(requests).await.expect("watch").into_inner();
        let created = responses.message().await.expect("created").expect("open");
        // Bounded: with the default interval this would wait 10 minutes.
        let progress = tokio::time::timeout(WAIT, responses.message())
            .await
            .expect("a progress notification within the bound")
            .expect("progress")
            .expect("open");
        drop(sender);
        (created, progress)
    });
    assert!(created.created);
    assert_eq!(progress.watch_id, created.watch_id);
    assert!(progress.events.is_empty() && !progress.canceled);
    assert_eq!(
        progress.header.unwrap().revision,
        created.header.unwrap().revision
    );
}
