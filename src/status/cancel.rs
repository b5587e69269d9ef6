//! Cancellation of registry jobs: tokio-util's [`CancellationToken`], and
//! [`BlockingCancellation`], its blocking waits for jobs that run on threads.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Wake, Waker};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::sync;

/// Blocking waits for a [`CancellationToken`], for a job that runs on a
/// thread (claimed with [`SyncRegistry::claim`](super::SyncRegistry::claim))
/// rather than on an async task.
///
/// The token's own `cancelled().await` serves async jobs; these park the
/// calling thread instead, with the same meaning, and work outside any
/// runtime. Do not call them from an async task.
///
/// # Examples
///
/// ```
/// use leasehold::status::{BlockingCancellation, CancellationToken};
/// use std::time::Duration;
///
/// let token = CancellationToken::new();
/// assert!(!token.blocking_cancelled_timeout(Duration::ZERO));
/// std::thread::scope(|s| {
///     s.spawn(|| token.cancel());
///     token.blocking_cancelled();
/// });
/// assert!(token.blocking_cancelled_timeout(Duration::ZERO));
/// ```
pub trait BlockingCancellation: sealed::Sealed {
    /// Blocks the current thread until the token is cancelled.
    ///
    /// ```
    /// use leasehold::status::{BlockingCancellation, CancellationToken};
    ///
    /// let parent = CancellationToken::new();
    /// let child = parent.child_token();
    /// std::thread::scope(|s| {
    ///     s.spawn(|| parent.cancel());
    ///     child.blocking_cancelled(); // cancelling the parent cancels the child
    /// });
    /// ```
    fn blocking_cancelled(&self);

    /// Blocks until the token is cancelled or `timeout` passes (a deadline
    /// computed once, at the call); returns whether it is cancelled.
    ///
    /// ```
    /// use leasehold::status::{BlockingCancellation, CancellationToken};
    /// use std::time::Duration;
    ///
    /// let token = CancellationToken::new();
    /// // A backoff between retries that ends early on cancellation.
    /// assert!(!token.blocking_cancelled_timeout(Duration::from_millis(1)));
    /// ```
    fn blocking_cancelled_timeout(&self, timeout: Duration) -> bool;
}

impl BlockingCancellation for CancellationToken {
    fn blocking_cancelled(&self) {
        park_until_cancelled(self, None);
    }

    fn blocking_cancelled_timeout(&self, timeout: Duration) -> bool {
        match sync::now().checked_add(timeout) {
            Some(deadline) => park_until_cancelled(self, Some(deadline)),
            // Too far away to represent: no deadline at all.
            None => park_until_cancelled(self, None),
        }
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for tokio_util::sync::CancellationToken {}
}

/// Polls the token's `cancelled()` future on this thread, parking between
/// polls; `false` if `deadline` passes first.
fn park_until_cancelled(token: &CancellationToken, deadline: Option<Instant>) -> bool {
    if token.is_cancelled() {
        return true;
    }
    let waker = Waker::from(std::sync::Arc::new(Unparker(sync::current())));
    let mut cx = Context::from_waker(&waker);
    let mut cancelled = pin!(token.cancelled());
    loop {
        // The first poll registers the waker; a cancellation after it unparks
        // this thread, and a park that returns spuriously just polls again.
        if cancelled.as_mut().poll(&mut cx).is_ready() {
            return true;
        }
        match deadline {
            None => sync::park(),
            Some(deadline) => {
                let now = sync::now();
                if now >= deadline {
                    return token.is_cancelled();
                }
                sync::park_timeout(deadline - now);
            }
        }
    }
}

/// Wakes a parked thread.
struct Unparker(sync::Thread);

impl Wake for Unparker {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        self.0.unpark();
    }
}
