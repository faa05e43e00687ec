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

    /// `http://127.0.0.1:<client port of id><path>` (`https://` with
    /// client TLS; port 0 for an undefined node, so a request to it fails).
    pub fn url(&self, id: u64, path: &str) -> String {
        let port = self.nodes.get(&id).map_or(0, |n| n.client_port);
        format!("{}://127.0.0.1:{port}{path}", self.client_scheme())
    }

    /// `https` if the client ports speak TLS, else `http`.
    pub fn client_scheme(&self) -> &'static str {
        match &self.config.tls {
            Some(mode) if mode.client => "https",
            _ => "http",
        }
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
        poll("a leader", timeout, || {
            Ok(self.leader_among(ids).ok_or_else(String::new))
        })
    }

    /// Waits up to `timeout` for a live node to say it is the leader.
    pub fn wait_leader(&self, timeout: Duration) -> Result<u64, Error> {
        self.wait_leader_among(&self.ids(), timeout)
    }

    /// Waits up to `timeout` until every live node answers its status and
    /// names the same leader, which itself says it leads.
    pub fn wait_agreed_leader(&self, timeout: Duration) -> Result<u64, Error> {
        poll("every node agreeing on a leader", timeout, || {
            Ok(self.agreed_leader_now().ok_or_else(String::new))
        })
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
        poll(&format!("node {id} applying {index}"), timeout, || {
            Ok(match self.status(id) {
                Ok(s) if s.applied_index >= index => Ok(()),
                Ok(s) => Err(format!("applied {}", s.applied_index)),
                Err(e) => Err(e.to_string()),
            })
        })
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
        poll(&format!("PUT {key} on node {id}"), timeout, || {
            match self.put(id, key, value) {
                Ok(StatusCode::NO_CONTENT) => Ok(Ok(())),
                Ok(code) if code.is_server_error() => Ok(Err(code.to_string())),
                Ok(code) => Err(Error::node(id, format!("PUT {key} answered {code}"))),
                Err(e) => Ok(Err(e.to_string())),
            }
        })
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
        poll(&format!("GET {key} on node {id}"), timeout, || {
            match self.get(id, key) {
                Ok((StatusCode::OK, body)) => Ok(Ok(Some(body))),
                Ok((StatusCode::NOT_FOUND, _)) => Ok(Ok(None)),
                Ok((code, body)) if code.is_server_error() => Ok(Err(format!("{code} {body}"))),
                Ok((code, body)) => {
                    Err(Error::node(id, format!("GET {key} answered {code} {body}")))
                }
                Err(e) => Ok(Err(e.to_string())),
            }
        })
    }
}

/// Calls `attempt` every [`RETRY_INTERVAL`] for up to `timeout` until it
/// gives `Ok(Ok(value))`. `Ok(Err(reason))` means "not yet" (the last
/// reason goes into the timeout error); `Err` ends the wait at once.
fn poll<T>(
    what: &str,
    timeout: Duration,
    mut attempt: impl FnMut() -> Result<Result<T, String>, Error>,
) -> Result<T, Error> {
    let deadline = Instant::now() + timeout;
    loop {
        let reason = match attempt()? {
            Ok(value) => return Ok(value),
            Err(reason) => reason,
        };
        if Instant::now() >= deadline {
            let what = if reason.is_empty() {
                what.to_string()
            } else {
                format!("{what} (last: {reason})")
            };
            return Err(Error::timeout(what, timeout));
        }
        std::thread::sleep(RETRY_INTERVAL);
    }
}
