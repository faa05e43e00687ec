//! A throwaway PKI for tests and local clusters (feature `dev-certs`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use crate::TlsError;

/// How long a generated CA is valid.
pub const CA_VALID_DAYS: i64 = 3650;

/// A CA that can issue leaf certificates, its key kept in memory.
pub struct Pki {
    /// The directory the files are written to.
    pub dir: PathBuf,
    /// The CA certificate, `dir/ca.pem`.
    pub ca_file: PathBuf,
    ca_cert: Certificate,
    ca_key: KeyPair,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("dir", &self.dir)
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

fn dev_err(what: &str, e: impl std::fmt::Display) -> TlsError {
    TlsError::DevPki(format!("{what}: {e}"))
}

fn write(path: &Path, contents: &str) -> Result<(), TlsError> {
    std::fs::write(path, contents).map_err(|e| dev_err(&format!("write {}", path.display()), e))
}

/// A fresh positive serial number, distinct within this process and across runs.
fn serial() -> SerialNumber {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut bytes = Vec::with_capacity(16);
    bytes.push(0x01);
    bytes.extend_from_slice(&nanos.to_be_bytes());
    bytes.extend_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    SerialNumber::from_slice(&bytes)
}

impl Pki {
    /// A fresh CA (CN `ca_name`) written to `dir/ca.pem`, its key to `dir/ca-key.pem`.
    pub fn generate(dir: &Path, ca_name: &str) -> Result<Pki, TlsError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| dev_err(&format!("create {}", dir.display()), e))?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, ca_name);
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(CA_VALID_DAYS);
        params.serial_number = Some(serial());
        let ca_key = KeyPair::generate().map_err(|e| dev_err("CA key", e))?;
        let ca_cert = params
            .self_signed(&ca_key)
            .map_err(|e| dev_err("CA certificate", e))?;
        let ca_file = dir.join("ca.pem");
        write(&ca_file, &ca_cert.pem())?;
        write(&dir.join("ca-key.pem"), &ca_key.serialize_pem())?;
        Ok(Pki {
            dir: dir.to_path_buf(),
            ca_file,
            ca_cert,
            ca_key,
        })
    }

    /// The CA certificate in PEM.
    pub fn ca_pem(&self) -> String {
        self.ca_cert.pem()
    }

    /// A leaf signed by this CA for server and client use: SANs `hosts` (DNS names or IP
    /// literals), CN `cn`, valid from an hour ago for `valid_days` days (negative: already
    /// expired), written to `dir/<name>.pem` and `dir/<name>-key.pem`. Returns
    /// `(cert_file, key_file)`.
    pub fn issue(
        &self,
        name: &str,
        cn: &str,
        hosts: &[&str],
        valid_days: i64,
    ) -> Result<(PathBuf, PathBuf), TlsError> {
        let (cert_pem, key_pem) = self.issue_pem(cn, hosts, valid_days)?;
        let cert_file = self.dir.join(format!("{name}.pem"));
        let key_file = self.dir.join(format!("{name}-key.pem"));
        write(&cert_file, &cert_pem)?;
        write(&key_file, &key_pem)?;
        Ok((cert_file, key_file))
    }

    /// Like [`Pki::issue`], returning `(certificate PEM, key PEM)` without writing files.
    pub fn issue_pem(
        &self,
        cn: &str,
        hosts: &[&str],
        valid_days: i64,
    ) -> Result<(String, String), TlsError> {
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, cn);
        params.distinguished_name = name;
        for host in hosts {
            let san = match host.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(
                    (*host)
                        .try_into()
                        .map_err(|e| dev_err(&format!("host {host:?}"), e))?,
                ),
            };
            params.subject_alt_names.push(san);
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_after = now + Duration::days(valid_days);
        params.not_before = (now - Duration::hours(1)).min(params.not_after - Duration::days(1));
        params.serial_number = Some(serial());
        let key = KeyPair::generate().map_err(|e| dev_err("leaf key", e))?;
        let cert = params
            .signed_by(&key, &self.ca_cert, &self.ca_key)
            .map_err(|e| dev_err("leaf certificate", e))?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}
