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
    /// A linearizable gRPC `Range` of one key of the compare-and-swap
    /// register: its value and `mod_revision` (0 when absent). Only
    /// successful reads are recorded.
    Read {
        /// The value read, or `None` if the key was absent.
        value: Option<String>,
        /// The key's `mod_revision` (0 when absent).
        mod_revision: i64,
    },
    /// A gRPC `Txn` on the register: if the key's `mod_revision` equals
    /// `expect_mod_revision`, `Put(key, value)` (a value unique in the
    /// whole history), else `Range(key)`.
    Cas {
        /// The `mod_revision` the client read before (0: absent).
        expect_mod_revision: i64,
        /// The value written if the compare holds.
        value: String,
        /// What the server answered; `None` unless the outcome is ok.
        result: Option<CasResult>,
    },
}

/// The answer to an acknowledged [`OpKind::Cas`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "cas", rename_all = "snake_case")]
pub enum CasResult {
    /// `succeeded`: the write happened at `revision` (the response
    /// header's revision, the key's new `mod_revision`).
    Swapped {
        /// The revision of the write.
        revision: i64,
    },
    /// `succeeded` false: the failure branch's Range saw this value and
    /// `mod_revision` (a failed CAS is a read).
    Refused {
        /// The value seen, `None` if the key was absent.
        value: Option<String>,
        /// The `mod_revision` seen (0 when absent).
        mod_revision: i64,
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

    /// A successful gRPC read of the register: `value` (`None`: absent)
    /// at `mod_revision`.
    pub fn read(
        client: &str,
        key: &str,
        value: Option<&str>,
        mod_revision: i64,
        times_us: (u64, u64),
    ) -> Op {
        let kind = OpKind::Read {
            value: value.map(str::to_string),
            mod_revision,
        };
        Op::new(client, key, kind, Outcome::Ok, times_us)
    }

    /// A compare-and-swap of `key` from `expect_mod_revision` to `value`;
    /// `result` must be `Some` exactly when `outcome` is ok.
    pub fn cas(
        client: &str,
        key: &str,
        expect_mod_revision: i64,
        value: &str,
        result: Option<CasResult>,
        outcome: Outcome,
        times_us: (u64, u64),
    ) -> Op {
        assert_eq!(
            result.is_some(),
            outcome == Outcome::Ok,
            "only an acknowledged CAS has a result"
        );
        let kind = OpKind::Cas {
            expect_mod_revision,
            value: value.into(),
            result,
        };
        Op::new(client, key, kind, outcome, times_us)
    }

    /// Whether this is a write (a PUT or a CAS).
    pub fn is_put(&self) -> bool {
        matches!(self.kind, OpKind::Put { .. } | OpKind::Cas { .. })
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
    /// Compare-and-swaps that swapped.
    #[serde(default)]
    pub cas_swapped: u64,
    /// Compare-and-swaps refused (the compare failed).
    #[serde(default)]
    pub cas_refused: u64,
    /// Compare-and-swaps with an unknown or failed outcome.
    #[serde(default)]
    pub cas_unknown: u64,
    /// Successful gRPC reads of the register.
    #[serde(default)]
    pub read_ok: u64,
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
                (OpKind::Read { .. }, _) => counts.read_ok += 1,
                (
                    OpKind::Cas {
                        result: Some(CasResult::Swapped { .. }),
                        ..
                    },
                    _,
                ) => counts.cas_swapped += 1,
                (
                    OpKind::Cas {
                        result: Some(CasResult::Refused { .. }),
                        ..
                    },
                    _,
                ) => counts.cas_refused += 1,
                (OpKind::Cas { result: None, .. }, _) => counts.cas_unknown += 1,
            }
        }
        counts
    }
}
