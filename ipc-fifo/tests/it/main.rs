//! Integration tests of ipc-fifo: real FIFOs, real processes, bounded in time.

mod create;
mod dir;
mod epoll;
mod errors;
mod fds;
mod fork;
mod intercept;
mod lifetime;
mod open;
mod procs;
mod readme;
mod records;
mod tokio;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use ipc_fifo::PrivateDir;
use ipc_testkit::Proc;

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

/// Spawns `cmd` with its stdout piped to us, so that [`expect_line`] can wait for what it says.
pub(crate) fn spawn_piped(cmd: &mut Command) -> Proc {
    Proc::spawn(cmd.stdout(Stdio::piped())).expect("spawn")
}

/// Child side of [`expect_line`]: says `marker` on a line of its own, at once.
pub(crate) fn say(marker: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{marker}").unwrap();
    out.flush().unwrap();
}

/// Reads the child's stdout until it says `marker` (the harness prints lines of its own too).
/// Panics if the child's stdout ends first. Callers run under a `Watchdog`.
pub(crate) fn expect_line(p: &mut Proc, marker: &str) {
    let out = p.inner().stdout.as_mut().expect("stdout piped");
    let mut lines = BufReader::new(out);
    let mut line = String::new();
    loop {
        line.clear();
        let n = lines.read_line(&mut line).expect("read child's stdout");
        assert!(n > 0, "the child ended before saying {marker:?}");
        if line.trim_end() == marker {
            return;
        }
    }
}

/// Whether another open file description holds a lock on byte `offset` of `file` (a directory
/// here): what a prober sees, through a descriptor of its own (`F_OFD_GETLK`, write lock).
pub(crate) fn lock_held(file: &Path, offset: u64) -> bool {
    use nix::fcntl::{FcntlArg, fcntl};
    let f = std::fs::File::open(file).expect("open for the probe");
    let mut lock = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: offset as libc::off_t,
        l_len: 1,
        l_pid: 0,
    };
    fcntl(&f, FcntlArg::F_OFD_GETLK(&mut lock)).expect("F_OFD_GETLK");
    lock.l_type != libc::F_UNLCK as libc::c_short
}

/// The inode number of `path` (not following a symlink).
pub(crate) fn ino(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).expect("stat").ino()
}

/// The test binary's allocator: `System`, recording the largest allocation a thread makes while
/// [`tracked`] runs on it (other threads, other tests, are not counted).
#[allow(unsafe_code)]
mod alloc_track {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        // Const-initialised, no destructor: using it never allocates.
        static PEAK: Cell<Option<usize>> = const { Cell::new(None) };
    }

    fn note(size: usize) {
        let _ = PEAK.try_with(|p| {
            if let Some(v) = p.get() {
                p.set(Some(v.max(size)));
            }
        });
    }

    pub(crate) struct Track;

    // SAFETY: every call is forwarded to `System` unchanged; only sizes are recorded.
    unsafe impl GlobalAlloc for Track {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            note(layout.size());
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.alloc(layout) }
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            note(layout.size());
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.alloc_zeroed(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            note(new_size);
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    /// Runs `f`; returns its result and the largest allocation this thread made meanwhile.
    pub(crate) fn tracked<T>(f: impl FnOnce() -> T) -> (T, usize) {
        PEAK.with(|p| p.set(Some(0)));
        let r = f();
        let peak = PEAK.with(|p| p.take()).unwrap_or(0);
        (r, peak)
    }
}

#[global_allocator]
static ALLOC: alloc_track::Track = alloc_track::Track;

pub(crate) use alloc_track::tracked;
