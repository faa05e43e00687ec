//! Reading PEM files and describing certificates (subject CN, SANs, expiry).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;

use crate::error::TlsError;

/// Seconds in a day, for expiry arithmetic.
const DAY_S: i64 = 86_400;

/// What the crate knows about one loaded certificate (for status, metrics and expiry warnings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// The file it was read from.
    pub file: PathBuf,
    /// `"cert"` for a certificate this side presents (the leaf and its chain), `"ca"` for a
    /// trusted CA certificate.
    pub role: &'static str,
    /// The subject's common name (empty when it has none).
    pub subject_cn: String,
    /// The serial number, lower-case hex without separators.
    pub serial_hex: String,
    /// End of validity, seconds since the Unix epoch.
    pub not_after_unix_s: i64,
}

impl CertificateInfo {
    /// True when the certificate expires within `days` days from now (or has expired).
    pub fn expires_within(&self, days: i64) -> bool {
        self.not_after_unix_s <= now_unix_s() + days.saturating_mul(DAY_S)
    }

    /// True when the certificate has expired.
    pub fn expired(&self) -> bool {
        self.expires_within(0)
    }
}

/// Seconds since the Unix epoch now.
pub(crate) fn now_unix_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The ring provider, the only one this crate uses.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a whole file, naming the flag on failure.
pub(crate) fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        flag,
        path: path.to_path_buf(),
        source,
    })
}

/// Parses every certificate of a PEM file (at least one).
pub(crate) fn parse_certs(
    flag: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadPem {
            flag,
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            flag,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// Parses the first private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub(crate) fn parse_key(
    flag: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            flag,
            path: path.to_path_buf(),
        },
        other => TlsError::BadPem {
            flag,
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    })
}

/// Describes each certificate of `certs` read from `file`.
pub(crate) fn describe(
    flag: &'static str,
    file: &Path,
    role: &'static str,
    certs: &[CertificateDer<'static>],
) -> Result<Vec<CertificateInfo>, TlsError> {
    certs
        .iter()
        .map(|der| {
            let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| {
                TlsError::Unusable {
                    flag,
                    path: file.to_path_buf(),
                    reason: format!("not an X.509 certificate: {e}"),
                }
            })?;
            let subject_cn = cert
                .subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .unwrap_or_default()
                .to_string();
            let serial_hex = cert
                .raw_serial()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            Ok(CertificateInfo {
                file: file.to_path_buf(),
                role,
                subject_cn,
                serial_hex,
                not_after_unix_s: cert.validity().not_after.timestamp(),
            })
        })
        .collect()
}

/// The serial number (lower-case hex) of a DER certificate; empty when it does not parse.
pub fn serial_hex(der: &[u8]) -> String {
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, cert)) => cert
            .raw_serial()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        Err(_) => String::new(),
    }
}

/// The identity of a leaf certificate checked by `allowed_cn` / `allowed_hostname`.
pub(crate) struct LeafIdentity {
    pub cn: Option<String>,
    pub dns_names: Vec<String>,
    pub ips: Vec<std::net::IpAddr>,
}

/// Reads the CN and SANs of a DER leaf; `None` when it does not parse.
pub(crate) fn leaf_identity(der: &[u8]) -> Option<LeafIdentity> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string);
    let mut identity = LeafIdentity {
        cn,
        dns_names: Vec::new(),
        ips: Vec::new(),
    };
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(dns) => {
                    identity.dns_names.push(dns.to_string())
                }
                x509_parser::extensions::GeneralName::IPAddress(bytes) => {
                    let ip = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes).ok().map(std::net::IpAddr::from),
                        16 => <[u8; 16]>::try_from(*bytes)
                            .ok()
                            .map(std::net::IpAddr::from),
                        _ => None,
                    };
                    identity.ips.extend(ip);
                }
                _ => {}
            }
        }
    }
    Some(identity)
}

/// A certificate chain and its key, checked to belong together.
pub(crate) fn certified_key(
    cert_flag: &'static str,
    cert_path: &Path,
    certs: Vec<CertificateDer<'static>>,
    key_flag: &'static str,
    key_path: &Path,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let provider = provider();
    let signing_key =
        provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| TlsError::Unusable {
                flag: key_flag,
                path: key_path.to_path_buf(),
                reason: format!("unsupported private key: {e}"),
            })?;
    let certified = CertifiedKey::new(certs, signing_key);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(TlsError::KeyMismatch {
                key_flag,
                key_path: key_path.to_path_buf(),
                cert_flag,
                cert_path: cert_path.to_path_buf(),
            })
        }
        // The key type cannot report its public key: nothing to compare.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(e) => {
            return Err(TlsError::Unusable {
                flag: cert_flag,
                path: cert_path.to_path_buf(),
                reason: e.to_string(),
            })
        }
    }
    Ok(Arc::new(certified))
}

/// A root store of every certificate in a CA file.
pub(crate) fn root_store(
    flag: &'static str,
    path: &Path,
    certs: &[CertificateDer<'static>],
) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert.clone()).map_err(|e| TlsError::Unusable {
            flag,
            path: path.to_path_buf(),
            reason: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

/// The contents of the files a configuration was loaded from, to tell whether they changed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Contents(pub Vec<Vec<u8>>);
