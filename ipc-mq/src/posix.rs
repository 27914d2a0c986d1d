//! POSIX message queues (`mq_open`, `mq_send`, `mq_receive`, ...).

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crate::error::{Error, Limit, Result};
use crate::lifetime::{self, ATTEMPTS, LockKind, OnDrop, Opened, OwnerCheck};
use crate::limits::Limits;
use crate::name;
use crate::sys;

/// A POSIX message priority: `0..=`[`MAX_PRIORITY`]; larger is more urgent.
pub type Priority = u32;

/// The highest priority Linux accepts (`MQ_PRIO_MAX - 1`).
pub const MAX_PRIORITY: Priority = 32767;

/// The largest message size the kernel ever gives a queue (`HARD_MSGSIZEMAX`, 16 MiB): what a
/// queue reports beyond it is refused as [`Error::InvalidAttributes`] rather than allocated.
const HARD_MSGSIZEMAX: i64 = 16 * 1024 * 1024;

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

    /// The owner lock a descriptor of this access can hold.
    const fn lock_kind(self) -> LockKind {
        match self {
            Access::Send => LockKind::Write,
            Access::Receive | Access::Both => LockKind::Read,
        }
    }
}

/// Whether [`MessageQueueOptions::create`] checks the requested size against the limits first.
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
/// use ipc_mq::{Access, MessageQueue, OnDrop};
/// # let name = format!("/ipcrs-doc-opts-{}", std::process::id());
/// let owner = MessageQueue::options()
///     .max_messages(4)
///     .message_size(128)
///     .mode(0o600)
///     .on_drop(OnDrop::Remove)
///     .create(&name)?;
/// let sender = MessageQueue::options().access(Access::Send).open(&name)?;
/// sender.send(b"hi", 0)?;
/// assert_eq!(owner.attributes()?.current_messages, 1);
/// # Ok::<(), ipc_mq::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageQueueOptions {
    max_messages: Option<u64>,
    message_size: Option<u64>,
    access: Access,
    mode: u32,
    nonblocking: bool,
    limit_check: LimitCheck,
    owner_check: OwnerCheck,
    on_drop: OnDrop,
    replace_stale: bool,
}

impl Default for MessageQueueOptions {
    fn default() -> MessageQueueOptions {
        MessageQueueOptions::new()
    }
}

/// The creator's claim on its queue.
#[derive(Debug)]
struct Owner {
    /// The creating process: in any other (a forked child) the handle owns nothing.
    pid: u32,
    on_drop: OnDrop,
}

impl MessageQueueOptions {
    /// Defaults: the system's default size (`msg_default` × `msgsize_default`), send and
    /// receive, mode 0600, blocking, limits checked, [`OwnerCheck::SameUid`],
    /// [`OnDrop::Remove`], no stale replacement.
    pub const fn new() -> MessageQueueOptions {
        MessageQueueOptions {
            max_messages: None,
            message_size: None,
            access: Access::Both,
            mode: 0o600,
            nonblocking: false,
            limit_check: LimitCheck::Enforce,
            owner_check: OwnerCheck::SameUid,
            on_drop: OnDrop::Remove,
            replace_stale: false,
        }
    }

    /// The most messages the new queue holds (`mq_maxmsg`).
    pub const fn max_messages(mut self, n: u64) -> MessageQueueOptions {
        self.max_messages = Some(n);
        self
    }

    /// The largest message of the new queue, in bytes (`mq_msgsize`).
    pub const fn message_size(mut self, bytes: u64) -> MessageQueueOptions {
        self.message_size = Some(bytes);
        self
    }

    /// Which directions the descriptor allows (default [`Access::Both`]).
    pub const fn access(mut self, access: Access) -> MessageQueueOptions {
        self.access = access;
        self
    }

    /// The permission bits of a new queue (default 0600), applied exactly with `fchmod` after
    /// creation so the umask cannot change them. Bits outside `0o777` make `create` fail with
    /// [`Error::InvalidMode`] before any system call.
    pub const fn mode(mut self, mode: u32) -> MessageQueueOptions {
        self.mode = mode;
        self
    }

    /// Open the descriptor nonblocking (`O_NONBLOCK`): blocking calls then fail with
    /// [`Error::WouldBlock`] instead of waiting.
    pub const fn nonblocking(mut self, nonblocking: bool) -> MessageQueueOptions {
        self.nonblocking = nonblocking;
        self
    }

    /// Whether `create` checks the limits itself first (default [`LimitCheck::Enforce`]).
    pub const fn limit_check(mut self, check: LimitCheck) -> MessageQueueOptions {
        self.limit_check = check;
        self
    }

    /// Whose queues `open` accepts (default [`OwnerCheck::SameUid`]).
    pub const fn owner_check(mut self, check: OwnerCheck) -> MessageQueueOptions {
        self.owner_check = check;
        self
    }

    /// What dropping the owner does (default [`OnDrop::Remove`]). [`OnDrop::Keep`] leaves the
    /// queue and its messages for processes that come later; [`remove_stale`] removes it once
    /// the owner is gone.
    pub const fn on_drop(mut self, on_drop: OnDrop) -> MessageQueueOptions {
        self.on_drop = on_drop;
        self
    }

    /// Have `create` first remove a stale queue at the name (one whose owner is gone, as
    /// [`remove_stale`]): for a server restarted after a crash. A queue whose owner lives still
    /// makes `create` fail, with [`Error::OwnerAlive`].
    pub const fn replace_stale(mut self) -> MessageQueueOptions {
        self.replace_stale = true;
        self
    }

    fn flags(&self) -> libc::c_int {
        let mut f = self.access.flags() | libc::O_CLOEXEC;
        if self.nonblocking {
            f |= libc::O_NONBLOCK;
        }
        f
    }

    /// `mq_open(O_CREAT | O_EXCL)`—Creates a new queue and returns its owner.
    ///
    /// The owner holds the queue's owner lock (so [`remove_stale`] knows it is alive) and, unless
    /// created with [`OnDrop::Keep`], removes the queue when dropped in the creating process, if
    /// the name still refers to the queue it created.
    ///
    /// # Errors
    /// [`Error::InvalidName`] and [`Error::InvalidMode`] (no system call made),
    /// [`Error::InvalidAttributes`] for a zero size, [`Error::LimitExceeded`] for a request over
    /// `msg_max`, `msgsize_max`, the `RLIMIT_MSGQUEUE` budget (`mq_open`'s `EMFILE`) or
    /// `queues_max` (`ENOSPC`), [`Error::AlreadyExists`], [`Error::PermissionDenied`];
    /// with [`replace_stale`](Self::replace_stale), [`Error::OwnerAlive`].
    ///
    /// # References
    ///  - [Linux](https://man7.org/linux/man-pages/man3/mq_open.3.html),
    ///    [limits](https://man7.org/linux/man-pages/man7/mq_overview.7.html)
    #[doc(alias = "mq_open")]
    pub fn create(&self, name: &str) -> Result<MessageQueue> {
        let cname = self.check(name)?;
        if self.replace_stale {
            match remove_stale_c(name, &cname) {
                Ok(()) | Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        self.create_c(name, &cname)
    }

    /// What `create` checks before any system call; the name NUL-terminated.
    fn check(&self, name: &str) -> Result<CString> {
        let cname = name::validate(name)?;
        if self.mode & !0o777 != 0 {
            return Err(Error::InvalidMode { mode: self.mode });
        }
        Ok(cname)
    }

    fn create_c(&self, name: &str, cname: &CStr) -> Result<MessageQueue> {
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
        for _ in 0..ATTEMPTS {
            let fd = sys::mq_open(cname, flags, 0o600, Some((maxmsg as i64, msgsize as i64)))
                .map_err(|e| create_error(e, name, &limits, maxmsg, msgsize))?;
            // From here on the queue exists: dropping `q` removes it (identity checked) if
            // anything below fails; the caller's `on_drop` applies once it is complete.
            let mut q = MessageQueue {
                fd: Some(fd),
                msgsize: usize::try_from(msgsize).map_err(|_| Error::InvalidAttributes)?,
                name: Some(name.into()),
                owner: Some(Owner {
                    pid: std::process::id(),
                    on_drop: OnDrop::Remove,
                }),
            };
            lifetime::lock(q.fd(), self.access.lock_kind()).map_err(|e| Error::about(e, name))?;
            // A `remove_stale` that looked before the lock was taken may have unlinked the new
            // queue: then it is no longer ours to return (nor to remove), and we try again.
            if !at_name(cname, q.fd(), None).map_err(|e| Error::about(e, name))? {
                q.owner = None;
                continue;
            }
            rustix::fs::fchmod(q.fd(), rustix::fs::Mode::from_raw_mode(self.mode))
                .map_err(|e| Error::about(e.into(), name))?;
            if let Some(o) = &mut q.owner {
                o.on_drop = self.on_drop;
            }
            return Ok(q);
        }
        Err(Error::Contended {
            name: name.to_owned(),
            attempts: ATTEMPTS,
        })
    }

    /// `mq_open`—Opens an existing queue; the handle removes nothing when dropped.
    ///
    /// Queue names are not paths (no symlinks can be planted), so `O_NOFOLLOW` has nothing to
    /// do here; `fstat` on the new descriptor checks the owner unless [`OwnerCheck::AnyUid`].
    /// The queue's size is what its creator chose ([`MessageQueue::message_size`]).
    ///
    /// # Errors
    /// [`Error::InvalidName`] (no system call made), [`Error::NotFound`],
    /// [`Error::PermissionDenied`], [`Error::WrongOwner`] (unless [`OwnerCheck::AnyUid`]).
    #[doc(alias = "mq_open")]
    pub fn open(&self, name: &str) -> Result<MessageQueue> {
        let cname = name::validate(name)?;
        self.open_c(name, &cname)
    }

    fn open_c(&self, name: &str, cname: &CStr) -> Result<MessageQueue> {
        let fd = sys::mq_open(cname, self.flags(), 0, None).map_err(|e| Error::about(e, name))?;
        if self.owner_check == OwnerCheck::SameUid {
            let st = rustix::fs::fstat(&fd).map_err(|e| Error::about(e.into(), name))?;
            let me = rustix::process::geteuid().as_raw();
            if st.st_uid != me {
                return Err(Error::WrongOwner {
                    name: name.to_owned(),
                    expected: me,
                    found: st.st_uid,
                });
            }
        }
        MessageQueue::adopt(fd, Some(name))
    }

    /// Opens the queue if it exists, else creates it: `(queue, Opened::Created)` is an owner,
    /// `(queue, Opened::Existing)` an opener (checked as [`open`](Self::open) checks; its size
    /// is its creator's, whatever this call asked for). A queue removed between the two steps
    /// is tried again a few times.
    ///
    /// With [`replace_stale`](Self::replace_stale), a stale queue at the name is removed first
    /// and a live one is opened.
    ///
    /// ```
    /// use ipc_mq::{MessageQueue, Opened};
    /// # let name = format!("/ipcrs-doc-ooc-{}", std::process::id());
    /// let opts = MessageQueue::options().max_messages(2).message_size(64);
    /// let (first, how) = opts.open_or_create(&name)?;
    /// assert_eq!(how, Opened::Created);
    /// let (second, how) = opts.open_or_create(&name)?;
    /// assert_eq!(how, Opened::Existing);
    /// assert!(first.is_owner() && !second.is_owner());
    /// # Ok::<(), ipc_mq::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`create`](Self::create) and [`open`](Self::open); [`Error::Contended`] if the queue
    /// kept disappearing.
    pub fn open_or_create(&self, name: &str) -> Result<(MessageQueue, Opened)> {
        let cname = self.check(name)?;
        if self.replace_stale {
            match remove_stale_c(name, &cname) {
                Ok(()) | Err(Error::NotFound { .. } | Error::OwnerAlive { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        for _ in 0..ATTEMPTS {
            match self.create_c(name, &cname) {
                Ok(q) => return Ok((q, Opened::Created)),
                Err(Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
            match self.open_c(name, &cname) {
                Ok(q) => return Ok((q, Opened::Existing)),
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Err(Error::Contended {
            name: name.to_owned(),
            attempts: ATTEMPTS,
        })
    }
}

/// Translates `mq_open(O_CREAT)`'s ambiguous errors into what they mean.
fn create_error(e: io::Error, name: &str, limits: &Limits, maxmsg: u64, msgsize: u64) -> Error {
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
        _ => Error::about(e, name),
    }
}

/// A fresh descriptor of the queue at `cname`, for looking at it (identity, owner lock): read
/// only, else write only if the mode allows no reading. With `ours` (the caller's own
/// descriptor of the queue it created), a mode that allows the creator neither is widened by
/// `S_IRUSR` on `ours` — harmless, as `ours` is about to be removed or is no longer at the name.
fn probe(cname: &CStr, ours: Option<BorrowedFd<'_>>) -> io::Result<OwnedFd> {
    let flags = libc::O_CLOEXEC | libc::O_NONBLOCK;
    let denied = |e: &io::Error| matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM));
    match sys::mq_open(cname, libc::O_RDONLY | flags, 0, None) {
        Err(e) if denied(&e) => {}
        r => return r,
    }
    match sys::mq_open(cname, libc::O_WRONLY | flags, 0, None) {
        Err(e) if denied(&e) => {
            let Some(fd) = ours else { return Err(e) };
            let st = rustix::fs::fstat(fd)?;
            let mode = rustix::fs::Mode::from_raw_mode((st.st_mode & 0o777) | 0o400);
            rustix::fs::fchmod(fd, mode)?;
            sys::mq_open(cname, libc::O_RDONLY | flags, 0, None)
        }
        r => r,
    }
}

/// Whether the name `cname` refers to the queue `fd` is a descriptor of (same device and
/// inode). `Ok(false)` also when the name does not exist.
fn at_name(cname: &CStr, fd: BorrowedFd<'_>, ours: Option<BorrowedFd<'_>>) -> io::Result<bool> {
    let now = match probe(cname, ours) {
        Ok(p) => p,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(false),
        Err(e) => return Err(e),
    };
    Ok(lifetime::identity(&now)? == lifetime::identity(fd)?)
}

/// Unlinks `cname` if it still refers to the queue of `fd` (which this process created).
fn unlink_ours(name: &str, cname: &CStr, fd: BorrowedFd<'_>) -> Result<()> {
    if !at_name(cname, fd, Some(fd)).map_err(|e| Error::about(e, name))? {
        return Err(Error::Removed {
            name: name.to_owned(),
        });
    }
    match sys::mq_unlink(cname) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Err(Error::Removed {
            name: name.to_owned(),
        }),
        Err(e) => Err(Error::about(e, name)),
    }
}

/// `mq_unlink`—Removes a queue's name (e.g. one left behind by a process that died). Processes
/// that have it open keep using it; it is freed when the last one closes it.
///
/// This removes whatever queue has the name, owner or not: to remove only a queue whose owner
/// is gone, use [`remove_stale`].
///
/// # Errors
/// [`Error::InvalidName`] (no system call made), [`Error::NotFound`],
/// [`Error::PermissionDenied`] (another user's queue).
#[doc(alias = "mq_unlink")]
pub fn unlink(name: &str) -> Result<()> {
    let cname = name::validate(name)?;
    sys::mq_unlink(&cname).map_err(|e| Error::about(e, name))
}

/// Removes the queue `name` only if it is stale: no process holds its owner (the creator
/// exited, was killed, is a zombie, or dropped it with [`OnDrop::Keep`] or after
/// [`persist`](MessageQueue::persist)). Queues made by programs that do not use this crate have
/// no owner lock and count as stale.
///
/// The check is the owner lock: a fresh descriptor of the queue asks `F_OFD_GETLK` whether
/// another descriptor holds a lock on the byte [`OWNER_LOCK`](crate::OWNER_LOCK); then, if the
/// name still refers to that queue, it is unlinked. (A queue re-created under the name in the
/// instant between that last check and `mq_unlink` would be removed instead; only a process
/// that removes the name itself can cause that.)
///
/// ```
/// use ipc_mq::{Error, MessageQueue, OnDrop};
/// # let name = format!("/ipcrs-doc-stale-{}", std::process::id());
/// let producer = MessageQueue::options()
///     .max_messages(2)
///     .message_size(64)
///     .on_drop(OnDrop::Keep)
///     .create(&name)?;
/// producer.send(b"job", 0)?;
/// assert!(matches!(ipc_mq::remove_stale(&name), Err(Error::OwnerAlive { .. })));
/// drop(producer); // kept: the job waits for a consumer
/// assert_eq!(MessageQueue::open(&name, ipc_mq::Access::Receive)?.try_receive_vec()?.0, b"job");
/// ipc_mq::remove_stale(&name)?; // the owner is gone: removed
/// # Ok::<(), ipc_mq::Error>(())
/// ```
///
/// # Errors
/// [`Error::InvalidName`] (no system call made), [`Error::NotFound`], [`Error::OwnerAlive`],
/// [`Error::PermissionDenied`] (the mode lets this user open it in neither direction, or it is
/// another user's queue), [`Error::Contended`] if the name keeps being re-created.
pub fn remove_stale(name: &str) -> Result<()> {
    let cname = name::validate(name)?;
    remove_stale_c(name, &cname)
}

fn remove_stale_c(name: &str, cname: &CStr) -> Result<()> {
    let err = |e| Error::about(e, name);
    for _ in 0..ATTEMPTS {
        let p = probe(cname, None).map_err(err)?;
        if lifetime::held_long(&p).map_err(err)? {
            return Err(Error::OwnerAlive {
                name: name.to_owned(),
            });
        }
        if !at_name(cname, p.as_fd(), None).map_err(err)? {
            continue; // re-created meanwhile: look at the new one
        }
        return sys::mq_unlink(cname).map_err(err);
    }
    Err(Error::Contended {
        name: name.to_owned(),
        attempts: ATTEMPTS,
    })
}

/// When a blocking call gives up.
#[derive(Clone, Copy)]
enum Wait {
    /// Block in the kernel until it can be done.
    Forever,
    /// Do not wait at all.
    Now,
    /// Wait until this moment of the monotonic clock.
    Until(Instant),
}

fn deadline(timeout: Duration) -> Wait {
    if timeout.is_zero() {
        return Wait::Now;
    }
    Instant::now()
        .checked_add(timeout)
        .map_or(Wait::Forever, Wait::Until)
}

/// A deadline already in the past: the kernel's timed calls then never wait (`ETIMEDOUT` on a
/// blocking descriptor, `EAGAIN` on a nonblocking one).
pub(crate) const PAST: libc::timespec = libc::timespec {
    tv_sec: 0,
    tv_nsec: 0,
};

/// Waits until `fd` is ready for `events` or `deadline` passes (`EINTR` just returns).
fn poll_until(fd: BorrowedFd<'_>, events: rustix::event::PollFlags, deadline: Instant) {
    let left = deadline.saturating_duration_since(Instant::now());
    let ts = rustix::event::Timespec {
        tv_sec: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(left.subsec_nanos()),
    };
    let mut fds = [rustix::event::PollFd::from_borrowed_fd(fd, events)];
    // Any outcome (ready, timed out, interrupted, failed) sends the caller back to try again
    // and to check the deadline.
    let _ = rustix::event::poll(&mut fds, Some(&ts));
}

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
/// Timed calls (`_timeout`) wait on the monotonic clock: they poll the descriptor with the time
/// left and try again, so a wall-clock change does not move their deadline (the kernel's
/// `mq_timedsend`/`mq_timedreceive` take a `CLOCK_REALTIME` deadline, which is used here only
/// as "now" for a try).
///
/// # Ownership
/// The handle [`create`](MessageQueueOptions::create) returns is the queue's *owner*: it holds
/// an open-file-description lock on its descriptor (byte [`OWNER_LOCK`](crate::OWNER_LOCK); a
/// read lock, a write lock if it is send-only) for as long as the descriptor is open, so
/// [`remove_stale`] can tell that the queue is in use. Dropped in the creating process, the
/// owner removes the queue ([`OnDrop::Remove`]) if the name still refers to it, or leaves it
/// ([`OnDrop::Keep`]). A child forked from the owner's process inherits the descriptor and with
/// it the lock: the queue counts as owned until both have closed it, but the child's copy never
/// removes anything (`is_owner()` is false there).
///
/// # After `fork`
/// In a child forked from a multi-threaded process, every method of an existing handle may be
/// called: `send`, `receive` and their `try_`/`_timeout` forms, `attributes`, `len`,
/// `set_nonblocking`, `notify` and `unnotify` each make one or a few system calls (glibc's
/// `mq_*` wrappers are plain system calls; `notify` never uses `SIGEV_THREAD`, the only form for
/// which glibc creates a helper thread and a netlink socket); `receive_vec` and errors that name
/// the queue allocate, which glibc's `malloc` allows after `fork`. Dropping the handle closes
/// the descriptor and removes nothing; an inherited owner is not an owner there. The child does
/// not inherit a notification registration, and closing its copy does not cancel the parent's.
/// `create`, `open` and `remove_stale` also work there (they read `/proc` and open descriptors,
/// close-on-exec), but are rarely what a forked child should do before `exec`.
#[derive(Debug)]
pub struct MessageQueue {
    /// Always `Some` (taken only by `From<MessageQueue> for OwnedFd`, which consumes the handle).
    fd: Option<OwnedFd>,
    msgsize: usize,
    /// The name it was created or opened by (`None` for an adopted descriptor).
    name: Option<Box<str>>,
    owner: Option<Owner>,
}

impl MessageQueue {
    /// Options for [`create`](MessageQueueOptions::create), [`open`](MessageQueueOptions::open)
    /// or [`open_or_create`](MessageQueueOptions::open_or_create).
    pub const fn options() -> MessageQueueOptions {
        MessageQueueOptions::new()
    }

    /// Creates a queue of `max_messages` × `message_size` bytes with the default options:
    /// `MessageQueue::options().max_messages(..).message_size(..).create(name)`.
    ///
    /// # Errors
    /// As [`MessageQueueOptions::create`].
    #[doc(alias = "mq_open")]
    pub fn create(name: &str, max_messages: u64, message_size: u64) -> Result<MessageQueue> {
        MessageQueueOptions::new()
            .max_messages(max_messages)
            .message_size(message_size)
            .create(name)
    }

    /// Opens an existing queue for `access` with the default options:
    /// `MessageQueue::options().access(access).open(name)`.
    ///
    /// # Errors
    /// As [`MessageQueueOptions::open`].
    #[doc(alias = "mq_open")]
    pub fn open(name: &str, access: Access) -> Result<MessageQueue> {
        MessageQueueOptions::new().access(access).open(name)
    }

    /// Opens the queue, or creates it with `max_messages` × `message_size` bytes, with the
    /// default options: `MessageQueue::options().max_messages(..).message_size(..)
    /// .open_or_create(name)`.
    ///
    /// # Errors
    /// As [`MessageQueueOptions::open_or_create`].
    pub fn open_or_create(
        name: &str,
        max_messages: u64,
        message_size: u64,
    ) -> Result<(MessageQueue, Opened)> {
        MessageQueueOptions::new()
            .max_messages(max_messages)
            .message_size(message_size)
            .open_or_create(name)
    }

    fn adopt(fd: OwnedFd, name: Option<&str>) -> Result<MessageQueue> {
        let a = sys::mq_getattr(fd.as_fd()).map_err(|e| match name {
            Some(n) => Error::about(e, n),
            None => Error::Io(e),
        })?;
        // The kernel never reports a size outside 1..=16 MiB; anything else is not allocated.
        if !(1..=HARD_MSGSIZEMAX).contains(&a.msgsize) || a.maxmsg < 1 {
            return Err(Error::InvalidAttributes);
        }
        Ok(MessageQueue {
            fd: Some(fd),
            msgsize: a.msgsize as usize,
            name: name.map(Into::into),
            owner: None,
        })
    }

    /// Adopts a queue descriptor (e.g. one passed from another process); it owns nothing.
    ///
    /// # Errors
    /// [`Error::Io`] (`EBADF`) if `fd` is not a message queue; [`Error::InvalidAttributes`] if
    /// it reports a size no queue has.
    pub fn from_fd(fd: OwnedFd) -> Result<MessageQueue> {
        MessageQueue::adopt(fd, None)
    }

    /// The descriptor.
    fn fd(&self) -> BorrowedFd<'_> {
        match &self.fd {
            Some(fd) => fd.as_fd(),
            None => unreachable!("a MessageQueue always has its descriptor"),
        }
    }

    /// A descriptor of this queue for an event loop of this crate's own (the tokio adapter):
    /// non-blocking, close-on-exec, with this handle's access, and which directions it allows.
    ///
    /// A non-blocking handle lends its own open file description (a duplicate descriptor). A
    /// blocking one keeps its mode: a second description of the same queue is opened
    /// non-blocking, through `/proc/self/fd` or else by the handle's name, and checked to be the
    /// same queue (device and inode) — so the blocking calls of this handle, and of any process
    /// that shares its description, go on waiting as before.
    #[cfg(feature = "tokio")]
    pub(crate) fn nonblocking_descriptor(&self) -> Result<(OwnedFd, bool, bool)> {
        use rustix::fs::OFlags;
        let fd = self.fd();
        let err = |e: io::Error| Error::about(e, &self.label());
        let fl = rustix::fs::fcntl_getfl(fd).map_err(|e| err(e.into()))?;
        let mode = fl & OFlags::RWMODE;
        let (readable, writable) = if mode == OFlags::WRONLY {
            (false, true)
        } else if mode == OFlags::RDWR {
            (true, true)
        } else {
            (true, false)
        };
        if fl.contains(OFlags::NONBLOCK) {
            let dup = rustix::io::fcntl_dupfd_cloexec(fd, 0).map_err(|e| err(e.into()))?;
            return Ok((dup, readable, writable));
        }
        let ours = lifetime::identity(fd).map_err(err)?;
        let same = |new: OwnedFd| -> io::Result<OwnedFd> {
            if lifetime::identity(&new)? == ours && sys::mq_getattr(new.as_fd()).is_ok() {
                Ok(new)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    "it leads to another queue now",
                ))
            }
        };
        let via_proc = rustix::fs::open(
            format!("/proc/self/fd/{}", fd.as_raw_fd()),
            mode | OFlags::NONBLOCK | OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(io::Error::from)
        .and_then(same);
        let proc_error = match via_proc {
            Ok(fd) => return Ok((fd, readable, writable)),
            Err(e) => e,
        };
        let by_name = match &self.name {
            Some(name) => name::validate(name)
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
                .and_then(|cname| {
                    let flags = mode.bits() as libc::c_int | libc::O_NONBLOCK | libc::O_CLOEXEC;
                    sys::mq_open(&cname, flags, 0, None)
                })
                .and_then(same),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                "an adopted descriptor has no name",
            )),
        };
        match by_name {
            Ok(fd) => Ok((fd, readable, writable)),
            Err(name_error) => Err(Error::Io(io::Error::new(
                proc_error.kind(),
                format!(
                    "{}: cannot open a non-blocking descriptor of this queue for the event loop \
                     (through /proc/self/fd: {proc_error}; by its name: {name_error}); make the \
                     handle non-blocking first (MessageQueueOptions::nonblocking(true) or \
                     set_nonblocking(true)) and its own description is used",
                    self.label()
                ),
            ))),
        }
    }

    /// The name errors give for this queue.
    pub(crate) fn label(&self) -> String {
        match &self.name {
            Some(n) => n.to_string(),
            None => format!("(descriptor {})", self.fd().as_raw_fd()),
        }
    }

    /// The name this handle was created or opened by (`None` for an adopted descriptor).
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Whether this handle is the queue's owner: the handle `create` returned, in the process
    /// that created it. (A forked child's copy is not; an owner created with [`OnDrop::Keep`] or
    /// [persisted](Self::persist) is, until it is dropped.)
    pub fn is_owner(&self) -> bool {
        self.owner
            .as_ref()
            .is_some_and(|o| o.pid == std::process::id())
    }

    /// Keeps the queue after this owner is dropped, as [`OnDrop::Keep`] at create would have.
    /// The handle stays the owner — its owner lock held, so [`remove_stale`] refuses while it
    /// lives — until it is dropped; then the queue is ownerless and waits for late consumers
    /// (and, once they are done, for [`remove_stale`] or [`unlink`]). Nothing happens on a
    /// handle that is not the owner.
    pub fn persist(&mut self) {
        if let Some(o) = &mut self.owner {
            o.on_drop = OnDrop::Keep;
        }
    }

    /// Removes the queue now, reporting what goes wrong (dropping the owner removes it too, but
    /// silently): unlinks the name if it still refers to the queue this owner created; the
    /// queue is freed when the last descriptor of it is closed.
    ///
    /// # Errors
    /// [`Error::NotOwner`] for a handle that is not the owner (nothing is removed);
    /// [`Error::Removed`] if the queue was unlinked already (a queue now at the name is someone
    /// else's and is left alone); [`Error::PermissionDenied`].
    pub fn remove(mut self) -> Result<()> {
        let name = self.label();
        if !self.is_owner() {
            return Err(Error::NotOwner { name });
        }
        self.owner = None;
        let cname = name::validate(&name)?;
        unlink_ours(&name, &cname, self.fd())
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
        let a = sys::mq_getattr(self.fd())?;
        Ok(MqAttr {
            max_messages: u64::try_from(a.maxmsg).unwrap_or(0),
            message_size: usize::try_from(a.msgsize).unwrap_or(0),
            current_messages: u64::try_from(a.curmsgs).unwrap_or(0),
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
    /// [`Error::WouldBlock`] instead of waiting (or makes them wait again). The flag belongs to
    /// the open file description: a forked child's copy shares it.
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
        sys::mq_setattr(self.fd(), flags)?;
        Ok(())
    }

    pub(crate) fn check_send(&self, msg: &[u8], priority: Priority) -> Result<()> {
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

    pub(crate) fn io_error(&self, e: io::Error, len: usize) -> Error {
        match e.raw_os_error() {
            Some(libc::EMSGSIZE) => Error::MessageTooLarge {
                len,
                max: self.msgsize,
            },
            Some(libc::ETIMEDOUT | libc::EAGAIN) => Error::WouldBlock,
            _ => Error::about(e, &self.label()),
        }
    }

    fn send_until(&self, msg: &[u8], priority: Priority, wait: Wait) -> Result<()> {
        self.check_send(msg, priority)?;
        let fd = self.fd();
        loop {
            let r = match wait {
                Wait::Forever => sys::mq_send(fd, msg, priority),
                Wait::Now | Wait::Until(_) => sys::mq_timedsend(fd, msg, priority, &PAST),
            };
            match (r, wait) {
                (Ok(()), _) => return Ok(()),
                (Err(e), _) if e.raw_os_error() == Some(libc::EINTR) => {}
                // Full, on a blocking descriptor: wait for room (monotonic), then try again.
                (Err(e), Wait::Until(t)) if e.raw_os_error() == Some(libc::ETIMEDOUT) => {
                    if Instant::now() >= t {
                        return Err(Error::TimedOut);
                    }
                    poll_until(fd, rustix::event::PollFlags::OUT, t);
                }
                (Err(e), _) => return Err(self.io_error(e, msg.len())),
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
        self.send_until(msg, priority, Wait::Now)
    }

    /// `mq_timedsend`—Sends one message, waiting at most `timeout` for room
    /// (`Duration::MAX`, or any timeout past the clock's range: forever; `Duration::ZERO`: not
    /// at all). The wait is on the monotonic clock and resumes after signals against the same
    /// deadline.
    ///
    /// # Errors
    /// [`Error::TimedOut`]; [`Error::WouldBlock`] on a nonblocking descriptor; otherwise as
    /// [`send`](Self::send).
    #[doc(alias = "mq_timedsend")]
    pub fn send_timeout(&self, msg: &[u8], priority: Priority, timeout: Duration) -> Result<()> {
        match self.send_until(msg, priority, deadline(timeout)) {
            Err(Error::WouldBlock) if timeout.is_zero() && !self.is_nonblocking() => {
                Err(Error::TimedOut)
            }
            r => r,
        }
    }

    fn is_nonblocking(&self) -> bool {
        self.attributes().is_ok_and(|a| a.nonblocking)
    }

    fn receive_until(&self, buf: &mut [u8], wait: Wait) -> Result<(usize, Priority)> {
        if buf.len() < self.msgsize {
            return Err(Error::BufferTooSmall {
                len: buf.len(),
                needed: Some(self.msgsize),
            });
        }
        let fd = self.fd();
        loop {
            let r = match wait {
                Wait::Forever => sys::mq_receive(fd, buf),
                Wait::Now | Wait::Until(_) => sys::mq_timedreceive(fd, buf, &PAST),
            };
            match (r, wait) {
                (Ok((n, prio)), _) if n <= buf.len() => return Ok((n, prio)),
                (Ok((n, _)), _) => {
                    return Err(Error::Io(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "mq_receive reported {n} bytes for a buffer of {}",
                            buf.len()
                        ),
                    )));
                }
                (Err(e), _) if e.raw_os_error() == Some(libc::EINTR) => {}
                // Empty, on a blocking descriptor: wait for a message (monotonic), try again.
                (Err(e), Wait::Until(t)) if e.raw_os_error() == Some(libc::ETIMEDOUT) => {
                    if Instant::now() >= t {
                        return Err(Error::TimedOut);
                    }
                    poll_until(fd, rustix::event::PollFlags::IN, t);
                }
                (Err(e), _) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
                    return Err(Error::BufferTooSmall {
                        len: buf.len(),
                        needed: Some(self.msgsize),
                    });
                }
                (Err(e), _) => return Err(self.io_error(e, 0)),
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
        self.receive_until(buf, Wait::Now)
    }

    /// `mq_timedreceive`—Receives a message, waiting at most `timeout` (`Duration::MAX`:
    /// forever; `Duration::ZERO`: not at all), on the monotonic clock.
    ///
    /// # Errors
    /// [`Error::TimedOut`]; otherwise as [`receive`](Self::receive).
    #[doc(alias = "mq_timedreceive")]
    pub fn receive_timeout(&self, buf: &mut [u8], timeout: Duration) -> Result<(usize, Priority)> {
        match self.receive_until(buf, deadline(timeout)) {
            Err(Error::WouldBlock) if timeout.is_zero() && !self.is_nonblocking() => {
                Err(Error::TimedOut)
            }
            r => r,
        }
    }

    fn receive_vec_until(&self, wait: Wait) -> Result<(Vec<u8>, Priority)> {
        let mut buf = vec![0; self.msgsize];
        let (n, prio) = self.receive_until(&mut buf, wait)?;
        buf.truncate(n);
        Ok((buf, prio))
    }

    /// Receives a message into a new `Vec` sized from the queue's attributes (at most 16 MiB,
    /// the kernel's largest message size).
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
        self.receive_vec_until(Wait::Now)
    }

    /// Receives a message into a new `Vec`, waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`receive_timeout`](Self::receive_timeout).
    pub fn receive_vec_timeout(&self, timeout: Duration) -> Result<(Vec<u8>, Priority)> {
        match self.receive_vec_until(deadline(timeout)) {
            Err(Error::WouldBlock) if timeout.is_zero() && !self.is_nonblocking() => {
                Err(Error::TimedOut)
            }
            r => r,
        }
    }

    /// `mq_notify`—Registers this process to be told when a message arrives in the empty queue
    /// while nobody waits in `receive`. One registration per queue, whichever process or
    /// descriptor made it; it is used up by one notification (register again after it) and
    /// ends when the registering process closes any descriptor of the queue (Linux's rule: this
    /// one, another handle's, or the one an `AsyncMessageQueue` registered).
    ///
    /// What is offered is what can be offered soundly: a signal ([`Notify::Signal`]; no code of
    /// ours runs in a signal handler) or holding the slot and polling the descriptor
    /// ([`Notify::None`]). Thread callbacks (`SIGEV_THREAD`) are not: glibc would run the
    /// callback on a thread it creates, outside anything Rust can check, through a helper
    /// thread and a netlink socket it sets up once per process — which a forked child inherits
    /// without the thread. For these two forms glibc's `mq_notify` is the bare system call.
    /// Timed receives (`_timeout`) poll rather than wait in the kernel's receive, so a
    /// notification can fire while one of them waits.
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
                sys::RawNotify::Signal(sig, self.fd().as_raw_fd())
            }
            Notify::None => sys::RawNotify::None,
        };
        sys::mq_notify(self.fd(), Some(raw)).map_err(|e| match e.raw_os_error() {
            Some(libc::EBUSY) => Error::NotifyBusy { name: self.label() },
            _ => Error::about(e, &self.label()),
        })
    }

    /// `mq_notify(NULL)`—Removes this process's notification registration (a registration
    /// held by another process is left alone, and that is not an error).
    ///
    /// # Errors
    /// [`Error::Io`] if the call fails.
    #[doc(alias = "mq_notify")]
    pub fn unnotify(&self) -> Result<()> {
        sys::mq_notify(self.fd(), None).map_err(|e| Error::about(e, &self.label()))
    }
}

impl Drop for MessageQueue {
    fn drop(&mut self) {
        let Some(o) = self.owner.take() else { return };
        // Only in the creating process (a forked child's copy removes nothing), only if asked,
        // and only the queue this handle created.
        if o.pid != std::process::id() || o.on_drop != OnDrop::Remove {
            return;
        }
        if let (Some(name), Some(fd)) = (&self.name, &self.fd) {
            if let Ok(cname) = name::validate(name) {
                let _ = unlink_ours(name, &cname, fd.as_fd());
            }
        }
    }
}

impl AsFd for MessageQueue {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd()
    }
}

impl AsRawFd for MessageQueue {
    fn as_raw_fd(&self) -> RawFd {
        self.fd().as_raw_fd()
    }
}

/// The descriptor: converting an owner keeps the queue (as [`persist`](MessageQueue::persist)),
/// and the owner lock travels with the descriptor — while any process holds it (or a copy),
/// [`remove_stale`] calls the owner alive.
impl From<MessageQueue> for OwnedFd {
    fn from(mut q: MessageQueue) -> OwnedFd {
        q.persist();
        match q.fd.take() {
            Some(fd) => fd,
            // Only `from` takes the descriptor, and it consumes the handle.
            None => unreachable!("a MessageQueue always has its descriptor"),
        }
    }
}

impl TryFrom<OwnedFd> for MessageQueue {
    type Error = Error;
    fn try_from(fd: OwnedFd) -> Result<MessageQueue> {
        MessageQueue::from_fd(fd)
    }
}
