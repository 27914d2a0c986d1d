//! Integration tests of ipc-shm: real segments, real processes, bounded in time.

mod child;
mod doorbell;
mod fork;
mod lifetime;
mod memfd;
mod posix;
mod readme;
mod ring;
mod security;
mod sizes;
mod sysv;
#[cfg(feature = "tokio")]
mod tokio;
mod views;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use ipc_testkit::Proc;

/// Where a POSIX name lives on Linux.
pub(crate) fn dev_shm(name: &str) -> PathBuf {
    PathBuf::from(format!("/dev/shm{name}"))
}

/// Removes a path on drop (for files the tests plant in /dev/shm).
pub(crate) struct RmOnDrop(pub(crate) PathBuf);

impl Drop for RmOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Spawns `cmd` with piped stdin and stdout and waits (bounded) until it prints a line
/// `READY`; returns the child and the rest of its stdout lines, as they come.
pub(crate) fn spawn_ready(cmd: &mut Command) -> (Proc, mpsc::Receiver<String>) {
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut p = Proc::spawn(cmd).unwrap();
    let out = p.inner().stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            // Keep draining after the receiver is gone: a closed pipe would fail the child.
            let _ = tx.send(line);
        }
    });
    loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line.trim() == "READY" => return (p, rx),
            Ok(_) => {}
            Err(e) => panic!("child {} never said READY: {e}", p.id()),
        }
    }
}

/// In a child role: says READY, then waits until the parent closes our stdin.
pub(crate) fn ready_then_wait_for_eof() {
    println!("READY");
    let mut sink = Vec::new();
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
}

/// Waits (bounded) until process `pid` has exited, without reaping it.
pub(crate) fn wait_exited_unreaped(pid: u32, limit: Duration) {
    let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
    let fd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).unwrap();
    let deadline = std::time::Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        assert!(!left.is_zero(), "process {pid:?} did not exit in {limit:?}");
        let mut fds = [rustix::event::PollFd::new(
            &fd,
            rustix::event::PollFlags::IN,
        )];
        let ts = rustix::event::Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(n) if n > 0 => return,
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => panic!("poll: {e}"),
        }
    }
}

/// Whether `pid` is a zombie (exited, not yet reaped).
pub(crate) fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z")
    })
}

/// The descriptor numbers open in this process (without the one used to list them).
pub(crate) fn open_fds() -> Vec<i32> {
    let dir = std::fs::read_dir("/proc/self/fd").unwrap();
    let mut fds: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort_unstable();
    // read_dir's own descriptor is the highest-numbered new one; drop any that is gone now.
    fds.retain(|fd| std::fs::metadata(format!("/proc/self/fd/{fd}")).is_ok());
    fds
}

#[test]
fn error_is_send_sync_static() {
    fn check<T: Send + Sync + 'static + std::error::Error>() {}
    check::<ipc_shm::Error>();
    let e: std::io::Error = ipc_shm::Error::NoSpace { name: "/x".into() }.into();
    assert_eq!(e.kind(), std::io::ErrorKind::StorageFull);
    assert_eq!(ipc_shm::Error::TimedOut.to_string(), "timed out");
}

/// Every error about a named object names it; where a usual fix exists, the message says it.
#[test]
fn errors_name_their_object_and_say_the_fix() {
    use ipc_shm::{Error, Shm};
    let name = ipc_testkit::posix_name("errname");
    let e = Shm::open(&name, 4096).unwrap_err();
    assert!(
        matches!(&e, Error::NotFound { name: n } if *n == name),
        "{e:?}"
    );
    assert!(e.to_string().contains(&name), "{e}");
    let owner = Shm::create(&name, 4096).unwrap();
    let e = Shm::create(&name, 4096).unwrap_err();
    assert!(
        e.to_string().contains(&name) && e.to_string().contains("remove_stale"),
        "{e}"
    );
    let e = ipc_shm::remove_stale(&name).unwrap_err();
    assert!(
        matches!(&e, Error::OwnerAlive { name: n } if *n == name),
        "{e:?}"
    );
    let e = Error::WrongOwner {
        name: name.clone(),
        expected: 0,
        found: 65534,
    };
    assert!(
        e.to_string().contains("owner_check(OwnerCheck::AnyUid)"),
        "{e}"
    );
    let e = Shm::open("no-slash", 4096).unwrap_err();
    assert!(
        matches!(&e, Error::InvalidName { name, reason } if name == "no-slash" && !reason.is_empty())
    );
    let io: std::io::Error = ipc_shm::remove_stale(&name).unwrap_err().into();
    assert_eq!(io.kind(), std::io::ErrorKind::ResourceBusy);
    for e in [
        Shm::options().mode(0o1777).create(&name).unwrap_err(),
        Shm::options().open(&name).unwrap_err(),
    ] {
        let msg = e.to_string();
        assert!(msg.starts_with(|c: char| c.is_lowercase()), "{msg}");
        assert!(!msg.ends_with('.'), "{msg}");
    }
    drop(owner);
}
