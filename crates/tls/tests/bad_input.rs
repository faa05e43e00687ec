//! Bad input against a real `axum::serve(tls::Listener::tls(..))`: each is refused at the
//! TLS layer with its reason counted, and a good client is still served afterwards.

mod common;

use common::{client_with, get_once, serve, setup, wait_until, Setup, WAIT_LIMIT};
use tls::dev::Pki;
use tls::{ListenerConfig, ServerTls};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Waits for one failure with `label`, then checks a good client is still served.
async fn refused_as(
    server: &ServerTls,
    label: &'static str,
    good: &Setup,
    addr: std::net::SocketAddr,
) {
    let s = server.clone();
    wait_until(label, || s.status().failures(label) >= 1).await;
    assert_eq!(get_once(&good.client(), addr).await.as_deref(), Ok("ok"));
}

/// Reads until the server closes (or WAIT_LIMIT passes: then the test fails).
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(WAIT_LIMIT, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return out,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the server neither answered nor closed the connection"),
        }
    }
}

#[tokio::test]
async fn plain_http_to_the_tls_port_gets_a_400_that_says_so() {
    let setup = setup();
    let (server, addr) = serve(setup.server_files(true), ListenerConfig::default()).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = String::from_utf8(read_until_closed(&mut tcp).await).unwrap();
    assert!(
        answer.starts_with("HTTP/1.0 400 Bad Request\r\n"),
        "{answer}"
    );
    assert!(answer.ends_with(tls::PLAINTEXT_HTTP_BODY), "{answer}");
    refused_as(&server, "plaintext_http", &setup, addr).await;
    assert_eq!(server.status().failures("plaintext_http"), 1);
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused_with_or_without_client_cert_auth() {
    let setup = setup();
    let rogue = Pki::generate(&setup.dir.path().join("rogue"), "rogue CA").unwrap();
    let (cert, key) = rogue
        .issue("rogue", "member-2", &["127.0.0.1"], 30)
        .unwrap();
    // The rogue client trusts the real CA, so only its own certificate is wrong.
    let rogue_client = client_with(&setup.pki.ca_file, Some((&cert, &key)));
    for client_cert_auth in [true, false] {
        let (server, addr) = serve(
            setup.server_files(client_cert_auth),
            ListenerConfig::default(),
        )
        .await;
        let result = get_once(&rogue_client, addr).await;
        assert!(
            result.is_err(),
            "client_cert_auth={client_cert_auth}: {result:?}"
        );
        refused_as(&server, "unknown_ca", &setup, addr).await;
        assert_eq!(server.status().handshakes_total, 1, "only the good client");
    }
    // With client_cert_auth off, a client without a certificate is served.
    let (_server, addr) = serve(setup.server_files(false), ListenerConfig::default()).await;
    let anonymous = client_with(&setup.pki.ca_file, None);
    assert_eq!(get_once(&anonymous, addr).await.as_deref(), Ok("ok"));
}

#[tokio::test]
async fn an_expired_client_certificate_is_refused() {
    let setup = setup();
    let (cert, key) = setup
        .pki
        .issue("expired", "member-2", &["127.0.0.1"], -1)
        .unwrap();
    let (server, addr) = serve(setup.server_files(true), ListenerConfig::default()).await;
    let expired = client_with(&setup.pki.ca_file, Some((&cert, &key)));
    assert!(get_once(&expired, addr).await.is_err());
    refused_as(&server, "expired_certificate", &setup, addr).await;
}

#[tokio::test]
async fn a_disallowed_cn_or_hostname_is_refused() {
    let setup = setup();
    let (cert, key) = setup
        .pki
        .issue(
            "intruder",
            "intruder",
            &["127.0.0.1", "intruder.example"],
            30,
        )
        .unwrap();
    let intruder = client_with(&setup.pki.ca_file, Some((&cert, &key)));

    let mut files = setup.server_files(true);
    files.allowed_cn = Some("member-2".into());
    let (server, addr) = serve(files, ListenerConfig::default()).await;
    assert!(get_once(&intruder, addr).await.is_err());
    refused_as(&server, "disallowed_identity", &setup, addr).await;

    let mut files = setup.server_files(true);
    files.allowed_hostname = Some("member2.example".into());
    let (server, addr) = serve(files, ListenerConfig::default()).await;
    assert!(get_once(&intruder, addr).await.is_err());
    refused_as(&server, "disallowed_identity", &setup, addr).await;

    // An IP literal matches an IP SAN.
    let mut files = setup.server_files(true);
    files.allowed_hostname = Some("127.0.0.1".into());
    let (_server, addr) = serve(files, ListenerConfig::default()).await;
    assert_eq!(get_once(&intruder, addr).await.as_deref(), Ok("ok"));
}

#[tokio::test]
async fn no_client_certificate_where_one_is_required_is_refused() {
    let setup = setup();
    let (server, addr) = serve(setup.server_files(true), ListenerConfig::default()).await;
    let anonymous = client_with(&setup.pki.ca_file, None);
    assert!(get_once(&anonymous, addr).await.is_err());
    refused_as(&server, "no_certificate", &setup, addr).await;
}

/// The first flight of a real client: its ClientHello.
fn client_hello(setup: &Setup) -> Vec<u8> {
    let client = setup.client();
    let name = tls::rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut conn = tls::rustls::ClientConnection::new(client.config(), name).unwrap();
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello).unwrap();
    }
    hello
}

#[tokio::test]
async fn a_truncated_handshake_is_counted_and_closed() {
    let setup = setup();
    let (server, addr) = serve(setup.server_files(true), ListenerConfig::default()).await;
    let hello = client_hello(&setup);
    assert!(hello.len() > 100, "a ClientHello");
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&hello[..hello.len() / 2]).await.unwrap();
    tcp.shutdown().await.unwrap();
    let answer = read_until_closed(&mut tcp).await;
    assert!(answer.is_empty(), "no answer to half a ClientHello");
    refused_as(&server, "truncated", &setup, addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_connections_are_cut_at_the_handshake_timeout_without_blocking_others() {
    const LORISES: usize = 40;
    let setup = setup();
    let config = ListenerConfig {
        handshake_timeout_ms: 800,
        max_concurrent_handshakes: LORISES + 8,
        ..ListenerConfig::default()
    };
    let (server, addr) = serve(setup.server_files(true), config).await;
    let mut lorises = Vec::new();
    for _ in 0..LORISES {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        // The first byte of a TLS record, then nothing.
        tcp.write_all(&[0x16]).await.unwrap();
        lorises.push(tcp);
    }
    // A good client is served while they hang (each handshake has its own task).
    assert_eq!(get_once(&setup.client(), addr).await.as_deref(), Ok("ok"));
    let s = server.clone();
    wait_until("every loris cut", || {
        s.status().failures("timeout") >= LORISES as u64
    })
    .await;
    for mut loris in lorises {
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(WAIT_LIMIT, loris.read(&mut buf))
            .await
            .expect("the server closed the stalled connection");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    assert_eq!(get_once(&setup.client(), addr).await.as_deref(), Ok("ok"));
    assert_eq!(server.status().failures("timeout"), LORISES as u64);
}

#[tokio::test]
async fn connections_beyond_the_handshake_bound_are_closed_at_once() {
    let setup = setup();
    let config = ListenerConfig {
        handshake_timeout_ms: 30_000,
        max_concurrent_handshakes: 2,
        ..ListenerConfig::default()
    };
    let (server, addr) = serve(setup.server_files(true), config).await;
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(&[0x16]).await.unwrap();
        stalled.push(tcp);
    }
    // Wait until both hold their permits: a third connection is then closed.
    let mut third = TcpStream::connect(addr).await.unwrap();
    let answer = read_until_closed(&mut third).await;
    assert!(answer.is_empty());
    let s = server.clone();
    wait_until("refused as other", || s.status().failures("other") >= 1).await;
    drop(stalled);
    // Closed stalls free their permits; a good client is served again.
    let s = server.clone();
    wait_until("stalls ended", || s.status().failures("truncated") >= 2).await;
    assert_eq!(get_once(&setup.client(), addr).await.as_deref(), Ok("ok"));
}
