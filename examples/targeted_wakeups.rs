//! Waking the wrong waiters, live: a background task that only cares about
//! `request_sync` sits next to a stream of since-downgrades and seqno bumps.
//!
//! With `tokio::sync::watch` it is woken by (nearly) every one of them; with
//! a `WatchCell` it is woken once. A blocking thread waits on the same cell.
//!
//! Run: `cargo run --example targeted_wakeups` (about 2 s per half, with a
//! progress line). It checks what it claims — each `WatchCell` waiter is
//! woken exactly once and sees the right state, and `watch` wakes its task
//! far more often — and exits non-zero if that does not hold.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use leasehold::WatchCell;

#[derive(Debug, Default, Clone)]
struct ReaderState {
    since: u64,
    seqno: u64,
    request_sync: bool,
}

/// One downgrade per millisecond: the "hundreds of times a second" of the field.
const DOWNGRADES: u64 = 1_000;
const SPACING: std::time::Duration = std::time::Duration::from_millis(1);

#[path = "common/args.rs"]
mod args;

const USAGE: &str = "\
targeted_wakeups: a task waiting for one condition next to a stream of unrelated changes,
on a WatchCell and on tokio::sync::watch

usage: targeted_wakeups
";

/// Prints progress every quarter of the downgrades.
fn progress(half: &str, since: u64) {
    if since % (DOWNGRADES / 4) == 0 {
        println!("  {half}: {since}/{DOWNGRADES} downgrades");
    }
}

fn main() -> std::process::ExitCode {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    if let Err(exit) = args::Args::parse("targeted_wakeups", &raw, &[], USAGE) {
        return exit;
    }
    let failures = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(compare());
    if failures.is_empty() {
        println!("ok: every check held");
        std::process::ExitCode::SUCCESS
    } else {
        for failure in &failures {
            eprintln!("targeted_wakeups: FAILED: {failure}");
        }
        std::process::ExitCode::FAILURE
    }
}

/// Runs both halves; returns the checks that failed.
async fn compare() -> Vec<String> {
    let mut failures = Vec::new();
    println!("{DOWNGRADES} since-downgrades, one per {SPACING:?}, then one sync request");
    // --- WatchCell: the modifier evaluates the task's predicate for it. ---
    let cell = WatchCell::new(ReaderState::default());
    let lease_task = tokio::spawn({
        let cell = cell.clone();
        async move {
            cell.wait_for(|s| s.request_sync).await.expect("cell open");
            cell.read(|s| s.since)
        }
    });
    let snapshot_thread = std::thread::spawn({
        let cell = cell.clone();
        move || {
            cell.blocking_wait_for_map(|s| (s.since >= DOWNGRADES / 2).then_some(s.seqno))
                .expect("cell open")
        }
    });
    while cell.stats().waiters < 2 {
        tokio::task::yield_now().await;
    }
    for since in 1..=DOWNGRADES {
        cell.modify(|s| {
            s.since = since;
            s.seqno += 1;
        });
        progress("WatchCell", since);
        // Downgrades arrive over time, not in one burst.
        tokio::time::sleep(SPACING).await;
    }
    cell.modify(|s| s.request_sync = true);
    let synced_since = lease_task.await.expect("task");
    let seqno_at_half = snapshot_thread.join().expect("thread");
    let stats = cell.stats();

    // --- tokio::sync::watch: every change wakes the task to re-check. ---
    let (tx, mut rx) = tokio::sync::watch::channel(ReaderState::default());
    let checks = Arc::new(AtomicU64::new(0));
    let watch_task = tokio::spawn({
        let checks = checks.clone();
        async move {
            rx.wait_for(|s| {
                checks.fetch_add(1, Ordering::Relaxed);
                s.request_sync
            })
            .await
            .expect("sender alive");
        }
    });
    tokio::task::yield_now().await;
    for since in 1..=DOWNGRADES {
        tx.send_modify(|s| {
            s.since = since;
            s.seqno += 1;
        });
        progress("tokio::sync::watch", since);
        // Downgrades arrive over time, not in one burst.
        tokio::time::sleep(SPACING).await;
    }
    tx.send_modify(|s| s.request_sync = true);
    watch_task.await.expect("task");

    println!("\nWatchCell");
    println!("  lease task synced at since = {synced_since}");
    println!(
        "  blocking snapshot thread saw seqno = {seqno_at_half} when since reached {}",
        DOWNGRADES / 2
    );
    println!(
        "  wake-ups delivered = {} (one per waiter), predicate evaluations = {}",
        stats.wakeups, stats.predicate_evals
    );
    println!("tokio::sync::watch");
    let rechecks = checks.load(Ordering::Relaxed).saturating_sub(1);
    println!("  lease task woke to re-check its predicate {rechecks} times");

    if synced_since != DOWNGRADES {
        failures.push(format!(
            "the lease task synced at since {synced_since}, not {DOWNGRADES}"
        ));
    }
    // The seqno moves with the since, so the thread's snapshot is taken at
    // (or, if it ran late, after) the half-way since.
    if seqno_at_half < DOWNGRADES / 2 {
        failures.push(format!(
            "the blocking thread woke at seqno {seqno_at_half}, before since reached {}",
            DOWNGRADES / 2
        ));
    }
    if stats.wakeups != 2 {
        failures.push(format!(
            "the WatchCell delivered {} wake-ups to its 2 waiters, not one each",
            stats.wakeups
        ));
    }
    // The point of the comparison: `watch` woke its task for (nearly)
    // every unrelated change. A tenth of them is a loose bound for a
    // loaded machine, still 50 times the WatchCell's one wake-up.
    if rechecks < DOWNGRADES / 10 {
        failures.push(format!(
            "tokio::sync::watch woke its task only {rechecks} times; the comparison shows nothing"
        ));
    }
    failures
}
