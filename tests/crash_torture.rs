//! Crash torture: writer and recovery *processes* of the `tiered_store`
//! example share one store directory and are killed with SIGKILL at random
//! points. Once recovery has converged, the store must be consistent: no
//! orphaned blob, no metadata pointing to a missing blob, an empty changelog.
//!
//! Runs with the changelog in SQLite (`changelog.db` in the store directory)
//! and, when `LEASEHOLD_PG_URL` names a server, in PostgreSQL (the example's
//! `--postgres URL --pg-schema S`, a fresh schema per run).
//!
//! `cargo test` builds the example next to this test's binary
//! (`target/<profile>/examples/tiered_store`).
#![cfg(all(feature = "sqlite", unix))]

#[cfg(feature = "postgres")]
#[path = "support/postgres.rs"]
mod pg_support;
#[path = "support/tiered.rs"]
mod tiered;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rand::Rng;

const KILLS: u32 = 60;
const WRITERS: usize = 3;
const RECOVERERS: usize = 1;

struct Role {
    name: &'static str,
    args: Vec<String>,
}

struct Fleet {
    binary: PathBuf,
    dir: PathBuf,
    logs: PathBuf,
    spawned: u32,
    children: Vec<(usize, Child)>,
    roles: Vec<Role>,
    /// Arguments choosing the changelog, given to every process.
    changelog: Vec<String>,
}

impl Fleet {
    fn spawn(&mut self, role: usize) -> Child {
        self.spawned += 1;
        let stderr = File::create(
            self.logs
                .join(format!("{}-{}.stderr", self.roles[role].name, self.spawned)),
        )
        .unwrap();
        Command::new(&self.binary)
            .arg(self.roles[role].name)
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.roles[role].args)
            .args(&self.changelog)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap()
    }

    /// Fails the test if a process ended by itself (an error, not a kill).
    fn check_alive(&mut self) {
        for (role, child) in &mut self.children {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "a {} process exited by itself with {status}; stderr logs in {}",
                    self.roles[*role].name,
                    self.logs.display()
                );
            }
        }
    }
}

fn run(binary: &Path, args: &[&str], dir: &Path, changelog: &[String]) -> Output {
    Command::new(binary)
        .args(args)
        .arg("--dir")
        .arg(dir)
        .args(changelog)
        .output()
        .unwrap()
}

fn parse_verify(stdout: &str) -> HashMap<String, u64> {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("verify: "))
        .unwrap_or_else(|| panic!("no verify line in {stdout}"));
    line["verify: ".len()..]
        .split_whitespace()
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_owned(), v.parse().unwrap())
        })
        .collect()
}

#[test]
fn sigkilled_writers_and_recoverers_leave_no_orphan_and_no_dangling_reference() {
    torture("sqlite", Vec::new());
}

#[cfg(feature = "postgres")]
#[test]
fn sigkilled_writers_and_recoverers_leave_no_orphan_and_no_dangling_reference_on_postgres() {
    let Some(url) = pg_support::url("crash torture (postgres)") else {
        return;
    };
    let schema = pg_support::fresh_schema("lh_torture");
    torture(
        "postgres",
        vec![
            "--postgres".into(),
            url.clone(),
            "--pg-schema".into(),
            schema.clone(),
        ],
    );
    pg_support::drop_schema(&url, &schema);
}

/// The torture run with the changelog chosen by `changelog` (the example's
/// arguments; empty for SQLite).
fn torture(backend: &str, changelog: Vec<String>) {
    let binary = tiered::example_binary();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("store");
    let logs = work.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let started = Instant::now();

    let mut fleet = Fleet {
        binary: binary.clone(),
        dir: dir.clone(),
        logs,
        spawned: 0,
        children: Vec::new(),
        roles: vec![
            Role {
                name: "writer",
                args: vec![
                    "--objects".into(),
                    "32".into(),
                    "--stall-every".into(),
                    "30".into(),
                ],
            },
            Role {
                name: "recovery",
                args: vec!["--timeout-s".into(), "600".into()],
            },
        ],
        changelog: changelog.clone(),
    };
    // Create the store before the fleet races to.
    let first = run(&binary, &["verify"], &dir, &changelog);
    assert!(first.status.success(), "{first:?}");
    for _ in 0..WRITERS {
        let child = fleet.spawn(0);
        fleet.children.push((0, child));
    }
    for _ in 0..RECOVERERS {
        let child = fleet.spawn(1);
        fleet.children.push((1, child));
    }

    let mut rng = rand::rng();
    let mut kills = HashMap::from([("writer", 0_u32), ("recovery", 0_u32)]);
    for kill in 0..KILLS {
        // Workload pacing (processes need time to get into their writes),
        // not a sleep that makes the test's point.
        std::thread::sleep(Duration::from_millis(rng.random_range(20..160)));
        fleet.check_alive();
        // Writers (a random one), and every 6th kill the recovery process,
        // wherever it is (mid-claim, mid-cleanup).
        let victim = if kill % 6 == 5 {
            fleet
                .children
                .iter()
                .position(|(role, _)| *role == 1)
                .unwrap()
        } else {
            rng.random_range(0..WRITERS)
        };
        let role = fleet.children[victim].0;
        fleet.children[victim].1.kill().unwrap(); // SIGKILL
        fleet.children[victim].1.wait().unwrap();
        *kills.get_mut(fleet.roles[role].name).unwrap() += 1;
        let child = fleet.spawn(role);
        fleet.children[victim] = (role, child);
    }
    fleet.check_alive();
    for (_, child) in &mut fleet.children {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let workload = started.elapsed();

    // The crashes really left work behind for recovery.
    let before = parse_verify(&String::from_utf8_lossy(
        &run(&binary, &["verify"], &dir, &changelog).stdout,
    ));
    let left_behind = before["changelog"];

    let recovered = run(
        &binary,
        &["recovery", "--until-empty", "--timeout-s", "120"],
        &dir,
        &changelog,
    );
    assert!(
        recovered.status.success(),
        "final recovery failed: {}",
        String::from_utf8_lossy(&recovered.stderr)
    );
    let verified = run(&binary, &["verify"], &dir, &changelog);
    let stdout = String::from_utf8_lossy(&verified.stdout);
    let report = parse_verify(&stdout);
    println!(
        "crash torture ({backend} changelog): {} SIGKILLs ({} writers, {} recovery) + {} at the end; {} committed writes \
         over {} objects; {} stalls, {} commits refused; {} entries left by the crashes \
         (orphans before final recovery: {}); {} recovery cleanups in total; after recovery: \
         orphans={} dangling={} changelog={} quarantined={}; workload {:.1?}, total {:.1?}",
        KILLS,
        kills["writer"],
        kills["recovery"],
        WRITERS + RECOVERERS,
        report["writes"],
        report["objects"],
        report["stalls"],
        report["commits_refused"],
        left_behind,
        before["orphans"],
        report["recovery_cleanups"],
        report["orphans"],
        report["dangling"],
        report["changelog"],
        report["quarantined"],
        workload,
        started.elapsed(),
    );
    assert!(verified.status.success(), "inconsistent store:\n{stdout}");
    assert_eq!(report["orphans"], 0, "{stdout}");
    assert_eq!(report["dangling"], 0, "{stdout}");
    assert_eq!(report["changelog"], 0, "{stdout}");
    assert_eq!(report["quarantined"], 0, "{stdout}");
    assert!(
        report["writes"] > 0,
        "the writers committed nothing: {stdout}"
    );
    assert!(kills["writer"] >= 40, "{kills:?}");
}
