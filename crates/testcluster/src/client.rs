//! Talking to the nodes: status, the leader, reads and writes. Every
//! request is bounded by the cluster's client timeouts.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use api::StatusResponse;
use reqwest::blocking::Client;
use reqwest::StatusCode;

use crate::process::{undefined, POLL_INTERVAL};
use crate::{parse_status, Cluster, Error, Node, CONNECT_TIMEOUT};

/// Pause between two rounds of asking for a leader or retrying a request.
const RETRY_INTERVAL: Duration = Duration::from_millis(50);

impl Cluster {
    /// The HTTP client (timeouts from the [`crate::ClusterConfig`]).
    pub fn http(&self) -> &Client {
        &self.http
    }

    /// `http://127.0.0.1:<client port of id><path>` (port 0 for an
    /// undefined node, so a request to it fails).
    pub fn url(&self, id: u64, path: &str) -> String {
        let port = self.nodes.get(&id).map_or(0, |n| n.client_port);
        format!("http://127.0.0.1:{port}{path}")
    }

    /// Waits up to `timeout` until node `id`'s client port accepts
    /// connections.
    pub fn wait_listening(&self, id: u64, timeout: Duration) -> Result<(), Error> {
        let addr = self.client_addr(id).ok_or_else(|| undefined(id))?;
        let deadline = Instant::now() + timeout;
        while TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).is_err() {
            if Instant::now() >= deadline {
                return Err(Error::timeout(
                    format!("node {id} listening on {addr}"),
                    timeout,
                ));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        Ok(())
    }

    /// Node `id`'s `GET /v1/status`, typed.
    pub fn status(&self, id: u64) -> Result<StatusResponse, Error> {
        let response = self
            .http
            .get(self.url(id, "/v1/status"))
            .timeout(self.config.status_timeout)
            .send()?;
        let code = response.status();
        let body = response.bytes()?;
        if code != StatusCode::OK {
            return Err(Error::BadStatus {
                id,
                reason: format!("answered {code}: {}", String::from_utf8_lossy(&body)),
            });
        }
        parse_status(id, &body)
    }

    /// The first of `ids` that is live and says it is the leader, now.
    pub fn leader_among(&self, ids: &[u64]) -> Option<u64> {
        ids.iter().copied().find(|&id| {
            self.nodes.get(&id).is_some_and(Node::is_live)
                && self.status(id).is_ok_and(|s| s.leader_id == Some(id))
        })
    }

    /// A live node that says it is the leader, now.
    pub fn leader_now(&self) -> Option<u64> {
        self.leader_among(&self.ids())
    }

    /// Waits up to `timeout` for one of `ids` to say it is the leader.
    pub fn wait_leader_among(&self, ids: &[u64], timeout: Duration) -> Result<u64, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(leader) = self.leader_among(ids) {
                return Ok(leader);
            }
            if Instant::now() >= deadline {
                return Err(Error::timeout("a leader", timeout));
            }
            std::thread::sleep(RETRY_INTERVAL);
        }
    }

    /// Waits up to `timeout` for a live node to say it is the leader.
    pub fn wait_leader(&self, timeout: Duration) -> Result<u64, Error> {
        self.wait_leader_among(&self.ids(), timeout)
    }

    /// Waits up to `timeout` until every live node answers its status and
    /// names the same leader, which itself says it leads.
    pub fn wait_agreed_leader(&self, timeout: Duration) -> Result<u64, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(leader) = self.agreed_leader_now() {
                return Ok(leader);
            }
            if Instant::now() >= deadline {
                return Err(Error::timeout("every node agreeing on a leader", timeout));
            }
            std::thread::sleep(RETRY_INTERVAL);
        }
    }

    /// The leader every live node names, now, if they all answer and
    /// agree.
    pub fn agreed_leader_now(&self) -> Option<u64> {
        let mut named = None;
        for node in self.nodes.values().filter(|n| n.is_live()) {
            let leader = self.status(node.id).ok()?.leader_id?;
            if named.is_some_and(|l| l != leader) {
                return None;
            }
            named = Some(leader);
        }
        // The leader answered above (it is live), naming itself.
        named.filter(|l| self.nodes.get(l).is_some_and(Node::is_live))
    }

    /// Waits up to `timeout` until node `id` has applied `index`.
    pub fn wait_applied(&self, id: u64, index: u64, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.status(id).is_ok_and(|s| s.applied_index >= index) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::timeout(
                    format!("node {id} applying {index}"),
                    timeout,
                ));
            }
            std::thread::sleep(RETRY_INTERVAL);
        }
    }

    /// `PUT <key>` on node `id`; its status.
    pub fn put(&self, id: u64, key: &str, value: &str) -> reqwest::Result<StatusCode> {
        self.http
            .put(self.url(id, key))
            .body(value.to_string())
            .send()
            .map(|r| r.status())
    }

    /// `PUT <key>` retried through 5xx answers and failed connections
    /// (elections, restarts) until 204, for up to `timeout`. Any other
    /// answer is an error at once.
    pub fn put_ok(&self, id: u64, key: &str, value: &str, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.put(id, key, value) {
                Ok(StatusCode::NO_CONTENT) => return Ok(()),
                Ok(code) if code.is_server_error() => code.to_string(),
                Ok(code) => return Err(Error::node(id, format!("PUT {key} answered {code}"))),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(Error::timeout(
                    format!("PUT {key} on node {id} (last: {last})"),
                    timeout,
                ));
            }
            std::thread::sleep(RETRY_INTERVAL);
        }
    }

    /// `GET <key>` on node `id`; its status and body.
    pub fn get(&self, id: u64, key: &str) -> reqwest::Result<(StatusCode, String)> {
        let response = self.http.get(self.url(id, key)).send()?;
        let code = response.status();
        Ok((code, response.text()?))
    }

    /// `GET <key>` retried like [`Cluster::put_ok`]: the value, or `None`
    /// on 404.
    pub fn get_ok(&self, id: u64, key: &str, timeout: Duration) -> Result<Option<String>, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.get(id, key) {
                Ok((StatusCode::OK, body)) => return Ok(Some(body)),
                Ok((StatusCode::NOT_FOUND, _)) => return Ok(None),
                Ok((code, body)) if code.is_server_error() => format!("{code} {body}"),
                Ok((code, body)) => {
                    return Err(Error::node(id, format!("GET {key} answered {code} {body}")))
                }
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(Error::timeout(
                    format!("GET {key} on node {id} (last: {last})"),
                    timeout,
                ));
            }
            std::thread::sleep(RETRY_INTERVAL);
        }
    }
}
