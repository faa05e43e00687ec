//! Outgoing TLS: the CA that signs members' certificates and this member's client identity,
//! reloadable.

use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::RwLock;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;

use crate::error::TlsError;
use crate::load::{self, CertificateInfo, Contents};
use crate::status::{Counters, TlsStatus};
use crate::PortKind;

const FLAG_CA: &str = "--peer-trusted-ca-file";
const FLAG_CERT: &str = "--peer-cert-file";
const FLAG_KEY: &str = "--peer-key-file";

/// The files of outgoing TLS (peer transport, followers' forwarding, live view polling).
/// Errors name the peer flags (`--peer-trusted-ca-file`, `--peer-cert-file`,
/// `--peer-key-file`), the only outgoing TLS the server has.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientTlsFiles {
    /// The CA that signed members' certificates; required.
    pub trusted_ca_file: Option<PathBuf>,
    /// This member's certificate chain (client identity); both or neither with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// Its private key.
    pub key_file: Option<PathBuf>,
}

struct ClientState {
    key: Option<Arc<CertifiedKey>>,
    servers: Arc<WebPkiServerVerifier>,
    certificates: Vec<CertificateInfo>,
    contents: Contents,
}

type Shared = Arc<RwLock<Arc<ClientState>>>;

struct Inner {
    files: ClientTlsFiles,
    state: Shared,
    config: Arc<rustls::ClientConfig>,
    connector: tokio_rustls::TlsConnector,
    counters: Counters,
    reload: parking_lot::Mutex<()>,
}

/// Outgoing TLS configuration. Cheap to clone; clones share state and reloads. Two values
/// are equal when they are clones of one loaded configuration.
#[derive(Clone)]
pub struct ClientTls {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("files", &self.inner.files)
            .finish_non_exhaustive()
    }
}

impl PartialEq for ClientTls {
    fn eq(&self, other: &ClientTls) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for ClientTls {}

fn read_contents(files: &ClientTlsFiles) -> Result<Contents, TlsError> {
    let mut contents = Vec::new();
    for (flag, path) in [
        (FLAG_CA, &files.trusted_ca_file),
        (FLAG_CERT, &files.cert_file),
        (FLAG_KEY, &files.key_file),
    ] {
        if let Some(path) = path {
            contents.push(load::read(flag, path)?);
        }
    }
    Ok(Contents(contents))
}

fn read_state(files: &ClientTlsFiles) -> Result<ClientState, TlsError> {
    let ca_path = files.trusted_ca_file.as_ref().ok_or_else(|| {
        TlsError::Config(format!(
            "https peers need {FLAG_CA}: the CA that signed the members' certificates"
        ))
    })?;
    let ca_pem = load::read(FLAG_CA, ca_path)?;
    let cas = load::parse_certs(FLAG_CA, ca_path, &ca_pem)?;
    let mut certificates = Vec::new();
    let mut contents = vec![ca_pem];
    let key = match (&files.cert_file, &files.key_file) {
        (Some(cert_path), Some(key_path)) => {
            let cert_pem = load::read(FLAG_CERT, cert_path)?;
            let key_pem = load::read(FLAG_KEY, key_path)?;
            let certs = load::parse_certs(FLAG_CERT, cert_path, &cert_pem)?;
            certificates.extend(load::describe(FLAG_CERT, cert_path, "cert", &certs)?);
            let key = load::parse_key(FLAG_KEY, key_path, &key_pem)?;
            contents.push(cert_pem);
            contents.push(key_pem);
            Some(load::certified_key(
                FLAG_CERT, cert_path, certs, FLAG_KEY, key_path, key,
            )?)
        }
        (None, None) => None,
        _ => {
            return Err(TlsError::Config(format!(
                "{FLAG_CERT} and {FLAG_KEY} go together: give both or neither"
            )))
        }
    };
    certificates.extend(load::describe(FLAG_CA, ca_path, "ca", &cas)?);
    let roots = load::root_store(FLAG_CA, ca_path, &cas)?;
    let servers = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), load::provider())
        .build()
        .map_err(|e| TlsError::Unusable {
            flag: FLAG_CA,
            path: ca_path.clone(),
            reason: e.to_string(),
        })?;
    Ok(ClientState {
        key,
        servers,
        certificates,
        contents: Contents(contents),
    })
}

impl ClientTls {
    /// Loads and checks the files.
    pub fn load(files: ClientTlsFiles) -> Result<ClientTls, TlsError> {
        let state: Shared = Arc::new(RwLock::new(Arc::new(read_state(&files)?)));
        let provider = load::provider();
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ServerVerifier {
                state: Arc::clone(&state),
                provider,
            }))
            .with_client_cert_resolver(Arc::new(Resolver(Arc::clone(&state))));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        // No session resumption: every connection verifies the server against the CA file
        // loaded now (a resumed session would skip that after a rotation).
        config.resumption = rustls::client::Resumption::disabled();
        let config = Arc::new(config);
        Ok(ClientTls {
            inner: Arc::new(Inner {
                files,
                state,
                connector: tokio_rustls::TlsConnector::from(Arc::clone(&config)),
                config,
                counters: Counters::default(),
                reload: parking_lot::Mutex::new(()),
            }),
        })
    }

    /// The files it reads.
    pub fn files(&self) -> &ClientTlsFiles {
        &self.inner.files
    }

    /// A rustls configuration that stays valid across reloads (its resolver and verifier read
    /// the current files' state). ALPN: `http/1.1`.
    pub fn config(&self) -> Arc<rustls::ClientConfig> {
        Arc::clone(&self.inner.config)
    }

    /// A TLS handshake over `stream`, verifying the server's certificate against `host` (a
    /// DNS name or an IP literal, IPv6 with or without brackets).
    pub async fn connect(
        &self,
        host: &str,
        stream: TcpStream,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_string()).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{host:?} is not a DNS name or IP address: {e}"),
            )
        })?;
        match self.inner.connector.connect(name, stream).await {
            Ok(stream) => {
                self.inner.counters.handshake();
                Ok(stream)
            }
            Err(e) => {
                self.inner
                    .counters
                    .failure(crate::listener::classify_io(&e));
                Err(e)
            }
        }
    }

    /// What is loaded now (the client certificate and the CAs), with the handshakes
    /// [`ClientTls::connect`] completed and the ones that failed, by reason (the server
    /// refusing this side's certificate is seen here as the alert it sent).
    pub fn status(&self) -> TlsStatus {
        let certificates = self.inner.state.read().certificates.clone();
        self.inner.counters.status(PortKind::Peer, certificates)
    }

    /// Re-reads the files if their contents changed; `Ok(true)` when it reloaded. On a bad
    /// new file it keeps the old configuration and returns the error.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let _serial = self.inner.reload.lock();
        let contents = read_contents(&self.inner.files)?;
        if contents == self.inner.state.read().contents {
            return Ok(false);
        }
        let state = read_state(&self.inner.files)?;
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

/// Presents the currently loaded client certificate, if any.
#[derive(Debug)]
struct Resolver(Shared);

impl std::fmt::Debug for ClientState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientState")
            .field("certificates", &self.certificates)
            .finish_non_exhaustive()
    }
}

impl ResolvesClientCert for Resolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.0.read().key.clone()
    }

    fn has_certs(&self) -> bool {
        self.0.read().key.is_some()
    }
}

/// Verifies servers against the currently loaded CAs.
struct ServerVerifier {
    state: Shared,
    provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for ServerVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerVerifier").finish_non_exhaustive()
    }
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let servers = Arc::clone(&self.state.read().servers);
        servers.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
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
