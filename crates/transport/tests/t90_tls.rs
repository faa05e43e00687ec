//! `https://` peers: frames and snapshots over TLS with client-certificate authentication;
//! a peer presenting a certificate from another CA gets nothing delivered; an https URL
//! without TLS configuration is refused.

mod common;

use std::future::IntoFuture;
use std::path::Path;
use std::sync::Arc;

use common::{heartbeat, test_config, wait_until, Recorder};
use raft_proto::eraftpb::{Message, MessageType, Snapshot, SnapshotMetadata};
use tls::dev::Pki;
use tls::{Listener, ListenerConfig, PortKind, ServerTls, ServerTlsFiles};
use tokio::net::TcpListener;
use transport::{ClientTls, ClientTlsFiles, SnapshotStatus, Transport, TransportError};

/// A transport serving its router with `tls::Listener` and peer client-cert auth.
struct TlsNode {
    transport: Transport,
    recorder: Arc<Recorder>,
    url: String,
    server_tls: ServerTls,
}

/// Starts node `id` whose server and client certificates come from `own` (CN `member-<id>`)
/// and which trusts `trusted` for both directions.
async fn start_tls_node(id: u64, own: &Pki, trusted: &Path) -> TlsNode {
    let (cert_file, key_file) = own
        .issue(
            &format!("member-{id}"),
            &format!("member-{id}"),
            &["127.0.0.1"],
            30,
        )
        .expect("leaf");
    let server_tls = ServerTls::load(
        PortKind::Peer,
        ServerTlsFiles {
            cert_file: cert_file.clone(),
            key_file: key_file.clone(),
            trusted_ca_file: Some(trusted.to_path_buf()),
            client_cert_auth: true,
            allowed_cn: None,
            allowed_hostname: None,
        },
    )
    .expect("server TLS");
    let client_tls = ClientTls::load(ClientTlsFiles {
        trusted_ca_file: Some(trusted.to_path_buf()),
        cert_file: Some(cert_file),
        key_file: Some(key_file),
    })
    .expect("client TLS");
    let mut config = test_config(id);
    config.tls = Some(client_tls);
    let recorder = Arc::new(Recorder::default());
    let transport = Transport::new(config, recorder.clone());
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("https://{}", tcp.local_addr().expect("addr"));
    let listener = Listener::tls(tcp, server_tls.clone(), ListenerConfig::default());
    tokio::spawn(axum::serve(listener, transport.router()).into_future());
    TlsNode {
        transport,
        recorder,
        url,
        server_tls,
    }
}

fn snapshot_message(from: u64, to: u64, data_bytes: usize) -> Message {
    let data: Vec<u8> = (0..data_bytes).map(|i| (i % 251) as u8).collect();
    let mut metadata = SnapshotMetadata::default();
    (metadata.index, metadata.term) = (77, 3);
    let mut msg = Message::default();
    msg.set_msg_type(MessageType::MsgSnapshot);
    (msg.from, msg.to, msg.term) = (from, to, 3);
    msg.snapshot = Some(Snapshot {
        data,
        metadata: Some(metadata),
    });
    msg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_and_snapshots_travel_over_https_with_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path(), "peer CA").unwrap();
    let n1 = start_tls_node(1, &pki, &pki.ca_file).await;
    let n2 = start_tls_node(2, &pki, &pki.ca_file).await;
    n1.transport.add_peer(2, &n2.url).unwrap();
    n2.transport.add_peer(1, &n1.url).unwrap();

    for seq in 1..=20 {
        n1.transport.send(vec![heartbeat(1, 2, seq)]);
        n2.transport.send(vec![heartbeat(2, 1, seq)]);
    }
    let (r1, r2) = (n1.recorder.clone(), n2.recorder.clone());
    wait_until("heartbeats both ways", || {
        r1.count_from(2) == 20 && r2.count_from(1) == 20
    })
    .await;
    assert_eq!(r2.indexes_from(1), (1..=20).collect::<Vec<_>>());

    let snapshot = snapshot_message(1, 2, 2 * 1024 * 1024);
    n1.transport.send(vec![snapshot.clone()]);
    wait_until("snapshot reported", || !r1.snapshots.lock().is_empty()).await;
    assert_eq!(*r1.snapshots.lock(), vec![(2, SnapshotStatus::Finish)]);
    let received = r2.received.lock()[&1].last().cloned().unwrap();
    assert!(received == snapshot, "snapshot delivered intact over TLS");

    // Every connection was a TLS handshake that the peer port accepted.
    let status = n2.server_tls.status();
    assert!(status.handshakes_total >= 2, "{status:?}");
    assert!(
        status.handshake_failures.iter().all(|(_, n)| *n == 0),
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_a_certificate_from_another_ca_gets_nothing_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(&dir.path().join("good"), "peer CA").unwrap();
    let rogue_pki = Pki::generate(&dir.path().join("rogue"), "rogue CA").unwrap();
    let n2 = start_tls_node(2, &pki, &pki.ca_file).await;
    // Node 3 verifies node 2's certificate (it trusts the real CA) but presents a
    // certificate of its own CA.
    let n3 = start_tls_node(3, &rogue_pki, &pki.ca_file).await;
    n3.transport.add_peer(2, &n2.url).unwrap();
    n3.transport.send(vec![heartbeat(3, 2, 1)]);
    let r3 = n3.recorder.clone();
    wait_until("peer reported unreachable", || {
        r3.was_reported_unreachable(2)
    })
    .await;
    let server = n2.server_tls.clone();
    wait_until("handshake refused as unknown CA", || {
        server.status().failures("unknown_ca") >= 1
    })
    .await;
    for seq in 2..=5 {
        n3.transport.send(vec![heartbeat(3, 2, seq)]);
    }
    wait_until("more failures", || {
        n3.transport.stats().peers[&2].send_failures >= 2
    })
    .await;
    assert_eq!(
        n2.recorder.count_from(3),
        0,
        "nothing from a rogue peer is delivered"
    );
    assert_eq!(n3.transport.stats().peers[&2].msgs_sent, 0);
}

#[tokio::test]
async fn https_without_tls_configuration_is_an_error() {
    let recorder = Arc::new(Recorder::default());
    let transport = Transport::new(test_config(1), recorder);
    let err = transport.add_peer(2, "https://127.0.0.1:1").unwrap_err();
    assert!(
        matches!(&err, TransportError::InvalidUrl { reason, .. } if reason.contains("TLS")),
        "{err}"
    );
    transport.add_peer(2, "http://127.0.0.1:1").unwrap();
    let err = transport.update_peer(2, "https://127.0.0.1:1").unwrap_err();
    assert!(err.to_string().contains("https:// peers need TLS"), "{err}");
    assert!(transport::validate_peer_url("https://127.0.0.1:1").is_ok());
    assert!(transport::validate_peer_url("ftp://127.0.0.1:1").is_err());
    transport.shutdown().await;
}
