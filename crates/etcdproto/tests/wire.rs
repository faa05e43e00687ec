//! The generated types speak etcd's wire format: field numbers and types as etcd defines them.

use etcdproto::etcdserverpb::{PutRequest, RangeRequest};
use etcdproto::mvccpb::KeyValue;
use etcdproto::prost::Message;

#[test]
fn put_request_bytes_match_etcds_field_numbers() {
    let put = PutRequest {
        key: b"foo".to_vec(),
        value: b"bar".to_vec(),
        lease: 7,
        prev_kv: true,
        ..Default::default()
    };
    // key = 1 (bytes), value = 2 (bytes), lease = 3 (int64), prev_kv = 4 (bool).
    let expected = [
        0x0a, 3, b'f', b'o', b'o', 0x12, 3, b'b', b'a', b'r', 0x18, 7, 0x20, 1,
    ];
    assert_eq!(put.encode_to_vec(), expected);
    assert_eq!(PutRequest::decode(&expected[..]).unwrap(), put);
}

#[test]
fn key_value_round_trips_and_unknown_fields_are_skipped() {
    let kv = KeyValue {
        key: b"k".to_vec(),
        create_revision: 2,
        mod_revision: 3,
        version: 2,
        value: b"v".to_vec(),
        lease: 0,
    };
    let mut bytes = kv.encode_to_vec();
    // A field number this version does not know (99, varint) is skipped, as proto3 requires.
    bytes.extend_from_slice(&[0x98, 0x06, 1]);
    assert_eq!(KeyValue::decode(&bytes[..]).unwrap(), kv);
}

#[test]
fn truncated_input_is_an_error_not_a_panic() {
    let range = RangeRequest {
        key: vec![1; 40],
        limit: 5,
        ..Default::default()
    };
    let bytes = range.encode_to_vec();
    for cut in 0..bytes.len() {
        let _ = RangeRequest::decode(&bytes[..cut]);
    }
    assert!(RangeRequest::decode(&bytes[..bytes.len() - 1]).is_err());
}
