//! Per-key linearizability of a register with unique write values: the
//! Wing–Gong search with Lowe's memoization, as Knossos and Porcupine do.
//!
//! Each key is an independent register (P-compositionality), so each is
//! checked alone. The model: the state is the key's value (`None` when
//! absent); a PUT always succeeds and sets it; a GET must read the state.
//!
//! Outcomes: an acknowledged operation must take effect between its
//! invocation and its completion; a failed PUT never takes effect and is
//! dropped; an unknown PUT may take effect at any time after its
//! invocation, or never. Because write values are unique, an unknown PUT
//! whose value no GET ever read can be dropped as well: if it took effect,
//! nobody saw it before the next write, so removing it keeps every
//! linearization valid. That keeps the search small.
//!
//! The search is bounded by a step budget; a search that exhausts it
//! answers [`KeyVerdict::Unknown`], never a pass.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::history::{Op, OpKind, Outcome};

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

/// One operation as the search sees it: values interned as numbers.
#[derive(Clone, Copy)]
struct ModelOp {
    /// `Some(v)` for a PUT of value v.
    write: Option<u32>,
    /// For a GET: the value read (`None` = absent).
    read: Option<u32>,
    invoke_us: u64,
    /// `None` for an unknown outcome: completes at infinity.
    complete_us: Option<u64>,
}

/// Interns values and drops the operations that cannot matter.
fn model_ops(ops: &[Op], subset: &[usize]) -> Vec<ModelOp> {
    let read_values: HashSet<&str> = subset
        .iter()
        .filter_map(|&i| match &ops[i].kind {
            OpKind::Get { value: Some(v) } => Some(v.as_str()),
            _ => None,
        })
        .collect();
    let mut ids: HashMap<&str, u32> = HashMap::new();
    let mut model = Vec::with_capacity(subset.len());
    for &i in subset {
        let op = &ops[i];
        let (write, read) = match (&op.kind, op.outcome) {
            (OpKind::Put { .. }, Outcome::Fail) => continue,
            (OpKind::Put { value }, Outcome::Unknown) if !read_values.contains(value.as_str()) => {
                continue
            }
            (OpKind::Put { value }, _) => (Some(intern(value, &mut ids)), None),
            (OpKind::Get { value }, _) => (None, value.as_deref().map(|v| intern(v, &mut ids))),
        };
        let complete_us = (op.outcome == Outcome::Ok).then_some(op.complete_us);
        model.push(ModelOp {
            write,
            read,
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
fn step(state: Option<u32>, op: &ModelOp) -> Option<Option<u32>> {
    match op.write {
        Some(value) => Some(Some(value)),
        None => (op.read == state).then_some(state),
    }
}

/// Wing–Gong–Lowe search over the operations `subset` of `ops`.
fn search(ops: &[Op], subset: &[usize], max_steps: u64) -> Search {
    let model = model_ops(ops, subset);
    let mut list = EventList::new(&model);
    let words = model.len().div_ceil(64).max(1);
    let mut linearized = vec![0u64; words];
    let mut seen: HashSet<(Vec<u64>, Option<u32>)> = HashSet::new();
    let mut stack: Vec<(usize, Option<u32>)> = Vec::new();
    let mut state: Option<u32> = None;
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
