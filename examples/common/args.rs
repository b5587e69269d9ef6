//! The examples' command-line parser: `--name value` options and `--flag`
//! switches, declared up front so that `--help` prints the usage and exits
//! 0, and an unknown option, a missing value or a value that is not a
//! number is an error on stderr with exit status 2 (never silently ignored
//! or replaced by a default).
//!
//! Included by each example with `#[path = "common/args.rs"] mod args;`.

#![allow(dead_code)] // each example uses part of it

use std::collections::{HashMap, HashSet};
use std::process::ExitCode;
use std::str::FromStr;

/// What an option takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `--name`, no value.
    Flag,
    /// `--name TEXT`.
    Text,
    /// `--name N`, a non-negative integer.
    Number,
}

/// `--name` of kind `Kind`.
pub type Opt = (&'static str, Kind);

/// The parsed options of one command line.
#[derive(Clone, Debug, Default)]
pub struct Args {
    /// `--name value` pairs (a demo may add `dir` before passing them on).
    pub values: HashMap<String, String>,
    flags: HashSet<String>,
    /// The arguments that are not options, in order.
    pub operands: Vec<String>,
}

impl Args {
    /// Parses `raw` (the arguments after the program and subcommand)
    /// against `options`. `--help` (or `-h`) prints `usage` on stdout and
    /// yields `Err(ExitCode::SUCCESS)`; a bad command line prints the
    /// problem and a hint on stderr and yields `Err(ExitCode::from(2))`.
    pub fn parse(
        program: &str,
        raw: &[String],
        options: &[Opt],
        usage: &str,
    ) -> Result<Args, ExitCode> {
        Self::parse_with_operands(program, raw, options, 0, usage)
    }

    /// [`Args::parse`], accepting up to `max_operands` arguments that are
    /// not options (in [`Args::operands`]).
    pub fn parse_with_operands(
        program: &str,
        raw: &[String],
        options: &[Opt],
        max_operands: usize,
        usage: &str,
    ) -> Result<Args, ExitCode> {
        match Self::try_parse(raw, options, max_operands) {
            Ok(Some(args)) => Ok(args),
            Ok(None) => {
                print!("{usage}");
                Err(ExitCode::SUCCESS)
            }
            Err(problem) => {
                eprintln!("{program}: {problem}\n(run `{program} --help` for the usage)");
                Err(ExitCode::from(2))
            }
        }
    }

    /// `Ok(None)` when help was asked for.
    fn try_parse(
        raw: &[String],
        options: &[Opt],
        max_operands: usize,
    ) -> Result<Option<Args>, String> {
        let mut args = Args::default();
        let mut iter = raw.iter();
        while let Some(arg) = iter.next() {
            if arg == "--help" || arg == "-h" {
                return Ok(None);
            }
            let Some(body) = arg.strip_prefix("--") else {
                if args.operands.len() < max_operands {
                    args.operands.push(arg.clone());
                    continue;
                }
                return Err(format!("unexpected argument `{arg}`"));
            };
            let (name, inline) = match body.split_once('=') {
                Some((name, value)) => (name, Some(value.to_owned())),
                None => (body, None),
            };
            let Some(&(_, kind)) = options.iter().find(|(known, _)| *known == name) else {
                return Err(format!("unknown option `--{name}`"));
            };
            if kind == Kind::Flag {
                if inline.is_some() {
                    return Err(format!("`--{name}` takes no value"));
                }
                args.flags.insert(name.to_owned());
                continue;
            }
            let value = match inline {
                Some(value) => value,
                None => match iter.next() {
                    Some(value) if !value.starts_with("--") => value.clone(),
                    _ => return Err(format!("`--{name}` needs a value")),
                },
            };
            if kind == Kind::Number && value.parse::<u64>().is_err() {
                return Err(format!("`--{name} {value}`: not a non-negative integer"));
            }
            args.values.insert(name.to_owned(), value);
        }
        Ok(Some(args))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    pub fn flag(&self, key: &str) -> bool {
        self.flags.contains(key)
    }

    /// A demo's working directory: `--dir` if given, else a fresh temporary
    /// directory (removed when the returned guard drops). The returned
    /// arguments carry it as `dir`, for the child processes.
    pub fn with_demo_dir(
        &self,
    ) -> std::io::Result<(Args, std::path::PathBuf, Option<tempfile::TempDir>)> {
        let (dir, temp) = match self.get("dir") {
            Some(dir) => (std::path::PathBuf::from(dir), None),
            None => {
                let temp = tempfile::tempdir()?;
                (temp.path().to_owned(), Some(temp))
            }
        };
        let mut args = self.clone();
        args.values
            .insert("dir".to_owned(), dir.to_string_lossy().into_owned());
        Ok((args, dir, temp))
    }

    /// The number given with `--key`, or `default`. The parser has checked
    /// that it is an integer; one out of `T`'s range ends the process with
    /// status 2.
    pub fn num<T: FromStr>(&self, key: &str, default: T) -> T {
        match self.get(key) {
            None => default,
            Some(value) => value.parse().unwrap_or_else(|_| {
                eprintln!("`--{key} {value}`: out of range");
                std::process::exit(2)
            }),
        }
    }
}

/// Splits `raw` into the subcommand (the first argument if it is one of
/// `commands`, else `default`) and the rest.
pub fn subcommand<'a>(
    raw: &'a [String],
    commands: &[&'static str],
    default: &'static str,
) -> (&'static str, &'a [String]) {
    match raw
        .first()
        .and_then(|first| commands.iter().find(|c| **c == first.as_str()))
    {
        Some(command) => (command, &raw[1..]),
        None => (default, raw),
    }
}
