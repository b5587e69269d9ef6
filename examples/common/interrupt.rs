//! SIGINT and SIGTERM for the examples that run child processes: caught,
//! instead of ending the process with its children still running, so the
//! demo stops them first and then exits with the shell's status for the
//! signal (130 or 143).
//!
//! Included with `#[path = "common/interrupt.rs"] mod interrupt;`.

use std::process::ExitCode;

use tokio::signal::unix::{SignalKind, signal};

/// The signal that stopped a demo.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Int,
    Term,
}

impl Signal {
    pub fn name(self) -> &'static str {
        match self {
            Signal::Int => "SIGINT",
            Signal::Term => "SIGTERM",
        }
    }
}

/// The demo stopped on a signal, after its `stopped` child processes.
#[derive(Debug)]
pub struct Interrupted {
    pub signal: Signal,
    pub stopped: u64,
}

impl Interrupted {
    /// The shell's convention: 128 + the signal number.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self.signal {
            Signal::Int => 130,
            Signal::Term => 143,
        })
    }
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "interrupted by {}: stopped {} child processes",
            self.signal.name(),
            self.stopped
        )
    }
}

impl std::error::Error for Interrupted {}

/// SIGINT and SIGTERM, caught from [`Interrupt::new`] on.
#[derive(Debug)]
pub struct Interrupt {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Interrupt {
    /// Catches both signals; call it before spawning the first child.
    pub fn new() -> std::io::Result<Self> {
        Ok(Interrupt {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    /// Waits for either signal.
    pub async fn recv(&mut self) -> Signal {
        tokio::select! {
            _ = self.int.recv() => Signal::Int,
            _ = self.term.recv() => Signal::Term,
        }
    }
}
