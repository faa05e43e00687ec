//! The wire format: request paths, headers and body layouts (documented in the workspace ARCHITECTURE.md, "Wire format").
//!
//! Pure functions only: no I/O, so every malformed input can be tested directly.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message as _;
use raft_proto::eraftpb::Message;

/// Path of the message endpoint: a frame of length-prefixed messages.
pub const PATH_MESSAGES: &str = "/raft/msgs";
/// Path of the snapshot endpoint: one streamed `MsgSnapshot`.
pub const PATH_SNAPSHOT: &str = "/raft/snapshot";
/// Path of the fault-injection endpoint (only when enabled).
pub const PATH_FAULTS: &str = "/raft/faults";
/// Header carrying the sender's node id (decimal).
pub const HEADER_FROM: &str = "x-raft-from";
/// Header carrying the recipient's node id (decimal).
pub const HEADER_TO: &str = "x-raft-to";
/// Header carrying the cluster id (decimal).
pub const HEADER_CLUSTER_ID: &str = "x-raft-cluster-id";
/// Header of a 410 answer: the log index at which the answering member applied the
/// sender's removal (decimal), when it knows it.
pub const HEADER_REMOVED_AT: &str = "x-raft-removed-at";

/// Bytes of the length prefix in front of each message of a frame.
pub const LEN_PREFIX_BYTES: usize = 4;
/// Bytes of a snapshot body's fixed fields: metadata length (u32) and data length (u64).
pub const SNAPSHOT_FIXED_BYTES: usize = 4 + 8;

/// A body that does not follow the wire format.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FrameError {
    /// The body ends inside a length prefix or a message.
    #[error("frame truncated at byte {offset}: need {needed} more bytes")]
    Truncated {
        /// Offset of the incomplete item.
        offset: usize,
        /// Bytes missing.
        needed: usize,
    },
    /// A message's bytes are not a valid protobuf `Message`.
    #[error("message at byte {offset} does not decode: {reason}")]
    Decode {
        /// Offset of the message's length prefix.
        offset: usize,
        /// The decoder's explanation.
        reason: String,
    },
    /// A frame without any message.
    #[error("empty frame")]
    Empty,
    /// A zero-length message (4 bytes on the wire, a few hundred in
    /// memory): refused so a small frame cannot expand into gigabytes.
    #[error("zero-length message at byte {offset}")]
    EmptyMessage {
        /// Offset of its length prefix.
        offset: usize,
    },
    /// More messages than one frame may carry.
    #[error("frame holds more than {max} messages")]
    TooManyMessages {
        /// The limit, [`FRAME_MESSAGES_MAX`].
        max: usize,
    },
    /// More log entries (summed over the frame's messages) than one frame may carry.
    #[error("frame holds more than {max} log entries")]
    TooManyEntries {
        /// The limit, [`FRAME_ENTRIES_MAX`].
        max: usize,
    },
    /// More snapshot data than announced.
    #[error("snapshot body has {extra} bytes after the announced data")]
    TrailingBytes {
        /// Bytes beyond the announced end.
        extra: u64,
    },
}

/// Most messages one frame may carry. A decoded `Message` takes far more
/// memory than its wire bytes, so the count is bounded as well as the frame
/// size; senders never batch more than their queue (8192 by default).
pub const FRAME_MESSAGES_MAX: usize = 65_536;

/// Most log entries one frame may carry, summed over its messages. An empty
/// entry is 2 bytes on the wire but about a hundred in memory, so a frame
/// within `max_frame_bytes` could otherwise decode into gigabytes. Counted on
/// the wire before anything is decoded. Far above what a leader sends: one
/// `MsgAppend` is bounded by `max_size_per_msg` (1 MiB by default) and a real
/// entry takes tens of bytes.
pub const FRAME_ENTRIES_MAX: usize = 262_144;

/// Protobuf field number of `Message.entries`.
const MESSAGE_ENTRIES_FIELD: u64 = 7;

/// Counts the `entries` fields at the top level of an encoded `Message`, without decoding
/// it. Stops at the first malformed field (the decoder reports it later).
pub fn count_entries(encoded: &[u8]) -> usize {
    let mut rest = encoded;
    let mut count = 0;
    while let Some((key, after_key)) = read_varint(rest) {
        let skipped = match key & 0x7 {
            0 => read_varint(after_key).map(|(_, after)| after),
            1 => after_key.get(8..),
            2 => read_varint(after_key).and_then(|(len, after)| {
                let len = usize::try_from(len).ok()?;
                after.get(len..)
            }),
            5 => after_key.get(4..),
            _ => None,
        };
        let Some(after) = skipped else { break };
        if key >> 3 == MESSAGE_ENTRIES_FIELD && key & 0x7 == 2 {
            count += 1;
        }
        rest = after;
    }
    count
}

/// Reads one protobuf varint; `None` when truncated or longer than 10 bytes.
fn read_varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, byte) in bytes.iter().take(10).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

/// Appends one length-prefixed message to `buf`. `encoded_bytes` must be `msg.encoded_len()`.
pub fn put_message(buf: &mut BytesMut, msg: &Message, encoded_bytes: usize) {
    assert!(
        encoded_bytes <= u32::MAX as usize,
        "message length must fit the u32 prefix"
    );
    buf.reserve(LEN_PREFIX_BYTES + encoded_bytes);
    buf.put_u32(encoded_bytes as u32);
    let before = buf.len();
    msg.encode(buf)
        .expect("BytesMut was reserved for the whole message");
    assert_eq!(
        buf.len() - before,
        encoded_bytes,
        "encoded_len and encode disagree"
    );
}

/// Encodes `msgs` as one frame (used by tests and tools; the sender batches with [`put_message`]).
pub fn encode_frame(msgs: &[Message]) -> Bytes {
    let mut buf = BytesMut::new();
    for msg in msgs {
        put_message(&mut buf, msg, msg.encoded_len());
    }
    buf.freeze()
}

/// Decodes a frame into its messages, in order. Never panics on any input.
pub fn decode_frame(body: &[u8]) -> Result<Vec<Message>, FrameError> {
    let mut msgs = Vec::new();
    let mut offset = 0;
    let mut entries = 0;
    while offset < body.len() {
        let rest = &body[offset..];
        if rest.len() < LEN_PREFIX_BYTES {
            return Err(FrameError::Truncated {
                offset,
                needed: LEN_PREFIX_BYTES - rest.len(),
            });
        }
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len == 0 {
            return Err(FrameError::EmptyMessage { offset });
        }
        if msgs.len() == FRAME_MESSAGES_MAX {
            return Err(FrameError::TooManyMessages {
                max: FRAME_MESSAGES_MAX,
            });
        }
        let payload = &rest[LEN_PREFIX_BYTES..];
        if payload.len() < len {
            return Err(FrameError::Truncated {
                offset,
                needed: len - payload.len(),
            });
        }
        entries += count_entries(&payload[..len]);
        if entries > FRAME_ENTRIES_MAX {
            return Err(FrameError::TooManyEntries {
                max: FRAME_ENTRIES_MAX,
            });
        }
        let msg = Message::decode(&payload[..len]).map_err(|e| FrameError::Decode {
            offset,
            reason: e.to_string(),
        })?;
        msgs.push(msg);
        offset += LEN_PREFIX_BYTES + len;
    }
    if msgs.is_empty() {
        return Err(FrameError::Empty);
    }
    Ok(msgs)
}

/// Splits a `MsgSnapshot` into a small head (fixed fields + metadata message) and the data,
/// which is moved, not copied. The body on the wire is `head` followed by `data`.
pub fn encode_snapshot(mut msg: Message) -> (Bytes, Bytes) {
    let data = msg
        .snapshot
        .as_mut()
        .map(|s| std::mem::take(&mut s.data))
        .unwrap_or_default();
    let meta_bytes = msg.encoded_len();
    let mut head = BytesMut::with_capacity(SNAPSHOT_FIXED_BYTES + meta_bytes);
    head.put_u32(meta_bytes as u32);
    msg.encode(&mut head)
        .expect("head was reserved for the whole message");
    head.put_u64(data.len() as u64);
    (head.freeze(), Bytes::from(data))
}

/// The parsed head of a snapshot body.
#[derive(Debug)]
pub struct SnapshotHead {
    /// The message with its snapshot data still empty.
    pub msg: Message,
    /// Bytes of snapshot data that follow the head.
    pub data_bytes: u64,
}

/// Parses a snapshot head from the front of `buf`, consuming it. `Ok(None)` means more bytes
/// are needed. `max_meta_bytes` bounds the metadata before anything is allocated for it.
pub fn parse_snapshot_head(
    buf: &mut BytesMut,
    max_meta_bytes: usize,
) -> Result<Option<SnapshotHead>, SnapshotHeadError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let meta_bytes = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if meta_bytes > max_meta_bytes {
        return Err(SnapshotHeadError::MetaTooLarge {
            meta_bytes,
            max_meta_bytes,
        });
    }
    if buf.len() < SNAPSHOT_FIXED_BYTES + meta_bytes {
        return Ok(None);
    }
    if count_entries(&buf[4..4 + meta_bytes]) > FRAME_ENTRIES_MAX {
        return Err(SnapshotHeadError::TooManyEntries {
            max: FRAME_ENTRIES_MAX,
        });
    }
    buf.advance(4);
    let meta = buf.split_to(meta_bytes);
    let msg =
        Message::decode(meta.freeze()).map_err(|e| SnapshotHeadError::Decode(e.to_string()))?;
    let data_bytes = buf.get_u64();
    Ok(Some(SnapshotHead { msg, data_bytes }))
}

/// A snapshot head that cannot be accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotHeadError {
    /// The metadata length is above the frame limit.
    #[error("snapshot metadata of {meta_bytes} bytes exceeds {max_meta_bytes}")]
    MetaTooLarge {
        /// Announced metadata length.
        meta_bytes: usize,
        /// The limit.
        max_meta_bytes: usize,
    },
    /// The metadata carries more log entries than a frame may.
    #[error("snapshot metadata holds more than {max} log entries")]
    TooManyEntries {
        /// The limit, [`FRAME_ENTRIES_MAX`].
        max: usize,
    },
    /// The metadata is not a valid protobuf `Message`.
    #[error("snapshot metadata does not decode: {0}")]
    Decode(String),
}
