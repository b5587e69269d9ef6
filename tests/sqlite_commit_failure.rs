//! Group commit on the SQLite changelog when a batch's `COMMIT` fails: the
//! disk stops accepting fsyncs (an `LD_PRELOAD` shim,
//! `tests/support/fsync_fault.c`, fails `fsync` and `fdatasync` with `EIO`
//! while a flag file exists) just as a batch of writes commits under
//! `Durability::PowerLoss`.
//!
//! No operation of that batch may be acknowledged: each caller gets the
//! error (a fenced commit as in doubt: the commit may have reached the file
//! before its fsync failed), no operation is half visible, and the log works
//! again once the disk does.
//!
//! The shim must be loaded when the process starts, so the test runs its
//! scenario in a child process: itself, with only the
//! `batch_commit_failure_child` test selected and the shim preloaded (that
//! test does nothing when run directly).
#![cfg(feature = "sqlite")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use leasehold::changelog::{
    BoxError, ChangeLog, ChangeLogError, Durability, Fence, FencedCommitError, OwnerId,
    SqliteChangeLog,
};
use leasehold::clock::ManualClock;

#[path = "support/preload.rs"]
mod preload;

const FLAG_VAR: &str = "LEASEHOLD_FSYNC_FAULT_FLAG";
const DIR_VAR: &str = "LEASEHOLD_FSYNC_FAULT_DIR";
const CHILD: &str = "batch_commit_failure_child";
/// What the child prints once every check passed.
const CHILD_DONE: &str = "batch commit failure: every check passed";
const BATCH: usize = 8;

#[test]
fn every_operation_of_a_batch_whose_commit_fails_gets_the_error() {
    let work = tempfile::tempdir().unwrap();
    let library = preload::build_shim("fsync_fault", work.path());
    let output = Command::new(std::env::current_exe().unwrap())
        .args([CHILD, "--exact", "--nocapture", "--test-threads=1"])
        .env("LD_PRELOAD", &library)
        .env(FLAG_VAR, work.path().join("fsync-fails"))
        .env(DIR_VAR, work.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains(CHILD_DONE),
        "the child failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
}

/// The child's scenario; a no-op unless started by the test above.
#[test]
fn batch_commit_failure_child() {
    let (Some(flag), Some(dir)) = (std::env::var_os(FLAG_VAR), std::env::var_os(DIR_VAR)) else {
        return;
    };
    let (flag, dir) = (PathBuf::from(flag), PathBuf::from(dir));
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(child(&flag, &dir));
    println!("{CHILD_DONE}");
}

async fn child(flag: &Path, dir: &Path) {
    check_shim(flag, dir);
    let path = dir.join("log.db");
    let log = SqliteChangeLog::builder(&path)
        .durability(Durability::PowerLoss)
        .staleness(Duration::from_secs(30))
        .clock(Arc::new(ManualClock::new()))
        .open()
        .await
        .unwrap();
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE markers (name TEXT NOT NULL)")
        .unwrap();
    let writer = OwnerId::new("w");
    let mut fences = Vec::new();
    for i in 0..BATCH as u8 {
        fences.push(log.record(&writer, vec![i]).await.unwrap());
    }

    // One batch: records and fenced commits queued while another connection
    // holds the write lock, committed together once it is released, with
    // the disk failing.
    let lock = rusqlite::Connection::open(&path).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let mut records: Vec<_> = (0..BATCH as u8)
        .map(|i| {
            let (log, writer) = (log.clone(), writer.clone());
            Box::pin(async move { log.record(&writer, vec![100 + i]).await })
        })
        .collect();
    let mut commits: Vec<_> = fences
        .iter()
        .enumerate()
        .map(|(i, fence)| Box::pin(commit_marker(&log, fence, i)))
        .collect();
    for record in &mut records {
        assert!(futures::poll!(record.as_mut()).is_pending());
    }
    for commit in &mut commits {
        assert!(futures::poll!(commit.as_mut()).is_pending());
    }
    std::fs::File::create(flag).unwrap();
    lock.execute_batch("ROLLBACK").unwrap();
    let records = futures::future::join_all(records).await;
    let commits = futures::future::join_all(commits).await;
    std::fs::remove_file(flag).unwrap();

    for (i, result) in records.iter().enumerate() {
        assert!(
            matches!(result, Err(ChangeLogError::Storage { .. })),
            "record {i} of the failed batch: {result:?}"
        );
    }
    for (i, result) in commits.iter().enumerate() {
        assert!(
            matches!(result, Err(FencedCommitError::InDoubt(_))),
            "fenced commit {i} of the failed batch: {result:?}"
        );
    }

    // Each fenced commit's marker and its entry's committed mark are one
    // transaction: both landed, or neither did.
    let landed = markers(&path);
    for (i, fence) in fences.iter().enumerate() {
        let committed = log.get(fence.id()).await.unwrap().unwrap().committed;
        assert_eq!(
            committed,
            landed.contains(&format!("{i:02}")),
            "fenced commit {i}: half of it is visible"
        );
    }

    // The disk is back: so is the log.
    let fence = log.record(&writer, vec![200]).await.unwrap();
    commit_marker(&log, &fence, 99).await.unwrap();
    assert_eq!(markers(&path).len(), landed.len() + 1);
    println!(
        "of the failed batch, {} fenced commits landed after all",
        landed.len()
    );
}

/// A fenced commit that inserts a marker row.
fn commit_marker(
    log: &SqliteChangeLog,
    fence: &Fence,
    i: usize,
) -> impl Future<Output = Result<(), FencedCommitError<BoxError>>> + use<> {
    log.commit_fenced(fence, move |tx| {
        tx.execute("INSERT INTO markers VALUES (?1)", [format!("{i:02}")])?;
        Ok::<(), BoxError>(())
    })
}

/// The markers committed, as another connection sees them.
fn markers(path: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn.prepare("SELECT name FROM markers").unwrap();
    stmt.query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// The shim is loaded and follows the flag.
fn check_shim(flag: &Path, dir: &Path) {
    let file = std::fs::File::create(dir.join("probe")).unwrap();
    file.sync_data().unwrap();
    std::fs::File::create(flag).unwrap();
    let error = file.sync_data().expect_err("the fsync shim is not loaded");
    assert_eq!(error.raw_os_error(), Some(5), "EIO expected: {error}");
    std::fs::remove_file(flag).unwrap();
    file.sync_all().unwrap();
}
