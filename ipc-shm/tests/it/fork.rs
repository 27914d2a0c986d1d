//! Forked children: an anonymous region is shared with them, and an owner they inherit and drop
//! removes nothing (only the process that created a segment removes it).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ipc_shm::{Access, Anon, Shm, SysvShm};
use ipc_testkit::{Proc, Watchdog, child, posix_name, role, test_path};

use crate::dev_shm;

const WORDS: usize = 4096;
const DONE_AT: usize = WORDS * 8;

fn word(i: usize) -> u64 {
    (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5eed
}

/// The role process: it has a few threads (the harness's), so the forked child keeps to
/// async-signal-safe work: plain stores into the shared mapping, an atomic store, and the
/// owners' drops (`getpid`, `munmap`, `shmdt`, `close`, and freeing one `String`, which glibc
/// makes safe in a forked child), then `_exit`.
#[allow(unsafe_code)]
fn fork_role() {
    let anon = Anon::new((DONE_AT + 8) as u64).unwrap();
    let name = posix_name("fork");
    let shm = Shm::create(&name, 4096).unwrap();
    // A workspace key, not IPC_PRIVATE: should this process be killed, `cargo xtask clean`
    // finds the segment by its key.
    let sysv = loop {
        match SysvShm::create(ipc_testkit::sysv_key(), 4096) {
            Err(ipc_shm::Error::AlreadyExists { .. }) => continue,
            r => break r.unwrap(),
        }
    };
    let id = sysv.id();
    // SAFETY: see above; the child never returns into the caller's frames.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let mut ok = true;
        for i in 0..WORDS {
            ok &= anon.write::<u64>(i * 8, &word(i)).is_ok();
        }
        if let Ok(done) = anon.atomic::<AtomicU64>(DONE_AT) {
            done.store(WORDS as u64, Ordering::Release);
        }
        ok &= !shm.is_owner() && !sysv.is_owner();
        drop(shm);
        drop(sysv);
        // SAFETY: `_exit` ends the child without running the parent's destructors or handlers.
        unsafe { libc::_exit(i32::from(!ok)) };
    }
    assert!(pid > 0, "fork failed");
    let pid = rustix::process::Pid::from_raw(pid).unwrap();
    let (_, status) = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty())
        .unwrap()
        .unwrap();
    assert_eq!(status.exit_status(), Some(0), "child: {status:?}");

    // The child's stores are visible in the parent's mapping of the same pages.
    let done = anon.atomic::<AtomicU64>(DONE_AT).unwrap();
    assert_eq!(done.load(Ordering::Acquire), WORDS as u64);
    let got = anon.read_vec::<u64>(0, WORDS).unwrap();
    assert!(got.iter().enumerate().all(|(i, &w)| w == word(i)));

    // The child's drops removed nothing; the creator's do.
    assert!(shm.is_owner() && sysv.is_owner());
    assert!(dev_shm(&name).exists(), "a forked child unlinked the name");
    drop(
        SysvShm::options()
            .max_size(1 << 20)
            .access(Access::ReadOnly)
            .attach(id)
            .expect("a forked child removed the segment"),
    );
    drop(shm);
    drop(sysv);
    assert!(!dev_shm(&name).exists());
    assert!(
        SysvShm::options()
            .max_size(1 << 20)
            .access(Access::ReadOnly)
            .attach(id)
            .is_err()
    );
}

#[test]
fn anon_is_shared_with_a_forked_child_whose_drops_remove_nothing() {
    if role().as_deref() == Some("fork") {
        return fork_role();
    }
    let _wd = Watchdog::new("fork", Duration::from_secs(30));
    Proc::spawn(&mut child(
        &test_path!(anon_is_shared_with_a_forked_child_whose_drops_remove_nothing),
        "fork",
    ))
    .unwrap()
    .expect_success(Duration::from_secs(20));
}
