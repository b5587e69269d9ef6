//! Behavioural specification of `Heartbeat`, `Validity` and `ValidityController`.
//!
//! Time is either a `ManualClock` (exact instants, advanced by hand) or
//! tokio's paused time (`start_paused`): nothing here sleeps for real.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use leasehold::clock::{Clock, ManualClock};
use leasehold::heartbeat::{
    BeatError, ConfigError, Heartbeat, HeartbeatConfig, InvalidReason, MIN_TTL_FACTOR,
    ValidityController,
};

const SEC: Duration = Duration::from_secs(1);

fn manual() -> (ManualClock, Arc<dyn Clock>) {
    let clock = ManualClock::new();
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    (clock, shared)
}

/// interval 10 s, ttl 30 s (the default 3×), no margin, on `clock`.
fn config_on(clock: &Arc<dyn Clock>) -> HeartbeatConfig {
    HeartbeatConfig::builder(10 * SEC)
        .clock(clock.clone())
        .build()
        .unwrap()
}

/// Lets spawned tasks run (current-thread runtime) until `done` holds.
async fn run_until(mut done: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if done() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("condition not reached after 10,000 yields");
}

/// Sets a flag when dropped: tells whether a future was cancelled.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A future that never completes and raises `flag` when dropped.
fn hang_until_dropped(flag: &Arc<AtomicBool>) -> impl Future<Output = ()> + Send + use<> {
    let guard = DropFlag(flag.clone());
    async move {
        std::future::pending::<()>().await;
        drop(guard);
    }
}

// ---------------------------------------------------------------- deadlines

#[tokio::test]
async fn hung_beat_turns_token_invalid_exactly_at_its_deadline_while_task_is_alive() {
    let (clock, shared) = manual();
    let t0 = clock.now();
    let beats = Arc::new(AtomicUsize::new(0));
    let beat_dropped = Arc::new(AtomicBool::new(false));
    let heartbeat = Heartbeat::spawn(&config_on(&shared), {
        let (beats, beat_dropped) = (beats.clone(), beat_dropped.clone());
        move || {
            let first = beats.fetch_add(1, Ordering::SeqCst) == 0;
            // The second beat's RPC never returns.
            let hang = (!first).then(|| hang_until_dropped(&beat_dropped));
            async move {
                if let Some(hang) = hang {
                    hang.await;
                }
                Ok(())
            }
        }
    });
    let validity = heartbeat.validity();
    run_until(|| clock.pending_sleeps() > 0).await;

    clock.advance(10 * SEC); // first beat at t0+10 succeeds: deadline t0+40
    run_until(|| heartbeat.stats().beats_ok == 1).await;
    assert_eq!(validity.deadline(), t0 + 40 * SEC);

    clock.advance(10 * SEC); // second beat starts at t0+20 and hangs
    run_until(|| beats.load(Ordering::SeqCst) == 2).await;

    clock.advance(20 * SEC - Duration::from_nanos(1));
    assert_eq!(validity.check(), Ok(Duration::from_nanos(1)));

    clock.advance(Duration::from_nanos(1)); // exactly the deadline
    // No task has run since the advance: expiry needs no help from it.
    assert!(!validity.is_valid());
    assert_eq!(validity.check().unwrap_err().reason, InvalidReason::Expired);
    assert!(heartbeat.is_running());
    assert!(!beat_dropped.load(Ordering::SeqCst));

    // The task then drops the hung beat and exits.
    run_until(|| !heartbeat.is_running()).await;
    assert!(beat_dropped.load(Ordering::SeqCst));
    assert_eq!(validity.check().unwrap_err().reason, InvalidReason::Expired);
}

#[tokio::test(start_paused = true)]
async fn invalidated_resolves_exactly_at_the_deadline_of_a_hung_heartbeat() {
    let config = HeartbeatConfig::builder(10 * SEC).build().unwrap();
    let start = tokio::time::Instant::now();
    let heartbeat = Heartbeat::spawn(&config, std::future::pending);
    let validity = heartbeat.validity();
    assert_eq!(validity.invalidated().await, InvalidReason::Expired);
    assert_eq!(start.elapsed(), 30 * SEC);
    assert_eq!(heartbeat.stats().beats_ok, 0);
}

#[tokio::test]
async fn beat_start_not_its_end_anchors_the_deadline() {
    let (clock, shared) = manual();
    let t0 = clock.now();
    let heartbeat = Heartbeat::spawn(&config_on(&shared), {
        let shared = shared.clone();
        move || {
            let slow_rpc = shared.sleep(5 * SEC);
            async move {
                slow_rpc.await;
                Ok(())
            }
        }
    });
    run_until(|| clock.pending_sleeps() > 0).await;
    clock.advance(10 * SEC); // beat starts at t0+10
    run_until(|| clock.pending_sleeps() == 2).await; // the RPC sleep and the deadline watch
    clock.advance(5 * SEC); // and ends at t0+15
    run_until(|| heartbeat.stats().beats_ok == 1).await;
    assert_eq!(heartbeat.validity().deadline(), t0 + 40 * SEC);
}

#[tokio::test]
async fn margin_is_subtracted_from_the_deadline() {
    let (clock, shared) = manual();
    let t0 = clock.now();
    let config = HeartbeatConfig::builder(10 * SEC)
        .margin(3 * SEC)
        .clock(shared)
        .build()
        .unwrap();
    let heartbeat = Heartbeat::spawn(&config, || async { Ok(()) });
    assert_eq!(heartbeat.validity().deadline(), t0 + 27 * SEC);
    clock.advance(27 * SEC);
    assert!(!heartbeat.validity().is_valid());
}

#[tokio::test(start_paused = true)]
async fn a_slow_beat_is_followed_by_one_beat_not_a_catch_up_burst() {
    let config = HeartbeatConfig::builder(10 * SEC).build().unwrap();
    let starts = Arc::new(std::sync::Mutex::new(Vec::new()));
    let origin = tokio::time::Instant::now();
    let heartbeat = Heartbeat::spawn(&config, {
        let starts = starts.clone();
        move || {
            starts.lock().unwrap().push(origin.elapsed());
            async {
                tokio::time::sleep(12 * SEC).await; // longer than an interval
                Ok(())
            }
        }
    });
    tokio::time::sleep(100 * SEC).await;
    let starts = starts.lock().unwrap().clone();
    // Each late beat starts once, when the previous one ends: 12 s apart,
    // never two back to back to catch up.
    let expected: Vec<Duration> = [10, 22, 34, 46, 58, 70, 82, 94]
        .iter()
        .map(|s| *s * SEC)
        .collect();
    assert_eq!(starts, expected);
    assert!(heartbeat.validity().is_valid());
}

// ---------------------------------------------------------------- failures

#[tokio::test(start_paused = true)]
async fn transient_beat_errors_are_retried_and_the_token_stays_valid() {
    let config = HeartbeatConfig::builder(10 * SEC).build().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let heartbeat = Heartbeat::spawn(&config, {
        let calls = calls.clone();
        move || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                // Calls 0..4 fail at t = 10, 11.25, 13.75 and 18.75 s (backoff
                // 1.25 s doubling); the retry at 28.75 s, inside the 30 s of
                // slack, succeeds.
                if n < 4 {
                    Err(BeatError::transient("connection reset"))
                } else {
                    Ok(())
                }
            }
        }
    });
    let validity = heartbeat.validity();
    let deadline_before = validity.deadline();
    for _ in 0..120 {
        tokio::time::sleep(SEC).await;
        assert!(validity.is_valid(), "invalid while retrying: {heartbeat:?}");
    }
    let stats = heartbeat.stats();
    assert_eq!(stats.beats_failed, 4);
    assert!(stats.beats_ok >= 9, "{stats:?}");
    assert!(matches!(
        stats.last_error.as_deref(),
        Some(BeatError::Transient(_))
    ));
    assert!(validity.deadline() > deadline_before);
}

#[tokio::test(start_paused = true)]
async fn beats_failing_transiently_until_the_deadline_expire_the_token_at_the_deadline() {
    let config = HeartbeatConfig::builder(10 * SEC).build().unwrap();
    let start = tokio::time::Instant::now();
    let heartbeat = Heartbeat::spawn(&config, || async {
        Err(BeatError::transient("store unavailable"))
    });
    let validity = heartbeat.validity();
    assert_eq!(validity.invalidated().await, InvalidReason::Expired);
    assert_eq!(start.elapsed(), 30 * SEC);
    // It did not give up on the first failure: it kept retrying.
    assert!(
        heartbeat.stats().beats_failed > 3,
        "{:?}",
        heartbeat.stats()
    );
    assert_eq!(heartbeat.stats().beats_ok, 0);
}

#[tokio::test(start_paused = true)]
async fn fenced_beat_invalidates_at_once_and_stops_beating() {
    let config = HeartbeatConfig::builder(10 * SEC).build().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let heartbeat = Heartbeat::spawn(&config, {
        let calls = calls.clone();
        move || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(BeatError::Fenced) }
        }
    });
    let validity = heartbeat.validity();
    let start = tokio::time::Instant::now();
    assert_eq!(validity.invalidated().await, InvalidReason::Fenced);
    assert_eq!(start.elapsed(), 10 * SEC); // at the first beat, not the deadline
    tokio::time::sleep(60 * SEC).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(!heartbeat.is_running());
}

#[tokio::test(start_paused = true)]
async fn terminal_beat_failure_invalidates_with_beat_failed() {
    let config = HeartbeatConfig::builder(10 * SEC).build().unwrap();
    let heartbeat = Heartbeat::spawn(&config, || async {
        Err(BeatError::failed("entry payload corrupt"))
    });
    let validity = heartbeat.validity();
    assert_eq!(validity.invalidated().await, InvalidReason::BeatFailed);
    let stats = heartbeat.stop().await;
    assert_eq!(stats.beats_failed, 1);
    assert!(matches!(
        stats.last_error.as_deref(),
        Some(BeatError::Failed(_))
    ));
    // The first reason stands: stopping afterwards does not overwrite it.
    assert_eq!(
        validity.check().unwrap_err().reason,
        InvalidReason::BeatFailed
    );
}

#[tokio::test(start_paused = true)]
async fn panicking_beat_invalidates_with_beat_failed() {
    let config = HeartbeatConfig::builder(10 * SEC).build().unwrap();
    let heartbeat = Heartbeat::spawn(&config, || async { panic!("beat bug") });
    let validity = heartbeat.validity();
    assert_eq!(validity.invalidated().await, InvalidReason::BeatFailed);
}

// ---------------------------------------------------------------- stop

#[tokio::test(start_paused = true)]
async fn stop_marks_stopped_at_once_and_waits_for_the_inflight_beat_to_be_dropped() {
    let config = HeartbeatConfig::builder(10 * SEC).build().unwrap();
    let beat_dropped = Arc::new(AtomicBool::new(false));
    let heartbeat = Heartbeat::spawn(&config, {
        let beat_dropped = beat_dropped.clone();
        move || {
            let hang = hang_until_dropped(&beat_dropped);
            async move {
                hang.await;
                Ok(())
            }
        }
    });
    let validity = heartbeat.validity();
    tokio::time::sleep(15 * SEC).await; // the first beat is in flight
    assert!(validity.is_valid());
    let stopping = heartbeat.stop();
    // Stopped before the future is even polled.
    assert_eq!(validity.check().unwrap_err().reason, InvalidReason::Stopped);
    let stats = stopping.await;
    assert!(beat_dropped.load(Ordering::SeqCst));
    assert_eq!(stats.beats_ok, 0);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_heartbeat_stops_beating() {
    let config = HeartbeatConfig::builder(10 * SEC).build().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let heartbeat = Heartbeat::spawn(&config, {
        let calls = calls.clone();
        move || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        }
    });
    let validity = heartbeat.validity();
    tokio::time::sleep(25 * SEC).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    drop(heartbeat);
    assert_eq!(validity.check().unwrap_err().reason, InvalidReason::Stopped);
    tokio::time::sleep(100 * SEC).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

// ---------------------------------------------------------------- run_while_valid

#[tokio::test(start_paused = true)]
async fn run_while_valid_aborts_a_hanging_commit_exactly_at_the_deadline() {
    let config = HeartbeatConfig::builder(10 * SEC).build().unwrap();
    let heartbeat = Heartbeat::spawn(&config, std::future::pending); // beats hang too
    let validity = heartbeat.validity();
    let deadline = validity.deadline();
    let commit_dropped = Arc::new(AtomicBool::new(false));
    let result = validity
        .run_while_valid(hang_until_dropped(&commit_dropped))
        .await;
    assert_eq!(result.unwrap_err().reason, InvalidReason::Expired);
    assert_eq!(tokio::time::Instant::now().into_std(), deadline);
    assert!(commit_dropped.load(Ordering::SeqCst));
}

#[tokio::test]
async fn run_while_valid_aborts_when_the_token_is_invalidated_mid_flight() {
    let (_clock, shared) = manual();
    let controller = ValidityController::valid_for(shared, 30 * SEC);
    let validity = controller.validity();
    let commit_dropped = Arc::new(AtomicBool::new(false));
    let commit = tokio::spawn({
        let validity = validity.clone();
        let hang = hang_until_dropped(&commit_dropped);
        async move { validity.run_while_valid(hang).await }
    });
    tokio::task::yield_now().await;
    assert!(!commit.is_finished());
    controller.invalidate(InvalidReason::Lost);
    let result = commit.await.unwrap();
    assert_eq!(result.unwrap_err().reason, InvalidReason::Lost);
    assert!(commit_dropped.load(Ordering::SeqCst));
}

#[test]
fn run_while_valid_never_polls_a_commit_once_invalid() {
    let (clock, shared) = manual();
    let controller = ValidityController::valid_for(shared, 30 * SEC);
    let validity = controller.validity();
    clock.advance(30 * SEC);
    let polled = AtomicBool::new(false);
    let result = futures::executor::block_on(validity.run_while_valid(async {
        polled.store(true, Ordering::SeqCst);
    }));
    assert_eq!(result.unwrap_err().reason, InvalidReason::Expired);
    assert!(!polled.load(Ordering::SeqCst));
}

#[test]
fn run_while_valid_returns_the_output_of_a_commit_that_completes_in_time() {
    let (clock, shared) = manual();
    let controller = ValidityController::valid_for(shared.clone(), 30 * SEC);
    let validity = controller.validity();
    let mut commit = pin!(validity.run_while_valid({
        let cas = shared.sleep(10 * SEC);
        async move {
            cas.await;
            "committed"
        }
    }));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(commit.as_mut().poll(&mut cx).is_pending());
    clock.advance(10 * SEC);
    assert_eq!(commit.as_mut().poll(&mut cx), Poll::Ready(Ok("committed")));
    // The expiry sleep armed while the commit was pending is released with it.
    assert_eq!(clock.pending_sleeps(), 0);
}

// ---------------------------------------------------------------- controller

#[test]
fn extension_never_moves_the_deadline_back() {
    let (clock, shared) = manual();
    let t0 = clock.now();
    let controller = ValidityController::new(shared, t0 + 30 * SEC);
    assert_eq!(controller.extend_to(t0 + 10 * SEC), Ok(30 * SEC));
    assert_eq!(controller.validity().deadline(), t0 + 30 * SEC);
    assert_eq!(controller.extend_to(t0 + 45 * SEC), Ok(45 * SEC));
    assert_eq!(controller.validity().deadline(), t0 + 45 * SEC);
}

#[test]
fn expiry_is_final_even_if_an_extension_comes_later() {
    let (clock, shared) = manual();
    let t0 = clock.now();
    let controller = ValidityController::new(shared, t0 + 30 * SEC);
    let validity = controller.validity();
    clock.advance(31 * SEC);
    let refused = controller.extend_to(clock.now() + 30 * SEC);
    assert_eq!(refused.unwrap_err().reason, InvalidReason::Expired);
    assert!(!validity.is_valid());
    assert_eq!(validity.deadline(), t0 + 30 * SEC);
}

/// A [`ManualClock`] whose next `now()` first runs a hook: lets a test put
/// another party's steps exactly inside a reader's clock read.
#[derive(Default)]
struct HookedClock {
    manual: ManualClock,
    hook: std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl HookedClock {
    fn on_next_read(&self, hook: impl FnOnce() + Send + 'static) {
        *self.hook.lock().unwrap() = Some(Box::new(hook));
    }
}

impl std::fmt::Debug for HookedClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookedClock")
            .field("manual", &self.manual)
            .finish()
    }
}

impl Clock for HookedClock {
    fn now(&self) -> Instant {
        let hook = self.hook.lock().unwrap().take();
        if let Some(hook) = hook {
            hook();
        }
        self.manual.now()
    }

    fn sleep_until(&self, deadline: Instant) -> leasehold::clock::Sleep {
        self.manual.sleep_until(deadline)
    }
}

#[test]
fn renewal_accepted_before_the_deadline_survives_a_check_that_reads_the_clock_after_it() {
    let clock = Arc::new(HookedClock::default());
    let t0 = clock.now();
    let controller = Arc::new(ValidityController::new(clock.clone(), t0 + 30 * SEC));
    let validity = controller.validity();
    clock.manual.advance(29 * SEC);
    // While the check reads the clock: a renewal at 29 s moves the deadline
    // to 60 s and is accepted, then time moves on to 31 s.
    let renewal = Arc::new(std::sync::Mutex::new(None));
    clock.on_next_read({
        let (clock, controller, renewal) = (clock.clone(), controller.clone(), renewal.clone());
        move || {
            *renewal.lock().unwrap() = Some(controller.extend_to(t0 + 60 * SEC));
            clock.manual.advance(2 * SEC);
        }
    });
    let seen = validity.check();
    assert_eq!(renewal.lock().unwrap().take(), Some(Ok(31 * SEC)));
    // At 31 s the deadline is 60 s: the check must not compare 31 s with the
    // deadline from before the renewal, nor fix that as a permanent expiry.
    assert_eq!(seen, Ok(29 * SEC));
    assert_eq!(validity.check(), Ok(29 * SEC));
    assert_eq!(validity.deadline(), t0 + 60 * SEC);
}

#[test]
fn first_invalidation_reason_wins() {
    let (_clock, shared) = manual();
    let controller = ValidityController::valid_for(shared, 30 * SEC);
    assert!(controller.invalidate(InvalidReason::Fenced));
    assert!(!controller.invalidate(InvalidReason::Stopped));
    assert_eq!(
        controller.validity().check().unwrap_err().reason,
        InvalidReason::Fenced
    );
}

#[test]
fn dropping_the_controller_stops_the_token() {
    let (_clock, shared) = manual();
    let controller = ValidityController::valid_for(shared, 30 * SEC);
    let validity = controller.validity();
    drop(controller);
    assert_eq!(validity.check().unwrap_err().reason, InvalidReason::Stopped);
}

#[test]
fn invalidated_rearms_its_sleep_when_the_deadline_is_extended() {
    let (clock, shared) = manual();
    let t0 = clock.now();
    let controller = ValidityController::new(shared, t0 + 30 * SEC);
    let validity = controller.validity();
    let mut waiter = pin!(validity.invalidated());
    let mut cx = Context::from_waker(Waker::noop());
    assert!(waiter.as_mut().poll(&mut cx).is_pending());

    clock.advance(20 * SEC);
    controller.extend_to(t0 + 50 * SEC).unwrap();
    clock.advance(15 * SEC); // past the old deadline
    assert!(waiter.as_mut().poll(&mut cx).is_pending());
    assert_eq!(clock.pending_sleeps(), 1); // re-armed for t0+50

    clock.advance(15 * SEC);
    assert_eq!(
        waiter.as_mut().poll(&mut cx),
        Poll::Ready(InvalidReason::Expired)
    );
}

#[test]
fn expire_if_due_records_expiry_only_after_the_deadline() {
    let (clock, shared) = manual();
    let controller = ValidityController::valid_for(shared, 30 * SEC);
    assert!(!controller.expire_if_due());
    clock.advance(30 * SEC);
    assert!(controller.expire_if_due());
    assert_eq!(
        controller.validity().check().unwrap_err().reason,
        InvalidReason::Expired
    );
}

// ---------------------------------------------------------------- threads

#[test]
fn clones_across_threads_all_see_the_same_expiry() {
    let (clock, shared) = manual();
    let controller = ValidityController::valid_for(shared, 30 * SEC);
    let started = AtomicUsize::new(0);
    let reasons = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let validity = controller.validity();
                let started = &started;
                s.spawn(move || {
                    assert!(validity.is_valid());
                    started.fetch_add(1, Ordering::SeqCst);
                    loop {
                        if let Err(invalid) = validity.check() {
                            // Once seen invalid, it stays invalid.
                            assert!(!validity.is_valid());
                            return invalid.reason;
                        }
                        std::thread::yield_now();
                    }
                })
            })
            .collect();
        while started.load(Ordering::SeqCst) < 8 {
            std::thread::yield_now();
        }
        clock.advance(30 * SEC);
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    assert_eq!(reasons, vec![InvalidReason::Expired; 8]);
}

#[test]
fn blocked_threads_all_wake_with_the_same_reason() {
    let controller = ValidityController::valid_for(leasehold::clock::system(), 3600 * SEC);
    let reasons = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let validity = controller.validity();
                s.spawn(move || validity.blocking_invalidated())
            })
            .collect();
        controller.invalidate(InvalidReason::Fenced);
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    assert_eq!(reasons, vec![InvalidReason::Fenced; 8]);
}

#[test]
fn blocked_thread_wakes_when_a_heartbeat_on_a_manual_clock_records_its_expiry() {
    let (clock, shared) = manual();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    let heartbeat =
        runtime.block_on(async { Heartbeat::spawn(&config_on(&shared), std::future::pending) });
    let validity = heartbeat.validity();
    // Wait until the task sleeps on the clock (first beat due, deadline watch).
    while clock.pending_sleeps() < 2 {
        std::thread::yield_now();
    }
    std::thread::scope(|s| {
        let waiter = s.spawn(|| validity.blocking_invalidated_timeout(60 * SEC));
        clock.advance(30 * SEC);
        // Woken by the task's recorded expiry, not by its 60 s timeout.
        let before = Instant::now();
        assert_eq!(waiter.join().unwrap(), Some(InvalidReason::Expired));
        assert!(before.elapsed() < 30 * SEC);
    });
    drop(heartbeat);
}

#[test]
fn blocking_invalidated_timeout_returns_none_while_valid() {
    let controller = ValidityController::valid_for(leasehold::clock::system(), 3600 * SEC);
    let validity = controller.validity();
    assert_eq!(
        validity.blocking_invalidated_timeout(Duration::from_millis(1)),
        None
    );
    controller.invalidate(InvalidReason::Stopped);
    assert_eq!(
        validity.blocking_invalidated_timeout(Duration::ZERO),
        Some(InvalidReason::Stopped)
    );
}

// ---------------------------------------------------------------- config

#[test]
fn default_ttl_is_three_intervals_and_margin_zero() {
    let config = HeartbeatConfig::builder(10 * SEC).build().unwrap();
    assert_eq!(config.ttl(), 30 * SEC);
    assert_eq!(config.margin(), Duration::ZERO);
    assert_eq!(config.validity_window(), 30 * SEC);
}

#[test]
fn zero_interval_is_rejected() {
    assert_eq!(
        HeartbeatConfig::builder(Duration::ZERO)
            .build()
            .unwrap_err(),
        ConfigError::ZeroInterval
    );
}

#[test]
fn ttl_below_the_safe_factor_is_rejected() {
    let error = HeartbeatConfig::builder(10 * SEC)
        .ttl(19 * SEC)
        .build()
        .unwrap_err();
    assert_eq!(
        error,
        ConfigError::TtlTooShort {
            ttl: 19 * SEC,
            interval: 10 * SEC,
            factor: MIN_TTL_FACTOR
        }
    );
    assert!(
        HeartbeatConfig::builder(10 * SEC)
            .ttl(20 * SEC)
            .build()
            .is_ok()
    );
}

#[test]
fn margin_not_below_ttl_minus_interval_is_rejected() {
    let error = HeartbeatConfig::builder(10 * SEC)
        .margin(20 * SEC)
        .build()
        .unwrap_err();
    assert_eq!(
        error,
        ConfigError::MarginTooLarge {
            margin: 20 * SEC,
            limit: 20 * SEC
        }
    );
    assert!(
        HeartbeatConfig::builder(10 * SEC)
            .margin(20 * SEC - Duration::from_nanos(1))
            .build()
            .is_ok()
    );
}

#[test]
fn invalid_backoff_is_rejected() {
    for (initial, max) in [(Duration::ZERO, SEC), (2 * SEC, SEC)] {
        assert_eq!(
            HeartbeatConfig::builder(10 * SEC)
                .backoff(initial, max)
                .build()
                .unwrap_err(),
            ConfigError::InvalidBackoff { initial, max }
        );
    }
}

#[test]
fn an_interval_too_long_to_multiply_is_rejected_not_a_panic() {
    let error = HeartbeatConfig::builder(Duration::MAX).build().unwrap_err();
    assert!(matches!(error, ConfigError::TtlTooShort { .. }), "{error}");
}

#[test]
fn config_errors_display_the_rule_broken() {
    let error = HeartbeatConfig::builder(10 * SEC)
        .ttl(15 * SEC)
        .build()
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "ttl 15s must be at least 2 x the interval 10s"
    );
}
