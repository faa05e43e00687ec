//! A TLS server with client-certificate auth answers a client of the same CA.

mod common;

use common::{get_once, serve, setup};
use tls::ListenerConfig;

#[tokio::test]
async fn good_client_is_served_over_tls() {
    let setup = setup();
    let (server, addr) = serve(setup.server_files(true), ListenerConfig::default()).await;
    let client = setup.client();
    assert_eq!(get_once(&client, addr).await.as_deref(), Ok("ok"));
    let status = server.status();
    assert_eq!(status.handshakes_total, 1);
    assert!(status.handshake_failures.iter().all(|(_, n)| *n == 0));
    let cert = status
        .certificates
        .iter()
        .find(|c| c.role == "cert")
        .expect("leaf in status");
    assert_eq!(cert.subject_cn, "server");
    assert!(status
        .certificates
        .iter()
        .any(|c| c.role == "ca" && c.subject_cn == "test CA"));
    assert_eq!(client.status().handshakes_total, 1);
}

#[test]
fn errors_name_the_flag_and_the_file() {
    let setup = setup();
    let mut files = setup.server_files(true);
    files.key_file = setup.client_key.clone();
    let err = tls::ServerTls::load(tls::PortKind::Peer, files)
        .expect_err("mismatched key")
        .to_string();
    assert!(
        err.contains("--peer-key-file") && err.contains("does not match --peer-cert-file"),
        "{err}"
    );

    let mut files = setup.server_files(false);
    files.cert_file = setup.dir.path().join("missing.pem");
    let err = tls::ServerTls::load(tls::PortKind::Client, files)
        .expect_err("missing file")
        .to_string();
    assert!(err.starts_with("cannot read --cert-file "), "{err}");

    let mut files = setup.server_files(false);
    files.cert_file = setup.server_key.clone();
    let err = tls::ServerTls::load(tls::PortKind::Client, files)
        .expect_err("key as certificate")
        .to_string();
    assert!(err.starts_with("no certificate in --cert-file "), "{err}");

    let mut files = setup.server_files(false);
    files.allowed_cn = Some("x".into());
    let err = tls::ServerTls::load(tls::PortKind::Peer, files)
        .expect_err("allowed CN without auth")
        .to_string();
    assert!(
        err.contains("--peer-cert-allowed-cn needs --peer-client-cert-auth"),
        "{err}"
    );
}
