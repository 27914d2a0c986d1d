//! Test and benchmark support for the ipc workspace. Not published; a dev-dependency only.
//!
//! Every integration test and bench in the workspace needs the same few things, so they live here
//! once instead of five times:
//!
//! - [`unique`], [`posix_name`], [`sysv_key`]: names and keys that carry the workspace prefix
//!   ([`PREFIX`]), so parallel tests never collide and `cargo xtask clean` can find leftovers.
//! - [`role`], [`child`], [`Proc`]: re-run the current test binary as a child process that plays a
//!   role (the preferred way to get a second process in a test), and wait for it with a bound.
//! - [`Watchdog`]: aborts the whole test process if a test takes longer than it should, so a bug
//!   fails instead of hanging.
//! - [`fnv1a64`], [`SplitMix64`]: checksums and a deterministic random stream for payloads.
//! - [`bench`](mod@bench): the one result-line format every bench prints and `cargo xtask bench` reads.
//! - [`objects`]: the workspace's kernel objects, for leak checks before and after a scenario.
//!
//! ```
//! let name = ipc_testkit::posix_name("doc");
//! assert!(name.starts_with("/ipcrs-doc-"));
//! ```

mod sys;

pub mod bench;
/// The workspace's kernel objects (prefixed names, System V ids): snapshots for leak checks.
/// The same file as xtask's, so both agree on what "ours" means.
#[path = "../../xtask/src/objects.rs"]
pub mod objects;

use std::ffi::OsStr;
use std::io;
use std::os::fd::OwnedFd;
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// The prefix of every named object (POSIX shm/sem/mq names, FIFO directories) that the
/// workspace's tests, demos and benches create. `cargo xtask clean` removes objects by it.
pub const PREFIX: &str = "ipcrs";

/// The upper 16 bits of every System V key the workspace's tests and demos use (`"IP"`).
pub const SYSV_KEY_BASE: i32 = 0x4950_0000;

/// The environment variable that tells a re-run test binary which role to play.
pub const ROLE_ENV: &str = "IPC_TEST_ROLE";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process and call: `ipcrs-{tag}-{pid}-{n}`.
///
/// `tag` should be short (a few letters): POSIX names have length limits.
pub fn unique(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{PREFIX}-{tag}-{}-{n}", std::process::id())
}

/// A POSIX IPC name (`/ipcrs-{tag}-{pid}-{n}`) for `shm_open`, `sem_open` and `mq_open`.
pub fn posix_name(tag: &str) -> String {
    format!("/{}", unique(tag))
}

/// A System V key in the workspace's range (`0x4950_xxxx`), different on every call within a
/// process and likely different across processes.
///
/// Keys can still collide with another process's: create with `IPC_EXCL` and, on `EEXIST`, ask
/// for another key.
pub fn sysv_key() -> i32 {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mix = fnv1a64(&[std::process::id().to_le_bytes(), n.to_le_bytes()].concat());
    SYSV_KEY_BASE | (mix as i32 & 0xFFFF)
}

/// The role this process was started to play, if it is a re-run child (see [`child`]).
pub fn role() -> Option<String> {
    std::env::var(ROLE_ENV).ok()
}

/// The harness name of a test: `test_path!(my_test)` in `tests/it/pipe.rs` is `"pipe::my_test"`.
#[macro_export]
macro_rules! test_path {
    ($f:ident) => {
        $crate::harness_name(module_path!(), stringify!($f))
    };
}

/// `module_path!()` of a test minus the crate name, joined with the test's function name.
pub fn harness_name(module_path: &str, function: &str) -> String {
    match module_path.split_once("::") {
        Some((_, rest)) => format!("{rest}::{function}"),
        None => function.to_owned(),
    }
}

/// A command that re-runs the current test binary to execute only `test` (use [`test_path!`])
/// with [`ROLE_ENV`] set to `role`. The test checks [`role`] first and plays the child.
///
/// The child's standard output (its test harness's banners, and whatever it prints) goes to a
/// private unnamed temporary file that [`Proc`] shows only if the child fails, so a passing run prints
/// nothing; its standard error (panic messages) is inherited and always shown. A test that
/// reads the child's stdout sets `.stdout(..)` itself, which replaces this.
///
/// # Panics
/// If the path of the current executable cannot be read.
pub fn child(test: &str, role: &str) -> Command {
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = Command::new(exe);
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1", "-q"])
        .env(ROLE_ENV, role);
    if let Some((id, out)) = child_log() {
        cmd.stdout(out).env(LOG_ENV, id.to_string());
    }
    cmd
}

/// Names the captured stdout of a [`child`] command, for [`Proc::spawn`] to pick up.
const LOG_ENV: &str = "IPC_TESTKIT_CHILD_LOG";

/// Captured stdouts of child commands not yet spawned, by id.
static LOGS: std::sync::Mutex<Vec<(u64, std::fs::File)>> = std::sync::Mutex::new(Vec::new());

/// A new unnamed temporary file for a child's stdout: its id and a second handle for the child.
fn child_log() -> Option<(u64, std::fs::File)> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    // An unnamed temporary file, not a memfd: tests that look for shared-memory descriptors
    // (memfds, /dev/shm files) in a child must not find its stdout among them.
    let fd = rustix::fs::open(
        std::env::temp_dir(),
        rustix::fs::OFlags::TMPFILE | rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .ok()?;
    let file = std::fs::File::from(fd);
    let for_child = file.try_clone().ok()?;
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut logs = LOGS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // Commands built but never spawned through `Proc` leave their file here; keep a few.
    if logs.len() > 64 {
        logs.remove(0);
    }
    logs.push((id, file));
    Some((id, for_child))
}

/// The captured stdout registered for `cmd`, if it was made by [`child`].
fn take_log(cmd: &Command) -> Option<std::fs::File> {
    let id: u64 = cmd
        .get_envs()
        .find(|(k, _)| *k == OsStr::new(LOG_ENV))
        .and_then(|(_, v)| v?.to_str()?.parse().ok())?;
    let mut logs = LOGS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let at = logs.iter().position(|(i, _)| *i == id)?;
    Some(logs.remove(at).1)
}

/// Spawns through [`Proc::spawn`] hold this shared; [`no_spawn_in_flight`] holds it exclusive.
static SPAWNS: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// While the returned guard lives, no [`Proc::spawn`] of this process is between its `fork`
/// and its `exec`. A forked child holds a copy of every descriptor of the parent until the
/// exec closes the close-on-exec ones, so a test thread that spawns can keep another test's
/// FIFO end, socket or lock alive for a moment after that test dropped it. A test that asserts
/// that no peer is left (no reader, a lock released, end-of-file) holds this guard from the
/// drop to the assertion. `Command::spawn` returns only after the exec (or its failure), so
/// the shared side covers the whole window.
pub fn no_spawn_in_flight() -> std::sync::RwLockWriteGuard<'static, ()> {
    SPAWNS
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A child process that is killed and reaped when dropped, with a bounded wait.
#[derive(Debug)]
pub struct Proc {
    child: Option<Child>,
    pidfd: OwnedFd,
    /// The child's captured stdout (see [`child`]), shown if it fails.
    log: Option<std::fs::File>,
}

impl Proc {
    /// Spawns `cmd`.
    ///
    /// # Errors
    /// What `spawn` or `pidfd_open` fail with.
    pub fn spawn(cmd: &mut Command) -> io::Result<Proc> {
        let child = {
            let _gate = SPAWNS
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            cmd.spawn()?
        };
        let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("child pid is positive");
        let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())?;
        Ok(Proc {
            child: Some(child),
            pidfd,
            log: take_log(cmd),
        })
    }

    /// What the child has written to its captured stdout so far (see [`child`]); `None` if
    /// its stdout was not captured.
    pub fn output(&mut self) -> Option<String> {
        use std::io::{Read, Seek};
        let log = self.log.as_mut()?;
        let mut text = String::new();
        log.rewind().ok()?;
        log.read_to_string(&mut text).ok()?;
        Some(text)
    }

    /// Prints what the child wrote to its captured stdout, if anything (see [`child`]).
    pub fn show_output(&mut self) {
        if let Some(text) = self.output().filter(|t| !t.is_empty()) {
            eprintln!(
                "--- stdout of child {} ---\n{text}--- end of child output ---",
                self.id()
            );
        }
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The underlying `std::process::Child` (e.g. to take its pipes).
    pub fn inner(&mut self) -> &mut Child {
        self.child.as_mut().expect("not yet waited")
    }

    /// Waits at most `limit` for the child to exit. On time-out the child is killed and the
    /// result is `ErrorKind::TimedOut`.
    ///
    /// # Errors
    /// `TimedOut`, or what `poll`/`wait` fail with.
    pub fn wait_timeout(&mut self, limit: Duration) -> io::Result<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.inner().try_wait()? {
                self.child = None;
                return Ok(status);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let pid = self.id();
                let _ = self.inner().kill();
                let _ = self.inner().wait();
                self.child = None;
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("child {pid} still running after {limit:?}; killed"),
                ));
            }
            let mut fds = [rustix::event::PollFd::new(
                &self.pidfd,
                rustix::event::PollFlags::IN,
            )];
            let ts = rustix::event::Timespec {
                tv_sec: left.as_secs().min(i64::MAX as u64) as i64,
                tv_nsec: i64::from(left.subsec_nanos()),
            };
            match rustix::event::poll(&mut fds, Some(&ts)) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Waits at most `limit` and panics unless the child exited with status 0.
    ///
    /// # Panics
    /// If the child failed, was killed, or did not finish in time.
    pub fn expect_success(mut self, limit: Duration) {
        let pid = self.id();
        match self.wait_timeout(limit) {
            Ok(status) if status.success() => {}
            // Dropping `self` while panicking shows the child's output.
            Ok(status) => panic!("child {pid} failed: {status}"),
            Err(e) => panic!("child {pid}: {e}"),
        }
    }

    /// Sends SIGKILL to the child (it stays to be reaped by [`Proc::wait_timeout`]).
    ///
    /// # Errors
    /// What `kill` fails with.
    pub fn kill(&mut self) -> io::Result<()> {
        self.inner().kill()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // A test that fails while this child is in scope shows what the child printed.
        if thread::panicking() {
            self.show_output();
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Aborts the process (failing the test, and any child role) if not dropped within its limit.
///
/// A test that could block on another process starts with `let _wd = Watchdog::new(..)`.
#[derive(Debug)]
pub struct Watchdog {
    done: Option<mpsc::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Watchdog {
    /// Starts a watchdog that aborts the process after `limit`, naming `what`.
    pub fn new(what: &str, limit: Duration) -> Watchdog {
        let (tx, rx) = mpsc::channel::<()>();
        let what = what.to_owned();
        let thread = thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
                eprintln!("watchdog: {what} did not finish within {limit:?}; aborting");
                std::process::abort();
            }
        });
        Watchdog {
            done: Some(tx),
            thread: Some(thread),
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.done.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// FNV-1a, 64 bits: a cheap checksum for payloads that crossed a process boundary.
pub fn fnv1a64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// SplitMix64: a small deterministic random stream (same seed, same numbers in every process).
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A stream starting at `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// The value of environment variable `key` parsed as `T`, if set and valid.
pub fn env_parse<T: std::str::FromStr>(key: impl AsRef<OsStr>) -> Option<T> {
    std::env::var_os(key)?.to_str()?.parse().ok()
}

/// The sanitizer the test binary was built with, as `cargo xtask sanitize` announces it
/// (`IPC_SANITIZER=address`), or `None` for a normal build.
pub fn sanitizer() -> Option<String> {
    std::env::var("IPC_SANITIZER")
        .ok()
        .filter(|s| !s.is_empty())
}

/// True (after printing why) when a check cannot run under a sanitizer: AddressSanitizer
/// reserves terabytes of address space (so a small `RLIMIT_AS` fails for the wrong reason),
/// reads `/proc/self/maps` (so a hidden `/proc` kills it) and makes system calls of its own (so
/// seccomp strict mode kills it). The caller returns early; the normal build still runs it.
pub fn skip_under_sanitizer(what: &str) -> bool {
    match sanitizer() {
        Some(s) => {
            eprintln!("skipped under the {s} sanitizer: {what}");
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_s_stdout_is_captured_not_printed() {
        if role().as_deref() == Some("talker") {
            println!("a line from the child");
            return;
        }
        let mut p = Proc::spawn(&mut child(
            &test_path!(a_child_s_stdout_is_captured_not_printed),
            "talker",
        ))
        .expect("spawn");
        assert!(
            p.wait_timeout(Duration::from_secs(60))
                .expect("wait")
                .success()
        );
        let out = p.output().expect("captured");
        assert!(out.contains("a line from the child"), "{out:?}");
        assert!(
            out.contains("1 passed"),
            "the child's harness summary is captured too: {out:?}"
        );
    }

    #[test]
    fn names_are_unique_and_prefixed() {
        let a = posix_name("x");
        let b = posix_name("x");
        assert_ne!(a, b);
        assert!(a.starts_with("/ipcrs-x-"));
        assert_eq!(sysv_key() as u32 >> 16, 0x4950);
    }

    #[test]
    fn harness_name_strips_the_crate() {
        assert_eq!(harness_name("it::pipe", "f"), "pipe::f");
        assert_eq!(harness_name("it", "f"), "f");
    }

    #[test]
    fn fnv_known_value() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
