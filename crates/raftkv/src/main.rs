//! The `raftkv` binary: raftexample's `main.go`, rebuilt.
//!
//! Parses raftexample's flags (plus raftkv's own), wires the layers
//! (wal → raftnode ↔ transport, kvstore above raftnode, api above kvstore),
//! loads the TLS files the flags name (and reloads them when they change),
//! serves the peer and client HTTP endpoints, in plaintext or TLS, and
//! handles signals.
//! Nothing here knows Raft: it only configures and connects the crates.

// Flag doc comments are `--help` text (`<id>`, `<dir>`), not HTML.
#![allow(rustdoc::invalid_html_tags)]

mod flags;
mod repair;
mod snapshot_cmd;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use raftnode::{NodeConfig, RaftNode, StartKind};
use tokio::net::TcpListener;
use tracing::{error, info, warn};

use flags::Flags;

fn main() -> ExitCode {
    init_tracing();
    if std::env::args().nth(1).as_deref() == Some("repair-wal") {
        return repair::main(std::env::args().skip(1));
    }
    if std::env::args().nth(1).as_deref() == Some("snapshot") {
        return snapshot_cmd::main(std::env::args().skip(1));
    }
    let flags = Flags::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("raftkv-io")
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(flags)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

/// Errors that stop the process, each with the context a user needs.
#[derive(Debug, thiserror::Error)]
enum MainError {
    #[error("{0}")]
    Flags(String),
    #[error("cannot start the node: {0}")]
    Node(#[from] raftnode::NodeError),
    #[error("cannot load TLS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("{server} server error: {source}")]
    Serve {
        server: &'static str,
        source: std::io::Error,
    },
    #[error("{server} server stopped unexpectedly: {reason}")]
    ServerTask {
        server: &'static str,
        reason: String,
    },
}

/// The limits of the layers, each derived from one flag, so that no layer's
/// bound makes another's unreachable.
#[derive(Debug)]
struct Limits {
    kv: kvstore::KvConfig,
    api: api::ApiConfig,
    /// raftnode's request queue: at least one slot per request the API admits.
    request_queue_len: usize,
}

fn limits(flags: &Flags) -> Result<Limits, MainError> {
    let max_concurrent_requests = flags
        .max_concurrent_requests
        .unwrap_or_else(|| api::ApiConfig::concurrent_requests_for(flags.max_in_flight_writes));
    if flags.max_in_flight_writes == 0 || max_concurrent_requests <= flags.max_in_flight_writes {
        return Err(MainError::Flags(format!(
            "--max-concurrent-requests ({max_concurrent_requests}) must be above \
             --max-in-flight-writes ({}), which must be positive",
            flags.max_in_flight_writes
        )));
    }
    let kv = kvstore::KvConfig {
        node_id: flags.id,
        request_timeout_ms: flags.request_timeout_ms,
        max_in_flight_writes: flags.max_in_flight_writes,
        max_txn_ops: flags.max_txn_ops,
        quota_bytes: flags.quota_backend_bytes,
        election_timeout_ms: flags.tick_ms.saturating_mul(flags.election_ticks as u64),
        watch: kvstore::WatchConfig {
            progress_notify_interval_ms: flags.watch_progress_notify_interval_ms,
            ..kvstore::WatchConfig::default()
        },
    };
    let api = api::ApiConfig {
        max_value_bytes: flags.max_value_bytes,
        request_timeout_ms: flags.request_timeout_ms,
        max_concurrent_requests,
        max_request_bytes: flags.max_request_bytes,
        cluster_id: flags::cluster_id(&flags.cluster_token),
        // Set once the TLS files are loaded.
        peer_tls: None,
    };
    let request_queue_len = NodeConfig::new(flags.id, Vec::new(), flags.data_dir())
        .request_queue_len
        .max(max_concurrent_requests);
    Ok(Limits {
        kv,
        api,
        request_queue_len,
    })
}

/// What a server task's end means for the process: an error or a panic is
/// reported (the process then exits non-zero), a clean end is fine.
fn server_outcome(
    server: &'static str,
    joined: Result<Result<(), MainError>, tokio::task::JoinError>,
) -> Result<(), MainError> {
    match joined {
        Ok(result) => result,
        Err(e) if e.is_panic() => Err(MainError::ServerTask {
            server,
            reason: format!("panicked: {}", panic_message(e.into_panic())),
        }),
        Err(e) => Err(MainError::ServerTask {
            server,
            reason: e.to_string(),
        }),
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "(non-text panic payload)".to_string()
    }
}

async fn run(flags: Flags) -> Result<(), MainError> {
    // Listen for signals first, so a SIGTERM during start-up is a clean stop.
    let signal = tokio::spawn(shutdown_signal());
    let members = flags.members().map_err(MainError::Flags)?;
    let own_url = flags.own_peer_url(&members).map_err(MainError::Flags)?;
    let mut limits = limits(&flags)?;
    let tls_plan = flags.tls_plan(&members).map_err(MainError::Flags)?;
    flags
        .check_exposure(&own_url, &tls_plan)
        .map_err(MainError::Flags)?;
    // Every TLS file is read before anything starts: a bad one stops the
    // start-up with the file and the reason.
    let tls = LoadedTls::load(&tls_plan)?;
    let mut config = node_config(&flags, members.clone());
    // Outgoing peer traffic: the transport's frames and snapshots, the
    // followers' forwarded lease requests, the live view's polling.
    config.peer_tls = tls.peer_client.clone();
    limits.api.peer_tls = tls.peer_client.clone();
    config.attributes = flags.attributes(&own_url).map_err(MainError::Flags)?;
    config.request_queue_len = limits.request_queue_len;
    // One registry per node, passed explicitly (no process-global one).
    let metrics = api::Metrics::new();
    config.observer = Some(std::sync::Arc::new(metrics.clone()));
    for server in tls.servers() {
        metrics.add_tls_source(Box::new(move || server.status()));
    }
    let _tls_reloader = tls.spawn_reloader(flags.tls_reload_interval_ms);

    let auto_compaction = kvstore::AutoCompaction::parse(
        &flags.auto_compaction_mode,
        &flags.auto_compaction_retention,
    )
    .map_err(MainError::Flags)?;
    let (unattached, machine) = kvstore::new(limits.kv);
    let node = RaftNode::start(config, Box::new(machine))?;
    let start = match node.start_kind() {
        StartKind::Fresh => "fresh start",
        StartKind::Join => "join",
        StartKind::Restart => "restart",
    };
    info!(
        id = flags.id,
        peers = %flags.cluster,
        data_dir = %flags.data_dir().display(),
        start,
        client_port = flags.port,
        client_tls = tls.client.is_some(),
        peer_tls = tls.peer.is_some(),
        "raftkv starting"
    );
    let kv = unattached.attach(node.consensus());
    let transport = node.transport().clone();
    metrics.set_peer_source(Box::new(move || transport.stats()));
    let _compactor = kvstore::compactor::spawn(kv.clone(), auto_compaction).map(AbortOnDrop);
    let _lease_expiry = AbortOnDrop(kvstore::lessor::spawn(kv.clone()));

    let peer_addr = flags::listen_addr_of(&own_url).map_err(MainError::Flags)?;
    let client_addr = format!("{}:{}", flags.listen_addr, flags.port);
    let peer_listener = bind(&peer_addr).await?;
    let client_listener = bind(&client_addr).await?;

    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let transport = node.transport().clone();
    let view = api::liveview::LiveView::with_peer_tls(
        kv.clone(),
        move || transport.stats(),
        metrics.latency_ring(),
        tls.peer_client.clone(),
    );
    // The peer port also answers followers' forwarded lease requests and
    // the live view's member reports.
    let peer_router = node
        .transport()
        .router()
        .merge(api::peer_router(kv.clone(), &limits.api))
        .merge(view.peer_router());
    let peer_listener = tls_listener(peer_listener, tls.peer.clone(), false);
    let peer_server = serve("peer", peer_listener, peer_router, shutdown_rx.clone());
    let api_router = view.serve_on(api::router_with_metrics(kv, limits.api, metrics));
    // TCP_NODELAY on client connections, as etcd has.
    let client_listener = tls_listener(client_listener, tls.client.clone(), true);
    let client_server = serve("client", client_listener, api_router, shutdown_rx);
    let mut peer_task = tokio::spawn(peer_server);
    let mut client_task = tokio::spawn(client_server);

    // A server that ends on its own (an accept error, a panic) stops the
    // process too, with its error.
    let mut failure: Option<MainError> = None;
    let mut client_done = false;
    tokio::select! {
        signal = signal => {
            let signal = signal.unwrap_or("signal");
            info!(signal, "shutting down: draining requests")
        }
        _ = node.stopped() => info!("raft node stopped; shutting down"),
        joined = &mut client_task => {
            client_done = true;
            failure = server_outcome("client", joined).err();
            error!("client server ended; shutting down");
        }
        joined = &mut peer_task => {
            failure = server_outcome("peer", joined).err();
            error!("peer server ended; shutting down");
        }
    }
    // Stop accepting clients and let in-flight requests finish (bounded),
    // then stop the Raft loop: everything acknowledged is already fsynced.
    view.close(); // open pages' event streams would hold the drain up
    let _ = shutdown_tx.send(true);
    if !client_done {
        match tokio::time::timeout(Duration::from_secs(5), &mut client_task).await {
            Ok(joined) => {
                if let Err(e) = server_outcome("client", joined) {
                    failure.get_or_insert(e);
                }
            }
            Err(_elapsed) => {
                warn!("client requests still in flight after 5 s; stopping anyway");
                client_task.abort();
            }
        }
    }
    let reason = node.shutdown().await;
    peer_task.abort();
    let reason = reason?;
    if let Some(e) = failure {
        return Err(e);
    }
    info!(?reason, "raftkv stopped");
    Ok(())
}

fn node_config(flags: &Flags, members: Vec<(u64, String)>) -> NodeConfig {
    let mut config = NodeConfig::new(flags.id, members, flags.data_dir());
    config.cluster_id = flags::cluster_id(&flags.cluster_token);
    config.join = flags.join;
    config.snapshot_count = flags.snapshot_count;
    config.snapshot_log_percent = flags.snapshot_log_percent;
    config.catch_up_entries = flags.catch_up_entries;
    config.request_timeout_ms = flags.request_timeout_ms;
    config.tick_ms = flags.tick_ms;
    config.election_ticks = flags.election_ticks;
    config.wal_segment_bytes = flags.wal_segment_bytes;
    config.enable_fault_routes = flags.enable_fault_injection;
    config
}

/// The TLS configurations of this node, loaded from the files the flags
/// name.
struct LoadedTls {
    /// The client port's (`None`: plaintext).
    client: Option<tls::ServerTls>,
    /// The peer port's (`None`: http:// peers).
    peer: Option<tls::ServerTls>,
    /// The outgoing peer connections' (transport, forwarded requests, live
    /// view): the peer CA verifies the members, the peer certificate is
    /// this member's identity.
    peer_client: Option<tls::ClientTls>,
}

impl LoadedTls {
    fn load(plan: &flags::TlsPlan) -> Result<LoadedTls, MainError> {
        let server = |port, files: &tls::ServerTlsFiles| tls::ServerTls::load(port, files.clone());
        let client = plan
            .client
            .as_ref()
            .map(|files| server(tls::PortKind::Client, files))
            .transpose()?;
        let peer = plan
            .peer
            .as_ref()
            .map(|files| server(tls::PortKind::Peer, files))
            .transpose()?;
        let peer_client = plan
            .peer
            .as_ref()
            .map(|files| {
                tls::ClientTls::load(tls::ClientTlsFiles {
                    trusted_ca_file: files.trusted_ca_file.clone(),
                    cert_file: Some(files.cert_file.clone()),
                    key_file: Some(files.key_file.clone()),
                })
            })
            .transpose()?;
        Ok(LoadedTls {
            client,
            peer,
            peer_client,
        })
    }

    fn servers(&self) -> Vec<tls::ServerTls> {
        self.client.iter().chain(&self.peer).cloned().collect()
    }

    /// Watches the files for changes (rotation without a restart); `None`
    /// when no port speaks TLS.
    fn spawn_reloader(&self, interval_ms: u64) -> Option<AbortOnDrop> {
        let servers = self.servers();
        let clients: Vec<tls::ClientTls> = self.peer_client.iter().cloned().collect();
        if servers.is_empty() && clients.is_empty() {
            return None;
        }
        Some(AbortOnDrop(tls::spawn_reloader(
            servers,
            clients,
            interval_ms,
        )))
    }
}

/// A listener that speaks TLS with `tls`, or plain TCP without.
fn tls_listener(tcp: TcpListener, tls: Option<tls::ServerTls>, nodelay: bool) -> NodeListener {
    use axum::serve::ListenerExt;
    let config = tls::ListenerConfig {
        nodelay,
        ..tls::ListenerConfig::default()
    };
    let listener = match tls {
        Some(tls) => tls::Listener::tls(tcp, tls, config),
        None => tls::Listener::plain(tcp, config),
    };
    // The no-op tap gives the handlers the peer's address (axum provides
    // `ConnectInfo<SocketAddr>` for tapped listeners).
    listener.tap_io(keep_stream)
}

/// A served port's listener.
type NodeListener = axum::serve::TapIo<tls::Listener, fn(&mut tls::Stream)>;

fn keep_stream(_stream: &mut tls::Stream) {}

async fn bind(addr: &str) -> Result<TcpListener, MainError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| MainError::Listen {
            addr: addr.to_string(),
            source,
        })
}

async fn serve<L>(
    server: &'static str,
    listener: L,
    router: axum::Router,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), MainError>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
    for<'a> SocketAddr: axum::extract::connect_info::Connected<axum::serve::IncomingStream<'a, L>>,
{
    let app = router.into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await
        .map_err(|source| MainError::Serve { server, source })
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

/// Aborts a background task when the node's `run` returns.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_write_bound_flag_is_reachable_through_every_layer() {
        for args in [
            vec!["raftkv"],
            vec!["raftkv", "--max-in-flight-writes", "100000"],
            vec![
                "raftkv",
                "--max-in-flight-writes",
                "10",
                "--max-concurrent-requests",
                "11",
            ],
        ] {
            let flags = Flags::parse_from(&args);
            let limits = limits(&flags).expect("valid limits");
            assert_eq!(limits.kv.max_in_flight_writes, flags.max_in_flight_writes);
            assert!(
                limits.api.max_concurrent_requests > flags.max_in_flight_writes,
                "{args:?}: the API cap hides the write bound"
            );
            assert!(
                limits.request_queue_len >= limits.api.max_concurrent_requests,
                "{args:?}: raftnode's queue hides the write bound"
            );
        }
        let defaults = limits(&Flags::parse_from(["raftkv"])).expect("defaults");
        assert_eq!(
            defaults.kv.max_in_flight_writes,
            kvstore::KvConfig::DEFAULT_MAX_IN_FLIGHT_WRITES
        );
        assert_eq!(
            defaults.api.max_concurrent_requests,
            api::ApiConfig::DEFAULT_MAX_CONCURRENT_REQUESTS
        );
        assert_eq!(
            defaults.kv.request_timeout_ms,
            kvstore::KvConfig::DEFAULT_REQUEST_TIMEOUT_MS
        );
        let hidden = Flags::parse_from([
            "raftkv",
            "--max-in-flight-writes",
            "10",
            "--max-concurrent-requests",
            "10",
        ]);
        assert!(limits(&hidden).is_err());
    }

    #[tokio::test]
    async fn a_server_error_or_panic_is_reported() {
        let panicked = tokio::spawn(async { panic!("boom") }).await;
        let error = server_outcome("client", panicked).unwrap_err();
        assert!(error
            .to_string()
            .contains("client server stopped unexpectedly: panicked: boom"));
        let failed = Ok(Err(MainError::Serve {
            server: "client",
            source: std::io::Error::other("accept failed"),
        }));
        assert!(server_outcome("client", failed)
            .unwrap_err()
            .to_string()
            .contains("accept failed"));
        assert!(server_outcome("client", Ok(Ok(()))).is_ok());
    }
}
