//! The lost-update race and its fix, with every kind of lock the workspace has.
//!
//! PROCS processes each add 1 to a counter in shared memory INCREMENTS times, by reading it and
//! writing back the value plus one — the read-modify-write every textbook warns about. Without a
//! lock, two processes that read the same value both write the same sum, and an update is lost.
//! With a lock around the read and the write, the total is exact. The same count is run without
//! a lock, then under a POSIX named semaphore, a POSIX unnamed semaphore, a System V semaphore
//! (with SEM_UNDO) and a robust process-shared mutex.
//!
//! This demo `fork`s, as the textbook does: the counter lives in an anonymous shared mapping that
//! a forked child inherits, and so do the unnamed semaphore and the robust mutex, which ipc-sem
//! places in shared memory of their own (`SharedSemaphore`, `SharedMutex`). Forking is sound
//! here because the demo is single-threaded when it forks; the child runs its loop and exits
//! without returning into `main`. The `fork` call is the only unsafe block here.
#![allow(unsafe_code)]

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ipc_examples::{DemoError, demo_keys, demo_name, ensure, run, say};
use ipc_sem::{
    Key, Locked, NamedSemaphore, RobustMutex, SemOp, SemSet, SharedMutex, SharedSemaphore,
};
use ipc_shm::Anon;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};

const PROCS: u64 = 4;
const INCREMENTS: u64 = 50_000;
/// The longest a counter waits for the lock: a holder that died leaves a POSIX semaphore taken,
/// and the others must fail rather than wait forever.
const WAIT: Duration = Duration::from_secs(30);

/// One way to guard the read-modify-write.
enum Lock<'a> {
    None,
    Named(&'a NamedSemaphore),
    Unnamed(&'a SharedSemaphore),
    SysV(&'a SemSet),
    Robust(&'a RobustMutex),
}

impl Lock<'_> {
    fn name(&self) -> &'static str {
        match self {
            Lock::None => "no lock",
            Lock::Named(_) => "POSIX named semaphore",
            Lock::Unnamed(_) => "POSIX unnamed semaphore",
            Lock::SysV(_) => "System V semaphore + SEM_UNDO",
            Lock::Robust(_) => "robust mutex",
        }
    }

    /// Adds 1 to the counter INCREMENTS times, each under the lock.
    fn count(&self, counter: &AtomicU64) -> Result<(), DemoError> {
        for _ in 0..INCREMENTS {
            let bump = || {
                // Deliberately not fetch_add: a separate read and write, as in the textbook.
                let v = counter.load(Ordering::Relaxed);
                counter.store(v + 1, Ordering::Relaxed);
            };
            match self {
                Lock::None => bump(),
                Lock::Named(s) => {
                    let _held = s.acquire_timeout(WAIT)?;
                    bump();
                }
                Lock::Unnamed(s) => {
                    let _held = s.acquire_timeout(WAIT)?;
                    bump();
                }
                Lock::SysV(set) => {
                    let _held = set.acquire_timeout(&[SemOp::wait(0).undo()], WAIT)?;
                    bump();
                }
                Lock::Robust(m) => match m.lock_timeout(WAIT)? {
                    Locked::Normal(_held) => bump(),
                    Locked::OwnerDied(_) => return Err("a counter process died".into()),
                },
            }
        }
        Ok(())
    }
}

/// Forks PROCS children that count under `lock`, waits for them, returns the total.
///
/// The children are waited for in the order they end, not the order they started: when one
/// dies (say, killed while it held a semaphore that does not survive its holder), the others
/// are stopped and reaped at once, and the demo fails with the reason.
fn race(lock: &Lock<'_>, counter: &AtomicU64) -> Result<u64, DemoError> {
    counter.store(0, Ordering::SeqCst);
    let parent = std::process::id();
    let mut children = Vec::new();
    for _ in 0..PROCS {
        // SAFETY: the demo is single-threaded here, so the child inherits no lock held by
        // another thread; it only runs `count` and exits, never returning into main.
        match unsafe { fork() }? {
            ForkResult::Child => {
                ipc_examples::die_with_parent(parent);
                let code = match lock.count(counter) {
                    Ok(()) => 0,
                    Err(e) => {
                        say!("counter", "failed: {e}");
                        1
                    }
                };
                std::process::exit(code);
            }
            ForkResult::Parent { child } => children.push(child),
        }
    }
    let mut failure = None;
    while !children.is_empty() {
        // Any child: whichever ends first.
        let status = waitpid(Pid::from_raw(-1), None)?;
        children.retain(|&c| Some(c) != status.pid());
        if !matches!(status, WaitStatus::Exited(_, 0)) {
            failure = Some(format!("a counter process ended with {status:?}"));
            break;
        }
    }
    if let Some(failure) = failure {
        for &c in &children {
            let _ = kill(c, Signal::SIGKILL);
        }
        for &c in &children {
            let _ = waitpid(c, None);
        }
        return Err(failure.into());
    }
    Ok(counter.load(Ordering::SeqCst))
}

fn body() -> Result<String, DemoError> {
    let expected = PROCS * INCREMENTS;
    say!(
        "parent",
        "{PROCS} processes x {INCREMENTS} increments of one counter: {expected} if none is lost"
    );
    let page = Anon::new(4096)?;
    let counter = page.atomic::<AtomicU64>(0)?;

    let named = NamedSemaphore::create(&demo_name("counter"), 1)?;
    let unnamed = SharedSemaphore::new(1)?;
    // A key in the workspace's System V range (0x4950xxxx), not IPC_PRIVATE, so that
    // `cargo xtask clean` can remove the set if this demo is killed. `create` is exclusive;
    // `replace_stale` removes a set a killed earlier run left under the key, and a key whose
    // owner is alive is skipped for the next one.
    let sysv = demo_keys()
        .find_map(|key| {
            match SemSet::options()
                .replace_stale()
                .create(Key::new(key), &[1])
            {
                Err(ipc_sem::Error::AlreadyExists { .. } | ipc_sem::Error::OwnerAlive { .. }) => {
                    None
                }
                r => Some(r),
            }
        })
        .ok_or("no free System V key")??;
    // A robust mutex in its own sealed shared memory: forked children inherit the mapping.
    let mutex = SharedMutex::new()?;

    let mut lines = Vec::new();
    let no_lock = race(&Lock::None, counter)?;
    if no_lock < expected {
        say!(
            "parent",
            "no lock: {no_lock} of {expected} — {} updates lost to the race",
            expected - no_lock
        );
    } else {
        say!(
            "parent",
            "no lock: {no_lock} of {expected} — no update lost this time, but the race is there"
        );
    }
    lines.push(format!("no lock {no_lock}"));
    for lock in [
        Lock::Named(&named),
        Lock::Unnamed(&unnamed),
        Lock::SysV(&sysv),
        Lock::Robust(&mutex),
    ] {
        let total = race(&lock, counter)?;
        say!("parent", "{}: {total} of {expected}", lock.name());
        ensure(
            total == expected,
            format!("{} lost {} updates", lock.name(), expected - total),
        )?;
        lines.push(format!("{} exact", lock.name()));
    }
    Ok(format!(
        "every lock gave exactly {expected}; {}",
        lines.join(", ")
    ))
}

fn main() -> ExitCode {
    run(
        "sem_counter",
        "a shared counter loses updates without a lock and is exact with each kind of lock",
        body,
    )
}
