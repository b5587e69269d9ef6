//! Simulated blob syncs on a storage node: several handlers wait on each
//! sync, one sync is cancelled, one fails, one panics. Prints what every
//! waiter observed.
//!
//! Run with `cargo run --example sync_status`.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use leasehold::status::{CancellationToken, SyncOutcome, SyncReceiver, SyncRegistry};

type Job = fn(CancellationToken) -> Pin<Box<dyn Future<Output = SyncOutcome> + Send>>;

/// Copies `chunks` chunks of a blob, 10 ms each, unless cancelled first.
async fn copy_blob(blob: &'static str, chunks: u32, cancel: CancellationToken) -> SyncOutcome {
    let copy = async {
        for _ in 0..chunks {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    match cancel.run_until_cancelled(copy).await {
        Some(()) => SyncOutcome::Success,
        None => {
            println!("  [{blob}] job saw the cancel signal, cleaning up its partial copy");
            SyncOutcome::Cancelled
        }
    }
}

/// `n` handlers that each need `blob` and ask the registry for its sync.
fn handlers(
    syncs: &SyncRegistry<&'static str>,
    blob: &'static str,
    n: usize,
    job: Job,
) -> Vec<SyncReceiver> {
    (0..n)
        .map(|_| syncs.start(blob, job).into_receiver())
        .collect()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // Paused time: the simulated copies take no wall-clock time.
    tokio::time::pause();
    // The registry catches the blob-5 panic; keep the default hook's
    // backtrace out of the demo's output.
    std::panic::set_hook(Box::new(|info| println!("  [a job panicked: {info}]")));
    let syncs = SyncRegistry::<&'static str>::new();

    // blob-1: a normal copy, requested by three handlers and one thread.
    let blob1 = handlers(&syncs, "blob-1", 3, |cancel| {
        Box::pin(copy_blob("blob-1", 5, cancel))
    });
    let blocking_waiter = {
        let receiver = syncs.subscribe("blob-1").expect("blob-1 is in flight");
        std::thread::spawn(move || receiver.blocking_done())
    };
    // blob-2: already present, nothing to do.
    let blob2 = handlers(&syncs, "blob-2", 2, |_| {
        Box::pin(async { SyncOutcome::Skipped })
    });
    // blob-3: a long copy that the node cancels (say, the blob was deleted).
    let blob3 = handlers(&syncs, "blob-3", 3, |cancel| {
        Box::pin(copy_blob("blob-3", 1000, cancel))
    });
    // blob-4: the source reports a checksum mismatch.
    let blob4 = handlers(&syncs, "blob-4", 2, |_| {
        Box::pin(async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            SyncOutcome::Failed("source checksum mismatch".into())
        })
    });
    // blob-5: the job has a bug and panics; its waiters still learn how it ended.
    let blob5 = handlers(&syncs, "blob-5", 2, |_| {
        Box::pin(async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            panic!("index out of bounds in chunk table")
        })
    });

    println!("{} jobs in flight for 12 requests", syncs.in_flight());

    tokio::time::sleep(Duration::from_millis(15)).await;
    println!("cancelling blob-3");
    let cancelled = syncs.cancel("blob-3").expect("blob-3 is in flight");
    println!("  blob-3 job finished with: {}", cancelled.done().await);

    for (blob, waiters) in [
        ("blob-1", blob1),
        ("blob-2", blob2),
        ("blob-3", blob3),
        ("blob-4", blob4),
        ("blob-5", blob5),
    ] {
        for (i, waiter) in waiters.iter().enumerate() {
            println!("{blob} waiter {i} observed: {}", waiter.done().await);
        }
    }
    let observed = tokio::task::spawn_blocking(move || blocking_waiter.join().unwrap())
        .await
        .unwrap();
    println!("blob-1 blocking thread observed: {observed}");

    // Every key was freed in the same step that published its outcome.
    println!("{} jobs in flight", syncs.in_flight());
    let again = syncs
        .start("blob-1", |_| async { SyncOutcome::Skipped })
        .into_receiver();
    println!(
        "blob-1 requested again (a fresh job): {}",
        again.done().await
    );
}
