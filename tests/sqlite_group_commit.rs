//! Group commit on the SQLite changelog: what a batch of concurrent writes
//! keeps. Each test forms a batch the same way: another connection holds the
//! write lock while the operations are queued (each future polled once, which
//! queues it), so they are committed together once the lock is released.
#![cfg(feature = "sqlite")]

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use leasehold::changelog::{
    BoxError, ChangeLog, ChangeLogError, Durability, Fence, FencedCommitError, OwnerId, Removal,
    SqliteChangeLog,
};
use leasehold::clock::ManualClock;

const STALENESS: Duration = Duration::from_secs(30);

type Call<T> = Pin<Box<dyn Future<Output = T> + Send>>;

async fn open(path: &Path, durability: Durability, clock: &ManualClock) -> SqliteChangeLog {
    let log = SqliteChangeLog::builder(path)
        .durability(durability)
        .staleness(STALENESS)
        .clock(Arc::new(clock.clone()))
        .open()
        .await
        .unwrap();
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch("CREATE TABLE IF NOT EXISTS markers (name TEXT NOT NULL)")
        .unwrap();
    log
}

/// Another process's write lock on the file: while it is held, the log's
/// writes queue up.
struct WriteLock(rusqlite::Connection);

impl WriteLock {
    fn take(path: &Path) -> Self {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        WriteLock(conn)
    }

    fn release(self) {
        self.0.execute_batch("ROLLBACK").unwrap();
    }
}

/// Polls each call once: that queues its write. None may finish while the
/// write lock is held.
async fn queue_all<T>(calls: &mut [Call<T>]) {
    for call in calls.iter_mut() {
        assert!(
            futures::poll!(call.as_mut()).is_pending(),
            "a write finished while another connection held the write lock"
        );
    }
}

/// The markers committed, as another connection sees them.
fn committed_markers(path: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT name FROM markers ORDER BY name")
        .unwrap();
    stmt.query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn count_committed(path: &Path) -> i64 {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row("SELECT count(*) FROM markers", [], |row| row.get(0))
        .unwrap()
}

/// A fenced commit that inserts `marker`, then fails if `fail`.
fn commit_marker(
    log: &SqliteChangeLog,
    fence: &Fence,
    marker: String,
    fail: bool,
) -> Call<Result<(), FencedCommitError<BoxError>>> {
    Box::pin(log.commit_fenced(fence, move |tx| {
        tx.execute("INSERT INTO markers VALUES (?1)", [&marker])?;
        if fail {
            return Err::<(), BoxError>(format!("{marker} refused").into());
        }
        Ok(())
    }))
}

async fn for_each_durability<Fut>(test: impl Fn(Durability) -> Fut)
where
    Fut: Future<Output = ()>,
{
    for durability in [Durability::PowerLoss, Durability::ProcessCrash] {
        test(durability).await;
    }
}

/// Half of a batch's commits fail: each failure is its caller's alone, and
/// nothing it wrote is visible; the others commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_operation_in_a_batch_fails_alone_and_leaves_nothing_visible() {
    for_each_durability(|durability| async move {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.db");
        let log = open(&path, durability, &ManualClock::new()).await;
        let writer = OwnerId::new("w");
        let mut fences = Vec::new();
        for i in 0..20_u8 {
            fences.push(log.record(&writer, vec![i]).await.unwrap());
        }
        let lock = WriteLock::take(&path);
        let mut calls: Vec<_> = fences
            .iter()
            .enumerate()
            .map(|(i, fence)| commit_marker(&log, fence, format!("{i:02}"), i % 2 == 1))
            .collect();
        queue_all(&mut calls).await;
        lock.release();
        let results = futures::future::join_all(calls).await;
        for (i, result) in results.iter().enumerate() {
            match (i % 2, result) {
                (0, Ok(())) | (1, Err(FencedCommitError::Rejected(_))) => {}
                (_, other) => panic!("{durability:?}: commit {i}: {other:?}"),
            }
        }
        let expected: Vec<String> = (0..20).step_by(2).map(|i| format!("{i:02}")).collect();
        assert_eq!(committed_markers(&path), expected, "{durability:?}");
        for (i, fence) in fences.iter().enumerate() {
            let entry = log.get(fence.id()).await.unwrap().unwrap();
            assert_eq!(entry.committed, i % 2 == 0, "{durability:?}: entry {i}");
        }
    })
    .await;
}

/// Every operation of a batch runs in one transaction: while any of them
/// runs, none of the others is visible to another connection, and each is
/// visible once its caller has its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_is_acknowledged_only_after_its_batch_commits() {
    for_each_durability(|durability| async move {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.db");
        let log = open(&path, durability, &ManualClock::new()).await;
        let writer = OwnerId::new("w");
        let mut fences = Vec::new();
        for i in 0..16_u8 {
            fences.push(log.record(&writer, vec![i]).await.unwrap());
        }
        let lock = WriteLock::take(&path);
        let outside = path.clone();
        let mut calls: Vec<Call<Result<i64, FencedCommitError<BoxError>>>> = fences
            .iter()
            .enumerate()
            .map(|(i, fence)| {
                let outside = outside.clone();
                let call = log.commit_fenced(fence, move |tx| {
                    tx.execute("INSERT INTO markers VALUES (?1)", [format!("{i:02}")])?;
                    // What another connection sees of the batch, mid-batch.
                    Ok::<_, BoxError>(count_committed(&outside))
                });
                Box::pin(call) as Call<_>
            })
            .collect();
        queue_all(&mut calls).await;
        assert_eq!(count_committed(&path), 0);
        lock.release();
        let seen = futures::future::join_all(calls).await;
        let seen: Vec<i64> = seen.into_iter().map(Result::unwrap).collect();
        // The writer took what was queued when it woke (the first write at
        // least, more if it woke late), and blocked on the lock; all the
        // rest were queued by then, and shared the next transaction. Mid-
        // batch, another connection sees the batches committed before, and
        // nothing of its own.
        let first_batch = seen.iter().take_while(|&&n| n == 0).count();
        assert!(
            first_batch >= 1
                && seen[first_batch..]
                    .iter()
                    .all(|&n| usize::try_from(n) == Ok(first_batch)),
            "{durability:?}: other connections saw a batch before it committed: {seen:?}"
        );
        assert_eq!(count_committed(&path), 16, "{durability:?}");
        // Records too: the entry is there for another connection as soon
        // as `record` returns.
        let lock = WriteLock::take(&path);
        let mut calls: Vec<Call<Result<Fence, ChangeLogError>>> = (0..8_u8)
            .map(|i| {
                let log = log.clone();
                let writer = writer.clone();
                Box::pin(async move { log.record(&writer, vec![i]).await }) as Call<_>
            })
            .collect();
        queue_all(&mut calls).await;
        lock.release();
        for call in calls {
            let fence = call.await.unwrap();
            let seen: i64 = rusqlite::Connection::open(&path)
                .unwrap()
                .query_row(
                    "SELECT count(*) FROM leasehold_changelog WHERE id = ?1",
                    [fence.id().get() as i64],
                    |row| row.get(0),
                )
                .unwrap();
            assert_eq!(seen, 1, "{durability:?}: acknowledged before it committed");
        }
    })
    .await;
}

/// A claim and the fenced commits of the entries it claims, in one batch:
/// for every entry exactly one side wins, and the loser changed nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fenced_commits_and_a_claim_in_one_batch_exactly_one_wins_each_entry() {
    for_each_durability(|durability| async move {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.db");
        let clock = ManualClock::new();
        let log = open(&path, durability, &clock).await;
        let writer = OwnerId::new("w");
        let mut fences = Vec::new();
        for i in 0..24_u8 {
            fences.push(log.record(&writer, vec![i]).await.unwrap());
        }
        log.list().await.unwrap();
        clock.advance(STALENESS);
        let lock = WriteLock::take(&path);
        let (early, late) = fences.split_at(12);
        let mut commits: Vec<_> = early
            .iter()
            .map(|fence| commit_marker(&log, fence, format!("{:03}", fence.id().get()), false))
            .collect();
        queue_all(&mut commits).await;
        // The claim reads first (on the read connection), then queues its
        // write behind the commits above.
        let claimer = log.clone();
        let claim = tokio::spawn(async move { claimer.claim_stale(&OwnerId::new("r"), 100).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut late_commits: Vec<_> = late
            .iter()
            .map(|fence| commit_marker(&log, fence, format!("{:03}", fence.id().get()), false))
            .collect();
        queue_all(&mut late_commits).await;
        lock.release();
        commits.extend(late_commits);
        let results = futures::future::join_all(commits).await;
        let claimed = claim.await.unwrap().unwrap();
        let markers = committed_markers(&path);
        for (fence, result) in fences.iter().zip(&results) {
            let marker = format!("{:03}", fence.id().get());
            let won_by_claim = claimed.iter().any(|c| c.fence.id() == fence.id());
            match result {
                Ok(()) => {
                    assert!(!won_by_claim, "{durability:?}: both won {fence:?}");
                    assert!(markers.contains(&marker));
                }
                Err(FencedCommitError::Fenced) => {
                    assert!(won_by_claim, "{durability:?}: nobody won {fence:?}");
                    assert!(
                        !markers.contains(&marker),
                        "a refused commit left its marker"
                    );
                }
                Err(other) => panic!("{durability:?}: {other}"),
            }
        }
        // Each entry is now either committed by its writer or owned by the
        // claimer, never both.
        for fence in &fences {
            let entry = log.get(fence.id()).await.unwrap().unwrap();
            assert_ne!(entry.committed, entry.fence.owner().as_str() == "r");
        }
        // The commits queued first were ahead of the claim in the batch.
        assert!(results[..12].iter().all(Result::is_ok), "{durability:?}");
    })
    .await;
}

/// A commit closure that panics, in a batch: its caller gets the panic, its
/// writes are rolled back, the other callers commit, and the log keeps
/// working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_commit_closure_fails_only_its_caller() {
    for_each_durability(|durability| async move {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.db");
        let log = open(&path, durability, &ManualClock::new()).await;
        let writer = OwnerId::new("w");
        let mut fences = Vec::new();
        for i in 0..3_u8 {
            fences.push(log.record(&writer, vec![i]).await.unwrap());
        }
        let lock = WriteLock::take(&path);
        let mut calls: Vec<Call<Result<(), FencedCommitError<BoxError>>>> = vec![
            commit_marker(&log, &fences[0], "a".into(), false),
            Box::pin(log.commit_fenced(&fences[1], |tx| {
                tx.execute("INSERT INTO markers VALUES ('panicked')", [])?;
                panic!("the user's commit panics");
                #[allow(unreachable_code)]
                Ok::<(), BoxError>(())
            })),
            commit_marker(&log, &fences[2], "c".into(), false),
        ];
        queue_all(&mut calls).await;
        lock.release();
        let mut results = Vec::new();
        for call in calls {
            results.push(std::panic::AssertUnwindSafe(call).catch_unwind().await);
        }
        assert!(matches!(results[0], Ok(Ok(()))), "{durability:?}");
        let panic = results[1]
            .as_ref()
            .expect_err("the panic reaches its caller");
        assert_eq!(
            panic.downcast_ref::<&str>(),
            Some(&"the user's commit panics")
        );
        assert!(matches!(results[2], Ok(Ok(()))), "{durability:?}");
        assert_eq!(committed_markers(&path), ["a", "c"], "{durability:?}");
        assert!(!log.get(fences[1].id()).await.unwrap().unwrap().committed);
        // The writer lives on.
        let fence = log.record(&writer, vec![9]).await.unwrap();
        assert_eq!(log.remove(&fence).await.unwrap(), Removal::Removed);
    })
    .await;
}

/// The write connection checkpoints the WAL itself (SQLite's automatic
/// checkpoint is off on it, so that no caller pays for one inline): a long
/// stream of writes leaves the WAL at about a thousand frames, not growing
/// with every commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_is_checkpointed_and_stays_short_under_a_stream_of_writes() {
    const FRAMES: u64 = 1000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let log = open(&path, Durability::ProcessCrash, &ManualClock::new()).await;
    let writer = OwnerId::new("w");
    // About 3 frames per commit, 2 commits per pair: without checkpoints the
    // WAL would reach some 18,000 frames.
    for i in 0..3000_u32 {
        let fence = log.record(&writer, i.to_le_bytes().to_vec()).await.unwrap();
        log.remove(&fence).await.unwrap();
    }
    let page: u64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA page_size", [], |row| row.get(0))
        .unwrap();
    let wal = std::fs::metadata(path.with_extension("db-wal"))
        .unwrap()
        .len();
    let frames = wal / (page + 24);
    assert!(
        frames <= 2 * FRAMES,
        "the WAL grew to {frames} frames ({wal} bytes)"
    );
}
