//! A reader that snapshots a shard slowly while its holds keep advancing.
//!
//! A writer appends to the shard every second (its seqno grows). The reader
//! takes a snapshot every 45 s and reads it for 40 s, holding the snapshot's
//! seqno with a `SeqnoLease`; meanwhile the part of the reader that consumes
//! updates downgrades its since every second with `maybe_downgrade_since`,
//! which wakes nobody. The lease task carries both to the shard every 15 s
//! (ttl 60 s / 4). A second reader registers and then crashes without ever
//! heartbeating: the shard expires it after the ttl and its holds stop
//! pinning the shard.
//!
//! Runs on tokio's paused time: five simulated minutes take milliseconds.
//! Run with `cargo run --example lease_reader`. It checks what it claims
//! (the GC horizon never passes a held snapshot, the crashed reader is
//! expired, the downgrades cost no extra wake-ups) and exits non-zero if
//! any of it fails.

use std::time::Duration;

use leasehold::lease::{Lease, LeaseConfig, MemoryShard};

const SEC: Duration = Duration::from_secs(1);

#[path = "common/args.rs"]
mod args;

const USAGE: &str = "\
lease_reader: a reader snapshots a shard slowly while its holds keep advancing (simulated time)

usage: lease_reader
";

fn main() -> std::process::ExitCode {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    if let Err(exit) = args::Args::parse("lease_reader", &raw, &[], USAGE) {
        return exit;
    }
    let failures = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
        .block_on(simulate());
    if failures.is_empty() {
        println!("ok: every check held");
        std::process::ExitCode::SUCCESS
    } else {
        for failure in &failures {
            eprintln!("lease_reader: FAILED: {failure}");
        }
        std::process::ExitCode::FAILURE
    }
}

/// Runs the simulation; returns the checks that failed.
async fn simulate() -> Vec<String> {
    let mut failures = Vec::new();
    let config = LeaseConfig::builder(60 * SEC).build().unwrap();
    let shard = MemoryShard::new(config.clock().clone(), config.ttl(), 0_u64, 0_u64);
    let start = tokio::time::Instant::now();
    let secs = move || start.elapsed().as_secs();

    let (backend, since, seqno) = shard.register();
    let lease = Lease::spawn(backend, &config, since, seqno);
    let (_crashed, ..) = shard.register(); // never heartbeats

    // The writer: one append per second.
    let writer = tokio::spawn({
        let shard = shard.clone();
        async move {
            for seqno in 1.. {
                tokio::time::sleep(SEC).await;
                shard.advance_seqno(seqno);
            }
        }
    });

    println!(
        "ttl 60 s, heartbeat every {:?} (minus jitter)",
        config.period()
    );
    println!(
        "|   t | shard seqno | shard since | GC horizon | held by snapshot | readers | task wake-ups | heartbeats | downgrades |"
    );
    println!(
        "|----:|------------:|------------:|-----------:|-----------------:|--------:|--------------:|-----------:|-----------:|"
    );

    let mut snapshot = None;
    for t in 1..=300_u64 {
        tokio::time::sleep(SEC).await;
        // The consumer keeps up with the writer, 5 s behind.
        lease.maybe_downgrade_since(t.saturating_sub(5));
        match t % 45 {
            // Take a snapshot: hold the latest seqno while reading it.
            1 => {
                lease.observe_seqno(shard.seqno());
                snapshot = Some(lease.lease_seqno());
            }
            // Done reading: release the hold (from wherever the reader is).
            41 => snapshot = None,
            _ => {}
        }
        if let Some(held) = &snapshot {
            if shard.gc_horizon() > *held.seqno() {
                failures.push(format!(
                    "t={t}: the GC horizon {} passed the held snapshot {}",
                    shard.gc_horizon(),
                    held.seqno()
                ));
            }
        }
        if t == 120 && shard.readers() != 1 {
            failures.push(format!(
                "t={t}: the crashed reader was not expired after the ttl ({} readers)",
                shard.readers()
            ));
        }
        if t % 15 == 7 {
            let stats = lease.stats();
            let held = snapshot
                .as_ref()
                .map_or("-".to_owned(), |s| s.seqno().to_string());
            println!(
                "| {:>3} | {:>11} | {:>11} | {:>10} | {:>16} | {:>7} | {:>13} | {:>10} | {:>10} |",
                secs(),
                shard.seqno(),
                shard.since(),
                shard.gc_horizon(),
                held,
                shard.readers(),
                stats.wakeups,
                stats.heartbeats,
                stats.downgrades,
            );
        }
    }
    drop(snapshot);

    // A since that must be durable now (say, before acknowledging a
    // checkpoint): wait for the backend.
    let applied = lease.downgrade_since(300).await.unwrap();
    println!(
        "\ndowngrade_since(300) applied: {applied}; shard since now {}",
        shard.since()
    );

    if applied != 300 || shard.since() != 300 {
        failures.push(format!(
            "downgrade_since(300) applied {applied}, shard since {}",
            shard.since()
        ));
    }

    let stats = lease.stats();
    if stats.early_wakeups != 1 || stats.wakeups > stats.heartbeats + stats.early_wakeups {
        failures.push(format!(
            "the downgrades woke the task: {} wake-ups for {} heartbeats and {} early",
            stats.wakeups, stats.heartbeats, stats.early_wakeups
        ));
    }
    println!(
        "300 maybe_downgrade_since calls and 7 seqno leases cost the task {} wake-ups: \
         {} heartbeats ({} downgrades), {} early (the one downgrade_since)",
        stats.wakeups, stats.heartbeats, stats.downgrades, stats.early_wakeups
    );

    let validity = lease.validity();
    lease.expire().await.unwrap();
    println!(
        "expired: shard readers {}, validity {:?}",
        shard.readers(),
        validity.check().unwrap_err().reason
    );
    if shard.readers() != 0 {
        failures.push(format!("{} readers left after expire", shard.readers()));
    }
    writer.abort();
    failures
}
