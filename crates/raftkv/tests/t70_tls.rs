//! TLS end to end, with real processes: a cluster with client TLS and
//! client certificate authentication, and https:// peers with peer
//! certificate authentication and an allowed CN, serves writes,
//! linearizable reads, forwarded lease keep-alives, the live view and a
//! new member; refuses plaintext HTTP, certificates from another CA, a
//! disallowed CN, an expired certificate, no certificate, a truncated and a
//! slow handshake without affecting the cluster (and counts each by
//! reason in `/metrics`); rotates its
//! certificates under load without a failed request; and a node refuses to
//! start in plaintext on a non-loopback address unless told so.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Cluster, WAIT};
use prometheus_parse::{Scrape, Value};
use reqwest::StatusCode;
use testcluster::{reserve_port, TlsMode, TlsPaths};

/// Fast elections, and certificate files checked every 200 ms.
const FAST_TLS: &[&str] = &["--tick-ms", "50", "--tls-reload-interval-ms", "200"];

fn scrape(cluster: &Cluster, id: u64) -> Scrape {
    let text = cluster
        .http()
        .get(cluster.url(id, "/metrics"))
        .send()
        .and_then(|r| r.text())
        .expect("GET /metrics");
    Scrape::parse(text.lines().map(|line| Ok(line.to_string()))).expect("metrics parse")
}

/// The value of sample `name` with (at least) `labels`; 0 if absent.
fn sample(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map_or(0.0, |s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            _ => 0.0,
        })
}

fn failures(cluster: &Cluster, id: u64, port: &str, reason: &str) -> f64 {
    sample(
        &scrape(cluster, id),
        "raftkv_tls_handshake_failures_total",
        &[("port", port), ("reason", reason)],
    )
}

/// Polls `check` every 100 ms until it holds, for up to [`WAIT`].
fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "never saw {what} within {WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn peer_port(cluster: &Cluster, id: u64) -> u16 {
    let url = &cluster.node(id).expect("node").peer_url;
    url.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("peer port")
}

/// A TLS connection to `127.0.0.1:port` that trusts `ca` and presents
/// `identity`; sends one HTTP request and returns what the server answered
/// (an error if the handshake or the exchange failed) and the serial of the
/// certificate the server presented.
fn tls_exchange(
    port: u16,
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> std::io::Result<(String, String)> {
    let client = tls::ClientTls::load(tls::ClientTlsFiles {
        trusted_ca_file: Some(ca.to_path_buf()),
        cert_file: identity.map(|(cert, _)| cert.to_path_buf()),
        key_file: identity.map(|(_, key)| key.to_path_buf()),
    })
    .map_err(std::io::Error::other)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let exchange = async {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            let mut stream = client.connect("127.0.0.1", tcp).await?;
            let serial = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|leaf| tls::serial_hex(leaf))
                .unwrap_or_default();
            stream
                .write_all(b"GET /v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await?;
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).await?;
            if answer.is_empty() {
                return Err(std::io::Error::other("closed without an answer"));
            }
            Ok((String::from_utf8_lossy(&answer).into_owned(), serial))
        };
        tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .unwrap_or_else(|_| Err(std::io::Error::other("timed out")))
    })
}

/// The serial of the first certificate in a PEM file.
fn file_serial(path: &Path) -> String {
    use tls::rustls::pki_types::pem::PemObject;
    let der = tls::rustls::pki_types::CertificateDer::from_pem_file(path).expect("a PEM cert");
    tls::serial_hex(&der)
}

fn tls_paths(cluster: &Cluster) -> TlsPaths {
    cluster.tls_paths().expect("a TLS cluster").clone()
}

#[test]
fn a_tls_cluster_serves_everything_and_refuses_bad_peers_without_harm() {
    let mut cluster = Cluster::new_tls(FAST_TLS, Some(TlsMode::full()));
    for id in 1..=3 {
        cluster.define_node(id, &[]);
    }
    for id in 1..=3 {
        cluster.spawn(id, false);
    }
    let paths = tls_paths(&cluster);
    assert!(cluster.url(1, "/").starts_with("https://"));
    assert!(cluster.node(1).unwrap().peer_url.starts_with("https://"));
    let leader = cluster.leader();

    // Writes and linearizable reads through every member.
    for id in 1..=3 {
        cluster.put_ok(id, &format!("/k{id}"), &format!("v{id}"));
    }
    for id in 1..=3 {
        for key in 1..=3 {
            assert_eq!(
                cluster.get_ok(id, &format!("/k{key}")),
                Some(format!("v{key}"))
            );
        }
    }

    // A lease granted and kept alive through a follower: the follower
    // forwards the keep-alive to the leader over peer TLS.
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let granted = cluster
        .http()
        .post(cluster.url(follower, "/v3/lease/grant"))
        .body(r#"{"TTL":"30","ID":"77"}"#)
        .send()
        .expect("grant");
    assert_eq!(granted.status(), StatusCode::OK);
    let kept = cluster
        .http()
        .post(cluster.url(follower, "/v3/lease/keepalive"))
        .body(r#"{"ID":"77"}"#)
        .send()
        .expect("keep-alive");
    assert_eq!(kept.status(), StatusCode::OK);
    let line: serde_json::Value =
        serde_json::from_str(kept.text().expect("body").lines().next().expect("a line"))
            .expect("JSON");
    assert_eq!(line["result"]["TTL"], "30", "{line}");

    // The live view of a follower polls every member over peer TLS.
    wait_for("every member's report in a follower's live view", || {
        let Ok(response) = cluster
            .http()
            .get(cluster.url(follower, "/ui/cluster.json"))
            .send()
        else {
            return false;
        };
        let Ok(view) = response.json::<serde_json::Value>() else {
            return false;
        };
        let members = view["members"].as_array().cloned().unwrap_or_default();
        members.len() == 3
            && members
                .iter()
                .all(|m| m["reachable"].as_bool() == Some(true) && m["term"].as_u64() > Some(0))
    });

    // Plain HTTP to the TLS client port: a 400 that says so.
    let mut plain =
        std::net::TcpStream::connect(("127.0.0.1", cluster.node(1).unwrap().client_port))
            .expect("connect");
    plain
        .write_all(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut answer = String::new();
    let _ = plain.read_to_string(&mut answer);
    // Closing ends the server's drain of the connection; the attempt is
    // counted then.
    drop(plain);
    assert!(
        answer.starts_with("HTTP/1.0 400") && answer.contains(tls::PLAINTEXT_HTTP_BODY.trim()),
        "{answer:?}"
    );
    wait_for("the plaintext attempt counted", || {
        failures(&cluster, 1, "client", "plaintext_http") >= 1.0
    });

    // A peer connection with a certificate from another CA, and one with
    // the cluster's CA but a CN the peers do not allow: both refused by
    // the TLS layer, counted under the peer port.
    let target = follower;
    let port = peer_port(&cluster, target);
    let other = tempfile::tempdir().expect("temp dir");
    let other_ca = tls::dev::Pki::generate(other.path(), "another CA").expect("another CA");
    let (foreign_cert, foreign_key) = other_ca
        .issue("foreign", testcluster::PEER_CN, &["127.0.0.1"], 30)
        .expect("foreign cert");
    let refused = tls_exchange(port, &paths.ca_file, Some((&foreign_cert, &foreign_key)));
    assert!(
        refused.is_err(),
        "a foreign certificate was let in: {refused:?}"
    );
    let (intruder_cert, intruder_key) = cluster
        .issue_certificate("intruder", "intruder", 30)
        .expect("intruder cert");
    let refused = tls_exchange(port, &paths.ca_file, Some((&intruder_cert, &intruder_key)));
    assert!(refused.is_err(), "a disallowed CN was let in: {refused:?}");
    // Without a certificate at all.
    let refused = tls_exchange(port, &paths.ca_file, None);
    assert!(refused.is_err(), "no certificate was let in: {refused:?}");
    // An expired certificate with the allowed CN, from the cluster's CA.
    let (expired_cert, expired_key) = cluster
        .issue_certificate("expired", testcluster::PEER_CN, -1)
        .expect("expired cert");
    let refused = tls_exchange(port, &paths.ca_file, Some((&expired_cert, &expired_key)));
    assert!(
        refused.is_err(),
        "an expired certificate was let in: {refused:?}"
    );
    // A handshake cut short, and a slow one that never finishes (held
    // open while the cluster keeps committing).
    let mut truncated = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    truncated
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
        .expect("write");
    drop(truncated);
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    slow.write_all(&[0x16]).expect("write");
    for i in 0..5 {
        cluster.put_ok(target, &format!("/during-slow-{i}"), "ok");
    }
    wait_for("the refused peers counted", || {
        let scrape = scrape(&cluster, target);
        let peer = |reason| {
            sample(
                &scrape,
                "raftkv_tls_handshake_failures_total",
                &[("port", "peer"), ("reason", reason)],
            )
        };
        peer("unknown_ca") + peer("bad_certificate") >= 1.0
            && peer("disallowed_identity") >= 1.0
            && peer("no_certificate") >= 1.0
            && peer("expired_certificate") >= 1.0
            && peer("truncated") >= 1.0
            && peer("timeout") >= 1.0
    });
    drop(slow);
    // The allowed identity gets through, and the members' own traffic
    // counts as handshakes.
    let (answer, _) = tls_exchange(
        port,
        &paths.ca_file,
        Some((&paths.peer_client_cert_file, &paths.peer_client_key_file)),
    )
    .expect("the peers' CN is allowed");
    assert!(answer.starts_with("HTTP/1.1"), "{answer}");
    let scrape_now = scrape(&cluster, target);
    assert!(
        sample(
            &scrape_now,
            "raftkv_tls_handshakes_total",
            &[("port", "peer")]
        ) >= 1.0,
        "no peer handshake counted"
    );
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    for (port, role) in [
        ("client", "cert"),
        ("client", "ca"),
        ("peer", "cert"),
        ("peer", "ca"),
    ] {
        let expiry = sample(
            &scrape_now,
            "raftkv_tls_certificate_expiry_timestamp_seconds",
            &[("port", port), ("role", role)],
        );
        assert!(expiry > now_s, "{port} {role} expiry {expiry}");
    }

    // Writes keep committing through the member that refused them.
    for i in 0..10 {
        cluster.put_ok(target, &format!("/after-{i}"), "ok");
    }
    assert_eq!(cluster.get_ok(leader, "/after-9"), Some("ok".into()));

    // A fourth member with an https:// peer URL joins and catches up.
    cluster.define_node(4, &[]);
    let url = cluster.node(4).unwrap().peer_url.clone();
    assert!(url.starts_with("https://"), "{url}");
    let leader = cluster.leader();
    let response = cluster
        .http()
        .post(cluster.url(leader, "/4"))
        .body(url)
        .send()
        .expect("POST /4");
    let status = response.status();
    let body = response.text().unwrap_or_default();
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    cluster.spawn(4, true);
    let applied = cluster.status(leader).expect("status").applied_index;
    cluster.wait_applied(4, applied);
    assert_eq!(cluster.get_ok(4, "/k1"), Some("v1".into()));
    cluster.put_ok(4, "/from-4", "yes");
    assert_eq!(cluster.get_ok(1, "/from-4"), Some("yes".into()));
}

#[test]
fn certificates_rotate_under_load_without_a_failed_request() {
    let cluster = Cluster::start_tls(3, TlsMode::full(), FAST_TLS);
    let paths = tls_paths(&cluster);
    let leader = cluster.leader();
    cluster.put_ok(leader, "/warm", "up");
    let client_ports: Vec<u16> = (1..=3)
        .map(|id| cluster.node(id).unwrap().client_port)
        .collect();
    let peer_ports: Vec<u16> = (1..=3).map(|id| peer_port(&cluster, id)).collect();
    let client_identity = (
        paths.client_cert_file.as_path(),
        paths.client_key_file.as_path(),
    );
    let peer_identity = (
        paths.peer_client_cert_file.as_path(),
        paths.peer_client_key_file.as_path(),
    );
    let old_serials: Vec<String> = client_ports
        .iter()
        .map(|port| {
            tls_exchange(*port, &paths.ca_file, Some(client_identity))
                .expect("exchange")
                .1
        })
        .collect();

    // Two writers: one opens a new connection per request, one keeps its
    // connection alive.
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    // Acknowledged writes of each writer.
    let done = [Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))];
    let total = |done: &[Arc<AtomicU64>; 2]| -> [u64; 2] {
        [
            done[0].load(Ordering::SeqCst),
            done[1].load(Ordering::SeqCst),
        ]
    };
    let fresh = reqwest::blocking::Client::builder()
        .use_preconfigured_tls(
            tls::ClientTls::load(tls::ClientTlsFiles {
                trusted_ca_file: Some(paths.ca_file.clone()),
                cert_file: Some(paths.client_cert_file.clone()),
                key_file: Some(paths.client_key_file.clone()),
            })
            .expect("client TLS")
            .config()
            .as_ref()
            .clone(),
        )
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(15))
        .build()
        .expect("client");
    let kept = cluster.http().clone();
    let writers: Vec<_> = [("fresh", fresh), ("kept", kept)]
        .into_iter()
        .zip(done.iter().cloned())
        .map(|((name, client), done)| {
            let (stop, failed) = (stop.clone(), failed.clone());
            let url = cluster.url(leader, "");
            std::thread::spawn(move || {
                let mut errors = Vec::new();
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    match client
                        .put(format!("{url}/{name}-{i}"))
                        .body(i.to_string())
                        .send()
                    {
                        Ok(r) if r.status() == StatusCode::NO_CONTENT => {
                            done.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(r) => {
                            failed.fetch_add(1, Ordering::SeqCst);
                            errors.push(format!("{name} {i}: {}", r.status()));
                        }
                        Err(e) => {
                            failed.fetch_add(1, Ordering::SeqCst);
                            errors.push(format!("{name} {i}: {e}"));
                        }
                    }
                }
                errors
            })
        })
        .collect();
    wait_for("writes before the rotation", || {
        total(&done).iter().all(|n| *n >= 10)
    });

    cluster
        .reissue_member_certificates()
        .expect("re-issue the certificates");
    let new_serials: Vec<String> = (1..=3)
        .map(|id| file_serial(&paths.member_files(id).0))
        .collect();
    for (i, port) in client_ports.iter().enumerate() {
        assert_ne!(old_serials[i], new_serials[i], "a new serial was issued");
        wait_for("the new client certificate on a new connection", || {
            tls_exchange(*port, &paths.ca_file, Some(client_identity))
                .is_ok_and(|(_, serial)| serial == new_serials[i])
        });
    }
    for (i, port) in peer_ports.iter().enumerate() {
        let new_peer_serial = file_serial(&paths.peer_files(i as u64 + 1).0);
        wait_for("the new peer certificate on a new connection", || {
            tls_exchange(*port, &paths.ca_file, Some(peer_identity))
                .is_ok_and(|(_, serial)| serial == new_peer_serial)
        });
    }
    // Raft keeps committing on the new certificates.
    let before = total(&done);
    wait_for("writes after the rotation", || {
        let now = total(&done);
        now[0] >= before[0] + 10 && now[1] >= before[1] + 10
    });
    stop.store(true, Ordering::SeqCst);
    let errors: Vec<String> = writers
        .into_iter()
        .flat_map(|w| w.join().expect("writer"))
        .collect();
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "requests failed during the rotation: {errors:?}"
    );
    for id in 1..=3 {
        let scrape = scrape(&cluster, id);
        for port in ["client", "peer"] {
            assert!(
                sample(&scrape, "raftkv_tls_reloads_total", &[("port", port)]) >= 1.0,
                "node {id}'s {port} port never reloaded"
            );
        }
    }
    cluster.put_ok(3, "/after-rotation", "yes");
    assert_eq!(cluster.get_ok(1, "/after-rotation"), Some("yes".into()));
}

/// A single node on `listen_addr` with `args`; its exit status if it
/// exited within a few seconds (with its log), or `None` if it was still
/// listening on its client port.
fn start_single(listen_addr: &str, args: &[String]) -> (Option<std::process::ExitStatus>, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let client_port = reserve_port().expect("port");
    let peer_port = reserve_port().expect("port");
    let log_path = dir.path().join("node.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_raftkv"))
        .args(["--cluster", &format!("http://127.0.0.1:{peer_port}")])
        .args(["--port", &client_port.to_string()])
        .args(["--listen-addr", listen_addr])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start raftkv");
    let deadline = Instant::now() + WAIT;
    let outcome = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if std::net::TcpStream::connect(("127.0.0.1", client_port)).is_ok() {
            break None;
        }
        assert!(Instant::now() < deadline, "neither started nor exited");
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();
    (
        outcome,
        std::fs::read_to_string(&log_path).unwrap_or_default(),
    )
}

#[test]
fn a_plaintext_node_off_loopback_refuses_to_start_unless_told() {
    let (exited, log) = start_single("0.0.0.0", &[]);
    let status = exited.unwrap_or_else(|| panic!("started in plaintext on 0.0.0.0:\n{log}"));
    assert!(!status.success(), "{log}");
    for needle in ["--insecure-plaintext", "0.0.0.0", "--cert-file"] {
        assert!(log.contains(needle), "{needle} not in:\n{log}");
    }

    let (exited, log) = start_single("0.0.0.0", &["--insecure-plaintext".to_string()]);
    assert_eq!(
        exited, None,
        "did not start with --insecure-plaintext:\n{log}"
    );

    let pki_dir = tempfile::tempdir().expect("temp dir");
    let pki = tls::dev::Pki::generate(pki_dir.path(), "test CA").expect("CA");
    let (cert, key) = pki
        .issue("node", "node", &["127.0.0.1", "localhost"], 30)
        .expect("leaf");
    let tls_args: Vec<String> = [
        ("--cert-file", &cert),
        ("--key-file", &key),
        ("--trusted-ca-file", &pki.ca_file),
    ]
    .into_iter()
    .flat_map(|(flag, path): (&str, &PathBuf)| [flag.to_string(), path.display().to_string()])
    .collect();
    let (exited, log) = start_single("0.0.0.0", &tls_args);
    assert_eq!(exited, None, "did not start with TLS:\n{log}");

    // A missing file stops the start-up, naming the file.
    let mut broken = tls_args.clone();
    broken[1] = pki_dir.path().join("missing.pem").display().to_string();
    let (exited, log) = start_single("127.0.0.1", &broken);
    assert!(
        exited.is_some_and(|s| !s.success()),
        "started with a missing certificate:\n{log}"
    );
    assert!(log.contains("missing.pem"), "{log}");
}
