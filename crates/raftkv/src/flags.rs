//! Command-line flags: raftexample's four, with its defaults, plus raftkv's.

use std::path::PathBuf;

use clap::Parser;

/// A replicated key-value store: etcd's raftexample, rebuilt so that an
/// acknowledged write is never lost and reads are linearizable.
///
/// Node ids are 1-based positions in --cluster; this node's peer URL is
/// cluster[id-1]. Data lives in --data-dir (default raftkv-<id>).
#[derive(Debug, Parser)]
#[command(name = "raftkv", version)]
pub(crate) struct Flags {
    /// This node's id: its 1-based position in --cluster.
    #[arg(long, default_value_t = 1)]
    pub id: u64,

    /// Comma-separated peer URLs of the cluster, in id order.
    #[arg(long, default_value = "http://127.0.0.1:9021")]
    pub cluster: String,

    /// Port of the client HTTP API (key-value and membership).
    #[arg(long, default_value_t = 9121)]
    pub port: u16,

    /// Join an existing cluster: start with no configuration and wait to be
    /// added with `POST /<id>` on a member.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value = "false",
          action = clap::ArgAction::Set)]
    pub join: bool,

    /// Data directory (WAL in <dir>/wal, snapshots in <dir>/snap).
    /// Default: raftkv-<id> in the working directory.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,

    /// Address the client API listens on (with --port).
    #[arg(long, default_value = "0.0.0.0")]
    pub listen_addr: String,

    /// Take a snapshot after at least this many applied entries (see
    /// --snapshot-log-percent).
    #[arg(long, default_value_t = 10_000)]
    pub snapshot_count: u64,

    /// A snapshot also waits until the log written since the previous one is
    /// this percentage of that snapshot's size, so snapshot work stays
    /// proportional to writes as the data grows (0: every --snapshot-count
    /// entries exactly, as raftexample).
    #[arg(long, default_value_t = 100)]
    pub snapshot_log_percent: u64,

    /// Entries kept in the log after a snapshot, for slow followers.
    #[arg(long, default_value_t = 10_000)]
    pub catch_up_entries: u64,

    /// How long a write, read or membership change may take before the
    /// client gets 503 (for a write: outcome unknown).
    #[arg(long, default_value_t = kvstore::KvConfig::DEFAULT_REQUEST_TIMEOUT_MS)]
    pub request_timeout_ms: u64,

    /// Largest value accepted by PUT, in bytes (larger: 413).
    #[arg(long, default_value_t = 1_572_864)]
    pub max_value_bytes: usize,

    /// Largest v3 write request (Put, DeleteRange, Txn), encoded, in bytes
    /// (etcd's --max-request-bytes; larger: "etcdserver: request is too
    /// large"). gRPC messages may exceed it by 512 KiB before the gRPC layer
    /// refuses them with ResourceExhausted.
    #[arg(long, default_value_t = api::ApiConfig::DEFAULT_MAX_REQUEST_BYTES)]
    pub max_request_bytes: usize,

    /// Writes in flight on this node before new ones get 503.
    #[arg(long, default_value_t = kvstore::KvConfig::DEFAULT_MAX_IN_FLIGHT_WRITES)]
    pub max_in_flight_writes: usize,

    /// Client requests served at once before new ones get 503 (default:
    /// twice --max-in-flight-writes, room for as many reads as writes). Must
    /// be above --max-in-flight-writes, or that bound could not be reached.
    #[arg(long)]
    pub max_concurrent_requests: Option<usize>,

    /// Most compares, or operations of one branch, at one level of a txn
    /// (etcd's flag of the same name).
    #[arg(long, default_value_t = kvstore::KvConfig::DEFAULT_MAX_TXN_OPS)]
    pub max_txn_ops: usize,

    /// Quota on the keyspace's retained bytes (keys and values of every
    /// retained version); past it writes fail with "database space exceeded"
    /// and the NOSPACE alarm is raised (etcd's flag of the same name; 0 means
    /// the default).
    #[arg(long, default_value_t = kvstore::KvConfig::DEFAULT_QUOTA_BYTES)]
    pub quota_backend_bytes: u64,

    /// Interval of the progress notifications sent to caught-up watchers
    /// created with `progress_notify` (etcd's
    /// `--experimental-watch-progress-notify-interval`, 10 minutes).
    #[arg(long, default_value_t = kvstore::WatchConfig::DEFAULT_PROGRESS_NOTIFY_INTERVAL_MS)]
    pub watch_progress_notify_interval_ms: u64,

    /// Auto-compaction mode: "periodic" (retention is a duration) or
    /// "revision" (retention is a revision count). Only the leader compacts.
    #[arg(long, default_value = kvstore::AutoCompaction::DEFAULT_MODE)]
    pub auto_compaction_mode: String,

    /// Auto-compaction retention: "1h", "30m" or a number of hours in
    /// periodic mode, a revision count in revision mode; 0 turns it off.
    #[arg(long, default_value = kvstore::AutoCompaction::DEFAULT_RETENTION)]
    pub auto_compaction_retention: String,

    /// Length of a Raft tick.
    #[arg(long, default_value_t = 100)]
    pub tick_ms: u64,

    /// Ticks without a leader before an election.
    #[arg(long, default_value_t = 10)]
    pub election_ticks: usize,

    /// Size of a preallocated WAL segment.
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    pub wal_segment_bytes: u64,

    /// Cluster token: nodes with different tokens refuse each other's
    /// messages (their cluster ids differ).
    #[arg(long, default_value = "raftkv")]
    pub cluster_token: String,

    /// Serve the transport's fault-injection routes on the peer port
    /// (for chaos tests only; never in production).
    #[arg(long, default_value_t = false)]
    pub enable_fault_injection: bool,

    /// This member's name, published to the others and listed by
    /// `etcdctl member list` (default: raftkv-<id>).
    #[arg(long)]
    pub name: Option<String>,

    /// Comma-separated client URLs published to the other members (etcd's
    /// flag of the same name; `etcdctl endpoint ... --cluster` dials them).
    /// Default: <host of this node's peer URL>:<--port>, without `http://`:
    /// etcdctl 3.4 sends a URL with a scheme as the HTTP/2 `:authority` when
    /// it dials one endpoint, which raftkv's HTTP/2 stack refuses.
    #[arg(long)]
    pub advertise_client_urls: Option<String>,
}

impl Flags {
    /// The members named by --cluster as (id, URL).
    pub(crate) fn members(&self) -> Result<Vec<(u64, String)>, String> {
        parse_cluster(&self.cluster)
    }

    /// This node's own peer URL: cluster[id-1].
    pub(crate) fn own_peer_url(&self, members: &[(u64, String)]) -> Result<String, String> {
        members
            .iter()
            .find(|(id, _)| *id == self.id)
            .map(|(_, url)| url.clone())
            .ok_or_else(|| {
                format!(
                    "--id {} is out of range: --cluster has {} peer URL(s)",
                    self.id,
                    members.len()
                )
            })
    }

    /// What this member publishes about itself: its name and client URLs.
    pub(crate) fn attributes(
        &self,
        own_peer_url: &str,
    ) -> Result<raftnode::MemberAttributes, String> {
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| format!("raftkv-{}", self.id));
        let client_urls = match &self.advertise_client_urls {
            Some(urls) => urls
                .split(',')
                .map(|url| url.trim().to_string())
                .filter(|url| !url.is_empty())
                .collect(),
            None => {
                let peer = listen_addr_of(own_peer_url)?;
                let host = peer
                    .rsplit_once(':')
                    .map_or(peer.as_str(), |(host, _)| host);
                vec![format!("{host}:{}", self.port)]
            }
        };
        Ok(raftnode::MemberAttributes { name, client_urls })
    }

    /// The data directory.
    pub(crate) fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("raftkv-{}", self.id)))
    }
}

/// The members named by a --cluster value (comma-separated peer URLs in id
/// order) as (id, URL).
pub(crate) fn parse_cluster(cluster: &str) -> Result<Vec<(u64, String)>, String> {
    let urls: Vec<String> = cluster
        .split(',')
        .map(|url| url.trim().to_string())
        .filter(|url| !url.is_empty())
        .collect();
    if urls.is_empty() {
        return Err("--cluster names no peer URL".into());
    }
    for url in &urls {
        listen_addr_of(url)?;
    }
    Ok(urls
        .into_iter()
        .enumerate()
        .map(|(i, url)| (i as u64 + 1, url))
        .collect())
}

/// The `host:port` to listen on for a peer URL like `http://127.0.0.1:12379`.
pub(crate) fn listen_addr_of(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("peer URL {url:?} must start with http://"))?;
    let host_port = rest.trim_end_matches('/');
    let (host, port) = host_port
        .rsplit_once(':')
        .ok_or_else(|| format!("peer URL {url:?} has no port"))?;
    if host.is_empty() || host_port.contains('/') {
        return Err(format!("peer URL {url:?} must be http://host:port"));
    }
    port.parse::<u16>()
        .map_err(|_| format!("peer URL {url:?} has an invalid port"))?;
    Ok(host_port.to_string())
}

/// The cluster id for a cluster token (64-bit FNV-1a).
pub(crate) fn cluster_id(token: &str) -> u64 {
    token.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raftexample_flags_parse_with_its_defaults() {
        let flags = Flags::parse_from(["raftkv"]);
        assert_eq!(flags.id, 1);
        assert_eq!(flags.port, 9121);
        assert_eq!(flags.cluster, "http://127.0.0.1:9021");
        assert!(!flags.join);
        let flags = Flags::parse_from(["raftkv", "--id", "2", "--join", "--port", "1"]);
        assert!(flags.join);
        let flags = Flags::parse_from(["raftkv", "--join=true"]);
        assert!(flags.join);
    }

    #[test]
    fn members_publish_a_name_and_client_urls() {
        let flags = Flags::parse_from(["raftkv", "--id", "2", "--port", "2379"]);
        let attributes = flags.attributes("http://10.0.0.2:12380").unwrap();
        assert_eq!(attributes.name, "raftkv-2");
        assert_eq!(attributes.client_urls, vec!["10.0.0.2:2379"]);
        let flags = Flags::parse_from([
            "raftkv",
            "--name",
            "east",
            "--advertise-client-urls",
            "http://a:1, http://b:2",
        ]);
        let attributes = flags.attributes("http://[::1]:12380").unwrap();
        assert_eq!(attributes.name, "east");
        assert_eq!(attributes.client_urls, vec!["http://a:1", "http://b:2"]);
        let flags = Flags::parse_from(["raftkv", "--port", "7"]);
        assert_eq!(
            flags.attributes("http://[::1]:12380").unwrap().client_urls,
            vec!["[::1]:7"]
        );
    }

    #[test]
    fn cluster_urls_become_members_by_position() {
        let flags = Flags::parse_from([
            "raftkv",
            "--id",
            "2",
            "--cluster",
            "http://127.0.0.1:12379,http://127.0.0.1:22379",
        ]);
        let members = flags.members().unwrap();
        assert_eq!(members[1], (2, "http://127.0.0.1:22379".to_string()));
        assert_eq!(
            flags.own_peer_url(&members).unwrap(),
            "http://127.0.0.1:22379"
        );
        let flags = Flags::parse_from(["raftkv", "--id", "3", "--cluster", "http://a:1"]);
        assert!(flags
            .own_peer_url(&flags.members().unwrap())
            .unwrap_err()
            .contains("out of range"));
    }

    #[test]
    fn bad_peer_urls_are_refused_with_a_reason() {
        assert!(listen_addr_of("127.0.0.1:1").is_err());
        assert!(listen_addr_of("http://127.0.0.1").is_err());
        assert!(listen_addr_of("http://127.0.0.1:99999").is_err());
        assert_eq!(
            listen_addr_of("http://127.0.0.1:1/").unwrap(),
            "127.0.0.1:1"
        );
    }

    #[test]
    fn cluster_ids_differ_by_token() {
        assert_ne!(cluster_id("a"), cluster_id("b"));
        assert_eq!(cluster_id("raftkv"), cluster_id("raftkv"));
    }
}
