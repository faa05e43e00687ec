//! `raftkv repair-wal`: the documented, non-interactive repair of a damaged WAL.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use wal::{Entry, Marker, Metadata, Wal, WalConfig};

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    paths.sort();
    paths
}

fn repair_wal(data_dir: &Path, dry_run: bool) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_raftkv"));
    command.arg("repair-wal").arg("--data-dir").arg(data_dir);
    if dry_run {
        command.arg("--dry-run");
    }
    let output = command
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).expect("utf-8")
}

#[test]
fn repair_wal_says_what_it_drops_and_then_the_wal_opens() {
    let data = tempfile::tempdir().expect("tempdir");
    let wal_dir = data.path().join("wal");
    let metadata = Metadata {
        node_id: 1,
        cluster_id: 7,
    };
    let mut wal = Wal::create(&wal_dir, metadata, WalConfig::default()).expect("create");
    let entries: Vec<Entry> = (1..=4)
        .map(|index| Entry {
            index,
            term: 1,
            payload: vec![0x5A; 40],
        })
        .collect();
    wal.save(Some(b"hard state"), &entries[..3]).expect("save");
    wal.save(None, &entries[3..]).expect("save");
    wal.close().expect("close");

    let victim = segments(&wal_dir).pop().expect("segment");
    let mut bytes = fs::read(&victim).expect("read");
    let last = bytes.iter().rposition(|&b| b != 0).expect("data");
    bytes[last] ^= 0x01; // inside entry 4, the last record
    fs::write(&victim, &bytes).expect("write");
    assert!(Wal::open(&wal_dir, Marker::ZERO, WalConfig::default()).is_err());

    let dry = repair_wal(data.path(), true);
    assert!(dry.contains("would drop"), "{dry}");
    assert!(dry.contains("entry 4 (term 1)"), "{dry}");
    assert!(dry.contains("dry run: nothing was changed"), "{dry}");
    assert_eq!(fs::read(&victim).expect("read"), bytes);

    let done = repair_wal(data.path(), false);
    assert!(
        done.contains(&format!("dropped {}", victim.display())),
        "{done}"
    );
    assert!(done.contains("entry 4 (term 1)"), "{done}");
    let (wal, rec) = Wal::open(&wal_dir, Marker::ZERO, WalConfig::default()).expect("opens");
    assert_eq!(rec.entries, entries[..3]);
    wal.close().expect("close");

    assert!(repair_wal(data.path(), false).contains("nothing to repair"));
}
