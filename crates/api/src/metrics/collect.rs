//! The figures read at scrape time from state the layers already keep.

use std::collections::BTreeMap;
use std::sync::Arc;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::{read, Sources};

/// The scrape-time collector registered in every [`super::Metrics`].
pub(super) struct Collector {
    sources: Arc<Sources>,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector").finish_non_exhaustive()
    }
}

impl Collector {
    pub(super) fn new(sources: Arc<Sources>) -> Collector {
        Collector { sources }
    }
}

/// Writes one unlabelled gauge.
fn gauge<V: prometheus_client::encoding::EncodeGaugeValue + std::fmt::Debug + Send + Sync>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: V,
) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// Writes one counter per peer, labelled `label` = the peer id in hex (as
/// etcd prints member ids). `name` is without `_total` (the encoder adds it).
fn per_peer_counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    label: &'static str,
    peers: &[(String, u64)],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Counter,
    )?;
    for (peer, value) in peers {
        let labels = [(label, peer.as_str())];
        ConstCounter::new(*value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Writes one counter per label set.
fn labelled_counter<const N: usize>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: &BTreeMap<[(&'static str, String); N], u64>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Counter,
    )?;
    for (labels, value) in samples {
        ConstCounter::new(*value).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

/// The TLS ports' figures, summed over sources that share a label set
/// (a certificate's expiry: the earliest).
fn encode_tls(
    encoder: &mut DescriptorEncoder<'_>,
    statuses: &[tls::TlsStatus],
) -> Result<(), std::fmt::Error> {
    let mut handshakes = BTreeMap::new();
    let mut failures = BTreeMap::new();
    let mut reloads = BTreeMap::new();
    let mut expiry: BTreeMap<[(&'static str, String); 2], i64> = BTreeMap::new();
    for status in statuses {
        let port = status.port.label().to_string();
        *handshakes.entry([("port", port.clone())]).or_insert(0) += status.handshakes_total;
        *reloads.entry([("port", port.clone())]).or_insert(0) += status.reloads_total;
        for (reason, count) in &status.handshake_failures {
            *failures
                .entry([("port", port.clone()), ("reason", reason.to_string())])
                .or_insert(0) += *count;
        }
        for certificate in &status.certificates {
            let key = [
                ("port", port.clone()),
                ("role", certificate.role.to_string()),
            ];
            let earliest = expiry.entry(key).or_insert(certificate.not_after_unix_s);
            *earliest = (*earliest).min(certificate.not_after_unix_s);
        }
    }
    labelled_counter(
        encoder,
        "raftkv_tls_handshakes",
        "TLS handshakes completed on the port",
        &handshakes,
    )?;
    labelled_counter(
        encoder,
        "raftkv_tls_handshake_failures",
        "TLS handshakes refused or failed on the port, by reason (plaintext_http, \
         bad_certificate, unknown_ca, expired_certificate, no_certificate, disallowed_identity, \
         timeout, truncated, other)",
        &failures,
    )?;
    labelled_counter(
        encoder,
        "raftkv_tls_reloads",
        "Times the port's certificate, key or CA files were reloaded after a change",
        &reloads,
    )?;
    let mut family = encoder.encode_descriptor(
        "raftkv_tls_certificate_expiry_timestamp_seconds",
        "Expiry (notAfter, unix seconds) of the certificate the port presents (role=cert) and of \
         its trusted CA (role=ca); the earliest if a file holds several",
        None,
        prometheus_client::metrics::MetricType::Gauge,
    )?;
    for (labels, not_after_unix_s) in &expiry {
        ConstGauge::new(*not_after_unix_s).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let encoder = &mut encoder;
        if let Some(store) = read(&self.sources.store).as_ref() {
            let status = store.consensus().status();
            let has_leader = i64::from(status.leader_id.is_some());
            gauge(
                encoder,
                "etcd_server_has_leader",
                "Whether or not a leader exists. 1 is existence, 0 is not",
                has_leader,
            )?;
            gauge(
                encoder,
                "etcd_server_is_leader",
                "Whether or not this member is a leader. 1 if is, 0 otherwise",
                i64::from(status.role == raftnode::Role::Leader),
            )?;
            // etcd's are gauges of Raft indexes despite the `_total` suffix.
            gauge(
                encoder,
                "etcd_server_proposals_committed_total",
                "The total number of consensus proposals committed (a gauge: this member's Raft \
                 commit index)",
                status.commit_index,
            )?;
            gauge(
                encoder,
                "etcd_server_proposals_applied_total",
                "The total number of consensus proposals applied (a gauge: this member's applied \
                 index)",
                status.applied_index,
            )?;
            gauge(
                encoder,
                "etcd_server_proposals_pending",
                "The current number of pending proposals to commit (writes of this member waiting \
                 for their apply)",
                store.pending_writes(),
            )?;
            let failed = self
                .sources
                .proposals_refused
                .load(std::sync::atomic::Ordering::Relaxed)
                + store.writes_timed_out();
            let metric = ConstCounter::new(failed);
            metric.encode(encoder.encode_descriptor(
                "etcd_server_proposals_failed",
                "The total number of failed proposals seen (refused: no leader, dropped by raft, \
                 queue full, node stopped; or not applied before the request timeout)",
                None,
                metric.metric_type(),
            )?)?;
            gauge(
                encoder,
                "raftkv_raft_term",
                "This member's Raft term",
                status.term,
            )?;
            gauge(
                encoder,
                "raftkv_raft_last_index",
                "Highest index in this member's log",
                status.last_index,
            )?;
            gauge(
                encoder,
                "raftkv_raft_snapshot_index",
                "Index of this member's newest snapshot (0 if none)",
                status.snapshot_index,
            )?;
            gauge(
                encoder,
                "raftkv_members",
                "Voting members in this member's configuration",
                status.members.len(),
            )?;
            let keyspace = store.keyspace_status();
            gauge(
                encoder,
                "etcd_mvcc_db_total_size_in_bytes",
                "Total size of the underlying database physically allocated in bytes (raftkv: \
                 the bytes the keyspace retains, Maintenance.Status's dbSize)",
                keyspace.db_size_bytes,
            )?;
            gauge(
                encoder,
                "etcd_mvcc_db_total_size_in_use_in_bytes",
                "Total size of the underlying database logically in use in bytes (raftkv: equal \
                 to etcd_mvcc_db_total_size_in_bytes, nothing is freed lazily)",
                keyspace.db_size_bytes,
            )?;
            gauge(
                encoder,
                "raftkv_mvcc_revision",
                "The keyspace's current revision",
                keyspace.revision,
            )?;
            gauge(
                encoder,
                "raftkv_mvcc_compact_revision",
                "The keyspace's compacted revision (-1 if never compacted)",
                keyspace.compact_revision,
            )?;
            gauge(
                encoder,
                "raftkv_keys",
                "Keys that exist at head",
                keyspace.keys,
            )?;
            gauge(
                encoder,
                "raftkv_alarms_active",
                "Alarms armed in the cluster (any makes /health false)",
                keyspace.alarms.len(),
            )?;
            gauge(
                encoder,
                "raftkv_leases",
                "Granted leases",
                store.keyspace().lease_count(),
            )?;
            let (ring_revisions, ring_bytes) = store.watch_ring_usage();
            gauge(
                encoder,
                "raftkv_watch_ring_revisions",
                "Write revisions the watch ring holds",
                ring_revisions,
            )?;
            gauge(
                encoder,
                "raftkv_watch_ring_bytes",
                "Bytes of events the watch ring holds",
                ring_bytes,
            )?;
        }
        if let Some((permits, limit)) = read(&self.sources.requests).as_ref() {
            let in_progress = limit.saturating_sub(permits.available_permits());
            gauge(
                encoder,
                "raftkv_client_requests_in_progress",
                "Client requests (HTTP and gRPC) being served now",
                in_progress,
            )?;
            gauge(
                encoder,
                "raftkv_client_requests_limit",
                "Client requests served at once before load shedding (--max-concurrent-requests)",
                *limit,
            )?;
        }
        if let Some(source) = read(&self.sources.peers).as_ref() {
            let stats = source();
            let by_peer = |value: fn(&transport::PeerStats) -> u64| -> Vec<(String, u64)> {
                stats
                    .peers
                    .iter()
                    .map(|(id, peer)| (format!("{id:x}"), value(peer)))
                    .collect()
            };
            per_peer_counter(
                encoder,
                "etcd_network_peer_sent_bytes",
                "The total number of bytes sent to peers",
                "To",
                &by_peer(|p| p.bytes_sent),
            )?;
            per_peer_counter(
                encoder,
                "etcd_network_peer_received_bytes",
                "The total number of bytes received from peers",
                "From",
                &by_peer(|p| p.bytes_received),
            )?;
            per_peer_counter(
                encoder,
                "etcd_network_peer_sent_failures",
                "The total number of send failures from peers (failed connections and requests)",
                "To",
                &by_peer(|p| p.send_failures),
            )?;
            per_peer_counter(
                encoder,
                "raftkv_network_peer_dropped_messages",
                "Raft messages to or from the peer that were dropped (full queue, failed or \
                 refused request, fault injection, overloaded node)",
                "Peer",
                &by_peer(|p| p.msgs_dropped),
            )?;
            per_peer_counter(
                encoder,
                "raftkv_network_snapshots_sent",
                "Snapshots acknowledged by the peer",
                "To",
                &by_peer(|p| p.snapshots_sent),
            )?;
            per_peer_counter(
                encoder,
                "raftkv_network_snapshots_failed",
                "Snapshots that could not be delivered to the peer",
                "To",
                &by_peer(|p| p.snapshots_failed),
            )?;
            per_peer_counter(
                encoder,
                "raftkv_network_snapshots_received",
                "Snapshots received from the peer",
                "From",
                &by_peer(|p| p.snapshots_received),
            )?;
            gauge(
                encoder,
                "raftkv_network_inbound_bytes",
                "Bytes of received peer frames not processed yet (bounded by the inbound budget)",
                stats.inbound_bytes,
            )?;
        }
        let tls_statuses: Vec<tls::TlsStatus> = read(&self.sources.tls)
            .iter()
            .map(|source| source())
            .collect();
        if !tls_statuses.is_empty() {
            encode_tls(encoder, &tls_statuses)?;
        }
        Ok(())
    }
}
