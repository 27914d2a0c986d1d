//! System V shared memory: `shmget`, `shmat`, `shmdt`, `shmctl(IPC_RMID)`, and the lifetime
//! model for it: the owner's liveness lock lives on a companion file
//! `/dev/shm/ipc-sysv-shm-{id}.owner`, made right after the segment and removed with it.
//!
//! This module holds [`Key`], [`remove`] and [`remove_stale`]; [`SysvShm`] and
//! [`SysvShmOptions`] are re-exported at the crate root too.

use std::ffi::CString;
use std::fmt;
use std::ops::Deref;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::owner::{
    self, FileId, OPEN_OR_CREATE_ATTEMPTS, OnDrop, Opened, OwnerCheck, Unlinked, unlink_if_ours,
};
use crate::posix::{Access, Pages, check_mode};
use crate::region::{Region, Segment};
use crate::size::{Size, check_size};
use crate::sys::{self, Map, SHM_DEST};

/// A System V IPC key: [`Key::PRIVATE`], a number both sides agree on, or [`Key::from_path`].
///
/// Every function that takes a key takes `impl Into<Key>`, so a plain `i32` works too.
///
/// ```
/// use ipc_shm::sysv::Key;
/// assert_eq!(Key::new(0x4950_0001).as_raw(), 0x4950_0001);
/// assert_eq!(Key::from(7), Key::new(7));
/// let k = Key::from_path(std::path::Path::new("/"), b'S')?; // ftok(3)
/// assert_ne!(k, Key::PRIVATE);
/// # Ok::<(), ipc_shm::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key(libc::key_t);

impl Key {
    /// `IPC_PRIVATE`: a new segment that only its id reaches (pass the id to children and
    /// [`SysvShm::attach`] it there); it cannot be [`open`](SysvShm::open)ed by key.
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
        let shown = path.display().to_string();
        let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::InvalidName {
            name: shown.clone(),
            reason: "a NUL byte",
        })?;
        Ok(Key(
            sys::ftok(&c, proj_id).map_err(|e| Error::at_io(&shown, e))?
        ))
    }

    /// The raw key.
    pub const fn as_raw(self) -> i32 {
        self.0
    }
}

/// ```
/// use ipc_shm::Key;
/// assert_eq!(Key::from(42), Key::new(42));
/// assert_eq!(Key::from(0), Key::PRIVATE); // IPC_PRIVATE is 0
/// ```
impl From<i32> for Key {
    fn from(key: i32) -> Key {
        Key(key)
    }
}

/// `key 0x4950abcd`, or `key IPC_PRIVATE`: how errors name a segment by its key.
impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Key::PRIVATE {
            f.write_str("key IPC_PRIVATE")
        } else {
            write!(f, "key {:#010x}", self.0 as u32)
        }
    }
}

/// How errors name a segment by id.
fn id_name(id: i32) -> String {
    format!("id {id}")
}

/// The companion file of segment `id`: the file its owner's liveness lock lives on.
fn companion_path(id: i32) -> String {
    format!("/dev/shm/ipc-sysv-shm-{id}.owner")
}

/// An owner's companion file: its descriptor (holding the owner lock, and pinning the inode),
/// identity and path.
#[derive(Debug)]
struct Companion {
    /// Holds the owner lock (and pins the inode) for as long as it is open.
    _fd: OwnedFd,
    id: FileId,
    path: String,
}

impl Companion {
    /// Makes (or reuses) the companion of segment `id` and takes the owner lock on it.
    ///
    /// The file is created with `O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC|O_RDWR`, mode 0600 set with
    /// `fchmod`. One already there (left by the dead owner of an earlier segment with this id)
    /// is reused only if it is a regular file of ours whose lock is free; anything else there is
    /// replaced (unlinked, then created anew). A directory there cannot be replaced: an error.
    fn make(seg: i32) -> std::result::Result<Companion, Errno> {
        let path = companion_path(seg);
        for _ in 0..4 {
            match rustix::fs::open(
                &path,
                OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::RDWR,
                Mode::from_raw_mode(0o600),
            ) {
                Ok(fd) => return Companion::lock(fd, path),
                Err(Errno::EXIST) => {}
                Err(e) => return Err(e),
            }
            if let Some(fd) = Companion::reusable(&path) {
                match Companion::lock(fd, path.clone()) {
                    Ok(c) => return Ok(c),
                    Err(Errno::AGAIN | Errno::ACCESS) => {} // locked meanwhile: replace it
                    Err(e) => return Err(e),
                }
            }
            match rustix::fs::unlink(&path) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(e),
            }
        }
        Err(Errno::EXIST)
    }

    /// An existing companion that may be reused: a regular file of ours, lock free.
    fn reusable(path: &str) -> Option<OwnedFd> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDWR | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok()?;
        let st = rustix::fs::fstat(&fd).ok()?;
        let ours = FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
            && st.st_uid == rustix::process::geteuid().as_raw();
        (ours && !owner::owner_alive(&fd).unwrap_or(true)).then_some(fd)
    }

    /// Sets mode 0600, takes the lock, and checks the path still names this file (a prober may
    /// have removed a stale companion we were reusing).
    fn lock(fd: OwnedFd, path: String) -> std::result::Result<Companion, Errno> {
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o600))?;
        let id = FileId::of(fd.as_fd())?;
        let undo = |e: Errno| {
            let _ = unlink_if_ours(&path, id);
            e
        };
        owner::hold(&fd).map_err(undo)?;
        if FileId::at(&path)? != Some(id) {
            return Err(Errno::AGAIN);
        }
        Ok(Companion { _fd: fd, id, path })
    }

    /// Removes the companion if its path still names it.
    fn unlink(&self) -> std::result::Result<Unlinked, Errno> {
        unlink_if_ours(&self.path, self.id)
    }
}

/// The owner's part of a [`SysvShm`]: who created it, its companion, what to do on drop.
#[derive(Debug)]
struct SysvOwner {
    pid: u32,
    seg: i32,
    on_drop: OnDrop,
    companion: Companion,
}

impl SysvOwner {
    fn is_owner(&self) -> bool {
        self.pid == std::process::id()
    }
}

impl Drop for SysvOwner {
    fn drop(&mut self) {
        if !self.is_owner() || self.on_drop == OnDrop::Keep {
            return; // a forked child's copy, or kept: remove nothing (closing the companion
            // descriptor releases the lock only once no process holds the description)
        }
        // By id, while still attached: the id cannot name another segment yet.
        let _ = sys::shm_rmid(self.seg);
        let _ = self.companion.unlink();
    }
}

/// Options for creating, opening or attaching a System V segment; see [`SysvShm::options`].
///
/// After fork: the options are plain values (copying them is fine anywhere), but the
/// terminals (`create`, `open`, ...) allocate and make system calls that are not
/// async-signal-safe: not for a child forked from a multi-threaded parent before it execs.
///
/// ```
/// use ipc_shm::{Access, Key, OnDrop, SysvShm};
/// let seg = SysvShm::options().size(8192).mode(0o600).on_drop(OnDrop::Remove).create(Key::PRIVATE)?;
/// let ro = SysvShm::options().max_size(1 << 20).access(Access::ReadOnly).attach(seg.id())?;
/// assert_eq!(ro.len(), 8192);
/// # Ok::<(), ipc_shm::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SysvShmOptions {
    size: Option<u64>,
    max_size: Option<u64>,
    mode: u32,
    access: Access,
    owner_check: OwnerCheck,
    on_drop: OnDrop,
    replace_stale: bool,
    pages: Pages,
}

impl Default for SysvShmOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// How many times `create` makes a new segment when a prober removed the first one in the
/// instant before its companion existed.
const CREATE_ATTEMPTS: u32 = 3;

impl SysvShmOptions {
    /// Defaults: no size, mode 0600, read-write, our own segments only, removed on drop, no
    /// stale replacement, normal pages.
    pub const fn new() -> SysvShmOptions {
        SysvShmOptions {
            size: None,
            max_size: None,
            mode: 0o600,
            access: Access::ReadWrite,
            owner_check: OwnerCheck::SameUid,
            on_drop: OnDrop::Remove,
            replace_stale: false,
            pages: Pages::Normal,
        }
    }

    /// The size in bytes: required to create; when opening or attaching, the exact size.
    pub const fn size(mut self, bytes: u64) -> Self {
        self.size = Some(bytes);
        self
    }

    /// When opening or attaching without [`size`](Self::size): the largest size accepted.
    pub const fn max_size(mut self, bytes: u64) -> Self {
        self.max_size = Some(bytes);
        self
    }

    /// Permission bits for create (default 0600), given to `shmget` exactly (System V applies
    /// no umask). Bits outside `0o777` are [`Error::InvalidMode`] before any system call.
    pub const fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// Read-write (default) or read-only (`SHM_RDONLY`) attachment when opening or attaching.
    pub const fn access(mut self, access: Access) -> Self {
        self.access = access;
        self
    }

    /// Whose segments `open` and `attach` accept (`shm_perm.uid`): ours only (default) or
    /// anyone's.
    pub const fn owner_check(mut self, check: OwnerCheck) -> Self {
        self.owner_check = check;
        self
    }

    /// What the owner does with the segment when dropped: remove it (default) or keep it.
    pub const fn on_drop(mut self, on_drop: OnDrop) -> Self {
        self.on_drop = on_drop;
        self
    }

    /// `create` first removes a stale segment at the key (its owner dead, as
    /// [`remove_stale`]), then creates; a live owner's segment is [`Error::OwnerAlive`].
    pub const fn replace_stale(mut self) -> Self {
        self.replace_stale = true;
        self
    }

    /// [`Pages::Huge`] creates the segment with `SHM_HUGETLB`.
    pub const fn pages(mut self, pages: Pages) -> Self {
        self.pages = pages;
        self
    }

    fn open_size(&self) -> Result<Size> {
        match (self.size, self.max_size) {
            (Some(n), _) => Size::Exact(n).check(),
            (None, Some(n)) => Size::AtMost(n).check(),
            (None, None) => Err(Error::SizeRequired),
        }
    }

    /// `shmget(key, size, IPC_CREAT|IPC_EXCL|mode)` + companion + `shmat`—Creates a segment
    /// exclusively, makes its companion file and takes the owner lock there, and attaches it
    /// read-write. Returns the owner. With [`Key::PRIVATE`] the segment is reachable only
    /// through its [`id`](SysvShm::id). New segments read as zeros.
    ///
    /// Mode and size are checked before any system call; on any later failure the segment and
    /// the companion are removed again.
    ///
    /// # Errors
    /// [`Error::InvalidMode`], [`Error::InvalidSize`], [`Error::SizeRequired`],
    /// [`Error::AlreadyExists`], [`Error::OwnerAlive`] (with
    /// [`replace_stale`](Self::replace_stale)), [`Error::LimitExceeded`] (`EINVAL` beyond
    /// `/proc/sys/kernel/shmmax`, `ENOSPC` beyond `shmmni`/`shmall`, `ENOMEM`),
    /// [`Error::HugePagesUnavailable`], [`Error::PermissionDenied`].
    #[doc(alias = "shmget")]
    pub fn create(&self, key: impl Into<Key>) -> Result<SysvShm> {
        let key = key.into();
        check_mode(self.mode)?;
        let size = self.size.ok_or(Error::SizeRequired)?;
        let len = check_size(size)?;
        if self.replace_stale && key != Key::PRIVATE {
            match remove_stale(key) {
                Ok(()) | Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let huge = self.pages == Pages::Huge;
        let mut flags = libc::IPC_CREAT | libc::IPC_EXCL | self.mode as i32;
        if huge {
            flags |= libc::SHM_HUGETLB;
        }
        for _ in 0..CREATE_ATTEMPTS {
            let seg =
                sys::shmget(key.0, len, flags).map_err(|e| match Errno::from_io_error(&e) {
                    Some(Errno::EXIST) => Error::AlreadyExists {
                        name: key.to_string(),
                    },
                    Some(Errno::INVAL) => Error::LimitExceeded {
                        what: "segment size (/proc/sys/kernel/shmmax)",
                        requested: size,
                        limit: read_proc("/proc/sys/kernel/shmmax"),
                    },
                    Some(Errno::NOSPC) => Error::LimitExceeded {
                        what: "segments (/proc/sys/kernel/shmmni) or pages (shmall)",
                        requested: size,
                        limit: read_proc("/proc/sys/kernel/shmmni"),
                    },
                    Some(Errno::NOMEM | Errno::PERM) if huge => Error::HugePagesUnavailable,
                    Some(Errno::NOMEM) => Error::LimitExceeded {
                        what: "memory for the segment (shmget: ENOMEM)",
                        requested: size,
                        limit: 0,
                    },
                    _ => Error::at_io(&key.to_string(), e),
                })?;
            match self.finish_create(key, seg, size) {
                Ok(s) => return Ok(s),
                Err(None) => {} // removed under us before its companion existed
                Err(Some(e)) => return Err(e),
            }
        }
        Err(Error::Contended {
            name: key.to_string(),
            attempts: CREATE_ATTEMPTS,
        })
    }

    /// Companion, lock, attach, verify. `Err(None)`: the segment was removed by someone else
    /// before we held it (try again with a new one).
    fn finish_create(
        &self,
        key: Key,
        seg: i32,
        size: u64,
    ) -> std::result::Result<SysvShm, Option<Error>> {
        let name = if key == Key::PRIVATE {
            id_name(seg)
        } else {
            key.to_string()
        };
        let companion = match Companion::make(seg) {
            Ok(c) => c,
            Err(e) => {
                let _ = sys::shm_rmid(seg);
                return Err(Some(Error::at(&companion_path(seg), e)));
            }
        };
        let undo = |companion: &Companion| {
            let _ = sys::shm_rmid(seg);
            let _ = companion.unlink();
        };
        let (map, st) = match Map::shm_attach(seg, true) {
            Ok(m) => m,
            Err(e) => {
                undo(&companion);
                return match Errno::from_io_error(&e) {
                    Some(Errno::INVAL | Errno::IDRM) => Err(None),
                    _ => Err(Some(Error::at_io(&name, e))),
                };
            }
        };
        if st.mode & SHM_DEST != 0 || st.size != size {
            // Removed (and its key freed) by a prober in the instant before the companion
            // existed, or not the segment we made: let it go and make another.
            undo(&companion);
            return Err(None);
        }
        Ok(SysvShm {
            owner: Some(SysvOwner {
                pid: std::process::id(),
                seg,
                on_drop: self.on_drop,
                companion,
            }),
            region: Region::new(map),
            id: seg,
            key,
            name,
        })
    }

    /// `shmget(key, 0, 0)` + `shmat`—Attaches the existing segment with `key`, after checking
    /// its owner ([`owner_check`](Self::owner_check)) and its size ([`size`](Self::size) or
    /// [`max_size`](Self::max_size), one of them required). Returns an opener.
    ///
    /// # Errors
    /// [`Error::SizeRequired`], [`Error::NotFound`] (also for [`Key::PRIVATE`], which names no
    /// existing segment: attach those by id), [`Error::WrongOwner`], [`Error::SizeMismatch`],
    /// [`Error::PermissionDenied`].
    pub fn open(&self, key: impl Into<Key>) -> Result<SysvShm> {
        let key = key.into();
        let want = self.open_size()?;
        if key == Key::PRIVATE {
            // shmget(IPC_PRIVATE, ...) would create a segment, not find one.
            return Err(Error::NotFound {
                name: key.to_string(),
            });
        }
        let seg = sys::shmget(key.0, 0, 0).map_err(|e| Error::at_io(&key.to_string(), e))?;
        let mut s = self.attach_as(seg, key.to_string(), want)?;
        s.key = key;
        Ok(s)
    }

    /// `shmat(id)`—Attaches a segment by id (e.g. received from its creator), after the same
    /// checks as [`open`](Self::open). Returns an opener.
    ///
    /// # Errors
    /// [`Error::SizeRequired`], [`Error::NotFound`] (no such id, or marked removed),
    /// [`Error::WrongOwner`], [`Error::SizeMismatch`], [`Error::PermissionDenied`].
    #[doc(alias = "shmat")]
    pub fn attach(&self, id: i32) -> Result<SysvShm> {
        let want = self.open_size()?;
        self.attach_as(id, id_name(id), want)
    }

    fn attach_as(&self, seg: i32, name: String, want: Size) -> Result<SysvShm> {
        let not_found = |e: std::io::Error| match Errno::from_io_error(&e) {
            Some(Errno::INVAL | Errno::IDRM) => Error::NotFound { name: name.clone() },
            _ => Error::at_io(&name, e),
        };
        let check = |st: &sys::ShmStat| -> Result<()> {
            if let Err((expected, found)) = self.owner_check.check(st.uid) {
                return Err(Error::WrongOwner {
                    name: name.clone(),
                    expected,
                    found,
                });
            }
            if !want.accepts(st.size) {
                return Err(Error::SizeMismatch {
                    name: name.clone(),
                    expected: want,
                    actual: st.size,
                });
            }
            Ok(())
        };
        // Checked before attaching (nothing of another user's is touched), and again on what
        // was attached (the id may have been removed and reused in between).
        let before = sys::shm_stat(seg).map_err(not_found)?;
        check(&before)?;
        check_size(before.size)?;
        let writable = self.access == Access::ReadWrite;
        let (map, st) = Map::shm_attach(seg, writable).map_err(not_found)?;
        check(&st)?;
        Ok(SysvShm {
            owner: None,
            region: Region::new(map),
            id: seg,
            key: Key::PRIVATE,
            name,
        })
    }

    /// Attaches the segment with `key` if it exists, else creates it; says which happened.
    /// Retried a few times when the key appears and vanishes again, then
    /// [`Error::Contended`]. [`Key::PRIVATE`] always creates.
    ///
    /// # Errors
    /// As [`create`](Self::create) and [`open`](Self::open); [`Error::Contended`].
    pub fn open_or_create(&self, key: impl Into<Key>) -> Result<(SysvShm, Opened)> {
        let key = key.into();
        if key == Key::PRIVATE {
            return self.create(key).map(|s| (s, Opened::Created));
        }
        for _ in 0..OPEN_OR_CREATE_ATTEMPTS {
            match self.create(key) {
                Ok(s) => return Ok((s, Opened::Created)),
                Err(Error::AlreadyExists { .. } | Error::OwnerAlive { .. }) => {}
                Err(e) => return Err(e),
            }
            match self.open(key) {
                Ok(s) => return Ok((s, Opened::Existing)),
                Err(Error::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Contended {
            name: key.to_string(),
            attempts: OPEN_OR_CREATE_ATTEMPTS,
        })
    }
}

/// A System V shared-memory segment, attached.
///
/// The owner (from [`create`](Self::create)) holds the owner lock on the segment's companion
/// file `/dev/shm/ipc-sysv-shm-{id}.owner` and, on drop, marks the segment for removal
/// (`IPC_RMID`, by id) and removes the companion, only in the process that created it; the
/// kernel frees the memory once the last process detaches. Segments outlive processes
/// otherwise: `ipcs -m` lists them, and [`remove_stale`] removes one whose owner is gone.
/// Dereferences to its [`Region`].
///
/// ```
/// use ipc_shm::{Access, SysvShm};
/// use ipc_shm::sysv::Key;
/// let seg = SysvShm::create(Key::PRIVATE, 4096)?;
/// seg.write::<u32>(0, &5)?;
/// let again = SysvShm::options().size(4096).access(Access::ReadOnly).attach(seg.id())?;
/// assert_eq!(again.read::<u32>(0)?, 5);
/// assert!(again.write::<u32>(0, &6).is_err()); // read-only attachment
/// # Ok::<(), ipc_shm::Error>(())
/// ```
///
/// # After fork
/// A forked child inherits the attachment. In a child forked from a multi-threaded parent it may
/// use the [`Region`], [`id`](Self::id), [`is_owner`](Self::is_owner) (`false` there), and drop
/// the handle: the drop is `shmdt` and `close`, removes nothing, and leaves the owner lock to
/// the parent (while the child holds its copy of the companion descriptor, the segment counts
/// as alive for [`remove_stale`]). Creating, opening and removing are not for such a child.
#[derive(Debug)]
pub struct SysvShm {
    // Field order is drop order: the owner removes the segment (by id) while it is still
    // attached, then the region detaches.
    owner: Option<SysvOwner>,
    region: Region,
    id: i32,
    key: Key,
    name: String,
}

impl SysvShm {
    /// Options for creating, opening or attaching a segment.
    pub const fn options() -> SysvShmOptions {
        SysvShmOptions::new()
    }

    /// Creates a segment of `size` bytes with the default options (see
    /// [`SysvShmOptions::create`]). `key` is a [`Key`] or an `i32`.
    ///
    /// # Errors
    /// As [`SysvShmOptions::create`].
    pub fn create(key: impl Into<Key>, size: u64) -> Result<SysvShm> {
        SysvShmOptions::new().size(size).create(key)
    }

    /// Attaches the existing segment with `key`, read-write, of a size `size` accepts (a `u64`
    /// is exact, [`Size::AtMost`] a bound); see [`SysvShmOptions::open`].
    ///
    /// # Errors
    /// As [`SysvShmOptions::open`].
    pub fn open(key: impl Into<Key>, size: impl Into<Size>) -> Result<SysvShm> {
        SysvShmOptions::new().with_size(size.into()).open(key)
    }

    /// Attaches the segment with `key`, or creates it with `size` bytes (see
    /// [`SysvShmOptions::open_or_create`]).
    ///
    /// # Errors
    /// As [`SysvShmOptions::open_or_create`].
    pub fn open_or_create(key: impl Into<Key>, size: u64) -> Result<(SysvShm, Opened)> {
        SysvShmOptions::new().size(size).open_or_create(key)
    }

    /// Attaches segment `id`, read-write, of a size `size` accepts; see
    /// [`SysvShmOptions::attach`].
    ///
    /// # Errors
    /// As [`SysvShmOptions::attach`].
    pub fn attach(id: i32, size: impl Into<Size>) -> Result<SysvShm> {
        SysvShmOptions::new().with_size(size.into()).attach(id)
    }

    /// The segment id (what `ipcs -m` shows; what another process passes to
    /// [`attach`](Self::attach)).
    pub fn id(&self) -> i32 {
        self.id
    }

    /// The key the segment was created or opened with ([`Key::PRIVATE`] for one attached by
    /// id).
    pub fn key(&self) -> Key {
        self.key
    }

    /// Whether this handle is the owner: it created the segment, in this process (false in a
    /// forked child and for openers). An owner told to keep the segment ([`OnDrop::Keep`],
    /// [`persist`](Self::persist)) is still the owner until it is dropped.
    pub fn is_owner(&self) -> bool {
        self.owner.as_ref().is_some_and(SysvOwner::is_owner)
    }

    /// Keeps the segment after the owner is dropped, as [`OnDrop::Keep`] at create would have:
    /// the handle stays the owner — the lock of its companion file held — until it is dropped
    /// (remove the segment later with [`remove`] or [`remove_stale`]).
    pub fn persist(&mut self) {
        if let Some(o) = &mut self.owner {
            o.on_drop = OnDrop::Keep;
        }
    }

    /// Marks the segment for removal now (by id) and removes its companion, reporting errors.
    ///
    /// # Errors
    /// [`Error::NotOwner`] unless [`is_owner`](Self::is_owner) (nothing is removed);
    /// [`Error::NotFound`] if it was removed already; [`Error::PermissionDenied`].
    pub fn remove(mut self) -> Result<()> {
        if !self.is_owner() {
            return Err(Error::NotOwner {
                name: self.name.clone(),
            });
        }
        let Some(mut owner) = self.owner.take() else {
            return Err(Error::NotOwner {
                name: self.name.clone(),
            });
        };
        owner.on_drop = OnDrop::Keep; // its drop below must not remove again
        // Still attached, so the id is ours; if someone removed it already, it is marked.
        let r = match sys::shm_stat(self.id) {
            Ok(st) if st.mode & SHM_DEST != 0 => {
                let _ = owner.companion.unlink();
                drop(owner);
                return Err(Error::NotFound {
                    name: self.name.clone(),
                });
            }
            _ => sys::shm_rmid(self.id),
        };
        let _ = owner.companion.unlink();
        drop(owner);
        r.map_err(|e| match Errno::from_io_error(&e) {
            Some(Errno::INVAL | Errno::IDRM) => Error::NotFound {
                name: self.name.clone(),
            },
            _ => Error::at_io(&self.name, e),
        })
    }
}

impl SysvShmOptions {
    const fn with_size(self, size: Size) -> Self {
        match size {
            Size::Exact(n) => self.size(n),
            Size::AtMost(n) => self.max_size(n),
        }
    }
}

fn read_proc(path: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// `shmctl(id, IPC_RMID)`—Marks a segment for removal, whoever made it (a stale one, a kept
/// one; explicit clean-up), and removes its companion file. Processes attached keep their
/// mapping until they detach. Prefer [`remove_stale`], which leaves a live owner's segment
/// alone.
///
/// # Errors
/// [`Error::NotFound`], [`Error::PermissionDenied`].
#[doc(alias = "IPC_RMID")]
pub fn remove(id: i32) -> Result<()> {
    sys::shm_rmid(id).map_err(|e| match Errno::from_io_error(&e) {
        Some(Errno::INVAL | Errno::IDRM) => Error::NotFound { name: id_name(id) },
        _ => Error::at_io(&id_name(id), e),
    })?;
    let path = companion_path(id);
    if let Ok(Some(_)) = FileId::at(&path) {
        let _ = rustix::fs::unlink(&path);
    }
    Ok(())
}

/// Removes the segment with `key` only if no live owner holds it: its creator was killed, is a
/// zombie, or dropped it with [`OnDrop::Keep`]. Segments made without this crate have no
/// companion file (no owner lock) and count as ownerless. A companion is believed only if it is
/// a regular file of the segment's creator. Removes the companion with the segment.
///
/// A segment is ownerless for an instant while it is being created (after `shmget`, before its
/// companion exists). A `remove_stale` that lands exactly there removes it; the creator sees
/// that when it attaches and makes another segment, so its `create` still succeeds, unless the
/// removal lands after the creator's own check, a window of a few system calls that only a
/// clean-up racing a create of the same key can hit.
///
/// ```
/// use ipc_shm::{Error, SysvShm};
/// # let key = 0x4950_0000 | (std::process::id() as i32 & 0xffff);
/// # let _ = ipc_shm::sysv::remove_stale(key.into());
/// let seg = SysvShm::create(key, 4096)?;
/// assert!(matches!(ipc_shm::sysv::remove_stale(key.into()), Err(Error::OwnerAlive { .. })));
/// # drop(seg);
/// # Ok::<(), ipc_shm::Error>(())
/// ```
///
/// # Errors
/// [`Error::OwnerAlive`], [`Error::NotFound`] (also for [`Key::PRIVATE`]: remove those by id),
/// [`Error::PermissionDenied`].
pub fn remove_stale(key: Key) -> Result<()> {
    let name = key.to_string();
    if key == Key::PRIVATE {
        return Err(Error::NotFound { name });
    }
    let seg = sys::shmget(key.0, 0, 0).map_err(|e| Error::at_io(&name, e))?;
    let st = sys::shm_stat(seg).map_err(|e| match Errno::from_io_error(&e) {
        Some(Errno::INVAL | Errno::IDRM) => Error::NotFound { name: name.clone() },
        _ => Error::at_io(&name, e),
    })?;
    let path = companion_path(seg);
    let companion = match owner::open_probe(&path) {
        Ok(fd) => {
            let st_c = rustix::fs::fstat(&fd)?;
            let genuine = FileType::from_raw_mode(st_c.st_mode) == FileType::RegularFile
                && st_c.st_uid == st.cuid;
            if genuine && owner::owner_alive(&fd).map_err(|e| Error::at(&name, e))? {
                return Err(Error::OwnerAlive { name });
            }
            genuine
                .then(|| FileId::of(fd.as_fd()).ok())
                .flatten()
                .map(|id| (fd, id))
        }
        Err(Errno::NOENT | Errno::LOOP | Errno::NXIO) => None,
        Err(e) => return Err(Error::at(&path, e)),
    };
    sys::shm_rmid(seg).map_err(|e| match Errno::from_io_error(&e) {
        Some(Errno::INVAL | Errno::IDRM) => Error::NotFound { name: name.clone() },
        _ => Error::at_io(&name, e),
    })?;
    if let Some((_fd, id)) = companion {
        let _ = unlink_if_ours(&path, id);
    }
    Ok(())
}

impl Deref for SysvShm {
    type Target = Region;
    fn deref(&self) -> &Region {
        &self.region
    }
}

impl Segment for SysvShm {
    fn region(&self) -> &Region {
        &self.region
    }
}
