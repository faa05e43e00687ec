//! Latency of a gRPC Range of 1,000 keys (64 B values, as `cargo xtask bench
//! --grpc`'s `range-1000-keys-c8`) through the whole client port over a real
//! loopback socket, on `LocalConsensus`; plus the keyspace alone (no gRPC),
//! to tell the two costs apart. Runs in seconds:
//! `cargo bench -p api --bench grpc_range`.
#![allow(clippy::print_stdout)]
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use etcdproto::etcdserverpb as pb;
use kvstore::KvConfig;
use pb::kv_client::KvClient;
use tokio::net::TcpListener;
use tonic::transport::Channel;

const KEYS: usize = 1_000;
const VALUE_BYTES: usize = 64;
/// Concurrent connections of each run (the xtask scenario uses 8).
const CONNECTIONS: [usize; 2] = [1, 8];
const REQUESTS_PER_CONNECTION: usize = 200;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let (store, _consensus) = kvstore::testing::local_store(KvConfig::new(1));
        for i in 0..KEYS {
            store
                .put(pb::PutRequest {
                    key: format!("bench/many/{i:05}").into_bytes(),
                    value: vec![b'x'; VALUE_BYTES],
                    ..Default::default()
                })
                .await
                .expect("put");
        }
        let request = pb::RangeRequest {
            key: b"bench/many/".to_vec(),
            range_end: b"bench/many0".to_vec(),
            ..Default::default()
        };

        let mut keyspace = Vec::new();
        for _ in 0..REQUESTS_PER_CONNECTION {
            let began = Instant::now();
            let response = store.range(request.clone()).await.expect("range");
            keyspace.push(began.elapsed());
            assert_eq!(response.kvs.len(), KEYS);
        }
        report("keyspace range (no gRPC), 1 task", &mut keyspace);

        let router = api::router(store, api::ApiConfig::default());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        // Served as the binary serves its client port.
        let listener = api::client_listener(listener);
        tokio::spawn(async move { axum::serve(listener, router).await });
        for connections in CONNECTIONS {
            let mut tasks = Vec::new();
            for _ in 0..connections {
                let channel = Channel::from_shared(format!("http://{address}"))
                    .expect("url")
                    .connect()
                    .await
                    .expect("connect");
                let mut client = KvClient::new(channel);
                let request = request.clone();
                tasks.push(tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    for _ in 0..REQUESTS_PER_CONNECTION {
                        let began = Instant::now();
                        let response = client.range(request.clone()).await.expect("range");
                        latencies.push(began.elapsed());
                        assert_eq!(response.into_inner().kvs.len(), KEYS);
                    }
                    latencies
                }));
            }
            let mut grpc = Vec::new();
            for task in tasks {
                grpc.extend(task.await.expect("bench task"));
            }
            report(
                &format!("gRPC range over loopback, {connections} connection(s)"),
                &mut grpc,
            );
        }
    });
}

fn report(name: &str, latencies: &mut [Duration]) {
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    println!(
        "{name}: {} ranges of {KEYS} keys, p50 {:.2} ms, p99 {:.2} ms",
        latencies.len(),
        at(0.5),
        at(0.99)
    );
}
