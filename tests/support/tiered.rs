//! Shared by the tests that drive the `tiered_store` example as real
//! processes: locating the binary, processes whose stdout lines are read by
//! a thread (with bounded waits), signals, and the `key=value` lines the
//! example prints (`verify:`, `writer:`, `recovery:`).
//!
//! Every child is killed when its [`Proc`] is dropped, and a [`Watchdog`]
//! bounds a whole test: past its limit it kills every child and aborts the
//! test binary with a message, so a lost wake-up fails fast instead of
//! hanging the run.
#![allow(dead_code)] // each test binary uses the part it needs

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The example's staleness threshold (`STALENESS` in tiered_store.rs).
pub const STALENESS: Duration = Duration::from_millis(1000);
/// The example recovery loop's idle wait: one poll interval.
pub const RECOVERY_POLL: Duration = Duration::from_millis(100);

/// `target/<profile>/examples/tiered_store`, built by `cargo test` or by
/// `cargo build --examples` (scripts/test.sh does it before nextest).
pub fn example_binary() -> PathBuf {
    let test_exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/examples/
    let profile_dir = test_exe.parent().unwrap().parent().unwrap();
    let binary = profile_dir
        .join("examples")
        .join(format!("tiered_store{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.exists(),
        "{} is missing: run the test through `cargo test` (which builds examples), \
         `bash scripts/test.sh`, or `cargo build --all-features --examples` first",
        binary.display()
    );
    binary
}

/// Held by each process-driven test of a binary while it runs: the tests
/// measure timings (staleness, claim latency) that several concurrent
/// fleets of processes on a small machine would distort.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Pids of live children, killed by the [`Watchdog`] before it aborts.
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Sends `signal` to `pid`.
pub fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {signal}): {}",
        std::io::Error::last_os_error()
    );
}

/// Aborts the test binary (after SIGKILLing every child) if the test is
/// still running after `limit`. Disarmed on drop.
pub struct Watchdog {
    done: Arc<AtomicBool>,
}

impl Watchdog {
    pub fn new(test: &'static str, limit: Duration) -> Self {
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
            if flag.load(Ordering::SeqCst) {
                return;
            }
            for pid in CHILDREN.lock().unwrap().iter() {
                // SAFETY: as in `signal`; failures (already gone) ignored.
                unsafe { libc::kill(*pid as libc::pid_t, libc::SIGKILL) };
            }
            eprintln!("\n!!! {test}: still running after {limit:?}: aborting (time limit) !!!");
            std::process::abort();
        });
        Watchdog { done }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
    }
}

/// A line of a child's stdout, with the moment the test read it.
#[derive(Debug, Clone)]
pub struct Line {
    pub text: String,
    pub at: Instant,
}

/// Called by the reader thread on each line, before it is queued: may act on
/// it at once (e.g. SIGSTOP the process), with the process's pid.
pub type OnLine = Box<dyn FnMut(u32, &str) + Send>;

/// A child process of the example whose stdout is read line by line.
pub struct Proc {
    pub name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<Line>,
    /// Every line read so far by [`Proc::expect`] or [`Proc::drain`].
    pub seen: Vec<String>,
    pub stderr_log: PathBuf,
}

/// How to start one process.
pub struct Spawn<'a> {
    pub binary: &'a Path,
    pub role: &'a str,
    pub dir: &'a Path,
    pub args: Vec<String>,
    pub changelog: &'a [String],
    pub env: Vec<(String, String)>,
    pub stdin: bool,
    pub logs: &'a Path,
    pub on_line: Option<OnLine>,
}

impl Spawn<'_> {
    pub fn start(self, name: impl Into<String>) -> Proc {
        let name = name.into();
        let stderr_log = self.logs.join(format!("{name}.stderr"));
        let mut command = Command::new(self.binary);
        command
            .arg(self.role)
            .arg("--dir")
            .arg(self.dir)
            .args(&self.args)
            .args(self.changelog)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(File::create(&stderr_log).unwrap())
            .stdin(if self.stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        let mut child = command.spawn().unwrap();
        let pid = child.id();
        CHILDREN.lock().unwrap().push(pid);
        let stdout = child.stdout.take().unwrap();
        let stdin = child.stdin.take();
        let (tx, lines): (Sender<Line>, _) = channel();
        let mut on_line = self.on_line;
        std::thread::spawn(move || {
            for text in BufReader::new(stdout).lines() {
                let Ok(text) = text else { return };
                if let Some(on_line) = &mut on_line {
                    on_line(pid, &text);
                }
                let line = Line {
                    text,
                    at: Instant::now(),
                };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Proc {
            name,
            child,
            stdin,
            lines,
            seen: Vec::new(),
            stderr_log,
        }
    }
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// The next stdout line starting with `prefix` (skipping others), within
    /// `within`; fails the test, naming `what`, otherwise.
    pub fn expect(&mut self, prefix: &str, within: Duration, what: &str) -> Line {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.text.clone());
                    if line.text.starts_with(prefix) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "{}: no `{prefix}` line within {within:?} ({what}); stdout so far: {:?}; stderr: {}",
                    self.name,
                    self.seen,
                    self.stderr()
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "{}: exited ({:?}) before printing `{prefix}` ({what}); stdout: {:?}; stderr: {}",
                    self.name,
                    self.child.try_wait(),
                    self.seen,
                    self.stderr()
                ),
            }
        }
    }

    /// Lines read so far without waiting.
    pub fn drain(&mut self) -> Vec<Line> {
        let lines: Vec<Line> = self.lines.try_iter().collect();
        self.seen.extend(lines.iter().map(|l| l.text.clone()));
        lines
    }

    /// Writes one line to the child's stdin.
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("spawned with stdin");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    pub fn stop(&self) {
        signal(self.pid(), libc::SIGSTOP);
    }

    pub fn cont(&self) {
        signal(self.pid(), libc::SIGCONT);
    }

    pub fn terminate(&self) {
        signal(self.pid(), libc::SIGTERM);
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Fails the test if the process has exited.
    pub fn check_alive(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "{} exited by itself with {status}; stdout: {:?}; stderr: {}",
                self.name,
                self.seen,
                self.stderr()
            );
        }
    }

    /// Waits (bounded) for the process to exit successfully; returns the
    /// parsed `prefix` line it printed (e.g. `writer:`).
    pub fn finish(&mut self, prefix: &str, within: Duration) -> HashMap<String, u64> {
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                self.kill();
                panic!(
                    "{} did not exit within {within:?}; stdout: {:?}; stderr: {}",
                    self.name,
                    self.seen,
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader thread ends at EOF; collect everything it read.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line.text);
        }
        assert!(
            status.success(),
            "{} failed with {status}; stdout: {:?}; stderr: {}",
            self.name,
            self.seen,
            self.stderr()
        );
        let line = self
            .seen
            .iter()
            .rev()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("{}: no `{prefix}` line in {:?}", self.name, self.seen));
        parse_kv(line)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Never leave a child behind, stopped or not.
        let _ = self.child.kill();
        let _ = signal_quiet(self.pid(), libc::SIGCONT);
        let _ = self.child.wait();
        CHILDREN.lock().unwrap().retain(|pid| *pid != self.pid());
    }
}

fn signal_quiet(pid: u32, signal: libc::c_int) -> libc::c_int {
    // SAFETY: as in `signal`.
    unsafe { libc::kill(pid as libc::pid_t, signal) }
}

/// Runs one subcommand to completion.
pub fn run(binary: &Path, args: &[&str], dir: &Path, changelog: &[String]) -> Output {
    Command::new(binary)
        .args(args)
        .arg("--dir")
        .arg(dir)
        .args(changelog)
        .output()
        .unwrap()
}

/// `prefix: k=v k=v ...` -> {k: v}; values that are not numbers are skipped.
pub fn parse_kv(line: &str) -> HashMap<String, u64> {
    let rest = line.split_once(": ").map_or(line, |(_, rest)| rest);
    rest.split_whitespace()
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

/// `key=value` of a `commit-...` line, as text.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

/// Runs `verify` and parses its line.
pub fn verify(binary: &Path, dir: &Path, changelog: &[String]) -> (HashMap<String, u64>, String) {
    let out = run(binary, &["verify"], dir, changelog);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = stdout
        .lines()
        .find(|l| l.starts_with("verify: "))
        .unwrap_or_else(|| {
            panic!(
                "no verify line: {stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    (parse_kv(line), stdout)
}

/// Runs the final `recovery --until-empty`, failing the test if it fails.
pub fn final_recovery(binary: &Path, dir: &Path, changelog: &[String]) -> HashMap<String, u64> {
    let out = run(
        binary,
        &["recovery", "--until-empty", "--timeout-s", "60"],
        dir,
        changelog,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "final recovery failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find(|l| l.starts_with("recovery: "))
        .map(parse_kv)
        .unwrap_or_default()
}

/// Where a test's changelog lives: SQLite in the store directory, or a
/// fresh PostgreSQL schema (dropped on drop).
pub struct Backend {
    pub name: &'static str,
    /// The example's arguments choosing the changelog.
    pub args: Vec<String>,
    pub pg: Option<(String, String)>,
}

impl Backend {
    /// How long past the staleness threshold a test waits for recovery to
    /// claim and clean a frozen writer's entry.
    pub fn claim_allowance(&self) -> Duration {
        Duration::from_secs(3)
    }

    pub fn sqlite() -> Self {
        Backend {
            name: "sqlite",
            args: Vec::new(),
            pg: None,
        }
    }
}
