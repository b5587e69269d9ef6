//! [`CancelSignal`]: the cooperative cancellation request a registry job
//! receives.

use std::fmt;
use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use futures::future::{Either, select};

use crate::WatchCell;

/// A request to stop, set once and observed by any number of tasks and
/// threads.
///
/// A [`SyncRegistry`](super::SyncRegistry) hands one to every job, and sets
/// it when the job's key is cancelled. Cancellation is cooperative: the job
/// decides when to stop and what outcome to publish (usually
/// [`SyncOutcome::Cancelled`](super::SyncOutcome::Cancelled)), so it can
/// clean up first. Clones share the same signal.
///
/// It is a `WatchCell<bool>` underneath, so waiting tasks are woken exactly
/// once, when it is set, and a blocking thread can wait on it too. Pick
/// `tokio_util`'s `CancellationToken` instead if you need child tokens.
///
/// # Examples
///
/// ```
/// use leasehold::status::CancelSignal;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let cancel = CancelSignal::new();
/// let copy = tokio::spawn({
///     let cancel = cancel.clone();
///     async move {
///         // Copy chunks until done or asked to stop.
///         cancel.run_until_cancelled(std::future::pending::<()>()).await
///     }
/// });
/// assert!(cancel.cancel());
/// assert_eq!(copy.await.unwrap(), None);
/// # }
/// ```
#[derive(Clone, Default)]
pub struct CancelSignal {
    cancelled: WatchCell<bool>,
}

impl CancelSignal {
    /// A signal that is not set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the signal, waking everything that waits for it. Returns `true`
    /// if this call set it, `false` if it was set already.
    ///
    /// ```
    /// let cancel = leasehold::status::CancelSignal::new();
    /// assert!(!cancel.is_cancelled());
    /// assert!(cancel.cancel());
    /// assert!(!cancel.cancel());
    /// assert!(cancel.is_cancelled());
    /// ```
    pub fn cancel(&self) -> bool {
        self.cancelled
            .modify_if(|cancelled| !std::mem::replace(cancelled, true))
    }

    /// Whether the signal is set.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.read(|cancelled| *cancelled)
    }

    /// Waits until the signal is set.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future unregisters it.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let cancel = leasehold::status::CancelSignal::new();
    /// let job = tokio::spawn({
    ///     let cancel = cancel.clone();
    ///     async move { cancel.cancelled().await; "stopped" }
    /// });
    /// cancel.cancel();
    /// assert_eq!(job.await.unwrap(), "stopped");
    /// # }
    /// ```
    pub async fn cancelled(&self) {
        // The cell is private and never closed, so the wait cannot fail.
        let _ = self.cancelled.wait_for(|cancelled| *cancelled).await;
    }

    /// Blocks the current thread until the signal is set.
    ///
    /// ```
    /// let cancel = leasehold::status::CancelSignal::new();
    /// std::thread::scope(|s| {
    ///     s.spawn(|| cancel.cancel());
    ///     cancel.blocking_cancelled();
    /// });
    /// ```
    pub fn blocking_cancelled(&self) {
        let _ = self.cancelled.blocking_wait_for(|cancelled| *cancelled);
    }

    /// Blocks until the signal is set or `timeout` passes; returns whether it
    /// is set.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let cancel = leasehold::status::CancelSignal::new();
    /// assert!(!cancel.blocking_cancelled_timeout(Duration::ZERO));
    /// cancel.cancel();
    /// assert!(cancel.blocking_cancelled_timeout(Duration::ZERO));
    /// ```
    pub fn blocking_cancelled_timeout(&self, timeout: Duration) -> bool {
        self.cancelled
            .blocking_wait_for_timeout(|cancelled| *cancelled, timeout)
            .is_ok()
    }

    /// Runs `work` until it finishes (`Some(output)`) or the signal is set
    /// (`None`, and `work` is dropped). If both are ready at the same poll,
    /// `work`'s output wins.
    ///
    /// # Cancel safety
    ///
    /// As cancel safe as `work` itself.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let cancel = leasehold::status::CancelSignal::new();
    /// assert_eq!(cancel.run_until_cancelled(async { 7 }).await, Some(7));
    /// cancel.cancel();
    /// assert_eq!(cancel.run_until_cancelled(std::future::pending::<u8>()).await, None);
    /// # }
    /// ```
    pub async fn run_until_cancelled<F: Future>(&self, work: F) -> Option<F::Output> {
        let work = pin!(work);
        let cancelled = pin!(self.cancelled());
        match select(work, cancelled).await {
            Either::Left((output, _)) => Some(output),
            Either::Right(((), _)) => None,
        }
    }
}

impl fmt::Debug for CancelSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelSignal")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}
