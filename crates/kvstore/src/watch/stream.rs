//! One watch stream: its watchers, etcd's request rules (ids, filters,
//! cancel, progress) and the responses it owes, produced a budget at a time.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use etcdproto::etcdserverpb as pb;
use etcdproto::etcdserverpb::watch_create_request::FilterType;
use etcdproto::etcdserverpb::watch_request::RequestUnion;
use etcdproto::mvccpb::Event;
use prost::Message;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::KvError;
use crate::mvcc::{Change, Span};
use crate::state::Shared;

/// etcd's cancel reason for a `watch_id` already in use on the stream.
pub const CANCEL_REASON_DUPLICATE_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";
/// etcd's cancel reason for a range whose end is not after its key.
pub const CANCEL_REASON_EMPTY_RANGE: &str = "mvcc: watcher range is empty";

/// The `watch_id` of a response that belongs to no single watcher (a
/// requested progress notification, a refused create).
const NO_WATCH_ID: i64 = -1;

/// Most ring batches one round reads for a stream.
const MAX_VIEW_BATCHES: usize = 4096;

/// Bytes a response spends beyond its events (header, ids, flags).
const RESPONSE_OVERHEAD_BYTES: usize = 64;

/// One watcher of a stream.
#[derive(Debug, Clone)]
struct Watcher {
    /// Normalized: never empty (`"\0"` stands for an empty key).
    key: Vec<u8>,
    /// Empty: the key alone; `"\0"`: every key from `key`; else `[key, end)`.
    range_end: Vec<u8>,
    /// The next revision this watcher has to look at.
    next: i64,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
    progress_notify: bool,
    fragment: bool,
}

impl Watcher {
    fn span(&self) -> Span<'_> {
        Span::of(&self.key, &self.range_end)
    }

    fn wants(&self, change: &Change) -> bool {
        if change.is_delete() {
            if self.no_delete {
                return false;
            }
        } else if self.no_put {
            return false;
        }
        self.span().contains(&change.key)
    }
}

/// One client's watch stream (etcd's `Watch` RPC, seen from the store).
///
/// Feed it the client's requests with [`WatchStream::request`] and send
/// what [`WatchStream::next`] answers, in order; `next` waits while nothing
/// is owed. Responses carry only `header.revision`; the API fills the rest
/// of the header. Memory stays bounded: the stream queues about one
/// response budget (`max_response_bytes`) at a time and holds no event for
/// a watcher beyond it; a watcher left behind re-reads the keyspace's
/// history, or is cancelled with `compact_revision` if it was compacted.
pub struct WatchStream {
    shared: Arc<Shared>,
    head: watch::Receiver<i64>,
    watchers: BTreeMap<i64, Watcher>,
    next_auto_id: i64,
    /// Round-robin position: the watcher served last.
    cursor: i64,
    out: VecDeque<pb::WatchResponse>,
    /// A `progress_request` waits here until every watcher caught up.
    progress_requested: bool,
    progress_interval: Duration,
    next_progress: Instant,
    max_response_bytes: usize,
}

impl std::fmt::Debug for WatchStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchStream")
            .field("watchers", &self.watchers.len())
            .field("queued", &self.out.len())
            .finish_non_exhaustive()
    }
}

fn header(revision: i64) -> Option<pb::ResponseHeader> {
    Some(pb::ResponseHeader {
        revision,
        ..Default::default()
    })
}

impl WatchStream {
    pub(crate) fn new(shared: Arc<Shared>, max_response_bytes: usize) -> Self {
        let head = shared.watch.subscribe();
        let progress_interval =
            Duration::from_millis(shared.watch.config().progress_notify_interval_ms.max(1));
        WatchStream {
            shared,
            head,
            watchers: BTreeMap::new(),
            next_auto_id: 0,
            cursor: -1,
            out: VecDeque::new(),
            progress_requested: false,
            progress_interval,
            next_progress: Instant::now() + progress_interval,
            max_response_bytes: max_response_bytes.max(1),
        }
    }

    /// Number of watchers on the stream.
    pub fn watcher_count(&self) -> usize {
        self.watchers.len()
    }

    /// Encoded bytes of the responses queued and not yet taken by `next`.
    pub fn queued_bytes(&self) -> usize {
        self.out.iter().map(Message::encoded_len).sum()
    }

    /// Handles one client request: create, cancel or progress. Its answer
    /// (if any) is queued for [`WatchStream::next`].
    pub fn request(&mut self, request: pb::WatchRequest) {
        match request.request_union {
            Some(RequestUnion::CreateRequest(create)) => self.create(create),
            Some(RequestUnion::CancelRequest(cancel)) => self.cancel(cancel.watch_id),
            Some(RequestUnion::ProgressRequest(_)) => self.progress_requested = true,
            None => {}
        }
    }

    fn create(&mut self, create: pb::WatchCreateRequest) {
        let head = self.shared.watch.head();
        let mut key = create.key;
        if key.is_empty() {
            // etcd: "\0" is the smallest key.
            key = vec![0];
        }
        let range_end = create.range_end;
        if !range_end.is_empty() && range_end != [0] && key >= range_end {
            self.refuse(head, CANCEL_REASON_EMPTY_RANGE);
            return;
        }
        let id = if create.watch_id != 0 {
            if self.watchers.contains_key(&create.watch_id) {
                self.refuse(head, CANCEL_REASON_DUPLICATE_ID);
                return;
            }
            create.watch_id
        } else {
            while self.watchers.contains_key(&self.next_auto_id) {
                self.next_auto_id += 1;
            }
            let id = self.next_auto_id;
            self.next_auto_id += 1;
            id
        };
        let next = match create.start_revision {
            0 => head + 1,
            start => start.max(1),
        };
        let mut no_put = false;
        let mut no_delete = false;
        for filter in create.filters {
            match FilterType::try_from(filter) {
                Ok(FilterType::Noput) => no_put = true,
                Ok(FilterType::Nodelete) => no_delete = true,
                Err(_) => {}
            }
        }
        self.out.push_back(pb::WatchResponse {
            header: header(head),
            watch_id: id,
            created: true,
            ..Default::default()
        });
        let compact_revision = self.shared.watch.compact_revision();
        if next < compact_revision {
            self.out
                .push_back(compacted_response(id, head, compact_revision));
            return;
        }
        self.watchers.insert(
            id,
            Watcher {
                key,
                range_end,
                next,
                prev_kv: create.prev_kv,
                no_put,
                no_delete,
                progress_notify: create.progress_notify,
                fragment: create.fragment,
            },
        );
    }

    fn refuse(&mut self, head: i64, reason: &str) {
        self.out.push_back(pb::WatchResponse {
            header: header(head),
            watch_id: NO_WATCH_ID,
            created: true,
            canceled: true,
            cancel_reason: reason.to_string(),
            ..Default::default()
        });
    }

    fn cancel(&mut self, id: i64) {
        if self.watchers.remove(&id).is_some() {
            let head = self.shared.watch.head();
            self.out.push_back(pb::WatchResponse {
                header: header(head),
                watch_id: id,
                canceled: true,
                ..Default::default()
            });
        }
    }

    /// The next response owed to the client, waiting until there is one.
    ///
    /// Cancel-safe: dropping the future loses nothing (all work happens
    /// between its awaits), so it can race the client's next request in a
    /// `select!`.
    pub async fn next(&mut self) -> pb::WatchResponse {
        loop {
            if let Some(response) = self.out.pop_front() {
                return response;
            }
            let behind = self.fill();
            if !self.out.is_empty() {
                continue;
            }
            if behind {
                tokio::task::yield_now().await;
                continue;
            }
            let notify = self.watchers.values().any(|w| w.progress_notify);
            tokio::select! {
                changed = self.head.changed() => {
                    if changed.is_err() {
                        // The hub lives as long as the store; never expected.
                        std::future::pending::<()>().await;
                    }
                }
                () = tokio::time::sleep_until(self.next_progress), if notify => {
                    self.notify_progress();
                }
            }
        }
    }

    /// The next response owed now, without waiting: `None` once every
    /// watcher has caught up with the applied log and nothing is queued.
    /// (Periodic progress notifications come only through `next`.)
    pub fn try_next(&mut self) -> Option<pb::WatchResponse> {
        loop {
            if let Some(response) = self.out.pop_front() {
                return Some(response);
            }
            let behind = self.fill();
            if self.out.is_empty() && !behind {
                return None;
            }
        }
    }

    /// The periodic progress notification: every caught-up watcher created
    /// with `progress_notify` learns the current revision.
    fn notify_progress(&mut self) {
        self.next_progress = Instant::now() + self.progress_interval;
        let head = self.shared.watch.head();
        for (id, watcher) in &self.watchers {
            if watcher.progress_notify && watcher.next > head {
                self.out.push_back(pb::WatchResponse {
                    header: header(head),
                    watch_id: *id,
                    ..Default::default()
                });
            }
        }
    }

    /// One round of work: queues events for watchers that are behind (a
    /// budget's worth) and a requested progress notification if every
    /// watcher caught up. Answers whether a watcher is still behind.
    fn fill(&mut self) -> bool {
        self.head.borrow_and_update();
        let compact_revision = self.shared.watch.compact_revision();
        let hub = &self.shared.watch;
        let head = hub.head();
        let from = self
            .watchers
            .values()
            .map(|watcher| watcher.next)
            .filter(|next| *next <= head)
            .min();
        let view = match from {
            Some(from) => hub.view(from, MAX_VIEW_BATCHES, self.max_response_bytes * 4),
            None => super::RingView {
                floor: head,
                head,
                batches: Vec::new(),
            },
        };
        let ids: Vec<i64> = self
            .watchers
            .range(self.cursor + 1..)
            .chain(self.watchers.range(..=self.cursor))
            .map(|(id, _)| *id)
            .collect();
        let mut queued_bytes = 0usize;
        let mut behind = false;
        for id in ids {
            if queued_bytes >= self.max_response_bytes {
                behind = true;
                break;
            }
            let Some(watcher) = self.watchers.get(&id) else {
                continue;
            };
            if watcher.next > view.head {
                continue;
            }
            self.cursor = id;
            if watcher.next <= view.floor {
                queued_bytes += self.catch_up(id);
            } else {
                queued_bytes += self.serve_from_ring(id, &view, compact_revision);
            }
            if self
                .watchers
                .get(&id)
                .is_some_and(|watcher| watcher.next <= view.head)
            {
                behind = true;
            }
        }
        // Every watcher has seen every revision up to `view.head` (or
        // waits for a later start): the answer cannot overtake an event.
        if self.progress_requested && !behind {
            self.progress_requested = false;
            self.out.push_back(pb::WatchResponse {
                header: header(view.head),
                watch_id: NO_WATCH_ID,
                ..Default::default()
            });
        }
        behind
    }

    /// Events for watcher `id` from the ring's batches; answers the bytes
    /// queued.
    fn serve_from_ring(&mut self, id: i64, view: &super::RingView, compact_revision: i64) -> usize {
        let Some(watcher) = self.watchers.get_mut(&id) else {
            return 0;
        };
        let mut events = Vec::new();
        let mut bytes = 0usize;
        let mut last = watcher.next - 1;
        // The view's batches are consecutive revisions: start at `next`'s.
        let skip = view.batches.first().map_or(0, |(first, _)| {
            usize::try_from(watcher.next - first).unwrap_or(0)
        });
        for (revision, changes) in view.batches.iter().skip(skip) {
            if *revision != last + 1 || bytes >= self.max_response_bytes {
                break;
            }
            for change in changes.iter() {
                if watcher.wants(change) {
                    let event = event_of(change, watcher.prev_kv, compact_revision);
                    bytes += event.encoded_len();
                    events.push(event);
                }
            }
            last = *revision;
        }
        watcher.next = last + 1;
        let watcher = watcher.clone();
        self.emit(id, &watcher, events, last)
    }

    /// Events for watcher `id` from the keyspace's history (it is behind
    /// the ring), or its compacted cancel; answers the bytes queued.
    fn catch_up(&mut self, id: i64) -> usize {
        let keyspace = self.shared.keyspace();
        let Some(watcher) = self.watchers.get_mut(&id) else {
            return 0;
        };
        let compact_revision = keyspace.compact_revision();
        if watcher.next < compact_revision {
            self.watchers.remove(&id);
            let response = compacted_response(id, keyspace.revision(), compact_revision);
            let bytes = response.encoded_len();
            self.out.push_back(response);
            return bytes;
        }
        let (changes, covered) = keyspace.changes_in(
            watcher.span(),
            watcher.next - 1,
            keyspace.revision(),
            self.max_response_bytes,
        );
        let events: Vec<Event> = changes
            .iter()
            .filter(|change| watcher.wants(change))
            .map(|change| event_of(change, watcher.prev_kv, compact_revision))
            .collect();
        watcher.next = covered + 1;
        let watcher = watcher.clone();
        self.emit(id, &watcher, events, covered)
    }

    /// Queues `events` for watcher `id` as one response at `revision`, or as
    /// fragments when the watcher asked for them and they exceed the
    /// response budget. Answers the bytes queued.
    fn emit(&mut self, id: i64, watcher: &Watcher, events: Vec<Event>, revision: i64) -> usize {
        if events.is_empty() {
            return 0;
        }
        let total: usize = events.iter().map(framed_len).sum();
        if !watcher.fragment || total + RESPONSE_OVERHEAD_BYTES <= self.max_response_bytes {
            self.out.push_back(pb::WatchResponse {
                header: header(revision),
                watch_id: id,
                events,
                ..Default::default()
            });
            return total;
        }
        let mut fragments: Vec<Vec<Event>> = Vec::new();
        let mut current: Vec<Event> = Vec::new();
        let mut current_bytes = RESPONSE_OVERHEAD_BYTES;
        for event in events {
            let size = framed_len(&event);
            if !current.is_empty() && current_bytes + size > self.max_response_bytes {
                fragments.push(std::mem::take(&mut current));
                current_bytes = RESPONSE_OVERHEAD_BYTES;
            }
            current_bytes += size;
            current.push(event);
        }
        fragments.push(current);
        let count = fragments.len();
        for (i, events) in fragments.into_iter().enumerate() {
            self.out.push_back(pb::WatchResponse {
                header: header(revision),
                watch_id: id,
                fragment: i + 1 < count,
                events,
                ..Default::default()
            });
        }
        total
    }
}

/// Bytes an event takes inside a response: its encoding plus the field's
/// tag and length prefix (at most 1 + 5 bytes below 4 GiB; 8 is generous).
fn framed_len(event: &Event) -> usize {
    event.encoded_len() + 8
}

/// etcd's answer to a watcher that needs a compacted revision.
fn compacted_response(id: i64, revision: i64, compact_revision: i64) -> pb::WatchResponse {
    pb::WatchResponse {
        header: header(revision),
        watch_id: id,
        canceled: true,
        compact_revision,
        cancel_reason: KvError::Compacted.to_string(),
        ..Default::default()
    }
}

/// The event of `change`; its `prev_kv` when asked for, known, and not
/// compacted (read at `revision - 1`, as etcd does; silently left out).
fn event_of(change: &Change, prev_kv: bool, compact_revision: i64) -> Event {
    let readable = change.revision.main > compact_revision;
    change.event(prev_kv && readable)
}
