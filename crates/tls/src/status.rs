//! Counters and the status snapshot of one TLS configuration.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::load::CertificateInfo;
use crate::PortKind;

/// Why a handshake failed: the fixed label set of logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// Plain HTTP sent to a TLS port (answered 400).
    PlaintextHttp,
    /// A certificate that does not verify (bad signature, bad encoding, wrong usage).
    BadCertificate,
    /// A certificate not issued by a trusted CA.
    UnknownCa,
    /// A certificate outside its validity period.
    ExpiredCertificate,
    /// No client certificate where one is required.
    NoCertificate,
    /// A client certificate whose CN / hostname is not the allowed one.
    DisallowedIdentity,
    /// The handshake did not finish within the handshake timeout.
    Timeout,
    /// The connection closed in the middle of (or before) the handshake.
    Truncated,
    /// Anything else (garbage, no common protocol version or cipher, too many handshakes).
    Other,
}

impl FailureReason {
    /// Every reason, in label order.
    pub const ALL: [FailureReason; 9] = [
        FailureReason::PlaintextHttp,
        FailureReason::BadCertificate,
        FailureReason::UnknownCa,
        FailureReason::ExpiredCertificate,
        FailureReason::NoCertificate,
        FailureReason::DisallowedIdentity,
        FailureReason::Timeout,
        FailureReason::Truncated,
        FailureReason::Other,
    ];

    /// The metric / log label.
    pub fn label(self) -> &'static str {
        match self {
            FailureReason::PlaintextHttp => "plaintext_http",
            FailureReason::BadCertificate => "bad_certificate",
            FailureReason::UnknownCa => "unknown_ca",
            FailureReason::ExpiredCertificate => "expired_certificate",
            FailureReason::NoCertificate => "no_certificate",
            FailureReason::DisallowedIdentity => "disallowed_identity",
            FailureReason::Timeout => "timeout",
            FailureReason::Truncated => "truncated",
            FailureReason::Other => "other",
        }
    }

    fn index(self) -> usize {
        FailureReason::ALL
            .iter()
            .position(|r| *r == self)
            .unwrap_or(FailureReason::ALL.len() - 1)
    }
}

/// A snapshot of one TLS configuration: what it loaded and how its handshakes went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsStatus {
    /// The port it serves (an outgoing [`crate::ClientTls`] reports [`PortKind::Peer`]).
    pub port: PortKind,
    /// The certificates this side presents (role `"cert"`) and trusts (role `"ca"`).
    pub certificates: Vec<CertificateInfo>,
    /// Failed handshakes by reason label, every label of [`FailureReason::ALL`] present
    /// (servers only; a client's are all 0).
    pub handshake_failures: Vec<(&'static str, u64)>,
    /// Handshakes that completed.
    pub handshakes_total: u64,
    /// Successful reloads after the first load.
    pub reloads_total: u64,
    /// Warnings logged about a certificate expiring within
    /// [`crate::EXPIRY_WARNING_DAYS`] (or expired).
    pub expiry_warnings_total: u64,
}

impl TlsStatus {
    /// The number of failures with reason `label` (0 for an unknown label).
    pub fn failures(&self, label: &str) -> u64 {
        self.handshake_failures
            .iter()
            .find(|(l, _)| *l == label)
            .map_or(0, |(_, n)| *n)
    }

    /// The certificates that expire within `days` days (or have expired).
    pub fn expiring_within(&self, days: i64) -> Vec<&CertificateInfo> {
        self.certificates
            .iter()
            .filter(|c| c.expires_within(days))
            .collect()
    }
}

/// The counters shared by every clone of a configuration and its listeners.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    failures: [AtomicU64; 9],
    pub handshakes_total: AtomicU64,
    pub reloads_total: AtomicU64,
    pub expiry_warnings_total: AtomicU64,
    /// When each certificate (file + serial) was last warned about, seconds since the epoch.
    pub expiry_warned_at: Mutex<HashMap<(std::path::PathBuf, String), i64>>,
}

impl Counters {
    pub fn failure(&self, reason: FailureReason) {
        self.failures[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn handshake(&self) {
        self.handshakes_total.fetch_add(1, Ordering::Relaxed);
    }

    pub fn status(&self, port: PortKind, certificates: Vec<CertificateInfo>) -> TlsStatus {
        TlsStatus {
            port,
            certificates,
            handshake_failures: FailureReason::ALL
                .iter()
                .map(|r| (r.label(), self.failures[r.index()].load(Ordering::Relaxed)))
                .collect(),
            handshakes_total: self.handshakes_total.load(Ordering::Relaxed),
            reloads_total: self.reloads_total.load(Ordering::Relaxed),
            expiry_warnings_total: self.expiry_warnings_total.load(Ordering::Relaxed),
        }
    }
}
