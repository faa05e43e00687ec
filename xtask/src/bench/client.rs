//! A minimal HTTP/1.1 keep-alive client on hyper 1: one TCP connection, one
//! request at a time, the response body read to its end. Connecting and
//! every request are bounded (`testcluster`'s timeouts), so a wedged node
//! costs the benchmark an error, never a hang.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{CONTENT_LENGTH, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use testcluster::{CONNECT_TIMEOUT, REQUEST_TIMEOUT};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::BenchError;

/// One keep-alive connection to a node's client port.
pub(crate) struct Connection {
    addr: SocketAddr,
    sender: SendRequest<Full<Bytes>>,
}

impl Connection {
    /// Opens a connection; its driver runs as a tokio task until the
    /// connection is dropped or broken.
    pub(crate) async fn open(addr: SocketAddr) -> Result<Self, BenchError> {
        let stream = timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| elapsed(addr, "connect", CONNECT_TIMEOUT))?
            .map_err(|e| BenchError::Http(format!("connect {addr}: {e}")))?;
        stream
            .set_nodelay(true)
            .map_err(|e| BenchError::Http(format!("nodelay {addr}: {e}")))?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| BenchError::Http(format!("handshake {addr}: {e}")))?;
        tokio::spawn(async move {
            // A broken connection surfaces as an error on the next request.
            let _ = connection.await;
        });
        Ok(Self { addr, sender })
    }

    /// Sends one request and reads the whole response; returns its status
    /// and body. After a timeout the connection is in an unknown state:
    /// drop it.
    pub(crate) async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), BenchError> {
        let addr = self.addr;
        timeout(REQUEST_TIMEOUT, self.exchange(method, path, body))
            .await
            .map_err(|_| elapsed(addr, path, REQUEST_TIMEOUT))?
    }

    async fn exchange(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), BenchError> {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.addr.to_string())
            .header(CONTENT_LENGTH, body.len())
            .body(Full::new(body))
            .map_err(|e| BenchError::Http(format!("bad request {path:?}: {e}")))?;
        self.sender
            .ready()
            .await
            .map_err(|e| BenchError::Http(format!("{}: {e}", self.addr)))?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| BenchError::Http(format!("{}: {e}", self.addr)))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| BenchError::Http(format!("{}: body: {e}", self.addr)))?
            .to_bytes();
        Ok((status, body))
    }
}

fn elapsed(addr: SocketAddr, what: &str, bound: Duration) -> BenchError {
    BenchError::Http(format!("{addr}: {what}: no answer within {bound:?}"))
}
