//! Random bytes as a client's first flight never panic the listener: every connection is
//! closed or answered, and a good client is still served after 200 cases.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use common::{get_once, serve, setup, Setup, WAIT_LIMIT};
use proptest::prelude::*;
use tls::ListenerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Panics on the runtime's worker threads (where the listener's tasks run).
static WORKER_PANICS: AtomicU64 = AtomicU64::new(0);

struct Fixture {
    runtime: tokio::runtime::Runtime,
    addr: SocketAddr,
    setup: Setup,
    server: tls::ServerTls,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let worker = std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with("tls-fuzz-worker"));
            if worker {
                WORKER_PANICS.fetch_add(1, Ordering::SeqCst);
            }
            default_hook(info);
        }));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tls-fuzz-worker")
            .enable_all()
            .build()
            .unwrap();
        let setup = setup();
        let config = ListenerConfig {
            handshake_timeout_ms: 2_000,
            ..ListenerConfig::default()
        };
        let (server, addr) = runtime.block_on(serve(setup.server_files(true), config));
        Fixture {
            runtime,
            addr,
            setup,
            server,
        }
    })
}

/// Sends `flight`, half-closes, and reads until the server closes; panics if it neither
/// answers nor closes within the wait limit.
async fn first_flight(addr: SocketAddr, flight: &[u8]) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    // The server may close before reading everything: a failed write is fine.
    let _ = tcp.write_all(flight).await;
    let _ = tcp.shutdown().await;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(WAIT_LIMIT, tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => continue,
            Err(_) => panic!("connection neither answered nor closed"),
        }
    }
}

fn flights() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..2048),
        // Something that starts like a TLS handshake record.
        prop::collection::vec(any::<u8>(), 0..1024).prop_map(|rest| {
            let mut flight = vec![0x16, 0x03, 0x01];
            flight.extend(rest);
            flight
        }),
        // Something that starts like an HTTP request.
        prop::collection::vec(any::<u8>(), 0..512).prop_map(|rest| {
            let mut flight = b"GET / HTTP/1.1\r\n".to_vec();
            flight.extend(rest);
            flight
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn random_first_flights_are_closed_or_answered(flight in flights()) {
        let fixture = fixture();
        fixture.runtime.block_on(first_flight(fixture.addr, &flight));
    }
}

#[test]
fn a_good_client_is_served_after_the_random_flights() {
    // Runs the property itself first so the order of tests does not matter.
    let fixture = fixture();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 200,
        ..ProptestConfig::default()
    });
    let cases = AtomicU64::new(0);
    runner
        .run(&flights(), |flight| {
            fixture
                .runtime
                .block_on(first_flight(fixture.addr, &flight));
            cases.fetch_add(1, Ordering::Relaxed);
            Ok(())
        })
        .unwrap();
    assert_eq!(cases.load(Ordering::Relaxed), 200);
    // Every case ended in a failed handshake (random bytes are never a valid ClientHello
    // followed by a client certificate), counted under some reason.
    let server = fixture.server.clone();
    common::wait_until_blocking(&fixture.runtime, "every case counted", move || {
        let status = server.status();
        status
            .handshake_failures
            .iter()
            .map(|(_, n)| n)
            .sum::<u64>()
            >= 200
    });
    let client = fixture.setup.client();
    let served = fixture.runtime.block_on(get_once(&client, fixture.addr));
    assert_eq!(served.as_deref(), Ok("ok"));
    assert_eq!(
        WORKER_PANICS.load(Ordering::SeqCst),
        0,
        "a listener task panicked"
    );
}
