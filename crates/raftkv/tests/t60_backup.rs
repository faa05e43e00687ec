//! Backup and restore, end to end: `Maintenance.Snapshot` from a running
//! 3-node cluster (through gRPC, and through `etcdctl snapshot save`),
//! `raftkv snapshot status`, `raftkv snapshot restore` into a *new* 3-node
//! cluster on other ports, and every key, the revision, the hash and the
//! leases read back there. Damaged files and occupied data directories are
//! refused without building anything.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::etcd::find_tool;
use common::{Cluster, FAST};
use etcdproto::etcdserverpb as pb;
use pb::kv_client::KvClient;
use pb::lease_client::LeaseClient;
use pb::maintenance_client::MaintenanceClient;
use tonic::transport::Channel;

const KEYS: usize = 300;

async fn channel(url: &str) -> Channel {
    Channel::from_shared(url.to_string())
        .expect("url")
        .connect()
        .await
        .expect("connect")
}

fn raftkv(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_raftkv"))
        .args(args)
        .env("RUST_LOG_STYLE", "never")
        .output()
        .expect("run raftkv")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Writes keys (some overwritten, some deleted, one on a lease) through
/// node `id`; returns the lease id.
async fn write_data(url: &str) -> i64 {
    let channel = channel(url).await;
    let mut kv = KvClient::new(channel.clone());
    for i in 0..KEYS {
        kv.put(pb::PutRequest {
            key: format!("/backup/{i:04}").into_bytes(),
            value: format!("value-{i}").into_bytes(),
            ..Default::default()
        })
        .await
        .expect("put");
    }
    for i in (0..KEYS).step_by(10) {
        kv.put(pb::PutRequest {
            key: format!("/backup/{i:04}").into_bytes(),
            value: format!("second-{i}").into_bytes(),
            ..Default::default()
        })
        .await
        .expect("overwrite");
    }
    kv.delete_range(pb::DeleteRangeRequest {
        key: b"/backup/0001".to_vec(),
        ..Default::default()
    })
    .await
    .expect("delete");
    let lease = LeaseClient::new(channel)
        .lease_grant(pb::LeaseGrantRequest { id: 0, ttl: 3600 })
        .await
        .expect("grant")
        .into_inner()
        .id;
    kv.put(pb::PutRequest {
        key: b"/backup/leased".to_vec(),
        value: b"held".to_vec(),
        lease,
        ..Default::default()
    })
    .await
    .expect("put with lease");
    lease
}

/// The whole `/backup/` range and the hash at its revision, linearizably.
async fn read_all(url: &str) -> (pb::RangeResponse, u32) {
    let channel = channel(url).await;
    let range = KvClient::new(channel.clone())
        .range(pb::RangeRequest {
            key: b"/backup/".to_vec(),
            range_end: b"/backup0".to_vec(),
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    let revision = range.header.as_ref().expect("header").revision;
    let hash = MaintenanceClient::new(channel)
        .hash_kv(pb::HashKvRequest { revision })
        .await
        .expect("hashkv")
        .into_inner()
        .hash;
    (range, hash)
}

async fn save_snapshot(url: &str, path: &Path) -> Vec<pb::SnapshotResponse> {
    let mut stream = MaintenanceClient::new(channel(url).await)
        .snapshot(pb::SnapshotRequest {})
        .await
        .expect("snapshot")
        .into_inner();
    let mut messages = Vec::new();
    while let Some(message) = stream.message().await.expect("snapshot stream") {
        messages.push(message);
    }
    let bytes: Vec<u8> = messages.iter().flat_map(|m| m.blob.clone()).collect();
    std::fs::write(path, bytes).expect("write the snapshot file");
    messages
}

#[test]
fn a_cluster_restored_from_a_snapshot_serves_every_key_revision_hash_and_lease() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("backup.snap");

    let old = Cluster::start(3, FAST);
    let leader = old.leader();
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let lease = runtime.block_on(write_data(&old.url(leader, "")));
    let (before, hash_before) = runtime.block_on(read_all(&old.url(leader, "")));
    let revision = before.header.as_ref().expect("header").revision;
    // The follower has applied everything the read saw before it is saved.
    old.wait_applied(follower, old.status(leader).expect("status").applied_index);
    let messages = runtime.block_on(save_snapshot(&old.url(follower, ""), &file));
    assert!(!messages.is_empty());
    assert_eq!(messages.last().map(|m| m.remaining_bytes), Some(0));
    assert_eq!(
        messages[0].header.as_ref().map(|h| h.revision),
        Some(revision),
        "the stream's header names the snapshot's revision"
    );
    drop(old);

    let status = raftkv(&["snapshot", "status", "-w", "json"])
        .status
        .success();
    assert!(!status, "status without a file must fail");
    let output = raftkv(&["snapshot", "status", "-w", "json", file.to_str().unwrap()]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(summary["revision"], revision);
    assert_eq!(summary["totalKey"], before.kvs.len() as u64);
    assert_eq!(summary["hash"], hash_before);
    assert_eq!(summary["leases"], 1);

    // A new cluster on other ports, every member restored from the file.
    let mut new = Cluster::new(FAST);
    for id in 1..=3 {
        new.define_node(id, &["--cluster-token", "restored"]);
    }
    let cluster_flag = new.cluster_flag();
    for id in 1..=3 {
        let data_dir = new.node(id).expect("node").data_dir.clone();
        let output = raftkv(&[
            "snapshot",
            "restore",
            file.to_str().unwrap(),
            "--id",
            &id.to_string(),
            "--cluster",
            &cluster_flag,
            "--cluster-token",
            "restored",
            "--data-dir",
            data_dir.to_str().unwrap(),
        ]);
        let stdout = text(&output.stdout);
        assert!(output.status.success(), "{stdout}{}", text(&output.stderr));
        assert!(
            stdout.contains("restored; start the member with"),
            "{stdout}"
        );
        assert!(stdout.contains(&format!("revision {revision}")), "{stdout}");
    }
    for id in 1..=3 {
        new.spawn(id, false);
    }
    let new_leader = new.leader();
    for id in 1..=3 {
        let (after, hash_after) = runtime.block_on(read_all(&new.url(id, "")));
        assert_eq!(after.kvs, before.kvs, "member {id}: the keys differ");
        assert_eq!(after.count, before.count);
        assert_eq!(after.header.expect("header").revision, revision);
        assert_eq!(hash_after, hash_before, "member {id}: the hash differs");
    }
    runtime.block_on(async {
        let channel = channel(&new.url(new_leader, "")).await;
        let ttl = LeaseClient::new(channel.clone())
            .lease_time_to_live(pb::LeaseTimeToLiveRequest {
                id: lease,
                keys: true,
            })
            .await
            .expect("time to live")
            .into_inner();
        assert!(ttl.ttl > 0, "the lease survived the restore: {ttl:?}");
        assert_eq!(ttl.keys, vec![b"/backup/leased".to_vec()]);
        // The restored cluster takes writes after the restored revision.
        let put = KvClient::new(channel)
            .put(pb::PutRequest {
                key: b"/after".to_vec(),
                value: b"restore".to_vec(),
                ..Default::default()
            })
            .await
            .expect("a write to the restored cluster")
            .into_inner();
        assert_eq!(put.header.expect("header").revision, revision + 1);
    });

    // Restoring into a member's data directory that is in use is refused.
    let busy = new.node(1).expect("node").data_dir.clone();
    let output = raftkv(&[
        "snapshot",
        "restore",
        file.to_str().unwrap(),
        "--id",
        "1",
        "--cluster",
        &cluster_flag,
        "--data-dir",
        busy.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("already exists and is not empty"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn damaged_files_and_bad_flags_are_refused_and_build_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = kvstore::encode_backup(&kvstore::Keyspace::new());
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 1;
    let cases: [(&str, Vec<u8>, &str); 3] = [
        ("empty", Vec::new(), "a backup is a multiple of 512 bytes"),
        ("flipped", flipped, "SHA-256 mismatch"),
        ("etcd-bbolt", vec![0u8; 4096], "not a raftkv backup"),
    ];
    for (name, bytes, message) in cases {
        let file = dir.path().join(name);
        std::fs::write(&file, bytes).expect("write");
        let output = raftkv(&["snapshot", "status", file.to_str().unwrap()]);
        assert!(!output.status.success(), "{name}");
        assert!(
            text(&output.stderr).contains(message),
            "{name}: {}",
            text(&output.stderr)
        );
        let data_dir = dir.path().join(format!("data-{name}"));
        let output = raftkv(&[
            "snapshot",
            "restore",
            file.to_str().unwrap(),
            "--id",
            "1",
            "--cluster",
            "http://127.0.0.1:1",
            "--data-dir",
            data_dir.to_str().unwrap(),
        ]);
        assert!(!output.status.success(), "{name}");
        assert!(text(&output.stderr).contains(message), "{name}");
        assert!(!data_dir.exists(), "{name}: a data directory was built");
    }
    let file = dir.path().join("good");
    std::fs::write(&file, &good).expect("write");
    for (args, message) in [
        (
            vec!["--id", "4", "--cluster", "http://127.0.0.1:1"],
            "out of range",
        ),
        (
            vec!["--id", "1", "--cluster", "127.0.0.1:1"],
            "must start with http://",
        ),
    ] {
        let data_dir = dir.path().join("data-flags");
        let mut all = vec!["snapshot", "restore", file.to_str().unwrap()];
        all.extend(args);
        all.extend(["--data-dir", data_dir.to_str().unwrap()]);
        let output = raftkv(&all);
        assert!(!output.status.success());
        assert!(
            text(&output.stderr).contains(message),
            "{}",
            text(&output.stderr)
        );
        assert!(!data_dir.exists());
    }
}

/// `etcdctl snapshot save` against raftkv writes a file `raftkv snapshot
/// status` reads, with the cluster's revision and hash; `etcdctl defrag`
/// succeeds.
#[test]
fn etcdctl_snapshot_save_writes_a_file_raftkv_restores() {
    let Some(etcdctl) = find_tool(
        "etcdctl",
        "etcdctl_snapshot_save_writes_a_file_raftkv_restores",
    ) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("etcdctl.snap");
    let cluster = Cluster::start(3, FAST);
    let leader = cluster.leader();
    runtime.block_on(write_data(&cluster.url(leader, "")));
    let (before, hash) = runtime.block_on(read_all(&cluster.url(leader, "")));
    let output = Command::new(etcdctl)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", cluster.url(leader, "")))
        .args(["--dial-timeout=10s", "--command-timeout=20s"])
        .args(["snapshot", "save", file.to_str().unwrap()])
        .output()
        .expect("etcdctl");
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", text(&output.stderr));
    assert!(stdout.contains("Snapshot saved at"), "{stdout}");
    let output = raftkv(&["snapshot", "status", "-w", "json", file.to_str().unwrap()]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(summary["revision"], before.header.expect("header").revision);
    assert_eq!(summary["hash"], hash);
    let table = raftkv(&["snapshot", "status", "-w", "table", file.to_str().unwrap()]);
    assert!(text(&table.stdout).contains("TOTAL KEYS"));

    // Defragment is an honest no-op that succeeds, so scripts that run it
    // work. etcdctl 3.4 dials defrag per endpoint with the whole URL as the
    // HTTP/2 :authority, which raftkv's HTTP/2 stack refuses: host:port.
    let endpoint = cluster.url(leader, "");
    let output = Command::new(find_tool("etcdctl", "defrag").expect("found above"))
        .env("ETCDCTL_API", "3")
        .arg(format!(
            "--endpoints={}",
            endpoint.trim_start_matches("http://")
        ))
        .arg("defrag")
        .output()
        .expect("etcdctl defrag");
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", text(&output.stderr));
    assert!(
        stdout.contains("Finished defragmenting etcd member"),
        "{stdout}"
    );
}
