//! Pure parsing of what a client sends: keys, query options, node ids and
//! peer URLs. No I/O, no panics: every function returns a typed error.

use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::Bytes;
use kvstore::ReadConsistency;

use crate::error::ApiError;

/// Paths under this prefix belong to raftkv itself, never to keys.
pub const RESERVED_PREFIX: &str = "/v1";

/// Every reserved prefix: raftkv's own (`/v1`), etcd's v3 gateway
/// (`/v3`, `/v3beta`) and the live view's page (`/ui`). The prefix itself
/// and every path below it are not keys.
pub const RESERVED_PREFIXES: [&str; 4] = [RESERVED_PREFIX, "/v3", "/v3beta", "/ui"];

/// Longest peer URL accepted in `POST /<id>`.
pub const MAX_PEER_URL_BYTES: usize = 256;

/// The key of a `GET`/`PUT`: the whole path, as sent (percent-encoding is
/// kept as is, exactly like raftexample's request URI), without the query.
pub fn key_of(path: &str) -> Result<Bytes, ApiError> {
    let reserved = |prefix: &str| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    if RESERVED_PREFIXES.into_iter().any(reserved) {
        return Err(ApiError::ReservedPath(path.to_string()));
    }
    Ok(Bytes::copy_from_slice(path.as_bytes()))
}

/// Read consistency from the query string: `?serializable`,
/// `?consistency=serializable` or `?consistency=linearizable` (the default).
/// Other parameters are ignored.
pub fn consistency_of(query: Option<&str>) -> Result<ReadConsistency, ApiError> {
    let mut consistency = ReadConsistency::Linearizable;
    for pair in query.unwrap_or("").split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        consistency = match (name, value) {
            ("serializable", "" | "true") => ReadConsistency::Serializable,
            ("linearizable", "" | "true") => ReadConsistency::Linearizable,
            ("consistency", "serializable") => ReadConsistency::Serializable,
            ("consistency", "linearizable") => ReadConsistency::Linearizable,
            ("consistency" | "serializable" | "linearizable", _) => {
                return Err(ApiError::BadQuery(format!(
                    "unknown read option `{pair}`: use ?serializable or ?consistency=linearizable|serializable"
                )))
            }
            _ => consistency,
        };
    }
    Ok(consistency)
}

/// The node id of `POST /<id>` / `DELETE /<id>`: a positive decimal integer.
pub fn node_id_of(path: &str) -> Result<u64, ApiError> {
    let text = path.strip_prefix('/').unwrap_or(path);
    let bad = |why: &str| ApiError::BadNodeId(format!("`{}`: {why}", truncated(text)));
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(bad("a node id is a positive decimal integer"));
    }
    let id: u64 = text
        .parse()
        .map_err(|_| bad("too large for a 64-bit node id"))?;
    if id == 0 {
        return Err(bad("node id 0 is reserved"));
    }
    Ok(id)
}

/// Validates a peer URL of the form `http://host:port` or `https://host:port`
/// (optionally with a trailing `/`) and returns it normalised to
/// `scheme://host:port`.
pub fn peer_url_of(body: &[u8]) -> Result<String, ApiError> {
    if body.len() > MAX_PEER_URL_BYTES {
        return Err(ApiError::BadPeerUrl(format!(
            "longer than {MAX_PEER_URL_BYTES} bytes"
        )));
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::BadPeerUrl("not UTF-8".to_string()))?
        .trim();
    let bad = |why: &str| {
        ApiError::BadPeerUrl(format!(
            "`{text}`: {why}; expected http://host:port or https://host:port"
        ))
    };
    let (scheme, authority) = if let Some(rest) = text.strip_prefix("http://") {
        ("http", rest)
    } else if let Some(rest) = text.strip_prefix("https://") {
        ("https", rest)
    } else {
        return Err(bad("scheme must be http or https"));
    };
    let authority = authority.strip_suffix('/').unwrap_or(authority);
    let (host, port) = authority
        .rsplit_once(':')
        .ok_or_else(|| bad("missing port"))?;
    if port.is_empty() || !port.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(bad("port must be a number"));
    }
    match port.parse::<u16>() {
        Ok(1..) => {}
        _ => return Err(bad("port must be in 1..=65535")),
    }
    if !valid_host(host) {
        return Err(bad("bad host"));
    }
    Ok(format!("{scheme}://{host}:{port}"))
}

fn valid_host(host: &str) -> bool {
    if let Some(inner) = host
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
    {
        return inner.parse::<Ipv6Addr>().is_ok();
    }
    if host.parse::<Ipv4Addr>().is_ok() {
        return true;
    }
    // A DNS name: labels of letters, digits and hyphens.
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
        })
}

/// At most 64 characters of client input, for error messages.
fn truncated(text: &str) -> &str {
    match text.char_indices().nth(64) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::peer_url_of;

    #[test]
    fn peer_urls_are_http_or_https_and_normalised() {
        assert_eq!(
            peer_url_of(b" http://127.0.0.1:22379/ ").unwrap(),
            "http://127.0.0.1:22379"
        );
        assert_eq!(
            peer_url_of(b"https://node-2.example:22380/").unwrap(),
            "https://node-2.example:22380"
        );
        assert_eq!(
            peer_url_of(b"https://[::1]:22380").unwrap(),
            "https://[::1]:22380"
        );
        for bad in [
            &b"ftp://127.0.0.1:22379"[..],
            b"https://127.0.0.1",
            b"https://:1",
            b"HTTPS://127.0.0.1:1",
            b"https//127.0.0.1:1",
        ] {
            let err = peer_url_of(bad).unwrap_err().to_string();
            assert!(
                err.contains("expected http://host:port or https://host:port"),
                "{err}"
            );
        }
    }
}
