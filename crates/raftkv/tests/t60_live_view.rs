//! The live cluster view against real nodes: the combined view at
//! `/ui/cluster.json`, and the page itself in a headless Chromium.
//!
//! Both kill the leader and wait (bounded by `VIEW_DEADLINE`, a timeout, not
//! a timing assertion) for the view to show the new leader and the dead
//! member, then check the indexes shown against each live member's
//! `/v1/status` once writes have stopped.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::browser::{find_chromium, Browser};
use common::{Cluster, FAST};
use serde_json::Value;

/// How long the view may take to follow a change (polls every 500 ms).
const VIEW_DEADLINE: Duration = Duration::from_secs(30);

/// What the view shows of one member.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Shown {
    reachable: bool,
    role: String,
    term: u64,
    last_index: u64,
    commit_index: u64,
    applied_index: u64,
    snapshot_index: u64,
}

/// What the view shows: the leader and each member.
#[derive(Debug, Clone, Default)]
struct Seen {
    leader: Option<u64>,
    members: BTreeMap<u64, Shown>,
}

fn num(value: &Value, field: &str) -> u64 {
    value[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {field} in {value}"))
}

fn from_cluster_json(view: &Value) -> Seen {
    let members = view["members"]
        .as_array()
        .unwrap_or_else(|| panic!("no members in {view}"))
        .iter()
        .map(|m| {
            let shown = Shown {
                reachable: m["reachable"].as_bool().unwrap_or(false),
                role: m["role"].as_str().unwrap_or_default().to_string(),
                term: num(m, "term"),
                last_index: num(m, "last_index"),
                commit_index: num(m, "commit_index"),
                applied_index: num(m, "applied_index"),
                snapshot_index: num(m, "snapshot_index"),
            };
            (num(m, "id"), shown)
        })
        .collect();
    Seen {
        leader: view["leader_id"].as_u64(),
        members,
    }
}

/// The page's DOM, read from its data-* attributes.
const READ_DOM: &str = r##"
const root = document.getElementById("cluster");
const rows = Array.from(document.querySelectorAll("#members tr"));
return {
  leader_id: root.dataset.leaderId === "" ? null : Number(root.dataset.leaderId),
  members: rows.map((row) => ({
    id: Number(row.dataset.memberId),
    reachable: row.dataset.reachable === "true",
    role: row.dataset.role,
    term: Number(row.dataset.term),
    last_index: Number(row.dataset.lastIndex),
    commit_index: Number(row.dataset.commitIndex),
    applied_index: Number(row.dataset.appliedIndex),
    snapshot_index: Number(row.dataset.snapshotIndex),
  })),
};
"##;

fn cluster_json(cluster: &Cluster, id: u64) -> Option<Seen> {
    let response = cluster
        .http()
        .get(cluster.url(id, "/ui/cluster.json"))
        .timeout(Duration::from_secs(5))
        .send()
        .ok()?;
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    Some(from_cluster_json(&response.json().ok()?))
}

/// Polls `look` until `done` holds for what it sees; panics with the last
/// sight after [`VIEW_DEADLINE`].
fn wait_until(
    what: &str,
    mut look: impl FnMut() -> Option<Seen>,
    done: impl Fn(&Seen) -> bool,
) -> Seen {
    let deadline = Instant::now() + VIEW_DEADLINE;
    let mut last = None;
    loop {
        if let Some(seen) = look() {
            if done(&seen) {
                return seen;
            }
            last = Some(seen);
        }
        assert!(
            Instant::now() < deadline,
            "the view never showed {what} within {VIEW_DEADLINE:?}; last seen: {last:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Whether every live member's indexes as shown equal its `/v1/status`.
fn matches_status(cluster: &Cluster, live: &[u64], seen: &Seen) -> bool {
    live.iter().all(|id| {
        let (Ok(status), Some(shown)) = (cluster.status(*id), seen.members.get(id)) else {
            return false;
        };
        shown.reachable
            && shown.term == status.term
            && shown.last_index == status.last_index
            && shown.commit_index == status.commit_index
            && shown.applied_index == status.applied_index
            && shown.snapshot_index == status.snapshot_index
    })
}

/// Kills the leader while `look` watches from a follower; checks that the
/// view shows the new leader and the dead member, and, once writes have
/// stopped, the live members' own indexes.
fn kill_the_leader_and_watch(
    cluster: &mut Cluster,
    viewer: u64,
    old_leader: u64,
    mut look: impl FnMut(&Cluster) -> Option<Seen>,
) {
    let all = cluster.ids();
    wait_until(
        "every member reachable under the first leader",
        || look(cluster),
        |seen| {
            seen.leader == Some(old_leader)
                && seen.members.len() == all.len()
                && seen.members.values().all(|m| m.reachable)
        },
    );
    cluster.kill(old_leader);
    let new_leader = cluster.leader();
    assert_ne!(new_leader, old_leader);
    let seen = wait_until(
        "the new leader and the dead member",
        || look(cluster),
        |seen| {
            seen.leader == Some(new_leader)
                && seen.members.get(&old_leader).is_some_and(|m| !m.reachable)
        },
    );
    // The dead member stays in the view, with what it last reported.
    assert_eq!(seen.members.len(), all.len(), "{seen:#?}");
    for i in 0..20 {
        cluster.put_ok(new_leader, &format!("/after-{i}"), "v");
    }
    // Writes have stopped: the view converges on each member's own status.
    let live: Vec<u64> = all.iter().copied().filter(|id| *id != old_leader).collect();
    let applied = cluster.status(new_leader).expect("status").commit_index;
    for id in &live {
        cluster.wait_applied(*id, applied);
    }
    assert!(live.contains(&viewer));
    wait_until(
        "every live member's /v1/status indexes",
        || look(cluster),
        |seen| matches_status(cluster, &live, seen),
    );
}

/// Starts 3 nodes, writes a little, and returns the leader and a follower.
fn three_nodes() -> (Cluster, u64, u64) {
    let cluster = Cluster::start(3, FAST);
    let leader = cluster.leader();
    for i in 0..30 {
        cluster.put_ok(leader, &format!("/before-{i}"), "v");
    }
    let viewer = cluster
        .ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    (cluster, leader, viewer)
}

#[test]
fn cluster_json_follows_a_leader_change_and_keeps_the_dead_member() {
    let (mut cluster, leader, viewer) = three_nodes();
    kill_the_leader_and_watch(&mut cluster, viewer, leader, |cluster| {
        cluster_json(cluster, viewer)
    });
    // The page and its assets are served, and no path under `/ui` is a key.
    let http = cluster.http();
    let page = http
        .get(cluster.url(viewer, "/ui"))
        .send()
        .expect("the page");
    assert_eq!(page.status(), reqwest::StatusCode::OK);
    assert!(page.text().expect("html").contains("/ui/view.js"));
    for asset in ["/ui/view.js", "/ui/view.css"] {
        let response = http.get(cluster.url(viewer, asset)).send().expect(asset);
        assert_eq!(response.status(), reqwest::StatusCode::OK, "{asset}");
    }
    let put = |path: &str| {
        let response = http.put(cluster.url(viewer, path)).body("x").send();
        response.expect("a PUT").status()
    };
    assert_eq!(put("/ui"), reqwest::StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(put("/ui/some-key"), reqwest::StatusCode::BAD_REQUEST);
    let get = http.get(cluster.url(viewer, "/ui/some-key")).send();
    assert_eq!(
        get.expect("a GET").status(),
        reqwest::StatusCode::BAD_REQUEST
    );
}

#[test]
fn the_page_in_chromium_follows_a_leader_change() {
    let Some((chromium, chromedriver)) =
        find_chromium("the_page_in_chromium_follows_a_leader_change")
    else {
        return;
    };
    let (mut cluster, leader, viewer) = three_nodes();
    let browser = Browser::start(&chromium, &chromedriver);
    browser.goto(&cluster.url(viewer, "/ui"));
    kill_the_leader_and_watch(&mut cluster, viewer, leader, |_| {
        let dom = browser.eval(READ_DOM);
        // Before the first event the table is empty: nothing to see yet.
        let seen = from_cluster_json(&dom);
        (!seen.members.is_empty()).then_some(seen)
    });
}
