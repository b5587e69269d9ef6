//! A storage node's recovery scan, crashed and resumed.
//!
//! The node owns 20,000 blobs. After downtime it must sync each one (copy it
//! from a peer if missing). The scan runs 32 syncs at once; some fail and are
//! retried with backoff after a re-check. Half-way through, the scan is
//! aborted (a deploy, a crash). The second run opens the same SQLite file,
//! finds the checkpoint for the same scope, and resumes from it: it repeats
//! only the keys of the aborted run's window (at most 256 here), not the
//! 10,000 already done. A
//! third run with a different scope (the node gained a shard) starts over.
//!
//! ```text
//! cargo run --features sqlite --example recovery_scan [path/to/node.db]
//! ```
//!
//! It checks what it claims (the resume point, no blob left uncopied, the
//! checkpoint cleared, the scope change) and exits non-zero if any fails.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use leasehold::recovery::{
    FinalCheckpoint, ProgressStore, Recheck, RecoveryScan, RetryPolicy, ScanConfig,
    ScopeFingerprint, SqliteProgressStore,
};
use leasehold::status::{CancellationToken, SyncOutcome, SyncRegistry};

#[path = "common/args.rs"]
mod args;

const BLOBS: u64 = 20_000;

const USAGE: &str = "\
recovery_scan: a recovery scan of 20,000 blobs, aborted half-way and resumed from its checkpoint

usage: recovery_scan [path/to/node.db]   (default: a temporary file)
";

fn main() -> std::process::ExitCode {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let args = match args::Args::parse_with_operands("recovery_scan", &raw, &[], 1, USAGE) {
        Ok(args) => args,
        Err(exit) => return exit,
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(run(args.operands.first().map(PathBuf::from))) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("recovery_scan: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(path: Option<PathBuf>) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = path.unwrap_or_else(|| dir.path().join("node.db"));
    let blobs: Arc<BTreeSet<u64>> = Arc::new((0..BLOBS).collect());
    // How often each blob was actually copied, across every run.
    let copies: Arc<Vec<AtomicU32>> = Arc::new((0..BLOBS).map(|_| AtomicU32::new(0)).collect());
    let shards = ScopeFingerprint::from("shards 3,7,12");

    println!("run 1: scanning {BLOBS} blobs, aborted half-way");
    let store = SqliteProgressStore::open(&path, "blob-recovery").await?;
    let (scan, control) = new_scan(&blobs, store)?;
    let task = tokio::spawn(scan.run(shards.clone(), sync(&copies), recheck));
    while control.progress().settled < BLOBS / 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    task.abort(); // dropping the scan persists its resume point
    let saved = control.stopped().await;
    let progress = control.progress();
    println!(
        "  aborted after {} settled ({} retries); final checkpoint: {saved:?}",
        progress.settled, progress.retries
    );
    let FinalCheckpoint::Saved(resume_point) = saved else {
        return Err("the aborted scan did not save its checkpoint".into());
    };

    println!("run 2: a new process, same scope: resumes");
    let store = SqliteProgressStore::open(&path, "blob-recovery").await?;
    let copied_before: u64 = total(&copies);
    let (scan, _control) = new_scan(&blobs, store)?;
    let report = scan.run(shards.clone(), sync(&copies), recheck).await?;
    let repeated = copies
        .iter()
        .filter(|c| c.load(Ordering::SeqCst) > 1)
        .count();
    println!(
        "  started from {:?}, completed: {}; copied {} more blobs, {repeated} of them again \
         (the aborted run's window: keys in flight, or settled behind one)",
        report.progress.started_from,
        report.completed,
        total(&copies) - copied_before,
    );
    assert_eq!(report.progress.started_from, resume_point);
    assert!(copies.iter().all(|c| c.load(Ordering::SeqCst) >= 1));
    let store = SqliteProgressStore::open(&path, "blob-recovery").await?;
    assert_eq!(
        store.load().await?,
        None,
        "a completed scan clears its checkpoint"
    );

    println!("run 3: the node gained shard 19: a checkpoint of the old scope is not trusted");
    let (scan, control) = new_scan(&blobs, store.clone())?;
    let task = tokio::spawn(scan.run(shards, sync(&copies), recheck));
    while control.progress().settled < 1_000 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    control.cancel();
    task.await??;
    let (scan, _control) = new_scan(&blobs, store)?;
    let report = scan
        .run(
            ScopeFingerprint::from("shards 3,7,12,19"),
            sync(&copies),
            recheck,
        )
        .await?;
    println!(
        "  scope changed: {}, started from {:?}, settled {}",
        report.progress.scope_changed, report.progress.started_from, report.progress.settled
    );
    assert!(report.progress.scope_changed && report.progress.settled == BLOBS);
    Ok(())
}

type Scan = RecoveryScan<u64, Arc<BTreeSet<u64>>, SqliteProgressStore>;

fn new_scan(
    blobs: &Arc<BTreeSet<u64>>,
    store: SqliteProgressStore,
) -> Result<(Scan, leasehold::recovery::ScanControl<u64>), Box<dyn std::error::Error>> {
    let config = ScanConfig::default()
        .with_concurrency(32)
        .with_checkpoint_every(500)
        .with_window(256)
        .with_retry(
            RetryPolicy::default()
                .with_initial(Duration::from_millis(20))
                .with_max(Duration::from_millis(500)),
        );
    let scan = RecoveryScan::new(
        Arc::clone(blobs),
        store,
        Arc::new(SyncRegistry::new()),
        config,
    )?
    .on_progress(|progress| {
        if progress.checkpoints > 0 && progress.checkpoints % 8 == 0 {
            println!(
                "  … {} settled, resume point {:?}",
                progress.settled, progress.resume_point
            );
        }
    });
    let control = scan.control();
    Ok((scan, control))
}

/// Copies a blob; one attempt in 50 fails (a peer timed out).
fn sync(
    copies: &Arc<Vec<AtomicU32>>,
) -> impl Fn(u64, CancellationToken) -> std::pin::Pin<Box<dyn Future<Output = SyncOutcome> + Send>>
+ Send
+ Sync
+ 'static {
    static ATTEMPTS: AtomicU64 = AtomicU64::new(0);
    let copies = Arc::clone(copies);
    move |blob, cancel| {
        let copies = Arc::clone(&copies);
        Box::pin(async move {
            let copy = tokio::time::sleep(Duration::from_micros(200 + blob % 300));
            if cancel.run_until_cancelled(copy).await.is_none() {
                return SyncOutcome::Cancelled;
            }
            if ATTEMPTS.fetch_add(1, Ordering::Relaxed) % 50 == 49 {
                return SyncOutcome::Failed("peer timed out".into());
            }
            copies[blob as usize].fetch_add(1, Ordering::SeqCst);
            SyncOutcome::Success
        })
    }
}

/// Before a retry: is the blob still missing? (Here: always.)
async fn recheck(_blob: u64) -> Result<Recheck, std::io::Error> {
    Ok(Recheck::NeedsWork)
}

fn total(copies: &[AtomicU32]) -> u64 {
    copies
        .iter()
        .map(|c| u64::from(c.load(Ordering::SeqCst)))
        .sum()
}
