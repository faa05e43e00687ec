//! Snapshot determinism, round trips and rejection of garbage.

use bytes::Bytes;
use kvstore::testing::{encode_put, local_store};
use kvstore::{
    KvConfig, KvStateMachine, ReadConsistency, RequestId, SNAPSHOT_MAGIC, SNAPSHOT_VERSION,
};
use raftnode::StateMachine;

/// A log with overwrites, binary keys, an empty value and undecodable
/// entries, proposed by several nodes.
fn log() -> Vec<Vec<u8>> {
    let mut entries = Vec::new();
    for i in 0..500u64 {
        let id = RequestId {
            node_id: i % 3 + 1,
            boot_nonce: 42,
            seq: i,
        };
        let key = Bytes::from(format!("/key-{}", i % 97));
        let value = Bytes::from(format!("value-{i}"));
        entries.push(encode_put(id, &key, &value));
    }
    let id = RequestId {
        node_id: 1,
        boot_nonce: 1,
        seq: 1,
    };
    entries.push(encode_put(
        id,
        &Bytes::from_static(&[0, 255, 10]),
        &Bytes::new(),
    ));
    entries.push(vec![0xff; 7]);
    entries
}

fn fed(node_id: u64, entries: &[Vec<u8>]) -> KvStateMachine {
    let (_unattached, mut state_machine) = kvstore::new(KvConfig::new(node_id));
    for (position, payload) in entries.iter().enumerate() {
        state_machine.apply(position as u64 + 1, payload);
    }
    state_machine
}

/// The raftexample-era snapshot format (a plain map), still read.
const MAP_VERSION: u32 = 1;

/// Builds a first-format (map) snapshot by hand, with a valid checksum, for
/// rejection tests; with another version number the body is what follows it.
fn framed(version: u32, entry_count: u64, body: &[u8]) -> Vec<u8> {
    let mut out = SNAPSHOT_MAGIC.to_vec();
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&entry_count.to_le_bytes());
    out.extend_from_slice(body);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn entry(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = (key.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(key);
    out.extend_from_slice(&(value.len() as u64).to_le_bytes());
    out.extend_from_slice(value);
    out
}

#[test]
fn same_log_gives_byte_identical_snapshots() {
    let entries = log();
    let first = fed(1, &entries);
    let second = fed(2, &entries);
    let snapshot = first.snapshot();
    assert_eq!(snapshot, second.snapshot());
    assert_eq!(first.len(), 98);
    assert_eq!(&snapshot[..4], &SNAPSHOT_MAGIC);
    // A different log gives different bytes.
    let third = fed(3, &entries[..entries.len() - 3]);
    assert_ne!(snapshot, third.snapshot());
}

#[tokio::test]
async fn snapshot_restore_round_trip() {
    let entries = log();
    let source = fed(1, &entries);
    let snapshot = source.snapshot();

    let (store, consensus) = local_store(KvConfig::new(2));
    store
        .put_value(
            Bytes::from_static(b"/only-here"),
            Bytes::from_static(b"gone"),
        )
        .await
        .unwrap();
    let index = entries.len() as u64;
    consensus.restore(index, &snapshot).unwrap();
    assert_eq!(store.applied_index(), index);
    assert_eq!(
        consensus.snapshot(),
        snapshot,
        "restored state re-encodes to the same bytes"
    );
    assert_eq!(
        store
            .get(b"/only-here", ReadConsistency::Serializable)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .get(b"/key-0", ReadConsistency::Linearizable)
            .await
            .unwrap(),
        Some(Bytes::from_static(b"value-485"))
    );
    assert_eq!(
        store
            .get(&[0, 255, 10], ReadConsistency::Serializable)
            .await
            .unwrap(),
        Some(Bytes::new())
    );
    // Applies continue after the snapshot index.
    store
        .put_value(Bytes::from_static(b"/after"), Bytes::from_static(b"x"))
        .await
        .unwrap();
    assert_eq!(store.applied_index(), index + 1);
}

#[test]
fn empty_map_snapshot_round_trips() {
    let (_unattached, empty) = kvstore::new(KvConfig::new(1));
    let snapshot = empty.snapshot();
    assert_eq!(snapshot[..4], SNAPSHOT_MAGIC);
    assert_eq!(snapshot[4..8], SNAPSHOT_VERSION.to_le_bytes());
    for data in [snapshot, framed(MAP_VERSION, 0, &[])] {
        let mut target = fed(2, &log());
        target.restore(9, &data).unwrap();
        assert!(target.is_empty());
        assert_eq!(target.keyspace().revision(), 1);
        assert_eq!(target.applied_index(), 9);
    }
}

#[test]
fn garbage_snapshots_are_rejected_without_changing_state() {
    let mut valid = fed(1, &log()).snapshot();
    let mut flipped = valid.clone();
    flipped[20] ^= 0x01;
    let truncated = valid[..valid.len() - 10].to_vec();
    let mut huge_length = 5u64.to_le_bytes().to_vec();
    huge_length.extend_from_slice(&u64::MAX.to_le_bytes());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("short", b"RKVS".to_vec()),
        (
            "random",
            (0..4096u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect(),
        ),
        ("flipped bit", flipped),
        ("truncated", truncated),
        ("bad magic", {
            let mut bad = framed(MAP_VERSION, 0, &[]);
            bad[0] = b'X';
            bad
        }),
        ("future version", framed(SNAPSHOT_VERSION + 1, 0, &[])),
        (
            "count too high",
            framed(MAP_VERSION, 3, &entry(b"/a", b"1")),
        ),
        ("count too low", framed(MAP_VERSION, 0, &entry(b"/a", b"1"))),
        (
            "unsorted keys",
            framed(
                MAP_VERSION,
                2,
                &[entry(b"/b", b"1"), entry(b"/a", b"2")].concat(),
            ),
        ),
        (
            "duplicate keys",
            framed(
                MAP_VERSION,
                2,
                &[entry(b"/a", b"1"), entry(b"/a", b"2")].concat(),
            ),
        ),
        ("huge length", framed(MAP_VERSION, 1, &huge_length)),
        ("huge count", framed(MAP_VERSION, u64::MAX, &[])),
    ];
    let mut target = fed(2, &log());
    let before = target.snapshot();
    for (name, bytes) in cases {
        let error = target.restore(77, &bytes).expect_err(name);
        assert_eq!(error.index, 77, "{name}");
        assert!(!error.reason.is_empty(), "{name}");
        assert_eq!(
            target.snapshot(),
            before,
            "{name}: a failed restore changed the state"
        );
        assert_eq!(target.applied_index(), log().len() as u64, "{name}");
    }
    // The valid one still restores.
    target.restore(600, &valid).unwrap();
    valid.clear();
}

/// The job raftnode runs off the loop encodes the map as it was when the
/// snapshot was captured, whatever is applied afterwards.
#[test]
fn the_snapshot_job_encodes_the_state_at_capture_time() {
    let mut machine = fed(1, &log());
    let expected = machine.snapshot();
    let job = StateMachine::snapshot(&mut machine);
    let next_index = machine.applied_index() + 1;
    machine.apply(
        next_index,
        &kvstore::testing::encode_put(
            kvstore::RequestId {
                node_id: 9,
                boot_nonce: 9,
                seq: 9,
            },
            &bytes::Bytes::from_static(b"/later"),
            &bytes::Bytes::from_static(b"x"),
        ),
    );
    assert_eq!(job(), expected);
    assert_ne!(
        machine.snapshot(),
        expected,
        "the later write is in the map"
    );
}

/// Snapshots written before the dedup window (version 1) still restore,
/// with an empty window; a newer version is refused with a clear error.
#[test]
fn version_1_snapshots_restore_and_newer_versions_are_named() {
    let v1 = framed(1, 2, &[entry(b"/a", b"1"), entry(b"/b", b"2")].concat());
    let mut target = fed(2, &log());
    target
        .restore(10, &v1)
        .expect("a version 1 snapshot restores");
    assert_eq!(target.len(), 2);
    assert_eq!(target.applied_index(), 10);
    assert_eq!(target.keyspace().get(b"/a").as_deref(), Some(&b"1"[..]));
    assert_eq!(target.keyspace().get(b"/b").as_deref(), Some(&b"2"[..]));
    // Re-encoded in the current (sectioned) version, which restores to the
    // same keyspace and encodes to the same bytes again.
    let reencoded = target.snapshot();
    assert_eq!(&reencoded[..4], &SNAPSHOT_MAGIC);
    assert_eq!(reencoded[4..8], SNAPSHOT_VERSION.to_le_bytes());
    let mut again = fed(3, &[]);
    again
        .restore(12, &reencoded)
        .expect("the re-encoded snapshot restores");
    assert_eq!(again.len(), 2);
    assert_eq!(again.keyspace().get(b"/b").as_deref(), Some(&b"2"[..]));
    assert_eq!(again.snapshot(), reencoded);
    let error = target
        .restore(11, &framed(SNAPSHOT_VERSION + 1, 0, &[]))
        .expect_err("future version");
    assert!(
        error.reason.contains("unsupported snapshot version 3"),
        "{}",
        error.reason
    );
}
