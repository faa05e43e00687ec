//! The replicated command format: what `put` proposes and `apply` decodes.
//!
//! Commands are protobuf messages (prost derive, no `.proto` file) so that
//! the format can grow new fields and operations compatibly. Field tags are
//! part of the on-log format and must never be reused:
//!
//! ```text
//! CommandPb   1: RequestIdPb { 1: node_id, 2: boot_nonce, 3: seq }
//!             oneof op:
//!               2: legacy put { 1: key, 2: value }   (read, never written)
//!               3: etcdserverpb.PutRequest
//!               4: etcdserverpb.DeleteRangeRequest
//!               5: etcdserverpb.TxnRequest
//!               6: etcdserverpb.CompactionRequest
//!               7: etcdserverpb.AlarmRequest
//!               8: etcdserverpb.LeaseGrantRequest  (id chosen by the proposer)
//!               9: etcdserverpb.LeaseRevokeRequest (a client's, or the leader's expiry)
//! ```

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use etcdproto::etcdserverpb as pb;
use prost::Message;

/// Identifies one write request across the whole cluster and its history.
///
/// `node_id` separates nodes; `boot_nonce` is drawn at random each time a
/// state machine is created, so that an entry proposed by an earlier
/// incarnation of the same node (and applied late) never matches a request
/// of the current one; `seq` counts requests within one incarnation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId {
    /// Node that proposed the command.
    pub node_id: u64,
    /// Random per-incarnation nonce of that node.
    pub boot_nonce: u64,
    /// Request counter within the incarnation (starts at 1).
    pub seq: u64,
}

/// Wire form of [`RequestId`].
#[derive(Clone, PartialEq, Message)]
pub(crate) struct RequestIdPb {
    #[prost(uint64, tag = "1")]
    pub node_id: u64,
    #[prost(uint64, tag = "2")]
    pub boot_nonce: u64,
    #[prost(uint64, tag = "3")]
    pub seq: u64,
}

/// raftexample's put of the first format: still decoded (as a plain etcd
/// Put) so logs written before the keyspace replay unchanged; never written.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct LegacyPutPb {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// The operation a command carries: an etcd request, as etcd's
/// `InternalRaftRequest` carries it.
#[derive(Clone, PartialEq, prost::Oneof)]
pub(crate) enum Op {
    /// raftexample's first-format put (read only).
    #[prost(message, tag = "2")]
    LegacyPut(LegacyPutPb),
    /// etcd `Put`.
    #[prost(message, tag = "3")]
    Put(pb::PutRequest),
    /// etcd `DeleteRange`.
    #[prost(message, tag = "4")]
    DeleteRange(pb::DeleteRangeRequest),
    /// etcd `Txn` with at least one write.
    #[prost(message, tag = "5")]
    Txn(pb::TxnRequest),
    /// etcd `Compact`.
    #[prost(message, tag = "6")]
    Compaction(pb::CompactionRequest),
    /// etcd `Maintenance.Alarm` (ACTIVATE / DEACTIVATE).
    #[prost(message, tag = "7")]
    Alarm(pb::AlarmRequest),
    /// etcd `LeaseGrant`, its id already chosen.
    #[prost(message, tag = "8")]
    LeaseGrant(pb::LeaseGrantRequest),
    /// etcd `LeaseRevoke` (also what expiry proposes).
    #[prost(message, tag = "9")]
    LeaseRevoke(pb::LeaseRevokeRequest),
}

/// One replicated command: who asked, and what to do.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct CommandPb {
    #[prost(message, optional, tag = "1")]
    pub request_id: Option<RequestIdPb>,
    #[prost(oneof = "Op", tags = "2, 3, 4, 5, 6, 7, 8, 9")]
    pub op: Option<Op>,
}

impl From<RequestId> for RequestIdPb {
    fn from(id: RequestId) -> Self {
        RequestIdPb {
            node_id: id.node_id,
            boot_nonce: id.boot_nonce,
            seq: id.seq,
        }
    }
}

impl From<&RequestIdPb> for RequestId {
    fn from(pb: &RequestIdPb) -> Self {
        RequestId {
            node_id: pb.node_id,
            boot_nonce: pb.boot_nonce,
            seq: pb.seq,
        }
    }
}

/// Encodes a command.
pub(crate) fn encode(id: RequestId, op: Op) -> Vec<u8> {
    CommandPb {
        request_id: Some(id.into()),
        op: Some(op),
    }
    .encode_to_vec()
}

/// Encodes a plain put command (etcd `Put` of `value` at `key`, no lease, no
/// option): the bytes [`encode`] makes of that `Op::Put`, written straight
/// from the caller's buffers into one buffer of the exact size (no
/// `PutRequest` with copies of both).
pub(crate) fn encode_put(id: RequestId, key: &[u8], value: &[u8]) -> Vec<u8> {
    use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};
    // proto3 leaves an empty bytes field out, as prost does.
    let field_len = |tag: u32, bytes: &[u8]| {
        if bytes.is_empty() {
            0
        } else {
            key_len(tag) + encoded_len_varint(bytes.len() as u64) + bytes.len()
        }
    };
    let put_len = field_len(1, key) + field_len(2, value);
    let id = RequestIdPb::from(id);
    let id_len = id.encoded_len();
    let total = key_len(1)
        + encoded_len_varint(id_len as u64)
        + id_len
        + key_len(3)
        + encoded_len_varint(put_len as u64)
        + put_len;
    let mut buf = Vec::with_capacity(total);
    prost::encoding::message::encode(1, &id, &mut buf);
    encode_key(3, WireType::LengthDelimited, &mut buf);
    encode_varint(put_len as u64, &mut buf);
    for (tag, bytes) in [(1, key), (2, value)] {
        if !bytes.is_empty() {
            encode_key(tag, WireType::LengthDelimited, &mut buf);
            encode_varint(bytes.len() as u64, &mut buf);
            buf.extend_from_slice(bytes);
        }
    }
    debug_assert_eq!(buf.len(), total, "the announced size must match");
    buf
}

/// Decodes a command payload; an error means the entry is not ours.
pub(crate) fn decode(data: &[u8]) -> Result<CommandPb, prost::DecodeError> {
    CommandPb::decode(data)
}

/// Draws a nonce that differs between incarnations of a node.
///
/// Mixes the standard library's per-process random hash keys (seeded from the
/// OS), the wall clock, the process id and a process-wide counter, so two
/// state machines created in one process, or by two runs of the binary,
/// get different nonces.
pub(crate) fn boot_nonce() -> u64 {
    static INSTANCES: AtomicU64 = AtomicU64::new(0);
    let now_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos() as u64)
        .unwrap_or(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(now_ns);
    hasher.write_u32(std::process::id());
    hasher.write_u64(INSTANCES.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written encoding of a plain put is byte for byte prost's,
    /// and decodes to the same command.
    #[test]
    fn a_plain_put_encodes_as_prost_does() {
        let id = RequestId {
            node_id: 3,
            boot_nonce: u64::MAX - 5,
            seq: 300,
        };
        let long = vec![b'v'; 1000];
        for (key, value) in [
            (&b"k"[..], &b"v"[..]),
            (&b"/a/key"[..], &b""[..]),
            (&b"key"[..], &long[..]),
            (&b""[..], &b"value"[..]),
        ] {
            let expected = encode(
                id,
                Op::Put(pb::PutRequest {
                    key: key.to_vec(),
                    value: value.to_vec(),
                    ..Default::default()
                }),
            );
            let encoded = encode_put(id, key, value);
            assert_eq!(
                encoded,
                expected,
                "key {key:?}, {} value bytes",
                value.len()
            );
            let decoded = decode(&encoded).unwrap();
            assert_eq!(decoded.request_id.as_ref().map(RequestId::from), Some(id));
        }
    }
}
