//! Integration tests of ipc-fifo: real FIFOs, real processes, bounded in time.

mod create;
mod dir;
mod errors;
mod open;
mod procs;
mod records;

use std::path::PathBuf;
use std::time::Duration;

use ipc_fifo::PrivateDir;

/// The environment variable that gives a child role the FIFO's path.
pub(crate) const PATH_ENV: &str = "IPC_FIFO_TEST_PATH";

/// A fresh private directory with the workspace prefix (removed on drop).
pub(crate) fn place() -> PrivateDir {
    PrivateDir::new("ipcrs-fifo").expect("private dir")
}

/// The path a child role was given.
pub(crate) fn child_path() -> PathBuf {
    PathBuf::from(std::env::var_os(PATH_ENV).expect("child needs IPC_FIFO_TEST_PATH"))
}

/// Generous bound for a child process in these tests.
pub(crate) const CHILD_LIMIT: Duration = Duration::from_secs(30);
