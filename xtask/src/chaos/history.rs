//! What the clients did: one [`Op`] per request, with its invoke and
//! completion times and its outcome.

use serde::{Deserialize, Serialize};

/// The outcome of one operation, as a client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Acknowledged (PUT 204, GET 200 or 404).
    Ok,
    /// Definitely not applied (a 4xx answer to a PUT).
    Fail,
    /// May or may not take effect, at any time after its invocation (a
    /// 503, a timeout, a connection error). The checker treats its
    /// completion time as infinite.
    Unknown,
}

/// What an operation did.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum OpKind {
    /// `PUT <key>` with a value unique across the whole history.
    Put {
        /// The value written.
        value: String,
    },
    /// A linearizable `GET <key>`; `value` is `None` for a 404. Only
    /// successful reads are recorded (a failed read has no effect).
    Get {
        /// The value read, or `None` if the key was absent.
        value: Option<String>,
    },
}

/// One operation of the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// The client (worker) that issued it, e.g. `c3`, or `final` for the
    /// durability reads after healing.
    pub client: String,
    /// The node the request was sent to.
    pub node: u64,
    /// The key (the URL path, e.g. `/k1`).
    pub key: String,
    /// What it did.
    pub kind: OpKind,
    /// How it ended.
    pub outcome: Outcome,
    /// When the request was sent, in microseconds since the run started.
    pub invoke_us: u64,
    /// When the client got an answer or gave up, in microseconds since the
    /// run started. For an [`Outcome::Unknown`] operation the checker
    /// ignores it: the operation may take effect later.
    pub complete_us: u64,
}

impl Op {
    /// A PUT.
    pub fn put(client: &str, key: &str, value: &str, outcome: Outcome, times_us: (u64, u64)) -> Op {
        Op::new(
            client,
            key,
            OpKind::Put {
                value: value.into(),
            },
            outcome,
            times_us,
        )
    }

    /// A successful GET that read `value` (`None`: key absent).
    pub fn get(client: &str, key: &str, value: Option<&str>, times_us: (u64, u64)) -> Op {
        let kind = OpKind::Get {
            value: value.map(str::to_string),
        };
        Op::new(client, key, kind, Outcome::Ok, times_us)
    }

    fn new(client: &str, key: &str, kind: OpKind, outcome: Outcome, times_us: (u64, u64)) -> Op {
        assert!(
            times_us.0 <= times_us.1,
            "an operation completes after it starts"
        );
        Op {
            client: client.into(),
            node: 0,
            key: key.into(),
            kind,
            outcome,
            invoke_us: times_us.0,
            complete_us: times_us.1,
        }
    }

    /// Whether this is a write.
    pub fn is_put(&self) -> bool {
        matches!(self.kind, OpKind::Put { .. })
    }
}

/// Operations counted by kind and outcome, for the summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpCounts {
    /// Acknowledged PUTs.
    pub put_ok: u64,
    /// PUTs answered 4xx.
    pub put_fail: u64,
    /// PUTs with an unknown outcome.
    pub put_unknown: u64,
    /// Successful GETs (200 or 404).
    pub get_ok: u64,
}

impl OpCounts {
    /// Counts `ops`.
    pub fn of(ops: &[Op]) -> OpCounts {
        let mut counts = OpCounts::default();
        for op in ops {
            match (&op.kind, op.outcome) {
                (OpKind::Put { .. }, Outcome::Ok) => counts.put_ok += 1,
                (OpKind::Put { .. }, Outcome::Fail) => counts.put_fail += 1,
                (OpKind::Put { .. }, Outcome::Unknown) => counts.put_unknown += 1,
                (OpKind::Get { .. }, _) => counts.get_ok += 1,
            }
        }
        counts
    }
}
