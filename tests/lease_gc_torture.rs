//! Lease torture with real processes: the `lease_gc` example's compactor
//! deletes versions below the GC horizon of a durable lease table while
//! reader processes hold snapshots and are SIGKILLed and SIGSTOPped at
//! random. Its `verify:` line must show: no read of a deleted version by a
//! live reader; a killed reader's lease row gone within the staleness plus
//! one heartbeat period (plus the compactor's scan and a scheduling
//! allowance); every reader expired while frozen refused after it resumed,
//! and registered again as a new reader; every version at or above the
//! horizon present. And the same run with readers that skip the fence
//! must be caught reading deleted versions. On SQLite, and on PostgreSQL
//! when `LEASEHOLD_PG_URL` names a server.
#![cfg(all(feature = "sqlite", unix))]

#[cfg(feature = "postgres")]
#[path = "support/postgres.rs"]
mod pg_support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `target/<profile>/examples/lease_gc`, built by `cargo build --examples`.
fn example_binary() -> PathBuf {
    let test_exe = std::env::current_exe().unwrap();
    let profile_dir = test_exe.parent().unwrap().parent().unwrap();
    let binary = profile_dir
        .join("examples")
        .join(format!("lease_gc{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.exists(),
        "{} is missing: run `cargo build --examples` first (nextest does not build examples)",
        binary.display()
    );
    binary
}

/// Runs the demo with `args`, killed after `limit`; returns its exit
/// success and the fields of its `verify:` line.
fn run_demo(args: &[&str], limit: Duration) -> (bool, HashMap<String, u64>, String) {
    let mut child = Command::new(example_binary())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            child.kill().unwrap();
            panic!("lease_gc ran past the watchdog ({limit:?})");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = reader.join().unwrap();
    let verify = output
        .lines()
        .find_map(|line| line.strip_prefix("verify: "))
        .unwrap_or_else(|| panic!("no verify line in:\n{output}"));
    let fields = verify
        .split_whitespace()
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            Some((key.to_owned(), value.parse().ok()?))
        })
        .collect();
    (status.success(), fields, output)
}

fn check(success: bool, v: &HashMap<String, u64>, output: &str) {
    let f = |key: &str| v[key];
    assert_eq!(f("deleted_reads"), 0, "{output}");
    assert_eq!(f("missing_above_horizon"), 0, "{output}");
    assert_eq!(f("unrefused"), 0, "{output}");
    assert!(f("horizon_lag_ms") <= f("horizon_bound_ms"), "{output}");
    assert_eq!(f("violations"), 0, "{output}");
    assert!(
        success,
        "non-zero exit without a violation counted:\n{output}"
    );
    // The run did what it claims: faults injected, versions deleted, reads
    // made, frozen readers expired, refused and registered again.
    assert!(f("kills") >= 2 && f("lags") >= 1, "{output}");
    assert!(f("stops") >= 2, "{output}");
    assert!(f("stops_expired") >= 1, "{output}");
    assert_eq!(f("stops_refused"), f("stops_expired"), "{output}");
    assert!(f("reregistered") >= f("stops_refused"), "{output}");
    assert!(f("deleted_versions") > 0 && f("reads") > 100, "{output}");
}

#[test]
fn sqlite_readers_killed_and_frozen_never_read_deleted_versions() {
    let dir = tempfile::tempdir().unwrap();
    let dir_arg = dir.path().to_str().unwrap();
    let (success, verify, output) = run_demo(
        &[
            "demo",
            "--dir",
            dir_arg,
            "--readers",
            "3",
            "--seconds",
            "15",
        ],
        Duration::from_secs(180),
    );
    check(success, &verify, &output);
}

/// The same run with readers that skip the store's fence (trusting only
/// their lease task's last word): a resumed reader reads before its task has
/// heard that the lease is gone. The torture must catch it.
#[test]
fn sqlite_unfenced_readers_are_caught_reading_deleted_versions() {
    let dir = tempfile::tempdir().unwrap();
    let dir_arg = dir.path().to_str().unwrap();
    let (success, verify, output) = run_demo(
        &[
            "demo",
            "--dir",
            dir_arg,
            "--readers",
            "3",
            "--seconds",
            "15",
            "--unfenced",
        ],
        Duration::from_secs(180),
    );
    assert!(verify["deleted_reads"] >= 1, "{output}");
    assert!(verify["violations"] >= 1, "{output}");
    assert!(!success, "a violation must fail the exit status:\n{output}");
}

#[cfg(feature = "postgres")]
#[test]
fn postgres_readers_killed_and_frozen_never_read_deleted_versions() {
    let Some(url) = pg_support::url("lease_gc torture (postgres)") else {
        return;
    };
    let schema = pg_support::fresh_schema("lh_lease_gc");
    let (success, verify, output) = run_demo(
        &[
            "demo",
            "--postgres",
            &url,
            "--pg-schema",
            &schema,
            "--readers",
            "3",
            "--seconds",
            "15",
        ],
        Duration::from_secs(180),
    );
    pg_support::drop_schema(&url, &schema);
    check(success, &verify, &output);
}
