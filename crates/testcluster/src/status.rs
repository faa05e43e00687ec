//! `GET /v1/status` read into the server's own type.

use api::StatusResponse;

use crate::Error;

/// How much of a bad body an error quotes.
const QUOTE_CHARS_MAX: usize = 120;

/// Reads the body of node `id`'s `GET /v1/status` answer. Anything that is
/// not a complete [`StatusResponse`] is an [`Error::BadStatus`] that names
/// what is wrong and quotes the start of the body.
pub fn parse_status(id: u64, body: &[u8]) -> Result<StatusResponse, Error> {
    let status: StatusResponse = serde_json::from_slice(body).map_err(|e| Error::BadStatus {
        id,
        reason: format!("not a status ({e}): {}", quote(body)),
    })?;
    if status.id != id {
        return Err(Error::BadStatus {
            id,
            reason: format!("the answer is node {}'s status", status.id),
        });
    }
    Ok(status)
}

fn quote(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut quoted: String = text.chars().take(QUOTE_CHARS_MAX).collect();
    if text.chars().count() > QUOTE_CHARS_MAX {
        quoted.push_str("...");
    }
    format!("{quoted:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"id":2,"leader_id":1,"role":"follower","term":3,
        "commit_index":7,"applied_index":7,"snapshot_index":0,"last_index":7,
        "members":[{"id":1,"peer_url":"http://127.0.0.1:1"}]}"#;

    #[test]
    fn a_real_status_parses() {
        let status = parse_status(2, GOOD.as_bytes()).unwrap();
        assert_eq!(status.leader_id, Some(1));
        assert_eq!(status.applied_index, 7);
        assert_eq!(status.members.len(), 1);
    }

    #[test]
    fn garbage_is_rejected_with_the_reason() {
        let error = parse_status(3, b"<html>502 Bad Gateway</html>").unwrap_err();
        let text = error.to_string();
        assert!(matches!(error, Error::BadStatus { id: 3, .. }), "{error:?}");
        assert!(text.contains("/v1/status of node 3"), "{text}");
        assert!(text.contains("<html>502"), "quotes the body: {text}");
    }

    #[test]
    fn a_status_missing_a_field_names_the_field() {
        let error = parse_status(1, br#"{"id":1,"role":"leader"}"#).unwrap_err();
        assert!(error.to_string().contains("missing field"), "{error}");
    }

    #[test]
    fn a_wrongly_typed_field_is_rejected() {
        let body = GOOD.replace("\"term\":3", "\"term\":\"three\"");
        assert!(parse_status(2, body.as_bytes()).is_err());
    }

    #[test]
    fn another_nodes_status_is_rejected() {
        let error = parse_status(5, GOOD.as_bytes()).unwrap_err();
        assert!(error.to_string().contains("node 2's status"), "{error}");
    }

    #[test]
    fn a_long_body_is_quoted_shortly() {
        let body = vec![b'x'; 10_000];
        let text = parse_status(1, &body).unwrap_err().to_string();
        assert!(text.len() < 400, "{} chars", text.len());
        assert!(text.ends_with("...\""), "{text}");
    }
}
