//! What bounds a request's wait: tokio's timer in production, a caller's
//! clock in a deterministic simulation (which polls the store's futures on
//! its own thread, with no runtime and no real time).

use std::future::Future;
use std::time::Duration;

use futures::future::{self, BoxFuture, Either};

/// Sleeps for a request deadline. Implementations must not need anything
/// but polling: a simulation polls with a no-op waker every step.
pub trait RequestTimer: Send + Sync + 'static {
    /// A future that resolves once `duration` has passed on this timer's
    /// clock.
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()>;
}

/// tokio's timer (needs a runtime with time enabled), as a [`RequestTimer`].
/// A store given no timer uses tokio's directly.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioTimer;

impl RequestTimer for TokioTimer {
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// `work`'s output, or `None` if `duration` passed first on `timer`, or
/// on tokio's timer when there is none (production: the same
/// `tokio::time::timeout` as without this seam, no allocation).
pub(crate) async fn within<F: Future>(
    timer: Option<&dyn RequestTimer>,
    duration: Duration,
    work: F,
) -> Option<F::Output> {
    let Some(timer) = timer else {
        return tokio::time::timeout(duration, work).await.ok();
    };
    let work = std::pin::pin!(work);
    match future::select(work, timer.sleep(duration)).await {
        Either::Left((output, _)) => Some(output),
        Either::Right(((), _)) => None,
    }
}

impl std::fmt::Debug for dyn RequestTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequestTimer")
    }
}
