//! Command-line flags: raftexample's four, with its defaults, plus raftkv's,
//! including etcd's TLS flags and the checks that keep a plaintext port off
//! non-loopback addresses unless `--insecure-plaintext` says so.

use std::path::PathBuf;

use clap::Parser;

/// The default of --listen-addr: loopback, as etcd's default client URL
/// (`http://localhost:2379`).
pub(crate) const DEFAULT_LISTEN_ADDR: &str = "127.0.0.1";

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

    /// Comma-separated peer URLs of the cluster, in id order. `https://`
    /// URLs switch the peer transport to TLS (with --peer-cert-file,
    /// --peer-key-file, --peer-trusted-ca-file); all members use one scheme.
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

    /// Address the client API listens on (with --port). The default is
    /// loopback, as etcd's default client URL is localhost: serving other
    /// machines needs TLS (--cert-file, --key-file) or --insecure-plaintext.
    #[arg(long, default_value = DEFAULT_LISTEN_ADDR)]
    pub listen_addr: String,

    /// Path to the client server TLS cert file (PEM chain). With
    /// --key-file, the client port (HTTP, gRPC, metrics, live view) speaks
    /// TLS only.
    #[arg(long, value_name = "FILE")]
    pub cert_file: Option<PathBuf>,

    /// Path to the client server TLS key file (PEM).
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,

    /// Path to the client server TLS trusted CA cert file. A client
    /// certificate, if given, must be signed by it.
    #[arg(long, value_name = "FILE")]
    pub trusted_ca_file: Option<PathBuf>,

    /// Enable client cert authentication: every client must present a
    /// certificate signed by --trusted-ca-file.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value = "false",
          action = clap::ArgAction::Set)]
    pub client_cert_auth: bool,

    /// Path to the peer server TLS cert file (PEM chain). Also this
    /// member's client certificate towards the other members. Needed by
    /// https:// peer URLs.
    #[arg(long, value_name = "FILE")]
    pub peer_cert_file: Option<PathBuf>,

    /// Path to the peer server TLS key file (PEM).
    #[arg(long, value_name = "FILE")]
    pub peer_key_file: Option<PathBuf>,

    /// Path to the peer server TLS trusted CA file: the CA that signed the
    /// members' peer certificates (checked in both directions).
    #[arg(long, value_name = "FILE")]
    pub peer_trusted_ca_file: Option<PathBuf>,

    /// Enable peer client cert authentication: the peer port accepts only
    /// connections with a certificate signed by --peer-trusted-ca-file.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value = "false",
          action = clap::ArgAction::Set)]
    pub peer_client_cert_auth: bool,

    /// Required CN for client certs connecting to the peer endpoint.
    #[arg(long, value_name = "CN")]
    pub peer_cert_allowed_cn: Option<String>,

    /// Allowed TLS hostname for inter peer authentication (a DNS or IP
    /// subject alternative name of the peer's client certificate).
    #[arg(long, value_name = "HOST")]
    pub peer_cert_allowed_hostname: Option<String>,

    /// How often the certificate, key and CA files are checked for changes
    /// (a changed file is reloaded without a restart).
    #[arg(long, default_value_t = tls::DEFAULT_RELOAD_INTERVAL_MS)]
    pub tls_reload_interval_ms: u64,

    /// Serve a port in plaintext even though it listens on an address other
    /// machines can reach (without it such a start is refused).
    #[arg(long, default_value_t = false)]
    pub insecure_plaintext: bool,

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

    /// Which ports speak TLS, with which files: the TLS flags checked
    /// against each other and against the scheme of --cluster's peer URLs
    /// (`members`).
    pub(crate) fn tls_plan(&self, members: &[(u64, String)]) -> Result<TlsPlan, String> {
        if self.tls_reload_interval_ms == 0 {
            return Err("--tls-reload-interval-ms must be positive".into());
        }
        Ok(TlsPlan {
            client: self.client_tls()?,
            peer: self.peer_tls(peer_scheme(members)?)?,
        })
    }

    fn client_tls(&self) -> Result<Option<tls::ServerTlsFiles>, String> {
        let pair = cert_and_key(
            ("--cert-file", &self.cert_file),
            ("--key-file", &self.key_file),
        )?;
        if self.client_cert_auth && self.trusted_ca_file.is_none() {
            return Err(
                "--client-cert-auth needs --trusted-ca-file (the CA that signs the \
                        clients' certificates)"
                    .into(),
            );
        }
        let Some((cert_file, key_file)) = pair else {
            if self.trusted_ca_file.is_some() {
                return Err(
                    "--trusted-ca-file needs --cert-file and --key-file: client \
                            certificates are checked only on a TLS client port"
                        .into(),
                );
            }
            return Ok(None);
        };
        Ok(Some(tls::ServerTlsFiles {
            cert_file,
            key_file,
            trusted_ca_file: self.trusted_ca_file.clone(),
            client_cert_auth: self.client_cert_auth,
            allowed_cn: None,
            allowed_hostname: None,
        }))
    }

    fn peer_tls(&self, scheme: PeerScheme) -> Result<Option<tls::ServerTlsFiles>, String> {
        let given: Vec<&str> = [
            ("--peer-cert-file", self.peer_cert_file.is_some()),
            ("--peer-key-file", self.peer_key_file.is_some()),
            (
                "--peer-trusted-ca-file",
                self.peer_trusted_ca_file.is_some(),
            ),
            ("--peer-client-cert-auth", self.peer_client_cert_auth),
            (
                "--peer-cert-allowed-cn",
                self.peer_cert_allowed_cn.is_some(),
            ),
            (
                "--peer-cert-allowed-hostname",
                self.peer_cert_allowed_hostname.is_some(),
            ),
        ]
        .into_iter()
        .filter_map(|(flag, set)| set.then_some(flag))
        .collect();
        if scheme == PeerScheme::Http {
            if given.is_empty() {
                return Ok(None);
            }
            return Err(format!(
                "{} given, but the peer URLs in --cluster are http://: peer TLS needs https:// \
                 peer URLs",
                given.join(", ")
            ));
        }
        let missing: Vec<&str> = [
            ("--peer-cert-file", self.peer_cert_file.is_none()),
            ("--peer-key-file", self.peer_key_file.is_none()),
            (
                "--peer-trusted-ca-file",
                self.peer_trusted_ca_file.is_none(),
            ),
        ]
        .into_iter()
        .filter_map(|(flag, unset)| unset.then_some(flag))
        .collect();
        if !missing.is_empty() {
            return Err(format!(
                "https:// peer URLs in --cluster need --peer-cert-file, --peer-key-file and \
                 --peer-trusted-ca-file (missing: {})",
                missing.join(", ")
            ));
        }
        for (flag, set) in [
            (
                "--peer-cert-allowed-cn",
                self.peer_cert_allowed_cn.is_some(),
            ),
            (
                "--peer-cert-allowed-hostname",
                self.peer_cert_allowed_hostname.is_some(),
            ),
        ] {
            if set && !self.peer_client_cert_auth {
                return Err(format!(
                    "{flag} needs --peer-client-cert-auth (the identity is checked on the \
                     peers' client certificates)"
                ));
            }
        }
        let (Some(cert_file), Some(key_file)) = (&self.peer_cert_file, &self.peer_key_file) else {
            return Err("https:// peer URLs need --peer-cert-file and --peer-key-file".into());
        };
        Ok(Some(tls::ServerTlsFiles {
            cert_file: cert_file.clone(),
            key_file: key_file.clone(),
            trusted_ca_file: self.peer_trusted_ca_file.clone(),
            client_cert_auth: self.peer_client_cert_auth,
            allowed_cn: self.peer_cert_allowed_cn.clone(),
            allowed_hostname: self.peer_cert_allowed_hostname.clone(),
        }))
    }

    /// Refuses a plaintext port on an address other machines can reach,
    /// unless --insecure-plaintext says so. The client port listens on
    /// --listen-addr, the peer port on the host of `own_peer_url`.
    pub(crate) fn check_exposure(&self, own_peer_url: &str, plan: &TlsPlan) -> Result<(), String> {
        if self.insecure_plaintext {
            return Ok(());
        }
        if plan.client.is_none() && !is_loopback_host(&self.listen_addr) {
            return Err(format!(
                "refusing to serve the client port in plaintext on {}:{}, which is not a \
                 loopback address: anyone who can reach it could read and write every key \
                 unencrypted. Give --cert-file and --key-file (TLS), or --listen-addr \
                 127.0.0.1 (this machine only), or --insecure-plaintext to accept the risk",
                self.listen_addr, self.port
            ));
        }
        let peer_addr = listen_addr_of(own_peer_url)?;
        let peer_host = peer_addr
            .rsplit_once(':')
            .map_or(peer_addr.as_str(), |(host, _)| host);
        if plan.peer.is_none() && !is_loopback_host(peer_host) {
            return Err(format!(
                "refusing to serve the peer port in plaintext on {peer_addr} (this member's \
                 peer URL in --cluster), which is not a loopback address: anyone who can reach \
                 it could inject Raft messages and read every replicated value. Use https:// \
                 peer URLs with --peer-cert-file, --peer-key-file and --peer-trusted-ca-file \
                 (TLS), or loopback peer URLs (this machine only), or --insecure-plaintext to \
                 accept the risk"
            ));
        }
        Ok(())
    }
}

/// Which ports speak TLS (`None`: plaintext).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsPlan {
    /// The client port (--cert-file and friends).
    pub client: Option<tls::ServerTlsFiles>,
    /// The peer port (https:// peer URLs, --peer-cert-file and friends).
    /// Its files also make the outgoing peer client: the peer CA verifies
    /// the other members, the peer certificate is this member's identity.
    /// `trusted_ca_file` is always set.
    pub peer: Option<tls::ServerTlsFiles>,
}

/// The scheme every peer URL uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PeerScheme {
    /// `http://`: the peer transport is plaintext.
    Http,
    /// `https://`: the peer transport speaks TLS.
    Https,
}

/// The one scheme of `members`' peer URLs; mixing them is an error.
pub(crate) fn peer_scheme(members: &[(u64, String)]) -> Result<PeerScheme, String> {
    let scheme_of = |url: &str| {
        if url.starts_with("https://") {
            PeerScheme::Https
        } else {
            PeerScheme::Http
        }
    };
    let Some((_, first)) = members.first() else {
        return Err("--cluster names no peer URL".into());
    };
    let scheme = scheme_of(first);
    if let Some((_, other)) = members.iter().find(|(_, url)| scheme_of(url) != scheme) {
        return Err(format!(
            "--cluster mixes http:// and https:// peer URLs ({first} and {other}): all members \
             must use one scheme"
        ));
    }
    Ok(scheme)
}

/// Both of a cert/key flag pair, or neither.
fn cert_and_key(
    (cert_flag, cert): (&str, &Option<PathBuf>),
    (key_flag, key): (&str, &Option<PathBuf>),
) -> Result<Option<(PathBuf, PathBuf)>, String> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some((cert.clone(), key.clone()))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(format!("{cert_flag} needs {key_flag}")),
        (None, Some(_)) => Err(format!("{key_flag} needs {cert_flag}")),
    }
}

/// Whether a listen host (name or IP literal, IPv6 with or without
/// brackets) is this machine only. `0.0.0.0` and `::` listen everywhere;
/// a name other than `localhost` may resolve to anything.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
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

/// The `host:port` to listen on for a peer URL like `http://127.0.0.1:12379`
/// (or `https://`).
pub(crate) fn listen_addr_of(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("peer URL {url:?} must start with http:// or https://"))?;
    let host_port = rest.trim_end_matches('/');
    let (host, port) = host_port
        .rsplit_once(':')
        .ok_or_else(|| format!("peer URL {url:?} has no port"))?;
    if host.is_empty() || host_port.contains('/') {
        return Err(format!("peer URL {url:?} must be http(s)://host:port"));
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
        assert!(listen_addr_of("ftp://127.0.0.1:1").is_err());
        assert_eq!(
            listen_addr_of("https://127.0.0.1:1").unwrap(),
            "127.0.0.1:1"
        );
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

    const HTTPS: &str = "https://127.0.0.1:1,https://127.0.0.1:2";
    const PEER_TLS: [&str; 6] = [
        "--peer-cert-file",
        "p.pem",
        "--peer-key-file",
        "p-key.pem",
        "--peer-trusted-ca-file",
        "ca.pem",
    ];

    fn plan_of(args: &[&str]) -> Result<TlsPlan, String> {
        let flags = Flags::parse_from(std::iter::once("raftkv").chain(args.iter().copied()));
        flags.tls_plan(&flags.members()?)
    }

    fn plan_error(args: &[&str]) -> String {
        plan_of(args).expect_err("refused")
    }

    #[test]
    fn no_tls_flags_mean_plaintext_ports() {
        let plan = plan_of(&[]).unwrap();
        assert_eq!(plan.client, None);
        assert_eq!(plan.peer, None);
        let flags = Flags::parse_from(["raftkv"]);
        assert_eq!(flags.listen_addr, "127.0.0.1");
        assert_eq!(
            flags.tls_reload_interval_ms,
            tls::DEFAULT_RELOAD_INTERVAL_MS
        );
        assert!(!flags.insecure_plaintext);
    }

    #[test]
    fn client_tls_takes_etcds_flags() {
        let plan = plan_of(&[
            "--cert-file",
            "c.pem",
            "--key-file",
            "c-key.pem",
            "--trusted-ca-file",
            "ca.pem",
            "--client-cert-auth",
        ])
        .unwrap();
        let client = plan.client.expect("client TLS");
        assert_eq!(client.cert_file, PathBuf::from("c.pem"));
        assert_eq!(client.key_file, PathBuf::from("c-key.pem"));
        assert_eq!(client.trusted_ca_file, Some(PathBuf::from("ca.pem")));
        assert!(client.client_cert_auth);
        assert_eq!(plan.peer, None);
        // etcd's boolean form with a value.
        let plan = plan_of(&[
            "--cert-file",
            "c.pem",
            "--key-file",
            "k.pem",
            "--client-cert-auth=false",
        ])
        .unwrap();
        assert!(!plan.client.expect("client TLS").client_cert_auth);
    }

    #[test]
    fn a_cert_without_its_key_is_refused_naming_both_flags() {
        assert_eq!(
            plan_error(&["--cert-file", "c.pem"]),
            "--cert-file needs --key-file"
        );
        assert_eq!(
            plan_error(&["--key-file", "k.pem"]),
            "--key-file needs --cert-file"
        );
        let mut args = vec!["--cluster", HTTPS];
        args.extend([
            "--peer-cert-file",
            "p.pem",
            "--peer-trusted-ca-file",
            "ca.pem",
        ]);
        let error = plan_error(&args);
        assert!(error.contains("missing: --peer-key-file"), "{error}");
    }

    #[test]
    fn client_cert_auth_needs_a_trusted_ca() {
        let error = plan_error(&["--cert-file", "c", "--key-file", "k", "--client-cert-auth"]);
        assert!(
            error.starts_with("--client-cert-auth needs --trusted-ca-file"),
            "{error}"
        );
        let mut args = vec!["--cluster", HTTPS, "--peer-client-cert-auth"];
        args.extend(["--peer-cert-file", "p", "--peer-key-file", "k"]);
        let error = plan_error(&args);
        assert!(error.contains("--peer-trusted-ca-file"), "{error}");
        let error = plan_error(&["--trusted-ca-file", "ca.pem"]);
        assert!(
            error.starts_with("--trusted-ca-file needs --cert-file and --key-file"),
            "{error}"
        );
    }

    #[test]
    fn an_allowed_identity_needs_peer_client_cert_auth() {
        for flag in ["--peer-cert-allowed-cn", "--peer-cert-allowed-hostname"] {
            let mut args = vec!["--cluster", HTTPS, flag, "member-1"];
            args.extend(PEER_TLS);
            let error = plan_error(&args);
            assert!(
                error.starts_with(&format!("{flag} needs --peer-client-cert-auth")),
                "{error}"
            );
            args.push("--peer-client-cert-auth");
            let peer = plan_of(&args).unwrap().peer.expect("peer TLS");
            assert!(peer.client_cert_auth);
            assert!(
                peer.allowed_cn.as_deref() == Some("member-1")
                    || peer.allowed_hostname.as_deref() == Some("member-1")
            );
        }
    }

    #[test]
    fn https_peer_urls_need_the_peer_files() {
        let error = plan_error(&["--cluster", HTTPS]);
        assert!(
            error.starts_with(
                "https:// peer URLs in --cluster need --peer-cert-file, --peer-key-file and \
                 --peer-trusted-ca-file"
            ),
            "{error}"
        );
        assert!(
            error.contains("missing: --peer-cert-file, --peer-key-file, --peer-trusted-ca-file"),
            "{error}"
        );
        let mut args = vec!["--cluster", HTTPS];
        args.extend(PEER_TLS);
        let peer = plan_of(&args).unwrap().peer.expect("peer TLS");
        assert_eq!(peer.cert_file, PathBuf::from("p.pem"));
        assert_eq!(peer.trusted_ca_file, Some(PathBuf::from("ca.pem")));
        assert!(!peer.client_cert_auth);
    }

    #[test]
    fn peer_tls_flags_with_http_peer_urls_are_refused() {
        let error = plan_error(&PEER_TLS);
        assert!(
            error.starts_with("--peer-cert-file, --peer-key-file, --peer-trusted-ca-file given")
                && error.contains("are http://"),
            "{error}"
        );
        let error = plan_error(&["--peer-client-cert-auth"]);
        assert!(
            error.starts_with("--peer-client-cert-auth given"),
            "{error}"
        );
    }

    #[test]
    fn peer_urls_must_share_one_scheme() {
        let error = plan_error(&["--cluster", "https://127.0.0.1:1,http://127.0.0.1:2"]);
        assert!(error.contains("all members must use one scheme"), "{error}");
        assert_eq!(
            peer_scheme(&parse_cluster(HTTPS).unwrap()).unwrap(),
            PeerScheme::Https
        );
        assert_eq!(
            peer_scheme(&parse_cluster("http://a:1").unwrap()).unwrap(),
            PeerScheme::Http
        );
    }

    fn exposure(args: &[&str]) -> Result<(), String> {
        let flags = Flags::parse_from(std::iter::once("raftkv").chain(args.iter().copied()));
        let members = flags.members()?;
        let plan = flags.tls_plan(&members)?;
        flags.check_exposure(&flags.own_peer_url(&members)?, &plan)
    }

    #[test]
    fn a_plaintext_client_port_off_loopback_is_refused_unless_insecure() {
        exposure(&[]).expect("loopback by default");
        exposure(&["--listen-addr", "localhost"]).expect("localhost");
        exposure(&["--listen-addr", "::1"]).expect("IPv6 loopback");
        let error = exposure(&["--listen-addr", "0.0.0.0", "--port", "2379"]).unwrap_err();
        for needle in [
            "0.0.0.0:2379",
            "not a loopback address",
            "--cert-file and --key-file",
            "--listen-addr 127.0.0.1",
            "--insecure-plaintext",
        ] {
            assert!(error.contains(needle), "{needle} missing from: {error}");
        }
        assert!(exposure(&["--listen-addr", "10.1.2.3"]).is_err());
        assert!(exposure(&["--listen-addr", "db.example"]).is_err());
        exposure(&["--listen-addr", "0.0.0.0", "--insecure-plaintext"]).expect("insecure");
        exposure(&[
            "--listen-addr",
            "0.0.0.0",
            "--cert-file",
            "c",
            "--key-file",
            "k",
        ])
        .expect("TLS");
    }

    #[test]
    fn a_plaintext_peer_port_off_loopback_is_refused_unless_insecure() {
        let error = exposure(&["--cluster", "http://0.0.0.0:12379"]).unwrap_err();
        for needle in [
            "peer port",
            "0.0.0.0:12379",
            "https:// peer URLs",
            "--insecure-plaintext",
        ] {
            assert!(error.contains(needle), "{needle} missing from: {error}");
        }
        assert!(exposure(&[
            "--cluster",
            "http://127.0.0.1:1,http://10.0.0.2:2",
            "--id",
            "2"
        ])
        .is_err());
        // Another member's address does not matter, only this one's.
        exposure(&["--cluster", "http://127.0.0.1:1,http://10.0.0.2:2"]).expect("own loopback");
        exposure(&["--cluster", "http://[::1]:1"]).expect("IPv6 loopback");
        exposure(&["--cluster", "http://0.0.0.0:1", "--insecure-plaintext"]).expect("insecure");
        let mut args = vec!["--cluster", "https://0.0.0.0:1"];
        args.extend(PEER_TLS);
        exposure(&args).expect("peer TLS");
    }

    #[test]
    fn loopback_hosts_are_recognised() {
        for host in ["127.0.0.1", "127.1.2.3", "localhost", "::1", "[::1]"] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in ["0.0.0.0", "::", "[::]", "10.0.0.1", "example.com", ""] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }
}
