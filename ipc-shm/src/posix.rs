//! POSIX named shared memory: `/dev/shm/NAME`, opened as glibc's `shm_open` does, reserved with
//! `fallocate`, mapped; the lifetime model (owner, opener, `remove_stale`).

use std::fmt;
use std::ops::Deref;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use rustix::fs::{FallocateFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::name;
use crate::owner::{
    self, FileId, OPEN_OR_CREATE_ATTEMPTS, OnDrop, Opened, OwnerCheck, Unlinked, unlink_if_ours,
};
use crate::region::{Region, Segment};
use crate::size::{Size, check_file_size, check_size};
use crate::sys::{self, Map};

/// Read-write or read-only access to a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Access {
    /// Map for reading and writing (the default).
    #[default]
    ReadWrite,
    /// Open and map read-only: writes through the region are [`Error::ReadOnly`].
    ReadOnly,
}

/// Normal or huge pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Pages {
    /// The system's base page size (the default).
    #[default]
    Normal,
    /// Huge pages, where the mechanism and the system allow (see each constructor).
    Huge,
}

/// Checks permission bits before any system call.
pub(crate) fn check_mode(mode: u32) -> Result<()> {
    if mode & !0o777 != 0 {
        return Err(Error::InvalidMode { mode });
    }
    Ok(())
}

/// How many times an interrupted `fallocate` is restarted (each restart begins again; the
/// kernel undoes an interrupted one) before `EINTR` is reported.
const FALLOCATE_RETRIES: u32 = 64;

/// `fallocate(fd, 0, 0, size)`, restarted on `EINTR`.
pub(crate) fn reserve(fd: BorrowedFd<'_>, size: u64) -> std::result::Result<(), Errno> {
    let mut tries = 0;
    loop {
        match rustix::fs::fallocate(fd, FallocateFlags::empty(), 0, size) {
            Err(Errno::INTR) if tries < FALLOCATE_RETRIES => tries += 1,
            r => return r,
        }
    }
}

/// What a failed `mmap` of `size` bytes of `name` means.
pub(crate) fn map_error(name: &str, size: u64, e: std::io::Error) -> Error {
    match Errno::from_io_error(&e) {
        Some(Errno::NOMEM) => Error::LimitExceeded {
            what: "address space or memory for the mapping (mmap: ENOMEM)",
            requested: size,
            limit: crate::size::max_size(),
        },
        // A descriptor opened for writing only, or read-only where writing was asked.
        Some(Errno::ACCESS | Errno::PERM) => Error::PermissionDenied {
            name: name.to_owned(),
        },
        // A file that cannot be mapped at all.
        Some(Errno::NODEV) => Error::NotRegular {
            name: name.to_owned(),
        },
        _ => Error::Io(e),
    }
}

/// Options for creating or opening a POSIX named segment; see [`Shm::options`].
///
/// After fork: the options are plain values (copying them is fine anywhere), but the
/// terminals (`create`, `open`, ...) allocate and make system calls that are not
/// async-signal-safe: not for a child forked from a multi-threaded parent before it execs.
///
/// ```
/// use std::time::Duration;
/// use ipc_shm::{Access, OnDrop, OwnerCheck, Shm};
/// # let name = format!("/ipcrs-doc-opts-{}", std::process::id());
/// let owner = Shm::options().size(8192).mode(0o640).on_drop(OnDrop::Remove).create(&name)?;
/// let reader = Shm::options()
///     .max_size(1 << 20)                 // the creator chose the size: accept up to 1 MiB
///     .access(Access::ReadOnly)
///     .owner_check(OwnerCheck::SameUid)  // the default
///     .wait_ready(Duration::from_secs(1))
///     .open(&name)?;
/// assert_eq!(reader.len(), 8192);
/// # Ok::<(), ipc_shm::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShmOptions {
    size: Option<u64>,
    max_size: Option<u64>,
    mode: u32,
    access: Access,
    owner_check: OwnerCheck,
    on_drop: OnDrop,
    replace_stale: bool,
    pages: Pages,
    ready_wait: Duration,
}

impl Default for ShmOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl ShmOptions {
    /// Defaults: no size, mode 0600, read-write, our own objects only, removed on drop, no
    /// stale replacement, normal pages, no wait for a creator.
    pub const fn new() -> ShmOptions {
        ShmOptions {
            size: None,
            max_size: None,
            mode: 0o600,
            access: Access::ReadWrite,
            owner_check: OwnerCheck::SameUid,
            on_drop: OnDrop::Remove,
            replace_stale: false,
            pages: Pages::Normal,
            ready_wait: Duration::ZERO,
        }
    }

    /// The size in bytes: required to create; when opening, the exact size the object must
    /// have.
    pub const fn size(mut self, bytes: u64) -> Self {
        self.size = Some(bytes);
        self
    }

    /// When opening without [`size`](Self::size): the largest size accepted (the segment is
    /// mapped at the size its creator chose, if that is at most `bytes`).
    pub const fn max_size(mut self, bytes: u64) -> Self {
        self.max_size = Some(bytes);
        self
    }

    /// Permission bits for create (default 0600), applied with `fchmod` so the umask cannot
    /// change them. Bits outside `0o777` are [`Error::InvalidMode`] before any system call.
    pub const fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// Read-write (default) or read-only access when opening.
    pub const fn access(mut self, access: Access) -> Self {
        self.access = access;
        self
    }

    /// Whose objects `open` accepts: ours only (default) or anyone's.
    pub const fn owner_check(mut self, check: OwnerCheck) -> Self {
        self.owner_check = check;
        self
    }

    /// What the owner does with the name when dropped: remove it (default) or keep it.
    pub const fn on_drop(mut self, on_drop: OnDrop) -> Self {
        self.on_drop = on_drop;
        self
    }

    /// For a server restarted after a crash: `create` first removes a stale segment at the name
    /// (one whose owner is dead, as [`remove_stale`]), then creates. A live owner's segment is
    /// [`Error::OwnerAlive`].
    pub const fn replace_stale(mut self) -> Self {
        self.replace_stale = true;
        self
    }

    /// [`Pages::Huge`] asks for (transparent) huge pages: tmpfs backs `/dev/shm`, so this is the
    /// `MADV_HUGEPAGE` hint, honoured where `/sys/kernel/mm/transparent_hugepage/shmem_enabled`
    /// allows. For guaranteed huge pages use [`Memfd`](crate::Memfd) or [`Anon`](crate::Anon).
    pub const fn pages(mut self, pages: Pages) -> Self {
        self.pages = pages;
        self
    }

    /// When opening finds a size-0 object (its creator has not sized it yet), keep checking for
    /// up to `limit` (`Duration::MAX`: forever) instead of failing at once with
    /// [`Error::NotReady`]. The check is repeated every millisecond.
    pub const fn wait_ready(mut self, limit: Duration) -> Self {
        self.ready_wait = limit;
        self
    }

    /// Opens `/dev/shm/NAME` with `O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC`—Creates a new segment
    /// exclusively: takes the owner lock ([`OWNER_LOCK`](crate::OWNER_LOCK)), sets the mode with
    /// `fchmod`, maps it, then reserves its memory with `fallocate` (so a full `/dev/shm` is
    /// [`Error::NoSpace`] now, not SIGBUS later). Returns the owner. New segments read as
    /// zeros.
    ///
    /// Name, mode and size are checked before any system call; on any later failure the name
    /// is removed again, after checking it still names the file this call created.
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::InvalidMode`], [`Error::InvalidSize`] (zero, above
    /// [`MAX_SIZE`](crate::MAX_SIZE), `RLIMIT_AS` or `RLIMIT_FSIZE`), [`Error::SizeRequired`]
    /// (no [`size`](Self::size)), [`Error::AlreadyExists`] (also for a symlink planted at the
    /// name), [`Error::OwnerAlive`] (with [`replace_stale`](Self::replace_stale)),
    /// [`Error::NoSpace`], [`Error::PermissionDenied`], [`Error::LimitExceeded`] (`mmap`'s
    /// `ENOMEM`).
    #[doc(alias = "shm_open")]
    pub fn create(&self, name: &str) -> Result<Shm> {
        let path = name::validate(name)?;
        check_mode(self.mode)?;
        let size = self.size.ok_or(Error::SizeRequired)?;
        let len = check_file_size(size)?;
        if self.replace_stale {
            match remove_stale(name) {
                Ok(()) | Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let fd = rustix::fs::open(
            &path,
            OFlags::CREATE | OFlags::EXCL | OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| Error::at(name, e))?;
        // Without our file's identity we could not tell it from a newcomer's: leave the name
        // (an fstat of a descriptor just opened does not fail in practice).
        let id = FileId::of(fd.as_fd()).map_err(|e| Error::at(name, e))?;
        let undo = |e: Error| {
            let _ = unlink_if_ours(&path, id);
            e
        };
        owner::hold(&fd).map_err(|e| undo(Error::at(name, e)))?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(self.mode))
            .map_err(|e| undo(Error::at(name, e)))?;
        // Map first: a size the address space cannot hold fails here, cheaply, before any
        // memory is reserved.
        let map =
            Map::fd(fd.as_fd(), len, true, false).map_err(|e| undo(map_error(name, size, e)))?;
        reserve(fd.as_fd(), size).map_err(|e| {
            undo(match e {
                Errno::NOSPC | Errno::NOMEM => Error::NoSpace {
                    name: name.to_owned(),
                },
                Errno::FBIG | Errno::INVAL => Error::InvalidSize {
                    size,
                    reason: "larger than the file system allows",
                },
                e => Error::at(name, e),
            })
        })?;
        if self.pages == Pages::Huge {
            map.advise_huge();
        }
        Ok(Shm {
            naming: Naming {
                name: name.to_owned(),
                path: Some(path),
                owner: Some(OwnerState {
                    pid: std::process::id(),
                    id,
                    on_drop: self.on_drop,
                }),
            },
            region: Region::new(map),
            fd,
        })
    }

    /// The size this opener accepts.
    fn open_size(&self) -> Result<Size> {
        match (self.size, self.max_size) {
            (Some(n), _) => Size::Exact(n).check(),
            (None, Some(n)) => Size::AtMost(n).check(),
            (None, None) => Err(Error::SizeRequired),
        }
    }

    /// Opens `/dev/shm/NAME` with `O_NOFOLLOW|O_NONBLOCK|O_CLOEXEC` + `fstat`—Opens an existing
    /// segment: refuses symlinks, anything but a regular file (a FIFO or directory planted at
    /// the name: without blocking), objects of another user (unless
    /// [`OwnerCheck::AnyUid`]), and a size this opener does not accept ([`size`](Self::size) or
    /// [`max_size`](Self::max_size); one of them is required). Returns an opener, which never
    /// removes anything.
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::SizeRequired`], [`Error::NotFound`], [`Error::Symlink`],
    /// [`Error::NotRegular`], [`Error::WrongOwner`], [`Error::SizeMismatch`],
    /// [`Error::NotReady`] (size 0 after the wait), [`Error::PermissionDenied`].
    pub fn open(&self, name: &str) -> Result<Shm> {
        let path = name::validate(name)?;
        let want = self.open_size()?;
        let (oflags, writable) = match self.access {
            Access::ReadWrite => (OFlags::RDWR, true),
            Access::ReadOnly => (OFlags::RDONLY, false),
        };
        // O_NONBLOCK: a FIFO planted at the name (anyone may create files in /dev/shm) would
        // otherwise block a read-only open until a writer appears. It changes nothing for a
        // regular file, and is cleared again once the object is known to be one.
        let fd = rustix::fs::open(
            &path,
            oflags | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::at(name, e))?;
        let (size, len) = self.checked_size(name, &fd, want)?;
        let fl = rustix::fs::fcntl_getfl(&fd)?;
        rustix::fs::fcntl_setfl(&fd, fl - OFlags::NONBLOCK)?;
        let map =
            Map::fd(fd.as_fd(), len, writable, false).map_err(|e| map_error(name, size, e))?;
        Ok(Shm {
            naming: Naming {
                name: name.to_owned(),
                path: Some(path),
                owner: None,
            },
            region: Region::new(map),
            fd,
        })
    }

    /// Opens the segment if it exists, else creates it; says which happened. A create that
    /// finds the name taken and an open that finds it gone again are retried a few times, then
    /// [`Error::Contended`]. With [`replace_stale`](Self::replace_stale), a stale segment is
    /// replaced, and a live owner's segment is opened.
    ///
    /// # Errors
    /// As [`create`](Self::create) and [`open`](Self::open); [`Error::Contended`].
    pub fn open_or_create(&self, name: &str) -> Result<(Shm, Opened)> {
        for _ in 0..OPEN_OR_CREATE_ATTEMPTS {
            match self.create(name) {
                Ok(s) => return Ok((s, Opened::Created)),
                Err(Error::AlreadyExists { .. } | Error::OwnerAlive { .. }) => {}
                Err(e) => return Err(e),
            }
            match self.open(name) {
                Ok(s) => return Ok((s, Opened::Existing)),
                Err(Error::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Contended {
            name: name.to_owned(),
            attempts: OPEN_OR_CREATE_ATTEMPTS,
        })
    }

    fn checked_size(&self, name: &str, fd: &OwnedFd, want: Size) -> Result<(u64, usize)> {
        let deadline = Instant::now().checked_add(self.ready_wait);
        loop {
            let st = rustix::fs::fstat(fd)?;
            if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
                return Err(Error::NotRegular {
                    name: name.to_owned(),
                });
            }
            if let Err((expected, found)) = self.owner_check.check(st.st_uid) {
                return Err(Error::WrongOwner {
                    name: name.to_owned(),
                    expected,
                    found,
                });
            }
            let actual = u64::try_from(st.st_size).unwrap_or(0);
            if actual == 0 {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(Error::NotReady {
                        name: name.to_owned(),
                    });
                }
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            if !want.accepts(actual) {
                return Err(Error::SizeMismatch {
                    name: name.to_owned(),
                    expected: want,
                    actual,
                });
            }
            return Ok((actual, check_size(actual)?));
        }
    }
}

/// The owner's part of a [`Shm`]: who created it, which file, and what to do on drop.
#[derive(Debug, Clone, Copy)]
struct OwnerState {
    pid: u32,
    id: FileId,
    on_drop: OnDrop,
}

/// A POSIX named shared-memory segment (`/dev/shm/NAME` on Linux), mapped.
///
/// Dereferences to its [`Region`]. The owner (from [`create`](ShmOptions::create)) holds the
/// owner lock ([`OWNER_LOCK`](crate::OWNER_LOCK)) on its descriptor and, on drop, removes the
/// name, only in the process that created it and only if the name still refers to the file it
/// created; an opener never removes anything.
///
/// ```
/// use ipc_shm::Shm;
/// # let name = format!("/ipcrs-doc-shm-{}", std::process::id());
/// let owner = Shm::create(&name, 4096)?;          // exclusive, 0600, reserved, zeroed
/// owner.write::<u64>(0, &42)?;
/// let other = Shm::open(&name, 4096)?;            // checks type, owner and size
/// assert_eq!(other.read::<u64>(0)?, 42);
/// # Ok::<(), ipc_shm::Error>(())
/// ```
///
/// # After fork
/// A forked child shares the mapping. In a child forked from a multi-threaded parent it may use
/// the [`Region`] (see there), [`is_owner`](Self::is_owner) (`getpid`, and `false` there),
/// [`name`](Self::name), `as_fd`, and drop the handle: the drop is `munmap` and `close`, removes
/// nothing, and leaves the owner lock to the parent. Everything that opens, creates or removes
/// (and so allocates) is not for such a child. While the child keeps its copy of the owner's
/// descriptor open (until it exits or execs), the segment counts as alive for
/// [`remove_stale`], even if the parent dies.
pub struct Shm {
    // Field order is drop order: the name is removed while the descriptor still pins the
    // inode (so the identity check cannot match a newcomer that reused the inode number).
    naming: Naming,
    region: Region,
    fd: OwnedFd,
}

/// A segment's name and, for the owner, what to remove on drop.
struct Naming {
    name: String,
    /// `/dev/shm/NAME`; `None` for a segment received as a descriptor.
    path: Option<String>,
    owner: Option<OwnerState>,
}

impl Naming {
    fn is_owner(&self) -> bool {
        self.owner.is_some_and(|o| o.pid == std::process::id())
    }

    fn removes_on_drop(&self) -> bool {
        self.is_owner() && self.owner.is_some_and(|o| o.on_drop == OnDrop::Remove)
    }
}

impl Drop for Naming {
    fn drop(&mut self) {
        if !self.removes_on_drop() {
            return; // an opener, a forked child's copy, or kept: remove nothing
        }
        if let (Some(o), Some(path)) = (self.owner, &self.path) {
            let _ = unlink_if_ours(path, o.id);
        }
    }
}

impl fmt::Debug for Shm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shm")
            .field("name", &self.naming.name)
            .field("len", &self.region.len())
            .field("owner", &self.is_owner())
            .field("fd", &self.fd)
            .finish()
    }
}

impl Shm {
    /// Options for creating or opening a segment.
    pub const fn options() -> ShmOptions {
        ShmOptions::new()
    }

    /// Creates a segment of `size` bytes with the default options (see [`ShmOptions::create`]).
    ///
    /// # Errors
    /// As [`ShmOptions::create`].
    pub fn create(name: &str, size: u64) -> Result<Shm> {
        ShmOptions::new().size(size).create(name)
    }

    /// Opens an existing segment of the size `size` accepts: a `u64` is an exact size,
    /// [`Size::AtMost`] a bound (see [`ShmOptions::open`]).
    ///
    /// # Errors
    /// As [`ShmOptions::open`].
    pub fn open(name: &str, size: impl Into<Size>) -> Result<Shm> {
        match size.into() {
            Size::Exact(n) => ShmOptions::new().size(n),
            Size::AtMost(n) => ShmOptions::new().max_size(n),
        }
        .open(name)
    }

    /// Opens the segment, or creates it with `size` bytes (see [`ShmOptions::open_or_create`]).
    ///
    /// # Errors
    /// As [`ShmOptions::open_or_create`].
    pub fn open_or_create(name: &str, size: u64) -> Result<(Shm, Opened)> {
        ShmOptions::new().size(size).open_or_create(name)
    }

    /// Maps a segment received as a descriptor (a POSIX segment's, or any tmpfs file's), of a
    /// size `size` accepts, read-only if the descriptor is. The handle is not an owner; its
    /// [`name`](Self::name) is `fd N`.
    ///
    /// # Errors
    /// [`Error::NotRegular`], [`Error::NotReady`] (size 0), [`Error::SizeMismatch`],
    /// [`Error::InvalidSize`].
    pub fn from_fd(fd: OwnedFd, size: impl Into<Size>) -> Result<Shm> {
        let name = format!("fd {}", fd.as_raw_fd());
        let want = size.into().check()?;
        let st = rustix::fs::fstat(&fd)?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(Error::NotRegular { name });
        }
        let actual = u64::try_from(st.st_size).unwrap_or(0);
        if actual == 0 {
            return Err(Error::NotReady { name });
        }
        if !want.accepts(actual) {
            return Err(Error::SizeMismatch {
                name,
                expected: want,
                actual,
            });
        }
        let len = check_size(actual)?;
        let writable = rustix::fs::fcntl_getfl(&fd)? & OFlags::RWMODE == OFlags::RDWR;
        let map =
            Map::fd(fd.as_fd(), len, writable, false).map_err(|e| map_error(&name, actual, e))?;
        Ok(Shm {
            naming: Naming {
                name,
                path: None,
                owner: None,
            },
            region: Region::new(map),
            fd,
        })
    }

    /// Claims descriptor number `fd`, inherited from the parent (placed there with
    /// [`ChildFds`](crate::ChildFds)), and maps it as [`from_fd`](Self::from_fd) does. The
    /// number must be above 2, open, a regular file, and not claimed before in this process; it
    /// is made close-on-exec.
    ///
    /// # Errors
    /// [`Error::InvalidDescriptor`], and as [`from_fd`](Self::from_fd).
    pub fn from_inherited(fd: RawFd, size: impl Into<Size>) -> Result<Shm> {
        let owned = sys::claim_inherited(fd, sys::Inherit::Segment)
            .map_err(|reason| Error::InvalidDescriptor { fd, reason })?;
        Shm::from_fd(owned, size)
    }

    /// The segment's name (`fd N` for one received as a descriptor).
    pub fn name(&self) -> &str {
        &self.naming.name
    }

    /// Whether this handle is the owner: it created the segment, in this process (false in a
    /// forked child and for openers). An owner told to keep the segment ([`OnDrop::Keep`],
    /// [`persist`](Self::persist)) is still the owner until it is dropped.
    pub fn is_owner(&self) -> bool {
        self.naming.is_owner()
    }

    /// Keeps the name after the owner is dropped, as [`OnDrop::Keep`] at create would have: the
    /// handle stays the owner — its owner lock held, so [`remove_stale`] refuses — until it is
    /// dropped; then the segment stays, ownerless, until [`unlink`] or [`remove_stale`].
    pub fn persist(&mut self) {
        if let Some(o) = &mut self.naming.owner {
            o.on_drop = OnDrop::Keep;
        }
    }

    /// Removes the name now, reporting errors, if it still refers to this segment.
    ///
    /// # Errors
    /// [`Error::NotOwner`] unless [`is_owner`](Self::is_owner) (nothing is removed);
    /// [`Error::NotFound`] if the name is gone or names another segment now (left alone);
    /// [`Error::PermissionDenied`].
    pub fn remove(mut self) -> Result<()> {
        let naming = &mut self.naming;
        let name = naming.name.clone();
        if !naming.is_owner() {
            return Err(Error::NotOwner { name });
        }
        let (Some(o), Some(path)) = (naming.owner.take(), &naming.path) else {
            return Err(Error::NotOwner { name });
        };
        // `self` (and so the descriptor pinning the inode) lives until the end of this call.
        match unlink_if_ours(path, o.id) {
            Ok(Unlinked::Ours) => Ok(()),
            Ok(Unlinked::Gone | Unlinked::Replaced) => Err(Error::NotFound { name }),
            Err(e) => Err(Error::at(&name, e)),
        }
    }

    /// Checks that the object still has the size we mapped. Another process with write access
    /// can `ftruncate` a named segment; touching pages past the new end then raises `SIGBUS`.
    /// Call this after suspicious events, or use a sealed [`Memfd`](crate::Memfd).
    ///
    /// # Errors
    /// [`Error::SizeMismatch`] if it shrank or grew.
    pub fn check_size(&self) -> Result<()> {
        let actual = u64::try_from(rustix::fs::fstat(&self.fd)?.st_size).unwrap_or(0);
        let expected = self.region.len() as u64;
        if actual != expected {
            return Err(Error::SizeMismatch {
                name: self.naming.name.clone(),
                expected: Size::Exact(expected),
                actual,
            });
        }
        Ok(())
    }

    /// A new descriptor of this segment on a new open file description (through
    /// `/proc/self/fd`), close-on-exec, read-only if asked: what to hand to another process.
    /// Unlike a duplicate of [`as_fd`](AsFd::as_fd), it does not share the owner's lock, so a
    /// child that holds it does not keep the owner "alive" for [`remove_stale`].
    ///
    /// # Errors
    /// [`Error::PermissionDenied`] (read-write from a read-only handle may be refused),
    /// [`Error::NotFound`] without `/proc` when the name no longer refers to this segment.
    pub fn try_clone_fd(&self, access: Access) -> Result<OwnedFd> {
        let flags = match access {
            Access::ReadWrite => OFlags::RDWR,
            Access::ReadOnly => OFlags::RDONLY,
        } | OFlags::CLOEXEC
            | OFlags::NONBLOCK;
        let proc_path = format!("/proc/self/fd/{}", self.fd.as_raw_fd());
        let fd = match rustix::fs::open(&proc_path, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => {
                // No /proc: open the name, and keep it only if it is still this segment.
                let path = self.naming.path.as_deref().ok_or(Error::NotFound {
                    name: self.naming.name.clone(),
                })?;
                let fd = rustix::fs::open(path, flags | OFlags::NOFOLLOW, Mode::empty())
                    .map_err(|e| Error::at(&self.naming.name, e))?;
                let same = FileId::of(fd.as_fd()) == FileId::of(self.fd.as_fd());
                if !same {
                    return Err(Error::NotFound {
                        name: self.naming.name.clone(),
                    });
                }
                fd
            }
            Err(e) => return Err(Error::at(&self.naming.name, e)),
        };
        let fl = rustix::fs::fcntl_getfl(&fd)?;
        rustix::fs::fcntl_setfl(&fd, fl - OFlags::NONBLOCK)?;
        Ok(fd)
    }
}

/// Removes the name `/dev/shm/NAME`, whoever made it (explicit clean-up); mappings and
/// descriptors of the segment stay valid until released. Prefer [`remove_stale`], which leaves
/// a live owner's segment alone.
///
/// # Errors
/// [`Error::InvalidName`], [`Error::NotFound`], [`Error::PermissionDenied`],
/// [`Error::NotRegular`] (a directory).
#[doc(alias = "shm_unlink")]
pub fn unlink(name: &str) -> Result<()> {
    let path = name::validate(name)?;
    rustix::fs::unlink(&path).map_err(|e| Error::at(name, e))
}

/// Removes the segment `name` only if no live owner holds it: its creator was killed, is a
/// zombie, or dropped it with [`OnDrop::Keep`]; segments made without this crate carry no owner
/// lock and count as ownerless. Checks, before it unlinks, that the name still refers to the
/// segment it probed.
///
/// ```
/// use ipc_shm::{OnDrop, Shm};
/// # let name = format!("/ipcrs-doc-stale-{}", std::process::id());
/// let owner = Shm::create(&name, 4096)?;
/// assert!(matches!(ipc_shm::remove_stale(&name), Err(ipc_shm::Error::OwnerAlive { .. })));
/// let mut owner = owner;
/// owner.persist();
/// drop(owner);                        // kept, and now ownerless
/// ipc_shm::remove_stale(&name)?;      // so it is removed
/// # Ok::<(), ipc_shm::Error>(())
/// ```
///
/// # Errors
/// [`Error::OwnerAlive`], [`Error::NotFound`], [`Error::InvalidName`], [`Error::Symlink`],
/// [`Error::NotRegular`], [`Error::PermissionDenied`] (probing opens the segment for reading).
pub fn remove_stale(name: &str) -> Result<()> {
    let path = name::validate(name)?;
    let fd = owner::open_probe(&path).map_err(|e| Error::at(name, e))?;
    let st = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(Error::NotRegular {
            name: name.to_owned(),
        });
    }
    if owner::owner_alive(&fd).map_err(|e| Error::at(name, e))? {
        return Err(Error::OwnerAlive {
            name: name.to_owned(),
        });
    }
    let id = FileId::of(fd.as_fd()).map_err(|e| Error::at(name, e))?;
    match unlink_if_ours(&path, id) {
        // Gone or replaced meanwhile: the stale segment is no longer at the name either way.
        Ok(_) => Ok(()),
        Err(e) => Err(Error::at(name, e)),
    }
}

impl Deref for Shm {
    type Target = Region;
    fn deref(&self) -> &Region {
        &self.region
    }
}

impl Segment for Shm {
    fn region(&self) -> &Region {
        &self.region
    }
}

impl AsFd for Shm {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl From<Shm> for OwnedFd {
    /// The descriptor. The mapping is released, and an owner still removes the name, as on drop
    /// (the segment lives on while a descriptor or mapping refers to it). The descriptor is the
    /// owner's: it carries the owner lock while open.
    fn from(shm: Shm) -> OwnedFd {
        let Shm { naming, region, fd } = shm;
        drop(naming); // removes the name (if the owner's) while `fd` pins the inode
        drop(region);
        fd
    }
}

impl AsRawFd for Shm {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
