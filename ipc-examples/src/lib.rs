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

/// The environment variable that carries the pid of the process that started a role.
pub const PARENT_ENV: &str = "IPC_DEMO_PARENT";

/// The role this process plays if it is a re-run of a demo binary (see [`spawn_role`]).
///
/// A process that plays a role never outlives the demo that started it: the first call asks
/// the kernel to kill this process when its parent dies ([`die_with_parent`]), and exits at once
/// if the parent is already gone.
pub fn role() -> Option<String> {
    let role = std::env::var(ROLE_ENV).ok()?;
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let parent = std::env::var(PARENT_ENV).ok().and_then(|p| p.parse().ok());
        if let Some(parent) = parent {
            die_with_parent(parent);
        }
    });
    Some(role)
}

/// Makes the kernel send SIGKILL to this process when its parent dies
/// (`prctl(PR_SET_PDEATHSIG)`), and exits at once if the parent (`parent`, the pid the caller
/// knew it by) is already gone. A demo's participants are stopped this way even when the demo
/// itself is killed, so none is left running.
///
/// Call it first thing in a spawned child, or in a child forked from a single-threaded parent
/// (it may `exit`). Children must be started from the thread that stays alive (the kernel
/// watches the parent *thread*); the demos start them from their main thread.
pub fn die_with_parent(parent: u32) {
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    if nix::unistd::getppid().as_raw() as u32 != parent {
        std::process::exit(3);
    }
}

/// A command that re-runs the current demo binary to play `role`.
///
/// # Errors
/// If the path of the current executable cannot be read.
pub fn spawn_role(role: &str) -> Result<Command, DemoError> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.env(ROLE_ENV, role)
        .env(PARENT_ENV, std::process::id().to_string());
    Ok(cmd)
}

/// Child processes of a demo that are killed and reaped if the demo ends (say, on an error)
/// before they do, so no orphan outlives it.
#[derive(Debug, Default)]
pub struct Family {
    children: Vec<(String, std::process::Child)>,
}

/// How long [`Family::wait_all`] waits for the whole family.
pub const FAMILY_LIMIT: std::time::Duration = std::time::Duration::from_secs(90);

impl Family {
    /// No children yet.
    pub fn new() -> Family {
        Family::default()
    }

    /// Adopts a child, named for messages.
    pub fn add(&mut self, what: impl Into<String>, child: std::process::Child) {
        self.children.push((what.into(), child));
    }

    /// Waits for every child, at most [`FAMILY_LIMIT`]; each must exit with status 0.
    ///
    /// # Errors
    /// As [`wait_all_timeout`](Self::wait_all_timeout).
    pub fn wait_all(&mut self) -> Result<(), DemoError> {
        self.wait_all_timeout(FAMILY_LIMIT)
    }

    /// Waits for every child, whichever ends first, at most `limit` in all; each must exit
    /// with status 0. The first child that fails ends the wait at once: the error names it,
    /// and dropping the family then stops and reaps the others — a dead participant never
    /// leaves the rest blocked on it.
    ///
    /// # Errors
    /// The first child that failed, a child still running at the deadline, or what
    /// `pidfd_open`/`poll`/`wait` fail with.
    pub fn wait_all_timeout(&mut self, limit: std::time::Duration) -> Result<(), DemoError> {
        self.wait_all_watching(&mut Family::new(), limit)
    }

    /// Waits for every child as [`wait_all_timeout`](Self::wait_all_timeout) does, while the
    /// children of `watched` (servers, say, that must outlive their clients) keep running: one
    /// of them ending first, whatever its status, ends the wait with an error that names it.
    ///
    /// # Errors
    /// As [`wait_all_timeout`](Self::wait_all_timeout), and a watched child that ended.
    pub fn wait_all_watching(
        &mut self,
        watched: &mut Family,
        limit: std::time::Duration,
    ) -> Result<(), DemoError> {
        use rustix::event::{PollFd, PollFlags, Timespec, poll};
        let deadline = std::time::Instant::now() + limit;
        while !self.children.is_empty() {
            // Reap whoever has ended; the first failure ends the wait.
            let mut i = 0;
            while i < self.children.len() {
                if let Some(status) = self.children[i].1.try_wait()? {
                    let (what, _) = self.children.remove(i);
                    ensure(status.success(), format!("{what} failed: {status}"))?;
                } else {
                    i += 1;
                }
            }
            if self.children.is_empty() {
                break;
            }
            for (what, child) in &mut watched.children {
                if let Some(status) = child.try_wait()? {
                    return Err(format!("{what} ended before the others: {status}").into());
                }
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                let names: Vec<&str> = self.children.iter().map(|(w, _)| w.as_str()).collect();
                return Err(format!(
                    "{} still running after {limit:?}: {}",
                    names.len(),
                    names.join(", ")
                )
                .into());
            }
            // A pidfd becomes readable when its process ends: one poll waits for any child.
            let pidfds = self
                .children
                .iter()
                .chain(&watched.children)
                .map(|(_, c)| {
                    let pid = rustix::process::Pid::from_raw(c.id() as i32).ok_or("pid 0")?;
                    Ok(rustix::process::pidfd_open(
                        pid,
                        rustix::process::PidfdFlags::empty(),
                    )?)
                })
                .collect::<Result<Vec<_>, DemoError>>()?;
            let mut fds: Vec<PollFd<'_>> = pidfds
                .iter()
                .map(|fd| PollFd::new(fd, PollFlags::IN))
                .collect();
            let ts = Timespec {
                tv_sec: left.as_secs().min(i64::MAX as u64) as i64,
                tv_nsec: i64::from(left.subsec_nanos()),
            };
            match poll(&mut fds, Some(&ts)) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
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
