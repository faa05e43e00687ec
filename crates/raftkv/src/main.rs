//! The `raftkv` binary: raftexample's `main.go`, rebuilt.
//!
//! Parses raftexample's flags (plus raftkv's own), wires the layers
//! (wal → raftnode ↔ transport, kvstore above raftnode, api above kvstore),
//! serves the peer and client HTTP endpoints and handles signals.
//! Nothing here knows Raft: it only configures and connects the crates.

// Flag doc comments are `--help` text (`<id>`, `<dir>`), not HTML.
#![allow(rustdoc::invalid_html_tags)]

mod flags;

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
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("server error: {0}")]
    Serve(std::io::Error),
}

async fn run(flags: Flags) -> Result<(), MainError> {
    // Listen for signals first, so a SIGTERM during start-up is a clean stop.
    let signal = tokio::spawn(shutdown_signal());
    let members = flags.members().map_err(MainError::Flags)?;
    let own_url = flags.own_peer_url(&members).map_err(MainError::Flags)?;
    let config = node_config(&flags, members.clone());

    let auto_compaction = kvstore::AutoCompaction::parse(
        &flags.auto_compaction_mode,
        &flags.auto_compaction_retention,
    )
    .map_err(MainError::Flags)?;
    let (unattached, machine) = kvstore::new(kvstore::KvConfig {
        node_id: flags.id,
        request_timeout_ms: flags.request_timeout_ms,
        max_in_flight_writes: flags.max_in_flight_writes,
        max_txn_ops: flags.max_txn_ops,
        quota_bytes: flags.quota_backend_bytes,
    });
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
        "raftkv starting"
    );
    let kv = unattached.attach(node.consensus());
    let _compactor = kvstore::compactor::spawn(kv.clone(), auto_compaction).map(AbortOnDrop);

    let peer_addr = flags::listen_addr_of(&own_url).map_err(MainError::Flags)?;
    let client_addr = format!("{}:{}", flags.listen_addr, flags.port);
    let peer_listener = bind(&peer_addr).await?;
    let client_listener = bind(&client_addr).await?;

    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let peer_server = serve(peer_listener, node.peer_router(), shutdown_rx.clone());
    let api_router = api::router(
        kv,
        api::ApiConfig {
            max_value_bytes: flags.max_value_bytes,
            request_timeout_ms: flags.request_timeout_ms,
            max_request_bytes: flags.max_request_bytes,
            cluster_id: flags::cluster_id(&flags.cluster_token),
            ..api::ApiConfig::default()
        },
    );
    // TCP_NODELAY on client connections, as etcd has.
    let client_server = serve_clients(
        api::client_listener(client_listener),
        api_router,
        shutdown_rx,
    );
    let peer_task = tokio::spawn(peer_server);
    let client_task = tokio::spawn(client_server);

    tokio::select! {
        signal = signal => {
            let signal = signal.unwrap_or("signal");
            info!(signal, "shutting down: draining requests")
        }
        _ = node.stopped() => info!("raft node stopped; shutting down"),
    }
    // Stop accepting clients and let in-flight requests finish (bounded),
    // then stop the Raft loop: everything acknowledged is already fsynced.
    let _ = shutdown_tx.send(true);
    let drain = async {
        let _ = client_task.await;
    };
    if tokio::time::timeout(Duration::from_secs(5), drain)
        .await
        .is_err()
    {
        warn!("client requests still in flight after 5 s; stopping anyway");
    }
    let reason = node.shutdown().await?;
    peer_task.abort();
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

async fn bind(addr: &str) -> Result<TcpListener, MainError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| MainError::Listen {
            addr: addr.to_string(),
            source,
        })
}

async fn serve(
    listener: TcpListener,
    router: axum::Router,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), MainError> {
    let app = router.into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await
        .map_err(MainError::Serve)
}

/// [`serve`] for the client port, whose listener sets `TCP_NODELAY`.
async fn serve_clients(
    listener: api::ClientListener,
    router: axum::Router,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), MainError> {
    let app = router.into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await
        .map_err(MainError::Serve)
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
