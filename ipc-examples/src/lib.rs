//! Narration helpers shared by the demos in `src/bin/`.
//!
//! Every demo prints what it is about to show ([`run`]), what each process does, prefixed with
//! the process's role and pid ([`say!`]), and a final verdict line. A wrong result is an `Err`,
//! which [`run`] turns into a `FAIL` line and a non-zero exit status, so the tour fails.
//!
//! ```no_run
//! use ipc_examples::{run, say};
//!
//! fn main() -> std::process::ExitCode {
//!     run("hello", "one process greets itself", || {
//!         say!("parent", "hello from {}", std::process::id());
//!         Ok("greeted once".to_owned())
//!     })
//! }
//! ```
#![forbid(unsafe_code)]

use std::error::Error;
use std::fmt::Display;
use std::process::{Command, ExitCode};

/// The error type of a demo's body.
pub type DemoError = Box<dyn Error + Send + Sync + 'static>;

/// The environment variable that tells a re-run demo binary which role to play.
pub const ROLE_ENV: &str = "IPC_DEMO_ROLE";

/// Prints one narration line: `[role pid] message`.
pub fn say(role: &str, message: impl Display) {
    println!("[{role:>10} {:>7}] {message}", std::process::id());
}

/// `say!(role, "format", args..)`: one narration line prefixed with the role and pid.
#[macro_export]
macro_rules! say {
    ($role:expr, $($arg:tt)*) => {
        $crate::say($role, format_args!($($arg)*))
    };
}

/// Runs a demo's body: prints the title and what it shows, then `PASS: <summary>` and exit
/// status 0, or `FAIL: <error>` and exit status 1.
pub fn run(title: &str, shows: &str, body: impl FnOnce() -> Result<String, DemoError>) -> ExitCode {
    println!("== {title}: {shows}");
    match body() {
        Ok(summary) => {
            println!("PASS: {summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("FAIL: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Returns `Err(what)` unless `ok`: `ensure(total == expected, format!(..))?`.
///
/// # Errors
/// `what`, when `ok` is false.
pub fn ensure(ok: bool, what: impl Into<String>) -> Result<(), DemoError> {
    if ok { Ok(()) } else { Err(what.into().into()) }
}

/// A POSIX IPC name for a demo: `/ipcrs-demo-{tag}-{pid}` (the workspace prefix, so
/// `cargo xtask clean` finds what a killed demo left behind).
pub fn demo_name(tag: &str) -> String {
    format!("/ipcrs-demo-{tag}-{}", std::process::id())
}

/// System V keys for a demo to try in turn, in the workspace's range (`0x4950xxxx`) and
/// derived from its pid: a set or queue under such a key is one `cargo xtask clean` removes if
/// the demo is killed, where an `IPC_PRIVATE` one would be left behind unnoticed. Create with
/// `IPC_EXCL` and move on to the next key when one is taken.
pub fn demo_keys() -> impl Iterator<Item = i32> {
    let pid = std::process::id();
    (0..64u32).map(move |n| 0x4950_0000 | (pid.wrapping_add(n) & 0xffff) as i32)
}

/// The role this process plays if it is a re-run of a demo binary (see [`spawn_role`]).
pub fn role() -> Option<String> {
    std::env::var(ROLE_ENV).ok()
}

/// A command that re-runs the current demo binary to play `role`.
///
/// # Errors
/// If the path of the current executable cannot be read.
pub fn spawn_role(role: &str) -> Result<Command, DemoError> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.env(ROLE_ENV, role);
    Ok(cmd)
}

/// Child processes of a demo that are killed and reaped if the demo ends (say, on an error)
/// before they do, so no orphan outlives it.
#[derive(Debug, Default)]
pub struct Family {
    children: Vec<(String, std::process::Child)>,
}

impl Family {
    /// No children yet.
    pub fn new() -> Family {
        Family::default()
    }

    /// Adopts a child, named for messages.
    pub fn add(&mut self, what: impl Into<String>, child: std::process::Child) {
        self.children.push((what.into(), child));
    }

    /// Waits for every child, in order; each must exit with status 0.
    ///
    /// # Errors
    /// The first child that failed, or what `wait` fails with.
    pub fn wait_all(&mut self) -> Result<(), DemoError> {
        while !self.children.is_empty() {
            let (what, mut child) = self.children.remove(0);
            let status = child.wait()?;
            ensure(status.success(), format!("{what} failed: {status}"))?;
        }
        Ok(())
    }
}

impl Drop for Family {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
