//! Certificate rotation: replaced files are picked up by new handshakes (through
//! `reload_if_changed` and `spawn_reloader`) while connections opened before keep working;
//! a corrupt new file keeps the old configuration and reports the error.

mod common;

use common::{connect, serve, setup, wait_until};
use tls::dev::Pki;
use tls::ListenerConfig;

fn serial_of(pem: &str) -> String {
    use tls::rustls::pki_types::pem::PemObject;
    let der = tls::rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    tls::serial_hex(der.as_ref())
}

#[tokio::test]
async fn a_new_leaf_from_the_same_ca_is_used_by_new_connections_only() {
    let setup = setup();
    let (server, addr) = serve(setup.server_files(true), ListenerConfig::default()).await;
    let client = setup.client();
    let mut before = connect(&client, addr).await.unwrap();
    assert_eq!(before.get().await.as_deref(), Ok("ok"));
    let old_serial = before.server_serial.clone();
    assert!(!server.reload_if_changed().unwrap(), "nothing changed");

    let (cert_pem, key_pem) = setup.pki.issue_pem("server", &["127.0.0.1"], 30).unwrap();
    std::fs::write(&setup.server_cert, &cert_pem).unwrap();
    std::fs::write(&setup.server_key, &key_pem).unwrap();
    assert!(server.reload_if_changed().unwrap());
    assert!(!server.reload_if_changed().unwrap(), "reloaded once");
    let new_serial = serial_of(&cert_pem);
    assert_ne!(new_serial, old_serial);

    let mut after = connect(&client, addr).await.unwrap();
    assert_eq!(after.server_serial, new_serial);
    assert_eq!(after.get().await.as_deref(), Ok("ok"));
    // The connection opened before the reload keeps working.
    assert_eq!(before.get().await.as_deref(), Ok("ok"));
    let status = server.status();
    assert_eq!(status.reloads_total, 1);
    assert!(status
        .certificates
        .iter()
        .any(|c| c.role == "cert" && c.serial_hex == new_serial));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaf_from_a_new_ca_with_a_ca_bundle_is_picked_up_by_the_reloader() {
    let setup = setup();
    // Both sides trust `trust.pem`, at first the old CA only.
    let trust = setup.dir.path().join("trust.pem");
    std::fs::write(&trust, setup.pki.ca_pem()).unwrap();
    let mut files = setup.server_files(true);
    files.trusted_ca_file = Some(trust.clone());
    let (server, addr) = serve(files, ListenerConfig::default()).await;
    let client = common::client_with(&trust, Some((&setup.client_cert, &setup.client_key)));
    let mut before = connect(&client, addr).await.unwrap();
    assert_eq!(before.get().await.as_deref(), Ok("ok"));
    let reloader = tls::spawn_reloader(vec![server.clone()], vec![client.clone()], 20);

    // Rotate: a new CA, the trust file becomes a bundle of both, the server's leaf comes
    // from the new CA; the client keeps its certificate from the old CA.
    let new_ca = Pki::generate(&setup.dir.path().join("new-ca"), "new CA").unwrap();
    let (cert_pem, key_pem) = new_ca.issue_pem("server", &["127.0.0.1"], 30).unwrap();
    std::fs::write(&trust, format!("{}{}", setup.pki.ca_pem(), new_ca.ca_pem())).unwrap();
    std::fs::write(&setup.server_key, &key_pem).unwrap();
    std::fs::write(&setup.server_cert, &cert_pem).unwrap();
    let new_serial = serial_of(&cert_pem);
    let (s, c) = (server.clone(), client.clone());
    wait_until("both sides reloaded the new files", || {
        s.status()
            .certificates
            .iter()
            .any(|cert| cert.serial_hex == new_serial)
            && c.status()
                .certificates
                .iter()
                .filter(|cert| cert.role == "ca")
                .count()
                == 2
    })
    .await;
    let mut after = connect(&client, addr).await.unwrap();
    assert_eq!(after.server_serial, new_serial);
    assert_eq!(after.get().await.as_deref(), Ok("ok"));
    assert_eq!(before.get().await.as_deref(), Ok("ok"));
    assert!(server.status().reloads_total >= 1);
    assert!(client.status().reloads_total >= 1);
    reloader.abort();
}

#[tokio::test]
async fn a_corrupt_new_file_keeps_the_old_configuration() {
    let setup = setup();
    let (server, addr) = serve(setup.server_files(true), ListenerConfig::default()).await;
    let client = setup.client();
    let old_serial = connect(&client, addr).await.unwrap().server_serial;

    std::fs::write(
        &setup.server_cert,
        "-----BEGIN CERTIFICATE-----\nnot base64!\n",
    )
    .unwrap();
    let err = server.reload_if_changed().unwrap_err().to_string();
    assert!(err.contains("--peer-cert-file"), "{err}");
    // The old certificate is still presented and still works.
    let mut conn = connect(&client, addr).await.unwrap();
    assert_eq!(conn.server_serial, old_serial);
    assert_eq!(conn.get().await.as_deref(), Ok("ok"));
    assert_eq!(server.status().reloads_total, 0);

    // A key that does not match the certificate is refused the same way.
    let (cert_pem, _) = setup.pki.issue_pem("server", &["127.0.0.1"], 30).unwrap();
    std::fs::write(&setup.server_cert, &cert_pem).unwrap();
    let err = server.reload_if_changed().unwrap_err().to_string();
    assert!(err.contains("does not match"), "{err}");
    assert_eq!(
        connect(&client, addr).await.unwrap().server_serial,
        old_serial
    );

    // A missing file too.
    std::fs::remove_file(&setup.server_key).unwrap();
    let err = server.reload_if_changed().unwrap_err().to_string();
    assert!(err.starts_with("cannot read --peer-key-file"), "{err}");
    assert_eq!(
        connect(&client, addr).await.unwrap().server_serial,
        old_serial
    );
}
