//! Backups: a member's replicated state as one file, and what a file holds.
//!
//! ```text
//! magic        4 bytes   b"RKVB"
//! version      u32 LE    1
//! state_bytes  u64 LE
//! state        the snapshot format of `crate::snapshot` (its own magic,
//!              version, sections and CRC-32)
//! padding      zero bytes, so that everything so far is a multiple of 512
//! sha256       32 bytes  SHA-256 of every byte before it
//! ```
//!
//! The state is taken from one frozen copy of the keyspace, so a backup is
//! consistent: every key, every retained revision and every lease as of one
//! applied revision. It carries an *empty* dedup window: request ids of the
//! cluster it came from mean nothing to the cluster restored from it.
//!
//! The padding and the SHA-256 trailer are etcd's framing of a snapshot
//! stream (a page-aligned file plus its digest): `etcdctl snapshot save`
//! refuses a stream whose length is not a multiple of 512 plus 32. Restore
//! checks the digest end to end, then the state's own checksum and bounds.
//!
//! `Maintenance.Snapshot` streams [`KvStore::backup`]; `raftkv snapshot
//! restore` checks a file with [`inspect_backup`] before it builds a data
//! directory from it, and `raftkv snapshot status` prints the
//! [`BackupSummary`].

use sha2::{Digest, Sha256};

use crate::dedup::DedupWindow;
use crate::mvcc::Keyspace;
use crate::snapshot;
use crate::store::KvStore;

/// A file that is not a backup this build can restore, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid raftkv snapshot: {0}")]
pub struct InvalidBackup(pub String);

/// What a backup holds, as `raftkv snapshot status` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    /// Snapshot format version of the state inside the file.
    pub format_version: u32,
    /// The keyspace's revision.
    pub revision: i64,
    /// Its compacted revision (`-1`: never compacted).
    pub compact_revision: i64,
    /// Keys that exist at `revision`.
    pub keys: u64,
    /// Retained versions (puts and tombstones).
    pub retained_revisions: u64,
    /// Granted leases.
    pub leases: u64,
    /// The file's size.
    pub total_bytes: u64,
    /// `Maintenance.HashKV` of the keyspace at `revision`: a cluster restored
    /// from the file answers the same hash at that revision.
    pub hash: u32,
}

impl KvStore {
    /// This member's replicated state (keys, history, leases and alarms) as a
    /// backup file's bytes, from one frozen copy of the keyspace (no read
    /// barrier: what this member has applied). Encoding is O(size); call it
    /// off the async threads for a large keyspace.
    pub fn backup(&self) -> Vec<u8> {
        encode_backup(&self.keyspace())
    }
}

/// First four bytes of a backup file.
pub const BACKUP_MAGIC: [u8; 4] = *b"RKVB";
/// The backup framing version this build writes and reads.
pub const BACKUP_VERSION: u32 = 1;
/// The state and its header are padded to a multiple of this.
const BACKUP_ALIGN_BYTES: usize = 512;
const DIGEST_BYTES: usize = 32;
const BACKUP_HEADER_BYTES: usize = 4 + 4 + 8;

/// Encodes `keyspace` as a backup file's bytes.
pub fn encode_backup(keyspace: &Keyspace) -> Vec<u8> {
    let state = snapshot::encode(keyspace, &DedupWindow::new());
    let unpadded = BACKUP_HEADER_BYTES + state.len();
    let padded = unpadded.div_ceil(BACKUP_ALIGN_BYTES) * BACKUP_ALIGN_BYTES;
    let mut out = Vec::with_capacity(padded + DIGEST_BYTES);
    out.extend_from_slice(&BACKUP_MAGIC);
    out.extend_from_slice(&BACKUP_VERSION.to_le_bytes());
    out.extend_from_slice(&(state.len() as u64).to_le_bytes());
    out.extend_from_slice(&state);
    out.resize(padded, 0);
    let digest = Sha256::digest(&out);
    out.extend_from_slice(&digest);
    out
}

/// The state inside a backup's framing, after checking the framing.
fn unframe(bytes: &[u8]) -> Result<&[u8], InvalidBackup> {
    let bad = |why: String| Err(InvalidBackup(why));
    if bytes.len() < BACKUP_ALIGN_BYTES + DIGEST_BYTES
        || bytes.len() % BACKUP_ALIGN_BYTES != DIGEST_BYTES
    {
        return bad(format!(
            "{} bytes: a backup is a multiple of {BACKUP_ALIGN_BYTES} bytes plus a \
             {DIGEST_BYTES}-byte SHA-256 (an etcd bbolt snapshot is not a raftkv backup)",
            bytes.len()
        ));
    }
    let (body, digest) = bytes.split_at(bytes.len() - DIGEST_BYTES);
    if Sha256::digest(body).as_slice() != digest {
        return bad("SHA-256 mismatch: the file is damaged or incomplete".into());
    }
    if body[..4] != BACKUP_MAGIC {
        return bad(format!(
            "bad magic {:?}, expected {BACKUP_MAGIC:?}",
            &body[..4]
        ));
    }
    let version = u32::from_le_bytes([body[4], body[5], body[6], body[7]]);
    if version != BACKUP_VERSION {
        return bad(format!(
            "backup version {version}; this build reads {BACKUP_VERSION}"
        ));
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&body[8..16]);
    let state_bytes = u64::from_le_bytes(len);
    let rest = &body[BACKUP_HEADER_BYTES..];
    let Some(state_len) = usize::try_from(state_bytes)
        .ok()
        .filter(|n| *n <= rest.len())
    else {
        return bad(format!(
            "state of {state_bytes} bytes does not fit in {} bytes",
            rest.len()
        ));
    };
    let (state, padding) = rest.split_at(state_len);
    if padding.len() >= BACKUP_ALIGN_BYTES || padding.iter().any(|b| *b != 0) {
        return bad("the padding after the state is not the zero padding".into());
    }
    Ok(state)
}

/// Decodes and checks a backup (digest, framing, the state's checksum and
/// every bound), and returns its keyspace and summary. Never panics on any
/// input.
pub fn inspect_backup(bytes: &[u8]) -> Result<(Keyspace, BackupSummary), InvalidBackup> {
    let state = unframe(bytes)?;
    let restored = snapshot::decode(state).map_err(InvalidBackup)?;
    let keyspace = restored.keyspace;
    let format_version = state
        .get(4..8)
        .and_then(|v| v.try_into().ok())
        .map(u32::from_le_bytes)
        .unwrap_or_default();
    let status = keyspace.status();
    let hash = keyspace
        .hash_kv(0)
        .map_err(|e| InvalidBackup(format!("cannot hash the keyspace: {e}")))?
        .hash;
    let summary = BackupSummary {
        format_version,
        revision: status.revision,
        compact_revision: status.compact_revision,
        keys: status.keys,
        retained_revisions: status.retained_revisions,
        leases: keyspace.lease_count() as u64,
        total_bytes: bytes.len() as u64,
        hash,
    };
    Ok((keyspace, summary))
}

/// The state machine's bytes inside a checked backup: what a restored
/// member's bootstrap snapshot holds.
pub fn backup_state(bytes: &[u8]) -> Result<&[u8], InvalidBackup> {
    let state = unframe(bytes)?;
    snapshot::decode(state).map_err(InvalidBackup)?;
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcdproto::etcdserverpb as pb;

    fn keyspace_with(keys: usize) -> Keyspace {
        let mut keyspace = Keyspace::new();
        for i in 0..keys {
            keyspace
                .put(&pb::PutRequest {
                    key: format!("k{i}").into_bytes(),
                    value: vec![b'v'; i],
                    ..Default::default()
                })
                .unwrap();
        }
        keyspace
    }

    #[test]
    fn a_backup_round_trips_with_its_hash_and_counts() {
        let keyspace = keyspace_with(20);
        let bytes = encode_backup(&keyspace);
        let (restored, summary) = inspect_backup(&bytes).unwrap();
        assert_eq!(restored, keyspace);
        assert_eq!(summary.keys, 20);
        assert_eq!(summary.revision, keyspace.revision());
        assert_eq!(summary.total_bytes, bytes.len() as u64);
        assert_eq!(summary.hash, keyspace.hash_kv(0).unwrap().hash);
        assert_eq!(summary.format_version, snapshot::SNAPSHOT_VERSION);
        assert_eq!(
            bytes.len() % BACKUP_ALIGN_BYTES,
            DIGEST_BYTES,
            "etcdctl's check"
        );
        assert_eq!(
            backup_state(&bytes).unwrap(),
            &snapshot::encode(&keyspace, &DedupWindow::new())[..]
        );
    }

    /// A backup whose digest is right but whose framing lies is refused too
    /// (the digest only proves the bytes are the ones written).
    #[test]
    fn framing_that_lies_is_refused_even_with_a_right_digest() {
        let good = encode_backup(&keyspace_with(3));
        let reframe = |mut body: Vec<u8>| {
            body.truncate(good.len() - DIGEST_BYTES);
            let digest = Sha256::digest(&body);
            body.extend_from_slice(&digest);
            body
        };
        let mut long = good.clone();
        long[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        let mut short = good.clone();
        short[8..16].copy_from_slice(&1u64.to_le_bytes());
        let mut dirty = good.clone();
        let state_end =
            BACKUP_HEADER_BYTES + u64::from_le_bytes(good[8..16].try_into().unwrap()) as usize;
        dirty[state_end] = 1;
        let mut version = good.clone();
        version[4] = 9;
        for (name, bytes) in [
            ("long", long),
            ("short", short),
            ("dirty", dirty),
            ("version", version),
        ] {
            assert!(inspect_backup(&reframe(bytes)).is_err(), "{name}");
        }
        assert!(inspect_backup(&reframe(good.clone())).is_ok());
    }

    #[test]
    fn every_truncation_and_bit_flip_is_refused() {
        let bytes = encode_backup(&keyspace_with(5));
        for cut in 0..bytes.len() {
            assert!(inspect_backup(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for i in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x10;
            assert!(inspect_backup(&flipped).is_err(), "flip at {i}");
        }
    }
}
