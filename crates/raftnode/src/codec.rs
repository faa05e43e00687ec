//! raftnode's own encodings: the snapshot envelope and the peer-URL context
//! of membership changes.
//!
//! A Raft snapshot's `data` is a [`SnapshotEnvelope`]: the members' peer URLs
//! (which raft's `ConfState` does not carry) and the state machine's bytes.

use prost::Message as _;

/// One member's id and peer URL.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct MemberRecord {
    /// Node id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Peer URL.
    #[prost(string, tag = "2")]
    pub peer_url: String,
}

/// The `data` of every Raft snapshot raftnode makes.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct SnapshotEnvelope {
    /// Format version, currently 1.
    #[prost(uint32, tag = "1")]
    pub version: u32,
    /// Members with their peer URLs, sorted by id.
    #[prost(message, repeated, tag = "2")]
    pub members: Vec<MemberRecord>,
    /// The state machine's snapshot.
    #[prost(bytes = "vec", tag = "3")]
    pub state: Vec<u8>,
}

pub(crate) const ENVELOPE_VERSION: u32 = 1;

/// The envelope without its state bytes: decoding it checks the whole
/// envelope's wire format and version but skips (never copies) the state.
#[derive(Clone, PartialEq, prost::Message)]
struct EnvelopeHead {
    #[prost(uint32, tag = "1")]
    version: u32,
    #[prost(message, repeated, tag = "2")]
    members: Vec<MemberRecord>,
}

/// Checks that `data` is an envelope this version can restore, without
/// copying the state machine's bytes.
pub(crate) fn check_envelope(data: &[u8]) -> Result<(), String> {
    let head = EnvelopeHead::decode(data).map_err(|e| e.to_string())?;
    if head.version != ENVELOPE_VERSION {
        return Err(format!(
            "snapshot envelope version {} is not supported (expected {ENVELOPE_VERSION})",
            head.version
        ));
    }
    Ok(())
}

impl SnapshotEnvelope {
    pub(crate) fn encode_to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    pub(crate) fn decode_from(data: &[u8]) -> Result<SnapshotEnvelope, String> {
        let envelope = SnapshotEnvelope::decode(data).map_err(|e| e.to_string())?;
        if envelope.version != ENVELOPE_VERSION {
            return Err(format!(
                "snapshot envelope version {} is not supported (expected {ENVELOPE_VERSION})",
                envelope.version
            ));
        }
        Ok(envelope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips_and_rejects_garbage() {
        let envelope = SnapshotEnvelope {
            version: ENVELOPE_VERSION,
            members: vec![MemberRecord {
                id: 1,
                peer_url: "http://127.0.0.1:1".into(),
            }],
            state: vec![1, 2, 3],
        };
        let bytes = envelope.encode_to_bytes();
        assert_eq!(SnapshotEnvelope::decode_from(&bytes).unwrap(), envelope);
        assert!(SnapshotEnvelope::decode_from(&[0xff, 0xff, 0xff]).is_err());
        assert_eq!(check_envelope(&bytes), Ok(()));
        assert!(check_envelope(&[0xff, 0xff, 0xff]).is_err());
        assert!(
            check_envelope(&bytes[..bytes.len() - 1]).is_err(),
            "truncated state"
        );
        let future = SnapshotEnvelope {
            version: 9,
            ..envelope
        };
        assert!(SnapshotEnvelope::decode_from(&future.encode_to_bytes()).is_err());
        assert!(check_envelope(&future.encode_to_bytes()).is_err());
    }
}
