//! Integration tests of ipc-pipe: real pipes between real processes.
//!
//! A second process is this test binary re-run with a role (`ipc_testkit::child`): each test
//! checks `ipc_testkit::role()` first and, if set, plays the child. Every test that may block
//! starts a `Watchdog`, and children are waited for with a bound.

mod basics;
mod children;
mod eintr;
mod epoll;
mod fork;
mod frames;
mod inherit;
mod records;
mod sigpipe;
mod tokio;
mod zero_copy;

use std::os::fd::RawFd;
use std::process::{Command, Stdio};
use std::time::Duration;

use ipc_pipe::{PipeReader, PipeWriter};
use ipc_testkit::Proc;

/// How long any child may run before the test fails.
pub const LIMIT: Duration = Duration::from_secs(60);

/// Spawns `cmd` with its stdout silenced (the re-run harness prints its own lines there) and
/// drops the `Command`, so that the pipe ends it holds for the child close in the parent.
pub fn spawn(mut cmd: Command) -> Proc {
    cmd.stdout(Stdio::null());
    let p = Proc::spawn(&mut cmd).expect("spawn child");
    drop(cmd);
    p
}

/// `len` bytes of the deterministic stream `seed`, the same in every process.
pub fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    ipc_testkit::SplitMix64::new(seed).fill(&mut v);
    v
}

/// In a re-run child: claims the read end its parent placed at `fd` with `ChildFds`.
#[allow(unsafe_code)]
pub fn inherited_reader(fd: RawFd) -> PipeReader {
    // SAFETY: the parent placed a pipe end at `fd` (ChildFds) and nothing else in this re-run
    // test process owns that number: each test claims each of its numbers once.
    unsafe { PipeReader::from_inherited(fd) }.expect("the read end placed by the parent")
}

/// In a re-run child: claims the write end its parent placed at `fd` with `ChildFds`.
#[allow(unsafe_code)]
pub fn inherited_writer(fd: RawFd) -> PipeWriter {
    // SAFETY: as for `inherited_reader`.
    unsafe { PipeWriter::from_inherited(fd) }.expect("the write end placed by the parent")
}
