//! Waking the wrong waiters, live: a background task that only cares about
//! `request_sync` sits next to a stream of since-downgrades and seqno bumps.
//!
//! With `tokio::sync::watch` it is woken by (nearly) every one of them; with
//! a `WatchCell` it is woken once. A blocking thread waits on the same cell.
//!
//! Run: `cargo run --example targeted_wakeups`

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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
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
        // Downgrades arrive over time, not in one burst.
        tokio::time::sleep(SPACING).await;
    }
    tx.send_modify(|s| s.request_sync = true);
    watch_task.await.expect("task");

    println!("{DOWNGRADES} since-downgrades, then one sync request\n");
    println!("WatchCell");
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
    println!(
        "  lease task woke to re-check its predicate {} times",
        checks.load(Ordering::Relaxed).saturating_sub(1)
    );
}
