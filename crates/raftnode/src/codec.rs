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

/// What a member published about itself once it ran: its name and client
/// URLs (see `membership::attributes_entry`).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct AttributesRecord {
    /// Node id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// The member's name.
    #[prost(string, tag = "2")]
    pub name: String,
    /// The member's client URLs.
    #[prost(string, repeated, tag = "3")]
    pub client_urls: Vec<String>,
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
    /// What the members published about themselves, sorted by id (absent
    /// from snapshots written before members published anything).
    #[prost(message, repeated, tag = "4")]
    pub attributes: Vec<AttributesRecord>,
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
    #[prost(message, repeated, tag = "4")]
    attributes: Vec<AttributesRecord>,
}

/// The members' published attributes in an envelope (empty when it has
/// none or does not decode; `split_envelope` reports the latter).
pub(crate) fn envelope_attributes(data: &[u8]) -> Vec<AttributesRecord> {
    EnvelopeHead::decode(data)
        .map(|head| head.attributes)
        .unwrap_or_default()
}

/// Checks that `data` is an envelope this version can restore, without
/// copying the state machine's bytes.
pub(crate) fn check_envelope(data: &[u8]) -> Result<(), String> {
    split_envelope(data).map(|_| ())
}

/// The members of an envelope and its state bytes, borrowed from `data`
/// (a snapshot's state can be gigabytes: decoding it into a
/// [`SnapshotEnvelope`] would copy them).
pub(crate) fn split_envelope(data: &[u8]) -> Result<(Vec<MemberRecord>, &[u8]), String> {
    let head = EnvelopeHead::decode(data).map_err(|e| e.to_string())?;
    if head.version != ENVELOPE_VERSION {
        return Err(format!(
            "snapshot envelope version {} is not supported (expected {ENVELOPE_VERSION})",
            head.version
        ));
    }
    // The head decoded, so the fields are well formed; find the state's.
    let truncated = || "truncated snapshot envelope".to_string();
    let mut rest = data;
    let mut state: &[u8] = &[];
    while !rest.is_empty() {
        let key = prost::encoding::decode_varint(&mut rest).map_err(|e| e.to_string())?;
        let (field, wire_type) = (key >> 3, key & 7);
        let skip = match wire_type {
            0 => {
                prost::encoding::decode_varint(&mut rest).map_err(|e| e.to_string())?;
                0
            }
            1 => 8,
            2 => {
                let len = prost::encoding::decode_varint(&mut rest).map_err(|e| e.to_string())?;
                let len = usize::try_from(len).map_err(|_| truncated())?;
                if field == STATE_FIELD {
                    state = rest.get(..len).ok_or_else(truncated)?;
                }
                len
            }
            5 => 4,
            other => return Err(format!("snapshot envelope has wire type {other}")),
        };
        rest = rest.get(skip..).ok_or_else(truncated)?;
    }
    Ok((head.members, state))
}

/// The field number of [`SnapshotEnvelope::state`].
const STATE_FIELD: u64 = 3;

impl SnapshotEnvelope {
    pub(crate) fn encode_to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    #[cfg(test)]
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
            attributes: vec![AttributesRecord {
                id: 1,
                name: "raftkv-1".into(),
                client_urls: vec!["http://127.0.0.1:2".into()],
            }],
        };
        let bytes = envelope.encode_to_bytes();
        assert_eq!(SnapshotEnvelope::decode_from(&bytes).unwrap(), envelope);
        assert!(SnapshotEnvelope::decode_from(&[0xff, 0xff, 0xff]).is_err());
        assert_eq!(check_envelope(&bytes), Ok(()));
        assert_eq!(envelope_attributes(&bytes), envelope.attributes);
        let (members, state) = split_envelope(&bytes).unwrap();
        assert_eq!(
            (members, state),
            (envelope.members.clone(), &[1u8, 2, 3][..])
        );
        let empty = SnapshotEnvelope {
            state: Vec::new(),
            ..envelope.clone()
        };
        assert_eq!(
            split_envelope(&empty.encode_to_bytes()).unwrap().1,
            &[] as &[u8]
        );
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
