//! System V message queues (`msgget`, `msgsnd`, `msgrcv`, `msgctl`).

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::limits::{sysv_msgmax, sysv_msgmni};
use crate::sys;

const HDR: usize = size_of::<libc::c_long>();
/// Scratch buffers up to this size are kept per thread for reuse (the default `kernel.msgmax`
/// plus the header); larger ones are allocated per call.
const KEEP: usize = 8192 + HDR;
/// Scratch buffers up to this size live on the stack (zeroing them costs less than a lookup).
const SMALL: usize = 256 + HDR;

thread_local! {
    /// Where `send` and `receive` stage a message with its type header, reused so that a call
    /// neither allocates nor zeroes a buffer.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` on a scratch buffer of exactly `len` bytes (contents unspecified).
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    if len <= SMALL {
        return f(&mut [0u8; SMALL][..len]);
    }
    if len > KEEP {
        return f(&mut vec![0; len]);
    }
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut v) => {
            if v.len() < len {
                v.resize(KEEP, 0);
            }
            f(&mut v[..len])
        }
        // Only reachable if `f` itself re-entered (it does not): fall back to a fresh buffer.
        Err(_) => f(&mut vec![0; len]),
    })
}

/// A System V IPC key: [`Key::PRIVATE`], a number both sides agree on, or [`Key::from_path`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key(libc::key_t);

impl Key {
    /// `IPC_PRIVATE`: a new queue that only its id reaches (pass the id to children).
    pub const PRIVATE: Key = Key(libc::IPC_PRIVATE);

    /// A key from a number (on Linux, 0 is [`Key::PRIVATE`]).
    pub const fn new(key: i32) -> Key {
        Key(key)
    }

    /// `ftok(path, proj_id)`—A key derived from an existing file's inode and a project byte.
    /// Different files can give the same key: create exclusively.
    ///
    /// # Errors
    /// [`Error::NotFound`] if `path` does not exist, [`Error::InvalidName`] if it holds a NUL.
    #[doc(alias = "ftok")]
    pub fn from_path(path: &Path, proj_id: u8) -> Result<Key> {
        let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::InvalidName)?;
        Ok(Key(sys::ftok(&c, proj_id)?))
    }

    /// The raw key.
    pub const fn as_raw(self) -> i32 {
        self.0
    }
}

/// A key from a number, as [`Key::new`]: `Key::from(0x4950_0001)`.
///
/// ```
/// use ipc_mq::Key;
/// assert_eq!(Key::from(42), Key::new(42));
/// assert_eq!(Key::from(0), Key::PRIVATE); // IPC_PRIVATE is 0
/// ```
impl From<i32> for Key {
    fn from(key: i32) -> Key {
        Key::new(key)
    }
}

/// Which message [`SysvQueue::receive`] takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Select {
    /// The first message in the queue (`msgtyp = 0`).
    Any,
    /// The first message of exactly this type (`msgtyp > 0`).
    Type(i64),
    /// The first message of the lowest type that is ≤ this (`msgtyp < 0`): types as priorities,
    /// lowest first.
    UpTo(i64),
}

impl Select {
    fn msgtyp(self) -> Result<i64> {
        match self {
            Select::Any => Ok(0),
            Select::Type(t) if t > 0 => Ok(t),
            Select::UpTo(t) if t > 0 => Ok(-t),
            Select::Type(t) | Select::UpTo(t) => Err(Error::InvalidMessageType { mtype: t }),
        }
    }
}

/// What `IPC_STAT` reports about a queue ([`SysvQueue::stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SysvStats {
    /// Messages in the queue (`msg_qnum`).
    pub messages: u64,
    /// Bytes of message text in the queue (`msg_cbytes`).
    pub bytes: u64,
    /// The most bytes the queue holds (`msg_qbytes`).
    pub max_bytes: u64,
    /// The pid of the last sender, 0 if none (`msg_lspid`).
    pub last_sender: u32,
    /// The pid of the last receiver, 0 if none (`msg_lrpid`).
    pub last_receiver: u32,
    /// The owner's uid.
    pub uid: u32,
    /// The permission bits.
    pub mode: u32,
}

/// A message buffer laid out as the kernel wants it (type, then text), for sending and
/// receiving without a copy: [`SysvQueue::send_message`], [`SysvQueue::receive_message`].
///
/// ```
/// let mut m = ipc_mq::SysvMessage::with_capacity(64);
/// m.set_mtype(7);
/// m.set_text(b"hello");
/// assert_eq!((m.mtype(), m.text()), (7, &b"hello"[..]));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SysvMessage {
    bytes: Vec<u8>,
    len: usize,
}

impl SysvMessage {
    /// An empty message of type 1 that can hold `capacity` bytes of text.
    pub fn with_capacity(capacity: usize) -> SysvMessage {
        let mut m = SysvMessage {
            bytes: vec![0; HDR.saturating_add(capacity)],
            len: 0,
        };
        m.set_mtype(1);
        m
    }

    /// The most text bytes it holds.
    pub fn capacity(&self) -> usize {
        self.bytes.len() - HDR
    }

    /// The message type.
    #[allow(clippy::useless_conversion)] // `c_long` is `i64` on 64-bit targets only.
    pub fn mtype(&self) -> i64 {
        let mut b = [0; HDR];
        b.copy_from_slice(&self.bytes[..HDR]);
        i64::from(libc::c_long::from_ne_bytes(b))
    }

    /// Sets the message type (must be positive to be sent).
    pub fn set_mtype(&mut self, mtype: i64) {
        let t = mtype as libc::c_long;
        self.bytes[..HDR].copy_from_slice(&t.to_ne_bytes());
    }

    /// The text.
    pub fn text(&self) -> &[u8] {
        &self.bytes[HDR..HDR + self.len]
    }

    /// The text, writable in place (its length is set with [`set_len`](Self::set_len)).
    pub fn text_mut(&mut self) -> &mut [u8] {
        &mut self.bytes[HDR..HDR + self.len]
    }

    /// Sets the text's length, growing the capacity if needed (new bytes are zero).
    pub fn set_len(&mut self, len: usize) {
        if len > self.capacity() {
            self.bytes.resize(HDR.saturating_add(len), 0);
        }
        self.len = len;
    }

    /// Replaces the text with a copy of `text`.
    pub fn set_text(&mut self, text: &[u8]) {
        self.set_len(text.len());
        self.text_mut().copy_from_slice(text);
    }
}

/// A System V message queue: the owner of a queue it created (removed with `IPC_RMID` when
/// dropped in the creating process), or an opener that removes nothing.
///
/// Each message carries a positive type, and a receiver picks by type ([`Select`]): one queue
/// can serve many clients, each reading only the replies addressed to it. Queues are not
/// descriptors: they cannot be polled, and the kernel offers no timed receive, only blocking and
/// [`try_`](Self::try_receive) forms (use a POSIX [`MessageQueue`](crate::MessageQueue) when you
/// need either). Removing a queue wakes every waiter with [`Error::Removed`].
///
/// ```
/// use ipc_mq::{Key, Select, SysvQueue};
/// let q = SysvQueue::create(Key::PRIVATE)?;
/// q.send(2, b"for two")?;
/// q.send(1, b"for one")?;
/// let mut buf = [0; 64];
/// let (n, t) = q.receive(&mut buf, Select::Type(1))?;
/// assert_eq!((&buf[..n], t), (&b"for one"[..], 1));
/// # Ok::<(), ipc_mq::Error>(())
/// ```
#[derive(Debug)]
pub struct SysvQueue {
    id: i32,
    msgmax: usize,
    owner: Option<u32>,
}

impl SysvQueue {
    /// `msgget(key, IPC_CREAT | IPC_EXCL | 0600)`—Creates a queue and returns its owner.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] if the key is taken (choose another),
    /// [`Error::LimitExceeded`] naming [`Limit::SysvMsgmni`](crate::Limit::SysvMsgmni) when
    /// `kernel.msgmni` queues exist already (`ENOSPC`).
    #[doc(alias = "msgget")]
    pub fn create(key: Key) -> Result<SysvQueue> {
        SysvQueue::create_with_mode(key, 0o600)
    }

    /// Creates a queue with the permission bits `mode` (System V modes ignore the umask).
    ///
    /// # Errors
    /// As [`create`](Self::create).
    pub fn create_with_mode(key: Key, mode: u32) -> Result<SysvQueue> {
        let flags = libc::IPC_CREAT | libc::IPC_EXCL | (mode & 0o777) as libc::c_int;
        let id = sys::msgget(key.0, flags).map_err(|e| match e.raw_os_error() {
            Some(libc::ENOSPC) => {
                let limit = sysv_msgmni();
                Error::LimitExceeded {
                    what: crate::Limit::SysvMsgmni,
                    requested: limit.saturating_add(1),
                    limit,
                }
            }
            _ => Error::from(e),
        })?;
        Ok(SysvQueue {
            id,
            msgmax: sysv_msgmax(),
            owner: Some(std::process::id()),
        })
    }

    /// `msgget(key, 0)`—Opens an existing queue; dropping it removes nothing.
    ///
    /// An `IPC_PRIVATE` queue has no key to be found by: pass its [`id`](Self::id) and use
    /// [`from_id`](Self::from_id). (`msgget(IPC_PRIVATE, 0)` would quietly *create* a new queue
    /// that nobody owns, so [`Key::PRIVATE`] is refused here without a system call.)
    ///
    /// # Errors
    /// [`Error::NotFound`] (also for [`Key::PRIVATE`]), [`Error::PermissionDenied`].
    #[doc(alias = "msgget")]
    pub fn open(key: Key) -> Result<SysvQueue> {
        if key == Key::PRIVATE {
            return Err(Error::NotFound);
        }
        let id = sys::msgget(key.0, 0)?;
        Ok(SysvQueue {
            id,
            msgmax: sysv_msgmax(),
            owner: None,
        })
    }

    /// Attaches to a queue by id (e.g. an `IPC_PRIVATE` queue's id passed to a child).
    ///
    /// # Errors
    /// [`Error::NotFound`] if no queue has that id, [`Error::PermissionDenied`].
    pub fn from_id(id: i32) -> Result<SysvQueue> {
        let q = SysvQueue {
            id,
            msgmax: sysv_msgmax(),
            owner: None,
        };
        q.stats()?;
        Ok(q)
    }

    /// The queue's id (`msqid`).
    pub fn id(&self) -> i32 {
        self.id
    }

    /// Whether this handle removes the queue when dropped.
    pub fn is_owner(&self) -> bool {
        self.owner == Some(std::process::id())
    }

    /// Keeps the queue after this handle is dropped (remove it later with
    /// [`remove_id`](Self::remove_id) or `ipcrm`).
    pub fn persist(&mut self) {
        self.owner = None;
    }

    /// `msgctl(IPC_RMID)`—Removes the queue now; its messages are discarded and waiting
    /// senders and receivers fail with [`Error::Removed`].
    ///
    /// # Errors
    /// [`Error::Removed`] if it is gone already, [`Error::PermissionDenied`].
    #[doc(alias = "msgctl")]
    pub fn remove(mut self) -> Result<()> {
        self.owner = None;
        SysvQueue::remove_id(self.id)
    }

    /// Removes the queue with id `id` (a stale one, say).
    ///
    /// # Errors
    /// [`Error::Removed`] if no such queue exists, [`Error::PermissionDenied`].
    pub fn remove_id(id: i32) -> Result<()> {
        sys::msgctl_rmid(id).map_err(map_err)
    }

    /// `msgctl(IPC_STAT)`—Message count, bytes, and the last sender and receiver.
    ///
    /// # Errors
    /// [`Error::Removed`] if the queue is gone, [`Error::PermissionDenied`].
    #[doc(alias = "msgctl")]
    pub fn stats(&self) -> Result<SysvStats> {
        let ds = sys::msgctl_stat(self.id).map_err(|e| match e.raw_os_error() {
            Some(libc::EINVAL) => Error::NotFound,
            _ => map_err(e),
        })?;
        Ok(SysvStats {
            messages: ds.msg_qnum,
            bytes: ds.__msg_cbytes,
            max_bytes: ds.msg_qbytes,
            last_sender: ds.msg_lspid as u32,
            last_receiver: ds.msg_lrpid as u32,
            uid: ds.msg_perm.uid,
            mode: u32::from(ds.msg_perm.mode) & 0o777,
        })
    }

    fn check(&self, mtype: i64, len: usize) -> Result<()> {
        if mtype <= 0 {
            return Err(Error::InvalidMessageType { mtype });
        }
        if len > self.msgmax {
            return Err(Error::MessageTooLarge {
                len,
                max: self.msgmax,
            });
        }
        Ok(())
    }

    fn snd(&self, raw: &[u8], flags: libc::c_int) -> Result<()> {
        loop {
            match sys::msgsnd(self.id, raw, flags) {
                Ok(()) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(map_err(e)),
            }
        }
    }

    fn send_flags(&self, mtype: i64, text: &[u8], flags: libc::c_int) -> Result<()> {
        self.check(mtype, text.len())?;
        let t = (mtype as libc::c_long).to_ne_bytes();
        with_scratch(HDR + text.len(), |raw| {
            raw[..HDR].copy_from_slice(&t);
            raw[HDR..].copy_from_slice(text);
            self.snd(raw, flags)
        })
    }

    /// `msgsnd`—Sends `text` with type `mtype` (> 0), waiting while the queue is full.
    ///
    /// # Errors
    /// [`Error::InvalidMessageType`], [`Error::MessageTooLarge`] over `kernel.msgmax` (checked
    /// first), [`Error::Removed`] if the queue is removed (also while waiting).
    #[doc(alias = "msgsnd")]
    pub fn send(&self, mtype: i64, text: &[u8]) -> Result<()> {
        self.send_flags(mtype, text, 0)
    }

    /// Sends if there is room now.
    ///
    /// # Errors
    /// [`Error::WouldBlock`] when the queue is full; otherwise as [`send`](Self::send).
    pub fn try_send(&self, mtype: i64, text: &[u8]) -> Result<()> {
        self.send_flags(mtype, text, libc::IPC_NOWAIT)
    }

    /// Sends a prepared [`SysvMessage`] without copying it.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub fn send_message(&self, msg: &SysvMessage) -> Result<()> {
        self.check(msg.mtype(), msg.len)?;
        self.snd(&msg.bytes[..HDR + msg.len], 0)
    }

    /// Sends a prepared [`SysvMessage`] if there is room now.
    ///
    /// # Errors
    /// As [`try_send`](Self::try_send).
    pub fn try_send_message(&self, msg: &SysvMessage) -> Result<()> {
        self.check(msg.mtype(), msg.len)?;
        self.snd(&msg.bytes[..HDR + msg.len], libc::IPC_NOWAIT)
    }

    fn rcv(&self, raw: &mut [u8], sel: Select, flags: libc::c_int) -> Result<usize> {
        let msgtyp = sel.msgtyp()?;
        loop {
            match sys::msgrcv(self.id, raw, msgtyp, flags) {
                Ok(n) => return Ok(n),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) if e.raw_os_error() == Some(libc::E2BIG) => {
                    return Err(Error::BufferTooSmall {
                        len: raw.len() - HDR,
                        needed: None,
                    });
                }
                Err(e) => return Err(map_err(e)),
            }
        }
    }

    #[allow(clippy::useless_conversion)] // `c_long` is `i64` on 64-bit targets only.
    fn receive_flags(
        &self,
        buf: &mut [u8],
        sel: Select,
        flags: libc::c_int,
    ) -> Result<(usize, i64)> {
        with_scratch(HDR.saturating_add(buf.len()), |raw| {
            let n = self.rcv(raw, sel, flags)?;
            let mut t = [0; HDR];
            t.copy_from_slice(&raw[..HDR]);
            buf[..n].copy_from_slice(&raw[HDR..HDR + n]);
            Ok((n, i64::from(libc::c_long::from_ne_bytes(t))))
        })
    }

    /// `msgrcv`—Receives the message `sel` picks into `buf`, waiting until there is one;
    /// returns its length and type.
    ///
    /// # Errors
    /// [`Error::BufferTooSmall`] if the message is longer than `buf` (it stays in the queue),
    /// [`Error::InvalidMessageType`] for a non-positive type in `sel`, [`Error::Removed`] if
    /// the queue is removed (also while waiting).
    #[doc(alias = "msgrcv")]
    pub fn receive(&self, buf: &mut [u8], sel: Select) -> Result<(usize, i64)> {
        self.receive_flags(buf, sel, 0)
    }

    /// Receives if a matching message is waiting now.
    ///
    /// # Errors
    /// [`Error::WouldBlock`] when there is none; otherwise as [`receive`](Self::receive).
    pub fn try_receive(&self, buf: &mut [u8], sel: Select) -> Result<(usize, i64)> {
        self.receive_flags(buf, sel, libc::IPC_NOWAIT)
    }

    /// Receives into a new `Vec` large enough for any message (`kernel.msgmax`).
    ///
    /// # Errors
    /// As [`receive`](Self::receive).
    pub fn receive_vec(&self, sel: Select) -> Result<(Vec<u8>, i64)> {
        let mut m = SysvMessage::with_capacity(self.msgmax);
        self.receive_message(&mut m, sel)?;
        let t = m.mtype();
        m.bytes.truncate(HDR + m.len);
        m.bytes.drain(..HDR);
        Ok((m.bytes, t))
    }

    /// Receives into a new `Vec` if a matching message is waiting now.
    ///
    /// # Errors
    /// As [`try_receive`](Self::try_receive).
    pub fn try_receive_vec(&self, sel: Select) -> Result<(Vec<u8>, i64)> {
        let mut m = SysvMessage::with_capacity(self.msgmax);
        self.try_receive_message(&mut m, sel)?;
        let t = m.mtype();
        m.bytes.truncate(HDR + m.len);
        m.bytes.drain(..HDR);
        Ok((m.bytes, t))
    }

    /// Receives into `msg` (up to its capacity) without copying.
    ///
    /// # Errors
    /// As [`receive`](Self::receive).
    pub fn receive_message(&self, msg: &mut SysvMessage, sel: Select) -> Result<()> {
        let cap = msg.bytes.len();
        msg.len = self.rcv(&mut msg.bytes[..cap], sel, 0)?;
        Ok(())
    }

    /// Receives into `msg` if a matching message is waiting now.
    ///
    /// # Errors
    /// As [`try_receive`](Self::try_receive).
    pub fn try_receive_message(&self, msg: &mut SysvMessage, sel: Select) -> Result<()> {
        let cap = msg.bytes.len();
        msg.len = self.rcv(&mut msg.bytes[..cap], sel, libc::IPC_NOWAIT)?;
        Ok(())
    }
}

impl Drop for SysvQueue {
    fn drop(&mut self) {
        if self.is_owner() {
            let _ = sys::msgctl_rmid(self.id);
        }
    }
}

fn map_err(e: io::Error) -> Error {
    match e.raw_os_error() {
        // msgrcv with IPC_NOWAIT and nothing to take.
        Some(libc::ENOMSG) => Error::WouldBlock,
        // The id no longer names a queue: removed (and the type and size were checked first).
        Some(libc::EIDRM | libc::EINVAL) => Error::Removed,
        _ => Error::from(e),
    }
}
