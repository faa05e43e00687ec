//! Distinct ephemeral loopback ports.
//!
//! A port is found by binding `127.0.0.1:0` and closing the listener, so
//! the OS may give the same port to the next such bind: two nodes of one
//! cluster (or of two tests running in parallel threads) could be handed
//! the same port and one of them fail to listen. Every port handed out is
//! remembered for the life of the process and never handed out again.
//! (Another process can still take the port between its reservation and
//! the node's bind; nothing short of passing the listener avoids that.)

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::{Mutex, OnceLock};

use crate::Error;

/// Binds tried per port before giving up (each collision costs one).
const ATTEMPTS_MAX: u32 = 1_000;

fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static HANDED_OUT: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    HANDED_OUT.get_or_init(|| Mutex::new(HashSet::new()))
}

/// A free loopback port that no earlier call in this process returned.
pub fn reserve_port() -> Result<u16, Error> {
    // A panic elsewhere while holding the lock leaves the set intact.
    let mut ports = handed_out().lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..ATTEMPTS_MAX {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(|source| Error::io("reserving an ephemeral port", source))?
            .port();
        if ports.insert(port) {
            return Ok(port);
        }
    }
    Err(Error::Ports(format!(
        "{ATTEMPTS_MAX} binds in a row returned ports already handed out ({} so far)",
        ports.len()
    )))
}

/// `count` ports from [`reserve_port`].
pub fn reserve_ports(count: usize) -> Result<Vec<u16>, Error> {
    (0..count).map(|_| reserve_port()).collect()
}
