//! Named objects are made whole before they get their name by every route `create` has: an
//! `O_TMPFILE` linked with `AT_EMPTY_PATH`, the same through `/proc/self/fd` (kernels before
//! 6.10 refuse `AT_EMPTY_PATH` without `CAP_DAC_READ_SEARCH`), and a temporary name linked and
//! removed (no `O_TMPFILE`, or no `/proc`). A seccomp filter in a child makes the kernel refuse
//! the earlier routes, as those systems do.
#![cfg(target_arch = "x86_64")]
#![allow(unsafe_code)]

use std::time::Duration;

use ipc_sem::{Error, NamedMutex, NamedSemaphore};
use ipc_testkit::{Proc, Watchdog, test_path};

/// Makes syscall `nr` fail with `errno` when argument `arg` has any bit of `mask` (this thread
/// only; irrevocable, so only in a child).
pub(crate) struct Rule {
    pub(crate) nr: u32,
    pub(crate) arg: u32,
    pub(crate) mask: u32,
    pub(crate) errno: u32,
}

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

pub(crate) fn install(rules: &[Rule]) {
    const NR: u32 = 0;
    const ARCH: u32 = 4;
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    let ld = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let mut prog = vec![
        stmt(ld, ARCH),
        jump(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            AUDIT_ARCH_X86_64,
            1,
            0,
        ),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
    ];
    for r in rules {
        prog.extend([
            stmt(ld, NR),
            jump(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, r.nr, 0, 3),
            stmt(ld, 16 + 8 * r.arg),
            jump(libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K, r.mask, 0, 1),
            stmt(
                libc::BPF_RET | libc::BPF_K,
                libc::SECCOMP_RET_ERRNO | r.errno,
            ),
        ]);
    }
    prog.push(stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW));
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: plain integer arguments.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    assert_eq!(rc, 0);
    // SAFETY: `fprog` points to a valid filter program that outlives the call (the kernel
    // copies it).
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &fprog as *const libc::sock_fprog,
        )
    };
    assert_eq!(rc, 0, "seccomp filter: {}", std::io::Error::last_os_error());
}

/// Temporary files of this process left in /dev/shm.
fn temp_files() -> Vec<String> {
    let me = format!(".ipc-sem-{}-", std::process::id());
    std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&me))
        .collect()
}

/// Creates, opens and removes a named semaphore and a named mutex; checks mode, value, owner
/// lock and that no temporary file is left.
fn create_everything(route: &str) {
    let name = ipc_testkit::posix_name("fb");
    let sem = NamedSemaphore::options()
        .mode(0o640)
        .create(&name, 4)
        .unwrap_or_else(|e| panic!("{route}: {e}"));
    let st = rustix::fs::stat(format!("/dev/shm/sem.{}", &name[1..]).as_str()).unwrap();
    assert_eq!(st.st_mode & 0o777, 0o640, "{route}");
    assert_eq!(st.st_size, 32, "{route}");
    let other = NamedSemaphore::open(&name).unwrap();
    other.try_wait().unwrap();
    assert_eq!(sem.value().unwrap(), 3, "{route}");
    assert!(matches!(
        ipc_sem::remove_stale(&name),
        Err(Error::OwnerAlive { .. })
    ));
    assert!(matches!(
        NamedSemaphore::create(&name, 0),
        Err(Error::AlreadyExists { .. })
    ));
    let m = NamedMutex::create(&name).unwrap_or_else(|e| panic!("{route}: {e}"));
    let n = NamedMutex::open(&name).unwrap();
    drop(n.lock().unwrap());
    assert!(matches!(
        NamedMutex::remove_stale(&name),
        Err(Error::OwnerAlive { .. })
    ));
    drop((other, sem, n, m));
    assert!(matches!(
        NamedSemaphore::open(&name),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        NamedMutex::open(&name),
        Err(Error::NotFound { .. })
    ));
    assert_eq!(
        temp_files(),
        Vec::<String>::new(),
        "{route}: temporary files left"
    );
}

/// What the kernel now says to the routes (so the test cannot pass with an idle filter).
fn routes() -> (
    Option<rustix::io::Errno>,
    Option<rustix::io::Errno>,
    Option<rustix::io::Errno>,
) {
    use rustix::fs::{AtFlags, CWD, Mode, OFlags};
    // A tmpfile can be linked once (a linked and unlinked one is no longer linkable): a fresh
    // one per probe.
    let tmpfile = || {
        rustix::fs::open(
            "/dev/shm",
            OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
            Mode::RUSR,
        )
    };
    let fd = match tmpfile() {
        Ok(fd) => fd,
        Err(e) => return (Some(e), None, None),
    };
    let target = format!("/dev/shm/{}", ipc_testkit::unique("fbprobe"));
    let empty = rustix::fs::linkat(&fd, "", CWD, target.as_str(), AtFlags::EMPTY_PATH).err();
    let _ = rustix::fs::unlink(target.as_str());
    let fd = tmpfile().unwrap();
    let proc = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
    let via_proc = rustix::fs::linkat(
        CWD,
        proc.as_str(),
        CWD,
        target.as_str(),
        AtFlags::SYMLINK_FOLLOW,
    )
    .err();
    let _ = rustix::fs::unlink(target.as_str());
    (None, empty, via_proc)
}

const LINKAT: u32 = libc::SYS_linkat as u32;
const OPEN: u32 = libc::SYS_open as u32;
const OPENAT: u32 = libc::SYS_openat as u32;
const O_TMPFILE_BIT: u32 = 0o20000000; // __O_TMPFILE

#[test]
fn create_works_by_every_route() {
    match ipc_testkit::role().as_deref() {
        Some("no-empty-path") => {
            // As kernels before 6.10 for a process without CAP_DAC_READ_SEARCH.
            install(&[Rule {
                nr: LINKAT,
                arg: 4,
                mask: libc::AT_EMPTY_PATH as u32,
                errno: libc::ENOENT as u32,
            }]);
            assert_eq!(routes(), (None, Some(rustix::io::Errno::NOENT), None));
            create_everything("through /proc/self/fd");
            return;
        }
        Some("no-proc") => {
            // Neither AT_EMPTY_PATH nor /proc/self/fd (AT_SYMLINK_FOLLOW) links.
            install(&[Rule {
                nr: LINKAT,
                arg: 4,
                mask: (libc::AT_EMPTY_PATH | libc::AT_SYMLINK_FOLLOW) as u32,
                errno: libc::ENOENT as u32,
            }]);
            let e = Some(rustix::io::Errno::NOENT);
            assert_eq!(routes(), (None, e, e));
            create_everything("by a temporary name, no /proc");
            return;
        }
        Some("no-tmpfile") => {
            // open(2) and openat(2): rustix uses either, depending on the architecture.
            install(&[
                Rule {
                    nr: OPEN,
                    arg: 1,
                    mask: O_TMPFILE_BIT,
                    errno: libc::EOPNOTSUPP as u32,
                },
                Rule {
                    nr: OPENAT,
                    arg: 2,
                    mask: O_TMPFILE_BIT,
                    errno: libc::EOPNOTSUPP as u32,
                },
            ]);
            assert_eq!(routes().0, Some(rustix::io::Errno::OPNOTSUPP));
            create_everything("by a temporary name, no O_TMPFILE");
            return;
        }
        _ => {}
    }
    let _wd = Watchdog::new("create routes", Duration::from_secs(60));
    assert_eq!(routes(), (None, None, None));
    create_everything("O_TMPFILE and AT_EMPTY_PATH");
    for route in ["no-empty-path", "no-proc", "no-tmpfile"] {
        Proc::spawn(&mut ipc_testkit::child(
            &test_path!(create_works_by_every_route),
            route,
        ))
        .unwrap()
        .expect_success(Duration::from_secs(30));
    }
}
