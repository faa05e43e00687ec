//! Helpers shared by the tls crate's integration tests.
#![allow(dead_code)]

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tls::dev::Pki;
use tls::{
    ClientTls, ClientTlsFiles, Listener, ListenerConfig, PortKind, ServerTls, ServerTlsFiles,
};
use tokio::net::{TcpListener, TcpStream};

/// Upper bound on any wait: a safety net so a broken listener fails instead of hanging.
pub const WAIT_LIMIT: Duration = Duration::from_secs(30);

/// A CA with a server leaf and a client leaf.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub pki: Pki,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

pub fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = Pki::generate(dir.path(), "test CA").expect("CA");
    let (server_cert, server_key) = pki
        .issue("server", "server", &["127.0.0.1", "localhost"], 30)
        .expect("server leaf");
    let (client_cert, client_key) = pki
        .issue("client", "member-2", &["127.0.0.1", "member2.example"], 30)
        .expect("client leaf");
    Setup {
        dir,
        pki,
        server_cert,
        server_key,
        client_cert,
        client_key,
    }
}

impl Setup {
    pub fn server_files(&self, client_cert_auth: bool) -> ServerTlsFiles {
        ServerTlsFiles {
            cert_file: self.server_cert.clone(),
            key_file: self.server_key.clone(),
            trusted_ca_file: Some(self.pki.ca_file.clone()),
            client_cert_auth,
            allowed_cn: None,
            allowed_hostname: None,
        }
    }

    pub fn client(&self) -> ClientTls {
        client_with(
            &self.pki.ca_file,
            Some((&self.client_cert, &self.client_key)),
        )
    }
}

pub fn client_with(ca: &Path, identity: Option<(&PathBuf, &PathBuf)>) -> ClientTls {
    ClientTls::load(ClientTlsFiles {
        trusted_ca_file: Some(ca.to_path_buf()),
        cert_file: identity.map(|(c, _)| c.clone()),
        key_file: identity.map(|(_, k)| k.clone()),
    })
    .expect("client TLS")
}

/// Serves a router answering `GET /` with "ok" over `Listener::tls`.
pub async fn serve(files: ServerTlsFiles, config: ListenerConfig) -> (ServerTls, SocketAddr) {
    let server = ServerTls::load(PortKind::Peer, files).expect("server TLS");
    let addr = serve_with(server.clone(), config).await;
    (server, addr)
}

pub async fn serve_with(server: ServerTls, config: ListenerConfig) -> SocketAddr {
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = tcp.local_addr().expect("addr");
    let router = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
    tokio::spawn(axum::serve(Listener::tls(tcp, server, config), router).into_future());
    addr
}

/// An HTTP/1.1 connection over TLS, with the server certificate's serial.
pub struct Conn {
    pub send: SendRequest<Empty<Bytes>>,
    pub server_serial: String,
}

pub async fn connect(client: &ClientTls, addr: SocketAddr) -> std::io::Result<Conn> {
    let tcp = TcpStream::connect(addr).await?;
    let tls = client.connect("127.0.0.1", tcp).await?;
    let server_serial = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| tls::serial_hex(c.as_ref()))
        .unwrap_or_default();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    Ok(Conn {
        send,
        server_serial,
    })
}

impl Conn {
    /// `GET /` on this connection; the body on success.
    pub async fn get(&mut self) -> Result<String, String> {
        self.send.ready().await.map_err(|e| e.to_string())?;
        let req = hyper::Request::get("/")
            .header("host", "127.0.0.1")
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let resp = self
            .send
            .send_request(req)
            .await
            .map_err(|e| e.to_string())?;
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&body.to_bytes()).into_owned())
    }
}

/// Connects, handshakes and does one `GET /`.
pub async fn get_once(client: &ClientTls, addr: SocketAddr) -> Result<String, String> {
    let mut conn = tokio::time::timeout(WAIT_LIMIT, connect(client, addr))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    tokio::time::timeout(WAIT_LIMIT, conn.get())
        .await
        .map_err(|_| "request timed out".to_string())?
}

/// Polls `cond` until it holds; panics with `what` after `WAIT_LIMIT`.
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < WAIT_LIMIT,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// [`wait_until`] from outside the runtime.
pub fn wait_until_blocking(
    runtime: &tokio::runtime::Runtime,
    what: &str,
    cond: impl FnMut() -> bool,
) {
    runtime.block_on(wait_until(what, cond));
}
