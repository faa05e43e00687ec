//! A listener for axum that performs TLS handshakes off the accept path.

use std::collections::{HashSet, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};

use crate::server::ServerTls;
use crate::status::FailureReason;

/// Default of [`ListenerConfig::handshake_timeout_ms`].
pub const DEFAULT_HANDSHAKE_TIMEOUT_MS: u64 = 5_000;
/// Default of [`ListenerConfig::max_concurrent_handshakes`].
pub const DEFAULT_MAX_CONCURRENT_HANDSHAKES: usize = 256;
/// Finished handshakes waiting for `accept()`; handshake tasks wait when it is full.
pub const ACCEPTED_QUEUE_LEN: usize = 64;
/// Source addresses remembered for "log once per source"; the oldest are forgotten beyond it.
pub const FAILURE_LOG_SOURCES_MAX: usize = 4096;
/// Bytes of a plain HTTP request read (and discarded) before answering 400.
pub const PLAINTEXT_REQUEST_BYTES_MAX: usize = 16 * 1024;
/// Time the plain-HTTP answer waits for the client to close before closing itself.
const PLAINTEXT_DRAIN_MS: u64 = 1_000;
/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_ERROR_PAUSE_MS: u64 = 50;

/// The body of the answer to plain HTTP on a TLS port.
pub const PLAINTEXT_HTTP_BODY: &str = "this port speaks TLS: use https://\n";

/// Knobs of a [`Listener`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    /// Set `TCP_NODELAY` on accepted connections.
    pub nodelay: bool,
    /// Time a client has to finish its TLS handshake before the connection is cut.
    pub handshake_timeout_ms: u64,
    /// Handshakes in progress at once; a connection beyond it is closed at once (counted as
    /// `"other"`), so accepting never waits for handshakes.
    pub max_concurrent_handshakes: usize,
}

impl Default for ListenerConfig {
    fn default() -> ListenerConfig {
        ListenerConfig {
            nodelay: true,
            handshake_timeout_ms: DEFAULT_HANDSHAKE_TIMEOUT_MS,
            max_concurrent_handshakes: DEFAULT_MAX_CONCURRENT_HANDSHAKES,
        }
    }
}

/// An accepted connection: plain TCP or TLS after a finished handshake.
#[derive(Debug)]
pub enum Stream {
    /// A plain TCP connection.
    Plain(TcpStream),
    /// A TLS connection whose handshake finished.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Stream {
    /// The certificate chain the client presented (TLS with a client certificate only).
    pub fn peer_certificates(&self) -> Option<&[rustls::pki_types::CertificateDer<'static>]> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(tls) => tls.get_ref().1.peer_certificates(),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}

enum Mode {
    Plain(TcpListener),
    Tls {
        /// Taken by the first `accept()`, which starts the accept task.
        tcp: Option<TcpListener>,
        tls: ServerTls,
        accepted: Option<mpsc::Receiver<(Stream, SocketAddr)>>,
    },
}

/// An [`axum::serve::Listener`] for plain TCP or TLS.
///
/// In TLS mode an accept task (started by the first `accept()`) hands every connection to
/// a handshake task of its own, bounded in number
/// ([`ListenerConfig::max_concurrent_handshakes`]) and time
/// ([`ListenerConfig::handshake_timeout_ms`]), so a slow or broken client never holds up
/// others. A failed handshake is counted by reason in the [`ServerTls`]'s status and logged
/// at warn once per source IP (the last [`FAILURE_LOG_SOURCES_MAX`] sources are
/// remembered). Plain HTTP sent to a TLS port gets `HTTP/1.0 400 Bad Request` with the body
/// [`PLAINTEXT_HTTP_BODY`] and is closed. Dropping the listener stops its tasks.
pub struct Listener {
    mode: Mode,
    local_addr: io::Result<SocketAddr>,
    config: ListenerConfig,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("local_addr", &self.local_addr)
            .field("tls", &matches!(self.mode, Mode::Tls { .. }))
            .finish_non_exhaustive()
    }
}

impl Listener {
    /// A listener that accepts plain TCP connections.
    pub fn plain(tcp: TcpListener, config: ListenerConfig) -> Listener {
        Listener {
            local_addr: tcp.local_addr(),
            mode: Mode::Plain(tcp),
            config,
        }
    }

    /// A listener that accepts TLS connections configured by `tls`.
    pub fn tls(tcp: TcpListener, tls: ServerTls, config: ListenerConfig) -> Listener {
        Listener {
            local_addr: tcp.local_addr(),
            mode: Mode::Tls {
                tcp: Some(tcp),
                tls,
                accepted: None,
            },
            config,
        }
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.local_addr {
            Ok(addr) => Ok(*addr),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        }
    }

    /// The next connection; TLS ones have finished their handshake. Never fails: accept
    /// errors are logged and retried.
    pub async fn accept(&mut self) -> (Stream, SocketAddr) {
        match &mut self.mode {
            Mode::Plain(tcp) => loop {
                match tcp.accept().await {
                    Ok((stream, addr)) => {
                        set_nodelay(&stream, self.config.nodelay);
                        return (Stream::Plain(stream), addr);
                    }
                    Err(e) => accept_failed(&e).await,
                }
            },
            Mode::Tls { tcp, tls, accepted } => {
                if let Some(tcp) = tcp.take() {
                    let (tx, rx) = mpsc::channel(ACCEPTED_QUEUE_LEN);
                    tokio::spawn(accept_loop(tcp, tls.clone(), self.config.clone(), tx));
                    *accepted = Some(rx);
                }
                match accepted.as_mut() {
                    Some(rx) => match rx.recv().await {
                        Some(conn) => conn,
                        // The accept task never ends while the receiver lives.
                        None => std::future::pending().await,
                    },
                    None => std::future::pending().await,
                }
            }
        }
    }
}

impl axum::serve::Listener for Listener {
    type Io = Stream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Stream, SocketAddr) {
        Listener::accept(self).await
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Listener::local_addr(self)
    }
}

fn set_nodelay(stream: &TcpStream, nodelay: bool) {
    if nodelay {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    }
}

async fn accept_failed(e: &io::Error) {
    tracing::warn!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(ACCEPT_ERROR_PAUSE_MS)).await;
}

/// Remembers which sources were logged, forgetting the oldest beyond the bound.
#[derive(Default)]
struct LoggedSources {
    seen: HashSet<IpAddr>,
    order: VecDeque<IpAddr>,
}

impl LoggedSources {
    /// True the first time `ip` is seen (since it was last forgotten).
    fn first_time(&mut self, ip: IpAddr) -> bool {
        if !self.seen.insert(ip) {
            return false;
        }
        self.order.push_back(ip);
        while self.order.len() > FAILURE_LOG_SOURCES_MAX {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }
}

/// What every handshake task of one listener shares.
struct Ctx {
    tls: ServerTls,
    acceptor: tokio_rustls::TlsAcceptor,
    config: ListenerConfig,
    logged: Mutex<LoggedSources>,
}

impl Ctx {
    fn failed(&self, addr: SocketAddr, reason: FailureReason, detail: &str) {
        self.tls.counters().failure(reason);
        let port = self.tls.port().label();
        if self.logged.lock().first_time(addr.ip()) {
            tracing::warn!(
                port,
                source = %addr,
                reason = reason.label(),
                detail,
                "TLS handshake failed (further failures from this address are logged at debug)"
            );
        } else {
            tracing::debug!(port, source = %addr, reason = reason.label(), detail, "TLS handshake failed");
        }
    }
}

async fn accept_loop(
    tcp: TcpListener,
    tls: ServerTls,
    config: ListenerConfig,
    tx: mpsc::Sender<(Stream, SocketAddr)>,
) {
    let handshakes = Arc::new(Semaphore::new(config.max_concurrent_handshakes.max(1)));
    let ctx = Arc::new(Ctx {
        acceptor: tokio_rustls::TlsAcceptor::from(tls.config()),
        tls,
        config,
        logged: Mutex::new(LoggedSources::default()),
    });
    loop {
        let accepted = tokio::select! {
            accepted = tcp.accept() => accepted,
            () = tx.closed() => return,
        };
        let (stream, addr) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                accept_failed(&e).await;
                continue;
            }
        };
        set_nodelay(&stream, ctx.config.nodelay);
        let Ok(permit) = Arc::clone(&handshakes).try_acquire_owned() else {
            ctx.failed(
                addr,
                FailureReason::Other,
                "too many handshakes in progress",
            );
            drop(stream);
            continue;
        };
        let ctx = Arc::clone(&ctx);
        let tx = tx.clone();
        tokio::spawn(async move {
            let timeout = Duration::from_millis(ctx.config.handshake_timeout_ms);
            let outcome = tokio::time::timeout(timeout, handshake(&ctx, stream)).await;
            match outcome {
                Ok(Ok(stream)) => {
                    ctx.tls.counters().handshake();
                    // A closed receiver means the listener is gone: drop the connection. The
                    // permit is held until `accept()` takes the stream, so a server that stops
                    // accepting bounds the finished handshakes waiting for it too.
                    let _ = tx.send((Stream::Tls(Box::new(stream)), addr)).await;
                    drop(permit);
                }
                Ok(Err(Failed::Plaintext(stream))) => {
                    ctx.failed(
                        addr,
                        FailureReason::PlaintextHttp,
                        "plain HTTP on a TLS port",
                    );
                    let _ = tokio::time::timeout(timeout, answer_plaintext(stream)).await;
                    drop(permit);
                }
                Ok(Err(Failed::Tls(reason, detail))) => {
                    drop(permit);
                    ctx.failed(addr, reason, &detail);
                }
                Err(_elapsed) => {
                    drop(permit);
                    ctx.failed(
                        addr,
                        FailureReason::Timeout,
                        &format!("no handshake within {} ms", ctx.config.handshake_timeout_ms),
                    );
                }
            }
        });
    }
}

/// The TLS record type of a handshake message: the first byte of every ClientHello.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Why a connection did not become a TLS stream.
enum Failed {
    /// It speaks plain HTTP: the caller answers it.
    Plaintext(TcpStream),
    /// The handshake failed.
    Tls(FailureReason, String),
}

/// Peeks at the first byte: plain HTTP is handed back, anything else goes through the TLS
/// handshake.
async fn handshake(
    ctx: &Ctx,
    stream: TcpStream,
) -> Result<tokio_rustls::server::TlsStream<TcpStream>, Failed> {
    let mut first = [0u8; 1];
    let peeked = stream
        .peek(&mut first)
        .await
        .map_err(|e| Failed::Tls(FailureReason::Truncated, e.to_string()))?;
    if peeked == 0 {
        return Err(Failed::Tls(
            FailureReason::Truncated,
            "closed before sending anything".into(),
        ));
    }
    if first[0] != TLS_HANDSHAKE_RECORD && first[0].is_ascii_uppercase() {
        return Err(Failed::Plaintext(stream));
    }
    ctx.acceptor
        .accept(stream)
        .await
        .map_err(|e| Failed::Tls(classify_io(&e), e.to_string()))
}

/// Reads what looks like an HTTP request head, answers 400, and closes without a reset.
async fn answer_plaintext(mut stream: TcpStream) {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while request.len() < PLAINTEXT_REQUEST_BYTES_MAX
        && !request.windows(4).any(|w| w == b"\r\n\r\n")
    {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let response = format!(
        "HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{PLAINTEXT_HTTP_BODY}",
        PLAINTEXT_HTTP_BODY.len()
    );
    if stream.write_all(response.as_bytes()).await.is_err() {
        return;
    }
    let _ = stream.shutdown().await;
    // Drain what the client still sends so closing does not reset the connection before
    // it read the answer; bounded in bytes and time.
    let drain = async {
        let mut drained = 0;
        while drained < PLAINTEXT_REQUEST_BYTES_MAX {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(PLAINTEXT_DRAIN_MS), drain).await;
}

/// The failure reason of a handshake's I/O error.
pub(crate) fn classify_io(e: &io::Error) -> FailureReason {
    if let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        return classify(tls);
    }
    match e.kind() {
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => FailureReason::Truncated,
        io::ErrorKind::InvalidData => FailureReason::Other,
        _ => FailureReason::Other,
    }
}

/// The failure reason of a rustls error.
pub(crate) fn classify(e: &rustls::Error) -> FailureReason {
    use rustls::{AlertDescription as A, CertificateError as C};
    match e {
        rustls::Error::InvalidCertificate(cert) => match cert {
            C::UnknownIssuer => FailureReason::UnknownCa,
            C::Expired
            | C::ExpiredContext { .. }
            | C::NotValidYet
            | C::NotValidYetContext { .. } => FailureReason::ExpiredCertificate,
            C::ApplicationVerificationFailure => FailureReason::DisallowedIdentity,
            _ => FailureReason::BadCertificate,
        },
        rustls::Error::NoCertificatesPresented => FailureReason::NoCertificate,
        rustls::Error::AlertReceived(alert) => match alert {
            A::UnknownCA => FailureReason::UnknownCa,
            A::CertificateExpired => FailureReason::ExpiredCertificate,
            A::BadCertificate | A::CertificateUnknown | A::UnsupportedCertificate => {
                FailureReason::BadCertificate
            }
            A::CertificateRequired => FailureReason::NoCertificate,
            A::AccessDenied => FailureReason::DisallowedIdentity,
            _ => FailureReason::Other,
        },
        _ => FailureReason::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::{LoggedSources, FAILURE_LOG_SOURCES_MAX};
    use std::net::{IpAddr, Ipv4Addr};

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(n))
    }

    #[test]
    fn each_source_is_logged_once_and_memory_is_bounded() {
        let mut logged = LoggedSources::default();
        assert!(logged.first_time(ip(1)));
        assert!(!logged.first_time(ip(1)));
        for n in 2..=(FAILURE_LOG_SOURCES_MAX as u32 + 1) {
            assert!(logged.first_time(ip(n)));
        }
        assert_eq!(logged.seen.len(), FAILURE_LOG_SOURCES_MAX);
        assert_eq!(logged.order.len(), FAILURE_LOG_SOURCES_MAX);
        // The oldest source was forgotten: it is logged again.
        assert!(logged.first_time(ip(1)));
        assert!(!logged.first_time(ip(FAILURE_LOG_SOURCES_MAX as u32 + 1)));
    }
}
