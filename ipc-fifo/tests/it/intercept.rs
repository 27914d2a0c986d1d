//! seccomp filters for tests that must see or steer the crate's system calls exactly, with no
//! timing involved (Linux x86-64; on other machines these tests say they skipped).
//!
//! - [`require_cloexec`]: every system call that makes a descriptor must ask for close-on-exec;
//!   one that does not kills the process (so no error handling can swallow it).
//! - [`on_o_path_open`], [`on_read_of`], [`on_poll`]: every `openat(.., O_PATH ..)` (every
//!   `read` of one descriptor, every `poll`) stops until a hook has run on a supervisor thread (a user notification), then
//!   continues: the hook can change the world between two of the crate's system calls.
//!
//! A filter applies to the thread that installs it and to threads it creates afterwards, for
//! the rest of their lives: install them only in a child role process.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// BPF_LD | BPF_W | BPF_ABS (the first two are 0).
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x05 | 0x10;
const BPF_JSET_K: u16 = 0x05 | 0x40;
const BPF_RET_K: u16 = 0x06;
const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const KILL: u32 = libc::SECCOMP_RET_KILL_PROCESS;
const NOTIFY: u32 = libc::SECCOMP_RET_USER_NOTIF;

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// What a rule does with a call of its system call number.
#[derive(Clone, Copy)]
enum Check {
    /// Always refuse it (kill).
    Kill,
    /// Allow it only if argument `arg` has `bit` set.
    RequireBit(u32, u32),
    /// Kill it if argument `arg` equals `value`.
    ForbidValue(u32, u32),
    /// Notify the supervisor if argument `arg` has `bit` set.
    NotifyIfBit(u32, u32),
    /// Notify the supervisor if argument `arg` equals `value`.
    NotifyIfEq(u32, u32),
    /// Always notify the supervisor.
    Notify,
}

/// `offsetof(struct seccomp_data, args[arg])`, the low 32 bits (little-endian).
fn arg_offset(arg: u32) -> u32 {
    16 + 8 * arg
}

fn program(rules: &[(i64, Check)]) -> Vec<libc::sock_filter> {
    let mut p = vec![
        stmt(BPF_LD_W_ABS, 4), // arch
        jump(BPF_JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
        stmt(BPF_RET_K, ALLOW),
    ];
    for &(nr, check) in rules {
        let body: Vec<libc::sock_filter> = match check {
            Check::Kill => vec![stmt(BPF_RET_K, KILL)],
            Check::Notify => vec![stmt(BPF_RET_K, NOTIFY)],
            Check::RequireBit(arg, bit) => vec![
                stmt(BPF_LD_W_ABS, arg_offset(arg)),
                jump(BPF_JSET_K, bit, 0, 1),
                stmt(BPF_RET_K, ALLOW),
                stmt(BPF_RET_K, KILL),
            ],
            Check::ForbidValue(arg, value) => vec![
                stmt(BPF_LD_W_ABS, arg_offset(arg)),
                jump(BPF_JEQ_K, value, 0, 1),
                stmt(BPF_RET_K, KILL),
                stmt(BPF_RET_K, ALLOW),
            ],
            Check::NotifyIfBit(arg, bit) => vec![
                stmt(BPF_LD_W_ABS, arg_offset(arg)),
                jump(BPF_JSET_K, bit, 0, 1),
                stmt(BPF_RET_K, NOTIFY),
                stmt(BPF_RET_K, ALLOW),
            ],
            Check::NotifyIfEq(arg, value) => vec![
                stmt(BPF_LD_W_ABS, arg_offset(arg)),
                jump(BPF_JEQ_K, value, 0, 1),
                stmt(BPF_RET_K, NOTIFY),
                stmt(BPF_RET_K, ALLOW),
            ],
        };
        p.push(stmt(BPF_LD_W_ABS, 0)); // nr
        p.push(jump(BPF_JEQ_K, nr as u32, 0, body.len() as u8));
        p.extend(body);
    }
    p.push(stmt(BPF_RET_K, ALLOW));
    p
}

/// Installs `prog` on this thread; returns the listener for user notifications if asked.
/// `None` (and nothing installed) where seccomp filters are not available.
fn install(prog: &[libc::sock_filter], listener: bool) -> Option<Option<OwnedFd>> {
    if !cfg!(all(target_os = "linux", target_arch = "x86_64")) {
        return None;
    }
    // SAFETY: no pointers; affects this thread and those it creates.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return None;
    }
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr().cast_mut(),
    };
    let flags = if listener {
        libc::SECCOMP_FILTER_FLAG_NEW_LISTENER
    } else {
        0
    };
    // SAFETY: `fprog` points to `prog`, which outlives the call (the kernel copies it).
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &fprog as *const libc::sock_fprog,
        )
    };
    if r < 0 {
        return None;
    }
    // SAFETY: with NEW_LISTENER the call returns a new descriptor that nothing else owns.
    Some(listener.then(|| unsafe { OwnedFd::from_raw_fd(r as i32) }))
}

/// From now on, on this thread and threads it creates: a system call that makes a descriptor
/// without close-on-exec kills the process (`SIGSYS`). Returns `false` if no filter could be
/// installed (not Linux x86-64, or seccomp unavailable).
pub(crate) fn require_cloexec() -> bool {
    const CLOEXEC: u32 = libc::O_CLOEXEC as u32;
    let rules = [
        (libc::SYS_open, Check::RequireBit(1, CLOEXEC)),
        (libc::SYS_openat, Check::RequireBit(2, CLOEXEC)),
        (libc::SYS_openat2, Check::Kill), // its flags are in memory: the crate must not use it
        (libc::SYS_creat, Check::Kill),
        (libc::SYS_pipe, Check::Kill),
        (libc::SYS_pipe2, Check::RequireBit(1, CLOEXEC)),
        (libc::SYS_inotify_init, Check::Kill),
        (
            libc::SYS_inotify_init1,
            Check::RequireBit(0, libc::IN_CLOEXEC as u32),
        ),
        (libc::SYS_dup, Check::Kill),
        (libc::SYS_dup2, Check::Kill),
        (libc::SYS_dup3, Check::RequireBit(2, CLOEXEC)),
        (libc::SYS_fcntl, Check::ForbidValue(1, libc::F_DUPFD as u32)),
        (
            libc::SYS_socket,
            Check::RequireBit(1, libc::SOCK_CLOEXEC as u32),
        ),
        (
            libc::SYS_socketpair,
            Check::RequireBit(1, libc::SOCK_CLOEXEC as u32),
        ),
        (libc::SYS_accept, Check::Kill),
        (
            libc::SYS_accept4,
            Check::RequireBit(3, libc::SOCK_CLOEXEC as u32),
        ),
        (
            libc::SYS_memfd_create,
            Check::RequireBit(1, libc::MFD_CLOEXEC),
        ),
        (libc::SYS_eventfd, Check::Kill),
        (
            libc::SYS_eventfd2,
            Check::RequireBit(1, libc::EFD_CLOEXEC as u32),
        ),
        (libc::SYS_epoll_create, Check::Kill),
        (
            libc::SYS_epoll_create1,
            Check::RequireBit(0, libc::EPOLL_CLOEXEC as u32),
        ),
        (libc::SYS_signalfd, Check::Kill),
        (
            libc::SYS_signalfd4,
            Check::RequireBit(3, libc::SFD_CLOEXEC as u32),
        ),
        (
            libc::SYS_timerfd_create,
            Check::RequireBit(1, libc::TFD_CLOEXEC as u32),
        ),
    ];
    install(&program(&rules), false).is_some()
}

/// From now on, on this thread and threads it creates, every `open`/`openat` with `O_PATH` waits until
/// `hook` (on a supervisor thread, which is not filtered) has run, then continues as asked.
/// Returns `false` if no filter could be installed.
pub(crate) fn on_o_path_open(hook: impl FnMut() + Send + 'static) -> bool {
    on_calls(
        &[
            (libc::SYS_open, Check::NotifyIfBit(1, libc::O_PATH as u32)),
            (libc::SYS_openat, Check::NotifyIfBit(2, libc::O_PATH as u32)),
        ],
        hook,
    )
}

/// As [`on_o_path_open`], for every `poll` (or `ppoll`): the moment a wait begins.
pub(crate) fn on_poll(hook: impl FnMut() + Send + 'static) -> bool {
    on_calls(
        &[
            (libc::SYS_poll, Check::Notify),
            (libc::SYS_ppoll, Check::Notify),
        ],
        hook,
    )
}

/// As [`on_o_path_open`], for every `read(fd, ..)` of descriptor number `fd`.
pub(crate) fn on_read_of(fd: i32, hook: impl FnMut() + Send + 'static) -> bool {
    on_calls(&[(libc::SYS_read, Check::NotifyIfEq(0, fd as u32))], hook)
}

fn on_calls(rules: &[(i64, Check)], mut hook: impl FnMut() + Send + 'static) -> bool {
    let (tx, rx) = std::sync::mpsc::channel::<OwnedFd>();
    // Created before the filter, so not filtered itself.
    std::thread::spawn(move || {
        let Ok(listener) = rx.recv() else { return };
        loop {
            // SAFETY: `seccomp_notif` is plain data; all zeroes is what RECV requires.
            let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
            // SAFETY: `req` is a valid, zeroed `seccomp_notif` for the kernel to fill.
            let r = unsafe {
                libc::ioctl(
                    listener.as_raw_fd(),
                    libc::SECCOMP_IOCTL_NOTIF_RECV as _,
                    &mut req as *mut libc::seccomp_notif,
                )
            };
            if r < 0 {
                match std::io::Error::last_os_error().raw_os_error() {
                    Some(libc::EINTR | libc::ENOENT) => continue,
                    _ => return,
                }
            }
            hook();
            let mut resp = libc::seccomp_notif_resp {
                id: req.id,
                val: 0,
                error: 0,
                flags: libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
            };
            // SAFETY: `resp` is a valid `seccomp_notif_resp` for the kernel to read.
            unsafe {
                libc::ioctl(
                    listener.as_raw_fd(),
                    libc::SECCOMP_IOCTL_NOTIF_SEND as _,
                    &mut resp as *mut libc::seccomp_notif_resp,
                )
            };
        }
    });
    match install(&program(rules), true) {
        Some(Some(listener)) => {
            tx.send(listener).unwrap();
            true
        }
        _ => false,
    }
}
