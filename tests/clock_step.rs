//! Wall-clock steps: `tiered_store` writer and recovery processes run under
//! an `LD_PRELOAD` shim (`tests/support/clock_shift.c`) that adds an offset to
//! their wall clock (`CLOCK_REALTIME`, `gettimeofday`, `time`), read from a
//! shared file the test rewrites during the run. Monotonic clocks are not
//! touched, as with a real step (NTP, an operator, a VM restored).
//!
//! 1. No writer dies, so recovery must claim nothing: a step of +1 h and
//!    then of -1 h (twice) must neither make live entries stale nor make
//!    any commit refused.
//! 2. A writer SIGKILLed right after a backward step of 1 h must have its
//!    entry claimed within the staleness threshold plus one recovery poll
//!    interval (plus a stated scheduling allowance), not an hour later.
//!
//! On PostgreSQL only the *client* processes run under the shim: the
//! server's clock cannot be stepped here.
//!
//! The shim is compiled by the test with the system C compiler (`cc`); the
//! test fails, saying so, if there is none.
#![cfg(all(feature = "sqlite", target_os = "linux"))]

#[cfg(feature = "postgres")]
#[path = "support/postgres.rs"]
mod pg_support;
#[path = "support/preload.rs"]
mod preload;
#[path = "support/tiered.rs"]
mod tiered;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tiered::{Backend, Proc, RECOVERY_POLL, STALENESS, Spawn, Watchdog};

const HOUR_NS: i64 = 3600 * 1_000_000_000;
const WRITERS: usize = 3;
/// Beyond staleness + one poll: the claimer's batch and cleanup, and the
/// scheduling of a few processes on a small shared machine (2 cores).
const SCHEDULING_ALLOWANCE: Duration = Duration::from_millis(600);

/// The wall-clock offset every shimmed process reads.
struct WallClock {
    file: std::fs::File,
    path: PathBuf,
    library: PathBuf,
}

impl WallClock {
    fn new(work: &Path) -> Self {
        let library = preload::build_shim("clock_shift", work);
        let path = work.join("clock-offset");
        let file = std::fs::File::create(&path).unwrap();
        file.write_all_at(&0_i64.to_ne_bytes(), 0).unwrap();
        let clock = WallClock {
            file,
            path,
            library,
        };
        clock.check_effective();
        clock
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![
            (
                "LD_PRELOAD".into(),
                self.library.to_string_lossy().into_owned(),
            ),
            (
                "LEASEHOLD_CLOCK_OFFSET_FILE".into(),
                self.path.to_string_lossy().into_owned(),
            ),
        ]
    }

    /// Steps the wall clock of every shimmed process to `offset_ns` from the
    /// real one.
    fn set(&self, offset_ns: i64) {
        self.file.write_all_at(&offset_ns.to_ne_bytes(), 0).unwrap();
    }

    /// The shim really moves a child's clock (else the test proves nothing).
    fn check_effective(&self) {
        self.set(HOUR_NS);
        let out = Command::new("date")
            .arg("+%s")
            .envs(self.env())
            .output()
            .unwrap();
        self.set(0);
        let shifted: i64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        let real = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!(
            (shifted - real - 3600).abs() <= 5,
            "the clock shim did not step `date`: {shifted} vs real {real}"
        );
    }
}

#[test]
fn wall_clock_steps_neither_claim_live_entries_nor_delay_recovery() {
    let _serial = tiered::serial();
    let _watchdog = Watchdog::new("clock steps (sqlite)", Duration::from_secs(90));
    clock_steps(&Backend::sqlite());
}

#[cfg(feature = "postgres")]
#[test]
fn wall_clock_steps_neither_claim_live_entries_nor_delay_recovery_on_postgres() {
    let Some(url) = pg_support::url("clock steps (postgres)") else {
        return;
    };
    let schema = pg_support::fresh_schema("lh_clock");
    let _serial = tiered::serial();
    let _watchdog = Watchdog::new("clock steps (postgres)", Duration::from_secs(90));
    clock_steps(&Backend {
        name: "postgres (client clocks stepped; the server's clock is not)",
        args: vec![
            "--postgres".into(),
            url.clone(),
            "--pg-schema".into(),
            schema.clone(),
        ],
        pg: Some((url.clone(), schema.clone())),
    });
    pg_support::drop_schema(&url, &schema);
}

/// Lets the processes run for `period`, checking they are alive.
fn run_for(period: Duration, procs: &mut [&mut Proc]) {
    let until = Instant::now() + period;
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
        for proc in procs.iter_mut() {
            proc.check_alive();
            proc.drain();
        }
    }
}

fn clock_steps(backend: &Backend) {
    let binary = tiered::example_binary();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("store");
    let logs = work.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let clock = WallClock::new(work.path());
    let (_, first) = tiered::verify(&binary, &dir, &backend.args);
    assert!(first.contains("verify: "), "{first}");
    let env = clock.env();
    let spawn = |role: &'static str, args: Vec<String>, stdin: bool| Spawn {
        binary: &binary,
        role,
        dir: &dir,
        args,
        changelog: &backend.args,
        env: env.clone(),
        stdin,
        logs: &logs,
        on_line: None,
    };
    let mut recovery =
        spawn("recovery", vec!["--timeout-s".into(), "600".into()], false).start("recovery");
    let mut writers: Vec<Proc> = (0..WRITERS)
        .map(|i| {
            // Slow writes: every writer has an entry in flight (refreshed by
            // its heartbeat) whenever the clock steps.
            spawn(
                "writer",
                vec![
                    "--objects".into(),
                    "16".into(),
                    "--write-ms".into(),
                    "200".into(),
                ],
                false,
            )
            .start(format!("writer-{i}"))
        })
        .collect();
    // Past the staleness threshold between steps, so a step that made a
    // live entry look stale has had time to get it claimed.
    let settle = STALENESS * 2 + Duration::from_millis(500);
    let mut all: Vec<&mut Proc> = writers.iter_mut().collect();
    all.push(&mut recovery);
    run_for(Duration::from_millis(1500), &mut all);

    // +1 h, then a writer that will die: it records while the clock is ahead.
    clock.set(HOUR_NS);
    let mut doomed = spawn(
        "writer",
        vec![
            "--count".into(),
            "1".into(),
            "--announce-commits".into(),
            "--gate-commits".into(),
        ],
        true,
    )
    .start("doomed-writer");
    let ready = doomed.expect("commit-ready", Duration::from_secs(10), "its write");
    let entry = tiered::field(&ready.text, "entry").unwrap().to_owned();
    run_for(settle, &mut all);

    // -1 h (back to the real time); the doomed writer dies right after, its
    // entry last refreshed while the clock was an hour ahead.
    clock.set(0);
    doomed.kill();
    let killed_at = Instant::now();
    let claim_latency = wait_until_gone(&dir, backend, &entry, killed_at, &mut all);
    run_for(settle, &mut all);

    // -1 h again: the clock an hour behind the real time.
    clock.set(-HOUR_NS);
    run_for(settle, &mut all);
    clock.set(0);

    drop(all);
    let mut tally = std::collections::HashMap::<String, u64>::new();
    for writer in &writers {
        writer.terminate();
    }
    for writer in &mut writers {
        for (key, value) in writer.finish("writer: ", Duration::from_secs(30)) {
            *tally.entry(key).or_default() += value;
        }
    }
    recovery.terminate();
    let stats = recovery.finish("recovery: ", Duration::from_secs(30));
    let (report, stdout) = tiered::verify(&binary, &dir, &backend.args);
    let bound = STALENESS + RECOVERY_POLL + SCHEDULING_ALLOWANCE;
    // The doomed writer's entry is the one recovery should have claimed.
    let live_claimed = stats["claimed"] - u64::from(claim_latency.is_some());
    println!(
        "clock steps ({}): steps +1h, -1h, -1h; {WRITERS} writers committed={} refused={} \
         conflicts={}; recovery claimed={} (live entries claimed: {live_claimed}); entry of the \
         writer killed right after the backward step claimed and cleaned {} after the kill \
         (bound: staleness {STALENESS:?} + poll {RECOVERY_POLL:?} + allowance \
         {SCHEDULING_ALLOWANCE:?} = {bound:?}); store: commits_refused={} orphans={} \
         dangling={} (before the final recovery)",
        backend.name,
        tally["committed"],
        tally["refused"],
        tally["conflicts"],
        stats["claimed"],
        claim_latency.map_or_else(|| "NEVER (waited 10 s)".to_owned(), |d| format!("{d:.2?}")),
        report["commits_refused"],
        report["orphans"],
        report["dangling"],
    );
    assert_eq!(
        live_claimed, 0,
        "recovery claimed {live_claimed} live entries: a wall-clock step made them stale"
    );
    assert_eq!(
        tally["refused"], 0,
        "{} commits refused because of a wall-clock step",
        tally["refused"]
    );
    assert_eq!(report["commits_refused"], 0, "{stdout}");
    let latency = claim_latency.unwrap_or_else(|| {
        panic!(
            "the entry of a writer killed right after a backward step of 1 h was not claimed \
             within 10 s"
        )
    });
    assert!(
        latency <= bound,
        "the dead writer's entry was claimed {latency:?} after the kill, beyond {bound:?}"
    );
    // What is left (nothing, if recovery kept up) converges.
    tiered::final_recovery(&binary, &dir, &backend.args);
    let (report, stdout) = tiered::verify(&binary, &dir, &backend.args);
    assert_eq!(report["dangling"], 0, "{stdout}");
    assert_eq!(report["orphans"], 0, "{stdout}");
    assert_eq!(report["changelog"], 0, "{stdout}");
    assert!(tally["committed"] > 0, "the writers committed nothing");
}

/// How long after `since` the entry `entry` was gone from the changelog
/// (claimed, cleaned and removed by recovery: its writer is dead); `None`
/// if still there after 10 s.
fn wait_until_gone(
    dir: &Path,
    backend: &Backend,
    entry: &str,
    since: Instant,
    procs: &mut [&mut Proc],
) -> Option<Duration> {
    let log = EntryProbe::open(dir, backend);
    while since.elapsed() < Duration::from_secs(10) {
        for proc in procs.iter_mut() {
            proc.check_alive();
            proc.drain();
        }
        if !log.exists(entry.parse().unwrap()) {
            return Some(since.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// Reads whether an entry is still in the changelog, from the test process.
struct EntryProbe {
    runtime: tokio::runtime::Runtime,
    log: Probe,
}

enum Probe {
    Sqlite(leasehold::changelog::SqliteChangeLog),
    #[cfg(feature = "postgres")]
    Postgres(leasehold::changelog::PostgresChangeLog),
}

impl EntryProbe {
    fn open(dir: &Path, backend: &Backend) -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let log = match &backend.pg {
            None => Probe::Sqlite(
                leasehold::changelog::SqliteChangeLog::builder(dir.join("changelog.db"))
                    .staleness(STALENESS)
                    .open_blocking()
                    .unwrap(),
            ),
            #[cfg(feature = "postgres")]
            Some((url, schema)) => Probe::Postgres(
                runtime
                    .block_on(
                        leasehold::changelog::PostgresChangeLog::builder(url)
                            .schema(schema)
                            .staleness(STALENESS)
                            .open(),
                    )
                    .unwrap(),
            ),
            #[cfg(not(feature = "postgres"))]
            Some(_) => unreachable!("a PostgreSQL backend without the postgres feature"),
        };
        EntryProbe { runtime, log }
    }

    fn exists(&self, id: u64) -> bool {
        use leasehold::changelog::{ChangeLog, EntryId};
        let id = EntryId::new(id);
        self.runtime
            .block_on(async {
                match &self.log {
                    Probe::Sqlite(log) => log.get(id).await,
                    #[cfg(feature = "postgres")]
                    Probe::Postgres(log) => log.get(id).await,
                }
            })
            .unwrap()
            .is_some()
    }
}
