//! Server-side TLS of one port: the certificate it presents and the client certificates it
//! accepts, reloadable.

use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::RwLock;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::error::TlsError;
use crate::load::{self, CertificateInfo, Contents};
use crate::status::{Counters, TlsStatus};
use crate::PortKind;

/// etcd's server-side flags for one port.
///
/// With a trusted CA and `client_cert_auth = false`, a client certificate is verified if
/// given (a bad one is refused); with `client_cert_auth = true` one is required.
/// `allowed_cn` / `allowed_hostname` (they need `client_cert_auth`) additionally require the
/// presented leaf's CN to equal `allowed_cn` / one of its SANs to cover `allowed_hostname`
/// (an IP literal matches an IP SAN; a name matches a DNS SAN ignoring case, or a
/// `*.domain` SAN by its first label).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsFiles {
    /// `--cert-file` / `--peer-cert-file`: the PEM chain this port presents, leaf first.
    pub cert_file: PathBuf,
    /// `--key-file` / `--peer-key-file`: its PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// `--trusted-ca-file` / `--peer-trusted-ca-file`: CAs that sign client certificates.
    pub trusted_ca_file: Option<PathBuf>,
    /// `--client-cert-auth` / `--peer-client-cert-auth`: require a client certificate.
    pub client_cert_auth: bool,
    /// `--peer-cert-allowed-cn`: the only client certificate CN accepted.
    pub allowed_cn: Option<String>,
    /// `--peer-cert-allowed-hostname`: a SAN every client certificate must carry.
    pub allowed_hostname: Option<String>,
}

/// The flag names of one port, for error messages.
struct Flags {
    cert: &'static str,
    key: &'static str,
    ca: &'static str,
    auth: &'static str,
    allowed_cn: &'static str,
    allowed_hostname: &'static str,
}

fn flags(port: PortKind) -> Flags {
    match port {
        PortKind::Client => Flags {
            cert: "--cert-file",
            key: "--key-file",
            ca: "--trusted-ca-file",
            auth: "--client-cert-auth",
            allowed_cn: "the allowed client CN",
            allowed_hostname: "the allowed client hostname",
        },
        PortKind::Peer => Flags {
            cert: "--peer-cert-file",
            key: "--peer-key-file",
            ca: "--peer-trusted-ca-file",
            auth: "--peer-client-cert-auth",
            allowed_cn: "--peer-cert-allowed-cn",
            allowed_hostname: "--peer-cert-allowed-hostname",
        },
    }
}

/// What the files held at the last successful (re)load.
struct ServerState {
    key: Arc<CertifiedKey>,
    /// Verifies client certificates against the trusted CAs (None: no CA configured).
    clients: Option<Arc<dyn ClientCertVerifier>>,
    certificates: Vec<CertificateInfo>,
    contents: Contents,
}

impl std::fmt::Debug for ServerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerState")
            .field("certificates", &self.certificates)
            .finish_non_exhaustive()
    }
}

type Shared = Arc<RwLock<Arc<ServerState>>>;

struct Inner {
    port: PortKind,
    files: ServerTlsFiles,
    state: Shared,
    config: Arc<rustls::ServerConfig>,
    counters: Counters,
    /// Serialises reloads.
    reload: parking_lot::Mutex<()>,
}

/// The TLS configuration of one server port. Cheap to clone; clones share state, counters
/// and reloads.
///
/// It keeps one `rustls::ServerConfig` for its whole life: the certificate resolver and the
/// client verifier read the state that [`ServerTls::reload_if_changed`] swaps, so a reload
/// affects new handshakes only.
#[derive(Clone)]
pub struct ServerTls {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("port", &self.inner.port)
            .field("files", &self.inner.files)
            .finish_non_exhaustive()
    }
}

/// Reads and checks every file of `files`.
fn read_state(port: PortKind, files: &ServerTlsFiles) -> Result<ServerState, TlsError> {
    let flags = flags(port);
    let cert_pem = load::read(flags.cert, &files.cert_file)?;
    let key_pem = load::read(flags.key, &files.key_file)?;
    let ca_pem = match &files.trusted_ca_file {
        Some(path) => Some(load::read(flags.ca, path)?),
        None => None,
    };
    let certs = load::parse_certs(flags.cert, &files.cert_file, &cert_pem)?;
    let mut certificates = load::describe(flags.cert, &files.cert_file, "cert", &certs)?;
    let key = load::parse_key(flags.key, &files.key_file, &key_pem)?;
    let key = load::certified_key(
        flags.cert,
        &files.cert_file,
        certs,
        flags.key,
        &files.key_file,
        key,
    )?;
    let mut clients = None;
    if let (Some(path), Some(pem)) = (&files.trusted_ca_file, &ca_pem) {
        let cas = load::parse_certs(flags.ca, path, pem)?;
        certificates.extend(load::describe(flags.ca, path, "ca", &cas)?);
        let roots = load::root_store(flags.ca, path, &cas)?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), load::provider())
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::Unusable {
                    flag: flags.ca,
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
        clients = Some(verifier);
    }
    let mut contents = vec![cert_pem, key_pem];
    contents.extend(ca_pem);
    Ok(ServerState {
        key,
        clients,
        certificates,
        contents: Contents(contents),
    })
}

/// Reads the files again without parsing them, to tell whether anything changed.
fn read_contents(port: PortKind, files: &ServerTlsFiles) -> Result<Contents, TlsError> {
    let flags = flags(port);
    let mut contents = vec![
        load::read(flags.cert, &files.cert_file)?,
        load::read(flags.key, &files.key_file)?,
    ];
    if let Some(path) = &files.trusted_ca_file {
        contents.push(load::read(flags.ca, path)?);
    }
    Ok(Contents(contents))
}

impl ServerTls {
    /// Loads and checks the files of one port.
    pub fn load(port: PortKind, files: ServerTlsFiles) -> Result<ServerTls, TlsError> {
        let flags = flags(port);
        if files.client_cert_auth && files.trusted_ca_file.is_none() {
            return Err(TlsError::Config(format!(
                "{} needs {}",
                flags.auth, flags.ca
            )));
        }
        for (set, flag) in [
            (files.allowed_cn.is_some(), flags.allowed_cn),
            (files.allowed_hostname.is_some(), flags.allowed_hostname),
        ] {
            if set && !files.client_cert_auth {
                return Err(TlsError::Config(format!("{flag} needs {}", flags.auth)));
            }
        }
        let state: Shared = Arc::new(RwLock::new(Arc::new(read_state(port, &files)?)));
        let provider = load::provider();
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let resolver = Arc::new(Resolver(Arc::clone(&state)));
        let mut config = if files.trusted_ca_file.is_some() {
            builder
                .with_client_cert_verifier(Arc::new(ClientVerifier {
                    state: Arc::clone(&state),
                    mandatory: files.client_cert_auth,
                    allowed_cn: files.allowed_cn.clone(),
                    allowed_hostname: files.allowed_hostname.clone(),
                    provider,
                }))
                .with_cert_resolver(resolver)
        } else {
            builder.with_no_client_auth().with_cert_resolver(resolver)
        };
        // No session resumption: a resumed session skips certificate verification, so a
        // client could keep using an identity a reload (or a new CA file) no longer trusts.
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        // gRPC needs HTTP/2; the peer transport speaks HTTP/1.1.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(ServerTls {
            inner: Arc::new(Inner {
                port,
                files,
                state,
                config: Arc::new(config),
                counters: Counters::default(),
                reload: parking_lot::Mutex::new(()),
            }),
        })
    }

    /// The port this configuration serves.
    pub fn port(&self) -> PortKind {
        self.inner.port
    }

    /// The files it reads.
    pub fn files(&self) -> &ServerTlsFiles {
        &self.inner.files
    }

    /// The rustls configuration; it stays valid across reloads.
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&self.inner.config)
    }

    /// What is loaded now and how handshakes went.
    pub fn status(&self) -> TlsStatus {
        let certificates = self.inner.state.read().certificates.clone();
        self.inner.counters.status(self.inner.port, certificates)
    }

    /// Re-reads the files if their contents changed; `Ok(true)` when it reloaded. On a bad
    /// new file it keeps the old configuration and returns the error.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let _serial = self.inner.reload.lock();
        let contents = read_contents(self.inner.port, &self.inner.files)?;
        if contents == self.inner.state.read().contents {
            return Ok(false);
        }
        let state = read_state(self.inner.port, &self.inner.files)?;
        *self.inner.state.write() = Arc::new(state);
        self.inner
            .counters
            .reloads_total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(true)
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.inner.counters
    }
}

/// Presents the currently loaded certificate.
#[derive(Debug)]
struct Resolver(Shared);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0.read().key))
    }
}

/// Verifies client certificates against the currently loaded CAs, then the allowed identity.
struct ClientVerifier {
    state: Shared,
    mandatory: bool,
    allowed_cn: Option<String>,
    allowed_hostname: Option<String>,
    provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for ClientVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientVerifier")
            .field("mandatory", &self.mandatory)
            .field("allowed_cn", &self.allowed_cn)
            .field("allowed_hostname", &self.allowed_hostname)
            .finish_non_exhaustive()
    }
}

/// True when the leaf's identity passes `allowed_cn` and `allowed_hostname`.
fn identity_allowed(leaf: &[u8], allowed_cn: Option<&str>, allowed_hostname: Option<&str>) -> bool {
    if allowed_cn.is_none() && allowed_hostname.is_none() {
        return true;
    }
    let Some(identity) = load::leaf_identity(leaf) else {
        return false;
    };
    if let Some(cn) = allowed_cn {
        if identity.cn.as_deref() != Some(cn) {
            return false;
        }
    }
    if let Some(host) = allowed_hostname {
        let matches = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => identity.ips.contains(&ip),
            Err(_) => identity
                .dns_names
                .iter()
                .any(|name| dns_name_matches(name, host)),
        };
        if !matches {
            return false;
        }
    }
    true
}

/// True when the certificate's DNS SAN `pattern` covers `host`: equal ignoring case, or a
/// wildcard `*.rest` whose `rest` equals everything after `host`'s first label.
fn dns_name_matches(pattern: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.');
    let pattern = pattern.trim_end_matches('.');
    if pattern.eq_ignore_ascii_case(host) {
        return true;
    }
    match (pattern.strip_prefix("*."), host.split_once('.')) {
        (Some(rest), Some((first, host_rest))) => {
            !first.is_empty() && rest.contains('.') && rest.eq_ignore_ascii_case(host_rest)
        }
        _ => false,
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // The CA list changes on reload and cannot be borrowed from the lock; clients send
        // their certificate without hints.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let state = Arc::clone(&self.state.read());
        let Some(verifier) = &state.clients else {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            ));
        };
        verifier.verify_client_cert(end_entity, intermediates, now)?;
        if !identity_allowed(
            end_entity.as_ref(),
            self.allowed_cn.as_deref(),
            self.allowed_hostname.as_deref(),
        ) {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::dns_name_matches;

    #[test]
    fn allowed_hostnames_match_sans_exactly_or_by_one_wildcard_label() {
        assert!(dns_name_matches("member2.example", "member2.example"));
        assert!(dns_name_matches("Member2.Example.", "member2.example"));
        assert!(dns_name_matches("*.peers.example", "m2.peers.example"));
        assert!(!dns_name_matches("*.peers.example", "a.b.peers.example"));
        assert!(!dns_name_matches("*.peers.example", "peers.example"));
        assert!(
            !dns_name_matches("*.example", "m2.example"),
            "no wildcard over a TLD"
        );
        assert!(!dns_name_matches("member2.example", "member3.example"));
        assert!(!dns_name_matches("m*.example.com", "m2.example.com"));
    }
}
