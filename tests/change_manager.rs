//! Behavioural specification of `ChangeManager` / `ChangeGuard`, including
//! the data-loss race of the reference design.
//!
//! Time is tokio's paused time: sleeps below advance it instantly.

mod support;

use std::sync::Arc;
use std::time::Duration;

use leasehold::changelog::{
    ChangeLog, ChangeManager, CommitError, EntryState, FencedCommitError, FinishError,
    ManagerConfigError, MemoryChangeLog, OwnerId, Phase, Removal,
};
use leasehold::clock;
use leasehold::heartbeat::{HeartbeatConfig, InvalidReason};
use leasehold::recovery::{RecoveryConfig, RecoveryLoop};
use support::{FaultyLog, Intent, TwoTier, TwoTierCleanup};

const STALENESS: Duration = Duration::from_secs(40);
const INTERVAL: Duration = Duration::from_secs(10); // ttl 30 s, + 10 s of slack

fn intent(object: &str, new: &str, old: Option<&str>) -> Intent {
    Intent {
        object: object.into(),
        new_blob: new.into(),
        old_blob: old.map(Into::into),
    }
}

struct Setup {
    log: FaultyLog,
    store: TwoTier,
    cleanup: TwoTierCleanup,
    manager: ChangeManager<FaultyLog, Intent, TwoTierCleanup>,
}

fn setup() -> Setup {
    let log = FaultyLog::new(MemoryChangeLog::new(clock::system(), STALENESS));
    let store = TwoTier::default();
    let cleanup = TwoTierCleanup::new(store.clone());
    let heartbeat = HeartbeatConfig::builder(INTERVAL).build().unwrap();
    let manager = ChangeManager::new(
        log.clone(),
        OwnerId::new("writer"),
        heartbeat,
        cleanup.clone(),
    )
    .unwrap();
    Setup {
        log,
        store,
        cleanup,
        manager,
    }
}

fn manager_with_staleness(
    staleness: Duration,
) -> Result<ChangeManager<MemoryChangeLog, Intent, TwoTierCleanup>, ManagerConfigError> {
    let log = MemoryChangeLog::new(clock::system(), staleness);
    let heartbeat = HeartbeatConfig::builder(INTERVAL).build().unwrap(); // ttl 30 s
    ChangeManager::new(
        log,
        OwnerId::new("w"),
        heartbeat,
        TwoTierCleanup::new(TwoTier::default()),
    )
}

#[tokio::test(start_paused = true)]
async fn a_heartbeat_ttl_above_the_staleness_threshold_is_rejected() {
    let err = manager_with_staleness(Duration::from_secs(20)).unwrap_err();
    assert_eq!(
        err,
        ManagerConfigError::InsufficientSlack {
            ttl: Duration::from_secs(30),
            interval: INTERVAL,
            staleness: Duration::from_secs(20),
            required: Duration::from_secs(40),
        }
    );
}

#[tokio::test(start_paused = true)]
async fn zero_slack_between_validity_and_staleness_is_rejected_naming_both_values() {
    // ttl == staleness, margin 0: the entry would become claimable at the
    // very instant the writer's validity ends.
    let err = manager_with_staleness(Duration::from_secs(30)).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, ManagerConfigError::InsufficientSlack { .. }));
    assert!(
        message.contains("30s") && message.contains("40s"),
        "{message}"
    );
    // One interval short of the rule is still refused; the rule itself holds.
    assert!(manager_with_staleness(Duration::from_secs(39)).is_err());
    assert!(manager_with_staleness(Duration::from_secs(40)).is_ok());
}

#[tokio::test(start_paused = true)]
async fn the_heartbeat_keeps_a_long_operation_from_being_claimed() {
    let s = setup();
    let guard = s.manager.record(intent("a", "a.1", None)).await.unwrap();
    for _ in 0..10 {
        tokio::time::sleep(STALENESS).await;
        assert!(
            s.log
                .claim_stale(&OwnerId::new("r"), 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(guard.validity().is_valid());
    }
    assert_eq!(guard.phase(), Phase::Recorded);
    guard.finish().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn finish_cleans_up_for_the_phase_then_removes_the_entry() {
    let s = setup();
    s.store.put_blob("a.0");
    s.store.cas("a", None, "a.0").unwrap();
    let mut guard = s
        .manager
        .record(intent("a", "a.1", Some("a.0")))
        .await
        .unwrap();
    s.store.put_blob("a.1");
    guard.mark_applied();
    assert_eq!(guard.phase(), Phase::Applied);
    guard
        .commit(async { s.store.cas("a", Some("a.0"), "a.1") })
        .await
        .unwrap();
    assert_eq!(guard.phase(), Phase::Committed);
    assert_eq!(guard.finish().await.unwrap(), Removal::Removed);

    assert_eq!(
        s.cleanup.calls(),
        vec![(intent("a", "a.1", Some("a.0")), Phase::Committed)]
    );
    assert!(s.log.list().await.unwrap().is_empty());
    assert!(s.store.has_blob("a.1") && !s.store.has_blob("a.0"));
    assert!(s.store.orphans().is_empty() && s.store.dangling().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_rejected_cas_keeps_the_phase_and_finish_removes_the_new_blob() {
    let s = setup();
    s.store.put_blob("a.0");
    s.store.cas("a", None, "a.0").unwrap();
    let mut guard = s.manager.record(intent("a", "a.1", None)).await.unwrap();
    s.store.put_blob("a.1");
    guard.mark_applied();
    // Expected "no object" but there is one: the CAS fails.
    let err = guard
        .commit(async { s.store.cas("a", None, "a.1") })
        .await
        .unwrap_err();
    assert!(matches!(err, CommitError::Rejected(_)));
    assert_eq!(guard.phase(), Phase::Applied);
    guard.finish().await.unwrap();
    assert!(!s.store.has_blob("a.1"));
    assert_eq!(s.store.meta("a").as_deref(), Some("a.0"));
    assert!(s.log.list().await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_dropped_valid_guard_schedules_its_cleanup_and_removal() {
    let s = setup();
    let mut guard = s.manager.record(intent("a", "a.1", None)).await.unwrap();
    s.store.put_blob("a.1");
    guard.mark_applied();
    drop(guard);
    // Let the scheduled completion run.
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(
        s.cleanup.calls(),
        vec![(intent("a", "a.1", None), Phase::Applied)]
    );
    assert!(!s.store.has_blob("a.1"));
    assert!(s.log.list().await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_dropped_invalid_guard_leaves_its_entry_for_recovery() {
    let s = setup();
    let mut guard = s.manager.record(intent("a", "a.1", None)).await.unwrap();
    s.store.put_blob("a.1");
    guard.mark_applied();
    s.log.stall_refreshes(true);
    tokio::time::sleep(INTERVAL * 3).await;
    assert_eq!(
        guard.validity().check().unwrap_err().reason,
        InvalidReason::Expired
    );
    drop(guard);
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(
        s.cleanup.calls().is_empty(),
        "an invalid guard never cleans up"
    );
    let left = s.log.list().await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].state, EntryState::Active);
    assert!(s.store.has_blob("a.1"), "left for recovery");
    // ... which finds it stale once the threshold has passed.
    tokio::time::sleep(STALENESS - INTERVAL * 3).await;
    assert_eq!(
        s.log
            .claim_stale(&OwnerId::new("r"), 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn finish_on_an_expired_guard_leaves_the_entry_and_reports_it() {
    let s = setup();
    let guard = s.manager.record(intent("a", "a.1", None)).await.unwrap();
    s.log.stall_refreshes(true);
    tokio::time::sleep(INTERVAL * 3).await;
    match guard.finish().await {
        Err(FinishError::Invalid(invalid)) => assert_eq!(invalid.reason, InvalidReason::Expired),
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert!(s.cleanup.calls().is_empty());
    assert_eq!(s.log.list().await.unwrap().len(), 1);
}

/// The data-loss race: the writer's heartbeat hangs past the deadline; the
/// entry goes stale; a recoverer claims it and deletes the writer's new
/// blob (nothing references it). The writer must not commit a reference to
/// that blob any more: its commit is refused.
#[tokio::test(start_paused = true)]
async fn data_loss_race_a_stalled_writer_cannot_commit_after_recovery_deleted_its_blob() {
    let s = setup();
    s.store.put_blob("a.0");
    s.store.cas("a", None, "a.0").unwrap();
    let mut guard = s
        .manager
        .record(intent("a", "a.1", Some("a.0")))
        .await
        .unwrap();
    s.store.put_blob("a.1");
    guard.mark_applied();

    // The heartbeat RPC hangs (slow store, GC pause, ...).
    s.log.stall_refreshes(true);
    let recovery_log = Arc::new(s.log.inner.clone());
    let recovery = RecoveryLoop::spawn::<_, Intent, _>(
        recovery_log,
        OwnerId::new("recovery"),
        s.cleanup.clone(),
        RecoveryConfig::builder().build().unwrap(),
    )
    .unwrap();
    recovery.wait_for_stats(|st| st.cleaned == 1).await;
    assert!(
        !s.store.has_blob("a.1"),
        "recovery removed the unreferenced new blob"
    );
    assert!(s.store.has_blob("a.0"), "and kept the referenced old one");

    // The writer wakes up and tries to commit: refused, nothing attempted.
    let mut attempted = false;
    let err = guard
        .commit(async {
            attempted = true;
            s.store.cas("a", Some("a.0"), "a.1")
        })
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        CommitError::Invalid {
            reason: InvalidReason::Expired,
            in_flight: false
        }
    ));
    assert!(!attempted);
    assert_eq!(s.store.meta("a").as_deref(), Some("a.0"));
    assert!(
        s.store.dangling().is_empty(),
        "no metadata points to a deleted blob"
    );
    drop(guard);
    recovery.shutdown().await;
    assert!(s.store.orphans().is_empty());
    assert!(s.log.list().await.unwrap().is_empty());
}

/// The same race with the commit already in flight (the CAS itself hangs
/// too): it is cut off at the deadline, before recovery can claim the entry.
#[tokio::test(start_paused = true)]
async fn data_loss_race_a_commit_in_flight_is_cut_off_at_the_deadline() {
    let s = setup();
    let mut guard = s.manager.record(intent("a", "a.1", None)).await.unwrap();
    s.store.put_blob("a.1");
    guard.mark_applied();
    s.log.stall_refreshes(true);
    let started = tokio::time::Instant::now();
    let err = guard
        .commit(async {
            // A CAS stuck behind the same pause: it would land much later.
            tokio::time::sleep(STALENESS * 2).await;
            s.store.cas("a", None, "a.1")
        })
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        CommitError::Invalid {
            in_flight: true,
            ..
        }
    ));
    assert!(
        started.elapsed() <= STALENESS,
        "cut off at the validity deadline"
    );
    assert_eq!(guard.phase(), Phase::InDoubt);
    assert_eq!(s.store.meta("a"), None, "the CAS never applied");
}

/// A commit future dropped after its effect landed (a caller's timeout, a
/// `select!`): the guard cannot know it landed, so it must not claim
/// "nothing committed" to the cleanup.
#[tokio::test(start_paused = true)]
async fn a_commit_dropped_after_its_effect_landed_leaves_the_phase_in_doubt() {
    let s = setup();
    let mut guard = s.manager.record(intent("a", "a.1", None)).await.unwrap();
    s.store.put_blob("a.1");
    guard.mark_applied();
    let landed_then_hung = guard.commit(async {
        s.store.cas("a", None, "a.1")?;
        std::future::pending::<Result<(), std::io::Error>>().await
    });
    assert!(
        tokio::time::timeout(Duration::from_secs(1), landed_then_hung)
            .await
            .is_err()
    );
    assert_eq!(guard.phase(), Phase::InDoubt);
    guard.finish().await.unwrap();
    assert_eq!(s.cleanup.calls()[0].1, Phase::InDoubt);
    assert!(s.store.has_blob("a.1"), "the referenced blob is kept");
    assert!(s.store.dangling().is_empty() && s.store.orphans().is_empty());
}

/// The same with a fenced commit: `finish` (or an explicit `settle`)
/// settles the outcome with the store first, and the cleanup is told the
/// truth.
#[tokio::test(start_paused = true)]
async fn a_dropped_fenced_commit_is_settled_with_the_store_before_cleanup() {
    dropped_fenced_commit_is_settled(false).await;
}

#[tokio::test(start_paused = true)]
async fn settle_reports_whether_a_dropped_fenced_commit_landed() {
    dropped_fenced_commit_is_settled(true).await;
}

async fn dropped_fenced_commit_is_settled(settle_first: bool) {
    let s = setup();
    let mut guard = s.manager.record(intent("a", "a.1", None)).await.unwrap();
    s.store.put_blob("a.1");
    guard.mark_applied();
    let log = s.log.inner.clone();
    let store = s.store.clone();
    let landed_then_hung = guard.commit_fenced(|fence| {
        let fence = fence.clone();
        async move {
            log.commit_fenced(&fence, || store.cas("a", None, "a.1"))
                .await?;
            std::future::pending::<Result<(), FencedCommitError<std::io::Error>>>().await
        }
    });
    assert!(
        tokio::time::timeout(Duration::from_secs(1), landed_then_hung)
            .await
            .is_err()
    );
    assert_eq!(guard.phase(), Phase::InDoubt);
    let old_fence = guard.fence();
    if settle_first {
        assert_eq!(
            guard.settle().await.unwrap(),
            Phase::Committed,
            "the store says it landed"
        );
        assert_eq!(guard.phase(), Phase::Committed);
    }
    guard.finish().await.unwrap();
    assert_eq!(
        s.cleanup.calls()[0].1,
        Phase::Committed,
        "the store said it landed"
    );
    assert!(s.store.has_blob("a.1"));
    // Settling moved the entry on: the old fence can commit nothing more.
    let late = s
        .log
        .inner
        .commit_fenced(&old_fence, || Ok::<_, std::io::Error>(()))
        .await;
    assert!(matches!(late, Err(FencedCommitError::Fenced)));
}

/// A writer frozen with its commit on the way (validity checked, then a
/// SIGSTOP or a GC pause): recovery claims the entry and deletes the new
/// blob meanwhile. When the writer resumes, the store refuses its commit;
/// no client-side check of time is involved.
#[tokio::test(start_paused = true)]
async fn a_paused_writer_cannot_commit_after_recovery_claimed_its_entry() {
    let s = setup();
    s.store.put_blob("a.0");
    s.store.cas("a", None, "a.0").unwrap();
    let mut guard = s
        .manager
        .record(intent("a", "a.1", Some("a.0")))
        .await
        .unwrap();
    s.store.put_blob("a.1");
    guard.mark_applied();
    let fence = guard.fence();
    assert!(guard.validity().is_valid(), "checked: still ours");
    // Frozen from here: no heartbeat, no progress.
    s.log.stall_refreshes(true);
    let recovery = RecoveryLoop::spawn::<_, Intent, _>(
        Arc::new(s.log.inner.clone()),
        OwnerId::new("recovery"),
        s.cleanup.clone(),
        RecoveryConfig::builder().build().unwrap(),
    )
    .unwrap();
    recovery.wait_for_stats(|st| st.cleaned == 1).await;
    assert!(!s.store.has_blob("a.1"));
    // The writer resumes inside its commit, past any validity check.
    let resumed = s
        .log
        .inner
        .commit_fenced(&fence, || s.store.cas("a", Some("a.0"), "a.1"))
        .await;
    assert!(matches!(resumed, Err(FencedCommitError::Fenced)));
    assert_eq!(s.store.meta("a").as_deref(), Some("a.0"));
    assert!(
        s.store.dangling().is_empty(),
        "no reference to a deleted blob"
    );
    drop(guard);
    recovery.shutdown().await;
    assert!(s.store.orphans().is_empty());
}

/// A writer that committed and then stalled before finishing: recovery must
/// keep the blob the committed metadata references, and delete the old one.
#[tokio::test(start_paused = true)]
async fn recovery_of_a_committed_write_keeps_the_referenced_blob() {
    let s = setup();
    s.store.put_blob("a.0");
    s.store.cas("a", None, "a.0").unwrap();
    let mut guard = s
        .manager
        .record(intent("a", "a.1", Some("a.0")))
        .await
        .unwrap();
    s.store.put_blob("a.1");
    guard.mark_applied();
    guard
        .commit(async { s.store.cas("a", Some("a.0"), "a.1") })
        .await
        .unwrap();
    s.log.stall_refreshes(true);
    let recovery = RecoveryLoop::spawn::<_, Intent, _>(
        Arc::new(s.log.inner.clone()),
        OwnerId::new("recovery"),
        s.cleanup.clone(),
        RecoveryConfig::builder().build().unwrap(),
    )
    .unwrap();
    recovery.wait_for_stats(|st| st.cleaned == 1).await;
    assert!(
        s.store.has_blob("a.1"),
        "the committed blob survives recovery"
    );
    assert!(!s.store.has_blob("a.0"));
    assert!(s.store.dangling().is_empty() && s.store.orphans().is_empty());
    // The writer's late finish is refused (its validity expired).
    assert!(matches!(guard.finish().await, Err(FinishError::Invalid(_))));
    recovery.shutdown().await;
}

/// The store's clock jumps (or the writer's refreshes were too slow on the
/// store's side): a rival claims the entry. The writer's next heartbeat is
/// fenced out — it changes nothing — and its guard turns invalid at once.
#[tokio::test(start_paused = true)]
async fn a_fenced_out_heartbeat_changes_nothing_and_invalidates_the_guard() {
    let store_clock = leasehold::clock::ManualClock::new();
    let log = MemoryChangeLog::new(Arc::new(store_clock.clone()), STALENESS);
    let store = TwoTier::default();
    let cleanup = TwoTierCleanup::new(store.clone());
    let heartbeat = HeartbeatConfig::builder(INTERVAL).build().unwrap();
    let manager = ChangeManager::new(
        log.clone(),
        OwnerId::new("writer"),
        heartbeat,
        cleanup.clone(),
    )
    .unwrap();
    let mut guard = manager.record(intent("a", "a.1", None)).await.unwrap();
    store.put_blob("a.1");
    guard.mark_applied();

    store_clock.advance(STALENESS);
    let rival = log.claim_stale(&OwnerId::new("rival"), 10).await.unwrap();
    assert_eq!(rival.len(), 1);
    let owned_by_rival = log.get(guard.fence().id()).await.unwrap().unwrap();

    // The writer's next beat (10 s on its own clock) is fenced out.
    tokio::time::sleep(INTERVAL + Duration::from_millis(1)).await;
    assert_eq!(
        guard.validity().check().unwrap_err().reason,
        InvalidReason::Fenced
    );
    assert_eq!(
        log.get(guard.fence().id()).await.unwrap().unwrap(),
        owned_by_rival,
        "the fenced-out refresh changed nothing"
    );
    let err = guard
        .commit(async { store.cas("a", None, "a.1") })
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        CommitError::Invalid {
            reason: InvalidReason::Fenced,
            in_flight: false
        }
    ));
    assert!(matches!(guard.finish().await, Err(FinishError::Invalid(_))));
    assert!(cleanup.calls().is_empty());
    // The rival still owns it and removes it.
    assert_eq!(log.remove(&rival[0].fence).await.unwrap(), Removal::Removed);
}
