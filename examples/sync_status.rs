//! Simulated blob syncs on a storage node: several handlers wait on each
//! sync, one sync is cancelled, one fails, one panics. Prints what every
//! waiter observed.
//!
//! Run with `cargo run --example sync_status`. It checks that every waiter
//! observed its sync's outcome and that the registry freed every key, and
//! exits non-zero otherwise.

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

#[path = "common/args.rs"]
mod args;

const USAGE: &str = "\
sync_status: simulated blob syncs, several waiters each; one cancelled, one failed, one panicking

usage: sync_status
";

fn main() -> std::process::ExitCode {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    if let Err(exit) = args::Args::parse("sync_status", &raw, &[], USAGE) {
        return exit;
    }
    let failures = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio runtime")
        .block_on(simulate());
    if failures.is_empty() {
        println!("ok: every waiter observed its sync's outcome");
        std::process::ExitCode::SUCCESS
    } else {
        for failure in &failures {
            eprintln!("sync_status: FAILED: {failure}");
        }
        std::process::ExitCode::FAILURE
    }
}

/// Whether `observed` is the outcome `expected` names.
fn is(observed: &SyncOutcome, expected: &str) -> bool {
    match (observed, expected) {
        (SyncOutcome::Success, "success")
        | (SyncOutcome::Skipped, "skipped")
        | (SyncOutcome::Cancelled, "cancelled") => true,
        (SyncOutcome::Failed(reason), expected) => expected
            .strip_prefix("failed: ")
            .is_some_and(|wanted| reason.contains(wanted)),
        _ => false,
    }
}

/// Runs the simulation; returns the checks that failed.
async fn simulate() -> Vec<String> {
    let mut failures = Vec::new();
    let mut check = |what: String, observed: &SyncOutcome, expected: &str| {
        if !is(observed, expected) {
            failures.push(format!("{what} observed `{observed}`, expected {expected}"));
        }
    };
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
    let outcome = cancelled.done().await;
    println!("  blob-3 job finished with: {outcome}");
    check("the cancelled blob-3 job".into(), &outcome, "cancelled");

    for (blob, waiters, expected) in [
        ("blob-1", blob1, "success"),
        ("blob-2", blob2, "skipped"),
        ("blob-3", blob3, "cancelled"),
        ("blob-4", blob4, "failed: checksum mismatch"),
        ("blob-5", blob5, "failed: index out of bounds"),
    ] {
        for (i, waiter) in waiters.iter().enumerate() {
            let outcome = waiter.done().await;
            println!("{blob} waiter {i} observed: {outcome}");
            check(format!("{blob} waiter {i}"), &outcome, expected);
        }
    }
    let observed = tokio::task::spawn_blocking(move || blocking_waiter.join().unwrap())
        .await
        .unwrap();
    println!("blob-1 blocking thread observed: {observed}");
    check("the blob-1 blocking thread".into(), &observed, "success");

    // Every key was freed in the same step that published its outcome.
    let in_flight = syncs.in_flight();
    println!("{in_flight} jobs in flight");
    let again = syncs
        .start("blob-1", |_| async { SyncOutcome::Skipped })
        .into_receiver();
    let outcome = again.done().await;
    println!("blob-1 requested again (a fresh job): {outcome}");
    check("blob-1 requested again".into(), &outcome, "skipped");
    if in_flight != 0 {
        failures.push(format!(
            "{in_flight} jobs still in flight after every outcome"
        ));
    }
    failures
}
