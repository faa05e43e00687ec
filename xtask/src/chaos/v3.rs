//! A blocking client of etcd's v3 gRPC API (the tonic client generated in
//! `etcdproto`) for the suite's threads: the compare-and-swap workload, the
//! durability check's prefix reads and the `HashKV` comparison.
//!
//! Each [`V3`] owns a small single-threaded tokio runtime and one lazily
//! connected channel per client port; a channel reconnects by itself after
//! its node restarts.

use std::collections::HashMap;
use std::time::Duration;

use etcdproto::etcdserverpb as pb;
use pb::kv_client::KvClient;
use pb::lease_client::LeaseClient;
use pb::maintenance_client::MaintenanceClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Status;

use super::ChaosError;

/// Responses larger than this are refused by the client (a page of the
/// durability read stays far below).
const MESSAGE_BYTES_MAX: usize = 64 << 20;

/// A blocking v3 client for one thread.
pub(crate) struct V3 {
    runtime: tokio::runtime::Runtime,
    channels: HashMap<u16, Channel>,
    timeout: Duration,
    tls: Option<GrpcTls>,
}

/// TLS towards TLS client ports: the cluster's CA and the harness's
/// client certificate.
#[derive(Debug, Clone)]
pub(crate) struct GrpcTls(ClientTlsConfig);

impl GrpcTls {
    /// From a TLS cluster's PKI.
    pub fn load(paths: &testcluster::TlsPaths) -> Result<GrpcTls, ChaosError> {
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|source| ChaosError::Io {
                what: format!("reading {}", path.display()),
                source,
            })
        };
        let config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(&paths.ca_file)?))
            .identity(Identity::from_pem(
                read(&paths.client_cert_file)?,
                read(&paths.client_key_file)?,
            ))
            // The server may not negotiate ALPN; its client port speaks
            // HTTP/2 to gRPC clients either way.
            .assume_http2(true);
        Ok(GrpcTls(config))
    }
}

/// The endpoint of the client port `port` on loopback: `https://` with
/// `tls`, else `http://`.
pub(crate) fn endpoint(port: u16, tls: Option<&GrpcTls>) -> Result<Endpoint, Status> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let endpoint = Endpoint::from_shared(format!("{scheme}://127.0.0.1:{port}"))
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    match tls {
        Some(tls) => endpoint
            .tls_config(tls.0.clone())
            .map_err(|e| Status::invalid_argument(e.to_string())),
        None => Ok(endpoint),
    }
}

impl V3 {
    /// A client whose every request gives up after `timeout`, over TLS
    /// with `tls`.
    pub fn new(timeout: Duration, tls: Option<GrpcTls>) -> Result<V3, ChaosError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| ChaosError::Io {
                what: "starting a tokio runtime for the gRPC client".into(),
                source,
            })?;
        Ok(V3 {
            runtime,
            channels: HashMap::new(),
            timeout,
            tls,
        })
    }

    fn channel(&mut self, port: u16) -> Result<Channel, Status> {
        if let Some(channel) = self.channels.get(&port) {
            return Ok(channel.clone());
        }
        let endpoint = endpoint(port, self.tls.as_ref())?
            .timeout(self.timeout)
            .connect_timeout(Duration::from_millis(500));
        // The lazy channel spawns its worker on the current runtime.
        let _guard = self.runtime.enter();
        let channel = endpoint.connect_lazy();
        self.channels.insert(port, channel.clone());
        Ok(channel)
    }

    fn kv(&mut self, port: u16) -> Result<KvClient<Channel>, Status> {
        Ok(KvClient::new(self.channel(port)?).max_decoding_message_size(MESSAGE_BYTES_MAX))
    }

    fn maintenance(&mut self, port: u16) -> Result<MaintenanceClient<Channel>, Status> {
        Ok(MaintenanceClient::new(self.channel(port)?))
    }

    /// `KV.Range` on the node listening on `port`.
    pub fn range(
        &mut self,
        port: u16,
        request: pb::RangeRequest,
    ) -> Result<pb::RangeResponse, Status> {
        let mut client = self.kv(port)?;
        self.runtime
            .block_on(client.range(request))
            .map(|r| r.into_inner())
    }

    /// `KV.Txn` on the node listening on `port`.
    pub fn txn(&mut self, port: u16, request: pb::TxnRequest) -> Result<pb::TxnResponse, Status> {
        let mut client = self.kv(port)?;
        self.runtime
            .block_on(client.txn(request))
            .map(|r| r.into_inner())
    }

    fn lease(&mut self, port: u16) -> Result<LeaseClient<Channel>, Status> {
        Ok(LeaseClient::new(self.channel(port)?))
    }

    /// `KV.Put` on the node listening on `port`.
    pub fn put(&mut self, port: u16, request: pb::PutRequest) -> Result<pb::PutResponse, Status> {
        let mut client = self.kv(port)?;
        self.runtime
            .block_on(client.put(request))
            .map(|r| r.into_inner())
    }

    /// `Lease.LeaseGrant` on the node listening on `port`.
    pub fn lease_grant(
        &mut self,
        port: u16,
        request: pb::LeaseGrantRequest,
    ) -> Result<pb::LeaseGrantResponse, Status> {
        let mut client = self.lease(port)?;
        self.runtime
            .block_on(client.lease_grant(request))
            .map(|r| r.into_inner())
    }

    /// One `Lease.LeaseKeepAlive` round on a stream of its own: the first
    /// answer (`ttl` 0 when the lease is unknown).
    pub fn lease_keep_alive(
        &mut self,
        port: u16,
        id: i64,
    ) -> Result<pb::LeaseKeepAliveResponse, Status> {
        let mut client = self.lease(port)?;
        let timeout = self.timeout;
        self.runtime.block_on(async move {
            let requests = tonic::codegen::tokio_stream::iter([pb::LeaseKeepAliveRequest { id }]);
            let answer = async {
                let mut answers = client.lease_keep_alive(requests).await?.into_inner();
                answers
                    .message()
                    .await?
                    .ok_or_else(|| Status::unavailable("the keep-alive stream ended unanswered"))
            };
            tokio::time::timeout(timeout, answer)
                .await
                .map_err(|_| Status::deadline_exceeded("keep-alive unanswered in time"))?
        })
    }

    /// `Lease.LeaseLeases`: the ids of the leases the member knows.
    pub fn lease_leases(&mut self, port: u16) -> Result<Vec<i64>, Status> {
        let mut client = self.lease(port)?;
        self.runtime
            .block_on(client.lease_leases(pb::LeaseLeasesRequest {}))
            .map(|r| r.into_inner().leases.iter().map(|l| l.id).collect())
    }

    /// `Maintenance.Status`: the member's current revision is in its header.
    pub fn status(&mut self, port: u16) -> Result<pb::StatusResponse, Status> {
        let mut client = self.maintenance(port)?;
        self.runtime
            .block_on(client.status(pb::StatusRequest {}))
            .map(|r| r.into_inner())
    }

    /// `Maintenance.HashKV` at `revision`.
    pub fn hash_kv(&mut self, port: u16, revision: i64) -> Result<pb::HashKvResponse, Status> {
        let mut client = self.maintenance(port)?;
        self.runtime
            .block_on(client.hash_kv(pb::HashKvRequest { revision }))
            .map(|r| r.into_inner())
    }
}

/// The `range_end` of every key starting with `prefix` (etcd's
/// `GetPrefixRangeEnd`).
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte 0xff: to the end of the keyspace.
    vec![0]
}
