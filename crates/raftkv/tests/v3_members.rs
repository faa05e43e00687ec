//! etcdctl (3.4) as the operator's client for membership: `member
//! list|add|promote|update|remove` and `endpoint status|health|hashkv
//! --cluster` against a raftkv cluster of real processes, a learner added,
//! started with `--join`, refused promotion until it runs and catches up,
//! then promoted; and the shapes of etcd's own MemberList/MemberAdd answers
//! compared with raftkv's (ids and URLs aside).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::etcd::{find_tool, Etcd};
use common::{Cluster, FAST, WAIT};

/// etcdctl's exit status, stdout and stderr.
fn etcdctl(binary: &Path, endpoint: &str, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(binary)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(["--dial-timeout=10s", "--command-timeout=20s"])
        .args(args)
        .output()
        .expect("run etcdctl");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs etcdctl until `done` accepts its stdout (or panics after WAIT).
fn etcdctl_until(
    binary: &Path,
    endpoint: &str,
    args: &[&str],
    done: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let (ok, stdout, stderr) = etcdctl(binary, endpoint, args);
        if ok && done(&stdout) {
            return stdout;
        }
        assert!(
            Instant::now() < deadline,
            "`etcdctl {}` never satisfied the test:\n{stdout}\n{stderr}",
            args.join(" ")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn peer_url_of(cluster: &Cluster, id: u64) -> String {
    cluster
        .cluster_flag()
        .split(',')
        .nth(id as usize - 1)
        .expect("a defined node")
        .to_string()
}

/// Node `id`'s published client URL (host:port).
fn client_of(cluster: &Cluster, id: u64) -> String {
    cluster
        .url(id, "")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string()
}

/// The rows of a `-w table` output (lines starting with `|`, header
/// included), split into trimmed cells.
fn table_rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .filter(|line| line.starts_with('|'))
        .map(|line| {
            line.trim_matches('|')
                .split('|')
                .map(|cell| cell.trim().to_string())
                .collect()
        })
        .collect()
}

#[test]
fn etcdctl_adds_a_learner_promotes_updates_and_removes_it() {
    let test = "etcdctl_adds_a_learner_promotes_updates_and_removes_it";
    let Some(ctl) = find_tool("etcdctl", test) else {
        return;
    };
    let mut cluster = Cluster::start(3, FAST);
    cluster.leader();
    let endpoint = cluster.url(1, "");
    let endpoint = endpoint.trim_end_matches('/');

    // Every member publishes its name and client URL once it runs.
    let table = etcdctl_until(&ctl, endpoint, &["member", "list", "-w", "table"], |out| {
        (1..=3).all(|id| out.contains(&format!("raftkv-{id}")))
    });
    let rows = table_rows(&table);
    assert_eq!(
        rows[0],
        [
            "ID",
            "STATUS",
            "NAME",
            "PEER ADDRS",
            "CLIENT ADDRS",
            "IS LEARNER"
        ]
    );
    assert_eq!(rows.len(), 4, "{table}");
    for (id, row) in (1..=3u64).zip(&rows[1..]) {
        assert_eq!(row[0], format!("{id:x}"));
        assert_eq!(row[1], "started");
        assert_eq!(row[2], format!("raftkv-{id}"));
        assert_eq!(row[3], peer_url_of(&cluster, id));
        // Without the scheme by default (see `--advertise-client-urls`).
        assert_eq!(row[4], client_of(&cluster, id));
        assert_eq!(row[5], "false");
    }

    // A learner: added, listed unstarted, not promotable before it runs.
    cluster.define_node(4, &[]);
    let url4 = peer_url_of(&cluster, 4);
    let (ok, added, stderr) = etcdctl(
        &ctl,
        endpoint,
        &[
            "member",
            "add",
            "raftkv-4",
            "--learner",
            &format!("--peer-urls={url4}"),
        ],
    );
    assert!(ok, "{added}{stderr}");
    assert!(
        added.contains("Member                4 added to cluster"),
        "{added}"
    );
    let rows = table_rows(&etcdctl(&ctl, endpoint, &["member", "list", "-w", "table"]).1);
    assert_eq!(rows.len(), 5);
    assert_eq!(rows[4][..2], ["4", "unstarted"]);
    assert_eq!(rows[4][3], url4);
    assert_eq!(rows[4][5], "true");
    let (ok, _, stderr) = etcdctl(&ctl, endpoint, &["member", "promote", "4"]);
    assert!(!ok);
    assert!(
        stderr
            .contains("etcdserver: can only promote a learner member which is in sync with leader"),
        "{stderr}"
    );
    // A second learner is one too many (etcd's default).
    cluster.define_node(5, &[]);
    let (ok, _, stderr) = etcdctl(
        &ctl,
        endpoint,
        &[
            "member",
            "add",
            "raftkv-5",
            "--learner",
            &format!("--peer-urls={}", peer_url_of(&cluster, 5)),
        ],
    );
    assert!(!ok);
    assert!(
        stderr.contains("etcdserver: too many learner members in cluster"),
        "{stderr}"
    );

    // Started with --join, it catches up and is promoted.
    for i in 0..20 {
        cluster.put_ok(1, &format!("/k{i}"), "v");
    }
    cluster.spawn(4, true);
    cluster.wait_listening(4);
    etcdctl_until(&ctl, endpoint, &["member", "promote", "4"], |out| {
        out.contains("Member                4 promoted in cluster")
    });
    let table = etcdctl_until(&ctl, endpoint, &["member", "list", "-w", "table"], |out| {
        out.contains("raftkv-4")
    });
    let rows = table_rows(&table);
    assert_eq!(rows[4][..3], ["4", "started", "raftkv-4"]);
    assert_eq!(rows[4][5], "false");
    assert_eq!(cluster.get_ok(4, "/k19").as_deref(), Some("v"));

    // endpoint ... --cluster dial every member's published client URL.
    let clients: Vec<String> = (1..=4).map(|id| client_of(&cluster, id)).collect();
    let status = etcdctl_until(
        &ctl,
        endpoint,
        &["endpoint", "status", "--cluster", "-w", "table"],
        |out| clients.iter().all(|c| out.contains(c.as_str())),
    );
    let rows = table_rows(&status);
    assert_eq!(rows.len(), 5, "{status}");
    assert_eq!(
        rows[1..].iter().filter(|r| r[4] == "true").count(),
        1,
        "one leader: {status}"
    );
    let (ok, health, stderr) = etcdctl(&ctl, endpoint, &["endpoint", "health", "--cluster"]);
    assert!(ok, "{health}{stderr}");
    let healthy = format!("{health}{stderr}");
    for client in &clients {
        assert!(
            healthy.contains(&format!("{client} is healthy")),
            "{healthy}"
        );
    }
    let (ok, hashes, stderr) = etcdctl(&ctl, endpoint, &["endpoint", "hashkv", "--cluster"]);
    assert!(ok, "{stderr}");
    for client in &clients {
        assert!(hashes.contains(client.as_str()), "{hashes}");
    }

    // A new peer URL (the same port, another spelling of the address).
    let new_url4 = url4.replace("127.0.0.1", "localhost");
    let (ok, updated, stderr) = etcdctl(
        &ctl,
        endpoint,
        &["member", "update", "4", &format!("--peer-urls={new_url4}")],
    );
    assert!(ok, "{updated}{stderr}");
    assert!(
        updated.contains("Member                4 updated in cluster"),
        "{updated}"
    );
    let rows = table_rows(&etcdctl(&ctl, endpoint, &["member", "list", "-w", "table"]).1);
    assert_eq!(rows[4][3], new_url4);
    cluster.put_ok(1, "/after-update", "v");
    assert_eq!(cluster.get_ok(4, "/after-update").as_deref(), Some("v"));

    // Removed, it stops; the list has the three again.
    let (ok, removed, stderr) = etcdctl(&ctl, endpoint, &["member", "remove", "4"]);
    assert!(ok, "{removed}{stderr}");
    assert!(
        removed.contains("Member                4 removed from cluster"),
        "{removed}"
    );
    assert!(
        cluster.wait_exit(4, WAIT).is_some(),
        "a removed member stops"
    );
    let rows = table_rows(&etcdctl(&ctl, endpoint, &["member", "list", "-w", "table"]).1);
    assert_eq!(rows.len(), 4);
    let (ok, _, stderr) = etcdctl(&ctl, endpoint, &["member", "remove", "4"]);
    assert!(!ok);
    assert!(stderr.contains("etcdserver: member not found"), "{stderr}");
}

/// The JSON keys and value types of `value`, recursively (values and
/// array lengths aside).
fn shape(value: &serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            serde_json::Value::Object(map.iter().map(|(k, v)| (k.clone(), shape(v))).collect())
        }
        // The distinct shapes of the items (etcd's order is not raftkv's).
        serde_json::Value::Array(items) => {
            let mut shapes: Vec<String> = items.iter().map(|i| shape(i).to_string()).collect();
            shapes.sort();
            shapes.dedup();
            shapes.into_iter().map(serde_json::Value::String).collect()
        }
        serde_json::Value::Number(_) => "number".into(),
        serde_json::Value::String(_) => "string".into(),
        serde_json::Value::Bool(_) => "bool".into(),
        serde_json::Value::Null => serde_json::Value::Null,
    }
}

#[test]
fn member_list_and_add_answer_in_etcds_shape() {
    let test = "member_list_and_add_answer_in_etcds_shape";
    let Some(ctl) = find_tool("etcdctl", test) else {
        return;
    };
    let Some(etcd_binary) = find_tool("etcd", test) else {
        return;
    };
    let etcd = Etcd::start(&etcd_binary);
    let cluster = Cluster::start(1, FAST);
    cluster.leader();
    let raftkv = cluster.url(1, "");
    let raftkv = raftkv.trim_end_matches('/');
    etcdctl_until(&ctl, raftkv, &["member", "list"], |out| {
        out.contains("raftkv-1")
    });
    let json = |endpoint: &str, args: &[&str]| -> serde_json::Value {
        let (ok, stdout, stderr) = etcdctl(&ctl, endpoint, args);
        assert!(ok, "`etcdctl {}` on {endpoint}: {stderr}", args.join(" "));
        serde_json::from_str(&stdout).expect("JSON output")
    };
    let list = ["member", "list", "-w", "json"];
    assert_eq!(
        shape(&json(&etcd.client_url, &list)),
        shape(&json(raftkv, &list))
    );
    let add = |url: &str| {
        [
            "member".to_string(),
            "add".into(),
            "new".into(),
            "--learner".into(),
            format!("--peer-urls={url}"),
            "-w".into(),
            "json".into(),
        ]
    };
    let etcd_add = add("http://127.0.0.1:1");
    let raftkv_add = add("http://127.0.0.1:2");
    let etcd_added = json(
        &etcd.client_url,
        &etcd_add.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let raftkv_added = json(
        raftkv,
        &raftkv_add.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert_eq!(shape(&etcd_added), shape(&raftkv_added));
    assert_eq!(raftkv_added["member"]["isLearner"], true);
    assert_eq!(
        shape(&json(&etcd.client_url, &list)),
        shape(&json(raftkv, &list))
    );
}
