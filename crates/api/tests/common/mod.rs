//! Helpers shared by the api tests.
#![allow(dead_code)]

use std::sync::Arc;

use api::ApiConfig;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use bytes::Bytes;
use http_body_util::BodyExt;
use kvstore::testing::{local_store, LocalConsensus};
use kvstore::{KvConfig, KvStore};
use tower::ServiceExt;

/// A router on a one-node `LocalConsensus`.
pub struct TestApp {
    pub router: Router,
    pub consensus: Arc<LocalConsensus>,
    pub store: KvStore,
}

pub fn app_with(kv_config: KvConfig, api_config: ApiConfig) -> TestApp {
    let (store, consensus) = local_store(kv_config);
    let router = api::router(store.clone(), api_config);
    TestApp {
        router,
        consensus,
        store,
    }
}

pub fn app() -> TestApp {
    app_with(KvConfig::new(1), ApiConfig::default())
}

/// Serves `router` on an ephemeral loopback port (for as long as the
/// runtime runs) and answers its address and a connected gRPC channel.
pub async fn listen(router: Router) -> (std::net::SocketAddr, tonic::transport::Channel) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let address = listener.local_addr().expect("local address");
    tokio::spawn(async move { axum::serve(listener, router).await });
    let channel = tonic::transport::Channel::from_shared(format!("http://{address}"))
        .expect("url")
        .connect()
        .await
        .expect("connect to the test server");
    (address, channel)
}

/// What came back.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl TestApp {
    pub async fn send(&self, method: &str, uri: &str, body: impl Into<Body>) -> Reply {
        let method = Method::from_bytes(method.as_bytes()).expect("test method");
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .body(body.into())
            .expect("test request");
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        Reply {
            status,
            headers,
            body,
        }
    }
}
