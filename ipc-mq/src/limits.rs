//! The kernel's message-queue limits, read where the kernel publishes them.

use std::fs;

use crate::error::{Error, Limit, Result};

/// The POSIX message-queue limits that apply to this process, read from
/// `/proc/sys/fs/mqueue/*` (of the caller's IPC namespace) and `getrlimit(RLIMIT_MSGQUEUE)`.
///
/// ```
/// let l = ipc_mq::Limits::read()?;
/// assert!(l.msg_max >= 1 && l.msgsize_max >= 128);
/// # Ok::<(), ipc_mq::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limits {
    /// `msg_max`: the most messages a queue may hold (unprivileged callers).
    pub msg_max: u64,
    /// `msgsize_max`: the largest message size of a queue (unprivileged callers).
    pub msgsize_max: u64,
    /// `queues_max`: the most queues in the IPC namespace (unprivileged callers).
    pub queues_max: u64,
    /// `msg_default`: the message count of a queue created without attributes.
    pub msg_default: u64,
    /// `msgsize_default`: the message size of a queue created without attributes.
    pub msgsize_default: u64,
    /// The soft `RLIMIT_MSGQUEUE`: the bytes all queues of this user may reserve (`u64::MAX`:
    /// unlimited).
    pub rlimit_msgqueue: u64,
}

fn read_u64(file: &str) -> Result<u64> {
    let path = format!("/proc/sys/fs/mqueue/{file}");
    let text = fs::read_to_string(&path)?;
    text.trim().parse().map_err(|_| {
        Error::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{path}: not a number: {text:?}"),
        ))
    })
}

impl Limits {
    /// Reads the limits now (they can change at any time).
    ///
    /// # Errors
    /// [`Error::Io`] if `/proc/sys/fs/mqueue` cannot be read.
    pub fn read() -> Result<Limits> {
        let rl = rustix::process::getrlimit(rustix::process::Resource::Msgqueue);
        Ok(Limits {
            msg_max: read_u64("msg_max")?,
            msgsize_max: read_u64("msgsize_max")?,
            queues_max: read_u64("queues_max")?,
            msg_default: read_u64("msg_default")?,
            msgsize_default: read_u64("msgsize_default")?,
            rlimit_msgqueue: rl.current.unwrap_or(u64::MAX),
        })
    }

    /// The bytes the kernel charges against `RLIMIT_MSGQUEUE` for a queue of `max_messages`
    /// messages of `message_size` bytes (Linux ≥ 3.5, 64-bit: 48 bytes of bookkeeping per
    /// message plus 48 per priority level in use, at most `max_messages` of them, plus the payload).
    pub const fn queue_bytes(max_messages: u64, message_size: u64) -> u64 {
        const MSG_MSG: u64 = 48;
        const TREE_NODE: u64 = 48;
        const PRIO_MAX: u64 = 32768;
        let levels = if max_messages < PRIO_MAX {
            max_messages
        } else {
            PRIO_MAX
        };
        max_messages
            .saturating_mul(MSG_MSG)
            .saturating_add(levels.saturating_mul(TREE_NODE))
            .saturating_add(max_messages.saturating_mul(message_size))
    }

    /// Checks a queue of `max_messages` × `message_size` against `msg_max`, `msgsize_max` and
    /// the `RLIMIT_MSGQUEUE` budget (the bytes of this one queue; queues the user has already
    /// are the kernel's to count).
    ///
    /// # Errors
    /// [`Error::LimitExceeded`] naming the first limit exceeded.
    pub fn check(&self, max_messages: u64, message_size: u64) -> Result<()> {
        if max_messages > self.msg_max {
            return Err(Error::LimitExceeded {
                what: Limit::MsgMax,
                requested: max_messages,
                limit: self.msg_max,
            });
        }
        if message_size > self.msgsize_max {
            return Err(Error::LimitExceeded {
                what: Limit::MsgsizeMax,
                requested: message_size,
                limit: self.msgsize_max,
            });
        }
        let bytes = Limits::queue_bytes(max_messages, message_size);
        if bytes > self.rlimit_msgqueue {
            return Err(Error::LimitExceeded {
                what: Limit::RlimitMsgqueue,
                requested: bytes,
                limit: self.rlimit_msgqueue,
            });
        }
        Ok(())
    }
}

fn kernel_value(file: &str, default: u64) -> u64 {
    fs::read_to_string(format!("/proc/sys/kernel/{file}"))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(default)
}

/// `/proc/sys/kernel/msgmax`: the largest System V message (8192 by default).
pub(crate) fn sysv_msgmax() -> usize {
    usize::try_from(kernel_value("msgmax", 8192)).unwrap_or(usize::MAX)
}

/// `/proc/sys/kernel/msgmni`: the most System V queues (32000 by default).
pub(crate) fn sysv_msgmni() -> u64 {
    kernel_value("msgmni", 32000)
}
