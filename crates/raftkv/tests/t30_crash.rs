//! Crashes under load: no acknowledged write is ever lost.

mod common;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use common::{Cluster, FAST};
use reqwest::StatusCode;

/// Three nodes under concurrent writes; one is killed with SIGKILL and
/// restarted; afterwards every acknowledged write is readable on every node.
#[test]
fn sigkill_under_load_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start(3, FAST);
    cluster.leader();
    let acked: Mutex<BTreeMap<String, String>> = Mutex::new(BTreeMap::new());
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        for worker in 0..6u64 {
            let (cluster, acked, stop) = (&cluster, &acked, &stop);
            scope.spawn(move || {
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) && i < 2000 {
                    let key = format!("/w{worker}-{i}");
                    let value = format!("v{i}");
                    let node = 1 + (worker + i) % 3;
                    if let Ok(StatusCode::NO_CONTENT) = cluster.put(node, &key, &value) {
                        acked.lock().unwrap().insert(key, value);
                    }
                    i += 1;
                }
            });
        }
        std::thread::sleep(Duration::from_millis(1500));
        // Kill the leader half the time: the worst case for in-flight writes.
        let victim = cluster.leader();
        let pid = cluster.pid(victim).unwrap();
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
        std::thread::sleep(Duration::from_millis(1500));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    let victim = cluster
        .exited()
        .first()
        .map(|(id, _)| *id)
        .expect("the killed node is dead");
    cluster.spawn(victim, false);
    cluster.leader();
    let acked = acked.into_inner().unwrap();
    assert!(
        acked.len() > 50,
        "too few writes acknowledged: {}",
        acked.len()
    );
    for id in 1..=3 {
        for (key, value) in &acked {
            assert_eq!(
                cluster.get_ok(id, key).as_deref(),
                Some(value.as_str()),
                "node {id} lost acknowledged {key}"
            );
        }
    }
}
