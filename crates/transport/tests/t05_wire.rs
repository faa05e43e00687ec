//! The frame codec: round trips, and no input makes the decoder panic.

use proptest::prelude::*;
use raft_proto::eraftpb::{Entry, Message, MessageType};
use transport::wire::{decode_frame, encode_frame, FrameError};

fn append(from: u64, to: u64, entries: usize) -> Message {
    let mut msg = Message::default();
    msg.set_msg_type(MessageType::MsgAppend);
    (msg.from, msg.to, msg.term, msg.index) = (from, to, 4, 10);
    msg.entries = (0..entries)
        .map(|i| Entry {
            data: vec![i as u8; i * 10],
            index: 11 + i as u64,
            ..Default::default()
        })
        .collect();
    msg
}

#[test]
fn frame_round_trips_in_order() {
    let msgs: Vec<Message> = (0..10).map(|i| append(1, 2, i)).collect();
    assert_eq!(decode_frame(&encode_frame(&msgs)).unwrap(), msgs);
}

#[test]
fn truncation_is_an_error_at_every_cut() {
    let first = encode_frame(&[append(1, 2, 3)]);
    let frame = encode_frame(&[append(1, 2, 3), append(1, 2, 1)]);
    // Cutting right after the first message leaves a valid one-message frame.
    assert_eq!(decode_frame(&frame[..first.len()]).unwrap().len(), 1);
    for cut in (1..frame.len()).filter(|cut| *cut != first.len()) {
        let err = decode_frame(&frame[..cut]).unwrap_err();
        assert!(
            matches!(
                err,
                FrameError::Truncated { .. } | FrameError::Decode { .. }
            ),
            "{err}"
        );
    }
    assert_eq!(decode_frame(&[]).unwrap_err(), FrameError::Empty);
}

#[test]
fn huge_length_prefix_is_truncated_not_allocated() {
    let err = decode_frame(&[0xff, 0xff, 0xff, 0xff, 1, 2]).unwrap_err();
    assert_eq!(
        err,
        FrameError::Truncated {
            offset: 0,
            needed: u32::MAX as usize - 2
        }
    );
}

proptest! {
    #[test]
    fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_frame(&bytes);
    }

    #[test]
    fn entries_are_counted_on_the_wire_as_decoded(specs in proptest::collection::vec((1u64..5, 0usize..40), 1..20)) {
        use prost::Message as _;
        for (from, n) in specs {
            let msg = append(from, 2, n);
            prop_assert_eq!(transport::wire::count_entries(&msg.encode_to_vec()), n);
        }
    }

    #[test]
    fn any_messages_round_trip(specs in proptest::collection::vec((1u64..5, 0usize..4), 1..20)) {
        let msgs: Vec<Message> = specs.iter().map(|(from, n)| append(*from, 2, *n)).collect();
        prop_assert_eq!(decode_frame(&encode_frame(&msgs)).unwrap(), msgs);
    }
}

#[test]
fn frames_of_empty_or_too_many_messages_are_refused() {
    use transport::wire::{decode_frame, FrameError, FRAME_MESSAGES_MAX};
    assert!(matches!(
        decode_frame(&[0, 0, 0, 0]),
        Err(FrameError::EmptyMessage { offset: 0 })
    ));
    // FRAME_MESSAGES_MAX + 1 minimal messages (field 2 `to` = 1: 2 bytes).
    let mut body = Vec::new();
    for _ in 0..=FRAME_MESSAGES_MAX {
        body.extend_from_slice(&[0, 0, 0, 2, 0x10, 0x01]);
    }
    assert!(matches!(
        decode_frame(&body),
        Err(FrameError::TooManyMessages { .. })
    ));
    assert_eq!(
        decode_frame(&body[..6 * FRAME_MESSAGES_MAX]).unwrap().len(),
        FRAME_MESSAGES_MAX
    );
}
