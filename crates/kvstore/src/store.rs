//! The request side: etcd's KV and Maintenance requests on [`KvStore`], and
//! raftexample's `put_value` / `get` on the same keyspace.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use raftnode::{Consensus, Role};
use tokio::sync::Semaphore;

use etcdproto::etcdserverpb as pb;

use crate::command::{self, Op, RequestId};
use crate::error::KvError;
use crate::lessor::{self, LeaseClock, Lessor, MonotonicClock, Renewal};
use crate::mvcc::{self, Keyspace, KeyspaceStatus};
use crate::state::{LeaseChange, Response, Shared};
use crate::timer::{self, RequestTimer};
use crate::KvConfig;

/// How a `get` reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReadConsistency {
    /// Reflects every write acknowledged before the read began: waits for a
    /// ReadIndex barrier, then reads the local map.
    #[default]
    Linearizable,
    /// Reads the local map at once; may miss recent writes (stale reads).
    Serializable,
}

/// The store before it knows its [`Consensus`]: see [`crate::new`].
#[derive(Debug)]
pub struct Unattached {
    config: KvConfig,
    shared: Arc<Shared>,
    lease_clock: Arc<dyn LeaseClock>,
    timer: Option<Arc<dyn RequestTimer>>,
}

impl std::fmt::Debug for dyn LeaseClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LeaseClock(now {:?})", self.now())
    }
}

impl Unattached {
    pub(crate) fn new(config: KvConfig, shared: Arc<Shared>) -> Self {
        Unattached {
            config,
            shared,
            lease_clock: Arc::new(MonotonicClock::new()),
            timer: None,
        }
    }

    /// Replaces the timer that bounds request waits (production: none,
    /// tokio's timer; a deterministic simulation: its own clock).
    pub fn with_timer(mut self, timer: Arc<dyn RequestTimer>) -> Self {
        self.timer = Some(timer);
        self
    }

    /// Replaces the lease clock (production: [`MonotonicClock`]; tests:
    /// [`crate::ManualClock`]).
    pub fn with_lease_clock(mut self, clock: Arc<dyn LeaseClock>) -> Self {
        self.lease_clock = clock;
        self
    }

    /// Completes construction with the consensus handle raftnode returned.
    pub fn attach(self, consensus: Arc<dyn Consensus>) -> KvStore {
        let lessor = Lessor::new(
            Duration::from_millis(self.config.election_timeout_ms),
            lessor::MAX_EXPIRY_REVOKES_PER_CHECK,
        );
        let inner = Inner {
            lessor: Mutex::new(lessor),
            lease_clock: self.lease_clock,
            timer: self.timer,
            next_lease_salt: AtomicU64::new(0),
            write_permits: Semaphore::new(
                self.config.max_in_flight_writes.min(Semaphore::MAX_PERMITS),
            ),
            next_seq: AtomicU64::new(1),
            writes_timed_out: AtomicU64::new(0),
            config: self.config,
            shared: self.shared,
            consensus,
        };
        KvStore {
            inner: Arc::new(inner),
        }
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

struct Inner {
    config: KvConfig,
    shared: Arc<Shared>,
    consensus: Arc<dyn Consensus>,
    write_permits: Semaphore,
    next_seq: AtomicU64,
    /// Writes proposed here that were not applied before their deadline.
    writes_timed_out: AtomicU64,
    /// Lease deadlines: meaningful only while this node is the confirmed leader.
    lessor: Mutex<Lessor>,
    lease_clock: Arc<dyn LeaseClock>,
    timer: Option<Arc<dyn RequestTimer>>,
    next_lease_salt: AtomicU64,
}

/// The replicated key-value store, as the API sees it. Cheap to clone.
#[derive(Clone)]
pub struct KvStore {
    inner: Arc<Inner>,
}

impl KvStore {
    /// etcd `Range`. Linearizable (waits for the read barrier) unless
    /// `request.serializable`; never proposes. `header.revision` is the
    /// current revision (api fills the header's other fields).
    ///
    /// Errors: `EmptyKey`, `InvalidSortOption`, `FutureRevision`,
    /// `Compacted`, or the barrier's (`Raft`, `ReadTimeout`).
    pub async fn range(&self, request: pb::RangeRequest) -> Result<pb::RangeResponse, KvError> {
        mvcc::check_range(&request)?;
        if !request.serializable {
            self.read_barrier().await?;
        }
        self.inner.shared.keyspace().range(&request)
    }

    /// etcd `Put`; resolves once applied here, with what apply computed.
    ///
    /// Errors: `EmptyKey`, `ValueProvided`, `LeaseProvided` (before
    /// proposing); `NoSpace` (quota); `KeyNotFound`, `LeaseNotFound` (at
    /// apply); and the write path's (`Busy`, `Raft`, `Timeout`, `Stopped`).
    pub async fn put(&self, request: pb::PutRequest) -> Result<pb::PutResponse, KvError> {
        mvcc::check_put(&request)?;
        self.check_quota((request.key.len() + request.value.len()) as u64)
            .await?;
        match self.propose(Op::Put(request)).await? {
            Response::Put(response) => Ok(response),
            other => Err(unexpected(&other)),
        }
    }

    /// etcd `DeleteRange` (allowed while the NOSPACE alarm is armed).
    pub async fn delete_range(
        &self,
        request: pb::DeleteRangeRequest,
    ) -> Result<pb::DeleteRangeResponse, KvError> {
        mvcc::check_delete(&request)?;
        match self.propose(Op::DeleteRange(request)).await? {
            Response::DeleteRange(response) => Ok(response),
            other => Err(unexpected(&other)),
        }
    }

    /// etcd `Txn`. Request checks (`TooManyOps` past `max_txn_ops`,
    /// `EmptyKey`, `DuplicateKey`, ...) run before anything else. A txn
    /// that writes nothing in any branch is evaluated locally after the read
    /// barrier (none if all its ranges are serializable), without a proposal.
    pub async fn txn(&self, request: pb::TxnRequest) -> Result<pb::TxnResponse, KvError> {
        mvcc::check_txn_request(&request, self.inner.config.max_txn_ops)?;
        if mvcc::is_txn_read_only(&request) {
            if !txn_is_serializable(&request) {
                self.read_barrier().await?;
            }
            let mut view = self.inner.shared.keyspace();
            return view.txn(&request);
        }
        if mvcc::txn_has_put(&request) {
            self.check_quota(txn_cost(&request)).await?;
        }
        match self.propose(Op::Txn(request)).await? {
            Response::Txn(response) => Ok(response),
            other => Err(unexpected(&other)),
        }
    }

    /// etcd `Compact`: proposed; `Compacted` at or below the compacted
    /// revision, `FutureRevision` above the current one (decided at apply).
    pub async fn compact(
        &self,
        request: pb::CompactionRequest,
    ) -> Result<pb::CompactionResponse, KvError> {
        match self.propose(Op::Compaction(request)).await? {
            Response::Compaction(response) => Ok(response),
            other => Err(unexpected(&other)),
        }
    }

    /// etcd `Maintenance.HashKV` of this member's keyspace (local, no
    /// barrier, as etcd): `revision` 0 hashes at the current revision.
    pub async fn hash_kv(&self, request: pb::HashKvRequest) -> Result<pb::HashKvResponse, KvError> {
        self.inner.shared.keyspace().hash_kv(request.revision)
    }

    /// etcd `Maintenance.Alarm`: GET reads after the read barrier;
    /// ACTIVATE and DEACTIVATE are proposed (`etcdctl alarm disarm`).
    pub async fn alarm(&self, request: pb::AlarmRequest) -> Result<pb::AlarmResponse, KvError> {
        if request.action == pb::alarm_request::AlarmAction::Get as i32 {
            self.read_barrier().await?;
            let mut view = self.inner.shared.keyspace();
            return view.alarm(&request);
        }
        match self.propose(Op::Alarm(request)).await? {
            Response::Alarm(response) => Ok(response),
            other => Err(unexpected(&other)),
        }
    }

    /// Revision, compacted revision, retained bytes and alarms of this
    /// member's keyspace, now (no barrier).
    pub fn keyspace_status(&self) -> KeyspaceStatus {
        self.inner.shared.keyspace.read().status()
    }

    /// A frozen copy of this member's keyspace (O(1); no barrier).
    pub fn keyspace(&self) -> Keyspace {
        self.inner.shared.keyspace()
    }

    /// raftexample's `PUT /key`: an etcd Put of `value` at `key`; returns
    /// once *this* write is applied on this node (hence committed).
    ///
    /// Errors: as [`KvStore::put`].
    pub async fn put_value(&self, key: Bytes, value: Bytes) -> Result<(), KvError> {
        // `check_put` of a put without options: only the key can be wrong.
        if key.is_empty() {
            return Err(KvError::EmptyKey);
        }
        self.check_quota((key.len() + value.len()) as u64).await?;
        // Encoded from the request's buffers: no `PutRequest` copy of both.
        let encode = |id| command::encode_put(id, &key, &value);
        match self.propose_encoded(encode, true).await? {
            Response::Put(_) => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// raftexample's `GET /key`: a Range of `key` at head. A
    /// [`ReadConsistency::Linearizable`] read first waits for the consensus
    /// read barrier (bounded by `request_timeout_ms`).
    pub async fn get(&self, key: &[u8], read: ReadConsistency) -> Result<Option<Bytes>, KvError> {
        if read == ReadConsistency::Linearizable {
            self.read_barrier().await?;
        }
        Ok(self.inner.shared.keyspace.read().get(key))
    }

    /// Proposes `op` and waits for what its apply computed.
    async fn propose(&self, op: Op) -> Result<Response, KvError> {
        let is_put = matches!(op, Op::Put(_));
        self.propose_encoded(|id| command::encode(id, op), is_put)
            .await
    }

    /// Proposes the command `encode` makes for its request id and waits for
    /// what its apply computed (`is_put`: the command is an etcd Put).
    async fn propose_encoded(
        &self,
        encode: impl FnOnce(RequestId) -> Vec<u8>,
        is_put: bool,
    ) -> Result<Response, KvError> {
        let _permit = self
            .inner
            .write_permits
            .try_acquire()
            .map_err(|_| KvError::Busy)?;
        let id = self.next_request_id();
        let planted_ack = is_put && raftnode::plant::active(raftnode::PlantedBug::AckPutOnPropose);
        let payload = encode(id);
        // Register before proposing: the entry may be applied before
        // `propose_then` even returns.
        let mut waiter = self.inner.shared.register(id.seq)?;
        // Nobody waits for Raft to take the proposal: the loop hands a
        // refusal to the waiter, and an accepted proposal wakes this task
        // only once, when it is applied.
        let shared = Arc::clone(&self.inner.shared);
        let seq = id.seq;
        self.inner.consensus.propose_then(
            payload,
            Box::new(move |proposed| {
                if let Err(error) = proposed {
                    shared.refuse(seq, KvError::Raft(error));
                }
            }),
        )?;
        if planted_ack {
            return Ok(Response::Put(pb::PutResponse::default()));
        }
        match timer::within(
            self.inner.timer.as_deref(),
            self.timeout(),
            waiter.applied(),
        )
        .await
        {
            Some(applied) => applied,
            None => {
                self.inner.writes_timed_out.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(seq = id.seq, "write not applied before its deadline");
                Err(self.write_timeout())
            }
        }
    }

    async fn read_barrier(&self) -> Result<(), KvError> {
        if raftnode::plant::active(raftnode::PlantedBug::ReadWithoutBarrier) {
            return Ok(());
        }
        let barrier = self.inner.consensus.read_barrier();
        match timer::within(self.inner.timer.as_deref(), self.timeout(), barrier).await {
            Some(Ok(())) => Ok(()),
            Some(Err(error)) => Err(KvError::Raft(error)),
            None => Err(KvError::ReadTimeout {
                timeout_ms: self.inner.config.request_timeout_ms,
            }),
        }
    }

    /// etcd's quota check before proposing a write that adds `cost` bytes:
    /// `NoSpace` while the alarm is armed; past the quota, proposes the
    /// NOSPACE alarm for this member, then `NoSpace`. The decision uses
    /// local state, but only the alarm (which goes through the log) ever
    /// changes what apply does.
    async fn check_quota(&self, cost: u64) -> Result<(), KvError> {
        let (armed, retained_bytes) = {
            let keyspace = self.inner.shared.keyspace.read();
            (keyspace.no_space(), keyspace.retained_bytes())
        };
        if armed {
            return Err(KvError::NoSpace);
        }
        if retained_bytes.saturating_add(cost) <= self.inner.config.quota_bytes {
            return Ok(());
        }
        tracing::warn!(
            retained_bytes,
            cost,
            quota_bytes = self.inner.config.quota_bytes,
            "quota exceeded; raising the NOSPACE alarm"
        );
        let activate = pb::AlarmRequest {
            action: pb::alarm_request::AlarmAction::Activate as i32,
            member_id: self.inner.shared.node_id,
            alarm: pb::AlarmType::Nospace as i32,
        };
        if let Err(error) = self.propose(Op::Alarm(activate)).await {
            tracing::warn!(%error, "could not raise the NOSPACE alarm");
        }
        Err(KvError::NoSpace)
    }

    /// etcd `LeaseGrant`. The TTL is raised to the minimum
    /// ([`KvConfig::min_lease_ttl_s`]); id 0 asks this member to choose one
    /// (positive, not granted now) before proposing, so every member applies
    /// the same id.
    ///
    /// Errors: `LeaseTtlTooLarge` (before proposing), `LeaseExists` (at
    /// apply), and the write path's.
    pub async fn lease_grant(
        &self,
        mut request: pb::LeaseGrantRequest,
    ) -> Result<pb::LeaseGrantResponse, KvError> {
        if request.ttl > mvcc::MAX_LEASE_TTL_S {
            return Err(KvError::LeaseTtlTooLarge);
        }
        request.ttl = request.ttl.max(self.inner.config.min_lease_ttl_s());
        if request.id == 0 {
            request.id = self.new_lease_id();
        }
        let (id, ttl_s) = (request.id, request.ttl);
        match self.propose(Op::LeaseGrant(request)).await? {
            Response::LeaseGrant(response) => {
                debug_assert_eq!((response.id, response.ttl), (id, ttl_s));
                // Apply queued the grant; the lessor takes it now.
                drop(self.lessor());
                Ok(response)
            }
            other => Err(unexpected(&other)),
        }
    }

    /// etcd `LeaseRevoke`: deletes the attached keys in one revision.
    ///
    /// Errors: `LeaseNotFound` (at apply), and the write path's.
    pub async fn lease_revoke(
        &self,
        request: pb::LeaseRevokeRequest,
    ) -> Result<pb::LeaseRevokeResponse, KvError> {
        match self.propose(Op::LeaseRevoke(request)).await? {
            Response::LeaseRevoke(response) => Ok(response),
            other => Err(unexpected(&other)),
        }
    }

    /// One keep-alive of etcd's `LeaseKeepAlive` stream, served by the
    /// leader only after it confirmed its leadership (read barrier; etcd
    /// #15247). An unknown lease, or one whose deadline passed and whose
    /// revoke is coming, answers TTL 0 and is not renewed (as etcd).
    ///
    /// Errors: `NotLeader` on a member that is not the leader (or lost the
    /// leadership meanwhile), and the barrier's.
    pub async fn lease_keep_alive(
        &self,
        request: pb::LeaseKeepAliveRequest,
    ) -> Result<pb::LeaseKeepAliveResponse, KvError> {
        self.confirm_leadership().await?;
        let keyspace = self.inner.shared.keyspace();
        let ttl = match keyspace.lease_ttl_s(request.id) {
            None => 0,
            Some(granted) => {
                let now = self.inner.lease_clock.now();
                match self.lessor().renew(request.id, granted, now) {
                    Renewal::Renewed { ttl_s } => ttl_s,
                    Renewal::Expired => 0,
                    Renewal::NotPrimary => return Err(KvError::NotLeader),
                }
            }
        };
        Ok(pb::LeaseKeepAliveResponse {
            header: Some(pb::ResponseHeader {
                revision: keyspace.revision(),
                ..Default::default()
            }),
            id: request.id,
            ttl,
        })
    }

    /// etcd `LeaseTimeToLive`, served by the confirmed leader (only it knows
    /// deadlines). An unknown lease answers TTL -1 (as etcd); the remaining
    /// TTL is clamped to `[0, granted]` (etcd #17642).
    ///
    /// Errors: `NotLeader`, and the barrier's.
    pub async fn lease_time_to_live(
        &self,
        request: pb::LeaseTimeToLiveRequest,
    ) -> Result<pb::LeaseTimeToLiveResponse, KvError> {
        self.confirm_leadership().await?;
        let keyspace = self.inner.shared.keyspace();
        let header = Some(pb::ResponseHeader {
            revision: keyspace.revision(),
            ..Default::default()
        });
        let Some(info) = keyspace.lease_info(request.id) else {
            return Ok(pb::LeaseTimeToLiveResponse {
                header,
                id: request.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            });
        };
        let now = self.inner.lease_clock.now();
        let ttl = self
            .inner
            .lessor
            .lock()
            .remaining_s(info.id, info.granted_ttl_s, now);
        Ok(pb::LeaseTimeToLiveResponse {
            header,
            id: info.id,
            ttl,
            granted_ttl: info.granted_ttl_s,
            keys: if request.keys { info.keys } else { Vec::new() },
        })
    }

    /// etcd `LeaseLeases`: every granted lease, by id (after the read
    /// barrier; any member serves it).
    pub async fn lease_leases(
        &self,
        _request: pb::LeaseLeasesRequest,
    ) -> Result<pb::LeaseLeasesResponse, KvError> {
        self.read_barrier().await?;
        let keyspace = self.inner.shared.keyspace();
        Ok(pb::LeaseLeasesResponse {
            header: Some(pb::ResponseHeader {
                revision: keyspace.revision(),
                ..Default::default()
            }),
            leases: keyspace
                .lease_ttls()
                .into_iter()
                .map(|(id, _)| pb::LeaseStatus { id })
                .collect(),
        })
    }

    /// One expiry check of the leader (the task of [`lessor::spawn`] calls
    /// it every [`lessor::EXPIRY_CHECK_INTERVAL`]): on a member that is not
    /// the leader it forgets every deadline and does nothing; on the leader
    /// it confirms the leadership through the read barrier (so a stalled,
    /// deposed leader revokes nothing: etcd #15247), promotes the lessor if
    /// this term is new, and proposes the revoke of at most
    /// [`lessor::MAX_EXPIRY_REVOKES_PER_CHECK`] expired leases. Answers the
    /// leases whose revoke was applied.
    ///
    /// Errors: the barrier's or `NotLeader` (nothing proposed).
    pub async fn expire_leases(&self) -> Result<Vec<i64>, KvError> {
        if self.inner.consensus.status().role != Role::Leader {
            self.lessor().demote();
            return Ok(Vec::new());
        }
        let due = {
            let mut lessor = self.lessor();
            let now = self.inner.lease_clock.now();
            lessor.sync(now, &self.inner.shared.keyspace.read().lease_ttls());
            lessor.due(now)
        };
        // Confirm right before proposing; a due list from a lessor of an
        // older term is dropped by the promotion this may do.
        let term = match self.confirm_leadership().await {
            Ok(term) => term,
            Err(error) => {
                let mut lessor = self.lessor();
                for id in &due {
                    lessor.revoke_failed(*id);
                }
                return Err(error);
            }
        };
        if self.lessor().primary_term() != Some(term) {
            let mut lessor = self.lessor();
            for id in &due {
                lessor.revoke_failed(*id);
            }
            return Err(KvError::NotLeader);
        }
        // The revokes go out together (at most the per-check limit), so Raft
        // batches them: one at a time, each waiting for its own apply, held
        // expiry below the rate limit (etcd also revokes concurrently).
        let outcomes = futures::future::join_all(due.iter().map(|&id| async move {
            tracing::info!(lease = id, "lease expired; revoking");
            (id, self.lease_revoke(pb::LeaseRevokeRequest { id }).await)
        }))
        .await;
        let mut revoked = Vec::new();
        for (id, outcome) in outcomes {
            match outcome {
                Ok(_) | Err(KvError::LeaseNotFound) => revoked.push(id),
                Err(error) => {
                    tracing::warn!(lease = id, %error, "expiry revoke failed; retrying later");
                    self.lessor().revoke_failed(id);
                }
            }
        }
        Ok(revoked)
    }

    /// Confirms this member leads: it is leader, passes the read barrier
    /// (a quorum still follows it, and it has applied an entry of its term,
    /// as raft-rs answers a ReadIndex only after committing one) and its
    /// term did not change meanwhile. Promotes the lessor for a new term.
    /// Answers the term.
    async fn confirm_leadership(&self) -> Result<u64, KvError> {
        let before = self.inner.consensus.status();
        if before.role != Role::Leader {
            return Err(KvError::NotLeader);
        }
        self.read_barrier().await?;
        let after = self.inner.consensus.status();
        if after.role != Role::Leader || after.term != before.term {
            return Err(KvError::NotLeader);
        }
        let mut lessor = self.lessor();
        if lessor.primary_term() != Some(after.term) {
            let leases = self.inner.shared.keyspace.read().lease_ttls();
            lessor.promote(after.term, self.inner.lease_clock.now(), &leases);
        }
        Ok(after.term)
    }

    /// The lessor, after it took in the grants and revokes applied since
    /// it last looked.
    fn lessor(&self) -> parking_lot::MutexGuard<'_, Lessor> {
        let mut lessor = self.inner.lessor.lock();
        let changes = self.inner.shared.take_lease_changes();
        if !changes.is_empty() {
            let now = self.inner.lease_clock.now();
            for change in changes {
                match change {
                    LeaseChange::Granted { id, ttl_s } => lessor.granted(id, ttl_s, now),
                    LeaseChange::Revoked { id } => lessor.revoked(id),
                    LeaseChange::Restored => {
                        let leases = self.inner.shared.keyspace.read().lease_ttls();
                        lessor.sync(now, &leases);
                    }
                }
            }
        }
        lessor
    }

    /// A lease id for a grant proposed here: positive, unlikely to collide
    /// with another member's (node id, boot nonce and a counter hashed), and
    /// not granted now (apply refuses a duplicate anyway).
    fn new_lease_id(&self) -> i64 {
        use std::hash::{Hash, Hasher};
        let keyspace = self.inner.shared.keyspace();
        loop {
            let salt = self.inner.next_lease_salt.fetch_add(1, Ordering::Relaxed);
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            (
                self.inner.shared.node_id,
                self.inner.shared.boot_nonce,
                salt,
            )
                .hash(&mut hasher);
            let id = (hasher.finish() & (i64::MAX as u64)) as i64;
            if id != 0 && keyspace.lease_ttl_s(id).is_none() {
                return id;
            }
        }
    }

    /// The consensus handle (membership changes and status go through it).
    pub fn consensus(&self) -> &Arc<dyn Consensus> {
        &self.inner.consensus
    }

    /// Opens a watch stream (etcd's `Watch` RPC): feed it the client's
    /// requests and send what it answers (see [`crate::WatchStream`]).
    /// Events come from this member's applied log; a response holds at most
    /// about `max_response_bytes` of events unless one revision is larger
    /// (split into fragments when the watcher asked for them).
    pub fn watch(&self, max_response_bytes: usize) -> crate::WatchStream {
        crate::WatchStream::new(Arc::clone(&self.inner.shared), max_response_bytes)
    }

    /// Write revisions and bytes the watch hub's ring holds now (bounded by
    /// [`crate::WatchConfig`]).
    pub fn watch_ring_usage(&self) -> (usize, usize) {
        self.inner.shared.watch.ring_usage()
    }

    /// This node's id.
    pub fn node_id(&self) -> u64 {
        self.inner.shared.node_id
    }

    /// Index of the last entry applied to the local map.
    pub fn applied_index(&self) -> u64 {
        self.inner.shared.applied_index()
    }

    /// Writes proposed by this store that are still waiting for their apply.
    pub fn pending_writes(&self) -> usize {
        self.inner.shared.pending_writes()
    }

    /// Writes proposed by this store that were not applied before their
    /// deadline (answered as timed out, outcome unknown), since it started.
    pub fn writes_timed_out(&self) -> u64 {
        self.inner.writes_timed_out.load(Ordering::Relaxed)
    }

    /// Number of keys at head in the local keyspace.
    pub fn len(&self) -> usize {
        self.inner.shared.keyspace.read().len()
    }

    /// Whether no key exists at head in the local keyspace.
    pub fn is_empty(&self) -> bool {
        self.inner.shared.keyspace.read().is_empty()
    }

    fn next_request_id(&self) -> RequestId {
        let seq = self.inner.next_seq.fetch_add(1, Ordering::Relaxed);
        RequestId {
            node_id: self.inner.shared.node_id,
            boot_nonce: self.inner.shared.boot_nonce,
            seq,
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.inner.config.request_timeout_ms)
    }

    fn write_timeout(&self) -> KvError {
        KvError::Timeout {
            timeout_ms: self.inner.config.request_timeout_ms,
        }
    }
}

impl std::fmt::Debug for KvStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvStore")
            .field("node_id", &self.inner.shared.node_id)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// A response of another kind than the request's: apply and the request
/// side disagree, which is a bug; reported, not panicked on.
fn unexpected(response: &Response) -> KvError {
    tracing::error!(?response, "apply answered a different kind of request");
    KvError::Stopped
}

/// Whether every range of a read-only txn asks for a serializable read.
fn txn_is_serializable(request: &pb::TxnRequest) -> bool {
    use pb::request_op::Request;
    request
        .success
        .iter()
        .chain(&request.failure)
        .all(|op| match &op.request {
            Some(Request::RequestRange(range)) => range.serializable,
            // As etcd: any other op (a nested txn too) makes it linearizable.
            _ => false,
        })
}

/// Bytes a txn's puts add (both branches, all depths).
fn txn_cost(request: &pb::TxnRequest) -> u64 {
    use pb::request_op::Request;
    request
        .success
        .iter()
        .chain(&request.failure)
        .map(|op| match &op.request {
            Some(Request::RequestPut(put)) => (put.key.len() + put.value.len()) as u64,
            Some(Request::RequestTxn(nested)) => txn_cost(nested),
            _ => 0,
        })
        .sum()
}
