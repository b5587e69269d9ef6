//! `RecoveryLoop` against poison entries and crashing recoverers: one
//! entry's cleanup hanging or panicking, recoverers dying before cleaning,
//! a batch cut off mid-way. Recovery must never stop for one entry, and
//! every claimed entry must end in exactly one counted outcome.
//!
//! Time is tokio's paused time; every test runs under [`limited`], so a
//! hang fails the test instead of the run.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use leasehold::changelog::{
    BoxError, ChangeLog, Cleanup, DecodeError, EntryState, MemoryChangeLog, OwnerId, Payload, Phase,
};
use leasehold::clock;
use leasehold::recovery::{
    RecoveryConfig, RecoveryConfigError, RecoveryError, RecoveryLoop, RecoveryStats,
};
use support::FaultyLog;

const STALENESS: Duration = Duration::from_secs(30);

/// Runs `body` with a limit of virtual time (paused clock) and of real time,
/// so that a lost wake-up or a stuck loop fails fast.
async fn limited<F: std::future::Future<Output = ()>>(what: &str, body: F) {
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = Arc::clone(&done);
    let name = what.to_owned();
    std::thread::spawn(move || {
        for _ in 0..600 {
            std::thread::sleep(Duration::from_millis(100));
            if flag.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
        }
        eprintln!("{name}: still running after 60 s of real time: aborting");
        std::process::abort();
    });
    let outcome = tokio::time::timeout(Duration::from_secs(6 * 3600), body).await;
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    outcome.unwrap_or_else(|_| panic!("{what}: not done after 6 h of (paused) time"));
}

/// A job named by its payload; `panic-decode*` panics in decode and
/// `poison*` does not decode.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Job(String);

impl Payload for Job {
    fn encode(&self) -> Vec<u8> {
        self.0.as_bytes().to_vec()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let name = String::from_utf8_lossy(bytes).into_owned();
        if name.starts_with("panic-decode") {
            panic!("decoder exploded on {name}");
        }
        if name.starts_with("poison") {
            return Err(DecodeError::new("poison pill"));
        }
        Ok(Job(name))
    }
}

/// The cleanup decided by the job's name: `hang*` never returns, `panic*`
/// panics, `fail*` fails, anything else succeeds. Counts its calls.
#[derive(Clone, Default)]
struct Scripted {
    calls: Arc<Mutex<HashMap<String, usize>>>,
    delay: Duration,
}

impl Scripted {
    fn count(&self, job: &str) -> usize {
        self.calls.lock().unwrap().get(job).copied().unwrap_or(0)
    }
}

impl Cleanup<Job> for Scripted {
    async fn cleanup(&self, job: &Job, _: Phase) -> Result<(), BoxError> {
        *self.calls.lock().unwrap().entry(job.0.clone()).or_default() += 1;
        if job.0.starts_with("hang") {
            std::future::pending::<()>().await;
        }
        if job.0.starts_with("panic") {
            panic!("cleanup exploded on {}", job.0);
        }
        tokio::time::sleep(self.delay).await;
        if job.0.starts_with("fail") {
            return Err(format!("cannot clean {}", job.0).into());
        }
        Ok(())
    }
}

fn memory_log() -> Arc<MemoryChangeLog> {
    Arc::new(MemoryChangeLog::new(clock::system(), STALENESS))
}

async fn record(log: &impl ChangeLog, names: &[&str]) {
    for name in names {
        log.record(&OwnerId::new("crashed-writer"), name.as_bytes().to_vec())
            .await
            .unwrap();
    }
}

fn spawn(log: &Arc<MemoryChangeLog>, cleanup: Scripted, config: RecoveryConfig) -> RecoveryLoop {
    RecoveryLoop::spawn::<_, Job, _>(Arc::clone(log), OwnerId::new("recovery"), cleanup, config)
        .unwrap()
}

/// Every claimed entry ends in exactly one counted outcome.
fn assert_accounted(stats: &RecoveryStats) {
    assert_eq!(
        stats.claimed,
        stats.cleaned + stats.quarantined + stats.lost + stats.released,
        "a claimed entry ended in no counted outcome: {stats:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_hung_cleanup_is_abandoned_at_its_deadline_and_the_loop_goes_on() {
    limited("hung cleanup", async {
        let log = memory_log();
        record(&*log, &["hang", "a", "b"]).await;
        let cleanup = Scripted::default();
        let recovery = spawn(
            &log,
            cleanup.clone(),
            RecoveryConfig::builder().build().unwrap(),
        );
        // The batch-mates of the hung entry are cleaned.
        recovery.wait_for_stats(|s| s.cleaned == 2).await;
        assert!(recovery.is_running());
        // Entries recorded later are claimed and cleaned too.
        record(&*log, &["late"]).await;
        recovery.wait_for_stats(|s| s.cleaned == 3).await;
        // The hung entry is retried after each abandonment, and parked
        // after its last attempt.
        recovery.wait_for_stats(|s| s.quarantined == 1).await;
        assert_eq!(cleanup.count("hang"), 3);
        let reports = recovery.quarantine_reports();
        assert!(
            reports[0].reason.contains("deadline"),
            "{}",
            reports[0].reason
        );
        assert_eq!(reports[0].attempts, 3);
        assert_eq!(reports[0].failures.len(), 3);
        let error = recovery.last_error().expect("the abandonment is reported");
        assert!(
            matches!(*error, RecoveryError::DeadlineExceeded { attempt: 3, .. }),
            "{error:?}"
        );
        let stats = recovery.shutdown().await;
        assert_eq!((stats.cleaned, stats.quarantined), (3, 1));
        assert_eq!((stats.abandoned, stats.failed_attempts), (3, 3));
        assert_accounted(&stats);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_hung_cleanup_stops_being_refreshed_so_another_recoverer_can_take_it() {
    limited("hung cleanup released", async {
        let log = memory_log();
        record(&*log, &["hang"]).await;
        // The loop idles long after a poll, so the rival looks first.
        let config = RecoveryConfig::builder()
            .idle_wait(Duration::from_secs(3600))
            .build()
            .unwrap();
        let recovery = spawn(&log, Scripted::default(), config);
        recovery.wait_for_stats(|s| s.claimed == 1).await;
        // Once the deadline (4 x staleness by default) has passed and the
        // entry has stayed unrefreshed for the threshold, a rival claims it.
        let rival = OwnerId::new("rival");
        let mut taken = false;
        for _ in 0..(6 * 30) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if !log.claim_stale(&rival, 10).await.unwrap().is_empty() {
                taken = true;
                break;
            }
        }
        assert!(taken, "the hung entry was refreshed forever");
        drop(recovery);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_panicking_cleanup_or_decode_is_contained_and_the_others_are_cleaned() {
    limited("panicking cleanup", async {
        let log = memory_log();
        record(&*log, &["panic-1", "a", "panic-decode-2", "b"]).await;
        let cleanup = Scripted::default();
        let recovery = spawn(
            &log,
            cleanup.clone(),
            RecoveryConfig::builder().build().unwrap(),
        );
        recovery
            .wait_for_stats(|s| s.cleaned == 2 && s.quarantined == 2)
            .await;
        assert!(recovery.is_running(), "a panic stopped the loop");
        let reports = recovery.quarantine_reports();
        let reasons: Vec<&str> = reports.iter().map(|r| r.reason.as_str()).collect();
        assert!(
            reasons
                .iter()
                .any(|r| r.contains("cleanup exploded on panic-1")),
            "{reasons:?}"
        );
        assert!(
            reasons
                .iter()
                .any(|r| r.contains("decoder exploded on panic-decode-2")),
            "{reasons:?}"
        );
        assert_eq!(cleanup.count("panic-1"), 3);
        let stats = recovery.shutdown().await;
        assert_eq!((stats.cleaned, stats.quarantined), (2, 2));
        assert_eq!(stats.failed_attempts, 6);
        assert_accounted(&stats);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn healthy_entries_survive_recoverers_that_died_before_cleaning_them() {
    limited("dead recoverers", async {
        let log = memory_log();
        let names: Vec<String> = (0..20).map(|i| format!("job-{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        record(&*log, &names).await;
        // Six recoverers each claim the whole batch and die before cleaning.
        for n in 0..6 {
            tokio::time::sleep(STALENESS).await;
            let claimed = log
                .claim_stale(&OwnerId::new(format!("dead-{n}")), 100)
                .await
                .unwrap();
            assert_eq!(claimed.len(), 20);
        }
        let cleanup = Scripted::default();
        let recovery = spawn(
            &log,
            cleanup.clone(),
            RecoveryConfig::builder().build().unwrap(),
        );
        recovery
            .wait_for_stats(|s| s.cleaned + s.quarantined == 20)
            .await;
        let stats = recovery.shutdown().await;
        assert_eq!((stats.cleaned, stats.quarantined), (20, 0), "{stats:?}");
        assert_eq!(stats.attempts, 20);
        assert_accounted(&stats);
        for name in names {
            assert_eq!(cleanup.count(name), 1, "{name}");
        }
        assert!(log.is_empty());
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn entries_of_a_batch_cut_off_by_a_stalled_heartbeat_are_counted() {
    limited("batch cut off", async {
        let faulty = FaultyLog::new(MemoryChangeLog::new(clock::system(), STALENESS));
        let names: Vec<String> = (0..10).map(|i| format!("slow-{i}")).collect();
        for name in &names {
            faulty
                .record(&OwnerId::new("crashed-writer"), name.as_bytes().to_vec())
                .await
                .unwrap();
        }
        let log = Arc::new(faulty.clone());
        let cleanup = Scripted {
            delay: STALENESS / 3,
            ..Scripted::default()
        };
        let recovery = RecoveryLoop::spawn::<_, Job, _>(
            Arc::clone(&log),
            OwnerId::new("recovery"),
            cleanup.clone(),
            RecoveryConfig::builder().build().unwrap(),
        )
        .unwrap();
        recovery.wait_for_stats(|s| s.claimed == 10).await;
        // The store stops answering heartbeats: the batch's validity lapses
        // with entries left unprocessed.
        faulty.stall_refreshes(true);
        recovery.wait_for_stats(|s| s.cleaned >= 1).await;
        tokio::time::sleep(STALENESS * 2).await;
        faulty.stall_refreshes(false);
        while !faulty.inner.is_empty() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let stats = recovery.shutdown().await;
        assert!(stats.claimed > 10, "nothing was cut off: {stats:?}");
        assert_accounted(&stats);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn entries_left_unprocessed_at_shutdown_are_counted() {
    limited("shutdown mid-batch", async {
        let log = memory_log();
        record(&*log, &["a", "b", "c", "d", "e"]).await;
        let cleanup = Scripted {
            delay: Duration::from_secs(1),
            ..Scripted::default()
        };
        let recovery = spawn(&log, cleanup, RecoveryConfig::builder().build().unwrap());
        recovery.wait_for_stats(|s| s.cleaned == 2).await;
        let stats = recovery.shutdown().await;
        assert_eq!(stats.claimed, 5);
        assert_accounted(&stats);
        let left = log.list().await.unwrap();
        assert_eq!(left.len(), 3);
        assert!(left.iter().all(|e| e.state == EntryState::Active));
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_permanent_poll_error_is_reported_typed_and_retried_only_at_the_longest_backoff() {
    limited("permanent poll error", async {
        let faulty = FaultyLog::new(MemoryChangeLog::new(clock::system(), STALENESS));
        faulty
            .broken_schema
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let recovery = RecoveryLoop::spawn::<_, Job, _>(
            Arc::new(faulty.clone()),
            OwnerId::new("recovery"),
            Scripted::default(),
            RecoveryConfig::builder().build().unwrap(),
        )
        .unwrap();
        recovery.wait_for_stats(|s| s.polls == 4).await;
        let error = recovery.last_error().expect("reported");
        assert!(!error.is_transient());
        let RecoveryError::Poll(source) = &*error else {
            panic!("{error:?}");
        };
        assert!(!source.is_transient());
        // The source chain is kept.
        let cause = std::error::Error::source(&*error).expect("a source");
        assert!(cause.to_string().contains("schema version 99"), "{cause}");
        let times = faulty.claim_times.lock().unwrap().clone();
        for gap in times.windows(2).map(|w| w[1] - w[0]) {
            assert!(gap >= Duration::from_secs(30), "retried after {gap:?}");
        }
        recovery.shutdown().await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn quarantine_reports_are_bounded_and_can_be_drained() {
    limited("bounded reports", async {
        let log = memory_log();
        let names: Vec<String> = (0..1005).map(|i| format!("poison-{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        record(&*log, &names).await;
        let recovery = spawn(
            &log,
            Scripted::default(),
            RecoveryConfig::builder().batch_size(1005).build().unwrap(),
        );
        recovery.wait_for_stats(|s| s.quarantined == 1005).await;
        let stats = recovery.stats();
        assert_eq!(stats.reports_dropped, 5);
        let kept = recovery.quarantine_reports();
        assert_eq!(kept.len(), leasehold::recovery::REPORTS_KEPT);
        assert_eq!(recovery.drain_quarantine_reports().len(), kept.len());
        assert!(recovery.quarantine_reports().is_empty());
        recovery.shutdown().await;
    })
    .await;
}

#[test]
fn a_cleanup_deadline_shorter_than_the_staleness_threshold_is_refused() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let config = RecoveryConfig::builder()
            .cleanup_deadline(STALENESS / 2)
            .build()
            .unwrap();
        let refused = RecoveryLoop::spawn::<_, Job, _>(
            memory_log(),
            OwnerId::new("recovery"),
            Scripted::default(),
            config,
        );
        assert!(matches!(
            refused,
            Err(RecoveryConfigError::CleanupDeadlineTooShort { deadline, staleness })
                if deadline == STALENESS / 2 && staleness == STALENESS
        ));
    });
}
