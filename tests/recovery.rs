//! Behavioural specification of `RecoveryLoop`. Time is tokio's paused time.

mod support;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use leasehold::changelog::{
    BoxError, ChangeLog, Cleanup, DecodeError, EntryState, MemoryChangeLog, OwnerId, Payload, Phase,
};
use leasehold::clock;
use leasehold::recovery::{RecoveryConfig, RecoveryLoop};
use support::FaultyLog;

const STALENESS: Duration = Duration::from_secs(30);

/// A payload that refuses to decode the bytes `poison`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Job(String);

impl Payload for Job {
    fn encode(&self) -> Vec<u8> {
        self.0.as_bytes().to_vec()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        match bytes {
            b"poison" => Err(DecodeError::new("poison pill")),
            bytes => Ok(Job(String::from_utf8_lossy(bytes).into_owned())),
        }
    }
}

/// Counts cleanups per job; fails jobs named `fail*`; takes `delay` each.
#[derive(Clone, Default)]
struct Counting {
    calls: Arc<Mutex<HashMap<String, usize>>>,
    delay: Duration,
    hang: bool,
}

impl Counting {
    fn count(&self, job: &str) -> usize {
        self.calls.lock().unwrap().get(job).copied().unwrap_or(0)
    }
}

impl Cleanup<Job> for Counting {
    async fn cleanup(&self, job: &Job, phase: Phase) -> Result<(), BoxError> {
        assert_eq!(phase, Phase::Unknown, "recovery does not know the phase");
        *self.calls.lock().unwrap().entry(job.0.clone()).or_default() += 1;
        if self.hang {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(self.delay).await;
        if job.0.starts_with("fail") {
            return Err(format!("cannot clean {}", job.0).into());
        }
        Ok(())
    }
}

fn memory_log() -> MemoryChangeLog {
    MemoryChangeLog::new(clock::system(), STALENESS)
}

async fn record_jobs(log: &impl ChangeLog, names: impl IntoIterator<Item = String>) {
    for name in names {
        log.record(&OwnerId::new("crashed"), name.into_bytes())
            .await
            .unwrap();
    }
}

fn config() -> leasehold::recovery::RecoveryConfigBuilder {
    RecoveryConfig::builder()
}

#[tokio::test(start_paused = true)]
async fn loops_sharing_a_log_clean_every_stale_entry_exactly_once() {
    let log = Arc::new(memory_log());
    record_jobs(&*log, (0..250).map(|i| format!("job-{i}"))).await;
    let cleanup = Counting {
        delay: Duration::from_millis(50),
        ..Counting::default()
    };
    let loops: Vec<_> = (0..3)
        .map(|n| {
            RecoveryLoop::spawn::<_, Job, _>(
                Arc::clone(&log),
                OwnerId::new(format!("recovery-{n}")),
                cleanup.clone(),
                config().batch_size(20).build().unwrap(),
            )
            .unwrap()
        })
        .collect();
    while !log.is_empty() {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let mut total = leasehold::recovery::RecoveryStats::default();
    for recovery in loops {
        let stats = recovery.shutdown().await;
        total.claimed += stats.claimed;
        total.cleaned += stats.cleaned;
        total.lost += stats.lost;
    }
    assert_eq!((total.claimed, total.cleaned, total.lost), (250, 250, 0));
    for i in 0..250 {
        assert_eq!(cleanup.count(&format!("job-{i}")), 1, "job-{i}");
    }
}

#[tokio::test(start_paused = true)]
async fn every_claimed_entry_of_a_batch_is_kept_alive_until_processed() {
    let log = Arc::new(memory_log());
    record_jobs(&*log, (0..10).map(|i| format!("slow-{i}"))).await;
    // Each cleanup takes half the staleness threshold: the last entry of the
    // batch waits 4.5 thresholds for its turn.
    let cleanup = Counting {
        delay: STALENESS / 2,
        ..Counting::default()
    };
    let recovery = RecoveryLoop::spawn::<_, Job, _>(
        Arc::clone(&log),
        OwnerId::new("recovery"),
        cleanup.clone(),
        config().batch_size(10).build().unwrap(),
    )
    .unwrap();
    recovery.wait_for_stats(|s| s.claimed == 10).await;
    let rival = OwnerId::new("rival");
    while !log.is_empty() {
        assert!(
            log.claim_stale(&rival, 100).await.unwrap().is_empty(),
            "a claimed entry went stale while waiting in its batch"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let stats = recovery.shutdown().await;
    assert_eq!((stats.cleaned, stats.lost), (10, 0));
}

#[tokio::test(start_paused = true)]
async fn an_undecodable_entry_is_quarantined_and_reported_not_retried() {
    let log = Arc::new(memory_log());
    record_jobs(&*log, ["a".into(), "poison".into(), "b".into()]).await;
    let cleanup = Counting::default();
    let recovery = RecoveryLoop::spawn::<_, Job, _>(
        Arc::clone(&log),
        OwnerId::new("recovery"),
        cleanup.clone(),
        config().build().unwrap(),
    )
    .unwrap();
    recovery
        .wait_for_stats(|s| s.cleaned == 2 && s.quarantined == 1)
        .await;
    // Much later, it has not been claimed again.
    tokio::time::sleep(STALENESS * 20).await;
    let reports = recovery.quarantine_reports();
    let stats = recovery.shutdown().await;
    assert_eq!(stats.claimed, 3);
    assert_eq!(reports.len(), 1);
    assert!(
        reports[0].reason.contains("poison pill"),
        "{}",
        reports[0].reason
    );
    let left = log.list().await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].payload, b"poison");
    assert!(matches!(left[0].state, EntryState::Quarantined { .. }));
}

#[tokio::test(start_paused = true)]
async fn a_cleanup_that_keeps_failing_is_quarantined_after_its_attempts() {
    let log = Arc::new(memory_log());
    record_jobs(&*log, ["fail-1".into(), "ok".into()]).await;
    let cleanup = Counting::default();
    let recovery = RecoveryLoop::spawn::<_, Job, _>(
        Arc::clone(&log),
        OwnerId::new("recovery"),
        cleanup.clone(),
        config().cleanup_attempts(3).build().unwrap(),
    )
    .unwrap();
    recovery
        .wait_for_stats(|s| s.cleaned == 1 && s.quarantined == 1)
        .await;
    tokio::time::sleep(STALENESS * 20).await;
    let reports = recovery.quarantine_reports();
    let stats = recovery.shutdown().await;
    assert_eq!(cleanup.count("fail-1"), 3);
    assert_eq!(stats.errors, 3);
    assert!(
        reports[0].reason.contains("cleanup attempted 3 times"),
        "{}",
        reports[0].reason
    );
    assert_eq!(reports[0].attempts, 3);
    assert_eq!(reports[0].failures.len(), 3);
    assert!(reports[0].reason.contains("cannot clean fail-1"));
}

#[tokio::test(start_paused = true)]
async fn an_entry_whose_recoverers_die_in_its_cleanup_is_quarantined_without_another_cleanup() {
    let log = Arc::new(memory_log());
    record_jobs(&*log, ["crashy".into()]).await;
    // Three recoverers claimed it, started a cleanup attempt, and died in it.
    for n in 0..3 {
        tokio::time::sleep(STALENESS).await;
        let claimed = log.claim_stale(&OwnerId::new(format!("dead-{n}")), 1).await;
        let claimed = claimed.unwrap();
        assert_eq!(claimed.len(), 1);
        log.start_attempt(&claimed[0].fence).await.unwrap();
    }
    let cleanup = Counting::default();
    let recovery = RecoveryLoop::spawn::<_, Job, _>(
        Arc::clone(&log),
        OwnerId::new("recovery"),
        cleanup.clone(),
        config().cleanup_attempts(3).build().unwrap(),
    )
    .unwrap();
    recovery.wait_for_stats(|s| s.quarantined == 1).await;
    assert_eq!(cleanup.count("crashy"), 0);
    let report = &recovery.quarantine_reports()[0];
    assert_eq!(report.attempts, 3);
    assert!(
        report.reason.contains("attempted 3 times"),
        "{}",
        report.reason
    );
    recovery.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_an_idle_loop_and_a_loop_stuck_in_a_cleanup() {
    let log = Arc::new(memory_log());
    let idle = RecoveryLoop::spawn::<_, Job, _>(
        Arc::clone(&log),
        OwnerId::new("idle"),
        Counting::default(),
        config().build().unwrap(),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(idle.is_running());
    let polls = idle.shutdown().await.polls;
    assert!(polls >= 5);

    record_jobs(&*log, ["stuck".into()]).await;
    let hanging = Counting {
        hang: true,
        ..Counting::default()
    };
    let stuck = RecoveryLoop::spawn::<_, Job, _>(
        Arc::clone(&log),
        OwnerId::new("stuck"),
        hanging.clone(),
        config().build().unwrap(),
    )
    .unwrap();
    stuck.wait_for_stats(|s| s.claimed == 1).await;
    while hanging.count("stuck") == 0 {
        tokio::task::yield_now().await;
    }
    let stats = stuck.shutdown().await;
    assert_eq!((stats.claimed, stats.cleaned), (1, 0));
    // The interrupted entry is still there, claimable again once stale.
    tokio::time::sleep(STALENESS).await;
    assert_eq!(
        log.claim_stale(&OwnerId::new("next"), 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn failed_polls_back_off_100ms_times_1_5_capped_at_30s_and_reset_after_success() {
    let log = FaultyLog::new(memory_log());
    log.failing_claims.store(18, Ordering::SeqCst);
    let recovery = RecoveryLoop::spawn::<_, Job, _>(
        Arc::new(log.clone()),
        OwnerId::new("recovery"),
        Counting::default(),
        // Exact delays: the test asserts the schedule without jitter.
        config()
            .idle_wait(Duration::from_secs(1))
            .backoff_jitter(false)
            .build()
            .unwrap(),
    )
    .unwrap();
    // 18 failures, a success (idle 1 s), then 2 more failures.
    recovery.wait_for_stats(|s| s.polls == 19).await;
    log.failing_claims.store(2, Ordering::SeqCst);
    recovery.wait_for_stats(|s| s.polls == 22).await;
    let stats = recovery.shutdown().await;
    assert_eq!(stats.errors, 20);

    let times = log.claim_times.lock().unwrap().clone();
    let gaps: Vec<f64> = times
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64() * 1000.0)
        .collect();
    let mut expected = Vec::new();
    let mut wait = 100.0_f64;
    for _ in 0..18 {
        expected.push(wait);
        wait = (wait * 1.5).min(30_000.0);
    }
    expected.push(1000.0); // idle wait after the successful (empty) poll
    expected.extend([100.0, 150.0]); // backoff restarted from 100 ms
    assert_eq!(gaps.len(), expected.len(), "gaps {gaps:?}");
    for (i, (gap, want)) in gaps.iter().zip(&expected).enumerate() {
        assert!(
            (gap - want).abs() < 2.0,
            "gap {i}: {gap} ms, expected {want} ms"
        );
    }
    assert_eq!(expected[17], 30_000.0, "the cap is reached");
}

#[tokio::test(start_paused = true)]
async fn after_a_batch_the_loop_polls_again_at_once() {
    let log = FaultyLog::new(memory_log());
    record_jobs(&log, (0..5).map(|i| format!("j{i}"))).await;
    tokio::time::sleep(STALENESS).await;
    let recovery = RecoveryLoop::spawn::<_, Job, _>(
        Arc::new(log.clone()),
        OwnerId::new("recovery"),
        Counting::default(),
        config()
            .batch_size(2)
            .idle_wait(Duration::from_secs(60))
            .build()
            .unwrap(),
    )
    .unwrap();
    recovery
        .wait_for_stats(|s| s.cleaned == 5 && s.polls == 4)
        .await;
    let times = log.claim_times.lock().unwrap().clone();
    assert_eq!(times.len(), 4);
    // Three batches (2 + 2 + 1) and the poll that found nothing, all at once.
    assert!(times[3] - times[0] < Duration::from_millis(1), "{times:?}");
    recovery.shutdown().await;
}
