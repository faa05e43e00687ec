//! etcdctl (3.4) as a real client: the same commands run against a real
//! etcd and against a 3-node raftkv cluster must print the same (member ids,
//! cluster ids and raft terms aside), and the outputs are checked against
//! what they must say.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::etcd::{find_tool, Etcd};
use common::{Cluster, FAST};

/// What one etcdctl run printed.
#[derive(Debug, Clone, PartialEq)]
struct Run {
    success: bool,
    stdout: String,
    stderr: String,
}

fn etcdctl(binary: &Path, endpoint: &str, args: &[&str], stdin: Option<&str>) -> Run {
    let mut child = Command::new(binary)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(["--dial-timeout=10s", "--command-timeout=20s"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start etcdctl");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.unwrap_or("").as_bytes())
        .expect("etcdctl stdin");
    drop(input);
    let output = child.wait_with_output().expect("etcdctl output");
    Run {
        success: output.status.success(),
        stdout: normalise(&String::from_utf8_lossy(&output.stdout)),
        // The client's own retry logs carry timestamps; keep the error lines.
        stderr: String::from_utf8_lossy(&output.stderr)
            .lines()
            .filter(|line| !line.starts_with('{'))
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

/// JSON output without the member-specific header fields.
fn normalise(stdout: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(stdout) {
        Ok(mut value) => {
            strip(&mut value);
            value.to_string()
        }
        Err(_) => stdout.to_string(),
    }
}

fn strip(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for field in ["cluster_id", "member_id", "raft_term"] {
                map.remove(field);
            }
            map.values_mut().for_each(strip);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
        _ => {}
    }
}

struct Pair {
    etcdctl: PathBuf,
    etcd: Etcd,
    _cluster: Option<Cluster>,
    _other: Option<Etcd>,
    raftkv_url: String,
}

impl Pair {
    fn start(test: &str) -> Option<Pair> {
        Pair::start_on(test, Member::First)
    }

    fn start_on(test: &str, member: Member) -> Option<Pair> {
        let etcdctl = find_tool("etcdctl", test)?;
        let etcd_binary = find_tool("etcd", test)?;
        let etcd = Etcd::start(&etcd_binary);
        // RAFTKV_DIFF_SELF_CHECK: a second etcd in raftkv's place.
        if std::env::var_os("RAFTKV_DIFF_SELF_CHECK").is_some() {
            let other = Etcd::start(&etcd_binary);
            let raftkv_url = other.client_url.clone();
            return Some(Pair {
                etcdctl,
                etcd,
                _cluster: None,
                _other: Some(other),
                raftkv_url,
            });
        }
        let cluster = Cluster::start(3, FAST);
        let leader = cluster.leader();
        let id = match member {
            Member::First => 1,
            Member::Follower => (1..=3).find(|id| *id != leader).unwrap_or(1),
        };
        let raftkv_url = cluster.url(id, "");
        Some(Pair {
            etcdctl,
            etcd,
            _cluster: Some(cluster),
            _other: None,
            raftkv_url,
        })
    }

    /// Runs the command on both; they must print the same. Returns
    /// raftkv's output.
    fn same(&self, args: &[&str]) -> Run {
        self.same_with_stdin(args, None)
    }

    fn same_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let expected = etcdctl(&self.etcdctl, &self.etcd.client_url, args, stdin);
        let actual = etcdctl(&self.etcdctl, &self.raftkv_url, args, stdin);
        assert_eq!(
            expected,
            actual,
            "`etcdctl {}` printed differently (left: etcd, right: raftkv)",
            args.join(" ")
        );
        actual
    }
}

/// Which raftkv member etcdctl talks to.
#[derive(Debug, Clone, Copy)]
enum Member {
    /// Node 1, whatever its role.
    First,
    /// A member that is not the leader (when the cluster was started).
    Follower,
}

fn lines(run: &Run) -> Vec<&str> {
    run.stdout.lines().collect()
}

#[test]
fn etcdctl_put_get_del_match_etcd() {
    let Some(pair) = Pair::start("etcdctl_put_get_del_match_etcd") else {
        return;
    };
    for (key, value) in [
        ("foo", "bar"),
        ("foo/1", "one"),
        ("foo/2", "two"),
        ("zoo", "z"),
    ] {
        assert_eq!(lines(&pair.same(&["put", key, value])), ["OK"]);
    }
    assert_eq!(pair.same(&["put", "foo", "baz"]).stdout, "OK\n");
    assert_eq!(lines(&pair.same(&["get", "foo"])), ["foo", "baz"]);
    assert_eq!(
        lines(&pair.same(&["get", "foo", "--prefix"])),
        ["foo", "baz", "foo/1", "one", "foo/2", "two"]
    );
    assert_eq!(
        lines(&pair.same(&["get", "--from-key", "foo/2"])),
        ["foo/2", "two", "zoo", "z"]
    );
    assert_eq!(
        lines(&pair.same(&["get", "foo", "--rev=2"])),
        ["foo", "bar"]
    );
    assert_eq!(
        lines(&pair.same(&["get", "foo", "--prefix", "--limit=1"])),
        ["foo", "baz"]
    );
    assert_eq!(
        lines(&pair.same(&[
            "get",
            "foo",
            "--prefix",
            "--sort-by=MODIFY",
            "--order=DESCEND",
            "--keys-only"
        ])),
        ["foo", "", "foo/2", "", "foo/1", ""]
    );
    pair.same(&[
        "get",
        "foo",
        "--prefix",
        "--sort-by=VALUE",
        "--order=ASCEND",
    ]);
    pair.same(&[
        "get",
        "foo",
        "--prefix",
        "--sort-by=CREATE",
        "--order=DESCEND",
    ]);
    pair.same(&["get", "foo", "--prefix", "--sort-by=VERSION"]);
    // etcdctl 3.4 has no --count-only (3.5 added it; the gRPC differential
    // test covers count_only): the count ignores the limit, `more` says so.
    let counted = pair.same(&["get", "foo", "--prefix", "--limit=1", "-w", "json"]);
    assert!(counted.stdout.contains("\"count\":3"), "{counted:?}");
    assert!(counted.stdout.contains("\"more\":true"), "{counted:?}");
    let json = pair.same(&["get", "foo", "-w", "json"]);
    assert!(json.stdout.contains("\"kvs\""), "{json:?}");
    pair.same(&["get", "foo", "--prefix", "--limit=2", "-w", "json"]);
    pair.same(&["get", "nothing"]);

    let deleted = pair.same(&["del", "foo/1", "--prev-kv"]);
    assert_eq!(lines(&deleted), ["1", "foo/1", "one"]);
    assert_eq!(lines(&pair.same(&["del", "foo", "--prefix"])), ["2"]);
    assert_eq!(lines(&pair.same(&["del", "foo", "--prefix"])), ["0"]);
    pair.same(&["get", "", "--from-key", "-w", "json"]);

    let refused = pair.same(&["get", "zoo", "--rev=100"]);
    assert!(!refused.success);
    assert!(
        refused
            .stderr
            .contains("etcdserver: mvcc: required revision is a future revision"),
        "{refused:?}"
    );
}

#[test]
fn etcdctl_txn_compaction_and_endpoint_match_etcd() {
    let Some(pair) = Pair::start("etcdctl_txn_compaction_and_endpoint_match_etcd") else {
        return;
    };
    pair.same(&["put", "lock", "free"]);
    pair.same(&["put", "counter", "1"]);
    let script = "value(\"lock\") = \"free\"\nmod(\"counter\") > \"0\"\n\nput lock taken\nget counter\n\nget lock\n\n";
    let taken = pair.same_with_stdin(&["txn"], Some(script));
    assert_eq!(lines(&taken), ["SUCCESS", "", "OK", "", "counter", "1"]);
    let again = pair.same_with_stdin(&["txn"], Some(script));
    assert_eq!(lines(&again), ["FAILURE", "", "lock", "taken"]);
    pair.same_with_stdin(&["txn", "-w", "json"], Some(script));
    // A missing key compares as version 0.
    let missing = "version(\"nope\") = \"0\"\n\nput nope yes\n\n\n";
    assert_eq!(
        lines(&pair.same_with_stdin(&["txn"], Some(missing))),
        ["SUCCESS", "", "OK"]
    );

    pair.same(&["put", "lock", "free"]);
    assert_eq!(
        lines(&pair.same(&["compaction", "4"])),
        ["compacted revision 4"]
    );
    let compacted = pair.same(&["get", "lock", "--rev=3"]);
    assert!(!compacted.success);
    assert!(
        compacted
            .stderr
            .contains("etcdserver: mvcc: required revision has been compacted"),
        "{compacted:?}"
    );
    assert_eq!(
        lines(&pair.same(&["get", "lock", "--rev=4"])),
        ["lock", "taken"]
    );
    let again = pair.same(&["compaction", "4"]);
    assert!(!again.success);

    // Member-specific output: both succeed and name the endpoint. etcdctl
    // 3.4 dials these per endpoint with the whole URL as the HTTP/2
    // :authority ("http://host:port"), which HTTP/2 forbids and raftkv's
    // HTTP/2 stack refuses (etcd's Go server lets it pass): the endpoint is
    // given as host:port, which etcdctl accepts everywhere.
    let endpoint = pair.raftkv_url.trim_start_matches("http://").to_string();
    for args in [
        &["endpoint", "status"][..],
        &["endpoint", "hashkv"][..],
        &["endpoint", "health"][..],
    ] {
        let run = etcdctl(&pair.etcdctl, &endpoint, args, None);
        assert!(
            run.success,
            "`etcdctl {}` against raftkv: {run:?}",
            args.join(" ")
        );
        let output = format!("{}{}", run.stdout, run.stderr);
        assert!(output.contains(&endpoint), "{output}");
    }
    let status = etcdctl(
        &pair.etcdctl,
        &endpoint,
        &["endpoint", "status", "-w", "json"],
        None,
    );
    assert!(status.stdout.contains("\"revision\":"), "{status:?}");
    let alarms = pair.same(&["alarm", "list"]);
    assert_eq!(alarms.stdout, "");
}

/// The lease id etcdctl printed in "lease <hex id> granted with TTL(…)".
fn granted_id(run: &Run) -> String {
    run.stdout
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no lease id in {run:?}"))
        .to_string()
}

/// etcdctl's output with the lease id replaced, `remaining(Ns)` masked
/// (the two servers' clocks differ by the time between the two runs; the
/// test checks raftkv's value on its own) and attached keys sorted.
fn without_id(run: &Run, id: &str) -> Run {
    if let Ok(serde_json::Value::Object(mut map)) = serde_json::from_str(&run.stdout) {
        for field in ["id", "ttl"] {
            if map.contains_key(field) {
                map.insert(field.to_string(), "<masked>".into());
            }
        }
        return Run {
            stdout: serde_json::Value::Object(map).to_string(),
            ..run.clone()
        };
    }
    let mut stdout = run.stdout.replace(id, "<ID>");
    if let Some(start) = stdout.find("remaining(") {
        if let Some(end) = stdout[start..].find("s)") {
            stdout.replace_range(start..start + end + 2, "remaining(<N>s)");
        }
    }
    // etcd lists attached keys in Go map order (any order); raftkv in key order.
    if let Some(start) = stdout.find("attached keys([") {
        let from = start + "attached keys([".len();
        if let Some(len) = stdout[from..].find("])") {
            let mut keys: Vec<&str> = stdout[from..from + len].split(' ').collect();
            keys.sort_unstable();
            let sorted = keys.join(" ");
            stdout.replace_range(from..from + len, &sorted);
        }
    }
    Run {
        stdout,
        stderr: run.stderr.replace(id, "<ID>"),
        success: run.success,
    }
}

impl Pair {
    /// `etcdctl lease grant <ttl_s>` on etcd, then on raftkv.
    fn grant(&self, ttl_s: &str) -> (Run, Run) {
        let args = ["lease", "grant", ttl_s];
        let etcd = etcdctl(&self.etcdctl, &self.etcd.client_url, &args, None);
        let raftkv = etcdctl(&self.etcdctl, &self.raftkv_url, &args, None);
        assert!(etcd.success && raftkv.success, "{etcd:?} {raftkv:?}");
        (etcd, raftkv)
    }

    /// Runs `args(id)` on both, with each server's own lease id; the outputs
    /// must match with the ids (and remaining seconds) masked.
    fn same_lease(&self, ids: (&str, &str), args: &[&str]) -> Run {
        let with =
            |id: &str| -> Vec<String> { args.iter().map(|arg| arg.replace("{id}", id)).collect() };
        let etcd_args = with(ids.0);
        let raftkv_args = with(ids.1);
        fn as_str(args: &[String]) -> Vec<&str> {
            args.iter().map(String::as_str).collect()
        }
        let expected = etcdctl(
            &self.etcdctl,
            &self.etcd.client_url,
            &as_str(&etcd_args),
            None,
        );
        let actual = etcdctl(&self.etcdctl, &self.raftkv_url, &as_str(&raftkv_args), None);
        let (expected, actual) = (without_id(&expected, ids.0), without_id(&actual, ids.1));
        assert_eq!(
            expected,
            actual,
            "`etcdctl {}` printed differently (left: etcd, right: raftkv)",
            args.join(" ")
        );
        actual
    }
}

/// `etcdctl lease …` and `put --lease` through a follower (which forwards
/// keep-alive and timetolive to the leader), compared with etcd; a key
/// vanishes when its lease expires.
#[test]
fn etcdctl_lease_commands_match_etcd() {
    let Some(pair) = Pair::start_on("etcdctl_lease_commands_match_etcd", Member::Follower) else {
        return;
    };
    let (etcd_grant, raftkv_grant) = pair.grant("600");
    let ids_owned = (granted_id(&etcd_grant), granted_id(&raftkv_grant));
    let ids = (ids_owned.0.as_str(), ids_owned.1.as_str());
    assert_eq!(
        without_id(&etcd_grant, ids.0),
        without_id(&raftkv_grant, ids.1)
    );
    assert_eq!(
        without_id(&raftkv_grant, ids.1).stdout,
        "lease <ID> granted with TTL(600s)\n"
    );
    assert_eq!(
        lines(&pair.same_lease(ids, &["put", "--lease={id}", "leased/b", "2"])),
        ["OK"]
    );
    pair.same_lease(ids, &["put", "--lease={id}", "leased/a", "1"]);
    pair.same(&["put", "plain", "p"]);
    let ttl = pair.same_lease(ids, &["lease", "timetolive", "{id}", "--keys"]);
    assert_eq!(
        ttl.stdout,
        "lease <ID> granted with TTL(600s), remaining(<N>s), attached keys([leased/a leased/b])\n"
    );
    let ttl = etcdctl(
        &pair.etcdctl,
        &pair.raftkv_url,
        &["lease", "timetolive", ids.1],
        None,
    );
    let remaining: i64 = ttl
        .stdout
        .split("remaining(")
        .nth(1)
        .and_then(|rest| rest.split('s').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{ttl:?}"));
    assert!((590..=600).contains(&remaining), "{ttl:?}");
    pair.same_lease(ids, &["lease", "timetolive", "{id}", "-w", "json"]);
    let kept = pair.same_lease(ids, &["lease", "keep-alive", "--once", "{id}"]);
    assert_eq!(kept.stdout, "lease <ID> keepalived with TTL(600)\n");
    let listed = pair.same_lease(ids, &["lease", "list"]);
    assert_eq!(lines(&listed), ["found 1 leases", "<ID>"]);
    let unknown = pair.same(&["put", "--lease=1234abcd", "x", "y"]);
    assert!(!unknown.success);
    assert!(
        unknown
            .stderr
            .contains("etcdserver: requested lease not found"),
        "{unknown:?}"
    );
    let revoked = pair.same_lease(ids, &["lease", "revoke", "{id}"]);
    assert_eq!(revoked.stdout, "lease <ID> revoked\n");
    assert_eq!(
        lines(&pair.same(&["get", "", "--from-key", "--keys-only"])),
        ["plain", ""]
    );
    let gone = pair.same_lease(ids, &["lease", "timetolive", "{id}"]);
    assert_eq!(gone.stdout, "lease <ID> already expired\n");
    let again = pair.same_lease(ids, &["lease", "revoke", "{id}"]);
    assert!(!again.success);

    // Expiry: a 2 s lease (the minimum of etcd's default configuration)
    // and its key vanish once nobody keeps it alive.
    let (etcd_short, raftkv_short) = pair.grant("2");
    let short_owned = (granted_id(&etcd_short), granted_id(&raftkv_short));
    let short = (short_owned.0.as_str(), short_owned.1.as_str());
    pair.same_lease(short, &["put", "--lease={id}", "ephemeral", "e"]);
    assert_eq!(lines(&pair.same(&["get", "ephemeral"])), ["ephemeral", "e"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let etcd_get = etcdctl(
            &pair.etcdctl,
            &pair.etcd.client_url,
            &["get", "ephemeral"],
            None,
        );
        let raftkv_get = etcdctl(&pair.etcdctl, &pair.raftkv_url, &["get", "ephemeral"], None);
        if etcd_get.stdout.is_empty() && raftkv_get.stdout.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the key under an expired lease stayed: etcd {etcd_get:?}, raftkv {raftkv_get:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let expired = pair.same_lease(short, &["lease", "timetolive", "{id}"]);
    assert_eq!(expired.stdout, "lease <ID> already expired\n");
    assert_eq!(lines(&pair.same(&["lease", "list"])), ["found 0 leases"]);
}

/// Runs a streaming etcdctl command (`watch`), feeding `stdin` and keeping
/// it open, until it printed `want` lines or exited; then stops it.
/// Returns the lines of stdout and stderr it printed.
fn etcdctl_stream(
    binary: &Path,
    endpoint: &str,
    args: &[&str],
    stdin: &str,
    want: usize,
) -> (Vec<String>, String) {
    use std::io::BufRead;
    let mut child = Command::new(binary)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("--dial-timeout=10s")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start etcdctl");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.as_bytes()).expect("etcdctl stdin");
    input.flush().expect("etcdctl stdin");
    let stdout = child.stdout.take().expect("stdout");
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut out = Vec::new();
    while out.len() < want {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match receiver.recv_timeout(left) {
            Ok(line) => out.push(line),
            Err(_) => break,
        }
    }
    let _killed = child.kill();
    drop(input);
    let output = child.wait_with_output().expect("etcdctl output");
    let stderr = String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|line| !line.starts_with('{'))
        .collect::<Vec<_>>()
        .join("\n");
    (out, stderr)
}

impl Pair {
    /// Runs a streaming command on both until `want` lines; they must print
    /// the same lines. Returns raftkv's.
    fn same_stream(&self, args: &[&str], stdin: &str, want: usize) -> Vec<String> {
        let (expected, etcd_stderr) =
            etcdctl_stream(&self.etcdctl, &self.etcd.client_url, args, stdin, want);
        let (actual, raftkv_stderr) =
            etcdctl_stream(&self.etcdctl, &self.raftkv_url, args, stdin, want);
        assert_eq!(
            expected,
            actual,
            "`etcdctl {}` printed differently (left: etcd, right: raftkv); stderr: {etcd_stderr:?} / {raftkv_stderr:?}",
            args.join(" ")
        );
        assert_eq!(actual.len(), want, "stderr: {raftkv_stderr:?}");
        actual
    }
}

#[test]
fn etcdctl_watch_prefix_rev_prev_kv_and_interactive_match_etcd() {
    let Some(pair) = Pair::start_on(
        "etcdctl_watch_prefix_rev_prev_kv_and_interactive_match_etcd",
        Member::Follower,
    ) else {
        return;
    };
    pair.same(&["put", "watch/a", "1"]); // 2
    pair.same(&["put", "watch/b", "2"]); // 3
    pair.same(&["put", "watch/a", "3"]); // 4
    pair.same(&["del", "watch/b"]); // 5
    pair.same(&["put", "other", "x"]); // 6
    let replay = pair.same_stream(&["watch", "watch/", "--prefix", "--rev=2"], "", 12);
    assert_eq!(
        replay,
        [
            "PUT", "watch/a", "1", "PUT", "watch/b", "2", "PUT", "watch/a", "3", "DELETE",
            "watch/b", ""
        ]
    );
    let with_prev = pair.same_stream(&["watch", "watch/a", "--rev=2", "--prev-kv"], "", 8);
    assert_eq!(
        with_prev,
        ["PUT", "watch/a", "1", "PUT", "watch/a", "1", "watch/a", "3"]
    );
    // Live events: the watch starts at the next revision, so it cannot miss
    // the put made while it connects.
    let etcd_live = {
        let binary = pair.etcdctl.clone();
        let url = pair.etcd.client_url.clone();
        std::thread::spawn(move || {
            etcdctl_stream(
                &binary,
                &url,
                &["watch", "live", "--prefix", "--rev=7"],
                "",
                3,
            )
        })
    };
    let raftkv_live = {
        let binary = pair.etcdctl.clone();
        let url = pair.raftkv_url.clone();
        std::thread::spawn(move || {
            etcdctl_stream(
                &binary,
                &url,
                &["watch", "live", "--prefix", "--rev=7"],
                "",
                3,
            )
        })
    };
    pair.same(&["put", "live/x", "now"]); // 7
    let etcd_live = etcd_live.join().expect("etcd watch");
    let raftkv_live = raftkv_live.join().expect("raftkv watch");
    assert_eq!(
        etcd_live.0, raftkv_live.0,
        "{etcd_live:?} / {raftkv_live:?}"
    );
    assert_eq!(raftkv_live.0, ["PUT", "live/x", "now"]);
    // Interactive mode: the watch command comes on stdin.
    let interactive = pair.same_stream(&["watch", "-i"], "watch watch/ --prefix --rev=4\n", 6);
    assert_eq!(
        interactive,
        ["PUT", "watch/a", "3", "DELETE", "watch/b", ""]
    );
}

#[test]
fn etcdctl_watch_of_a_compacted_revision_is_refused_as_etcd_refuses_it() {
    let Some(pair) =
        Pair::start("etcdctl_watch_of_a_compacted_revision_is_refused_as_etcd_refuses_it")
    else {
        return;
    };
    for value in ["1", "2", "3", "4"] {
        pair.same(&["put", "c", value]); // 2..=5
    }
    pair.same(&["compaction", "4"]);
    let args = ["watch", "c", "--rev=2"];
    let (etcd_lines, etcd_stderr) =
        etcdctl_stream(&pair.etcdctl, &pair.etcd.client_url, &args, "", 1);
    let (raftkv_lines, raftkv_stderr) =
        etcdctl_stream(&pair.etcdctl, &pair.raftkv_url, &args, "", 1);
    assert_eq!(
        etcd_lines, raftkv_lines,
        "{etcd_stderr:?} / {raftkv_stderr:?}"
    );
    assert_eq!(etcd_stderr, raftkv_stderr);
    let said = format!("{raftkv_lines:?} {raftkv_stderr}");
    assert!(said.contains("compacted"), "{said}");
}

/// etcdctl 3.4 against a TLS cluster (client certificates required, peers
/// over https:// with peer certificate authentication), as an operator runs
/// it: `--cacert --cert --key` and `host:port` endpoints. etcdctl dials a
/// scheme-less endpoint with its TLS configuration when one is given, and
/// `--cluster` commands dial the members' published client URLs (also
/// `host:port`) the same way.
#[test]
fn etcdctl_over_tls_with_client_certificates() {
    let test = "etcdctl_over_tls_with_client_certificates";
    let Some(binary) = find_tool("etcdctl", test) else {
        return;
    };
    let cluster = Cluster::start_tls(3, testcluster::TlsMode::full(), FAST);
    cluster.leader();
    let paths = cluster.tls_paths().expect("TLS paths").clone();
    let endpoint = format!("127.0.0.1:{}", cluster.node(1).unwrap().client_port);
    let (ca, cert, key) = (
        paths.ca_file.display().to_string(),
        paths.client_cert_file.display().to_string(),
        paths.client_key_file.display().to_string(),
    );
    let tls = ["--cacert", &ca, "--cert", &cert, "--key", &key];
    let run = |args: &[&str], stdin: Option<&str>| -> Run {
        let all: Vec<&str> = tls.iter().chain(args).copied().collect();
        let run = etcdctl(&binary, &endpoint, &all, stdin);
        assert!(run.success, "`etcdctl {}`: {run:?}", args.join(" "));
        run
    };
    assert_eq!(lines(&run(&["put", "foo", "bar"], None)), ["OK"]);
    assert_eq!(lines(&run(&["get", "foo"], None)), ["foo", "bar"]);
    let script = "value(\"foo\") = \"bar\"\n\nput foo baz\n\nget foo\n\n";
    assert_eq!(lines(&run(&["txn"], Some(script))), ["SUCCESS", "", "OK"]);
    assert_eq!(lines(&run(&["get", "foo"], None)), ["foo", "baz"]);
    assert_eq!(lines(&run(&["del", "foo"], None)), ["1"]);
    let members = run(&["member", "list"], None);
    assert_eq!(lines(&members).len(), 3, "{members:?}");
    assert!(members.stdout.contains("https://127.0.0.1:"), "{members:?}");
    let status = run(&["endpoint", "status", "--cluster"], None);
    assert_eq!(lines(&status).len(), 3, "{status:?}");
    let health = run(&["endpoint", "health", "--cluster"], None);
    let output = format!("{}{}", health.stdout, health.stderr);
    assert_eq!(output.matches("is healthy").count(), 3, "{output}");
    let dir = tempfile::tempdir().expect("temp dir");
    let snapshot = dir.path().join("snap.db");
    run(&["snapshot", "save", &snapshot.display().to_string()], None);
    assert!(
        std::fs::metadata(&snapshot).is_ok_and(|m| m.len() > 0),
        "no snapshot written"
    );

    // Over TLS the `https://host:port` form works too, unlike
    // `http://host:port` against a plaintext port (see above).
    let https = format!("https://{endpoint}");
    let all: Vec<&str> = tls.iter().chain(&["get", "foo"]).copied().collect();
    let deleted = etcdctl(&binary, &https, &all, None);
    assert!(deleted.success && deleted.stdout.is_empty(), "{deleted:?}");
    let all: Vec<&str> = tls.iter().chain(&["endpoint", "status"]).copied().collect();
    let status = etcdctl(&binary, &https, &all, None);
    assert!(
        status.success && status.stdout.starts_with(&https),
        "{status:?}"
    );

    // Without a client certificate the server refuses the connection.
    let refused = etcdctl(
        &binary,
        &endpoint,
        &[
            "--cacert",
            &ca,
            "--dial-timeout=2s",
            "--command-timeout=3s",
            "get",
            "foo",
        ],
        None,
    );
    assert!(!refused.success, "{refused:?}");
}
