//! The crate's one error type.

use std::fmt;
use std::io;

/// A kernel or configuration limit that a request ran into (see [`Error::LimitExceeded`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Limit {
    /// `/proc/sys/fs/mqueue/msg_max`: the most messages a POSIX queue may hold.
    MsgMax,
    /// `/proc/sys/fs/mqueue/msgsize_max`: the largest message size of a POSIX queue.
    MsgsizeMax,
    /// `/proc/sys/fs/mqueue/queues_max`: the most POSIX queues in the IPC namespace.
    QueuesMax,
    /// `RLIMIT_MSGQUEUE`: the bytes all POSIX queues of one user may reserve.
    RlimitMsgqueue,
    /// `/proc/sys/kernel/msgmax`: the largest System V message.
    SysvMsgMax,
    /// `/proc/sys/kernel/msgmni`: the most System V queues in the IPC namespace.
    SysvMsgmni,
}

impl Limit {
    /// The limit's name as the kernel spells it (`msg_max`, `RLIMIT_MSGQUEUE`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            Limit::MsgMax => "msg_max",
            Limit::MsgsizeMax => "msgsize_max",
            Limit::QueuesMax => "queues_max",
            Limit::RlimitMsgqueue => "RLIMIT_MSGQUEUE",
            Limit::SysvMsgMax => "msgmax",
            Limit::SysvMsgmni => "msgmni",
        }
    }

    /// How an administrator or the caller raises it, in one sentence.
    pub const fn how_to_raise(self) -> &'static str {
        match self {
            Limit::MsgMax => "raise it as root with `sysctl fs.mqueue.msg_max=N`",
            Limit::MsgsizeMax => "raise it as root with `sysctl fs.mqueue.msgsize_max=N`",
            Limit::QueuesMax => {
                "remove unused queues or raise it as root with `sysctl fs.mqueue.queues_max=N`"
            }
            Limit::RlimitMsgqueue => {
                "remove unused queues, ask for fewer or smaller messages, or raise the limit \
                 (`ulimit -q`, setrlimit(RLIMIT_MSGQUEUE), limits.conf `msgqueue`)"
            }
            Limit::SysvMsgMax => "raise it as root with `sysctl kernel.msgmax=N`",
            Limit::SysvMsgmni => {
                "remove unused queues (`ipcs -q`, `ipcrm`) or raise it as root with \
                 `sysctl kernel.msgmni=N`"
            }
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything that can go wrong with a message queue, in the user's terms.
///
/// Every error about one queue names it in its `name` field: the POSIX name (`/jobs`), or for
/// System V `"key 0x49500001"` (before the queue is found) or `"id 5"` (a queue in hand). The
/// message says the usual fix where there is one.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The POSIX name is not `/` followed by 1..=255 bytes without `/` or NUL (nor `.`, `..`);
    /// or a path given to [`Key::from_path`](crate::Key::from_path) cannot be one. Found before
    /// any system call (the kernel's `ENAMETOOLONG` means this too, wherever it comes from).
    InvalidName {
        /// The name (or path) as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Permission bits outside `0o777` were asked for; nothing was created.
    InvalidMode {
        /// The mode asked for.
        mode: u32,
    },
    /// A queue with that name or key exists already (exclusive create).
    AlreadyExists {
        /// The queue.
        name: String,
    },
    /// No queue with that name, key or id exists.
    NotFound {
        /// The queue.
        name: String,
    },
    /// The queue's mode does not let the caller do that.
    PermissionDenied {
        /// The queue.
        name: String,
    },
    /// The queue belongs to another user, and the open asked for one of the caller's
    /// ([`OwnerCheck::SameUid`](crate::OwnerCheck::SameUid), the default).
    WrongOwner {
        /// The queue.
        name: String,
        /// The uid the open expected (the caller's effective uid).
        expected: u32,
        /// The uid that owns the queue.
        found: u32,
    },
    /// [`remove_stale`](crate::remove_stale) (or `replace_stale`) refused: a process still holds
    /// the queue's owner, so the queue is not stale.
    OwnerAlive {
        /// The queue.
        name: String,
    },
    /// `remove` was called on a handle that is not the queue's owner in this process (an
    /// opener, an adopted descriptor, a persisted owner, or one inherited across `fork`).
    /// Nothing was removed.
    NotOwner {
        /// The queue.
        name: String,
    },
    /// `open_or_create` (or `create` checking its new queue) found the queue removed again and
    /// again between its steps: another process keeps removing it.
    Contended {
        /// The queue.
        name: String,
        /// How many times it tried.
        attempts: u32,
    },
    /// A `_timeout` call's time ran out.
    TimedOut,
    /// A `try_` call (or a call on a nonblocking descriptor) would have had to wait.
    WouldBlock,
    /// The message is larger than the queue accepts; nothing was sent.
    MessageTooLarge {
        /// The message's length.
        len: usize,
        /// The largest message the queue accepts.
        max: usize,
    },
    /// The receive buffer cannot hold the message (POSIX: it must hold the queue's message
    /// size). The message stays in the queue.
    BufferTooSmall {
        /// The buffer's length.
        len: usize,
        /// The size needed, where the kernel tells it (POSIX: the queue's message size).
        needed: Option<usize>,
    },
    /// A request is over a kernel limit.
    LimitExceeded {
        /// Which limit.
        what: Limit,
        /// What was asked for (for [`Limit::QueuesMax`]: the limit plus one, the queue that did
        /// not fit).
        requested: u64,
        /// The limit's current value.
        limit: u64,
    },
    /// A POSIX priority at or above `MQ_PRIO_MAX` (32768 on Linux).
    InvalidPriority {
        /// The priority asked for.
        priority: u32,
    },
    /// A System V message type that is not positive (or does not fit a C `long`).
    InvalidMessageType {
        /// The type asked for.
        mtype: i64,
    },
    /// An invalid attribute (zero messages, zero message size, or a size the kernel cannot
    /// have given).
    InvalidAttributes,
    /// The queue was removed: a System V queue while this handle used it (also while a call
    /// waited); for `remove` on an owner, someone else removed its queue first (if the name
    /// exists, it is another queue, left alone).
    Removed {
        /// The queue.
        name: String,
    },
    /// A process (another one, or this one through any descriptor) is already registered for
    /// notification on this queue.
    NotifyBusy {
        /// The queue.
        name: String,
    },
    /// Not a signal [`MessageQueue::notify`](crate::MessageQueue::notify) can deliver: outside
    /// `1..=SIGRTMAX`, or one of the real-time signals glibc reserves (32, 33).
    InvalidSignal {
        /// The signal number asked for.
        signal: i32,
    },
    /// Any other I/O error.
    Io(io::Error),
}

/// How a queue's name reads in a sentence: `queue /jobs`, `System V queue key 0x49500001`.
fn queue(name: &str) -> String {
    if name.starts_with('/') || name.starts_with('(') {
        format!("queue {name}")
    } else {
        format!("System V queue {name}")
    }
}

/// At most 80 characters of a name given by the caller (an invalid one can be huge).
fn shorten(name: &str) -> String {
    const MAX: usize = 80;
    if name.len() <= MAX {
        return format!("{name:?}");
    }
    let mut end = MAX;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}... ({} bytes)", &name[..end], name.len())
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidName { name, reason } => {
                write!(f, "invalid queue name {}: {reason}", shorten(name))
            }
            Error::InvalidMode { mode } => write!(
                f,
                "mode {mode:#o} has bits outside 0o777: only permission bits may be given"
            ),
            Error::AlreadyExists { name } => write!(
                f,
                "{} exists already: open it (or use open_or_create), choose another name, or, \
                 if its creator died, remove it with remove_stale (or create with replace_stale())",
                queue(name)
            ),
            Error::NotFound { name } => write!(
                f,
                "{} does not exist: create it first (or use open_or_create), or check the name",
                queue(name)
            ),
            Error::PermissionDenied { name } => write!(
                f,
                "permission denied for {}: its mode (the creator's .mode(..)) does not allow \
                 this user that access",
                queue(name)
            ),
            Error::WrongOwner {
                name,
                expected,
                found,
            } => write!(
                f,
                "{} belongs to uid {found}, not to uid {expected}; to accept a queue of another \
                 user, open it with owner_check(OwnerCheck::AnyUid)",
                queue(name)
            ),
            Error::OwnerAlive { name } => write!(
                f,
                "{} is not stale: a process still holds its owner (the handle that created it); \
                 stop that process or drop its owner first",
                queue(name)
            ),
            Error::NotOwner { name } => write!(
                f,
                "this handle does not own {} (an opener, an adopted descriptor, a persisted \
                 owner, or one inherited across fork), so it removes nothing; remove it by name \
                 (unlink, sysv::remove) or with remove_stale",
                queue(name)
            ),
            Error::Contended { name, attempts } => write!(
                f,
                "{} was removed again and again while being opened or created ({attempts} \
                 attempts): another process keeps removing it",
                queue(name)
            ),
            Error::TimedOut => f.write_str("timed out"),
            Error::WouldBlock => f.write_str("the operation would block"),
            Error::MessageTooLarge { len, max } => write!(
                f,
                "message of {len} bytes is larger than the queue's maximum of {max} bytes"
            ),
            Error::BufferTooSmall {
                len,
                needed: Some(n),
            } => write!(
                f,
                "receive buffer of {len} bytes is too small: it needs {n} bytes (the queue's \
                 message size)"
            ),
            Error::BufferTooSmall { len, needed: None } => write!(
                f,
                "receive buffer of {len} bytes is too small for the next message (it stays in \
                 the queue; receive_vec sizes the buffer itself)"
            ),
            Error::LimitExceeded {
                what,
                requested,
                limit,
            } => write!(
                f,
                "{what} exceeded: asked for {requested}, the limit is {limit}; {}",
                what.how_to_raise()
            ),
            Error::InvalidPriority { priority } => write!(
                f,
                "priority {priority} is out of range (must be below {})",
                crate::MAX_PRIORITY + 1
            ),
            Error::InvalidMessageType { mtype } => {
                write!(f, "message type {mtype} is invalid: it must be positive")
            }
            Error::InvalidAttributes => f.write_str(
                "invalid attributes: message count and size must be positive (and what the \
                 kernel can report)",
            ),
            Error::Removed { name } => write!(f, "{} was removed", queue(name)),
            Error::NotifyBusy { name } => write!(
                f,
                "a process is already registered for notification on {}",
                queue(name)
            ),
            Error::InvalidSignal { signal } => write!(
                f,
                "signal {signal} cannot be used for queue notification (not a signal, or \
                 reserved by the C library)"
            ),
            Error::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// An I/O error without a queue to name: the errnos that mean the same for every call become
/// their variants, the rest stays [`Error::Io`].
impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        match e.raw_os_error() {
            Some(libc::ETIMEDOUT) => Error::TimedOut,
            Some(libc::EAGAIN) => Error::WouldBlock,
            _ => Error::Io(e),
        }
    }
}

impl Error {
    /// Translates a system call's error about the queue `name`.
    pub(crate) fn about(e: io::Error, name: &str) -> Error {
        let name = || name.to_owned();
        match e.raw_os_error() {
            Some(libc::EEXIST) => Error::AlreadyExists { name: name() },
            Some(libc::ENOENT) => Error::NotFound { name: name() },
            Some(libc::EACCES | libc::EPERM) => Error::PermissionDenied { name: name() },
            Some(libc::EIDRM) => Error::Removed { name: name() },
            Some(libc::ENAMETOOLONG) => Error::InvalidName {
                name: name(),
                reason: crate::name::TOO_LONG,
            },
            _ => Error::from(e),
        }
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        use io::ErrorKind as K;
        let kind = match &e {
            Error::Io(_) => {
                let Error::Io(inner) = e else { unreachable!() };
                return inner;
            }
            Error::InvalidName { .. }
            | Error::InvalidMode { .. }
            | Error::InvalidPriority { .. }
            | Error::InvalidMessageType { .. }
            | Error::InvalidAttributes
            | Error::InvalidSignal { .. }
            | Error::MessageTooLarge { .. }
            | Error::BufferTooSmall { .. } => K::InvalidInput,
            Error::AlreadyExists { .. } => K::AlreadyExists,
            Error::NotFound { .. } | Error::Removed { .. } => K::NotFound,
            Error::PermissionDenied { .. } | Error::WrongOwner { .. } | Error::NotOwner { .. } => {
                K::PermissionDenied
            }
            Error::TimedOut => K::TimedOut,
            Error::WouldBlock => K::WouldBlock,
            Error::LimitExceeded { .. } => K::QuotaExceeded,
            Error::NotifyBusy { .. } | Error::OwnerAlive { .. } | Error::Contended { .. } => {
                K::ResourceBusy
            }
        };
        io::Error::new(kind, e)
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
