//! The two processes of a slice and the control channel between them.
//!
//! Every slice runs in two fresh processes: this bench (the parent: the receiver, or the side
//! that times round trips) and the bench binary re-run with a role (the child). They are
//! independent programs, as real users of these crates would be: they meet through names
//! (POSIX shm, queues, iceoryx2 services, ipc-channel's one-shot server, files in /dev/shm) or
//! descriptors passed over the control channel (`SCM_RIGHTS`, as shmem-ipc's docs ask).
//!
//! The control channel is a `SOCK_SEQPACKET` socket pair, the child's end on its standard input.
//! It carries one setup packet (a text and descriptors) to the child, then single bytes:
//! `R` (child → parent: my end is open and connected), `C` (parent → child: mine too, send),
//! `G` (parent → child: warm-up received, start the timed part), `D` (parent → child:
//! everything received, you may close your end and exit). Every read
//! on it is bounded (`SO_RCVTIMEO`), the child dies with its parent (`PR_SET_PDEATHSIG`), and the
//! parent waits for the child's exit with a bound.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ipc_testkit::Proc;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};

use crate::peers::Result;

/// The role a re-run binary plays (`1:KEY` one-way sender, `2:KEY` round-trip echo).
pub const ROLE_ENV: &str = "BENCH_PEERS_ROLE";
const PARAMS_ENV: &str = "BENCH_PEERS_PARAMS";
const CPU_ENV: &str = "BENCH_PEERS_CPU";
const PARENT_ENV: &str = "BENCH_PEERS_PARENT";

/// How long any one wait on the other process may take.
pub const WAIT: Duration = Duration::from_secs(120);

/// The most descriptors one setup carries.
const MAX_FDS: usize = 4;

/// What one slice moves: the message size and how many messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Bytes per message.
    pub size: usize,
    /// Messages before the timed part (page faults, caches, spin policies settle).
    pub warm: u64,
    /// Messages in the timed part.
    pub count: u64,
    /// Bytes of buffering each contender is given (its ring, queue depth, ...), where it has a
    /// choice.
    pub buf: usize,
}

impl Params {
    fn encode(&self) -> String {
        format!("{} {} {} {}", self.size, self.warm, self.count, self.buf)
    }

    fn decode(s: &str) -> Result<Params> {
        let v: Vec<u64> = s
            .split(' ')
            .map(str::parse)
            .collect::<std::result::Result<_, _>>()?;
        match v[..] {
            [size, warm, count, buf] => Ok(Params {
                size: size as usize,
                warm,
                count,
                buf: buf as usize,
            }),
            _ => Err(format!("bad {PARAMS_ENV}: {s:?}").into()),
        }
    }

    /// Messages in all: warm-up and timed.
    pub fn total(&self) -> u64 {
        self.warm + self.count
    }
}

/// Where the two processes run: the parent on the first CPU this process may use, the child on
/// the second (`PIN=none`: wherever the scheduler puts them).
#[derive(Debug, Clone, Copy)]
pub struct Pinning {
    /// The parent's CPU.
    pub parent: Option<usize>,
    /// The child's CPU.
    pub child: Option<usize>,
    /// How many CPUs this process could use before it pinned itself.
    pub cpus: usize,
}

static PINNING: OnceLock<Pinning> = OnceLock::new();

/// Decides the pinning (once) and pins the calling (parent) process.
pub fn pin_parent() -> Pinning {
    *PINNING.get_or_init(|| {
        let set = rustix::thread::sched_getaffinity(None).expect("sched_getaffinity");
        let cpus: Vec<usize> = (0..rustix::thread::CpuSet::MAX_CPU)
            .filter(|&c| set.is_set(c))
            .collect();
        if std::env::var("PIN").as_deref() == Ok("none") {
            return Pinning {
                parent: None,
                child: None,
                cpus: cpus.len(),
            };
        }
        let parent = cpus[0];
        let child = cpus[1 % cpus.len()];
        pin(parent).expect("pin the parent");
        Pinning {
            parent: Some(parent),
            child: Some(child),
            cpus: cpus.len(),
        }
    })
}

fn pin(cpu: usize) -> Result<()> {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set)?;
    Ok(())
}

fn recv_timeout(fd: &OwnedFd) -> Result<()> {
    rustix::net::sockopt::set_socket_timeout(fd, rustix::net::sockopt::Timeout::Recv, Some(WAIT))?;
    Ok(())
}

fn send_packet(fd: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut anc = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !anc.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(format!("more than {MAX_FDS} descriptors").into());
    }
    let n = rustix::net::sendmsg(fd, &[IoSlice::new(bytes)], &mut anc, SendFlags::NOSIGNAL)?;
    if n != bytes.len() {
        return Err("control packet cut short".into());
    }
    Ok(())
}

/// One packet: its bytes and any descriptors. An empty packet is the peer's end of stream.
fn recv_packet(fd: BorrowedFd<'_>) -> Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut anc = RecvAncillaryBuffer::new(&mut space);
    let mut buf = vec![0u8; 4096];
    let r = loop {
        match rustix::net::recvmsg(
            fd,
            &mut [IoSliceMut::new(&mut buf)],
            &mut anc,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::AGAIN) => {
                return Err(format!("no word from the other process within {WAIT:?}").into());
            }
            other => break other?,
        }
    };
    let mut fds = Vec::new();
    for msg in anc.drain() {
        if let RecvAncillaryMessage::ScmRights(got) = msg {
            fds.extend(got);
        }
    }
    buf.truncate(r.bytes);
    Ok((buf, fds))
}

/// The parent's handle on the child of a slice.
#[derive(Debug)]
pub struct Peer {
    sock: OwnedFd,
    proc: Proc,
    role: String,
    /// Set once the parent expects the child to end (or ends it): the watcher stays quiet.
    quiet: Arc<AtomicBool>,
    watcher: Option<JoinHandle<()>>,
    /// Whether `proc` has been reaped.
    reaped: bool,
}

/// Watches the child: if it ends before the parent expects it to (it failed, or was killed),
/// the parent may be blocked in a peer's receive that never returns (a queue, a condition
/// variable, a spin), so the watcher ends the whole run at once, naming the child.
fn watch(proc: &Proc, role: String, quiet: Arc<AtomicBool>) -> Result<JoinHandle<()>> {
    let pid = rustix::process::Pid::from_raw(proc.id() as i32).ok_or("child pid")?;
    let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())?;
    Ok(std::thread::spawn(move || {
        let mut fds = [rustix::event::PollFd::new(
            &pidfd,
            rustix::event::PollFlags::IN,
        )];
        while let Err(rustix::io::Errno::INTR) = rustix::event::poll(&mut fds, None) {}
        // Peek at the status without reaping (the parent's `Proc` reaps it).
        let status = rustix::process::waitid(
            rustix::process::WaitId::PidFd(pidfd.as_fd()),
            rustix::process::WaitIdOptions::EXITED | rustix::process::WaitIdOptions::NOWAIT,
        );
        let ok = matches!(&status, Ok(Some(s)) if s.exited() && s.exit_status() == Some(0));
        if !ok && !quiet.load(Ordering::SeqCst) {
            let how = match status {
                Ok(Some(s)) if s.exited() => format!("exited with status {:?}", s.exit_status()),
                Ok(Some(s)) => format!("was killed by signal {:?}", s.terminating_signal()),
                other => format!("ended ({other:?})"),
            };
            eprintln!("bench-peers FAILED: child {role} {how} in the middle of a slice");
            std::process::exit(1);
        }
    }))
}

impl Peer {
    /// Starts this binary again as the child playing `role` with `params`.
    ///
    /// # Errors
    /// If the socket pair or the process cannot be made.
    pub fn spawn(role: &str, params: &Params) -> Result<Peer> {
        let (mine, theirs) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )?;
        recv_timeout(&mine)?;
        let pinning = pin_parent();
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.env(ROLE_ENV, role)
            .env(PARAMS_ENV, params.encode())
            .env(PARENT_ENV, std::process::id().to_string())
            .env(
                CPU_ENV,
                pinning.child.map_or("none".to_owned(), |c| c.to_string()),
            )
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::null());
        let proc = Proc::spawn(&mut cmd)?;
        let quiet = Arc::new(AtomicBool::new(false));
        let watcher = Some(watch(&proc, role.to_owned(), quiet.clone())?);
        Ok(Peer {
            sock: mine,
            proc,
            role: role.to_owned(),
            quiet,
            watcher,
            reaped: false,
        })
    }

    /// Sends the child what it needs to open its end: a text (a name) and descriptors.
    ///
    /// # Errors
    /// If the child is gone.
    pub fn setup(&mut self, text: &str, fds: &[BorrowedFd<'_>]) -> Result<()> {
        send_packet(self.sock.as_fd(), text.as_bytes(), fds)
    }

    fn expect(&mut self, what: u8) -> Result<()> {
        let (got, _) = recv_packet(self.sock.as_fd())?;
        if got == [what] {
            return Ok(());
        }
        // Most likely the child failed: say how (its stderr is inherited, so its message is
        // already out).
        self.quiet.store(true, Ordering::SeqCst);
        let status = self.proc.wait_timeout(Duration::from_secs(10));
        self.reaped = true;
        Err(format!(
            "child {:?} sent {got:?} instead of {:?}; its exit: {status:?}",
            self.role, what as char
        )
        .into())
    }

    /// Waits until the child has opened its end.
    ///
    /// # Errors
    /// If the child failed or said nothing within [`WAIT`].
    pub fn wait_ready(&mut self) -> Result<()> {
        self.expect(b'R')
    }

    /// Tells the child that this end is connected too: it may send.
    ///
    /// # Errors
    /// If the child is gone.
    pub fn connected(&mut self) -> Result<()> {
        send_packet(self.sock.as_fd(), b"C", &[])
    }

    /// Tells the child to start the timed part.
    ///
    /// # Errors
    /// If the child is gone.
    pub fn go(&mut self) -> Result<()> {
        send_packet(self.sock.as_fd(), b"G", &[])
    }

    /// Tells the child that everything arrived, and waits for it to exit with status 0.
    ///
    /// # Errors
    /// If the child failed or did not exit within [`WAIT`].
    pub fn finish(mut self) -> Result<()> {
        send_packet(self.sock.as_fd(), b"D", &[])?;
        self.quiet.store(true, Ordering::SeqCst);
        let status = self.proc.wait_timeout(WAIT);
        self.reaped = true;
        let status = status?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("child {:?} failed: {status}", self.role).into())
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // On the error path the child is killed here (by `Proc`), which is no news.
        self.quiet.store(true, Ordering::SeqCst);
        if !self.reaped {
            let _ = self.proc.kill();
            let _ = self.proc.wait_timeout(Duration::from_secs(10));
            self.reaped = true;
        }
        if let Some(w) = self.watcher.take() {
            let _ = w.join();
        }
    }
}

/// What the parent sent the child to open its end with.
#[derive(Debug)]
pub struct Setup {
    /// A name, or whatever the contender needs in words.
    pub text: String,
    /// Descriptors, in the order the parent gave them.
    pub fds: Vec<OwnedFd>,
}

/// The child's side of the control channel.
#[derive(Debug)]
pub struct Ctl {
    sock: OwnedFd,
}

/// In a child: the role, the parameters, and the control channel; pins the child and ties its
/// life to the parent's. `None` in the parent.
///
/// # Errors
/// If the environment is malformed or the parent is already gone.
pub fn child() -> Result<Option<(String, Params, Ctl)>> {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return Ok(None);
    };
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
    let parent: u32 = std::env::var(PARENT_ENV)?.parse()?;
    if rustix::process::getppid().map(|p| p.as_raw_pid() as u32) != Some(parent) {
        return Err("the parent exited before the child started".into());
    }
    match std::env::var(CPU_ENV)?.as_str() {
        "none" => {}
        cpu => pin(cpu.parse()?)?,
    }
    let params = Params::decode(&std::env::var(PARAMS_ENV)?)?;
    let sock = std::io::stdin().as_fd().try_clone_to_owned()?;
    recv_timeout(&sock)?;
    Ok(Some((role, params, Ctl { sock })))
}

impl Ctl {
    /// Receives the setup packet.
    ///
    /// # Errors
    /// If the parent is gone or sent nothing within [`WAIT`].
    pub fn setup(&mut self) -> Result<Setup> {
        let (bytes, fds) = recv_packet(self.sock.as_fd())?;
        Ok(Setup {
            text: String::from_utf8(bytes)?,
            fds,
        })
    }

    /// Tells the parent that this end is open.
    ///
    /// # Errors
    /// If the parent is gone.
    pub fn ready(&mut self) -> Result<()> {
        send_packet(self.sock.as_fd(), b"R", &[])
    }

    /// Waits for the parent's `what` (`G` or `D`).
    ///
    /// # Errors
    /// If the parent sent something else, is gone, or said nothing within [`WAIT`].
    pub fn wait(&mut self, what: u8) -> Result<()> {
        let (got, _) = recv_packet(self.sock.as_fd())?;
        if got == [what] {
            Ok(())
        } else {
            Err(format!("parent sent {got:?} instead of {:?}", what as char).into())
        }
    }
}

/// A bounded busy wait: call [`Spin::wait`] once per unsuccessful poll.
#[derive(Debug)]
pub struct Spin {
    polls: u32,
    since: Option<Instant>,
}

impl Spin {
    /// A new wait.
    pub fn new() -> Spin {
        Spin {
            polls: 0,
            since: None,
        }
    }

    /// One more poll found nothing: pause briefly; fail after [`WAIT`].
    ///
    /// # Errors
    /// If the wait has lasted [`WAIT`].
    #[inline]
    pub fn wait(&mut self) -> Result<()> {
        std::hint::spin_loop();
        self.polls = self.polls.wrapping_add(1);
        if self.polls.is_multiple_of(4096) {
            let since = *self.since.get_or_insert_with(Instant::now);
            if since.elapsed() > WAIT {
                return Err(format!("busy wait without progress for {WAIT:?}").into());
            }
        }
        Ok(())
    }

    /// Whether the wait has lasted `limit` (checked every 64 polls).
    #[inline]
    pub fn longer_than(&mut self, limit: Duration) -> bool {
        self.polls.is_multiple_of(64)
            && self.since.get_or_insert_with(Instant::now).elapsed() >= limit
    }
}

/// How long a receiver that has only a non-blocking call and a blocking one polls the first
/// before it blocks: what `ipc_shm::Wait::Adaptive` spins at most.
pub const POLL: Duration = Duration::from_micros(50);

/// Polls `try_once(on)` for up to [`POLL`], then calls `block(on)` (which waits in the crate's
/// own way).
///
/// # Errors
/// What either fails with.
#[inline]
pub fn poll_then_block<S, T>(
    on: &mut S,
    mut try_once: impl FnMut(&mut S) -> Result<Option<T>>,
    block: impl FnOnce(&mut S) -> Result<T>,
) -> Result<T> {
    let mut spin = Spin::new();
    loop {
        if let Some(v) = try_once(on)? {
            return Ok(v);
        }
        if spin.longer_than(POLL) {
            return block(on);
        }
        spin.wait()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_cross_the_environment_unchanged() {
        let p = Params {
            size: 1 << 20,
            warm: 102,
            count: 1024,
            buf: 4 << 20,
        };
        assert_eq!(Params::decode(&p.encode()).unwrap(), p);
        assert!(Params::decode("1 2 3").is_err());
        assert!(Params::decode("a b c d").is_err());
    }

    #[test]
    fn a_spin_gives_up_only_after_the_limit() {
        let mut s = Spin::new();
        for _ in 0..100_000 {
            s.wait().unwrap();
        }
        assert!(!s.longer_than(Duration::from_secs(3600)));
    }
}
