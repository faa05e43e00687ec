//! The HTTP client for other members' peer ports: followers forwarding lease requests to the
//! leader ([`crate::v3::forward`]) and the live view polling members' reports
//! ([`crate::liveview`]).
//!
//! `http://` peer URLs are dialled in clear text. `https://` ones go over TLS with the
//! member's outgoing peer configuration ([`ApiConfig::peer_tls`](crate::ApiConfig::peer_tls),
//! [`LiveView::with_peer_tls`](crate::liveview::LiveView::with_peer_tls)): the peer CA
//! verifies the other member's certificate against the URL's host, and this member presents
//! its peer certificate (members with `--peer-client-cert-auth` require it). Without that
//! configuration an `https://` URL is an error, never a clear-text request.

use std::time::Duration;

use axum::http::{Request, Response};
use bytes::Bytes;
use hyper::body::{Body, Incoming};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tls::ClientTls;

/// Why a request to a peer port failed before any answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PeerClientError {
    /// The URL is `https://` but this member has no peer TLS configuration.
    #[error("{0} is an https:// peer URL but no peer TLS is configured (--peer-trusted-ca-file)")]
    NoTls(String),
    /// Connecting, the TLS handshake or the exchange failed.
    #[error(transparent)]
    Request(#[from] hyper_util::client::legacy::Error),
}

/// A pooled client for `http://` and (with TLS configured) `https://` peer URLs.
#[derive(Clone)]
pub(crate) struct PeerClient<B> {
    plain: Client<HttpConnector, B>,
    tls: Option<Client<HttpsConnector<HttpConnector>, B>>,
}

impl<B> PeerClient<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// A client with connections bounded by `connect_timeout` (None: the OS's).
    pub(crate) fn new(peer_tls: Option<&ClientTls>, connect_timeout: Option<Duration>) -> Self {
        let http = || {
            let mut http = HttpConnector::new();
            http.set_connect_timeout(connect_timeout);
            http.set_nodelay(true);
            http
        };
        let tls = peer_tls.map(|peer_tls| {
            let mut config = (*peer_tls.config()).clone();
            // The connector sets ALPN from the enabled protocols (HTTP/1.1 only).
            config.alpn_protocols.clear();
            let mut http = http();
            http.enforce_http(false);
            let connector = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(config)
                .https_only()
                .enable_http1()
                .wrap_connector(http);
            Client::builder(TokioExecutor::new()).build(connector)
        });
        PeerClient {
            plain: Client::builder(TokioExecutor::new()).build(http()),
            tls,
        }
    }

    /// Sends `request` to its URI's peer, over TLS when the URI is `https://`.
    pub(crate) async fn request(
        &self,
        request: Request<B>,
    ) -> Result<Response<Incoming>, PeerClientError> {
        if request.uri().scheme_str() == Some("https") {
            match &self.tls {
                Some(client) => Ok(client.request(request).await?),
                None => Err(PeerClientError::NoTls(request.uri().to_string())),
            }
        } else {
            Ok(self.plain.request(request).await?)
        }
    }
}
