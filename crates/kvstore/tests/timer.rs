//! A store given a `RequestTimer` bounds its waits by that timer alone: it
//! runs with no tokio runtime, polled by hand, as the deterministic
//! simulation polls it; and a given boot nonce makes its request ids
//! repeat.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use kvstore::testing::{request_id_of, LocalConsensus};
use kvstore::{KvConfig, KvError, KvStore, ReadConsistency, RequestTimer};

/// Fires every sleep at once when told to.
#[derive(Clone, Default)]
struct FlagTimer(Arc<AtomicBool>);

impl RequestTimer for FlagTimer {
    fn sleep(&self, _duration: Duration) -> BoxFuture<'static, ()> {
        let fired = Arc::clone(&self.0);
        Box::pin(futures::future::poll_fn(move |_| {
            if fired.load(Ordering::SeqCst) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }))
    }
}

fn store(timer: &FlagTimer, boot_nonce: Option<u64>) -> (KvStore, Arc<LocalConsensus>) {
    let (unattached, state_machine) = kvstore::new_with_boot_nonce(KvConfig::new(1), boot_nonce);
    let consensus = Arc::new(LocalConsensus::new(state_machine));
    let store = unattached
        .with_timer(Arc::new(timer.clone()))
        .attach(consensus.clone());
    (store, consensus)
}

fn poll<F: Future>(future: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(futures::task::noop_waker_ref()))
}

#[test]
fn waits_end_when_the_given_timer_fires_without_a_runtime() {
    let timer = FlagTimer::default();
    let (store, consensus) = store(&timer, None);
    consensus.set_drop_proposals(true);
    consensus.set_stall_reads(true);
    let mut put = pin!(store.put_value(Bytes::from_static(b"k"), Bytes::from_static(b"v")));
    let mut get = pin!(store.get(b"k", ReadConsistency::Linearizable));
    for _ in 0..3 {
        assert!(poll(put.as_mut()).is_pending(), "no apply, no answer");
        assert!(poll(get.as_mut()).is_pending(), "no barrier, no answer");
    }
    timer.0.store(true, Ordering::SeqCst);
    assert!(matches!(
        poll(put.as_mut()),
        Poll::Ready(Err(KvError::Timeout { .. }))
    ));
    assert!(matches!(
        poll(get.as_mut()),
        Poll::Ready(Err(KvError::ReadTimeout { .. }))
    ));
}

#[test]
fn a_given_boot_nonce_gives_the_same_request_ids() {
    let ids = |nonce: u64| {
        let timer = FlagTimer::default();
        let (store, consensus) = store(&timer, Some(nonce));
        consensus.set_hold_proposals(true);
        let mut put = pin!(store.put_value(Bytes::from_static(b"k"), Bytes::from_static(b"v")));
        assert!(poll(put.as_mut()).is_pending());
        consensus
            .take_held()
            .iter()
            .map(|payload| request_id_of(payload).expect("a request id"))
            .collect::<Vec<_>>()
    };
    let first = ids(7);
    assert_eq!(first.len(), 1);
    assert_eq!(first, ids(7), "same nonce, same ids");
    assert_ne!(first, ids(8), "another nonce, other ids");
}
