//! Requests per second through the axum router (no socket) on
//! `LocalConsensus`: the cost the api layer adds to each request.
#![allow(clippy::print_stdout)]
#![allow(missing_docs)]

use std::time::Instant;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use kvstore::KvConfig;
use tower::ServiceExt;

const REQUESTS: usize = 100_000;
const TASKS: usize = 64;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let (store, _consensus) = kvstore::testing::local_store(KvConfig::new(1));
        let router = api::router(store, api::ApiConfig::default());
        run(
            "PUT /key-N (100 B), 64 tasks",
            &router,
            |i| {
                Request::put(format!("/key-{i}"))
                    .body(Body::from(vec![b'v'; 100]))
                    .expect("request")
            },
            StatusCode::NO_CONTENT,
        )
        .await;
        run(
            "GET /key-N (linearizable), 64 tasks",
            &router,
            |i| {
                Request::get(format!("/key-{i}"))
                    .body(Body::empty())
                    .expect("request")
            },
            StatusCode::OK,
        )
        .await;
        run(
            "GET /v1/status, 64 tasks",
            &router,
            |_| {
                Request::get("/v1/status")
                    .body(Body::empty())
                    .expect("request")
            },
            StatusCode::OK,
        )
        .await;
    });
}

async fn run(
    name: &str,
    router: &Router,
    request: fn(usize) -> Request<Body>,
    expected: StatusCode,
) {
    let per_task = REQUESTS / TASKS;
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let router = router.clone();
            tokio::spawn(async move {
                for i in 0..per_task {
                    let response = router
                        .clone()
                        .oneshot(request(task * per_task + i))
                        .await
                        .expect("infallible");
                    assert_eq!(response.status(), expected);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("bench task");
    }
    let seconds = started.elapsed().as_secs_f64();
    let total = per_task * TASKS;
    println!(
        "{name}: {total} requests in {seconds:.2} s = {:.0} req/s",
        total as f64 / seconds
    );
}
