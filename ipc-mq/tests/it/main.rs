//! Integration tests of ipc-mq: real queues, real processes.
//!
//! A test that needs a second process re-runs this binary with a role
//! (`ipc_testkit::child`); the test checks `ipc_testkit::role()` first and plays the child.
//! Names and keys carry the workspace prefix, and owners remove their queues on drop.

mod errors;
mod event_loop;
mod fork;
mod lifetime;
mod limits;
mod posix;
mod sysv;
mod tokio;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// The environment variable that hands a queue name (or key/id) to a child role.
pub(crate) const NAME_ENV: &str = "IPC_MQ_TEST_NAME";
/// The environment variable that hands an index (sender number, ...) to a child role.
pub(crate) const INDEX_ENV: &str = "IPC_MQ_TEST_INDEX";

/// The name (or key/id) a child role was given.
pub(crate) fn arg_name() -> String {
    std::env::var(NAME_ENV).expect("child started without a name")
}

/// The index a child role was given.
pub(crate) fn arg_index() -> u64 {
    ipc_testkit::env_parse(INDEX_ENV).expect("child started without an index")
}

/// Unlinks a POSIX queue name when dropped (for names a test does not own through a handle).
pub(crate) struct NameGuard(pub(crate) String);

impl Drop for NameGuard {
    fn drop(&mut self) {
        let _ = ipc_mq::unlink(&self.0);
    }
}

const READY: &str = "ipc-mq-test-ready:";

/// Spawns `cmd` with its standard output piped and waits for the child's [`ready`] line
/// (skipping what the test harness prints first); returns the process and what it said.
pub(crate) fn spawn_ready(cmd: &mut Command) -> (ipc_testkit::Proc, String) {
    cmd.stdout(Stdio::piped());
    let mut p = ipc_testkit::Proc::spawn(cmd).expect("spawn");
    let out = p.inner().stdout.take().expect("stdout");
    let mut lines = BufReader::new(out);
    let mut line = String::new();
    while lines.read_line(&mut line).expect("read child output") > 0 {
        if let Some(what) = line.trim_end().strip_prefix(READY) {
            let what = what.to_owned();
            // Keep reading what the child prints later (its harness's last lines), so that it
            // never writes into a closed pipe; the thread ends when the child does.
            std::thread::spawn(move || std::io::copy(&mut lines, &mut std::io::sink()));
            return (p, what);
        }
        line.clear();
    }
    panic!("child exited without saying it was ready");
}

/// In a child role: signal readiness to `spawn_ready` on standard output.
pub(crate) fn ready(what: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{READY}{what}").expect("stdout");
    out.flush().expect("flush");
}
