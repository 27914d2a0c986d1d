//! POSIX message queues (`mq_open`, `mq_send`, `mq_receive`, ...).

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

use crate::error::{Error, Limit, Result};
use crate::limits::Limits;
use crate::name;
use crate::sys;

/// A POSIX message priority: `0..=`[`MAX_PRIORITY`]; larger is more urgent.
pub type Priority = u32;

/// The highest priority Linux accepts (`MQ_PRIO_MAX - 1`).
pub const MAX_PRIORITY: Priority = 32767;

/// Which directions a queue descriptor allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Receive only (`O_RDONLY`).
    Receive,
    /// Send only (`O_WRONLY`).
    Send,
    /// Send and receive (`O_RDWR`).
    Both,
}

impl Access {
    const fn flags(self) -> libc::c_int {
        match self {
            Access::Receive => libc::O_RDONLY,
            Access::Send => libc::O_WRONLY,
            Access::Both => libc::O_RDWR,
        }
    }
}

/// Whether [`MqOptions::create`] checks the requested size against the limits first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitCheck {
    /// Check `msg_max`, `msgsize_max` and `RLIMIT_MSGQUEUE` before `mq_open` and fail with
    /// [`Error::LimitExceeded`] (the default). This applies to privileged callers too, although
    /// the kernel would let a process with `CAP_SYS_RESOURCE` exceed `msg_max` and `msgsize_max`.
    Enforce,
    /// Leave it to the kernel: for privileged callers that mean to exceed `msg_max` or
    /// `msgsize_max`. Over-limit requests by others still come back as `LimitExceeded`.
    Kernel,
}

/// Whether [`MqOptions::open`] requires the queue to belong to the caller's effective uid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OwnerCheck {
    /// Only a queue owned by our effective uid ([`Error::NotOwner`] otherwise). The default.
    Ours,
    /// Any queue the permissions let us open.
    Any,
}

/// How [`MessageQueue::notify`] tells this process that a message arrived in an empty queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Notify {
    /// Send this signal (`SIGEV_SIGNAL`, `si_code == SI_MESGQ`); `si_value.sival_int` carries
    /// the queue's descriptor number. Block the signal and wait for it (`sigwaitinfo`,
    /// `signalfd`), or install a handler, *before* registering: a signal whose disposition is
    /// still the default (most terminate the process) is acted on as usual.
    Signal(i32),
    /// Register without a notification (`SIGEV_NONE`): the process holds the queue's one
    /// notification slot; learn of arrivals by polling the descriptor.
    None,
}

/// The attributes of a queue ([`MessageQueue::attributes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MqAttr {
    /// The most messages the queue holds (`mq_maxmsg`).
    pub max_messages: u64,
    /// The largest message, in bytes (`mq_msgsize`).
    pub message_size: usize,
    /// The messages in the queue now (`mq_curmsgs`).
    pub current_messages: u64,
    /// Whether this descriptor is nonblocking (`O_NONBLOCK` in `mq_flags`).
    pub nonblocking: bool,
}

/// Options for creating or opening a [`MessageQueue`]: `MessageQueue::options()`.
///
/// ```
/// use ipc_mq::{Access, MessageQueue};
/// # let name = format!("/ipcrs-doc-opts-{}", std::process::id());
/// let owner = MessageQueue::options().max_messages(4).message_size(128).create(&name)?;
/// let sender = MessageQueue::options().access(Access::Send).open(&name)?;
/// sender.send(b"hi", 0)?;
/// assert_eq!(owner.attributes()?.current_messages, 1);
/// # Ok::<(), ipc_mq::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MqOptions {
    max_messages: Option<u64>,
    message_size: Option<u64>,
    access: Access,
    mode: u32,
    nonblocking: bool,
    limit_check: LimitCheck,
    owner_check: OwnerCheck,
}

impl Default for MqOptions {
    fn default() -> MqOptions {
        MqOptions::new()
    }
}

/// The creator's claim on a queue name: unlinks it when dropped in the creating process.
#[derive(Debug)]
struct Owner {
    name: CString,
    pid: u32,
}

impl Owner {
    fn disarm(mut self) {
        self.pid = 0;
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        if self.pid == std::process::id() {
            let _ = sys::mq_unlink(&self.name);
        }
    }
}

impl MqOptions {
    /// Defaults: the system's default size (`msg_default` × `msgsize_default`), send and
    /// receive, mode 0600, blocking, limits checked, owner checked on open.
    pub const fn new() -> MqOptions {
        MqOptions {
            max_messages: None,
            message_size: None,
            access: Access::Both,
            mode: 0o600,
            nonblocking: false,
            limit_check: LimitCheck::Enforce,
            owner_check: OwnerCheck::Ours,
        }
    }

    /// The most messages the new queue holds (`mq_maxmsg`).
    pub const fn max_messages(mut self, n: u64) -> MqOptions {
        self.max_messages = Some(n);
        self
    }

    /// The largest message of the new queue, in bytes (`mq_msgsize`).
    pub const fn message_size(mut self, bytes: u64) -> MqOptions {
        self.message_size = Some(bytes);
        self
    }

    /// Which directions the descriptor allows (default [`Access::Both`]).
    pub const fn access(mut self, access: Access) -> MqOptions {
        self.access = access;
        self
    }

    /// The permission bits of a new queue (default 0600), applied with `fchmod` after
    /// creation so the umask cannot change them.
    pub const fn mode(mut self, mode: u32) -> MqOptions {
        self.mode = mode & 0o777;
        self
    }

    /// Open the descriptor nonblocking (`O_NONBLOCK`): blocking calls then fail with
    /// [`Error::WouldBlock`] instead of waiting.
    pub const fn nonblocking(mut self, nonblocking: bool) -> MqOptions {
        self.nonblocking = nonblocking;
        self
    }

    /// Whether `create` checks the limits itself first (default [`LimitCheck::Enforce`]).
    pub const fn limit_check(mut self, check: LimitCheck) -> MqOptions {
        self.limit_check = check;
        self
    }

    /// Whether `open` insists that the queue is ours (default [`OwnerCheck::Ours`]).
    pub const fn owner_check(mut self, check: OwnerCheck) -> MqOptions {
        self.owner_check = check;
        self
    }

    fn flags(&self) -> libc::c_int {
        let mut f = self.access.flags() | libc::O_CLOEXEC;
        if self.nonblocking {
            f |= libc::O_NONBLOCK;
        }
        f
    }

    /// `mq_open(O_CREAT | O_EXCL)`—Creates a new queue and returns its owner, which unlinks the
    /// name when dropped (only in the creating process).
    ///
    /// # Errors
    /// [`Error::InvalidName`] (no system call made), [`Error::InvalidAttributes`] for a zero
    /// size, [`Error::LimitExceeded`] for a request over `msg_max`, `msgsize_max`, the
    /// `RLIMIT_MSGQUEUE` budget (`mq_open`'s `EMFILE`) or `queues_max` (`ENOSPC`),
    /// [`Error::AlreadyExists`], [`Error::PermissionDenied`].
    ///
    /// # References
    ///  - [Linux](https://man7.org/linux/man-pages/man3/mq_open.3.html),
    ///    [limits](https://man7.org/linux/man-pages/man7/mq_overview.7.html)
    #[doc(alias = "mq_open")]
    pub fn create(&self, name: &str) -> Result<MessageQueue> {
        let cname = name::validate(name)?;
        let limits = Limits::read()?;
        let maxmsg = self.max_messages.unwrap_or(limits.msg_default);
        let msgsize = self.message_size.unwrap_or(limits.msgsize_default);
        if maxmsg == 0 || msgsize == 0 || maxmsg > i64::MAX as u64 || msgsize > i64::MAX as u64 {
            return Err(Error::InvalidAttributes);
        }
        match self.limit_check {
            LimitCheck::Enforce => limits.check(maxmsg, msgsize)?,
            LimitCheck::Kernel => {
                // The byte budget binds everyone, privileged or not.
                let bytes = Limits::queue_bytes(maxmsg, msgsize);
                if bytes > limits.rlimit_msgqueue {
                    return Err(Error::LimitExceeded {
                        what: Limit::RlimitMsgqueue,
                        requested: bytes,
                        limit: limits.rlimit_msgqueue,
                    });
                }
            }
        }
        let flags = self.flags() | libc::O_CREAT | libc::O_EXCL;
        let fd = sys::mq_open(&cname, flags, 0o600, Some((maxmsg as i64, msgsize as i64)))
            .map_err(|e| open_error(e, &limits, maxmsg, msgsize))?;
        // From here on the queue exists: the owner unlinks it if anything below fails.
        let q = MessageQueue {
            fd,
            msgsize: msgsize as usize,
            owner: Some(Owner {
                name: cname,
                pid: std::process::id(),
            }),
        };
        rustix::fs::fchmod(&q.fd, rustix::fs::Mode::from_raw_mode(self.mode))
            .map_err(io::Error::from)?;
        Ok(q)
    }

    /// `mq_open`—Opens an existing queue; the handle removes nothing when dropped.
    ///
    /// Queue names are not paths (no symlinks can be planted), so `O_NOFOLLOW` has nothing to
    /// do here; `fstat` on the new descriptor checks the owner unless [`OwnerCheck::Any`].
    ///
    /// # Errors
    /// [`Error::InvalidName`] (no system call made), [`Error::NotFound`],
    /// [`Error::PermissionDenied`], [`Error::NotOwner`] (unless [`OwnerCheck::Any`]).
    #[doc(alias = "mq_open")]
    pub fn open(&self, name: &str) -> Result<MessageQueue> {
        let cname = name::validate(name)?;
        let fd = sys::mq_open(&cname, self.flags(), 0, None).map_err(|e| {
            if e.raw_os_error() == Some(libc::EMFILE) {
                Error::Io(e)
            } else {
                Error::from(e)
            }
        })?;
        if self.owner_check == OwnerCheck::Ours {
            let st = rustix::fs::fstat(&fd).map_err(io::Error::from)?;
            let me = rustix::process::geteuid().as_raw();
            if st.st_uid != me {
                return Err(Error::NotOwner { uid: st.st_uid });
            }
        }
        MessageQueue::from_fd(fd)
    }
}

/// Translates `mq_open(O_CREAT)`'s ambiguous errors into what they mean.
fn open_error(e: io::Error, limits: &Limits, maxmsg: u64, msgsize: u64) -> Error {
    match e.raw_os_error() {
        // EMFILE is either the descriptor table or the RLIMIT_MSGQUEUE byte budget: if we can
        // still open a descriptor, it was the budget.
        Some(libc::EMFILE) if File::open("/dev/null").is_ok() => Error::LimitExceeded {
            what: Limit::RlimitMsgqueue,
            requested: Limits::queue_bytes(maxmsg, msgsize),
            limit: limits.rlimit_msgqueue,
        },
        Some(libc::ENOSPC) => Error::LimitExceeded {
            what: Limit::QueuesMax,
            requested: limits.queues_max.saturating_add(1),
            limit: limits.queues_max,
        },
        Some(libc::EINVAL) => limits
            .check(maxmsg, msgsize)
            .err()
            .unwrap_or(Error::InvalidAttributes),
        Some(libc::ENAMETOOLONG) => Error::InvalidName,
        _ => Error::from(e),
    }
}

/// `mq_unlink`—Removes a queue's name (e.g. one left behind by a process that died). Processes
/// that have it open keep using it; it is freed when the last one closes it.
///
/// # Errors
/// [`Error::InvalidName`] (no system call made), [`Error::NotFound`],
/// [`Error::PermissionDenied`].
#[doc(alias = "mq_unlink")]
pub fn unlink(name: &str) -> Result<()> {
    let cname = name::validate(name)?;
    sys::mq_unlink(&cname).map_err(Error::from)
}

/// When a blocking call gives up.
#[derive(Clone, Copy)]
enum Wait {
    Forever,
    Until(libc::timespec),
}

fn deadline(timeout: Duration) -> Wait {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Realtime);
    let secs = i64::try_from(timeout.as_secs())
        .ok()
        .and_then(|s| now.tv_sec.checked_add(s));
    let mut nsec = now.tv_nsec + i64::from(timeout.subsec_nanos());
    let mut carry = 0;
    if nsec >= 1_000_000_000 {
        nsec -= 1_000_000_000;
        carry = 1;
    }
    match secs.and_then(|s| s.checked_add(carry)) {
        Some(tv_sec) => Wait::Until(libc::timespec {
            tv_sec,
            tv_nsec: nsec,
        }),
        None => Wait::Forever,
    }
}

/// A deadline already in the past: the timed calls then never wait.
const NOW: libc::timespec = libc::timespec {
    tv_sec: 0,
    tv_nsec: 0,
};

/// A POSIX message queue descriptor: the owner of a queue it created, or an opener.
///
/// Messages are whole (never split or merged) and leave in priority order, oldest first within
/// a priority. The descriptor is close-on-exec and on Linux it can be polled: readable when a
/// message is waiting, writable when there is room, so a queue joins a `poll` loop with pipes,
/// FIFOs and sockets (and any async runtime's fd adapter):
///
/// ```
/// use ipc_mq::MessageQueue;
/// use rustix::event::{poll, PollFd, PollFlags, Timespec};
/// # let name = format!("/ipcrs-doc-poll-{}", std::process::id());
/// let q = MessageQueue::options().max_messages(2).message_size(64).create(&name)?;
/// let (r, w) = rustix::pipe::pipe().map_err(std::io::Error::from)?; // or a FIFO
/// q.send(b"job", 3)?;
/// let mut fds = [PollFd::new(&q, PollFlags::IN), PollFd::new(&r, PollFlags::IN)];
/// let limit = Timespec { tv_sec: 5, tv_nsec: 0 };
/// poll(&mut fds, Some(&limit)).map_err(std::io::Error::from)?;
/// assert!(fds[0].revents().contains(PollFlags::IN)); // the queue has a message
/// assert!(fds[1].revents().is_empty());              // the pipe has none
/// let (job, priority) = q.try_receive_vec()?;
/// assert_eq!((job.as_slice(), priority), (&b"job"[..], 3));
///
/// rustix::io::write(&w, b"x").map_err(std::io::Error::from)?;
/// poll(&mut fds, Some(&limit)).map_err(std::io::Error::from)?;
/// assert!(fds[0].revents().is_empty());              // now the queue is empty
/// assert!(fds[1].revents().contains(PollFlags::IN)); // and the pipe has a byte
/// # Ok::<(), ipc_mq::Error>(())
/// ```
///
/// Timed calls use the kernel's `mq_timedsend`/`mq_timedreceive`, whose deadline is on
/// `CLOCK_REALTIME`: a wall-clock jump while waiting moves the deadline too.
#[derive(Debug)]
pub struct MessageQueue {
    fd: OwnedFd,
    msgsize: usize,
    owner: Option<Owner>,
}

impl MessageQueue {
    /// Options for [`create`](MqOptions::create) or [`open`](MqOptions::open).
    pub const fn options() -> MqOptions {
        MqOptions::new()
    }

    /// Creates a queue of `max_messages` × `message_size` bytes with the default options;
    /// see [`MqOptions::create`].
    ///
    /// # Errors
    /// As [`MqOptions::create`].
    #[doc(alias = "mq_open")]
    pub fn create(name: &str, max_messages: u64, message_size: u64) -> Result<MessageQueue> {
        MqOptions::new()
            .max_messages(max_messages)
            .message_size(message_size)
            .create(name)
    }

    /// Opens an existing queue for `access` with the default options; see [`MqOptions::open`].
    ///
    /// # Errors
    /// As [`MqOptions::open`].
    #[doc(alias = "mq_open")]
    pub fn open(name: &str, access: Access) -> Result<MessageQueue> {
        MqOptions::new().access(access).open(name)
    }

    /// Adopts a queue descriptor (e.g. one passed from another process); it owns no name.
    ///
    /// # Errors
    /// [`Error::Io`] (`EBADF`) if `fd` is not a message queue.
    pub fn from_fd(fd: OwnedFd) -> Result<MessageQueue> {
        let a = sys::mq_getattr(fd.as_fd())?;
        Ok(MessageQueue {
            fd,
            msgsize: usize::try_from(a.msgsize).unwrap_or(0),
            owner: None,
        })
    }

    /// Whether this handle will unlink the queue's name when dropped.
    pub fn is_owner(&self) -> bool {
        self.owner
            .as_ref()
            .is_some_and(|o| o.pid == std::process::id())
    }

    /// Keeps the queue after this handle is dropped: the name stays until [`unlink`].
    pub fn persist(&mut self) {
        if let Some(o) = self.owner.take() {
            o.disarm();
        }
    }

    /// The largest message this queue accepts (and the smallest receive buffer).
    pub fn message_size(&self) -> usize {
        self.msgsize
    }

    /// `mq_getattr`—The queue's size, its current message count and this descriptor's mode.
    ///
    /// # Errors
    /// [`Error::Io`] if the call fails.
    #[doc(alias = "mq_getattr")]
    pub fn attributes(&self) -> Result<MqAttr> {
        let a = sys::mq_getattr(self.fd.as_fd())?;
        Ok(MqAttr {
            max_messages: a.maxmsg as u64,
            message_size: a.msgsize as usize,
            current_messages: a.curmsgs as u64,
            nonblocking: a.flags & i64::from(libc::O_NONBLOCK) != 0,
        })
    }

    /// The number of messages in the queue now.
    ///
    /// # Errors
    /// [`Error::Io`] if `mq_getattr` fails.
    pub fn len(&self) -> Result<u64> {
        Ok(self.attributes()?.current_messages)
    }

    /// Whether the queue is empty now.
    ///
    /// # Errors
    /// [`Error::Io`] if `mq_getattr` fails.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// `mq_setattr(O_NONBLOCK)`—Makes the blocking calls of this descriptor fail with
    /// [`Error::WouldBlock`] instead of waiting (or makes them wait again).
    ///
    /// # Errors
    /// [`Error::Io`] if the call fails.
    #[doc(alias = "mq_setattr")]
    pub fn set_nonblocking(&self, nonblocking: bool) -> Result<()> {
        let flags = if nonblocking {
            i64::from(libc::O_NONBLOCK)
        } else {
            0
        };
        sys::mq_setattr(self.fd.as_fd(), flags)?;
        Ok(())
    }

    fn check_send(&self, msg: &[u8], priority: Priority) -> Result<()> {
        if priority > MAX_PRIORITY {
            return Err(Error::InvalidPriority { priority });
        }
        if msg.len() > self.msgsize {
            return Err(Error::MessageTooLarge {
                len: msg.len(),
                max: self.msgsize,
            });
        }
        Ok(())
    }

    fn send_error(&self, e: io::Error, len: usize) -> Error {
        match e.raw_os_error() {
            Some(libc::EMSGSIZE) => Error::MessageTooLarge {
                len,
                max: self.msgsize,
            },
            _ => Error::from(e),
        }
    }

    fn send_until(&self, msg: &[u8], priority: Priority, wait: Wait) -> Result<()> {
        self.check_send(msg, priority)?;
        loop {
            let r = match &wait {
                Wait::Forever => sys::mq_send(self.fd.as_fd(), msg, priority),
                Wait::Until(ts) => sys::mq_timedsend(self.fd.as_fd(), msg, priority, ts),
            };
            match r {
                Ok(()) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(self.send_error(e, msg.len())),
            }
        }
    }

    /// `mq_send`—Sends one message with `priority`, waiting while the queue is full.
    /// Zero-length messages are fine.
    ///
    /// # Errors
    /// [`Error::MessageTooLarge`] (checked before the call; the queue is unchanged),
    /// [`Error::InvalidPriority`], [`Error::WouldBlock`] on a nonblocking descriptor,
    /// [`Error::Io`] (`EBADF` if opened for receiving only).
    #[doc(alias = "mq_send")]
    pub fn send(&self, msg: &[u8], priority: Priority) -> Result<()> {
        self.send_until(msg, priority, Wait::Forever)
    }

    /// Sends one message if there is room now.
    ///
    /// # Errors
    /// [`Error::WouldBlock`] when the queue is full; otherwise as [`send`](Self::send).
    pub fn try_send(&self, msg: &[u8], priority: Priority) -> Result<()> {
        match self.send_until(msg, priority, Wait::Until(NOW)) {
            Err(Error::TimedOut) => Err(Error::WouldBlock),
            r => r,
        }
    }

    /// `mq_timedsend`—Sends one message, waiting at most `timeout` for room
    /// (`Duration::MAX`: forever; `Duration::ZERO`: not at all). Interrupted waits resume
    /// against the same deadline (`CLOCK_REALTIME`).
    ///
    /// # Errors
    /// [`Error::TimedOut`]; otherwise as [`send`](Self::send).
    #[doc(alias = "mq_timedsend")]
    pub fn send_timeout(&self, msg: &[u8], priority: Priority, timeout: Duration) -> Result<()> {
        self.send_until(msg, priority, deadline(timeout))
    }

    fn receive_until(&self, buf: &mut [u8], wait: Wait) -> Result<(usize, Priority)> {
        if buf.len() < self.msgsize {
            return Err(Error::BufferTooSmall {
                len: buf.len(),
                needed: Some(self.msgsize),
            });
        }
        loop {
            let r = match &wait {
                Wait::Forever => sys::mq_receive(self.fd.as_fd(), buf),
                Wait::Until(ts) => sys::mq_timedreceive(self.fd.as_fd(), buf, ts),
            };
            match r {
                Ok(got) => return Ok(got),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
                    return Err(Error::BufferTooSmall {
                        len: buf.len(),
                        needed: Some(self.msgsize),
                    });
                }
                Err(e) => return Err(Error::from(e)),
            }
        }
    }

    /// `mq_receive`—Receives the oldest message of the highest priority into `buf`, waiting
    /// while the queue is empty; returns its length and priority.
    ///
    /// # Errors
    /// [`Error::BufferTooSmall`] if `buf` is shorter than [`message_size`](Self::message_size)
    /// (the kernel's rule, whatever the message's length), [`Error::WouldBlock`] on a
    /// nonblocking descriptor, [`Error::Io`] (`EBADF` if opened for sending only).
    #[doc(alias = "mq_receive")]
    pub fn receive(&self, buf: &mut [u8]) -> Result<(usize, Priority)> {
        self.receive_until(buf, Wait::Forever)
    }

    /// Receives a message if one is waiting now.
    ///
    /// # Errors
    /// [`Error::WouldBlock`] when the queue is empty; otherwise as [`receive`](Self::receive).
    pub fn try_receive(&self, buf: &mut [u8]) -> Result<(usize, Priority)> {
        match self.receive_until(buf, Wait::Until(NOW)) {
            Err(Error::TimedOut) => Err(Error::WouldBlock),
            r => r,
        }
    }

    /// `mq_timedreceive`—Receives a message, waiting at most `timeout` (`Duration::MAX`:
    /// forever; `Duration::ZERO`: not at all; the deadline is on `CLOCK_REALTIME`).
    ///
    /// # Errors
    /// [`Error::TimedOut`]; otherwise as [`receive`](Self::receive).
    #[doc(alias = "mq_timedreceive")]
    pub fn receive_timeout(&self, buf: &mut [u8], timeout: Duration) -> Result<(usize, Priority)> {
        self.receive_until(buf, deadline(timeout))
    }

    fn receive_vec_until(&self, wait: Wait) -> Result<(Vec<u8>, Priority)> {
        let mut buf = vec![0; self.msgsize];
        let (n, prio) = self.receive_until(&mut buf, wait)?;
        buf.truncate(n);
        Ok((buf, prio))
    }

    /// Receives a message into a new `Vec` sized from the queue's attributes.
    ///
    /// # Errors
    /// As [`receive`](Self::receive).
    pub fn receive_vec(&self) -> Result<(Vec<u8>, Priority)> {
        self.receive_vec_until(Wait::Forever)
    }

    /// Receives a message into a new `Vec` if one is waiting now.
    ///
    /// # Errors
    /// As [`try_receive`](Self::try_receive).
    pub fn try_receive_vec(&self) -> Result<(Vec<u8>, Priority)> {
        match self.receive_vec_until(Wait::Until(NOW)) {
            Err(Error::TimedOut) => Err(Error::WouldBlock),
            r => r,
        }
    }

    /// Receives a message into a new `Vec`, waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`receive_timeout`](Self::receive_timeout).
    pub fn receive_vec_timeout(&self, timeout: Duration) -> Result<(Vec<u8>, Priority)> {
        self.receive_vec_until(deadline(timeout))
    }

    /// `mq_notify`—Registers this process to be told when a message arrives in the empty queue
    /// while nobody waits in `receive`. One registration per queue, whichever process or
    /// descriptor made it; it is used up by one notification (register again after it) and
    /// ends when the registering process closes this descriptor.
    ///
    /// What is offered is what can be offered soundly: a signal ([`Notify::Signal`]; no code of
    /// ours runs in a signal handler) or holding the slot and polling the descriptor
    /// ([`Notify::None`]). Thread callbacks (`SIGEV_THREAD`) are not: glibc would run the
    /// callback on a thread it creates, outside anything Rust can check.
    ///
    /// ```
    /// use ipc_mq::{Access, MessageQueue, Notify};
    /// use rustix::event::{poll, PollFd, PollFlags, Timespec};
    /// # let name = format!("/ipcrs-doc-notify-{}", std::process::id());
    /// let q = MessageQueue::options().max_messages(2).message_size(64).create(&name)?;
    /// q.notify(Notify::None)?; // this process holds the queue's one notification slot
    /// MessageQueue::open(&name, Access::Send)?.send(b"ping", 0)?; // e.g. another process
    /// let mut fds = [PollFd::new(&q, PollFlags::IN)];
    /// let limit = Timespec { tv_sec: 5, tv_nsec: 0 };
    /// poll(&mut fds, Some(&limit)).map_err(std::io::Error::from)?;
    /// assert!(fds[0].revents().contains(PollFlags::IN));
    /// assert_eq!(q.try_receive_vec()?, (b"ping".to_vec(), 0));
    /// # Ok::<(), ipc_mq::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidSignal`] for a signal number that is not one (or one glibc keeps for
    /// itself), checked first; [`Error::NotifyBusy`] if a registration exists already.
    #[doc(alias = "mq_notify")]
    pub fn notify(&self, how: Notify) -> Result<()> {
        let raw = match how {
            Notify::Signal(sig) => {
                // 1..SIGRTMAX, minus the real-time signals below SIGRTMIN that glibc reserves
                // for its own use (thread cancellation, setxid); they would never reach us.
                let reserved = 32..libc::SIGRTMIN();
                if sig < 1 || sig > libc::SIGRTMAX() || reserved.contains(&sig) {
                    return Err(Error::InvalidSignal { signal: sig });
                }
                sys::RawNotify::Signal(sig, self.fd.as_raw_fd())
            }
            Notify::None => sys::RawNotify::None,
        };
        sys::mq_notify(self.fd.as_fd(), Some(raw)).map_err(|e| match e.raw_os_error() {
            Some(libc::EBUSY) => Error::NotifyBusy,
            _ => Error::from(e),
        })
    }

    /// `mq_notify(NULL)`—Removes this process's notification registration (a registration
    /// held by another process is left alone, and that is not an error).
    ///
    /// # Errors
    /// [`Error::Io`] if the call fails.
    #[doc(alias = "mq_notify")]
    pub fn unnotify(&self) -> Result<()> {
        sys::mq_notify(self.fd.as_fd(), None).map_err(Error::from)
    }
}

impl AsFd for MessageQueue {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for MessageQueue {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// The descriptor, without the name: converting an owner keeps the queue (as
/// [`persist`](MessageQueue::persist)).
impl From<MessageQueue> for OwnedFd {
    fn from(q: MessageQueue) -> OwnedFd {
        let MessageQueue { fd, owner, .. } = q;
        if let Some(o) = owner {
            o.disarm();
        }
        fd
    }
}

impl TryFrom<OwnedFd> for MessageQueue {
    type Error = Error;
    fn try_from(fd: OwnedFd) -> Result<MessageQueue> {
        MessageQueue::from_fd(fd)
    }
}
