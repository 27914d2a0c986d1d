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
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The POSIX name is not `/` followed by 1..=255 bytes without `/` or NUL (nor `.`, `..`).
    /// No system call was made.
    InvalidName,
    /// A queue with that name or key exists already (exclusive create).
    AlreadyExists,
    /// No queue with that name, key or id exists.
    NotFound,
    /// The caller may not open or change the queue.
    PermissionDenied,
    /// The queue is owned by another user and the open asked for one of ours.
    NotOwner {
        /// The uid that owns the queue.
        uid: u32,
    },
    /// A `_timeout` call's time ran out.
    TimedOut,
    /// A `try_` call (or a call on a nonblocking queue) would have had to wait.
    WouldBlock,
    /// The message is larger than the queue accepts; nothing was sent.
    MessageTooLarge {
        /// The message's length.
        len: usize,
        /// The largest message the queue accepts.
        max: usize,
    },
    /// The receive buffer cannot hold the message (POSIX: it must hold the queue's message size).
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
    /// A System V message type that is not positive.
    InvalidMessageType {
        /// The type asked for.
        mtype: i64,
    },
    /// An invalid attribute (zero messages, zero message size, ...).
    InvalidAttributes,
    /// The System V queue was removed (also: while this call waited).
    Removed,
    /// A process (another one, or this one through any descriptor) is already registered for
    /// notification on this queue.
    NotifyBusy,
    /// Not a signal [`MessageQueue::notify`](crate::MessageQueue::notify) can deliver: outside
    /// `1..=SIGRTMAX`, or one of the real-time signals glibc reserves (32, 33).
    InvalidSignal {
        /// The signal number asked for.
        signal: i32,
    },
    /// Any other I/O error.
    Io(io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidName => f.write_str(
                "invalid queue name: it must be `/` followed by 1 to 255 bytes without `/` or NUL",
            ),
            Error::AlreadyExists => f.write_str("the queue exists already"),
            Error::NotFound => f.write_str("no such queue"),
            Error::PermissionDenied => f.write_str("permission denied"),
            Error::NotOwner { uid } => write!(f, "the queue is owned by uid {uid}, not by us"),
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
                "receive buffer of {len} bytes is too small: it needs {n} bytes"
            ),
            Error::BufferTooSmall { len, needed: None } => write!(
                f,
                "receive buffer of {len} bytes is too small for the next message"
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
            Error::InvalidAttributes => {
                f.write_str("invalid attributes: message count and size must be positive")
            }
            Error::Removed => f.write_str("the queue was removed"),
            Error::NotifyBusy => {
                f.write_str("a process is already registered for notification on this queue")
            }
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

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        match e.raw_os_error() {
            Some(libc::EEXIST) => Error::AlreadyExists,
            Some(libc::ENOENT) => Error::NotFound,
            Some(libc::EACCES | libc::EPERM) => Error::PermissionDenied,
            Some(libc::ETIMEDOUT) => Error::TimedOut,
            Some(libc::EAGAIN) => Error::WouldBlock,
            Some(libc::EIDRM) => Error::Removed,
            _ => Error::Io(e),
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
            Error::InvalidName
            | Error::InvalidPriority { .. }
            | Error::InvalidMessageType { .. }
            | Error::InvalidAttributes
            | Error::InvalidSignal { .. }
            | Error::MessageTooLarge { .. }
            | Error::BufferTooSmall { .. } => K::InvalidInput,
            Error::AlreadyExists => K::AlreadyExists,
            Error::NotFound | Error::Removed => K::NotFound,
            Error::PermissionDenied | Error::NotOwner { .. } => K::PermissionDenied,
            Error::TimedOut => K::TimedOut,
            Error::WouldBlock => K::WouldBlock,
            Error::LimitExceeded { .. } => K::QuotaExceeded,
            Error::NotifyBusy => K::ResourceBusy,
        };
        io::Error::new(kind, e)
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
