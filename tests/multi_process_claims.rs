//! Recovery *processes* sharing one changelog, on every durable backend
//! (SQLite; PostgreSQL when `LEASEHOLD_PG_URL` names a server):
//!
//! - four recovery processes clean each of 1,000 stale entries exactly once;
//! - clock skew between client processes (a writer and a recoverer whose
//!   `Clock`s disagree by an hour) does not make a live entry stale.
//!
//! The test binary re-runs itself as the child processes (the ignored
//! `child_process` test, selected with `--exact --ignored`); the parent
//! tells each child its role and its backend through the environment.
#![cfg(any(feature = "sqlite", feature = "postgres"))]

#[cfg(feature = "postgres")]
#[path = "support/postgres.rs"]
mod pg_support;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use leasehold::changelog::{
    BoxError, ChangeLog, ChangeManager, Cleanup, EntryState, OwnerId, Phase,
};
use leasehold::clock::{Clock, Sleep, SystemClock};
use leasehold::heartbeat::HeartbeatConfig;
use leasehold::recovery::{RecoveryConfig, RecoveryLoop};

const ENTRIES: usize = 1_000;
const PROCESSES: usize = 4;
/// The claim race runs on real time: a child claims an entry once it has
/// seen it unchanged this long (each child's own observation, on its own
/// monotonic clock), and keeps what it claimed alive meanwhile.
const STALENESS: Duration = Duration::from_secs(1);

/// The skew test runs on real time: entries go stale 1 s after their last
/// refresh; the writer refreshes every 100 ms.
const SKEW_STALENESS: Duration = Duration::from_secs(1);
const SKEW_HEARTBEAT: Duration = Duration::from_millis(100);
/// How far the recoverer's `Clock` runs ahead of the writer's.
const SKEW: Duration = Duration::from_secs(3600);
const SKEW_ENTRIES: usize = 20;

const ROLE_ENV: &str = "LEASEHOLD_TEST_CHILD_ROLE";
const DIR_ENV: &str = "LEASEHOLD_TEST_CLAIMS_DIR";
#[cfg(feature = "postgres")]
const PG_URL_ENV: &str = "LEASEHOLD_TEST_CLAIMS_PG_URL";
#[cfg(feature = "postgres")]
const PG_SCHEMA_ENV: &str = "LEASEHOLD_TEST_CLAIMS_PG_SCHEMA";

// ---------------------------------------------------------------- backends --

/// Which store a test (and its children) use.
#[derive(Clone, Debug)]
enum Backend {
    #[cfg(feature = "sqlite")]
    Sqlite,
    #[cfg(feature = "postgres")]
    Postgres { url: String, schema: String },
}

impl Backend {
    /// The environment that hands this backend to a child.
    fn child_env(&self) -> Vec<(&'static str, String)> {
        match self {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite => Vec::new(),
            #[cfg(feature = "postgres")]
            Backend::Postgres { url, schema } => {
                vec![(PG_URL_ENV, url.clone()), (PG_SCHEMA_ENV, schema.clone())]
            }
        }
    }

    /// For messages (never the URL, which may carry a password).
    fn name(&self) -> &'static str {
        match self {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite => "sqlite",
            #[cfg(feature = "postgres")]
            Backend::Postgres { .. } => "postgres",
        }
    }

    fn from_env() -> Self {
        #[cfg(feature = "postgres")]
        if let (Ok(url), Ok(schema)) = (std::env::var(PG_URL_ENV), std::env::var(PG_SCHEMA_ENV)) {
            return Backend::Postgres { url, schema };
        }
        #[cfg(feature = "sqlite")]
        return Backend::Sqlite;
        #[cfg(not(feature = "sqlite"))]
        panic!("no backend in the child's environment");
    }
}

/// Runs `f` with a log of `backend` (store in `dir` for SQLite), opened with
/// `staleness`: the backends are different types, so the test bodies are
/// generic and this picks the instance.
macro_rules! with_log {
    ($backend:expr, $dir:expr, $staleness:expr, |$log:ident| $body:expr) => {
        match $backend {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite => {
                let $log =
                    leasehold::changelog::SqliteChangeLog::builder($dir.join("changelog.db"))
                        .staleness($staleness)
                        .busy_timeout(Duration::from_secs(30))
                        .open()
                        .await
                        .unwrap();
                $body
            }
            #[cfg(feature = "postgres")]
            Backend::Postgres { url, schema } => {
                let $log = leasehold::changelog::PostgresChangeLog::builder(url.as_str())
                    .schema(schema.as_str())
                    .staleness($staleness)
                    .pool_size(4)
                    .open()
                    .await
                    .unwrap();
                $body
            }
        }
    };
}

/// A private PostgreSQL schema for one test, dropped at the end.
#[cfg(feature = "postgres")]
struct PgSchema(Backend);

#[cfg(feature = "postgres")]
impl PgSchema {
    fn new(test: &str) -> Option<Self> {
        let url = pg_support::url(test)?;
        Some(PgSchema(Backend::Postgres {
            url,
            schema: pg_support::fresh_schema("lh_multi_process"),
        }))
    }
}

#[cfg(feature = "postgres")]
impl Drop for PgSchema {
    fn drop(&mut self) {
        #[allow(irrefutable_let_patterns)] // refutable when `sqlite` is on too
        if let Backend::Postgres { url, schema } = &self.0 {
            pg_support::drop_schema(url, schema);
        }
    }
}

// ---------------------------------------------------------------- children --

/// A `Clock` that reads `offset` ahead of the system clock: a process whose
/// clock disagrees with its peers'.
#[derive(Debug)]
struct SkewedClock {
    offset: Duration,
}

impl Clock for SkewedClock {
    fn now(&self) -> Instant {
        SystemClock.now() + self.offset
    }

    fn sleep_until(&self, deadline: Instant) -> Sleep {
        // A deadline on this clock is `offset` earlier on the system's.
        let system = deadline
            .checked_sub(self.offset)
            .unwrap_or_else(|| SystemClock.now());
        SystemClock.sleep_until(system)
    }
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

/// Cleanup of the skewed writer's own guards: nothing to undo.
struct Nothing;

impl Cleanup<String> for Nothing {
    async fn cleanup(&self, _: &String, _: Phase) -> Result<(), BoxError> {
        Ok(())
    }
}

async fn wait_for_file(path: &Path) {
    while !path.exists() {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn print_stats(stats: &leasehold::recovery::RecoveryStats) {
    println!(
        "STATS claimed={} cleaned={} errors={} lost={} quarantined={}",
        stats.claimed, stats.cleaned, stats.errors, stats.lost, stats.quarantined
    );
}

/// Claim race child: recover until no active entry is left.
async fn race_child<L: ChangeLog>(log: Arc<L>, dir: &Path) {
    wait_for_file(&dir.join("go")).await;
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
    print_stats(&recovery.shutdown().await);
}

/// Skew test child: a writer on the system clock holding live entries
/// (heartbeating) until the parent says `finish`, then committing and
/// removing them.
async fn skewed_writer_child<L: ChangeLog + Clone>(log: L, dir: &Path) {
    let heartbeat = HeartbeatConfig::builder(SKEW_HEARTBEAT)
        .clock(Arc::new(SkewedClock {
            offset: Duration::ZERO,
        }))
        .build()
        .unwrap();
    let manager = ChangeManager::new(log, OwnerId::unique("writer"), heartbeat, Nothing).unwrap();
    let mut guards = Vec::new();
    for i in 0..SKEW_ENTRIES {
        guards.push(manager.record(format!("live-{i:02}")).await.unwrap());
    }
    std::fs::write(dir.join("recorded"), b"").unwrap();
    wait_for_file(&dir.join("finish")).await;
    let mut finished = 0;
    for mut guard in guards {
        guard.mark_applied();
        guard
            .commit(async { Ok::<_, std::io::Error>(()) })
            .await
            .expect("the writer's entry is still its own");
        guard.finish().await.expect("removed by its writer");
        finished += 1;
    }
    println!("WRITER finished={finished}");
}

/// Skew test child: a recoverer whose clock runs `SKEW` ahead, recovering
/// until the parent says `stop`.
async fn skewed_recovery_child<L: ChangeLog>(log: Arc<L>, dir: &Path) {
    let recovery = RecoveryLoop::spawn::<_, String, _>(
        log,
        OwnerId::unique("recovery"),
        Report,
        RecoveryConfig::builder()
            .clock(Arc::new(SkewedClock { offset: SKEW }))
            .idle_wait(Duration::from_millis(50))
            .build()
            .unwrap(),
    )
    .unwrap();
    wait_for_file(&dir.join("stop")).await;
    print_stats(&recovery.shutdown().await);
}

#[test]
#[ignore = "child-process entry point of the multi-process tests"]
fn child_process() {
    let (Ok(role), Some(dir)) = (
        std::env::var(ROLE_ENV),
        std::env::var_os(DIR_ENV).map(PathBuf::from),
    ) else {
        return;
    };
    let backend = Backend::from_env();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        match role.as_str() {
            "race" => with_log!(&backend, dir, STALENESS, |log| {
                race_child(Arc::new(log), &dir).await
            }),
            "skewed-writer" => with_log!(&backend, dir, SKEW_STALENESS, |log| {
                skewed_writer_child(log, &dir).await
            }),
            "skewed-recovery" => {
                with_log!(&backend, dir, SKEW_STALENESS, |log| {
                    skewed_recovery_child(Arc::new(log), &dir).await
                })
            }
            other => panic!("unknown child role {other}"),
        }
    });
}

fn spawn_child(role: &str, dir: &Path, backend: &Backend) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["child_process", "--exact", "--ignored", "--nocapture"])
        .args(["--test-threads", "1"])
        .env(ROLE_ENV, role)
        .env(DIR_ENV, dir)
        .envs(backend.child_env())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

async fn wait_all(children: Vec<Child>) -> Vec<Output> {
    tokio::task::spawn_blocking(move || {
        children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect()
    })
    .await
    .unwrap()
}

/// The `CLEANED` payloads of one child, after checking it succeeded and
/// lost or quarantined nothing.
fn cleaned_by(output: &Output) -> Vec<String> {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stats = stdout
        .lines()
        .find(|l| l.contains("STATS "))
        .expect("child stats line");
    assert!(stats.contains("lost=0"), "{stats}");
    assert!(stats.contains("quarantined=0"), "{stats}");
    stdout
        .lines()
        // The harness may print "test ... " before the first line.
        .filter_map(|line| line.split_once("CLEANED ").map(|(_, p)| p.to_owned()))
        .collect()
}

// ------------------------------------------------------------- claim race --

async fn recovery_processes_clean_each_stale_entry_exactly_once<L: ChangeLog>(
    log: L,
    dir: &Path,
    backend: &Backend,
) {
    let crashed = OwnerId::new("crashed-writer");
    for i in 0..ENTRIES {
        log.record(&crashed, format!("entry-{i:04}").into_bytes())
            .await
            .unwrap();
    }
    let started = Instant::now();
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| spawn_child("race", dir, backend))
        .collect();
    std::fs::write(dir.join("go"), b"").unwrap();
    let outputs = wait_all(children).await;

    let mut cleaned: HashMap<String, usize> = HashMap::new();
    let mut per_process = Vec::new();
    for output in &outputs {
        let mine = cleaned_by(output);
        per_process.push(mine.len());
        for payload in mine {
            *cleaned.entry(payload).or_default() += 1;
        }
    }
    println!(
        "{}: {ENTRIES} stale entries, {PROCESSES} recovery processes: cleaned per process \
         {per_process:?} in {:?}",
        backend.name(),
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

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_recovery_processes_clean_each_stale_sqlite_entry_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::Sqlite;
    with_log!(&backend, dir.path(), STALENESS, |log| {
        recovery_processes_clean_each_stale_entry_exactly_once(log, dir.path(), &backend).await
    });
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_recovery_processes_clean_each_stale_postgres_entry_exactly_once() {
    let Some(schema) = PgSchema::new("four_recovery_processes (postgres)") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let backend = &schema.0;
    with_log!(backend, dir.path(), STALENESS, |log| {
        recovery_processes_clean_each_stale_entry_exactly_once(log, dir.path(), backend).await
    });
}

// -------------------------------------------------------------- clock skew --

/// A writer process heartbeats live entries while a recovery process whose
/// `Clock` runs an hour ahead polls the log for 3 × the staleness
/// threshold: the recoverer cleans every entry of a crashed writer recorded
/// at the same time (so it really was recovering, and entries really went
/// stale) and none of the live ones, which their writer then commits and
/// removes with the fence it was given.
async fn clock_skew_between_processes_does_not_make_a_live_entry_stale<L: ChangeLog>(
    log: L,
    dir: &Path,
    backend: &Backend,
) {
    let writer = spawn_child("skewed-writer", dir, backend);
    wait_for_file(&dir.join("recorded")).await;
    let crashed = OwnerId::new("crashed-writer");
    let mut dead = HashSet::new();
    for i in 0..SKEW_ENTRIES {
        let payload = format!("dead-{i:02}");
        log.record(&crashed, payload.clone().into_bytes())
            .await
            .unwrap();
        dead.insert(payload);
    }
    let recovery = spawn_child("skewed-recovery", dir, backend);
    // Real time, by design: heartbeats against the server's clock.
    tokio::time::sleep(SKEW_STALENESS * 3).await;

    let entries = log.list().await.unwrap();
    let live: Vec<_> = entries
        .iter()
        .filter(|e| e.payload.starts_with(b"live-"))
        .collect();
    assert_eq!(live.len(), SKEW_ENTRIES, "every live entry is still there");
    for entry in &live {
        assert_eq!(entry.claims, 0, "a live entry was claimed: {entry:?}");
        assert_eq!(entry.fence.generation(), 1);
        assert!(entry.age < SKEW_STALENESS, "a live entry aged: {entry:?}");
    }
    std::fs::write(dir.join("finish"), b"").unwrap();
    let writer = wait_all(vec![writer]).await.remove(0);
    let writer_out = String::from_utf8_lossy(&writer.stdout);
    assert!(
        writer.status.success(),
        "writer failed: {writer_out}\n{}",
        String::from_utf8_lossy(&writer.stderr)
    );
    assert!(
        writer_out.contains(&format!("WRITER finished={SKEW_ENTRIES}")),
        "{writer_out}"
    );
    std::fs::write(dir.join("stop"), b"").unwrap();
    let cleaned: HashSet<String> = cleaned_by(&wait_all(vec![recovery]).await[0])
        .into_iter()
        .collect();
    assert_eq!(
        cleaned, dead,
        "the recoverer cleaned exactly the crashed writer's entries"
    );
    assert!(log.list().await.unwrap().is_empty());
    println!(
        "{}: recoverer clock {SKEW:?} ahead of the writer's: {} live entries kept, \
         {} dead entries recovered",
        backend.name(),
        live.len(),
        cleaned.len()
    );
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_skew_between_processes_does_not_make_a_live_sqlite_entry_stale() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::Sqlite;
    with_log!(&backend, dir.path(), SKEW_STALENESS, |log| {
        clock_skew_between_processes_does_not_make_a_live_entry_stale(log, dir.path(), &backend)
            .await
    });
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_skew_between_processes_does_not_make_a_live_postgres_entry_stale() {
    let Some(schema) = PgSchema::new("clock_skew_between_processes (postgres)") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let backend = &schema.0;
    with_log!(backend, dir.path(), SKEW_STALENESS, |log| {
        clock_skew_between_processes_does_not_make_a_live_entry_stale(log, dir.path(), backend)
            .await
    });
}
