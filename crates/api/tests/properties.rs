//! Property test: no method, path or body a client sends gets a 5xx from a
//! healthy node, and nothing panics.

mod common;

use proptest::prelude::*;

fn method() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "GET", "PUT", "POST", "DELETE", "HEAD", "PATCH", "OPTIONS",
    ])
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        "/[a-zA-Z0-9%/._~!$&'()*+,;=:@-]{0,40}",
        "/v1/[a-z/]{0,10}",
        "/[0-9]{0,25}",
        "/[0-9]{1,3}\\?[a-z=&]{0,20}",
        "/[a-z]{1,5}\\?(serializable|consistency=[a-z]{0,14}|linearizable=[a-z]{0,5})",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn client_input_never_gets_5xx(method in method(), path in path(), body in prop::collection::vec(any::<u8>(), 0..64)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let app = common::app();
        let reply = runtime.block_on(app.send(method, &path, body));
        prop_assert!(!reply.status.is_server_error(), "{} {} -> {}: {}", method, path, reply.status, reply.text());
    }
}
