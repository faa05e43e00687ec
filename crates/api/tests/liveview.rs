//! The live view's data: a peer's report is untrusted bytes (a property
//! test: any bytes, or a valid report damaged, parse or fail with a typed
//! error, never panic, and a report over the size bound is refused), the
//! aggregator's view of reachable, dead and lying members, and the routes
//! on a single node.

use std::future::IntoFuture;
use std::time::{Duration, Instant};

use api::liveview::{
    parse_report, Aggregator, LatencySummary, LiveView, MemberReport, PeerTraffic, ReportError,
    ReportedEvent, ReportedProgress, EVENT_KINDS, MAX_REPORT_BYTES, ROLES,
};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use proptest::prelude::*;
use tower::ServiceExt;

fn report(id: u64, role: &str, term: u64, last_index: u64) -> MemberReport {
    MemberReport {
        id,
        leader_id: Some(1),
        role: role.to_string(),
        term,
        last_index,
        commit_index: last_index,
        applied_index: last_index,
        snapshot_index: 0,
        progress: Vec::new(),
        peers: Vec::new(),
        latency: LatencySummary::default(),
        events: Vec::new(),
    }
}

fn arbitrary_report() -> impl Strategy<Value = MemberReport> {
    let event = (
        prop::sample::select(EVENT_KINDS.to_vec()),
        prop::option::of(any::<u64>()),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(|(kind, subject, index, term, at_ms)| ReportedEvent {
            kind: kind.to_string(),
            subject,
            index,
            term,
            at_ms,
        });
    let peer =
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(id, msgs, bytes)| PeerTraffic {
            id,
            msgs_sent: msgs,
            bytes_sent: bytes,
            ..PeerTraffic::default()
        });
    (
        any::<u64>(),
        prop::sample::select(ROLES.to_vec()),
        any::<u64>(),
        any::<u64>(),
        prop::collection::vec(event, 0..8),
        prop::collection::vec(peer, 0..8),
    )
        .prop_map(|(id, role, term, last, events, peers)| MemberReport {
            events,
            peers,
            progress: vec![ReportedProgress { id, matched: last }],
            ..report(id, role, term, last)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_bytes_parse_or_fail_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_report(&bytes);
    }

    #[test]
    fn a_damaged_report_parses_or_fails_without_panicking(
        report in arbitrary_report(),
        cut in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    ) {
        let mut bytes = serde_json::to_vec(&report).unwrap();
        prop_assert_eq!(parse_report(&bytes), Ok(report));
        for (at, byte) in flips {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        let end = cut.index(bytes.len() + 1);
        // Whatever it parses to, the aggregator takes it without panicking.
        if let Ok(damaged) = parse_report(&bytes[..end]) {
            let mut aggregator = Aggregator::new(1);
            let id = damaged.id;
            aggregator.observe(id, Ok(damaged.clone()), Instant::now(), 0);
            aggregator.observe(id, Ok(damaged), Instant::now() + Duration::from_millis(500), 500);
            let _ = aggregator.view(&[(id, "http://x".to_string())], 500);
        }
    }
}

#[test]
fn reports_out_of_bounds_are_refused() {
    let oversized = vec![b' '; MAX_REPORT_BYTES + 1];
    assert_eq!(parse_report(&oversized), Err(ReportError::TooLarge));
    let bad_role = serde_json::to_vec(&report(1, "emperor", 1, 1)).unwrap();
    assert!(matches!(
        parse_report(&bad_role),
        Err(ReportError::Invalid(_))
    ));
    let mut many = report(1, "leader", 1, 1);
    many.events = (0..=raftnode::MAX_EVENTS as u64)
        .map(|index| ReportedEvent {
            kind: "snapshot_taken".into(),
            subject: None,
            index,
            term: 1,
            at_ms: 0,
        })
        .collect();
    let many = serde_json::to_vec(&many).unwrap();
    assert!(matches!(parse_report(&many), Err(ReportError::Invalid(_))));
    let mut unknown_kind = report(1, "leader", 1, 1);
    unknown_kind.events.push(ReportedEvent {
        kind: "<script>".into(),
        subject: None,
        index: 1,
        term: 1,
        at_ms: 0,
    });
    let unknown_kind = serde_json::to_vec(&unknown_kind).unwrap();
    assert!(matches!(
        parse_report(&unknown_kind),
        Err(ReportError::Invalid(_))
    ));
    assert!(matches!(
        parse_report(b"{\"id\":1"),
        Err(ReportError::Malformed(_))
    ));
}

fn members() -> Vec<(u64, String)> {
    (1..=3)
        .map(|id| (id, format!("http://peer-{id}")))
        .collect()
}

#[test]
fn the_view_keeps_a_dead_member_and_follows_the_new_leader() {
    let mut aggregator = Aggregator::new(2);
    let t0 = Instant::now();
    let mut leader = report(1, "leader", 2, 100);
    leader.progress = vec![
        ReportedProgress {
            id: 1,
            matched: 100,
        },
        ReportedProgress { id: 2, matched: 90 },
        ReportedProgress {
            id: 3,
            matched: 100,
        },
    ];
    leader.peers = vec![PeerTraffic {
        id: 2,
        msgs_sent: 10,
        bytes_sent: 1000,
        ..PeerTraffic::default()
    }];
    aggregator.observe(1, Ok(leader.clone()), t0, 1_000);
    aggregator.observe(2, Ok(report(2, "follower", 2, 90)), t0, 1_000);
    aggregator.observe(3, Ok(report(3, "follower", 2, 100)), t0, 1_000);
    let view = aggregator.view(&members(), 1_000);
    assert_eq!(view.leader_id, Some(1));
    assert_eq!(view.members[1].lag, Some(10), "{view:#?}");
    assert_eq!(view.members[1].matched_index, Some(90));
    assert!(view.members.iter().all(|m| m.reachable));

    // A second report half a second later gives the link's rate.
    leader.peers[0].msgs_sent = 60;
    leader.peers[0].bytes_sent = 6000;
    let t1 = t0 + Duration::from_millis(500);
    aggregator.observe(1, Ok(leader), t1, 1_500);
    let view = aggregator.view(&members(), 1_500);
    let link = view
        .links
        .iter()
        .find(|l| l.from == 1 && l.to == 2)
        .expect("a link");
    assert_eq!(link.msgs_per_s, 100.0);
    assert_eq!(link.bytes_per_s, 10_000.0);

    // The leader dies; 3 takes over in term 3.
    let t2 = t1 + Duration::from_millis(500);
    aggregator.observe(1, Err("unreachable: connection refused".into()), t2, 2_000);
    let mut new_leader = report(3, "leader", 3, 101);
    new_leader.events.push(ReportedEvent {
        kind: "leader_changed".into(),
        subject: Some(3),
        index: 100,
        term: 3,
        at_ms: 1_900,
    });
    let mut follower = report(2, "follower", 3, 101);
    follower.events = new_leader.events.clone();
    follower.events[0].at_ms = 1_950;
    aggregator.observe(2, Ok(follower), t2, 2_000);
    aggregator.observe(3, Ok(new_leader), t2, 2_000);
    let view = aggregator.view(&members(), 2_000);
    assert_eq!(view.leader_id, Some(3));
    let dead = &view.members[0];
    assert!(!dead.reachable);
    assert_eq!(dead.role, "leader", "the dead member keeps its last report");
    assert_eq!(dead.last_seen_ms, Some(1_500));
    assert!(dead.error.as_deref().is_some_and(|e| e.contains("refused")));
    assert!(
        view.links.iter().all(|l| l.from != 1),
        "no rates from a dead member"
    );
    // Both members reported the leader change: it is shown once.
    let changes: Vec<_> = view
        .events
        .iter()
        .filter(|e| e.kind == "leader_changed")
        .collect();
    assert_eq!(changes.len(), 1, "{:?}", view.events);
    assert_eq!(changes[0].subject, Some(3));
    let seen_dead = |view: &api::liveview::ClusterView, kind: &str| {
        view.events
            .iter()
            .filter(|e| e.kind == kind && e.subject == Some(1))
            .count()
    };
    assert_eq!(
        seen_dead(&view, "member_unreachable"),
        1,
        "{:?}",
        view.events
    );

    // Still dead at the next poll: no second event. Then it comes back.
    let t3 = t2 + Duration::from_millis(500);
    aggregator.observe(1, Err("no report within 400 ms".into()), t3, 2_500);
    assert_eq!(
        seen_dead(&aggregator.view(&members(), 2_500), "member_unreachable"),
        1
    );
    aggregator.observe(1, Ok(report(1, "follower", 3, 101)), t3, 3_000);
    let view = aggregator.view(&members(), 3_000);
    assert!(view.members[0].reachable);
    assert_eq!(view.members[0].role, "follower");
    assert_eq!(seen_dead(&view, "member_reachable"), 1);
}

#[test]
fn a_member_answering_with_another_id_is_unreachable() {
    let mut aggregator = Aggregator::new(1);
    aggregator.observe(1, Ok(report(1, "leader", 1, 5)), Instant::now(), 1);
    aggregator.observe(2, Ok(report(7, "leader", 9, 5)), Instant::now(), 1);
    let view = aggregator.view(&members(), 1);
    assert_eq!(view.leader_id, Some(1));
    assert!(!view.members[1].reachable);
    assert_eq!(view.members[2].role, "unknown", "never reported");
}

async fn get(app: &axum::Router, path: &str) -> (StatusCode, String, String) {
    let request = Request::get(path).body(Body::empty()).unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        content_type,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[tokio::test]
async fn a_single_node_serves_its_report_the_view_and_the_page() {
    let (store, _consensus) = kvstore::testing::local_store(kvstore::KvConfig::new(1));
    let metrics = api::Metrics::new();
    let view = LiveView::new(
        store.clone(),
        transport::TransportStats::default,
        metrics.latency_ring(),
    );
    let client = view.serve_on(api::router_with_metrics(
        store,
        api::ApiConfig::default(),
        metrics,
    ));
    let put = Request::put("/k").body(Body::from("v")).unwrap();
    assert_eq!(
        client.clone().oneshot(put).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );

    let (status, _, body) = get(&view.peer_router(), api::liveview::MEMBER_REPORT_PATH).await;
    assert_eq!(status, StatusCode::OK);
    let report = parse_report(body.as_bytes()).expect("a member's own report parses");
    assert_eq!((report.id, report.role.as_str()), (1, "leader"));
    assert_eq!(report.latency.count, 1, "the PUT was timed");

    let (status, kind, body) = get(&client, "/ui").await;
    assert_eq!(status, StatusCode::OK);
    assert!(kind.starts_with("text/html"));
    assert!(body.contains("/ui/view.js"));
    let (status, kind, _) = get(&client, "/ui/view.js").await;
    assert_eq!(
        (status, kind.starts_with("text/javascript")),
        (StatusCode::OK, true)
    );

    let (status, _, body) = get(&client, "/ui/cluster.json").await;
    assert_eq!(status, StatusCode::OK);
    let cluster: api::liveview::ClusterView = serde_json::from_str(&body).unwrap();
    assert_eq!(cluster.served_by, 1);
    assert_ne!(cluster.generated_at_ms, 0, "answered after the first poll");

    // The event stream sends views until the view is closed, then ends.
    let request = Request::get("/ui/events").body(Body::empty()).unwrap();
    let response = client.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let first = body.frame().await.expect("a first event").unwrap();
    let text = String::from_utf8_lossy(first.data_ref().unwrap()).into_owned();
    assert!(text.starts_with("data: {\"served_by\":1"), "{text}");
    view.close();
    let rest = tokio::time::timeout(Duration::from_secs(30), body.collect()).await;
    assert!(rest.expect("the stream ends once closed").is_ok());

    // Without the view mounted, /ui is still reserved: not a key.
    let (store, _consensus) = kvstore::testing::local_store(kvstore::KvConfig::new(1));
    let bare = api::router(store, api::ApiConfig::default());
    assert_eq!(get(&bare, "/ui").await.0, StatusCode::BAD_REQUEST);
}

/// The view of member 1 polling member 2 at `peer_url`; `None` until it answered.
async fn polled_member_2(view: &LiveView, client: &axum::Router) -> api::liveview::MemberView {
    let _ = view;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _, body) = get(client, "/ui/cluster.json").await;
        assert_eq!(status, StatusCode::OK);
        let cluster: api::liveview::ClusterView = serde_json::from_str(&body).unwrap();
        if let Some(member) = cluster.members.iter().find(|m| m.id == 2) {
            if member.reachable || member.error.is_some() {
                return member.clone();
            }
        }
        assert!(Instant::now() < deadline, "member 2 never polled: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Members whose peer URLs are https:// are polled over TLS with the member's peer
/// certificate; without peer TLS they show as unreachable.
#[tokio::test]
async fn members_with_https_peer_urls_are_polled_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = tls::dev::Pki::generate(dir.path(), "peer CA").unwrap();
    // Member 2 answers its report on a TLS peer port with client-cert auth.
    let (store2, _consensus2) = kvstore::testing::local_store(kvstore::KvConfig::new(2));
    let view2 = LiveView::new(
        store2,
        transport::TransportStats::default,
        api::Metrics::new().latency_ring(),
    );
    let (cert, key) = pki
        .issue("member-2", "member-2", &["127.0.0.1"], 30)
        .unwrap();
    let server_tls = tls::ServerTls::load(
        tls::PortKind::Peer,
        tls::ServerTlsFiles {
            cert_file: cert,
            key_file: key,
            trusted_ca_file: Some(pki.ca_file.clone()),
            client_cert_auth: true,
            allowed_cn: None,
            allowed_hostname: None,
        },
    )
    .unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer_url = format!("https://{}", tcp.local_addr().unwrap());
    let listener = tls::Listener::tls(tcp, server_tls.clone(), tls::ListenerConfig::default());
    tokio::spawn(axum::serve(listener, view2.peer_router()).into_future());

    let (cert, key) = pki
        .issue("member-1", "member-1", &["127.0.0.1"], 30)
        .unwrap();
    let peer_tls = tls::ClientTls::load(tls::ClientTlsFiles {
        trusted_ca_file: Some(pki.ca_file.clone()),
        cert_file: Some(cert),
        key_file: Some(key),
    })
    .unwrap();
    for (tls, reachable) in [(Some(peer_tls), true), (None, false)] {
        let (store1, _consensus1) = kvstore::testing::local_store(kvstore::KvConfig::new(1));
        let metrics = api::Metrics::new();
        let view1 = LiveView::with_peer_tls(
            store1.clone(),
            transport::TransportStats::default,
            metrics.latency_ring(),
            tls,
        );
        let client = view1.serve_on(api::router_with_metrics(
            store1,
            api::ApiConfig::default(),
            metrics,
        ));
        let add = Request::post("/2")
            .body(Body::from(peer_url.clone()))
            .unwrap();
        assert_eq!(
            client.clone().oneshot(add).await.unwrap().status(),
            StatusCode::NO_CONTENT
        );
        let member = polled_member_2(&view1, &client).await;
        assert_eq!(member.reachable, reachable, "{member:?}");
        if !reachable {
            let error = member.error.unwrap_or_default();
            assert!(error.contains("no peer TLS is configured"), "{error}");
        }
        view1.close();
    }
    assert!(server_tls.status().handshakes_total >= 1);
}
