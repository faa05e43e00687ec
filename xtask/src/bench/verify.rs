//! After a write scenario: read a random sample of the acknowledged keys
//! back from every node and count the missing ones (must be 0).

use std::net::SocketAddr;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::client::Connection;
use super::load::write_path;
use super::BenchError;

/// Connections per node used to read the sample back.
const VERIFY_CONNECTIONS: usize = 8;

/// Missing acknowledged keys per node, out of `sampled`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Lost {
    /// Keys read back from each node.
    pub sampled: usize,
    /// Missing keys per node, in node id order.
    pub missing_per_node: Vec<u64>,
}

impl Lost {
    /// Total missing reads over all nodes.
    pub(crate) fn total(&self) -> u64 {
        self.missing_per_node.iter().sum()
    }
}

/// Reads `sample_size` random acknowledged keys of `scenario` from every
/// node with default (linearizable) GETs.
pub(crate) async fn read_back(
    scenario: &str,
    acked: &[(u32, u32)],
    sample_size: usize,
    nodes: &[SocketAddr],
) -> Result<Lost, BenchError> {
    let mut rng = StdRng::seed_from_u64(1);
    let picked: Vec<String> = acked
        .choose_multiple(&mut rng, sample_size.min(acked.len()))
        .map(|(conn, seq)| write_path(scenario, *conn, *seq))
        .collect();
    let mut missing_per_node = Vec::with_capacity(nodes.len());
    for addr in nodes {
        missing_per_node.push(count_missing(*addr, &picked).await?);
    }
    Ok(Lost {
        sampled: picked.len(),
        missing_per_node,
    })
}

async fn count_missing(addr: SocketAddr, paths: &[String]) -> Result<u64, BenchError> {
    let chunk_len = paths.len().div_ceil(VERIFY_CONNECTIONS).max(1);
    let tasks: Vec<_> = paths
        .chunks(chunk_len)
        .map(|chunk| tokio::spawn(count_missing_in(addr, chunk.to_vec())))
        .collect();
    let mut missing = 0;
    for task in tasks {
        missing += task
            .await
            .map_err(|e| BenchError::Http(format!("read-back task failed: {e}")))??;
    }
    Ok(missing)
}

/// One connection's share. A key is missing on 404; any other non-200
/// answer is an error (the check itself could not be made).
async fn count_missing_in(addr: SocketAddr, paths: Vec<String>) -> Result<u64, BenchError> {
    let mut connection = Connection::open(addr).await?;
    let mut missing = 0;
    for path in &paths {
        let (status, _) = connection.send(Method::GET, path, Bytes::new()).await?;
        match status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => missing += 1,
            other => {
                return Err(BenchError::Http(format!(
                    "read-back GET {path} on {addr} answered {other}"
                )))
            }
        }
    }
    Ok(missing)
}
