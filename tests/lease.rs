//! Behavioural specification of `Lease`, its task and the `MemoryShard`
//! backend.
//!
//! Time is a `ManualClock` advanced by hand (plus tokio's paused time where
//! noted): nothing here sleeps for real.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use leasehold::clock::{Clock, ManualClock};
use leasehold::heartbeat::InvalidReason;
use leasehold::lease::{
    BackendError, ConfigError, HeartbeatReply, Lease, LeaseBackend, LeaseConfig, LeaseError,
    MemoryReader, MemoryShard,
};
use tokio::sync::Semaphore;

const SEC: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);
/// ttl 60 s: a heartbeat every 15 s.
const TTL: Duration = Duration::from_secs(60);
const PERIOD: Duration = Duration::from_secs(15);

fn manual() -> (ManualClock, Arc<dyn Clock>) {
    let clock = ManualClock::new();
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    (clock, shared)
}

/// ttl 60 s, no jitter (exact ticks), backoff 1 s doubling to 4 s
/// (exact delays).
fn config_on(clock: &Arc<dyn Clock>) -> LeaseConfig {
    LeaseConfig::builder(TTL)
        .jitter(Duration::ZERO)
        .backoff(SEC, 4 * SEC)
        .backoff_jitter(false)
        .clock(clock.clone())
        .build()
        .unwrap()
}

type Shard = MemoryShard<u64, u64>;
type Reader = MemoryReader<u64, u64>;
type ReaderLease = Lease<Reader>;

/// A manual clock, a shard at since 0 / seqno 0, one reader's lease on it.
fn setup() -> (ManualClock, Shard, ReaderLease, Reader) {
    let (clock, shared) = manual();
    let config = config_on(&shared);
    let shard = MemoryShard::new(shared, TTL, 0, 0);
    let (backend, since, seqno) = shard.register();
    let lease = Lease::spawn(backend.clone(), &config, since, seqno);
    (clock, shard, lease, backend)
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

/// Lets spawned tasks run for a while: for asserting that nothing happens.
async fn settle() {
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
}

/// Polls `future` once with a no-op waker.
fn poll_once<F: Future>(future: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(Waker::noop()))
}

/// A backend whose heartbeats wait for a permit before reaching the shard.
#[derive(Debug, Clone)]
struct Gated {
    inner: MemoryReader<u64, u64>,
    gate: Arc<Semaphore>,
}

impl LeaseBackend for Gated {
    type Since = u64;
    type Seqno = u64;

    async fn heartbeat(
        &self,
        since: u64,
        hold: u64,
    ) -> Result<HeartbeatReply<u64, u64>, BackendError> {
        self.gate.acquire().await.unwrap().forget();
        self.inner.heartbeat(since, hold).await
    }

    async fn expire(&self) -> Result<(), BackendError> {
        self.inner.expire().await
    }
}

// ------------------------------------------------------------- wake-ups

#[tokio::test]
async fn ten_thousand_maybe_downgrades_over_a_period_cause_no_wakeup_beyond_the_tick() {
    let (clock, shard, lease, backend) = setup();
    run_until(|| clock.pending_sleeps() > 0).await; // the task is idle, waiting

    // 10,000 downgrades spread over one period, the task free to run
    // between any two of them.
    let step = PERIOD / 10_000;
    for since in 1..=10_000_u64 {
        assert!(lease.maybe_downgrade_since(since));
        clock.advance(step);
        tokio::task::yield_now().await;
    }
    run_until(|| lease.stats().heartbeats == 1).await;
    settle().await;

    let stats = lease.stats();
    // The only wake-up is the tick itself (and the tick carried the latest since).
    assert_eq!(stats.heartbeats, 1);
    assert!(stats.wakeups <= stats.heartbeats + 1, "{stats:?}");
    assert_eq!(stats.early_wakeups, 0);
    assert_eq!(shard.reader(backend.id()).unwrap().since, 10_000);
    assert_eq!(stats.downgrades, 1);
}

#[tokio::test]
async fn a_stale_maybe_downgrade_changes_nothing() {
    let (_clock, _shard, lease, _backend) = setup();
    assert!(lease.maybe_downgrade_since(10));
    assert!(!lease.maybe_downgrade_since(10));
    assert!(!lease.maybe_downgrade_since(3));
    assert_eq!(lease.since(), 10);
}

#[tokio::test]
async fn seqno_leases_releases_and_observations_do_not_wake_the_task() {
    let (clock, _shard, lease, _backend) = setup();
    run_until(|| clock.pending_sleeps() > 0).await;
    for seqno in 1..=1_000_u64 {
        let held = lease.lease_seqno();
        lease.observe_seqno(seqno);
        tokio::task::yield_now().await;
        drop(held);
        tokio::task::yield_now().await;
    }
    assert_eq!(lease.stats().wakeups, 0);
    assert_eq!(lease.seqno_hold(), 1_000);
}

// ---------------------------------------------------------- downgrade_since

#[tokio::test]
async fn downgrade_since_returns_only_after_the_backend_saw_it() {
    let (clock, shared) = manual();
    let shard: Shard = MemoryShard::new(shared.clone(), TTL, 0, 0);
    let (inner, since, seqno) = shard.register();
    let gate = Arc::new(Semaphore::new(0));
    let backend = Gated {
        inner: inner.clone(),
        gate: gate.clone(),
    };
    let lease = Lease::spawn(backend, &config_on(&shared), since, seqno);
    run_until(|| clock.pending_sleeps() > 0).await;

    let mut downgrade = pin!(lease.downgrade_since(42));
    for _ in 0..100 {
        assert!(poll_once(downgrade.as_mut()).is_pending());
        tokio::task::yield_now().await;
    }
    // The task woke for the request and is stuck in the heartbeat.
    assert_eq!(lease.stats().early_wakeups, 1);
    assert_eq!(shard.reader(inner.id()).unwrap().since, 0);

    gate.add_permits(1);
    let applied = downgrade.await;
    assert_eq!(applied, Ok(42));
    assert_eq!(shard.reader(inner.id()).unwrap().since, 42);
    assert_eq!(lease.applied_since(), 42);
    assert_eq!(clock.elapsed(), Duration::ZERO); // no tick was needed
}

#[tokio::test]
async fn downgrade_since_already_applied_resolves_at_once_without_waking_the_task() {
    let (_clock, _shard, lease, _backend) = setup();
    assert_eq!(lease.downgrade_since(5).await, Ok(5));
    let wakeups = lease.stats().wakeups;
    assert_eq!(lease.downgrade_since(5).await, Ok(5));
    assert_eq!(lease.downgrade_since(2).await, Ok(5)); // never moves back
    settle().await;
    assert_eq!(lease.stats().wakeups, wakeups);
    assert_eq!(lease.stats().early_wakeups, 1);
}

#[tokio::test]
async fn dropped_downgrade_since_still_applies_its_request() {
    let (clock, shard, lease, backend) = setup();
    run_until(|| clock.pending_sleeps() > 0).await;

    // Polled once, then cancelled.
    let mut first = Box::pin(lease.downgrade_since(9));
    assert!(poll_once(first.as_mut()).is_pending());
    drop(first);
    run_until(|| shard.reader(backend.id()).unwrap().since == 9).await;

    // Never polled at all: the request was recorded by the call.
    drop(lease.downgrade_since(11));
    run_until(|| shard.reader(backend.id()).unwrap().since == 11).await;

    assert_eq!(clock.elapsed(), Duration::ZERO); // synced early, not by a tick
    assert_eq!(lease.stats().early_wakeups, 2);
}

// ---------------------------------------------------------------- seqnos

#[tokio::test]
async fn seqno_hold_is_the_smallest_live_lease_else_the_latest_observed() {
    let (_clock, _shard, lease, _backend) = setup();
    lease.observe_seqno(3);
    let at_3 = lease.lease_seqno();
    lease.observe_seqno(5);
    let at_5 = lease.lease_seqno();
    lease.observe_seqno(8);
    assert_eq!((*at_3.seqno(), *at_5.seqno()), (3, 5));
    assert_eq!(lease.seqno_hold(), 3);
    drop(at_3);
    assert_eq!(lease.seqno_hold(), 5);
    drop(at_5);
    assert_eq!(lease.seqno_hold(), 8);
}

#[tokio::test]
async fn seqno_leases_are_counted_per_seqno() {
    let (_clock, _shard, lease, _backend) = setup();
    lease.observe_seqno(4);
    let first = lease.lease_seqno();
    let second = lease.lease_seqno();
    lease.observe_seqno(9);
    drop(first);
    assert_eq!(lease.seqno_hold(), 4); // the second still holds 4
    drop(second);
    assert_eq!(lease.seqno_hold(), 9);
}

#[tokio::test]
async fn observed_seqno_never_moves_back() {
    let (_clock, _shard, lease, _backend) = setup();
    assert!(lease.observe_seqno(7));
    assert!(!lease.observe_seqno(6));
    assert_eq!(lease.latest_seqno(), 7);
}

#[tokio::test]
async fn heartbeat_sends_the_hold_and_learns_the_latest_seqno() {
    let (clock, shard, lease, backend) = setup();
    run_until(|| clock.pending_sleeps() > 0).await;
    let reading = lease.lease_seqno(); // seqno 0
    shard.advance_seqno(20);

    clock.advance(PERIOD);
    run_until(|| lease.stats().heartbeats == 1).await;
    assert_eq!(shard.reader(backend.id()).unwrap().seqno_hold, 0);
    assert_eq!(shard.gc_horizon(), 0);
    assert_eq!(lease.latest_seqno(), 20); // reported by the backend
    assert_eq!(*lease.lease_seqno().seqno(), 20);

    // Released from a plain thread, outside any runtime.
    std::thread::spawn(move || drop(reading)).join().unwrap();
    assert_eq!(lease.seqno_hold(), 20);
    clock.advance(PERIOD);
    run_until(|| lease.stats().heartbeats == 2).await;
    assert_eq!(shard.gc_horizon(), 20);
}

#[tokio::test]
async fn a_seqno_lease_may_outlive_its_lease() {
    let (_clock, _shard, lease, _backend) = setup();
    let held = lease.lease_seqno();
    drop(lease);
    assert_eq!(*held.seqno(), 0);
    drop(held); // releases into the shared state the task still owns
}

// ------------------------------------------------------------ expiry and drop

#[tokio::test]
async fn dropping_the_lease_on_a_plain_thread_expires_it_from_the_task() {
    let (_clock, shard, lease, _backend) = setup();
    let validity = lease.validity();
    assert_eq!(shard.readers(), 1);
    std::thread::spawn(move || drop(lease)).join().unwrap();

    run_until(|| shard.readers() == 0).await;
    assert_eq!(shard.stats().expired_on_request, 1);
    assert_eq!(validity.check().unwrap_err().reason, InvalidReason::Stopped);
}

#[tokio::test]
async fn expire_waits_until_the_backend_expired_the_lease() {
    let (_clock, shard, lease, _backend) = setup();
    let validity = lease.validity();
    lease.expire().await.unwrap();
    assert_eq!(shard.readers(), 0);
    assert_eq!(validity.check().unwrap_err().reason, InvalidReason::Stopped);
}

#[tokio::test]
async fn expire_interrupts_a_hung_heartbeat() {
    let (clock, shared) = manual();
    let shard: Shard = MemoryShard::new(shared.clone(), TTL, 0, 0);
    let (inner, since, seqno) = shard.register();
    let backend = Gated {
        inner,
        gate: Arc::new(Semaphore::new(0)), // heartbeats never get through
    };
    let lease = Lease::spawn(backend, &config_on(&shared), since, seqno);
    run_until(|| clock.pending_sleeps() > 0).await;
    clock.advance(PERIOD);
    settle().await; // the tick's heartbeat hangs
    lease.expire().await.unwrap();
    assert_eq!(shard.readers(), 0);
}

// ---------------------------------------------------------------- loss

#[tokio::test]
async fn lost_lease_ends_the_task_and_invalidates_the_validity() {
    let (clock, shard, lease, backend) = setup();
    let validity = lease.validity();
    run_until(|| clock.pending_sleeps() > 0).await;

    assert!(shard.remove_reader(backend.id())); // someone else expired us
    clock.advance(PERIOD);
    run_until(|| lease.ended().is_some()).await;

    assert_eq!(lease.ended(), Some(LeaseError::Lost));
    assert_eq!(validity.check().unwrap_err().reason, InvalidReason::Lost);
    assert_eq!(lease.downgrade_since(1).await, Err(LeaseError::Lost));
    // The task is gone: no sleep pending, no more heartbeats.
    settle().await;
    assert_eq!(clock.pending_sleeps(), 0);
    clock.advance(10 * PERIOD);
    settle().await;
    assert_eq!(lease.stats().heartbeats, 0);
    assert_eq!(lease.expire().await, Err(LeaseError::Lost));
}

#[tokio::test]
async fn pending_downgrade_fails_when_the_lease_is_lost() {
    let (clock, shard, lease, backend) = setup();
    run_until(|| clock.pending_sleeps() > 0).await;
    shard.remove_reader(backend.id());
    assert_eq!(lease.downgrade_since(3).await, Err(LeaseError::Lost));
}

// ---------------------------------------------------------------- ticks

#[tokio::test]
async fn ticks_come_every_period_from_the_last_heartbeat() {
    let (clock, shard, lease, backend) = setup();
    let t0 = clock.now();
    run_until(|| clock.pending_sleeps() > 0).await;
    for n in 1..=4 {
        clock.advance(PERIOD - Duration::from_nanos(1));
        settle().await;
        assert_eq!(lease.stats().heartbeats, n - 1);
        clock.advance(Duration::from_nanos(1));
        run_until(|| lease.stats().heartbeats == n).await;
        assert_eq!(
            shard.reader(backend.id()).unwrap().last_heartbeat,
            t0 + PERIOD * n as u32
        );
    }
    assert!(lease.validity().is_valid());
    assert_eq!(lease.validity().deadline(), t0 + 4 * PERIOD + TTL);
}

#[tokio::test]
async fn stall_then_resume_heartbeats_once_not_a_burst() {
    let (clock, _shard, lease, _backend) = setup();
    run_until(|| clock.pending_sleeps() > 0).await;

    // The task does not run for 3.5 periods (three ticks missed), but the
    // lease is still valid (ttl = 4 periods).
    clock.advance(PERIOD * 7 / 2);
    run_until(|| lease.stats().heartbeats == 1).await;
    settle().await;
    assert_eq!(lease.stats().heartbeats, 1);
    assert!(lease.validity().is_valid());

    // The next tick is one period after the catch-up heartbeat.
    clock.advance(PERIOD - MS);
    settle().await;
    assert_eq!(lease.stats().heartbeats, 1);
    clock.advance(MS);
    run_until(|| lease.stats().heartbeats == 2).await;
    settle().await;
    assert_eq!(lease.stats().heartbeats, 2);
}

#[tokio::test(start_paused = true)]
async fn stall_of_the_runtime_under_paused_time_does_not_burst() {
    let config = LeaseConfig::builder(TTL)
        .jitter(Duration::ZERO)
        .build()
        .unwrap();
    let shard: Shard = MemoryShard::new(config.clock().clone(), TTL, 0, 0);
    let (backend, since, seqno) = shard.register();
    let lease = Lease::spawn(backend, &config, since, seqno);
    settle().await;
    // Time jumps 3.5 periods while no task runs (tokio::time::advance does
    // not yield), as if the runtime were blocked.
    tokio::time::advance(PERIOD * 7 / 2).await;
    settle().await;
    assert_eq!(lease.stats().heartbeats, 1);
    tokio::time::sleep(PERIOD - MS).await;
    assert_eq!(lease.stats().heartbeats, 1);
    tokio::time::sleep(2 * MS).await;
    assert_eq!(lease.stats().heartbeats, 2);
}

#[tokio::test]
async fn jitter_only_makes_ticks_earlier() {
    let (clock, shared) = manual();
    let config = LeaseConfig::builder(TTL)
        .jitter(SEC)
        .clock(shared.clone())
        .build()
        .unwrap();
    let shard: Shard = MemoryShard::new(shared, TTL, 0, 0);
    let (backend, since, seqno) = shard.register();
    let lease = Lease::spawn(backend.clone(), &config, since, seqno);
    run_until(|| clock.pending_sleeps() > 0).await;

    let mut starts = vec![clock.now()];
    let step = 50 * MS;
    while starts.len() < 7 {
        clock.advance(step);
        for _ in 0..5 {
            tokio::task::yield_now().await; // a tick's heartbeat needs one poll
        }
        let last = shard.reader(backend.id()).unwrap().last_heartbeat;
        if last != *starts.last().unwrap() {
            starts.push(last);
        }
    }
    let gaps: Vec<Duration> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    for gap in &gaps {
        assert!(*gap >= PERIOD - SEC && *gap <= PERIOD, "{gaps:?}");
    }
    assert!(gaps.iter().any(|gap| *gap < PERIOD - step), "{gaps:?}");
    assert_eq!(lease.stats().heartbeats, 6);
}

// ---------------------------------------------------------------- errors

#[tokio::test]
async fn transient_backend_errors_are_retried_with_backoff() {
    let (clock, shard, lease, backend) = setup();
    let t0 = clock.now();
    run_until(|| clock.pending_sleeps() > 0).await;
    shard.fail_next_heartbeats(3);

    clock.advance(PERIOD); // fails; retry in 1 s
    run_until(|| lease.stats().failed_heartbeats == 1).await;
    clock.advance(SEC); // fails; retry in 2 s
    run_until(|| lease.stats().failed_heartbeats == 2).await;
    clock.advance(2 * SEC); // fails; retry in 4 s
    run_until(|| lease.stats().failed_heartbeats == 3).await;
    clock.advance(4 * SEC - MS);
    settle().await;
    assert_eq!(lease.stats().heartbeats, 0);
    clock.advance(MS); // succeeds
    run_until(|| lease.stats().heartbeats == 1).await;

    let renewed = t0 + PERIOD + 7 * SEC;
    assert_eq!(shard.reader(backend.id()).unwrap().last_heartbeat, renewed);
    assert_eq!(lease.validity().deadline(), renewed + TTL);
    assert!(lease.ended().is_none());
}

#[tokio::test]
async fn backend_errors_until_the_deadline_time_out_the_lease() {
    let (clock, shard, lease, _backend) = setup();
    let validity = lease.validity();
    run_until(|| clock.pending_sleeps() > 0).await;
    shard.fail_next_heartbeats(u64::MAX);
    for _ in 0..70 {
        clock.advance(SEC);
        settle().await;
    }
    assert_eq!(lease.ended(), Some(LeaseError::TimedOut));
    assert_eq!(validity.check().unwrap_err().reason, InvalidReason::Expired);
    assert!(lease.stats().failed_heartbeats >= 10);
    assert_eq!(lease.downgrade_since(1).await, Err(LeaseError::TimedOut));
}

// ---------------------------------------------------------------- config

#[test]
fn config_rejects_jitter_of_a_whole_period_and_bad_heartbeat_settings() {
    assert!(matches!(
        LeaseConfig::builder(TTL).jitter(PERIOD).build(),
        Err(ConfigError::JitterTooLarge { .. })
    ));
    assert!(matches!(
        LeaseConfig::builder(Duration::ZERO).build(),
        Err(ConfigError::Heartbeat(_))
    ));
    assert!(matches!(
        LeaseConfig::builder(TTL).margin(PERIOD * 3).build(),
        Err(ConfigError::Heartbeat(_))
    ));
    let config = LeaseConfig::builder(TTL).build().unwrap();
    assert_eq!((config.period(), config.jitter()), (PERIOD, PERIOD / 8));
}

// ---------------------------------------------------------------- shard model

#[tokio::test]
async fn shard_since_and_gc_horizon_follow_the_slowest_live_reader_and_never_move_back() {
    let (clock, shared) = manual();
    let shard: Shard = MemoryShard::new(shared, TTL, 0, 0);
    let (a, ..) = shard.register();
    let (b, ..) = shard.register();
    shard.advance_seqno(10);
    a.heartbeat(8, 10).await.unwrap();
    b.heartbeat(3, 6).await.unwrap();
    assert_eq!((shard.since(), shard.gc_horizon()), (3, 6));
    b.heartbeat(1, 2).await.unwrap(); // behind: ignored by the shard
    assert_eq!((shard.since(), shard.gc_horizon()), (3, 6));

    clock.advance(TTL / 2);
    a.heartbeat(9, 10).await.unwrap();
    clock.advance(TTL / 2); // b missed its heartbeats for a ttl
    assert_eq!((shard.since(), shard.gc_horizon()), (9, 10));
    assert_eq!(shard.stats().expired_stale, 1);
    assert!(matches!(b.heartbeat(3, 6).await, Err(BackendError::Lost)));

    a.expire().await.unwrap();
    assert_eq!(shard.readers(), 0);
    assert_eq!((shard.since(), shard.gc_horizon()), (9, 10));
    let (c, since, seqno) = shard.register(); // joins at the shard's frontier
    assert_eq!((since, seqno), (9, 10));
    assert_eq!(
        c.heartbeat(9, 10).await.unwrap(),
        HeartbeatReply {
            since: 9,
            seqno: 10
        }
    );
}

/// A runtime that shuts down before the lease task was ever polled drops the
/// task unrun: the handle must still learn that the task ended.
#[test]
fn lease_whose_task_is_dropped_before_its_first_poll_reports_stopped() {
    let (_clock, shared) = manual();
    let config = config_on(&shared);
    let shard = MemoryShard::new(shared, TTL, 0_u64, 0_u64);
    let (backend, since, seqno) = shard.register();
    let doomed = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let lease = {
        let _entered = doomed.enter();
        Lease::spawn(backend, &config, since, seqno)
    };
    drop(doomed); // the task is dropped without ever being polled

    assert_eq!(lease.ended(), Some(LeaseError::Stopped));
    assert!(!lease.validity().is_valid());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        let downgrade = tokio::time::timeout(SEC, lease.downgrade_since(5)).await;
        assert_eq!(downgrade, Ok(Err(LeaseError::Stopped)));
        let expire = tokio::time::timeout(SEC, lease.expire()).await;
        assert_eq!(expire, Ok(Err(LeaseError::Stopped)));
    });
}
