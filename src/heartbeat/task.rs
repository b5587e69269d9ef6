//! [`Heartbeat`]: the background task that beats and extends a [`Validity`].

use std::fmt;
use std::future::Future;
use std::pin::pin;
use std::time::Instant;

use futures::future::{Either, select};

use super::config::HeartbeatConfig;
use super::error::{BeatError, InvalidReason};
use super::validity::{Validity, ValidityController};
use crate::sync::{Arc, AtomicU64, Mutex, Ordering};
use crate::trace;

/// Runs a user-supplied async beat (say, "re-record my changelog entry")
/// every `interval` on a tokio task, and keeps a [`Validity`] token valid
/// while the beats succeed.
///
/// - After a successful beat that *started* at `t`, the token is valid until
///   `t + ttl - margin`. The start anchors the deadline: the store saw the
///   refresh no earlier than `t`, so others will not treat the entry as
///   stale before `t + ttl`.
/// - A [`BeatError::Transient`] failure is retried with backoff; the token
///   stays valid on its current deadline meanwhile. It turns invalid only
///   when that deadline passes, or at once on [`BeatError::Fenced`] or
///   [`BeatError::Failed`].
/// - The task is not what keeps the token honest: a beat that hangs (a slow
///   RPC, a paused process) leaves the task stuck, yet the token turns
///   invalid exactly at its deadline. The task then drops the hung beat,
///   records the expiry (waking blocking waiters) and exits.
/// - [`stop`](Self::stop) (or drop) ends beating and marks the token
///   [`InvalidReason::Stopped`].
///
/// The next beat starts `interval` after the start of the last successful
/// one; after a stall it beats once at once, never in a catch-up burst.
///
/// # Examples
///
/// ```
/// use leasehold::heartbeat::{Heartbeat, HeartbeatConfig, InvalidReason};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let config = HeartbeatConfig::builder(Duration::from_secs(10)).build().unwrap();
/// let heartbeat = Heartbeat::spawn(&config, || async {
///     // re-record the changelog entry here
///     Ok(())
/// });
/// let validity = heartbeat.validity();
///
/// tokio::time::sleep(Duration::from_secs(95)).await;
/// assert!(validity.is_valid()); // kept alive by 9 beats
/// assert_eq!(heartbeat.stats().beats_ok, 9);
///
/// heartbeat.stop().await; // before removing the entry
/// assert_eq!(validity.check().unwrap_err().reason, InvalidReason::Stopped);
/// # }
/// ```
pub struct Heartbeat {
    controller: Arc<ValidityController>,
    counters: Arc<Counters>,
    task: Option<tokio::task::JoinHandle<()>>,
}

#[derive(Default)]
struct Counters {
    beats_ok: AtomicU64,
    beats_failed: AtomicU64,
    last_error: Mutex<Option<std::sync::Arc<BeatError>>>,
}

/// Counters of a [`Heartbeat`], from [`Heartbeat::stats`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct HeartbeatStats {
    /// Beats that succeeded (and extended the token).
    pub beats_ok: u64,
    /// Beats that failed, transient or terminal.
    pub beats_failed: u64,
    /// The error of the last failed beat, if any.
    pub last_error: Option<std::sync::Arc<BeatError>>,
}

impl Heartbeat {
    /// Starts beating with `config`, the token valid for one validity window
    /// (`ttl - margin`) from now; the first beat runs one `interval` from now.
    ///
    /// Call it right after the write the heartbeat will refresh (the record
    /// of the entry), or use [`spawn_anchored`](Self::spawn_anchored) with
    /// that write's start.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (like `tokio::spawn`).
    pub fn spawn<B, Fut>(config: &HeartbeatConfig, beat: B) -> Self
    where
        B: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), BeatError>> + Send + 'static,
    {
        Self::spawn_anchored(config, config.clock.now(), beat)
    }

    /// Like [`spawn`](Self::spawn), treating `anchor` as the start of the
    /// last successful beat: the token is valid until
    /// `anchor + ttl - margin`, and the first beat runs at
    /// `anchor + interval`.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (like `tokio::spawn`).
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::heartbeat::{Heartbeat, HeartbeatConfig};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let config = HeartbeatConfig::builder(Duration::from_secs(10)).build().unwrap();
    /// let record_started = config.clock().now();
    /// // ... record the entry (takes a while) ...
    /// tokio::time::sleep(Duration::from_secs(1)).await;
    /// let heartbeat = Heartbeat::spawn_anchored(&config, record_started, || async { Ok(()) });
    /// assert_eq!(heartbeat.validity().deadline(), record_started + config.ttl());
    /// # }
    /// ```
    pub fn spawn_anchored<B, Fut>(config: &HeartbeatConfig, anchor: Instant, beat: B) -> Self
    where
        B: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), BeatError>> + Send + 'static,
    {
        let controller = Arc::new(ValidityController::new(
            config.clock.clone(),
            anchor + config.validity_window(),
        ));
        let counters = Arc::new(Counters::default());
        // The task's events carry the fields of the span current here (the
        // entry a change guard or a recovery batch keeps alive).
        let task = tokio::spawn(trace::in_current_span!(run(
            beat,
            config.clone(),
            anchor,
            Arc::clone(&controller),
            Arc::clone(&counters),
        )));
        Self {
            controller,
            counters,
            task: Some(task),
        }
    }

    /// The token this heartbeat keeps valid (clones share it).
    pub fn validity(&self) -> Validity {
        self.controller.validity()
    }

    /// The beat counters so far.
    pub fn stats(&self) -> HeartbeatStats {
        self.counters.snapshot()
    }

    /// Whether the background task is still running. It exits once the
    /// token is invalid, for any reason; but the token does not wait for it
    /// (see [`Validity`]).
    pub fn is_running(&self) -> bool {
        self.task.as_ref().is_some_and(|task| !task.is_finished())
    }

    /// Stops beating: marks the token [`InvalidReason::Stopped`] at once
    /// (unless it was already invalid), then returns a future that resolves
    /// once the task has exited, with no beat in flight (an in-flight beat is
    /// dropped). Await it before removing the entry the beats refresh.
    ///
    /// # Panics
    ///
    /// The returned future resumes the panic of a beat that panicked.
    ///
    /// # Cancel safety
    ///
    /// The token is stopped before this returns; dropping the future only
    /// stops waiting for the task to exit.
    pub fn stop(mut self) -> impl Future<Output = HeartbeatStats> + Send + 'static {
        self.controller.invalidate(InvalidReason::Stopped);
        let task = self.task.take();
        let counters = Arc::clone(&self.counters);
        async move {
            if let Some(task) = task {
                if let Err(error) = task.await {
                    if error.is_panic() {
                        std::panic::resume_unwind(error.into_panic());
                    }
                }
            }
            counters.snapshot()
        }
    }
}

impl Drop for Heartbeat {
    /// Stops beating: the token turns [`InvalidReason::Stopped`] and the task
    /// exits at its next poll. Works outside any runtime.
    fn drop(&mut self) {
        self.controller.invalidate(InvalidReason::Stopped);
    }
}

impl fmt::Debug for Heartbeat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Heartbeat")
            .field("validity", &self.validity())
            .field("running", &self.is_running())
            .field("stats", &self.stats())
            .finish()
    }
}

impl Counters {
    fn snapshot(&self) -> HeartbeatStats {
        HeartbeatStats {
            beats_ok: self.beats_ok.load(Ordering::Relaxed),
            beats_failed: self.beats_failed.load(Ordering::Relaxed),
            last_error: self.last_error.lock().clone(),
        }
    }

    fn failed(&self, error: BeatError) {
        self.beats_failed.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock() = Some(std::sync::Arc::new(error));
    }
}

/// Invalidates the token however the task ends: a panicking beat reads as
/// [`InvalidReason::BeatFailed`], a task dropped by its runtime as
/// [`InvalidReason::Stopped`]. On a normal exit the token is invalid already
/// and the first reason stands.
struct ExitGuard<'a>(&'a ValidityController);

impl Drop for ExitGuard<'_> {
    fn drop(&mut self) {
        let reason = if std::thread::panicking() {
            InvalidReason::BeatFailed
        } else {
            InvalidReason::Stopped
        };
        self.0.invalidate(reason);
    }
}

/// The background task. Every exit path leaves the token invalid.
#[cfg_attr(not(feature = "tracing"), allow(unused_variables, unused_assignments))]
async fn run<B, Fut>(
    mut beat: B,
    config: HeartbeatConfig,
    anchor: Instant,
    controller: Arc<ValidityController>,
    counters: Arc<Counters>,
) where
    B: FnMut() -> Fut,
    Fut: Future<Output = Result<(), BeatError>>,
{
    let _guard = ExitGuard(&controller);
    let validity = controller.validity();
    let clock = &config.clock;
    let mut next_beat = anchor + config.interval;
    'beating: loop {
        // `invalidated()` ends every wait below: at a stop, a terminal
        // failure, or the deadline.
        let due = clock.sleep_until(next_beat);
        if let Either::Right(_) = select(due, pin!(validity.invalidated())).await {
            break 'beating;
        }
        let mut backoff = config.backoff();
        let mut attempt = 0_u32;
        loop {
            attempt += 1;
            let start = clock.now();
            let outcome = match select(pin!(beat()), pin!(validity.invalidated())).await {
                Either::Left((outcome, _)) => outcome,
                // A hung beat is dropped here, once the token is invalid.
                Either::Right(_) => break 'beating,
            };
            match outcome {
                Ok(()) => {
                    counters.beats_ok.fetch_add(1, Ordering::Relaxed);
                    if controller
                        .extend_to(start + config.validity_window())
                        .is_err()
                    {
                        break 'beating;
                    }
                    next_beat = start + config.interval;
                    break;
                }
                Err(BeatError::Fenced) => {
                    trace::event!(
                        warn,
                        attempt,
                        "heartbeat fenced out: the entry was taken over"
                    );
                    counters.failed(BeatError::Fenced);
                    controller.invalidate(InvalidReason::Fenced);
                    break 'beating;
                }
                Err(error @ BeatError::Failed(_)) => {
                    trace::event!(error, attempt, error = %error, "heartbeat failed terminally");
                    counters.failed(error);
                    controller.invalidate(InvalidReason::BeatFailed);
                    break 'beating;
                }
                Err(error @ BeatError::Transient(_)) => {
                    let delay = backoff.next_delay();
                    trace::event!(
                        warn,
                        attempt,
                        error = %error,
                        retry_in = ?delay,
                        valid_for = ?validity.deadline().saturating_duration_since(clock.now()),
                        "heartbeat failed; retrying"
                    );
                    counters.failed(error);
                    let retry = clock.sleep(delay);
                    if let Either::Right(_) = select(retry, pin!(validity.invalidated())).await {
                        break 'beating;
                    }
                }
            }
        }
    }
    // A lazy expiry becomes a recorded one: blocking waiters wake now.
    controller.expire_if_due();
    #[cfg(feature = "tracing")]
    if let Err(invalid) = validity.check() {
        if invalid.reason == InvalidReason::Stopped {
            trace::event!(debug, "heartbeat stopped");
        } else {
            trace::event!(warn, reason = %invalid.reason, "validity lost");
        }
    }
}
