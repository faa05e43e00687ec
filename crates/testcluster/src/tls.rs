//! TLS clusters: a throwaway PKI under the data root, the flags that use
//! it, and HTTP clients that trust it.
//!
//! One CA signs everything. Each member gets two leaves, both for
//! `127.0.0.1` and `localhost`: `member-<id>` (CN `member-<id>`) for its
//! client port and `peer-<id>` for its peer port (CN
//! [`TlsMode::peer_allowed_cn`] if set, else `member-<id>`), which is also
//! its client identity towards the other members. `client` (CN
//! [`CLIENT_CN`]) is what the harness's client presents on client ports,
//! `peer-client` (the peers' CN) what it presents on peer ports (the fault
//! routes).

use std::path::{Path, PathBuf};

use crate::Error;

/// CN of the harness's client certificate (client ports).
pub const CLIENT_CN: &str = "client";

/// The CN [`TlsMode::full`] allows on peer ports, which every member's peer
/// certificate carries.
pub const PEER_CN: &str = "raftkv-peer";

/// Days the harness's certificates are valid.
const VALID_DAYS: i64 = 30;

/// The hosts every leaf is issued for.
const HOSTS: [&str; 2] = ["127.0.0.1", "localhost"];

/// Which ports of a cluster speak TLS, and how strictly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsMode {
    /// The client port speaks TLS (`--cert-file`, `--key-file`,
    /// `--trusted-ca-file`).
    pub client: bool,
    /// The client port requires a client certificate
    /// (`--client-cert-auth`).
    pub client_cert_auth: bool,
    /// Peer URLs are `https://` (`--peer-cert-file`, `--peer-key-file`,
    /// `--peer-trusted-ca-file`).
    pub peer: bool,
    /// The peer port requires a client certificate
    /// (`--peer-client-cert-auth`).
    pub peer_client_cert_auth: bool,
    /// `--peer-cert-allowed-cn`, and the CN of every member's peer
    /// certificate.
    pub peer_allowed_cn: Option<String>,
}

impl TlsMode {
    /// Everything on: client TLS with client certificate authentication,
    /// peer TLS with peer certificate authentication and [`PEER_CN`] as
    /// the allowed CN.
    pub fn full() -> TlsMode {
        TlsMode {
            client: true,
            client_cert_auth: true,
            peer: true,
            peer_client_cert_auth: true,
            peer_allowed_cn: Some(PEER_CN.to_string()),
        }
    }
}

/// Where a TLS cluster's PKI lies (for etcdctl, curl and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    /// The directory of every file below (`<data root>/pki`).
    pub dir: PathBuf,
    /// The CA certificate (`--cacert` of etcdctl and curl).
    pub ca_file: PathBuf,
    /// The harness's client certificate (CN [`CLIENT_CN`]).
    pub client_cert_file: PathBuf,
    /// Its key.
    pub client_key_file: PathBuf,
    /// A certificate with the members' peer CN, for talking to peer ports.
    pub peer_client_cert_file: PathBuf,
    /// Its key.
    pub peer_client_key_file: PathBuf,
}

impl TlsPaths {
    /// Member `id`'s client-port certificate and key.
    pub fn member_files(&self, id: u64) -> (PathBuf, PathBuf) {
        leaf_files(&self.dir, &format!("member-{id}"))
    }

    /// Member `id`'s peer certificate and key.
    pub fn peer_files(&self, id: u64) -> (PathBuf, PathBuf) {
        leaf_files(&self.dir, &format!("peer-{id}"))
    }
}

/// `<dir>/<name>.pem` and `<dir>/<name>-key.pem`, as `tls::dev` writes them.
fn leaf_files(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}-key.pem")),
    )
}

/// A cluster's CA (key in memory) and the files it issued.
pub(crate) struct Pki {
    mode: TlsMode,
    ca: tls::dev::Pki,
    paths: TlsPaths,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("mode", &self.mode)
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

fn tls_error(what: &str, error: tls::TlsError) -> Error {
    Error::Tls(format!("{what}: {error}"))
}

impl Pki {
    /// A fresh CA and the harness's client certificates in `dir`.
    pub(crate) fn generate(dir: &Path, mode: TlsMode) -> Result<Pki, Error> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let ca = tls::dev::Pki::generate(dir, "raftkv test CA")
            .map_err(|e| tls_error("generating the CA", e))?;
        let (client_cert_file, client_key_file) = ca
            .issue("client", CLIENT_CN, &HOSTS, VALID_DAYS)
            .map_err(|e| tls_error("issuing the client certificate", e))?;
        let peer_cn = mode.peer_allowed_cn.as_deref().unwrap_or("peer-client");
        let (peer_client_cert_file, peer_client_key_file) = ca
            .issue("peer-client", peer_cn, &HOSTS, VALID_DAYS)
            .map_err(|e| tls_error("issuing the peer client certificate", e))?;
        let paths = TlsPaths {
            dir: dir.to_path_buf(),
            ca_file: ca.ca_file.clone(),
            client_cert_file,
            client_key_file,
            peer_client_cert_file,
            peer_client_key_file,
        };
        Ok(Pki { mode, ca, paths })
    }

    pub(crate) fn mode(&self) -> &TlsMode {
        &self.mode
    }

    pub(crate) fn paths(&self) -> &TlsPaths {
        &self.paths
    }

    /// Issues (or re-issues, in place) member `id`'s two leaves. A leaf is
    /// written under a temporary name and renamed over the old files, so
    /// a reader sees the old or the new file, never a partial one.
    pub(crate) fn issue_member(&self, id: u64) -> Result<(), Error> {
        let member_cn = format!("member-{id}");
        let peer_cn = self
            .mode
            .peer_allowed_cn
            .clone()
            .unwrap_or_else(|| member_cn.clone());
        for (name, cn) in [
            (format!("member-{id}"), member_cn),
            (format!("peer-{id}"), peer_cn),
        ] {
            let staging = format!("{name}.next");
            let (cert, key) = self
                .ca
                .issue(&staging, &cn, &HOSTS, VALID_DAYS)
                .map_err(|e| tls_error(&format!("issuing {name}"), e))?;
            let (final_cert, final_key) = leaf_files(&self.paths.dir, &name);
            // The key first: until the certificate follows, the pair does
            // not match and a reload keeps the previous configuration.
            for (from, to) in [(key, final_key), (cert, final_cert)] {
                std::fs::rename(&from, &to).map_err(|e| {
                    Error::io(
                        format!("renaming {} to {}", from.display(), to.display()),
                        e,
                    )
                })?;
            }
        }
        Ok(())
    }

    /// Another leaf from the cluster's CA (`<dir>/<name>.pem`), e.g. a
    /// certificate with a CN the peers do not allow, or an expired one
    /// (`valid_days` negative).
    pub(crate) fn issue_extra(
        &self,
        name: &str,
        cn: &str,
        valid_days: i64,
    ) -> Result<(PathBuf, PathBuf), Error> {
        self.ca
            .issue(name, cn, &HOSTS, valid_days)
            .map_err(|e| tls_error(&format!("issuing {name}"), e))
    }

    /// Member `id`'s TLS flags.
    pub(crate) fn member_args(&self, id: u64) -> Vec<String> {
        let ca = self.paths.ca_file.display().to_string();
        let mut args = Vec::new();
        if self.mode.client {
            let (cert, key) = self.paths.member_files(id);
            args.extend([
                "--cert-file".to_string(),
                cert.display().to_string(),
                "--key-file".to_string(),
                key.display().to_string(),
                "--trusted-ca-file".to_string(),
                ca.clone(),
            ]);
            if self.mode.client_cert_auth {
                args.push("--client-cert-auth".into());
            }
        }
        if self.mode.peer {
            let (cert, key) = self.paths.peer_files(id);
            args.extend([
                "--peer-cert-file".to_string(),
                cert.display().to_string(),
                "--peer-key-file".to_string(),
                key.display().to_string(),
                "--peer-trusted-ca-file".to_string(),
                ca,
            ]);
            if self.mode.peer_client_cert_auth {
                args.push("--peer-client-cert-auth".into());
            }
            if let Some(cn) = &self.mode.peer_allowed_cn {
                args.extend(["--peer-cert-allowed-cn".to_string(), cn.clone()]);
            }
        }
        args
    }

    /// A rustls client configuration that trusts the CA and presents
    /// `cert_file`/`key_file`.
    pub(crate) fn client_config(
        &self,
        cert_file: &Path,
        key_file: &Path,
    ) -> Result<rustls::ClientConfig, Error> {
        let client = tls::ClientTls::load(tls::ClientTlsFiles {
            trusted_ca_file: Some(self.paths.ca_file.clone()),
            cert_file: Some(cert_file.to_path_buf()),
            key_file: Some(key_file.to_path_buf()),
        })
        .map_err(|e| tls_error("loading the harness's client certificate", e))?;
        Ok(client.config().as_ref().clone())
    }
}
