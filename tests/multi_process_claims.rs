//! Four recovery *processes* on one SQLite changelog clean each of 1,000
//! stale entries exactly once.
//!
//! The test binary re-runs itself as the child processes (the ignored
//! `recovery_child_process` test, selected with `--exact --ignored`).
#![cfg(feature = "sqlite")]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use leasehold::changelog::{
    BoxError, ChangeLog, Cleanup, EntryState, OwnerId, Phase, SqliteChangeLog,
};
use leasehold::recovery::{RecoveryConfig, RecoveryLoop};

const ENTRIES: usize = 1_000;
const PROCESSES: usize = 4;
const STALENESS: Duration = Duration::from_secs(60);
/// Children read the store clock an hour ahead: every entry the parent
/// recorded is stale to them at once, while their own claims are fresh to
/// each other (no sleeping to age entries).
const CHILD_CLOCK_OFFSET: Duration = Duration::from_secs(3600);
const DIR_ENV: &str = "LEASEHOLD_TEST_CLAIMS_DIR";

fn db(dir: &Path) -> PathBuf {
    dir.join("changelog.db")
}

/// Prints each cleaned payload on stdout for the parent to collect.
struct Report;

impl Cleanup<String> for Report {
    async fn cleanup(&self, payload: &String, phase: Phase) -> Result<(), BoxError> {
        assert_eq!(phase, Phase::Unknown);
        println!("CLEANED {payload}");
        Ok(())
    }
}

#[test]
#[ignore = "child-process entry point of four_recovery_processes_clean_each_stale_entry_exactly_once"]
fn recovery_child_process() {
    let Some(dir) = std::env::var_os(DIR_ENV).map(PathBuf::from) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let log = Arc::new(
            SqliteChangeLog::builder(db(&dir))
                .staleness(STALENESS)
                .clock_offset(CHILD_CLOCK_OFFSET)
                .busy_timeout(Duration::from_secs(30))
                .open()
                .await
                .unwrap(),
        );
        // Start together: wait for the parent's go.
        while !dir.join("go").exists() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let recovery = RecoveryLoop::spawn::<_, String, _>(
            Arc::clone(&log),
            OwnerId::unique("recovery"),
            Report,
            RecoveryConfig::builder()
                .batch_size(25)
                .idle_wait(Duration::from_millis(20))
                .build()
                .unwrap(),
        )
        .unwrap();
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let active = log
                .list()
                .await
                .unwrap()
                .iter()
                .filter(|e| e.state == EntryState::Active)
                .count();
            if active == 0 {
                break;
            }
        }
        let stats = recovery.shutdown().await;
        println!(
            "STATS claimed={} cleaned={} errors={} lost={} quarantined={}",
            stats.claimed, stats.cleaned, stats.errors, stats.lost, stats.quarantined
        );
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_recovery_processes_clean_each_stale_entry_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteChangeLog::builder(db(dir.path()))
        .staleness(STALENESS)
        .open()
        .await
        .unwrap();
    let crashed = OwnerId::new("crashed-writer");
    for i in 0..ENTRIES {
        log.record(&crashed, format!("entry-{i:04}").into_bytes())
            .await
            .unwrap();
    }
    let started = Instant::now();
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "recovery_child_process",
                    "--exact",
                    "--ignored",
                    "--nocapture",
                ])
                .args(["--test-threads", "1"])
                .env(DIR_ENV, dir.path())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    std::fs::write(dir.path().join("go"), b"").unwrap();
    let outputs: Vec<_> = tokio::task::spawn_blocking(move || {
        children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect()
    })
    .await
    .unwrap();

    let mut cleaned: HashMap<String, usize> = HashMap::new();
    let mut per_process = Vec::new();
    for output in &outputs {
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "child failed: {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let mut mine = 0;
        for line in stdout.lines() {
            // The harness may print "test ... " before the first line.
            if let Some((_, payload)) = line.split_once("CLEANED ") {
                *cleaned.entry(payload.to_owned()).or_default() += 1;
                mine += 1;
            }
        }
        let stats = stdout
            .lines()
            .find(|l| l.contains("STATS "))
            .expect("child stats line");
        assert!(stats.contains("lost=0"), "{stats}");
        assert!(stats.contains("quarantined=0"), "{stats}");
        per_process.push(mine);
    }
    println!(
        "{ENTRIES} stale entries, {PROCESSES} recovery processes: cleaned per process {per_process:?} in {:?}",
        started.elapsed()
    );
    assert_eq!(cleaned.len(), ENTRIES, "every entry cleaned");
    let twice: Vec<_> = cleaned.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        twice.is_empty(),
        "entries cleaned more than once: {twice:?}"
    );
    assert_eq!(per_process.iter().sum::<usize>(), ENTRIES);
    assert!(
        per_process.iter().filter(|n| **n > 0).count() >= 2,
        "the processes really raced: {per_process:?}"
    );
    assert!(log.list().await.unwrap().is_empty(), "every entry removed");
}
