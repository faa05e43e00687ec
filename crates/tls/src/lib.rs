//! TLS for raftkv's client and peer ports, configured with etcd's flags.
//!
//! # What it owns
//! - **Configuration from etcd's flags**: [`ServerTls::load`] reads `--cert-file`,
//!   `--key-file`, `--trusted-ca-file`, `--client-cert-auth` (and their `--peer-*` twins,
//!   `--peer-cert-allowed-cn`, `--peer-cert-allowed-hostname`) as [`ServerTlsFiles`];
//!   [`ClientTls::load`] reads the outgoing side (the CA that signed members' certificates
//!   and this member's client certificate). Errors name the flag, the file and what is
//!   wrong ([`TlsError`]).
//! - **Reload**: [`ServerTls::reload_if_changed`], [`ClientTls::reload_if_changed`] and the
//!   polling task [`spawn_reloader`], which also warns about certificates that expire within
//!   [`EXPIRY_WARNING_DAYS`]. Each configuration keeps one rustls config whose certificate
//!   resolver and verifiers read the current state, so new handshakes use new files and
//!   established connections are untouched.
//! - **Handshake policy**: [`Listener`], an [`axum::serve::Listener`] that runs every
//!   handshake in its own task, bounded in number and time, answers plain HTTP on a TLS port
//!   with a 400 that says so, and counts failures by a fixed set of reasons
//!   ([`FailureReason`], reported in [`TlsStatus`]), logging each source once.
//! - **A development PKI** (`dev::Pki`, feature `dev-certs`): a throwaway CA and leaf
//!   certificates for tests and local clusters.
//!
//! # What it does not own
//! No HTTP routing or serving (the caller passes the [`Listener`] to `axum::serve`), no flag
//! parsing (the caller builds [`ServerTlsFiles`] / [`ClientTlsFiles`]), no metrics registry
//! (callers export [`TlsStatus`]), no system trust store: only the configured CA files are
//! trusted.
//!
//! # Invariants
//! - A handshake never blocks accept: it runs in its own task with a timeout; beyond
//!   [`ListenerConfig::max_concurrent_handshakes`] new connections are closed at once.
//! - A failed reload never replaces a working configuration: the old one stays in use and
//!   the error is returned (and logged by the reloader).
//! - No client certificate is trusted unless it chains to the configured CA; with
//!   `client_cert_auth` one is required, and `allowed_cn` / `allowed_hostname` are checked
//!   after the chain.
//! - No TLS session resumption, on either side: every new connection verifies the peer's
//!   certificate against the files loaded at that moment.
//! - Only the `ring` crypto provider is used, passed explicitly (never the process default).
//! - Nothing a client sends can panic the listener.
//!
//! # Example
//! A TLS server with client-certificate authentication and a client that presents a
//! certificate from the same CA.
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! use tls::{ClientTls, ClientTlsFiles, Listener, ListenerConfig, PortKind, ServerTls, ServerTlsFiles};
//!
//! let dir = tempfile::tempdir()?;
//! let pki = tls::dev::Pki::generate(dir.path(), "example CA")?;
//! let (cert_file, key_file) = pki.issue("server", "node1", &["127.0.0.1"], 30)?;
//! let (client_cert, client_key) = pki.issue("client", "node2", &["127.0.0.1"], 30)?;
//! let server = ServerTls::load(PortKind::Peer, ServerTlsFiles {
//!     cert_file,
//!     key_file,
//!     trusted_ca_file: Some(pki.ca_file.clone()),
//!     client_cert_auth: true,
//!     allowed_cn: None,
//!     allowed_hostname: None,
//! })?;
//! let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = tcp.local_addr()?;
//! let mut listener = Listener::tls(tcp, server.clone(), ListenerConfig::default());
//! tokio::spawn(async move {
//!     let (mut stream, _peer) = listener.accept().await;
//!     let _ = stream.write_all(b"hello").await;
//!     let _ = stream.shutdown().await;
//! });
//!
//! let client = ClientTls::load(ClientTlsFiles {
//!     trusted_ca_file: Some(pki.ca_file.clone()),
//!     cert_file: Some(client_cert),
//!     key_file: Some(client_key),
//! })?;
//! let tcp = tokio::net::TcpStream::connect(addr).await?;
//! let mut stream = client.connect("127.0.0.1", tcp).await?;
//! let mut text = String::new();
//! stream.read_to_string(&mut text).await?;
//! assert_eq!(text, "hello");
//! assert_eq!(server.status().handshakes_total, 1);
//! # Ok(())
//! # }
//! ```

mod client;
#[cfg(feature = "dev-certs")]
pub mod dev;
mod error;
mod listener;
mod load;
mod reload;
mod server;
mod status;

pub use client::{ClientTls, ClientTlsFiles};
pub use error::TlsError;
pub use listener::{
    Listener, ListenerConfig, Stream, ACCEPTED_QUEUE_LEN, DEFAULT_HANDSHAKE_TIMEOUT_MS,
    DEFAULT_MAX_CONCURRENT_HANDSHAKES, FAILURE_LOG_SOURCES_MAX, PLAINTEXT_HTTP_BODY,
    PLAINTEXT_REQUEST_BYTES_MAX,
};
pub use load::{serial_hex, CertificateInfo};
pub use reload::{spawn_reloader, DEFAULT_RELOAD_INTERVAL_MS, EXPIRY_WARNING_DAYS};
pub use server::{ServerTls, ServerTlsFiles};
pub use status::{FailureReason, TlsStatus};
/// The rustls and tokio-rustls versions this crate is built on, for callers that wire the
/// configurations into other clients.
pub use {rustls, tokio_rustls};

/// Which port a configuration serves; used in logs and metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortKind {
    /// The client port (raftexample routes, gRPC, gateway, metrics, the live view).
    Client,
    /// The peer port (Raft frames and snapshots, forwarded requests).
    Peer,
}

impl PortKind {
    /// `"client"` or `"peer"`.
    pub fn label(self) -> &'static str {
        match self {
            PortKind::Client => "client",
            PortKind::Peer => "peer",
        }
    }
}
