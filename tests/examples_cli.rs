//! The examples' command lines, as a user meets them: `--help` prints the
//! usage and exits 0 without running anything; an unknown option or a bad
//! value is a clear error with exit status 2, never silently ignored.
//!
//! Runs the example binaries that `cargo test` (or scripts/test.sh, which
//! builds the examples first) leaves in `target/<profile>/examples/`.
#![cfg(all(feature = "sqlite", unix))]

use std::path::PathBuf;
use std::process::{Command, Output};

const EXAMPLES: &[&str] = &[
    "tiered_store",
    "lease_gc",
    "recovery_scan",
    "sync_status",
    "targeted_wakeups",
    "lease_reader",
];

fn example(name: &str) -> PathBuf {
    let test_exe = std::env::current_exe().unwrap();
    let binary = test_exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.exists(),
        "{} is missing: run `cargo build --all-features --examples` first",
        binary.display()
    );
    binary
}

fn run(name: &str, args: &[&str]) -> Output {
    Command::new(example(name)).args(args).output().unwrap()
}

#[test]
fn help_prints_the_usage_and_exits_zero_without_running() {
    for name in EXAMPLES {
        let out = run(name, &["--help"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{name} --help: {out:?}");
        assert!(
            stdout.to_lowercase().contains("usage"),
            "{name} --help printed: {stdout}"
        );
    }
}

#[test]
fn an_unknown_option_is_an_error_with_status_2() {
    for name in EXAMPLES {
        let out = run(name, &["--no-such-option", "2"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {out:?}");
        assert!(stderr.contains("no-such-option"), "{name} said: {stderr}");
    }
}

#[test]
fn a_value_that_is_not_a_number_is_an_error_with_status_2() {
    let out = run("tiered_store", &["--kills", "two"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        stderr.contains("kills") && stderr.contains("two"),
        "{stderr}"
    );
}
