//! The background task that reloads changed files and warns about expiring certificates.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::load::{now_unix_s, CertificateInfo};
use crate::status::Counters;
use crate::{ClientTls, ServerTls, TlsError};

/// Default polling interval of [`spawn_reloader`].
pub const DEFAULT_RELOAD_INTERVAL_MS: u64 = 1_000;
/// A loaded certificate expiring within this many days is warned about.
pub const EXPIRY_WARNING_DAYS: i64 = 30;
/// A certificate is warned about at most once per this many seconds.
const EXPIRY_WARNING_REPEAT_S: i64 = 86_400;

/// One configuration the reloader watches.
enum Watched {
    Server(ServerTls),
    Client(ClientTls),
}

impl Watched {
    fn reload_if_changed(&self) -> Result<bool, TlsError> {
        match self {
            Watched::Server(s) => s.reload_if_changed(),
            Watched::Client(c) => c.reload_if_changed(),
        }
    }

    fn label(&self) -> &'static str {
        match self {
            Watched::Server(s) => s.port().label(),
            Watched::Client(_) => "outgoing",
        }
    }

    fn certificates(&self) -> Vec<CertificateInfo> {
        match self {
            Watched::Server(s) => s.status().certificates,
            Watched::Client(c) => c.status().certificates,
        }
    }

    fn counters(&self) -> &Counters {
        match self {
            Watched::Server(s) => s.counters(),
            Watched::Client(c) => c.counters(),
        }
    }
}

/// Polls every `interval_ms` and reloads what changed; logs reloads at info, failures at
/// error (once per distinct error), and warns (at most once a day per certificate) when a
/// loaded certificate expires within [`EXPIRY_WARNING_DAYS`] days or has expired; such
/// warnings are counted in [`crate::TlsStatus::expiry_warnings_total`]. Abort the handle to
/// stop it. Must be called inside a tokio runtime.
pub fn spawn_reloader(
    servers: Vec<ServerTls>,
    clients: Vec<ClientTls>,
    interval_ms: u64,
) -> tokio::task::JoinHandle<()> {
    let watched: Vec<Watched> = servers
        .into_iter()
        .map(Watched::Server)
        .chain(clients.into_iter().map(Watched::Client))
        .collect();
    tokio::spawn(async move {
        let mut last_error: HashMap<usize, String> = HashMap::new();
        let mut ticker = tokio::time::interval(Duration::from_millis(interval_ms.max(1)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let watched = std::sync::Arc::new(watched);
        loop {
            ticker.tick().await;
            let all = std::sync::Arc::clone(&watched);
            // File reads are blocking; keep them off the runtime's workers.
            let results = tokio::task::spawn_blocking(move || {
                all.iter()
                    .map(Watched::reload_if_changed)
                    .collect::<Vec<_>>()
            })
            .await;
            let Ok(results) = results else {
                continue;
            };
            for (i, (item, result)) in watched.iter().zip(results).enumerate() {
                match result {
                    Ok(reloaded) => {
                        if last_error.remove(&i).is_some() || reloaded {
                            tracing::info!(port = item.label(), "TLS files reloaded");
                        }
                    }
                    Err(e) => {
                        let text = e.to_string();
                        if last_error.get(&i) != Some(&text) {
                            tracing::error!(
                                port = item.label(),
                                error = %text,
                                "TLS reload failed; the previous certificates stay in use"
                            );
                            last_error.insert(i, text);
                        }
                    }
                }
                warn_expiring(item);
            }
        }
    })
}

/// Warns about each certificate of `item` expiring soon, at most once a day each.
fn warn_expiring(item: &Watched) {
    let now = now_unix_s();
    for cert in item.certificates() {
        if !cert.expires_within(EXPIRY_WARNING_DAYS) {
            continue;
        }
        let counters = item.counters();
        let key = (cert.file.clone(), cert.serial_hex.clone());
        {
            let mut warned = counters.expiry_warned_at.lock();
            if warned
                .get(&key)
                .is_some_and(|at| now - at < EXPIRY_WARNING_REPEAT_S)
            {
                continue;
            }
            warned.insert(key, now);
        }
        counters
            .expiry_warnings_total
            .fetch_add(1, Ordering::Relaxed);
        let days_left = (cert.not_after_unix_s - now) / 86_400;
        tracing::warn!(
            port = item.label(),
            file = %cert.file.display(),
            role = cert.role,
            subject_cn = %cert.subject_cn,
            not_after_unix_s = cert.not_after_unix_s,
            days_left,
            expired = cert.expired(),
            "certificate expires soon: replace the file (it is reloaded without a restart)"
        );
    }
}
