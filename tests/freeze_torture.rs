//! Freeze torture: `tiered_store` writer processes are frozen with SIGSTOP
//! (a GC pause, a VM stall) for longer than the staleness threshold while a
//! recovery process runs, then resumed with SIGCONT. A frozen writer's entry
//! goes stale and is claimed and cleaned by recovery; when the writer
//! resumes, its commit must not land (the store refuses it), and it must
//! report the commit as refused exactly when it was.
//!
//! - `random_freezes_*`: writers frozen at random moments, and half the time
//!   right after announcing that their commit starts, at least
//!   [`FREEZES`] times per backend; afterwards no dangling reference, no
//!   orphaned blob, an empty changelog, the store's `commits_refused` equal
//!   to what the writers counted, and as many committed writes in the
//!   metadata as the writers counted committed.
//! - `frozen_commit_*`: the deterministic case. The test holds a lock the
//!   writer's commit must wait on, waits until the writer announces that
//!   its commit starts, freezes it, releases the lock, waits until recovery
//!   has claimed and cleaned the entry, and resumes the writer: the commit
//!   must be reported refused and leave no dangling reference.
//!
//! Both run with the changelog in SQLite and, when `LEASEHOLD_PG_URL` names a
//! server, in PostgreSQL (a fresh schema per run).
#![cfg(all(feature = "sqlite", unix))]

#[cfg(feature = "postgres")]
#[path = "support/postgres.rs"]
mod pg_support;
#[path = "support/tiered.rs"]
mod tiered;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use tiered::{Backend, Proc, STALENESS, Spawn, Watchdog};

/// Freezes per backend in the random run.
const FREEZES: usize = 50;
const WRITERS: usize = 4;
/// Freezes in the deterministic run, per backend.
const FROZEN_COMMITS: usize = 4;

// ------------------------------------------------------------ random run --

#[derive(Debug, Default)]
struct FreezeState {
    /// Freeze at the next `commit-start` line.
    armed: bool,
    /// Frozen since, for how long.
    frozen: Option<(Instant, Duration)>,
    /// The next freeze's length (set when arming).
    next_length: Duration,
    /// Freezes that landed right after a `commit-start`.
    in_commit: u64,
}

#[test]
fn random_freezes_leave_no_dangling_reference_and_count_refusals_exactly() {
    let _serial = tiered::serial();
    let _watchdog = Watchdog::new("random freezes (sqlite)", Duration::from_secs(150));
    random_freezes(&Backend::sqlite());
}

#[cfg(feature = "postgres")]
#[test]
fn random_freezes_leave_no_dangling_reference_and_count_refusals_exactly_on_postgres() {
    let Some(backend) = postgres_backend("freeze torture (postgres)") else {
        return;
    };
    let _serial = tiered::serial();
    let _watchdog = Watchdog::new("random freezes (postgres)", Duration::from_secs(150));
    random_freezes(&backend);
    drop_backend(&backend);
}

fn random_freezes(backend: &Backend) {
    let binary = tiered::example_binary();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("store");
    let logs = work.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let started = Instant::now();
    // Create the store before the processes race to.
    let (_, first) = tiered::verify(&binary, &dir, &backend.args);
    assert!(first.contains("verify: "), "{first}");

    let mut recovery = Spawn {
        binary: &binary,
        role: "recovery",
        dir: &dir,
        args: vec!["--timeout-s".into(), "600".into()],
        changelog: &backend.args,
        env: Vec::new(),
        stdin: false,
        logs: &logs,
        on_line: None,
    }
    .start("recovery");
    let states: Vec<Arc<Mutex<FreezeState>>> = (0..WRITERS).map(|_| Arc::default()).collect();
    let mut writers: Vec<Proc> = (0..WRITERS)
        .map(|i| {
            let state = Arc::clone(&states[i]);
            Spawn {
                binary: &binary,
                role: "writer",
                dir: &dir,
                args: vec!["--objects".into(), "16".into(), "--announce-commits".into()],
                changelog: &backend.args,
                env: Vec::new(),
                stdin: false,
                logs: &logs,
                // Freeze an armed writer the moment it says its commit
                // starts: inside the commit, where the race is.
                on_line: Some(Box::new(move |pid, line| {
                    if line.starts_with("commit-start") {
                        let mut state = state.lock().unwrap();
                        if state.armed {
                            tiered::signal(pid, libc::SIGSTOP);
                            state.armed = false;
                            state.in_commit += 1;
                            state.frozen = Some((Instant::now(), state.next_length));
                        }
                    }
                })),
            }
            .start(format!("writer-{i}"))
        })
        .collect();

    let mut rng = rand::rng();
    let mut started_freezes = 0;
    let mut thawed = 0;
    let mut longest = Duration::ZERO;
    let workload_limit = Duration::from_secs(90);
    while thawed < FREEZES {
        assert!(
            started.elapsed() < workload_limit,
            "only {thawed}/{FREEZES} freezes done after {workload_limit:?}: \
             writers are not reaching their commits (logs in {})",
            logs.display()
        );
        std::thread::sleep(Duration::from_millis(rng.random_range(10..60)));
        recovery.check_alive();
        let mut busy = 0;
        for (writer, state) in writers.iter_mut().zip(&states) {
            writer.drain();
            let mut state = state.lock().unwrap();
            if let Some((since, length)) = state.frozen {
                if since.elapsed() >= length {
                    writer.cont();
                    longest = longest.max(since.elapsed());
                    state.frozen = None;
                    thawed += 1;
                } else {
                    busy += 1;
                }
            } else if state.armed {
                busy += 1;
            } else {
                drop(state);
                writer.check_alive();
            }
        }
        // Keep at least one writer running; overlap the rest.
        if started_freezes < FREEZES && busy < WRITERS - 1 {
            let idle: Vec<usize> = (0..WRITERS)
                .filter(|&i| {
                    let state = states[i].lock().unwrap();
                    !state.armed && state.frozen.is_none()
                })
                .collect();
            let victim = idle[rng.random_range(0..idle.len())];
            // Longer than the staleness threshold, so recovery claims.
            let length = Duration::from_millis(rng.random_range(1300..2000));
            let mut state = states[victim].lock().unwrap();
            if rng.random_bool(0.5) {
                state.armed = true;
                state.next_length = length;
            } else {
                writers[victim].stop();
                state.frozen = Some((Instant::now(), length));
            }
            started_freezes += 1;
        }
    }
    let in_commit: u64 = states.iter().map(|s| s.lock().unwrap().in_commit).sum();
    let workload = started.elapsed();

    // Stop the writers between two writes (SIGTERM), then recovery.
    let mut tally: HashMap<String, u64> = HashMap::new();
    for writer in &writers {
        writer.terminate();
    }
    for writer in &mut writers {
        for (key, value) in writer.finish("writer: ", Duration::from_secs(30)) {
            *tally.entry(key).or_default() += value;
        }
    }
    recovery.terminate();
    let recovery_stats = recovery.finish("recovery: ", Duration::from_secs(30));
    tiered::final_recovery(&binary, &dir, &backend.args);
    let (report, stdout) = tiered::verify(&binary, &dir, &backend.args);

    println!(
        "freeze torture ({}): {thawed} freezes of {:?}..{longest:.1?} ({in_commit} right after \
         `commit-start`), {WRITERS} writers; writers counted committed={} refused={} \
         conflicts={} in_doubt={} errors={}; store: writes={} commits_refused={} \
         cas_conflicts={} recovery_cleanups={}; recovery claimed={} cleaned={} quarantined={} \
         errors={} lost={} released={}; \
         orphans={} dangling={} changelog={}; workload {workload:.1?}, total {:.1?}",
        backend.name,
        Duration::from_millis(1300),
        tally["committed"],
        tally["refused"],
        tally["conflicts"],
        tally["in_doubt"],
        tally["errors"],
        report["writes"],
        report["commits_refused"],
        report["cas_conflicts"],
        report["recovery_cleanups"],
        recovery_stats["claimed"],
        recovery_stats["cleaned"],
        recovery_stats["quarantined"],
        recovery_stats["errors"],
        recovery_stats["lost"],
        recovery_stats["released"],
        report["orphans"],
        report["dangling"],
        report["changelog"],
        started.elapsed(),
    );
    assert_eq!(report["dangling"], 0, "dangling references:\n{stdout}");
    if report["orphans"] != 0 {
        // What the writers said about each orphan, to tell how it came about.
        for line in stdout.lines().filter(|l| l.contains("orphaned blob:")) {
            let blob = line.rsplit(' ').next().unwrap_or_default();
            for writer in &writers {
                for seen in writer.seen.iter().filter(|s| s.contains(blob)) {
                    println!("  {}: {seen}", writer.name);
                }
            }
        }
    }
    assert_eq!(report["orphans"], 0, "orphaned blobs:\n{stdout}");
    assert_eq!(report["changelog"], 0, "changelog not empty:\n{stdout}");
    assert_eq!(report["quarantined"], 0, "{stdout}");
    assert_eq!(
        report["commits_refused"], tally["refused"],
        "the store counted {} refused commits, the writers {}",
        report["commits_refused"], tally["refused"]
    );
    // Every landed commit was counted committed (or in doubt), and no
    // commit counted committed is missing from the store.
    assert!(
        report["writes"] >= tally["committed"]
            && report["writes"] <= tally["committed"] + tally["in_doubt"],
        "{} commits landed in the store, but the writers counted {} committed \
         (+ {} in doubt): a commit counted refused landed, or one counted committed did not",
        report["writes"],
        tally["committed"],
        tally["in_doubt"]
    );
    assert!(
        recovery_stats["claimed"] > 0,
        "no freeze made recovery claim anything"
    );
    // Every claimed entry ended in exactly one counted outcome.
    assert_eq!(
        recovery_stats["claimed"],
        recovery_stats["cleaned"]
            + recovery_stats["quarantined"]
            + recovery_stats["lost"]
            + recovery_stats["released"],
        "claimed entries without a counted outcome: {recovery_stats:?}"
    );
    assert!(tally["committed"] > 0, "the writers committed nothing");
}

// ----------------------------------------------------- deterministic run --

/// A lock the writer's commit must wait on, held by the test.
enum MetadataLock {
    /// `BEGIN IMMEDIATE` on the store's one database file: the fenced
    /// commit's own `BEGIN IMMEDIATE` waits for it, before its fence check.
    Sqlite(rusqlite::Connection),
    /// `LOCK TABLE objects` in an open transaction: the CAS's `UPDATE`
    /// waits for it, after the fence check took the entry's row.
    #[cfg(feature = "postgres")]
    Postgres {
        runtime: tokio::runtime::Runtime,
        client: leasehold::tokio_postgres::Client,
    },
}

impl MetadataLock {
    /// Takes the lock on the database that holds the metadata.
    fn take(dir: &Path, backend: &Backend) -> Self {
        match &backend.pg {
            None => {
                let conn = rusqlite::Connection::open(dir.join("changelog.db")).unwrap();
                conn.busy_timeout(Duration::from_secs(5)).unwrap();
                conn.execute_batch("BEGIN IMMEDIATE").unwrap();
                MetadataLock::Sqlite(conn)
            }
            #[cfg(feature = "postgres")]
            Some((url, schema)) => {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let client = runtime.block_on(async {
                    let (client, connection) =
                        leasehold::tokio_postgres::connect(url, leasehold::tokio_postgres::NoTls)
                            .await
                            .unwrap();
                    tokio::spawn(connection);
                    client
                        .batch_execute(&format!(
                            "SET lock_timeout = '10s'; BEGIN; \
                             LOCK TABLE \"{schema}\".objects IN EXCLUSIVE MODE"
                        ))
                        .await
                        .unwrap();
                    client
                });
                MetadataLock::Postgres { runtime, client }
            }
            #[cfg(not(feature = "postgres"))]
            Some(_) => unreachable!("a PostgreSQL backend without the postgres feature"),
        }
    }

    /// Waits until the server shows a lock request on `objects` (the
    /// writer's CAS) waiting for ours.
    #[cfg(feature = "postgres")]
    fn wait_for_waiter(&self, backend: &Backend, within: Duration) {
        let MetadataLock::Postgres { runtime, client } = self else {
            return;
        };
        let schema = &backend.pg.as_ref().unwrap().1;
        let table = format!("\"{schema}\".objects");
        let deadline = Instant::now() + within;
        loop {
            let waiting: i64 = runtime
                .block_on(client.query_one(
                    "SELECT count(*) FROM pg_locks
                     WHERE NOT granted AND relation = $1::text::regclass",
                    &[&table],
                ))
                .unwrap()
                .get(0);
            if waiting > 0 {
                return;
            }
            if Instant::now() > deadline {
                let activity: Vec<String> = runtime
                    .block_on(client.query(
                        "SELECT format('%s %s %s %s: %s', pid, state, wait_event_type, \
                         wait_event, left(query, 200)) FROM pg_stat_activity",
                        &[],
                    ))
                    .unwrap()
                    .iter()
                    .map(|row| row.get(0))
                    .collect();
                panic!(
                    "the writer's CAS did not wait for the test's lock within {within:?}; \
                     server activity: {activity:#?}"
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn release(self) {
        match self {
            MetadataLock::Sqlite(conn) => conn.execute_batch("ROLLBACK").unwrap(),
            #[cfg(feature = "postgres")]
            MetadataLock::Postgres { runtime, client } => {
                runtime.block_on(client.batch_execute("ROLLBACK")).unwrap()
            }
        }
    }
}

#[test]
fn a_commit_frozen_while_waiting_for_the_metadata_lock_is_refused() {
    let _serial = tiered::serial();
    let _watchdog = Watchdog::new("frozen commit (sqlite)", Duration::from_secs(90));
    frozen_commits(&Backend::sqlite());
}

#[cfg(feature = "postgres")]
#[test]
fn a_commit_frozen_while_waiting_for_the_metadata_lock_is_refused_on_postgres() {
    let Some(backend) = postgres_backend("frozen commit (postgres)") else {
        return;
    };
    let _serial = tiered::serial();
    let _watchdog = Watchdog::new("frozen commit (postgres)", Duration::from_secs(90));
    frozen_commits(&backend);
    drop_backend(&backend);
}

fn frozen_commits(backend: &Backend) {
    let binary = tiered::example_binary();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("store");
    let logs = work.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let (_, first) = tiered::verify(&binary, &dir, &backend.args);
    assert!(first.contains("verify: "), "{first}");
    let spawn = |role: &'static str, args: Vec<String>, stdin: bool| Spawn {
        binary: &binary,
        role,
        dir: &dir,
        args,
        changelog: &backend.args,
        env: Vec::new(),
        stdin,
        logs: &logs,
        on_line: None,
    };
    let mut recovery =
        spawn("recovery", vec!["--timeout-s".into(), "600".into()], false).start("recovery");
    let mut writer = spawn(
        "writer",
        vec![
            "--count".into(),
            FROZEN_COMMITS.to_string(),
            "--announce-commits".into(),
            "--gate-commits".into(),
        ],
        true,
    )
    .start("writer");

    let mut failures = Vec::new();
    let mut expected_refused = 0;
    let mut expected_committed = 0;
    let mut writes_before = 0;
    let mut next_ready = None;
    for round in 0..FROZEN_COMMITS {
        let ready = next_ready.take().unwrap_or_else(|| {
            writer.expect("commit-ready", Duration::from_secs(20), "next write")
        });
        let entry = tiered::field(&ready.text, "entry").unwrap().to_owned();
        // 1. Hold the lock, then let the writer commit: it must wait on it.
        let lock = MetadataLock::take(&dir, backend);
        writer.send("go");
        let start = writer.expect("commit-start", Duration::from_secs(5), "the commit");
        assert_eq!(tiered::field(&start.text, "entry"), Some(entry.as_str()));
        // 2. Freeze it inside its commit, then let the lock go.
        //    SQLite: its `BEGIN IMMEDIATE` waits for ours, before the fence
        //    check (the busy timeout, 5 s, is far off).
        //    PostgreSQL, even rounds: once the server shows its CAS waiting
        //    for our lock (after its fence check took the entry's row); odd
        //    rounds: at once, most likely before its fence check.
        match &lock {
            MetadataLock::Sqlite(_) => std::thread::sleep(Duration::from_millis(50)),
            #[cfg(feature = "postgres")]
            MetadataLock::Postgres { .. } if round % 2 == 0 => {
                lock.wait_for_waiter(backend, Duration::from_secs(5));
            }
            #[cfg(feature = "postgres")]
            MetadataLock::Postgres { .. } => {}
        }
        writer.stop();
        let frozen_at = Instant::now();
        lock.release();
        // 3. Recovery claims the stale entry, cleans up (the new blob is not
        //    referenced: it deletes it) and removes the entry. On PostgreSQL
        //    the frozen commit already holds the entry's row (its fence
        //    check ran before the CAS waited on our lock), so the claim
        //    waits for the writer instead: then the writer wins.
        let deadline = frozen_at + STALENESS + backend.claim_allowance();
        let claimed = loop {
            recovery.check_alive();
            let (report, _) = tiered::verify(&binary, &dir, &backend.args);
            if report["changelog"] == 0 {
                break Some(frozen_at.elapsed());
            }
            if Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if claimed.is_none() && backend.pg.is_none() {
            failures.push(format!(
                "round {round}: recovery did not claim and clean entry {entry} of the frozen \
                 writer within {:?}",
                deadline - frozen_at
            ));
        }
        // 4. Resume the writer: its commit must be refused by the store if
        //    recovery claimed the entry, and land otherwise.
        writer.cont();
        let outcome = writer.expect("commit-outcome", Duration::from_secs(10), "the outcome");
        let outcome_kind = tiered::field(&outcome.text, "outcome").unwrap().to_owned();
        // Quiescent again once the writer waits for its next gate (or ends).
        if round + 1 < FROZEN_COMMITS {
            next_ready = Some(writer.expect("commit-ready", Duration::from_secs(20), "next write"));
        }
        let (report, stdout) = tiered::verify(&binary, &dir, &backend.args);
        println!(
            "frozen commit ({}) round {round}: entry {entry} {}; writer reported {outcome_kind}; \
             store writes={} dangling={} orphans={}",
            backend.name,
            claimed.map_or_else(
                || format!(
                    "not claimed while frozen ({:.1?}): the writer held its fence",
                    deadline - frozen_at
                ),
                |d| format!("claimed and cleaned {d:.1?} after the freeze")
            ),
            report["writes"],
            report["dangling"],
            report["orphans"]
        );
        // Claimed: the store must have refused the commit. Not claimed (the
        // writer held its entry's row): it may land, or be cut off by the
        // writer's own validity deadline when it resumes; either way the
        // report must match the store.
        let landed = report["writes"] - writes_before;
        writes_before = report["writes"];
        match (claimed.is_some(), outcome_kind.as_str(), landed) {
            (_, "refused", 0) | (false, "committed", 1) => {}
            _ => failures.push(format!(
                "round {round}: entry claimed while frozen: {}; the writer reported \
                 {outcome_kind}; commits landed: {landed}",
                claimed.is_some()
            )),
        }
        match outcome_kind.as_str() {
            "refused" => expected_refused += 1,
            "committed" => expected_committed += 1,
            _ => {}
        }
        if report["dangling"] != 0 {
            failures.push(format!(
                "round {round}: the resumed commit landed: {} dangling reference(s)\n{stdout}",
                report["dangling"]
            ));
        }
    }
    let tally = writer.finish("writer: ", Duration::from_secs(20));
    recovery.terminate();
    let stats = recovery.finish("recovery: ", Duration::from_secs(30));
    tiered::final_recovery(&binary, &dir, &backend.args);
    let (report, stdout) = tiered::verify(&binary, &dir, &backend.args);
    println!(
        "frozen commit ({}): {FROZEN_COMMITS} commits frozen inside the commit; writer counted \
         committed={} refused={}; store: writes={} commits_refused={}; recovery claimed={}; \
         orphans={} dangling={} changelog={}",
        backend.name,
        tally["committed"],
        tally["refused"],
        report["writes"],
        report["commits_refused"],
        stats["claimed"],
        report["orphans"],
        report["dangling"],
        report["changelog"],
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(report["dangling"], 0, "{stdout}");
    assert_eq!(report["orphans"], 0, "{stdout}");
    assert_eq!(report["changelog"], 0, "{stdout}");
    assert_eq!(tally["refused"], expected_refused, "{tally:?}");
    assert_eq!(report["commits_refused"], expected_refused, "{stdout}");
    assert_eq!(report["writes"], expected_committed, "{stdout}");
}

#[cfg(feature = "postgres")]
fn postgres_backend(test: &str) -> Option<Backend> {
    let url = pg_support::url(test)?;
    let schema = pg_support::fresh_schema("lh_freeze");
    Some(Backend {
        name: "postgres",
        args: vec![
            "--postgres".into(),
            url.clone(),
            "--pg-schema".into(),
            schema.clone(),
        ],
        pg: Some((url, schema)),
    })
}

#[cfg(feature = "postgres")]
fn drop_backend(backend: &Backend) {
    if let Some((url, schema)) = &backend.pg {
        pg_support::drop_schema(url, schema);
    }
}
