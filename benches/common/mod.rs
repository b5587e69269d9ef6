//! Shared bench plumbing: run criterion, then print each comparison as ratios
//! against its peer, read back from criterion's own estimates.
//!
//! The machine is noisy; absolute times drift between runs, ratios measured
//! in the same run do not (much). Every table therefore names a baseline and
//! prints `time / baseline time` for each contender.

#![allow(dead_code)] // each bench uses the part it needs

use std::path::PathBuf;
use std::time::Duration;

use criterion::Criterion;

/// Where criterion writes (and we read) estimates: the same rule criterion
/// uses, fixed explicitly so both sides agree.
fn output_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("criterion")
}

/// A criterion configured for a 2-core shared machine: short, few samples.
pub fn criterion() -> Criterion {
    Criterion::default()
        .output_directory(&output_dir())
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args()
}

/// The mean time (ns) criterion estimated for `group/id`, if it ran.
pub fn mean_ns(group: &str, id: &str) -> Option<f64> {
    let path = output_dir().join(group).join(id).join("new/estimates.json");
    let json = std::fs::read_to_string(path).ok()?;
    // {"mean":{"confidence_interval":{...},"point_estimate":123.4,...},...}
    let mean = &json[json.find("\"mean\"")?..];
    let value = &mean[mean.find("\"point_estimate\":")? + "\"point_estimate\":".len()..];
    let end = value.find([',', '}'])?;
    value[..end].trim().parse().ok()
}

/// Formats nanoseconds with a unit a reader can take in at a glance.
pub fn human(ns: f64) -> String {
    match ns {
        ns if ns >= 1e9 => format!("{:.2} s", ns / 1e9),
        ns if ns >= 1e6 => format!("{:.2} ms", ns / 1e6),
        ns if ns >= 1e3 => format!("{:.2} µs", ns / 1e3),
        ns => format!("{ns:.1} ns"),
    }
}

/// A ratio with two significant digits at least: `0.73`, `0.0021`.
pub fn ratio(r: f64) -> String {
    if r >= 0.1 || r == 0.0 {
        format!("{r:.2}")
    } else {
        let decimals = (-r.log10()).ceil() as usize + 1;
        format!("{r:.decimals$}")
    }
}

/// Prints one comparison table: a row per case, a column per contender,
/// each cell `time (ratio to the baseline contender)`.
///
/// `cases` are criterion ids below `group` (e.g. `"watch_cell/1000"` is
/// `case = "1000"` with contender `"watch_cell"`); use `""` for no parameter.
pub fn print_ratios(group: &str, cases: &[&str], contenders: &[&str], baseline: &str) {
    println!("\n## {group} (ratio = time / {baseline} time; < 1.0 is faster)");
    let mut header = format!("| {:<8} |", "case");
    for contender in contenders {
        header += &format!(" {contender:<24} |");
    }
    println!("{header}");
    println!("|{}", "---|".repeat(contenders.len() + 1));
    for case in cases {
        let id = |contender: &str| {
            if case.is_empty() {
                contender.to_owned()
            } else {
                format!("{contender}/{case}")
            }
        };
        let base = mean_ns(group, &id(baseline));
        let mut row = format!("| {:<8} |", if case.is_empty() { "-" } else { case });
        for contender in contenders {
            let cell = match (mean_ns(group, &id(contender)), base) {
                (Some(t), Some(b)) => format!("{} ({}x)", human(t), ratio(t / b)),
                (Some(t), None) => human(t),
                _ => "not run".to_owned(),
            };
            row += &format!(" {cell:<24} |");
        }
        println!("{row}");
    }
}
