//! Over a real socket: bytes that cannot even be built as a `Request` in
//! the other tests (raw non-UTF-8 paths, broken HTTP) never take the node
//! down.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn serve() -> std::net::SocketAddr {
    let (store, _consensus) = kvstore::testing::local_store(kvstore::KvConfig::new(1));
    let router = api::router(store, api::ApiConfig::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    address
}

/// Sends raw bytes, returns everything the server answered before closing.
async fn exchange(address: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(request).await.unwrap();
    // Half-close: a server waiting for more body bytes sees the end.
    stream.shutdown().await.unwrap();
    let mut response = Vec::new();
    let read =
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await;
    assert!(
        read.is_ok(),
        "server neither answered nor closed: {:?}",
        String::from_utf8_lossy(request)
    );
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn garbage_on_the_wire_gets_4xx_and_server_survives() {
    let address = serve().await;
    let garbage: [&[u8]; 5] = [
        b"PUT /\xff\xfe HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx",
        b"GET /\x00 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
        b"PUT /k HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\nConnection: close\r\n\r\n",
        b"PUT /k HTTP/1.1\r\nHost: a\r\nContent-Length: 10000000\r\nConnection: close\r\n\r\nshort",
    ];
    for request in garbage {
        let response = exchange(address, request).await;
        let status_line = response.lines().next().unwrap_or("");
        assert!(
            status_line.starts_with("HTTP/1.1 4"),
            "{:?} -> {status_line:?}",
            String::from_utf8_lossy(request)
        );
    }
    let ok = exchange(
        address,
        b"PUT /after HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
    )
    .await;
    assert!(ok.starts_with("HTTP/1.1 204"), "{ok}");
    let got = exchange(
        address,
        b"GET /after HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        got.starts_with("HTTP/1.1 200") && got.ends_with("ok"),
        "{got}"
    );
}
