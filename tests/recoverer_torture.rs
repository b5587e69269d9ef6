//! Recoverer torture: several recovery *processes* share one changelog and
//! are SIGKILLed again and again while the others run, over a mix of
//! healthy, slow, hanging and panicking cleanups (decided by the payload).
//! Each cleanup records its effect durably (a row in a table of the same
//! store), so re-runs are counted.
//!
//! Afterwards: every healthy entry was cleaned (its effect recorded, its
//! entry removed) and none was quarantined; a healthy effect is recorded
//! more than once only where a kill landed between a cleanup and its
//! removal; every poison entry is quarantined with the reason of its
//! failures.
//!
//! The test binary re-runs itself as the recovery processes (the
//! `recoverer_process` test, which does nothing unless
//! `LEASEHOLD_RECOVERER_CHILD` is set). Runs on SQLite and, when
//! `LEASEHOLD_PG_URL` names a server, on PostgreSQL.
#![cfg(all(feature = "sqlite", unix))]

#[cfg(feature = "postgres")]
#[path = "support/postgres.rs"]
mod pg_support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use leasehold::changelog::{
    BoxError, ChangeLog, Cleanup, DecodeError, EntryState, OwnerId, Payload, Phase, SqliteChangeLog,
};
use leasehold::recovery::{RecoveryConfig, RecoveryLoop};
use rand::Rng;

const CHILD_ENV: &str = "LEASEHOLD_RECOVERER_CHILD";
const STALENESS: Duration = Duration::from_secs(1);
const DEADLINE: Duration = Duration::from_secs(2);
const ATTEMPTS: u32 = 4;
const RECOVERERS: usize = 4;
const KILL_PHASE: Duration = Duration::from_secs(20);
const CONVERGE_LIMIT: Duration = Duration::from_secs(40);

const HEALTHY: usize = 60;
const SLOW: usize = 20;
const HANGING: usize = 5;
const PANICKING: usize = 5;

// ------------------------------------------------------------ the child --

#[derive(Debug, Clone)]
struct Job(String);

impl Payload for Job {
    fn encode(&self) -> Vec<u8> {
        self.0.as_bytes().to_vec()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Ok(Job(String::from_utf8_lossy(bytes).into_owned()))
    }
}

/// Where a cleanup records its effect.
#[derive(Clone)]
enum Effects {
    Sqlite(Arc<Mutex<rusqlite::Connection>>),
    #[cfg(feature = "postgres")]
    Postgres(leasehold::changelog::PostgresChangeLog),
}

impl Effects {
    async fn record(&self, name: &str) -> Result<(), BoxError> {
        let pid = i64::from(std::process::id());
        match self {
            Effects::Sqlite(conn) => {
                let (conn, name) = (Arc::clone(conn), name.to_owned());
                tokio::task::spawn_blocking(move || {
                    conn.lock()
                        .unwrap()
                        .execute("INSERT INTO torture_effects VALUES (?1, ?2)", (name, pid))
                })
                .await??;
            }
            #[cfg(feature = "postgres")]
            Effects::Postgres(log) => {
                let client = log.client().await?;
                let table = format!("\"{}\".torture_effects", log.schema().unwrap());
                client
                    .execute(
                        &format!("INSERT INTO {table} VALUES ($1, $2)"),
                        &[&name, &pid],
                    )
                    .await?;
            }
        }
        Ok(())
    }
}

/// The cleanup decided by the payload: `hang-*` never returns, `panic-*`
/// panics, `slow-*` takes up to half a second; all others are quick.
struct Scripted {
    effects: Effects,
}

impl Cleanup<Job> for Scripted {
    async fn cleanup(&self, job: &Job, _: Phase) -> Result<(), BoxError> {
        let name = job.0.as_str();
        if name.starts_with("hang-") {
            std::future::pending::<()>().await;
        }
        if name.starts_with("panic-") {
            panic!("cleanup exploded on {name}");
        }
        if name.starts_with("slow-") {
            let ms = rand::rng().random_range(100..500);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        self.effects.record(name).await
    }
}

/// The recovery process: runs a `RecoveryLoop` until killed.
#[test]
fn recoverer_process() {
    let Ok(backend) = std::env::var(CHILD_ENV) else {
        return; // not a child: nothing to do
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let config = RecoveryConfig::builder()
            .batch_size(8)
            .idle_wait(Duration::from_millis(100))
            .backoff(Duration::from_millis(50), 1.5, Duration::from_millis(500))
            .cleanup_attempts(ATTEMPTS)
            .cleanup_deadline(DEADLINE)
            .build()
            .unwrap();
        let owner = OwnerId::unique("recoverer");
        let recovery = match backend.split_once(':').unwrap() {
            ("sqlite", path) => {
                let log = Arc::new(open_sqlite(Path::new(path)).await);
                let conn = rusqlite::Connection::open(path).unwrap();
                conn.busy_timeout(Duration::from_secs(10)).unwrap();
                let effects = Effects::Sqlite(Arc::new(Mutex::new(conn)));
                RecoveryLoop::spawn::<_, Job, _>(log, owner, Scripted { effects }, config).unwrap()
            }
            #[cfg(feature = "postgres")]
            ("postgres", schema) => {
                let url = std::env::var(pg_support::URL_ENV).unwrap();
                let log = open_postgres(&url, schema).await;
                let effects = Effects::Postgres(log.clone());
                RecoveryLoop::spawn::<_, Job, _>(Arc::new(log), owner, Scripted { effects }, config)
                    .unwrap()
            }
            (other, _) => panic!("unknown backend {other}"),
        };
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert!(recovery.is_running(), "the recovery loop stopped");
            eprintln!(
                "stats: {:?} last error: {:?}",
                recovery.stats(),
                recovery.last_error()
            );
        }
    });
}

async fn open_sqlite(path: &Path) -> SqliteChangeLog {
    SqliteChangeLog::builder(path)
        .staleness(STALENESS)
        .busy_timeout(Duration::from_secs(10))
        .open()
        .await
        .unwrap()
}

#[cfg(feature = "postgres")]
async fn open_postgres(url: &str, schema: &str) -> leasehold::changelog::PostgresChangeLog {
    leasehold::changelog::PostgresChangeLog::builder(url)
        .schema(schema)
        .staleness(STALENESS)
        .pool_size(4)
        .open()
        .await
        .unwrap()
}

// ----------------------------------------------------------- the parent --

/// Pids of live children, killed before the time limit aborts the test.
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Aborts the test binary (after SIGKILLing every child) if the test is
/// still running after `limit`. Disarmed on drop.
struct Watchdog(Arc<AtomicBool>);

impl Watchdog {
    fn new(test: &'static str, limit: Duration) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&done);
        std::thread::spawn(move || {
            let deadline = Instant::now() + limit;
            while Instant::now() < deadline {
                if flag.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            for pid in CHILDREN.lock().unwrap().iter() {
                // SAFETY: kill(2) has no memory-safety preconditions.
                unsafe { libc::kill(*pid as libc::pid_t, libc::SIGKILL) };
            }
            eprintln!("\n!!! {test}: still running after {limit:?}: aborting !!!");
            std::process::abort();
        });
        Watchdog(done)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

struct Fleet {
    backend: String,
    logs: PathBuf,
    spawned: usize,
    children: Vec<Child>,
}

impl Fleet {
    fn spawn(&mut self) -> Child {
        self.spawned += 1;
        let stderr =
            std::fs::File::create(self.logs.join(format!("recoverer-{}.stderr", self.spawned)))
                .unwrap();
        let child = Command::new(std::env::current_exe().unwrap())
            .args([
                "recoverer_process",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &self.backend)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        CHILDREN.lock().unwrap().push(child.id());
        child
    }

    fn kill(&mut self, index: usize) {
        let child = &mut self.children[index];
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "a recoverer exited by itself with {status}; logs in {}",
                self.logs.display()
            );
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        CHILDREN.lock().unwrap().retain(|&pid| pid != child.id());
    }
}

/// Names of the entries, by kind.
fn workload() -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    names.extend((0..HEALTHY).map(|i| format!("healthy-{i}")));
    names.extend((0..SLOW).map(|i| format!("slow-{i}")));
    names.extend((0..HANGING).map(|i| format!("hang-{i}")));
    names.extend((0..PANICKING).map(|i| format!("panic-{i}")));
    // Poison entries spread among the healthy ones.
    let mut rng = rand::rng();
    for i in (1..names.len()).rev() {
        names.swap(i, rng.random_range(0..=i));
    }
    names
}

fn is_poison(name: &str) -> bool {
    name.starts_with("hang-") || name.starts_with("panic-")
}

/// The torture run on a log, with `effects` reading back the effect rows
/// (name -> count).
async fn torture<L: ChangeLog>(
    name: &str,
    backend: String,
    log: &L,
    effects: impl AsyncFn() -> HashMap<String, u64>,
) {
    let work = tempfile::tempdir().unwrap();
    let logs = work.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let started = Instant::now();
    let names = workload();
    let writer = OwnerId::new("crashed-writer");
    for job in &names {
        log.record(&writer, job.as_bytes().to_vec()).await.unwrap();
    }
    let mut fleet = Fleet {
        backend,
        logs: logs.clone(),
        spawned: 0,
        children: Vec::new(),
    };
    for _ in 0..RECOVERERS {
        let child = fleet.spawn();
        fleet.children.push(child);
    }
    // Kill a random recoverer every 0.3-0.9 s (wherever it is: claiming,
    // cleaning, removing) and start a new one.
    let mut kills = 0;
    let mut rng = rand::rng();
    while started.elapsed() < KILL_PHASE {
        let pause = Duration::from_millis(rng.random_range(300..900));
        tokio::time::sleep(pause).await;
        let victim = rng.random_range(0..RECOVERERS);
        fleet.kill(victim);
        kills += 1;
        fleet.children[victim] = fleet.spawn();
    }
    // Then let the survivors converge: no active entry left.
    let converging = Instant::now();
    let entries = loop {
        let entries = log.list().await.unwrap();
        if entries.iter().all(|e| e.state != EntryState::Active) {
            break entries;
        }
        assert!(
            converging.elapsed() < CONVERGE_LIMIT,
            "{} active entries left after {CONVERGE_LIMIT:?}; logs in {}",
            entries
                .iter()
                .filter(|e| e.state == EntryState::Active)
                .count(),
            logs.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let converged = converging.elapsed();
    for index in 0..RECOVERERS {
        fleet.kill(index);
    }

    let effects = effects().await;
    let mut quarantined: HashMap<String, String> = HashMap::new();
    for entry in &entries {
        if let EntryState::Quarantined { reason } = &entry.state {
            quarantined.insert(
                String::from_utf8_lossy(&entry.payload).into_owned(),
                reason.clone(),
            );
        }
    }
    let healthy: Vec<&String> = names.iter().filter(|n| !is_poison(n)).collect();
    let missing: Vec<&&String> = healthy
        .iter()
        .filter(|n| !effects.contains_key(**n))
        .collect();
    let reruns: u64 = healthy
        .iter()
        .map(|n| effects.get(*n).copied().unwrap_or(0).saturating_sub(1))
        .sum();
    let healthy_quarantined: Vec<(&String, &String)> =
        quarantined.iter().filter(|(n, _)| !is_poison(n)).collect();
    // A poison entry's reason names its cause, unless a kill cut short
    // every attempt before a failure was recorded; then it says so.
    let names_its_cause = |job: &str, reason: &str| {
        (job.starts_with("hang-") && reason.contains("deadline"))
            || (job.starts_with("panic-") && reason.contains("cleanup exploded on"))
    };
    let poison_with_cause = quarantined
        .iter()
        .filter(|(n, r)| names_its_cause(n, r))
        .count();
    let panic_with_cause = quarantined
        .iter()
        .filter(|(n, r)| n.starts_with("panic-") && names_its_cause(n, r))
        .count();
    println!(
        "recoverer torture ({name}): {} entries ({HEALTHY} healthy, {SLOW} slow, {HANGING} hanging, \
         {PANICKING} panicking), {RECOVERERS} recoverers, {kills} SIGKILLs over {KILL_PHASE:?}; \
         converged {converged:.1?} after the kills; healthy cleaned {}/{}, re-runs {reruns}, \
         healthy quarantined {}, poison quarantined {}/{} ({poison_with_cause} naming their cause); \
         total {:.1?}",
        names.len(),
        healthy.len() - missing.len(),
        healthy.len(),
        healthy_quarantined.len(),
        quarantined.len() - healthy_quarantined.len(),
        HANGING + PANICKING,
        started.elapsed(),
    );
    assert!(
        missing.is_empty(),
        "healthy entries never cleaned: {missing:?}"
    );
    assert!(
        healthy_quarantined.is_empty(),
        "healthy entries quarantined: {healthy_quarantined:?}"
    );
    // A healthy cleanup runs twice only if a kill lands between its effect
    // and its removal: at most once per kill.
    assert!(reruns <= kills, "{reruns} re-runs for {kills} kills");
    for job in names.iter().filter(|n| is_poison(n)) {
        let reason = quarantined
            .get(job)
            .unwrap_or_else(|| panic!("poison entry {job} not quarantined"));
        assert!(reason.contains("attempted"), "{job}: {reason}");
        assert!(!effects.contains_key(job), "{job} had an effect");
    }
    // Every poison entry names its cause, or says that none was recorded
    // because its recoverers stopped during every attempt: a hanging
    // cleanup runs to its 2 s deadline, and with a kill every half second
    // or so, that is common for them. A panicking cleanup fails at once, so
    // its cause is lost only to a kill landing in the milliseconds between
    // the panic and the write that records it: at most one of them.
    for job in names.iter().filter(|n| is_poison(n)) {
        let reason = &quarantined[job];
        assert!(
            names_its_cause(job, reason) || reason.contains("no failure was recorded"),
            "{job}: {reason}"
        );
    }
    assert!(panic_with_cause + 1 >= PANICKING, "{quarantined:#?}");
    let active = entries.iter().filter(|e| e.state == EntryState::Active);
    assert_eq!(active.count(), 0);
}

#[test]
fn sigkilled_recoverers_clean_every_healthy_entry_and_quarantine_only_poison_on_sqlite() {
    let _watchdog = Watchdog::new("recoverer torture (sqlite)", Duration::from_secs(90));
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("changelog.db");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let log = open_sqlite(&path).await;
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE torture_effects (name TEXT NOT NULL, pid INTEGER)")
            .unwrap();
        let effects = async || {
            let conn = rusqlite::Connection::open(&path).unwrap();
            let mut stmt = conn
                .prepare("SELECT name, count(*) FROM torture_effects GROUP BY name")
                .unwrap();
            stmt.query_map([], |row| Ok((row.get(0)?, row.get::<_, i64>(1)? as u64)))
                .unwrap()
                .collect::<Result<HashMap<_, _>, _>>()
                .unwrap()
        };
        torture(
            "sqlite",
            format!("sqlite:{}", path.display()),
            &log,
            effects,
        )
        .await;
    });
}

#[cfg(feature = "postgres")]
#[test]
fn sigkilled_recoverers_clean_every_healthy_entry_and_quarantine_only_poison_on_postgres() {
    let Some(url) = pg_support::url("recoverer torture (postgres)") else {
        return;
    };
    let _watchdog = Watchdog::new("recoverer torture (postgres)", Duration::from_secs(90));
    let schema = pg_support::fresh_schema("lh_recoverers");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let log = open_postgres(&url, &schema).await;
        let client = log.client().await.unwrap();
        client
            .batch_execute(&format!(
                "CREATE TABLE \"{schema}\".torture_effects (name TEXT NOT NULL, pid BIGINT)"
            ))
            .await
            .unwrap();
        let effects = async || {
            let rows = client
                .query(
                    &format!(
                        "SELECT name, count(*) FROM \"{schema}\".torture_effects GROUP BY name"
                    ),
                    &[],
                )
                .await
                .unwrap();
            rows.iter()
                .map(|row| (row.get::<_, String>(0), row.get::<_, i64>(1) as u64))
                .collect::<HashMap<_, _>>()
        };
        torture("postgres", format!("postgres:{schema}"), &log, effects).await;
    });
    pg_support::drop_schema(&url, &schema);
}
