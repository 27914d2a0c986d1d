//! System V message queues (`msgget`, `msgsnd`, `msgrcv`, `msgctl`): [`SysvQueue`], its
//! options, [`Key`], and the clean-up functions [`remove`] (by id) and [`remove_stale`] (by key,
//! only if the owner is gone).
//!
//! # Owners and the companion file
//! A System V queue is not a file, so its owner's liveness lives in a *companion file*,
//! `/dev/shm/ipc-sysv-msg-{id}.owner` (mode 0600), made right after the queue and removed with
//! it. The owner holds an open-file-description read lock on its byte
//! [`OWNER_LOCK`](crate::OWNER_LOCK) for as long as it lives; [`remove_stale`] asks
//! `F_OFD_GETLK` whether anyone holds it. A companion file that is not a regular file owned by
//! the queue's creator is not this queue's and is ignored. The file also proves identity: an
//! owner removes its queue (by id) only while the companion file at its path is still the one it
//! made, so an owner whose queue was removed by someone else, its id then reused by a new queue,
//! leaves the new queue alone.
//!
//! The companion path is per id, and ids are per IPC namespace: processes in different IPC
//! namespaces that share `/dev/shm` can meet at the same path (each replaces the other's file,
//! and an owner whose file was replaced then leaves its queue behind when dropped).

use std::ffi::CString;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustix::fs::{Mode, OFlags};

use crate::error::{Error, Result};
use crate::lifetime::{self, ATTEMPTS, LockKind, OnDrop, Opened, OwnerCheck};
use crate::limits::{sysv_msgmax, sysv_msgmni};
use crate::sys::{self, HDR};

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
    /// [`Error::NotFound`] if `path` does not exist, [`Error::InvalidName`] if it holds a NUL,
    /// is longer than `PATH_MAX` or has a component longer than `NAME_MAX` (checked before the
    /// call).
    #[doc(alias = "ftok")]
    pub fn from_path(path: &Path, proj_id: u8) -> Result<Key> {
        let bytes = path.as_os_str().as_bytes();
        let label = || path.display().to_string();
        let invalid = |reason| Error::InvalidName {
            name: label(),
            reason,
        };
        if bytes.len() >= libc::PATH_MAX as usize {
            return Err(invalid("the path is longer than PATH_MAX (4095 bytes)"));
        }
        if bytes
            .split(|&b| b == b'/')
            .any(|c| c.len() > crate::NAME_MAX)
        {
            return Err(invalid("a component of the path is longer than 255 bytes"));
        }
        let c = CString::new(bytes).map_err(|_| invalid("the path contains a NUL byte"))?;
        Ok(Key(
            sys::ftok(&c, proj_id).map_err(|e| Error::about(e, &label()))?
        ))
    }

    /// The raw key.
    pub const fn as_raw(self) -> i32 {
        self.0
    }
}

/// `key 0x49500001`, or `key IPC_PRIVATE`: how errors name a queue by its key.
impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Key::PRIVATE {
            f.write_str("key IPC_PRIVATE")
        } else {
            write!(f, "key {:#010x}", self.0 as u32)
        }
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

fn id_label(id: i32) -> String {
    format!("id {id}")
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
    fn msgtyp(self) -> Result<libc::c_long> {
        let t = match self {
            Select::Any => return Ok(0),
            Select::Type(t) | Select::UpTo(t) if t > 0 => t,
            Select::Type(t) | Select::UpTo(t) => {
                return Err(Error::InvalidMessageType { mtype: t });
            }
        };
        let t = libc::c_long::try_from(t).map_err(|_| Error::InvalidMessageType { mtype: t })?;
        Ok(if matches!(self, Select::UpTo(_)) {
            -t
        } else {
            t
        })
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
    /// The type header, then `capacity` text bytes.
    bytes: Vec<u8>,
    /// The text's length (`<= capacity`).
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

/// Where the owner of queue `id` keeps its lock.
fn companion_path(id: i32) -> PathBuf {
    PathBuf::from(format!("/dev/shm/ipc-sysv-msg-{id}.owner"))
}

/// Whether `path` (not followed if a symlink) is the file `fd` refers to.
fn same_file(path: &Path, fd: impl AsFd) -> bool {
    let Ok(st) = rustix::fs::lstat(path) else {
        return false;
    };
    lifetime::identity(fd).is_ok_and(|id| id == (st.st_dev, st.st_ino))
}

/// Removes the companion file at `path` if it is the one `fd` refers to.
fn remove_companion(path: &Path, fd: impl AsFd) {
    if same_file(path, fd) {
        let _ = rustix::fs::unlink(path);
    }
}

/// Makes (or reclaims) the companion file of a queue just created with id `id` and takes its
/// owner lock through the returned descriptor.
fn make_companion(id: i32, name: &str) -> Result<OwnedFd> {
    let path = companion_path(id);
    let err = |e: rustix::io::Errno| {
        Error::Io(io::Error::new(
            io::Error::from(e).kind(),
            format!(
                "{name}: cannot make its owner file {}: {}",
                path.display(),
                io::Error::from(e)
            ),
        ))
    };
    let create = OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::RDWR;
    for _ in 0..ATTEMPTS {
        let fd = match rustix::fs::open(&path, create, Mode::from_raw_mode(0o600)) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::EXIST) => {
                // Left by the dead owner of an earlier queue with this id: reuse it if it is a
                // regular file of ours whose lock is free; anything else is replaced.
                if let Some(fd) = reclaim(&path) {
                    fd
                } else {
                    match rustix::fs::unlink(&path) {
                        Ok(()) | Err(rustix::io::Errno::NOENT) => continue,
                        Err(e) => return Err(err(e)),
                    }
                }
            }
            Err(e) => return Err(err(e)),
        };
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o600)).map_err(err)?;
        match lifetime::lock(&fd, LockKind::Read) {
            Ok(()) => return Ok(fd),
            // Someone took a lock on it in between: make a new one.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) => {
                remove_companion(&path, &fd);
            }
            Err(e) => {
                remove_companion(&path, &fd);
                return Err(Error::about(e, name));
            }
        }
    }
    Err(Error::Contended {
        name: name.to_owned(),
        attempts: ATTEMPTS,
    })
}

/// An existing companion file at `path`, if it may be reused: a regular file of this euid whose
/// owner lock nobody holds.
fn reclaim(path: &Path) -> Option<OwnedFd> {
    let flags = OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::RDWR | OFlags::NONBLOCK;
    let fd = rustix::fs::open(path, flags, Mode::empty()).ok()?;
    let st = rustix::fs::fstat(&fd).ok()?;
    let regular =
        rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile;
    let ours = st.st_uid == rustix::process::geteuid().as_raw();
    (regular && ours && !lifetime::held(&fd).ok()?).then_some(fd)
}

/// The owner lock of queue `id`, if there is a companion file that counts: a regular file of
/// the queue's creator (`cuid`). `None`: no such file.
fn companion_of(id: i32, cuid: u32) -> Option<OwnedFd> {
    let flags = OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::RDONLY | OFlags::NONBLOCK;
    let fd = rustix::fs::open(companion_path(id), flags, Mode::empty()).ok()?;
    let st = rustix::fs::fstat(&fd).ok()?;
    let regular =
        rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile;
    (regular && st.st_uid == cuid).then_some(fd)
}

/// What `IPC_STAT` (or, without read permission, `/proc/sysvipc/msg`) says of queue `id`:
/// `(uid, cuid)`. `Ok(None)`: no such queue.
fn owners(id: i32) -> io::Result<Option<(u32, u32)>> {
    match sys::msgctl_stat(id) {
        Ok(ds) => Ok(Some((ds.msg_perm.uid, ds.msg_perm.cuid))),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EIDRM)) => Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => owners_from_proc(id),
        Err(e) => Err(e),
    }
}

/// `(uid, cuid)` of queue `id` from `/proc/sysvipc/msg` (readable without the queue's read
/// permission): columns `key msqid perms cbytes qnum lspid lrpid uid gid cuid ...`.
fn owners_from_proc(id: i32) -> io::Result<Option<(u32, u32)>> {
    let text = std::fs::read_to_string("/proc/sysvipc/msg")?;
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() > 9 && cols[1].parse() == Ok(id) {
            let uid = cols[7].parse().map_err(|_| io::ErrorKind::InvalidData)?;
            let cuid = cols[9].parse().map_err(|_| io::ErrorKind::InvalidData)?;
            return Ok(Some((uid, cuid)));
        }
    }
    Ok(None)
}

/// Options for creating or opening a [`SysvQueue`]: `SysvQueue::options()`.
///
/// ```
/// use ipc_mq::{Key, OnDrop, SysvQueue};
/// let q = SysvQueue::options().mode(0o600).on_drop(OnDrop::Remove).create(Key::PRIVATE)?;
/// assert!(q.is_owner());
/// # Ok::<(), ipc_mq::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SysvQueueOptions {
    mode: u32,
    owner_check: OwnerCheck,
    on_drop: OnDrop,
    replace_stale: bool,
}

impl Default for SysvQueueOptions {
    fn default() -> SysvQueueOptions {
        SysvQueueOptions::new()
    }
}

impl SysvQueueOptions {
    /// Defaults: mode 0600, [`OwnerCheck::SameUid`], [`OnDrop::Remove`], no stale replacement.
    pub const fn new() -> SysvQueueOptions {
        SysvQueueOptions {
            mode: 0o600,
            owner_check: OwnerCheck::SameUid,
            on_drop: OnDrop::Remove,
            replace_stale: false,
        }
    }

    /// The permission bits of a new queue (default 0600; System V ignores the umask, so they
    /// are exact). Bits outside `0o777` make `create` fail with [`Error::InvalidMode`] before
    /// any system call.
    pub const fn mode(mut self, mode: u32) -> SysvQueueOptions {
        self.mode = mode;
        self
    }

    /// Whose queues `open` accepts, by `msg_perm.uid` (default [`OwnerCheck::SameUid`]).
    pub const fn owner_check(mut self, check: OwnerCheck) -> SysvQueueOptions {
        self.owner_check = check;
        self
    }

    /// What dropping the owner does (default [`OnDrop::Remove`]).
    pub const fn on_drop(mut self, on_drop: OnDrop) -> SysvQueueOptions {
        self.on_drop = on_drop;
        self
    }

    /// Have `create` first remove a stale queue at the key (as [`remove_stale`]).
    pub const fn replace_stale(mut self) -> SysvQueueOptions {
        self.replace_stale = true;
        self
    }

    /// `msgget(key, IPC_CREAT | IPC_EXCL | mode)`—Creates a queue and returns its owner, which
    /// holds the owner lock of the queue's companion file and removes both when dropped in the
    /// creating process (unless [`OnDrop::Keep`]).
    ///
    /// # Errors
    /// [`Error::InvalidMode`] (no system call made), [`Error::AlreadyExists`] if the key is
    /// taken (choose another), [`Error::LimitExceeded`] naming
    /// [`Limit::SysvMsgmni`](crate::Limit::SysvMsgmni) when `kernel.msgmni` queues exist
    /// already (`ENOSPC`), [`Error::Io`] if the companion file cannot be made (nothing is left
    /// behind); with [`replace_stale`](Self::replace_stale), [`Error::OwnerAlive`].
    #[doc(alias = "msgget")]
    pub fn create(&self, key: Key) -> Result<SysvQueue> {
        self.check()?;
        if self.replace_stale && key != Key::PRIVATE {
            match remove_stale(key) {
                Ok(()) | Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        self.create_inner(key)
    }

    fn check(&self) -> Result<()> {
        if self.mode & !0o777 != 0 {
            return Err(Error::InvalidMode { mode: self.mode });
        }
        Ok(())
    }

    fn create_inner(&self, key: Key) -> Result<SysvQueue> {
        let flags = libc::IPC_CREAT | libc::IPC_EXCL | self.mode as libc::c_int;
        for _ in 0..ATTEMPTS {
            let id = sys::msgget(key.0, flags).map_err(|e| match e.raw_os_error() {
                Some(libc::ENOSPC) => {
                    let limit = sysv_msgmni();
                    Error::LimitExceeded {
                        what: crate::Limit::SysvMsgmni,
                        requested: limit.saturating_add(1),
                        limit,
                    }
                }
                _ => Error::about(e, &key.to_string()),
            })?;
            let companion = match make_companion(id, &id_label(id)) {
                Ok(fd) => fd,
                Err(e) => {
                    let _ = sys::msgctl_rmid(id);
                    return Err(e);
                }
            };
            let q = SysvQueue {
                id,
                key,
                msgmax: AtomicUsize::new(sysv_msgmax()),
                owner: Some(SysvOwner {
                    pid: std::process::id(),
                    on_drop: OnDrop::Remove,
                    companion,
                }),
            };
            // A `remove_stale` that looked before the lock was taken may have removed the new
            // queue: then it is not ours to return, and we try again.
            match sys::msgctl_stat(id) {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EIDRM)) => {
                    continue; // `q`'s drop removes its companion file
                }
                Err(e) if e.raw_os_error() == Some(libc::EACCES) => {} // mode without read
                Err(e) => return Err(Error::about(e, &id_label(id))),
            }
            let mut q = q;
            if let Some(o) = &mut q.owner {
                o.on_drop = self.on_drop;
            }
            return Ok(q);
        }
        Err(Error::Contended {
            name: key.to_string(),
            attempts: ATTEMPTS,
        })
    }

    /// `msgget(key, 0)`—Opens an existing queue; dropping it removes nothing. The owner is
    /// checked ([`owner_check`](Self::owner_check)).
    ///
    /// An `IPC_PRIVATE` queue has no key to be found by: pass its [`id`](SysvQueue::id) and use
    /// [`open_id`](Self::open_id). (`msgget(IPC_PRIVATE, 0)` would quietly *create* a new queue
    /// that nobody owns, so [`Key::PRIVATE`] is refused here without a system call.)
    ///
    /// # Errors
    /// [`Error::NotFound`] (also for [`Key::PRIVATE`]), [`Error::WrongOwner`] (unless
    /// [`OwnerCheck::AnyUid`]).
    #[doc(alias = "msgget")]
    pub fn open(&self, key: Key) -> Result<SysvQueue> {
        if key == Key::PRIVATE {
            return Err(Error::NotFound {
                name: key.to_string(),
            });
        }
        let id = sys::msgget(key.0, 0).map_err(|e| Error::about(e, &key.to_string()))?;
        self.attach(id, key, key.to_string())
    }

    /// Attaches to a queue by id (e.g. an `IPC_PRIVATE` queue's id passed to a child),
    /// checking its owner as [`open`](Self::open) does.
    ///
    /// # Errors
    /// [`Error::NotFound`] if no queue has that id, [`Error::WrongOwner`].
    pub fn open_id(&self, id: i32) -> Result<SysvQueue> {
        self.attach(id, Key::PRIVATE, id_label(id))
    }

    fn attach(&self, id: i32, key: Key, name: String) -> Result<SysvQueue> {
        let Some((uid, _)) = owners(id).map_err(|e| Error::about(e, &name))? else {
            return Err(Error::NotFound { name });
        };
        let me = rustix::process::geteuid().as_raw();
        if self.owner_check == OwnerCheck::SameUid && uid != me {
            return Err(Error::WrongOwner {
                name,
                expected: me,
                found: uid,
            });
        }
        Ok(SysvQueue {
            id,
            key,
            msgmax: AtomicUsize::new(sysv_msgmax()),
            owner: None,
        })
    }

    /// Opens the queue at `key` if it exists, else creates it (for [`Key::PRIVATE`]: always
    /// creates). A queue removed between the two steps is tried again a few times. With
    /// [`replace_stale`](Self::replace_stale), a stale queue is removed first and a live one is
    /// opened.
    ///
    /// # Errors
    /// As [`create`](Self::create) and [`open`](Self::open); [`Error::Contended`].
    pub fn open_or_create(&self, key: Key) -> Result<(SysvQueue, Opened)> {
        self.check()?;
        if key == Key::PRIVATE {
            return Ok((self.create_inner(key)?, Opened::Created));
        }
        if self.replace_stale {
            match remove_stale(key) {
                Ok(()) | Err(Error::NotFound { .. } | Error::OwnerAlive { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        for _ in 0..ATTEMPTS {
            match self.create_inner(key) {
                Ok(q) => return Ok((q, Opened::Created)),
                Err(Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
            match self.open(key) {
                Ok(q) => return Ok((q, Opened::Existing)),
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Err(Error::Contended {
            name: key.to_string(),
            attempts: ATTEMPTS,
        })
    }
}

/// `msgctl(id, IPC_RMID)`—Removes the queue with id `id` (a stale one, say) and its companion
/// file, whoever owns it: its messages are discarded, waiting senders and receivers fail with
/// [`Error::Removed`]. To remove only a queue whose owner is gone, use [`remove_stale`].
///
/// # Errors
/// [`Error::NotFound`] if no queue has that id, [`Error::PermissionDenied`] (only the creator,
/// the owner or a privileged process may remove a queue).
#[doc(alias = "msgctl")]
pub fn remove(id: i32) -> Result<()> {
    sys::msgctl_rmid(id).map_err(|e| match e.raw_os_error() {
        Some(libc::EINVAL | libc::EIDRM) => Error::NotFound { name: id_label(id) },
        _ => Error::about(e, &id_label(id)),
    })?;
    let path = companion_path(id);
    if rustix::fs::lstat(&path).is_ok_and(|st| {
        rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile
    }) {
        let _ = rustix::fs::unlink(&path);
    }
    Ok(())
}

/// Removes the queue at `key` only if it is stale: no process holds its owner (the creator
/// exited, was killed, is a zombie, or dropped it with [`OnDrop::Keep`] or after
/// [`persist`](SysvQueue::persist)). Queues made by programs that do not use this crate have no
/// companion file and count as stale. The companion file goes with the queue.
///
/// # Errors
/// [`Error::NotFound`] (also for [`Key::PRIVATE`], which names no queue),
/// [`Error::OwnerAlive`], [`Error::PermissionDenied`].
pub fn remove_stale(key: Key) -> Result<()> {
    let name = key.to_string();
    if key == Key::PRIVATE {
        return Err(Error::NotFound { name });
    }
    let id = sys::msgget(key.0, 0).map_err(|e| Error::about(e, &name))?;
    let Some((_, cuid)) = owners(id).map_err(|e| Error::about(e, &name))? else {
        return Err(Error::NotFound { name });
    };
    let companion = companion_of(id, cuid);
    if let Some(fd) = &companion {
        if lifetime::held_long(fd).map_err(|e| Error::about(e, &name))? {
            return Err(Error::OwnerAlive { name });
        }
    }
    sys::msgctl_rmid(id).map_err(|e| match e.raw_os_error() {
        Some(libc::EINVAL | libc::EIDRM) => Error::NotFound { name: name.clone() },
        _ => Error::about(e, &name),
    })?;
    if let Some(fd) = companion {
        remove_companion(&companion_path(id), fd);
    }
    Ok(())
}

/// The creator's claim on its queue.
#[derive(Debug)]
struct SysvOwner {
    /// The creating process: in any other (a forked child) the handle owns nothing.
    pid: u32,
    on_drop: OnDrop,
    /// The companion file, owner-locked through this descriptor.
    companion: OwnedFd,
}

/// When a blocking call gives up.
#[derive(Clone, Copy)]
enum Wait {
    Forever,
    Now,
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

/// The longest nap between two tries of a timed System V call.
const MAX_NAP: Duration = Duration::from_millis(5);

/// A System V message queue: the owner of a queue it created (removed with `IPC_RMID` when
/// dropped in the creating process, unless [`OnDrop::Keep`]), or an opener that removes
/// nothing.
///
/// Each message carries a positive type, and a receiver picks by type ([`Select`]): one queue
/// can serve many clients, each reading only the replies addressed to it. Removing a queue
/// wakes every waiter with [`Error::Removed`].
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
///
/// # Waiting
/// Queues are not descriptors: they cannot be polled, and the kernel has no timed `msgsnd` or
/// `msgrcv`. The blocking forms wait in the kernel (retried after signals); the `_timeout`
/// forms try without waiting (`IPC_NOWAIT`) and nap between tries, 50 µs growing to at most
/// 5 ms, until a deadline on the monotonic clock: a message that arrives during such a wait is
/// taken up to 5 ms late. Use a POSIX [`MessageQueue`](crate::MessageQueue) for prompt timed
/// waits or `poll`. A blocking send of a message that could never fit (longer than the queue's
/// `msg_qbytes`) fails with [`Error::MessageTooLarge`] instead of waiting forever.
///
/// # After `fork`
/// In a child forked from a multi-threaded process, every method of an existing handle may be
/// called: the sends and receives (into a buffer or a [`SysvMessage`]) are each one or a few
/// system calls with their staging buffer on the stack; `receive_vec`, errors and the timed
/// forms' check of `kernel.msgmax` allocate, which glibc's `malloc` allows after `fork`.
/// Dropping the handle closes the companion file's descriptor and removes nothing; an inherited
/// owner is not an owner there, but its descriptor keeps the owner lock held until the child
/// closes it too.
#[derive(Debug)]
pub struct SysvQueue {
    id: i32,
    key: Key,
    /// `kernel.msgmax` as last read (refreshed when a message seems too large).
    msgmax: AtomicUsize,
    owner: Option<SysvOwner>,
}

impl SysvQueue {
    /// Options for [`create`](SysvQueueOptions::create), [`open`](SysvQueueOptions::open) or
    /// [`open_or_create`](SysvQueueOptions::open_or_create).
    pub const fn options() -> SysvQueueOptions {
        SysvQueueOptions::new()
    }

    /// Creates a queue with the default options: `SysvQueue::options().create(key)`.
    ///
    /// # Errors
    /// As [`SysvQueueOptions::create`].
    #[doc(alias = "msgget")]
    pub fn create(key: Key) -> Result<SysvQueue> {
        SysvQueueOptions::new().create(key)
    }

    /// Opens an existing queue with the default options: `SysvQueue::options().open(key)`.
    ///
    /// # Errors
    /// As [`SysvQueueOptions::open`].
    #[doc(alias = "msgget")]
    pub fn open(key: Key) -> Result<SysvQueue> {
        SysvQueueOptions::new().open(key)
    }

    /// Opens the queue at `key`, or creates it, with the default options.
    ///
    /// # Errors
    /// As [`SysvQueueOptions::open_or_create`].
    pub fn open_or_create(key: Key) -> Result<(SysvQueue, Opened)> {
        SysvQueueOptions::new().open_or_create(key)
    }

    /// Attaches to a queue by id with the default options: `SysvQueue::options().open_id(id)`.
    ///
    /// # Errors
    /// As [`SysvQueueOptions::open_id`].
    pub fn from_id(id: i32) -> Result<SysvQueue> {
        SysvQueueOptions::new().open_id(id)
    }

    /// The queue's id (`msqid`).
    pub fn id(&self) -> i32 {
        self.id
    }

    /// The key it was created or opened by ([`Key::PRIVATE`] for one attached by id).
    pub fn key(&self) -> Key {
        self.key
    }

    fn label(&self) -> String {
        id_label(self.id)
    }

    /// Whether this handle is the queue's owner: the handle `create` returned, in the process
    /// that created it (a forked child's copy is not; a [persisted](Self::persist) or
    /// [`OnDrop::Keep`] owner is, until it is dropped).
    pub fn is_owner(&self) -> bool {
        self.owner
            .as_ref()
            .is_some_and(|o| o.pid == std::process::id())
    }

    /// Keeps the queue after this owner is dropped, as [`OnDrop::Keep`] at create would have.
    /// The handle stays the owner — the lock of its companion file held, so [`remove_stale`]
    /// refuses while it lives — until it is dropped; then the queue is ownerless. Nothing
    /// happens on a handle that is not the owner.
    pub fn persist(&mut self) {
        if let Some(o) = &mut self.owner {
            o.on_drop = OnDrop::Keep;
        }
    }

    /// Whether the queue this owner created still has our id: its companion file is the one we
    /// made.
    fn still_ours(&self, o: &SysvOwner) -> bool {
        same_file(&companion_path(self.id), &o.companion)
    }

    /// `msgctl(IPC_RMID)`—Removes the queue now (and its companion file); its messages are
    /// discarded and waiting senders and receivers fail with [`Error::Removed`].
    ///
    /// # Errors
    /// [`Error::NotOwner`] for a handle that is not the owner (use [`remove`] by id);
    /// [`Error::Removed`] if it is gone already; [`Error::PermissionDenied`].
    #[doc(alias = "msgctl")]
    pub fn remove(mut self) -> Result<()> {
        if !self.is_owner() {
            return Err(Error::NotOwner { name: self.label() });
        }
        let Some(o) = self.owner.take() else {
            return Err(Error::NotOwner { name: self.label() });
        };
        if !self.still_ours(&o) {
            return Err(Error::Removed { name: self.label() });
        }
        let r = sys::msgctl_rmid(self.id).map_err(|e| self.map_err(e));
        remove_companion(&companion_path(self.id), &o.companion);
        r
    }

    /// `msgctl(IPC_STAT)`—Message count, bytes, and the last sender and receiver.
    ///
    /// # Errors
    /// [`Error::Removed`] if the queue is gone, [`Error::PermissionDenied`] without read
    /// permission.
    #[doc(alias = "msgctl")]
    pub fn stats(&self) -> Result<SysvStats> {
        let ds = sys::msgctl_stat(self.id).map_err(|e| self.map_err(e))?;
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

    fn map_err(&self, e: io::Error) -> Error {
        match e.raw_os_error() {
            // msgrcv with IPC_NOWAIT and nothing to take.
            Some(libc::ENOMSG) => Error::WouldBlock,
            // The id no longer names a queue: removed (types and sizes are checked first).
            Some(libc::EIDRM | libc::EINVAL) => Error::Removed { name: self.label() },
            _ => Error::about(e, &self.label()),
        }
    }

    /// Checks a message to send: a positive type that fits a C `long`, a length within
    /// `kernel.msgmax` (read again before refusing, in case it was raised).
    fn check(&self, mtype: i64, len: usize) -> Result<libc::c_long> {
        let t = libc::c_long::try_from(mtype)
            .ok()
            .filter(|&t| t > 0)
            .ok_or(Error::InvalidMessageType { mtype })?;
        if len > self.msgmax.load(Ordering::Relaxed) {
            let now = sysv_msgmax();
            self.msgmax.store(now, Ordering::Relaxed);
            if len > now {
                return Err(Error::MessageTooLarge { len, max: now });
            }
        }
        Ok(t)
    }

    /// A send the kernel refused with `EINVAL` though the queue may exist: `kernel.msgmax` was
    /// lowered below `len`, or the queue is gone.
    fn send_error(&self, e: io::Error, len: usize) -> Error {
        if e.raw_os_error() == Some(libc::EINVAL) && sys::msgctl_stat(self.id).is_ok() {
            let now = sysv_msgmax();
            self.msgmax.store(now, Ordering::Relaxed);
            if len > now {
                return Error::MessageTooLarge { len, max: now };
            }
        }
        self.map_err(e)
    }

    /// Refuses a message that can never fit the queue (`msg_qbytes`), which a blocking send
    /// would wait for forever. Without read permission the size is unknown and not checked.
    fn check_fits(&self, len: usize) -> Result<()> {
        if let Ok(ds) = sys::msgctl_stat(self.id) {
            let max = usize::try_from(ds.msg_qbytes).unwrap_or(usize::MAX);
            if len > max {
                return Err(Error::MessageTooLarge { len, max });
            }
        }
        Ok(())
    }

    /// Runs one `msgsnd` attempt (`flags` given) as `wait` says.
    fn send_until(
        &self,
        len: usize,
        wait: Wait,
        mut attempt: impl FnMut(libc::c_int) -> io::Result<()>,
    ) -> Result<()> {
        let mut nap = Duration::from_micros(50);
        let mut checked = false;
        loop {
            match attempt(libc::IPC_NOWAIT) {
                Ok(()) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {}
                Err(e) => return Err(self.send_error(e, len)),
            }
            // Full. A message longer than the whole queue would wait forever.
            if !checked {
                self.check_fits(len)?;
                checked = true;
            }
            match wait {
                Wait::Now => return Err(Error::WouldBlock),
                Wait::Forever => loop {
                    match attempt(0) {
                        Ok(()) => return Ok(()),
                        Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                        Err(e) => return Err(self.send_error(e, len)),
                    }
                },
                Wait::Until(t) => {
                    let left = t.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Error::TimedOut);
                    }
                    std::thread::sleep(nap.min(left));
                    nap = (nap * 2).min(MAX_NAP);
                }
            }
        }
    }

    fn send_text(&self, mtype: i64, text: &[u8], wait: Wait) -> Result<()> {
        let t = self.check(mtype, text.len())?;
        self.send_until(text.len(), wait, |flags| {
            sys::msgsnd_parts(self.id, t, text, flags)
        })
    }

    fn send_msg(&self, msg: &SysvMessage, wait: Wait) -> Result<()> {
        self.check(msg.mtype(), msg.len)?;
        let raw = &msg.bytes[..HDR + msg.len];
        self.send_until(msg.len, wait, |flags| sys::msgsnd(self.id, raw, flags))
    }

    /// `msgsnd`—Sends `text` with type `mtype` (> 0), waiting while the queue is full.
    ///
    /// # Errors
    /// [`Error::InvalidMessageType`], [`Error::MessageTooLarge`] over `kernel.msgmax` (checked
    /// first) or over the queue's capacity, [`Error::Removed`] if the queue is removed (also
    /// while waiting), [`Error::PermissionDenied`].
    #[doc(alias = "msgsnd")]
    pub fn send(&self, mtype: i64, text: &[u8]) -> Result<()> {
        self.send_text(mtype, text, Wait::Forever)
    }

    /// Sends if there is room now.
    ///
    /// # Errors
    /// [`Error::WouldBlock`] when the queue is full; otherwise as [`send`](Self::send).
    pub fn try_send(&self, mtype: i64, text: &[u8]) -> Result<()> {
        self.send_text(mtype, text, Wait::Now)
    }

    /// Sends, waiting at most `timeout` for room (`Duration::MAX`: forever; `Duration::ZERO`:
    /// not at all); see [Waiting](Self#waiting).
    ///
    /// # Errors
    /// [`Error::TimedOut`]; otherwise as [`send`](Self::send).
    pub fn send_timeout(&self, mtype: i64, text: &[u8], timeout: Duration) -> Result<()> {
        zero_is_timed_out(timeout, self.send_text(mtype, text, deadline(timeout)))
    }

    /// Sends a prepared [`SysvMessage`] without copying it.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub fn send_message(&self, msg: &SysvMessage) -> Result<()> {
        self.send_msg(msg, Wait::Forever)
    }

    /// Sends a prepared [`SysvMessage`] if there is room now.
    ///
    /// # Errors
    /// As [`try_send`](Self::try_send).
    pub fn try_send_message(&self, msg: &SysvMessage) -> Result<()> {
        self.send_msg(msg, Wait::Now)
    }

    /// Sends a prepared [`SysvMessage`], waiting at most `timeout` for room.
    ///
    /// # Errors
    /// As [`send_timeout`](Self::send_timeout).
    pub fn send_message_timeout(&self, msg: &SysvMessage, timeout: Duration) -> Result<()> {
        zero_is_timed_out(timeout, self.send_msg(msg, deadline(timeout)))
    }

    /// Runs `attempt` (one `msgrcv` with the flags given) as `wait` says.
    fn receive_until<T>(
        &self,
        wait: Wait,
        mut attempt: impl FnMut(libc::c_int) -> Result<T>,
    ) -> Result<T> {
        let mut nap = Duration::from_micros(50);
        loop {
            let flags = match wait {
                Wait::Forever => 0,
                Wait::Now | Wait::Until(_) => libc::IPC_NOWAIT,
            };
            match (attempt(flags), wait) {
                (Err(Error::WouldBlock), Wait::Until(t)) => {
                    let left = t.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Error::TimedOut);
                    }
                    std::thread::sleep(nap.min(left));
                    nap = (nap * 2).min(MAX_NAP);
                }
                (r, _) => return r,
            }
        }
    }

    /// One `msgrcv` of the message `msgtyp` selects into `raw` (type header, then text).
    fn rcv(&self, raw: &mut [u8], msgtyp: libc::c_long, flags: libc::c_int) -> Result<usize> {
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
                Err(e) => return Err(self.map_err(e)),
            }
        }
    }

    /// One `msgrcv` into `buf` (text only) → (length, type).
    #[allow(clippy::useless_conversion)] // `c_long` is `i64` on 64-bit targets only.
    fn rcv_into(
        &self,
        buf: &mut [u8],
        msgtyp: libc::c_long,
        flags: libc::c_int,
    ) -> Result<(usize, i64)> {
        loop {
            // Small buffers: staged on the stack.
            match sys::msgrcv_small(self.id, buf, msgtyp, flags) {
                Some(Ok((n, t))) => return Ok((n, i64::from(t))),
                Some(Err(e)) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Some(Err(e)) if e.raw_os_error() == Some(libc::E2BIG) => {
                    return Err(Error::BufferTooSmall {
                        len: buf.len(),
                        needed: None,
                    });
                }
                Some(Err(e)) => return Err(self.map_err(e)),
                None => break,
            }
        }
        // Large buffers: the kernel writes type and text into `buf` itself, the text is moved
        // down over the type; a message longer than `buf.len() - HDR` (but maybe not than
        // `buf.len()`) is received through a buffer of exactly `HDR + buf.len()` bytes.
        match self.rcv(buf, msgtyp, flags) {
            Ok(n) => {
                let mut t = [0; HDR];
                t.copy_from_slice(&buf[..HDR]);
                buf.copy_within(HDR..HDR + n, 0);
                Ok((n, i64::from(libc::c_long::from_ne_bytes(t))))
            }
            Err(Error::BufferTooSmall { .. }) => {
                let mut raw = vec![0; HDR.saturating_add(buf.len())];
                let n = self.rcv(&mut raw, msgtyp, flags)?;
                let mut t = [0; HDR];
                t.copy_from_slice(&raw[..HDR]);
                buf[..n].copy_from_slice(&raw[HDR..HDR + n]);
                Ok((n, i64::from(libc::c_long::from_ne_bytes(t))))
            }
            Err(e) => Err(e),
        }
    }

    /// `msgrcv`—Receives the message `sel` picks into `buf`, waiting until there is one;
    /// returns its length and type.
    ///
    /// # Errors
    /// [`Error::BufferTooSmall`] if the message is longer than `buf` (it stays in the queue),
    /// [`Error::InvalidMessageType`] for a non-positive type in `sel`, [`Error::Removed`] if
    /// the queue is removed (also while waiting), [`Error::PermissionDenied`].
    #[doc(alias = "msgrcv")]
    pub fn receive(&self, buf: &mut [u8], sel: Select) -> Result<(usize, i64)> {
        let t = sel.msgtyp()?;
        self.receive_until(Wait::Forever, |f| self.rcv_into(buf, t, f))
    }

    /// Receives if a matching message is waiting now.
    ///
    /// # Errors
    /// [`Error::WouldBlock`] when there is none; otherwise as [`receive`](Self::receive).
    pub fn try_receive(&self, buf: &mut [u8], sel: Select) -> Result<(usize, i64)> {
        let t = sel.msgtyp()?;
        self.receive_until(Wait::Now, |f| self.rcv_into(buf, t, f))
    }

    /// Receives, waiting at most `timeout` for a matching message; see
    /// [Waiting](Self#waiting).
    ///
    /// # Errors
    /// [`Error::TimedOut`]; otherwise as [`receive`](Self::receive).
    pub fn receive_timeout(
        &self,
        buf: &mut [u8],
        sel: Select,
        timeout: Duration,
    ) -> Result<(usize, i64)> {
        let t = sel.msgtyp()?;
        let r = self.receive_until(deadline(timeout), |f| self.rcv_into(buf, t, f));
        zero_is_timed_out(timeout, r)
    }

    /// Receives into `msg` (up to its capacity) without copying.
    fn receive_message_until(&self, msg: &mut SysvMessage, sel: Select, wait: Wait) -> Result<()> {
        let t = sel.msgtyp()?;
        let n = self.receive_until(wait, |f| self.rcv(&mut msg.bytes, t, f))?;
        msg.len = n;
        Ok(())
    }

    /// Receives into `msg` (up to its capacity) without copying.
    ///
    /// # Errors
    /// As [`receive`](Self::receive).
    pub fn receive_message(&self, msg: &mut SysvMessage, sel: Select) -> Result<()> {
        self.receive_message_until(msg, sel, Wait::Forever)
    }

    /// Receives into `msg` if a matching message is waiting now.
    ///
    /// # Errors
    /// As [`try_receive`](Self::try_receive).
    pub fn try_receive_message(&self, msg: &mut SysvMessage, sel: Select) -> Result<()> {
        self.receive_message_until(msg, sel, Wait::Now)
    }

    /// Receives into `msg`, waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`receive_timeout`](Self::receive_timeout).
    pub fn receive_message_timeout(
        &self,
        msg: &mut SysvMessage,
        sel: Select,
        timeout: Duration,
    ) -> Result<()> {
        zero_is_timed_out(
            timeout,
            self.receive_message_until(msg, sel, deadline(timeout)),
        )
    }

    fn receive_vec_until(&self, sel: Select, wait: Wait) -> Result<(Vec<u8>, i64)> {
        // Start from `kernel.msgmax` (at most 1 MiB) and double while the message is longer:
        // a message may be longer than today's msgmax if it was sent before msgmax was lowered.
        let mut cap = self.msgmax.load(Ordering::Relaxed).clamp(1, 1 << 20);
        loop {
            let mut m = SysvMessage::with_capacity(cap);
            match self.receive_message_until(&mut m, sel, wait) {
                Ok(()) => {
                    let t = m.mtype();
                    m.bytes.truncate(HDR + m.len);
                    m.bytes.drain(..HDR);
                    return Ok((m.bytes, t));
                }
                Err(Error::BufferTooSmall { .. }) => {
                    cap = cap
                        .checked_mul(2)
                        .filter(|&c| c <= isize::MAX as usize - HDR)
                        .ok_or(Error::BufferTooSmall {
                            len: cap,
                            needed: None,
                        })?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Receives into a new `Vec` of the message's length, whatever it is.
    ///
    /// # Errors
    /// As [`receive`](Self::receive), without `BufferTooSmall`.
    pub fn receive_vec(&self, sel: Select) -> Result<(Vec<u8>, i64)> {
        self.receive_vec_until(sel, Wait::Forever)
    }

    /// Receives into a new `Vec` if a matching message is waiting now.
    ///
    /// # Errors
    /// As [`try_receive`](Self::try_receive), without `BufferTooSmall`.
    pub fn try_receive_vec(&self, sel: Select) -> Result<(Vec<u8>, i64)> {
        self.receive_vec_until(sel, Wait::Now)
    }

    /// Receives into a new `Vec`, waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`receive_timeout`](Self::receive_timeout), without `BufferTooSmall`.
    pub fn receive_vec_timeout(&self, sel: Select, timeout: Duration) -> Result<(Vec<u8>, i64)> {
        zero_is_timed_out(timeout, self.receive_vec_until(sel, deadline(timeout)))
    }
}

/// `_timeout(Duration::ZERO)` that would block has timed out (a `try_` would block).
fn zero_is_timed_out<T>(timeout: Duration, r: Result<T>) -> Result<T> {
    match r {
        Err(Error::WouldBlock) if timeout.is_zero() => Err(Error::TimedOut),
        r => r,
    }
}

impl Drop for SysvQueue {
    fn drop(&mut self) {
        let Some(o) = self.owner.take() else { return };
        // Only in the creating process (a forked child's copy just closes its descriptor of
        // the companion file), only if asked, and only the queue this handle created.
        if o.pid != std::process::id() || o.on_drop != OnDrop::Remove {
            return;
        }
        if self.still_ours(&o) {
            let _ = sys::msgctl_rmid(self.id);
            remove_companion(&companion_path(self.id), &o.companion);
        }
    }
}
