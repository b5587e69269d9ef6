//! The lease's background task: heartbeats, downgrades and the final expiry.
//!
//! # When the task runs
//!
//! It sleeps until the next tick *or* until [`State::task_has_work`]
//! holds (a sync or an expiry was requested). The wait is a predicate wait on
//! the [`WatchCell`](crate::WatchCell), so the handle's frequent writes (since
//! downgrades, seqno leases and releases, observed seqnos) never wake it.
//!
//! # Ticks without bursts
//!
//! The next tick is `start of the last successful heartbeat + period - jitter`
//! (jitter drawn per lease, per tick, in `[0, jitter]`). A tick is never
//! scheduled from the previous *scheduled* tick, so after a stall (a blocked
//! runtime, a paused process) the task heartbeats once, at once, and then
//! every period from there: there are no missed ticks to catch up on. A
//! requested sync is a heartbeat too, and restarts the period.
//!
//! [`State::task_has_work`]: super::state::State::task_has_work

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::{Either, select};

use super::backend::LeaseBackend;
use super::config::LeaseConfig;
use super::error::{BackendError, LeaseError};
use super::state::{Counters, Ended, LeaseShared};
use crate::heartbeat::{InvalidReason, ValidityController};
use crate::trace;

type Shared<B> = LeaseShared<<B as LeaseBackend>::Since, <B as LeaseBackend>::Seqno>;

/// Spawns the task on the current tokio runtime.
pub(super) fn spawn<B: LeaseBackend>(
    backend: B,
    shared: Arc<Shared<B>>,
    controller: ValidityController,
    config: LeaseConfig,
    start: Instant,
) {
    let controller = Arc::new(controller);
    let task = Task {
        exit: ExitGuard {
            shared: Arc::clone(&shared),
            controller: Arc::clone(&controller),
        },
        polled: false,
        inner: Box::pin(run(backend, shared, controller, config, start)),
    };
    // Detached: the task outlives the handle, to expire the lease after a drop.
    // Its events carry the fields of the span current at `Lease::spawn`.
    drop(tokio::spawn(trace::instrument!(task, "lease")));
}

/// The spawned future: counts wake-ups, and owns the [`ExitGuard`].
///
/// The guard lives here, not inside `run`'s body, because a future that is
/// dropped before its first poll (its runtime shut down first) never runs
/// any of its body: a guard created there would never exist, and the
/// handle would wait for an end nobody records.
struct Task<S: super::Since, Q: super::Seqno, F> {
    exit: ExitGuard<S, Q>,
    polled: bool,
    inner: Pin<Box<F>>,
}

impl<S: super::Since, Q: super::Seqno, F: Future> Future for Task<S, Q, F> {
    type Output = F::Output;

    /// Counts every poll after the first: each one is a wake-up. Counting
    /// polls (rather than loop iterations) also catches wake-ups that found
    /// nothing to do.
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        if std::mem::replace(&mut self.polled, true) {
            Counters::bump(&self.exit.shared.counters.wakeups);
        }
        self.inner.as_mut().poll(cx)
    }
}

/// How a renewal (a heartbeat, with its retries) ended.
enum Renewal {
    /// Succeeded; the heartbeat that did started then.
    Renewed { started: Instant },
    /// An expiry was requested meanwhile (any in-flight call was dropped).
    ExpireRequested,
    /// The lease is over.
    Ended(LeaseError),
}

/// Marks the lease ended however the task exits: a panicking backend, or a
/// runtime that drops the task (polled or never polled), leaves it
/// [`LeaseError::Stopped`]. On a normal exit the end is recorded already,
/// and stands. The validity is invalidated before the end is recorded, so
/// whoever sees the end also sees an invalid validity.
struct ExitGuard<S: super::Since, Q: super::Seqno> {
    shared: Arc<LeaseShared<S, Q>>,
    controller: Arc<ValidityController>,
}

impl<S: super::Since, Q: super::Seqno> Drop for ExitGuard<S, Q> {
    fn drop(&mut self) {
        self.controller.invalidate(InvalidReason::Stopped);
        self.shared.end(Ended::Failed(LeaseError::Stopped));
    }
}

async fn run<B: LeaseBackend>(
    backend: B,
    shared: Arc<Shared<B>>,
    controller: Arc<ValidityController>,
    config: LeaseConfig,
    start: Instant,
) {
    // Every path below invalidates the validity, then records the end; the
    // `ExitGuard` owned by the spawned `Task` covers a panic in the backend
    // and a runtime dropping the task.
    let clock = config.clock().clone();
    let period = config.period();
    let mut jitter = Jitter::new(config.jitter);
    let mut next_tick = start + period - jitter.draw();
    loop {
        let work = pin!(shared.wait_for_work());
        let idle = select(clock.sleep_until(next_tick), work).await;
        if let Either::Right(_) = idle {
            Counters::bump(&shared.counters.early_wakeups);
        }
        if shared.expire_requested() {
            break;
        }
        match renew(&backend, &shared, &controller, &config).await {
            Renewal::Renewed { started } => next_tick = started + period - jitter.draw(),
            Renewal::ExpireRequested => break,
            Renewal::Ended(error) => {
                trace::event!(warn, error = %error, "lease ended");
                let reason = match error {
                    LeaseError::Lost => InvalidReason::Lost,
                    LeaseError::TimedOut => InvalidReason::Expired,
                    LeaseError::Stopped => InvalidReason::Stopped,
                };
                controller.invalidate(reason);
                controller.expire_if_due();
                shared.end(Ended::Failed(error));
                return;
            }
        }
    }
    expire(&backend, &shared, &controller, &config).await;
}

/// One heartbeat, retried with backoff on transient errors while the lease
/// is valid. Each attempt sends the latest since and seqno hold.
#[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
async fn renew<B: LeaseBackend>(
    backend: &B,
    shared: &Shared<B>,
    controller: &ValidityController,
    config: &LeaseConfig,
) -> Renewal {
    let clock = config.clock();
    let mut backoff = config.heartbeat.backoff();
    loop {
        let sent = shared.snapshot();
        let started = clock.now();
        let attempt = backend.heartbeat(sent.since.clone(), sent.seqno_hold.clone());
        let outcome = match select(pin!(attempt), pin!(interrupted(shared, controller))).await {
            Either::Left((outcome, _)) => outcome,
            Either::Right((why, _)) => return why,
        };
        match outcome {
            Ok(reply) => {
                Counters::bump(&shared.counters.heartbeats);
                // The backend applied the since whatever the validity says:
                // acknowledge it first, so no downgrade waits in vain.
                if shared.ack(&sent, reply) {
                    Counters::bump(&shared.counters.downgrades);
                }
                return match controller.extend_to(started + config.validity_window()) {
                    Ok(_) => Renewal::Renewed { started },
                    Err(_) => Renewal::Ended(LeaseError::TimedOut),
                };
            }
            Err(BackendError::Lost) => return Renewal::Ended(LeaseError::Lost),
            Err(BackendError::Transient(error)) => {
                Counters::bump(&shared.counters.failed_heartbeats);
                let delay = backoff.next_delay();
                trace::event!(
                    warn,
                    error = %error,
                    since = ?sent.since,
                    seqno_hold = ?sent.seqno_hold,
                    retry_in = ?delay,
                    "lease heartbeat failed; retrying"
                );
                let retry = clock.sleep(delay);
                if let Either::Right((why, _)) =
                    select(retry, pin!(interrupted(shared, controller))).await
                {
                    return why;
                }
            }
        }
    }
}

/// Resolves when a renewal must stop: an expiry was requested, or the
/// lease's validity ran out.
async fn interrupted<S: super::Since, Q: super::Seqno>(
    shared: &LeaseShared<S, Q>,
    controller: &ValidityController,
) -> Renewal {
    let validity = controller.validity();
    match select(
        pin!(shared.wait_for_expire_request()),
        pin!(validity.invalidated()),
    )
    .await
    {
        Either::Left(_) => Renewal::ExpireRequested,
        Either::Right(_) => Renewal::Ended(LeaseError::TimedOut),
    }
}

/// Expires the lease through the backend, retrying transient errors until
/// the old validity deadline (after it, the shard expires the reader anyway).
#[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
async fn expire<B: LeaseBackend>(
    backend: &B,
    shared: &Shared<B>,
    controller: &ValidityController,
    config: &LeaseConfig,
) {
    let clock = config.clock();
    let deadline = controller.validity().deadline();
    // The handle gave the lease up: nobody may act on it from now on.
    controller.invalidate(InvalidReason::Stopped);
    let mut backoff = config.heartbeat.backoff();
    loop {
        let call = pin!(backend.expire());
        match select(call, clock.sleep_until(deadline)).await {
            Either::Left((Ok(()) | Err(BackendError::Lost), _)) => {
                trace::event!(info, "lease expired");
                shared.end(Ended::Expired);
                return;
            }
            Either::Left((Err(BackendError::Transient(error)), _)) => {
                let delay = backoff.next_delay();
                trace::event!(warn, error = %error, retry_in = ?delay, "lease expiry failed; retrying");
                if clock.now() + delay < deadline {
                    clock.sleep(delay).await;
                    continue;
                }
            }
            Either::Right(_) => {}
        }
        trace::event!(
            warn,
            "lease expiry gave up at the validity deadline; the shard expires it"
        );
        shared.end(Ended::Failed(LeaseError::TimedOut));
        return;
    }
}

/// Per-lease tick jitter (not the retry backoff): a splitmix64 stream seeded from std's per-process
/// random keys, so leases created together drift apart.
#[derive(Debug)]
struct Jitter {
    max_nanos: u64,
    state: u64,
}

impl Jitter {
    fn new(max: Duration) -> Self {
        Self {
            max_nanos: u64::try_from(max.as_nanos()).unwrap_or(u64::MAX),
            state: crate::backoff::random_seed(),
        }
    }

    /// A delay in `[0, max]`.
    fn draw(&mut self) -> Duration {
        if self.max_nanos == 0 {
            return Duration::ZERO;
        }
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        Duration::from_nanos(z % self.max_nanos.saturating_add(1))
    }
}
