//! Health endpoints, as etcd answers them.
//!
//! * `GET /health`: etcd 3.4's check and body. `{"health":"true"}` (200)
//!   when no alarm is armed, this member knows a leader, and a
//!   linearizable read barrier completes; otherwise `{"health":"false"}`
//!   (503). (etcd 3.5 added a `"reason"` field and `?exclude=`/
//!   `?serializable=` options; they are additions, not fixes, and are left
//!   out: `/readyz?verbose` names the failing check.)
//! * `GET /livez`: the process serves and its keyspace can be read locally
//!   (etcd 3.6's `serializable_read`): `ok` (200).
//! * `GET /readyz`: checks `leader` (this member knows one), `alarm` (no
//!   alarm armed) and `linearizable_read` (a read barrier completes within
//!   [`HEALTH_READ_TIMEOUT_MS`], so this member has applied everything the
//!   leader had committed when it began): `ok` (200), or 503 listing each
//!   check as `[+]name ok` / `[-]name failed: reason` and then
//!   `readyz check failed`. `?verbose` lists the checks on success too;
//!   `?exclude=<name>` (repeatable) skips one, as Kubernetes-style probes
//!   do in etcd 3.6.

use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::AppState;

/// etcd's health endpoint.
pub const HEALTH_PATH: &str = "/health";
/// Liveness probe.
pub const LIVEZ_PATH: &str = "/livez";
/// Readiness probe.
pub const READYZ_PATH: &str = "/readyz";

/// How long the health checks wait for a linearizable read barrier (a
/// probe's own timeout is usually a few seconds).
pub const HEALTH_READ_TIMEOUT_MS: u64 = 2_000;

/// One named check and its outcome.
struct Check {
    name: &'static str,
    outcome: Result<(), String>,
}

fn leader_check(app: &AppState) -> Result<(), String> {
    match app.kv.consensus().status().leader_id {
        Some(_) => Ok(()),
        None => Err("this member knows no leader".to_string()),
    }
}

fn alarm_check(app: &AppState) -> Result<(), String> {
    let alarms = app.kv.keyspace_status().alarms;
    match alarms.first() {
        None => Ok(()),
        Some(alarm) => {
            let name = etcdproto::etcdserverpb::AlarmType::try_from(alarm.alarm)
                .map(|alarm| alarm.as_str_name())
                .unwrap_or("UNKNOWN");
            Err(format!(
                "{} alarm(s) armed, e.g. {name} by member {}",
                alarms.len(),
                alarm.member_id
            ))
        }
    }
}

async fn linearizable_read_check(app: &AppState) -> Result<(), String> {
    let barrier = app.kv.consensus().read_barrier();
    match tokio::time::timeout(Duration::from_millis(HEALTH_READ_TIMEOUT_MS), barrier).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!(
            "read barrier not done within {HEALTH_READ_TIMEOUT_MS} ms"
        )),
    }
}

/// `GET /health`: etcd 3.4's answer (see the module docs).
pub(crate) async fn health(State(app): State<AppState>) -> Response {
    let healthy = alarm_check(&app).is_ok()
        && leader_check(&app).is_ok()
        && linearizable_read_check(&app).await.is_ok();
    let (status, body) = if healthy {
        (StatusCode::OK, r#"{"health":"true"}"#)
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, r#"{"health":"false"}"#)
    };
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// `GET /livez`.
pub(crate) async fn livez(State(app): State<AppState>, RawQuery(query): RawQuery) -> Response {
    // Takes the keyspace's read lock: a member whose apply is stuck holding
    // it does not answer, and the probe times out.
    let _keys = app.kv.keyspace_status().keys;
    let checks = vec![Check {
        name: "serializable_read",
        outcome: Ok(()),
    }];
    probe_answer("livez", checks, query.as_deref())
}

/// `GET /readyz`.
pub(crate) async fn readyz(State(app): State<AppState>, RawQuery(query): RawQuery) -> Response {
    let excluded = excluded_checks(query.as_deref());
    let mut checks = Vec::with_capacity(3);
    let leader = leader_check(&app);
    let has_leader = leader.is_ok();
    checks.push(Check {
        name: "leader",
        outcome: leader,
    });
    checks.push(Check {
        name: "alarm",
        outcome: alarm_check(&app),
    });
    let read = if excluded.contains(&"linearizable_read") {
        Ok(())
    } else if has_leader {
        linearizable_read_check(&app).await
    } else {
        Err("no leader to confirm a read with".to_string())
    };
    checks.push(Check {
        name: "linearizable_read",
        outcome: read,
    });
    probe_answer("readyz", checks, query.as_deref())
}

/// The names in `exclude=` parameters of `query`.
fn excluded_checks(query: Option<&str>) -> Vec<&str> {
    query
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.strip_prefix("exclude="))
        .collect()
}

/// Whether `query` has a `verbose` parameter (with or without a value).
fn is_verbose(query: Option<&str>) -> bool {
    query
        .unwrap_or("")
        .split('&')
        .any(|pair| pair == "verbose" || pair.starts_with("verbose="))
}

/// The Kubernetes-style answer of a probe.
fn probe_answer(probe: &str, checks: Vec<Check>, query: Option<&str>) -> Response {
    let excluded = excluded_checks(query);
    let mut body = String::new();
    let mut failed = false;
    for check in &checks {
        if excluded.contains(&check.name) {
            body.push_str(&format!("[+]{} excluded: ok\n", check.name));
            continue;
        }
        match &check.outcome {
            Ok(()) => body.push_str(&format!("[+]{} ok\n", check.name)),
            Err(reason) => {
                failed = true;
                body.push_str(&format!("[-]{} failed: {reason}\n", check.name));
            }
        }
    }
    let (status, body) = if failed {
        body.push_str(&format!("{probe} check failed\n"));
        (StatusCode::SERVICE_UNAVAILABLE, body)
    } else if is_verbose(query) {
        body.push_str(&format!("{probe} check passed\n"));
        (StatusCode::OK, body)
    } else {
        (StatusCode::OK, "ok".to_string())
    };
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_options_are_read_from_the_query() {
        assert!(is_verbose(Some("verbose")));
        assert!(is_verbose(Some("exclude=alarm&verbose=1")));
        assert!(!is_verbose(Some("verbosely")));
        assert!(!is_verbose(None));
        assert_eq!(
            excluded_checks(Some("exclude=alarm&exclude=leader")),
            vec!["alarm", "leader"]
        );
    }
}
