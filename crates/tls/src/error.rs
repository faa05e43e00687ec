//! The crate's error type: every message names the flag, the file and what is wrong.

use std::path::PathBuf;

/// Why a TLS configuration could not be loaded, reloaded or generated.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {flag} {}: {source}", path.display())]
    Read {
        /// The flag that names the file (e.g. `--cert-file`).
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file that must hold certificates holds none.
    #[error("no certificate in {flag} {}", path.display())]
    NoCertificate {
        /// The flag that names the file.
        flag: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// A file that must hold a private key holds none.
    #[error("no private key in {flag} {}", path.display())]
    NoKey {
        /// The flag that names the file.
        flag: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// A file is not valid PEM, or a PEM item does not decode.
    #[error("{flag} {} is not valid PEM: {reason}", path.display())]
    BadPem {
        /// The flag that names the file.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// A certificate or key decodes but cannot be used.
    #[error("{flag} {}: {reason}", path.display())]
    Unusable {
        /// The flag that names the file.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The private key is not the one of the certificate.
    #[error("{key_flag} {} does not match {cert_flag} {}", key_path.display(), cert_path.display())]
    KeyMismatch {
        /// The key's flag.
        key_flag: &'static str,
        /// The key file.
        key_path: PathBuf,
        /// The certificate's flag.
        cert_flag: &'static str,
        /// The certificate file.
        cert_path: PathBuf,
    },
    /// A combination of settings that cannot work (e.g. client-cert auth without a CA).
    #[error("invalid TLS configuration: {0}")]
    Config(String),
    /// The development PKI could not generate or write a certificate.
    #[error("development PKI: {0}")]
    DevPki(String),
}
