//! Expiry: a certificate close to its end shows in the status with its `not_after`, is
//! flagged as expiring, and the reloader warns about it once.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{serve, setup, wait_until};
use tls::{ListenerConfig, PortKind, ServerTls, EXPIRY_WARNING_DAYS};

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_valid_one_day_is_flagged_and_warned_about_once() {
    let setup = setup();
    let (cert, key) = setup
        .pki
        .issue("short", "server", &["127.0.0.1"], 1)
        .unwrap();
    let mut files = setup.server_files(true);
    (files.cert_file, files.key_file) = (cert, key);
    let (server, _addr) = serve(files, ListenerConfig::default()).await;
    let status = server.status();
    let leaf = status
        .certificates
        .iter()
        .find(|c| c.role == "cert")
        .unwrap()
        .clone();
    let day = 86_400;
    assert!(
        (leaf.not_after_unix_s - (now_s() + day)).abs() < 600,
        "{leaf:?}"
    );
    assert!(leaf.expires_within(EXPIRY_WARNING_DAYS));
    assert!(leaf.expires_within(1));
    assert!(!leaf.expires_within(0) && !leaf.expired());
    assert_eq!(
        status.expiring_within(EXPIRY_WARNING_DAYS),
        vec![&leaf],
        "not the CA"
    );
    assert_eq!(status.expiry_warnings_total, 0);

    let reloader = tls::spawn_reloader(vec![server.clone()], Vec::new(), 10);
    let s = server.clone();
    wait_until("an expiry warning", || {
        s.status().expiry_warnings_total >= 1
    })
    .await;
    // Many more polls: still one warning (at most once a day per certificate).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.status().expiry_warnings_total, 1);
    reloader.abort();
}

#[test]
fn an_expired_certificate_is_reported_as_expired() {
    let setup = setup();
    let (cert, key) = setup
        .pki
        .issue("old", "server", &["127.0.0.1"], -2)
        .unwrap();
    let mut files = setup.server_files(false);
    (files.cert_file, files.key_file) = (cert, key);
    let server = ServerTls::load(PortKind::Client, files).unwrap();
    let status = server.status();
    let leaf = status
        .certificates
        .iter()
        .find(|c| c.role == "cert")
        .unwrap();
    assert!(leaf.expired());
    assert!(leaf.not_after_unix_s < now_s());
    let ca = status.certificates.iter().find(|c| c.role == "ca").unwrap();
    assert!(!ca.expires_within(EXPIRY_WARNING_DAYS));
    assert_eq!(ca.subject_cn, "test CA");
}
