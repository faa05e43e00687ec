//! Per-key linearizability of a register with unique write values: the
//! Wing–Gong search with Lowe's memoization, as Knossos and Porcupine do.
//!
//! Each key is an independent register (P-compositionality), so each is
//! checked alone. The model: the state is the key's value (`None` when
//! absent) and its `mod_revision`; a PUT always succeeds and sets the
//! value; a GET must read the value. The compare-and-swap register's
//! operations use the revision too: a gRPC read must see value and
//! `mod_revision`; a CAS that swapped is legal only while the
//! `mod_revision` is the one it compared against, and sets value and the
//! revision the server answered; a refused CAS is a read (its failure
//! branch returns the key) that must also see a different `mod_revision`.
//! The raftexample routes do not report revisions: their keys keep 0.
//!
//! Outcomes: an acknowledged operation must take effect between its
//! invocation and its completion; a failed PUT never takes effect and is
//! dropped; an unknown PUT may take effect at any time after its
//! invocation, or never. Because write values are unique, an unknown PUT
//! whose value no GET ever read can be dropped as well: if it took effect,
//! nobody saw it before the next write, so removing it keeps every
//! linearization valid. That keeps the search small. The same holds for
//! an unknown CAS: every later operation on the register (a read, a
//! refused CAS returning the key, a CAS that compared against its
//! revision, which it could only have read) would have seen its value.
//! An unknown CAS whose value was seen took effect at the revision it was
//! seen at.
//!
//! The search is bounded by a step budget; a search that exhausts it
//! answers [`KeyVerdict::Unknown`], never a pass.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::history::{CasResult, Op, OpKind, Outcome};

/// The verdict for one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum KeyVerdict {
    /// Some linearization explains every operation.
    Linearizable,
    /// No linearization exists. `culprit` indexes the slice given to
    /// [`check_key`]: the operation (by invocation order) whose addition
    /// makes the shortest non-linearizable prefix.
    NotLinearizable {
        /// Index of the culprit operation in the checked slice.
        culprit: usize,
    },
    /// The search ran out of its step budget.
    Unknown {
        /// Steps taken before giving up.
        steps: u64,
    },
}

/// The verdict for a whole history: one per key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryVerdict {
    /// Verdict per key.
    pub keys: BTreeMap<String, KeyVerdict>,
}

impl HistoryVerdict {
    /// Every key linearizable.
    pub fn is_linearizable(&self) -> bool {
        self.keys.values().all(|v| *v == KeyVerdict::Linearizable)
    }

    /// The first key found not linearizable, with its culprit index.
    pub fn first_violation(&self) -> Option<(&str, usize)> {
        self.keys.iter().find_map(|(key, verdict)| match verdict {
            KeyVerdict::NotLinearizable { culprit } => Some((key.as_str(), *culprit)),
            _ => None,
        })
    }

    /// Any key whose search gave up.
    pub fn has_unknown(&self) -> bool {
        self.keys
            .values()
            .any(|v| matches!(v, KeyVerdict::Unknown { .. }))
    }
}

/// Checks every key of `ops` separately, each with `max_steps`.
pub fn check_history(ops: &[Op], max_steps: u64) -> HistoryVerdict {
    let mut by_key: BTreeMap<&str, Vec<Op>> = BTreeMap::new();
    for op in ops {
        by_key.entry(op.key.as_str()).or_default().push(op.clone());
    }
    let keys = by_key
        .into_iter()
        .map(|(key, ops)| (key.to_string(), check_key(&ops, max_steps)))
        .collect();
    HistoryVerdict { keys }
}

/// Checks the operations of one key. On a violation, finds the shortest
/// failing prefix (operations in invocation order) by bisection: the
/// culprit is its last operation.
pub fn check_key(ops: &[Op], max_steps: u64) -> KeyVerdict {
    let mut order: Vec<usize> = (0..ops.len()).collect();
    order.sort_by_key(|&i| (ops[i].invoke_us, i));
    match search(ops, &order, max_steps) {
        Search::Linearizable => return KeyVerdict::Linearizable,
        Search::GaveUp(steps) => return KeyVerdict::Unknown { steps },
        Search::NotLinearizable => {}
    }
    // Linearizability is prefix-closed, so "prefix of length n fails" is
    // monotone in n: bisect for the smallest failing n.
    let (mut passing, mut failing) = (0, order.len());
    while failing - passing > 1 {
        let middle = passing + (failing - passing) / 2;
        match search(ops, &order[..middle], max_steps) {
            Search::NotLinearizable => failing = middle,
            // A prefix we cannot decide is treated as passing: the culprit
            // then lies at or after it, which is still a failing prefix.
            Search::Linearizable | Search::GaveUp(_) => passing = middle,
        }
    }
    KeyVerdict::NotLinearizable {
        culprit: order[failing - 1],
    }
}

enum Search {
    Linearizable,
    NotLinearizable,
    GaveUp(u64),
}

/// The register's state as the search sees it: the interned value
/// (`None`: absent) and the key's `mod_revision` (always 0 for the
/// raftexample routes' PUT/GET, which do not report it).
type State = (Option<u32>, i64);

/// What an operation does to the register.
#[derive(Clone, Copy)]
enum Effect {
    /// A PUT: sets the state.
    Set(State),
    /// A CAS that swapped (or an unknown one that did): legal only while
    /// the state's `mod_revision` is `expect_mod`; then sets the state.
    SetIf { expect_mod: i64, new: State },
    /// A read: must see exactly the state.
    Observe(State),
    /// A refused CAS: must see exactly the state, whose `mod_revision`
    /// must differ from `expect_mod`.
    Refuse { expect_mod: i64, seen: State },
}

/// One operation as the search sees it: values interned as numbers.
#[derive(Clone, Copy)]
struct ModelOp {
    effect: Effect,
    invoke_us: u64,
    /// `None` for an unknown outcome: completes at infinity.
    complete_us: Option<u64>,
}

/// The values `op` reports having seen, with the `mod_revision` seen.
fn observed(op: &Op) -> Option<(&str, i64)> {
    match &op.kind {
        OpKind::Get { value: Some(v) } => Some((v.as_str(), 0)),
        OpKind::Read {
            value: Some(v),
            mod_revision,
        } => Some((v.as_str(), *mod_revision)),
        OpKind::Cas {
            result:
                Some(CasResult::Refused {
                    value: Some(v),
                    mod_revision,
                }),
            ..
        } => Some((v.as_str(), *mod_revision)),
        _ => None,
    }
}

/// Interns values and drops the operations that cannot matter.
fn model_ops(ops: &[Op], subset: &[usize]) -> Vec<ModelOp> {
    // The first revision each value was seen at: an unknown CAS that took
    // effect wrote its value at that revision.
    let mut read_values: HashMap<&str, i64> = HashMap::new();
    for &i in subset {
        if let Some((value, revision)) = observed(&ops[i]) {
            read_values.entry(value).or_insert(revision);
        }
    }
    let mut ids: HashMap<&str, u32> = HashMap::new();
    let mut model = Vec::with_capacity(subset.len());
    for &i in subset {
        let op = &ops[i];
        let effect = match (&op.kind, op.outcome) {
            (OpKind::Put { .. } | OpKind::Cas { .. }, Outcome::Fail) => continue,
            (OpKind::Put { value } | OpKind::Cas { value, .. }, Outcome::Unknown)
                if !read_values.contains_key(value.as_str()) =>
            {
                continue
            }
            (OpKind::Put { value }, _) => Effect::Set((Some(intern(value, &mut ids)), 0)),
            (OpKind::Get { value }, _) => {
                Effect::Observe((value.as_deref().map(|v| intern(v, &mut ids)), 0))
            }
            (
                OpKind::Read {
                    value,
                    mod_revision,
                },
                _,
            ) => Effect::Observe((value.as_deref().map(|v| intern(v, &mut ids)), *mod_revision)),
            (
                OpKind::Cas {
                    expect_mod_revision,
                    value,
                    result,
                },
                _,
            ) => match result {
                Some(CasResult::Swapped { revision }) => Effect::SetIf {
                    expect_mod: *expect_mod_revision,
                    new: (Some(intern(value, &mut ids)), *revision),
                },
                Some(CasResult::Refused {
                    value: seen,
                    mod_revision,
                }) => Effect::Refuse {
                    expect_mod: *expect_mod_revision,
                    seen: (seen.as_deref().map(|v| intern(v, &mut ids)), *mod_revision),
                },
                // Unknown, and its value was seen: it took effect at the
                // revision it was seen at.
                None => Effect::SetIf {
                    expect_mod: *expect_mod_revision,
                    new: (Some(intern(value, &mut ids)), read_values[value.as_str()]),
                },
            },
        };
        let complete_us = (op.outcome == Outcome::Ok).then_some(op.complete_us);
        model.push(ModelOp {
            effect,
            invoke_us: op.invoke_us,
            complete_us,
        });
    }
    model
}

/// An entry of the event list: the call or the return of an operation.
#[derive(Clone, Copy)]
struct Event {
    op: usize,
    is_call: bool,
}

/// The event list as a doubly linked list over a vector, so operations can
/// be lifted out and put back in O(1) (Lowe's implementation).
struct EventList {
    events: Vec<Event>,
    /// `next[i]`/`prev[i]` for event i; index `events.len()` is the head
    /// sentinel and also marks the end.
    next: Vec<usize>,
    prev: Vec<usize>,
    call_of: Vec<usize>,
    return_of: Vec<Option<usize>>,
}

impl EventList {
    fn new(ops: &[ModelOp]) -> EventList {
        // Sort key: time, then calls before returns at equal times (equal
        // times count as concurrent: the lenient reading).
        let mut keyed: Vec<(u64, u8, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            keyed.push((op.invoke_us, 0, i));
            if let Some(t) = op.complete_us {
                keyed.push((t, 1, i));
            }
        }
        keyed.sort_unstable();
        let events: Vec<Event> = keyed
            .iter()
            .map(|&(_, kind, op)| Event {
                op,
                is_call: kind == 0,
            })
            .collect();
        let head = events.len();
        let mut list = EventList {
            next: (0..=head)
                .map(|i| if i == head { 0 } else { i + 1 })
                .collect(),
            prev: (0..=head)
                .map(|i| if i == 0 { head } else { i - 1 })
                .collect(),
            call_of: vec![0; ops.len()],
            return_of: vec![None; ops.len()],
            events,
        };
        if head == 0 {
            list.next[head] = head;
        }
        for (i, event) in list.events.iter().enumerate() {
            if event.is_call {
                list.call_of[event.op] = i;
            } else {
                list.return_of[event.op] = Some(i);
            }
        }
        list
    }

    fn head(&self) -> usize {
        self.events.len()
    }

    fn unlink(&mut self, i: usize) {
        let (p, n) = (self.prev[i], self.next[i]);
        self.next[p] = n;
        self.prev[n] = p;
    }

    fn relink(&mut self, i: usize) {
        let (p, n) = (self.prev[i], self.next[i]);
        self.next[p] = i;
        self.prev[n] = i;
    }

    fn lift(&mut self, op: usize) {
        self.unlink(self.call_of[op]);
        if let Some(r) = self.return_of[op] {
            self.unlink(r);
        }
    }

    /// Exact reverse of [`EventList::lift`]; lifts are undone LIFO, so the
    /// neighbours an event remembers are still its neighbours.
    fn unlift(&mut self, op: usize) {
        if let Some(r) = self.return_of[op] {
            self.relink(r);
        }
        self.relink(self.call_of[op]);
    }
}

/// The register model: applies `op` to `state`, or `None` if illegal.
fn step(state: State, op: &ModelOp) -> Option<State> {
    match op.effect {
        Effect::Set(new) => Some(new),
        Effect::SetIf { expect_mod, new } => (state.1 == expect_mod).then_some(new),
        Effect::Observe(seen) => (seen == state).then_some(state),
        Effect::Refuse { expect_mod, seen } => {
            (seen == state && state.1 != expect_mod).then_some(state)
        }
    }
}

/// Wing–Gong–Lowe search over the operations `subset` of `ops`.
fn search(ops: &[Op], subset: &[usize], max_steps: u64) -> Search {
    let model = model_ops(ops, subset);
    let mut list = EventList::new(&model);
    let words = model.len().div_ceil(64).max(1);
    let mut linearized = vec![0u64; words];
    let mut seen: HashSet<(Vec<u64>, State)> = HashSet::new();
    let mut stack: Vec<(usize, State)> = Vec::new();
    let mut state: State = (None, 0);
    let head = list.head();
    let mut cursor = list.next[head];
    let mut steps = 0u64;
    loop {
        steps += 1;
        if steps > max_steps {
            return Search::GaveUp(steps);
        }
        // Past the last event: only calls of unknown operations were left
        // (a skipped acknowledged call is always followed by its return),
        // and those may simply never take effect.
        if cursor == head {
            return Search::Linearizable;
        }
        let event = list.events[cursor];
        if event.is_call {
            let op = event.op;
            if let Some(new_state) = step(state, &model[op]) {
                linearized[op / 64] |= 1 << (op % 64);
                if seen.insert((linearized.clone(), new_state)) {
                    stack.push((op, state));
                    state = new_state;
                    list.lift(op);
                    cursor = list.next[head];
                    continue;
                }
                linearized[op / 64] &= !(1 << (op % 64));
            }
            cursor = list.next[cursor];
        } else {
            // An operation returned before we could linearize it: undo the
            // most recent choice and try the next candidate after it.
            let Some((op, previous)) = stack.pop() else {
                return Search::NotLinearizable;
            };
            state = previous;
            linearized[op / 64] &= !(1 << (op % 64));
            list.unlift(op);
            cursor = list.next[list.call_of[op]];
        }
    }
}

/// The number standing for `value` (numbers given in order of first use).
fn intern<'a>(value: &'a str, ids: &mut HashMap<&'a str, u32>) -> u32 {
    let next = ids.len() as u32;
    *ids.entry(value).or_insert(next)
}

/// The durability check on keys written once each: `reads` holds, per
/// node, every key under `prefix` it served after healing (key, value).
/// Every acknowledged PUT of such a key must be there on every node with
/// its value; every key there must have been written by a PUT that was
/// acknowledged or whose outcome is unknown, with that value. Returns how
/// many unique keys were acknowledged, or the violations in words (the
/// first few, and how many).
pub fn check_unique_keys(
    ops: &[Op],
    prefix: &str,
    reads: &[(u64, Vec<(String, String)>)],
) -> Result<u64, String> {
    let mut written: BTreeMap<&str, (&str, Outcome)> = BTreeMap::new();
    let mut problems = Vec::new();
    for op in ops.iter().filter(|op| op.key.starts_with(prefix)) {
        if let OpKind::Put { value } = &op.kind {
            let previous = written.insert(op.key.as_str(), (value.as_str(), op.outcome));
            if previous.is_some() {
                // Not a server fault: the history is not one of unique keys.
                problems.push(format!(
                    "{} is written more than once in the history",
                    op.key
                ));
            }
        }
    }
    let acked = written
        .values()
        .filter(|(_, outcome)| *outcome == Outcome::Ok)
        .count() as u64;
    for (node, keys) in reads {
        let served: BTreeMap<&str, &str> = keys
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .collect();
        for (key, (value, outcome)) in &written {
            if *outcome == Outcome::Ok && served.get(key) != Some(value) {
                problems.push(format!(
                    "node {node} lost acknowledged {key} = {value} (serves {})",
                    served.get(key).copied().unwrap_or("nothing")
                ));
            }
        }
        for (key, value) in &served {
            match written.get(key) {
                Some((written_value, Outcome::Ok | Outcome::Unknown)) if written_value == value => {
                }
                Some((_, Outcome::Fail)) => {
                    problems.push(format!("node {node} serves {key}, whose PUT was refused"))
                }
                _ => problems.push(format!(
                    "node {node} serves {key} = {value}, which no PUT wrote"
                )),
            }
        }
    }
    if problems.is_empty() {
        return Ok(acked);
    }
    let count = problems.len();
    problems.truncate(5);
    Err(format!(
        "{count} unique-key violation(s) (of {acked} acknowledged keys): {}",
        problems.join("; ")
    ))
}
