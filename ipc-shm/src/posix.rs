//! POSIX named shared memory: `shm_open`, `posix_fallocate`, `mmap`, `shm_unlink`.

use std::fmt;
use std::ops::Deref;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use rustix::fs::{FallocateFlags, FileType, Mode};
use rustix::shm::OFlags;

use crate::error::{Error, Result};
use crate::name;
use crate::region::{Region, Release, Segment, check_size};
use crate::sys;

/// `O_NOFOLLOW`, which `rustix::shm::open` does not add by itself (it adds `O_CLOEXEC`).
fn nofollow() -> OFlags {
    OFlags::from_bits_retain(rustix::fs::OFlags::NOFOLLOW.bits())
}

/// `O_NONBLOCK`, so that opening something that is not a regular file cannot block.
fn nonblock() -> OFlags {
    OFlags::from_bits_retain(rustix::fs::OFlags::NONBLOCK.bits())
}

/// Read-write or read-only access to a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Access {
    /// Map for reading and writing (the default).
    #[default]
    ReadWrite,
    /// Open and map read-only: writes through the region are [`Error::ReadOnly`].
    ReadOnly,
}

/// Whose objects [`ShmOptions::open`] accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Owner {
    /// Only objects owned by our effective uid (the default): another user's object is
    /// [`Error::WrongOwner`].
    #[default]
    Me,
    /// Objects of any owner (permissions still apply).
    Anyone,
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

/// Whether [`ShmOptions::open_or_create`] created the segment or opened an existing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Opened {
    /// This call created it: the handle is the owner.
    Created,
    /// It existed: the handle is an opener.
    Existing,
}

/// Options for creating or opening a POSIX named segment; see [`Shm::options`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShmOptions {
    size: Option<u64>,
    mode: u32,
    access: Access,
    owner: Owner,
    pages: Pages,
    ready_wait: Duration,
}

impl Default for ShmOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl ShmOptions {
    /// Defaults: no size, mode 0600, read-write, our own objects only, normal pages, no wait.
    pub const fn new() -> ShmOptions {
        ShmOptions {
            size: None,
            mode: 0o600,
            access: Access::ReadWrite,
            owner: Owner::Me,
            pages: Pages::Normal,
            ready_wait: Duration::ZERO,
        }
    }

    /// The size in bytes: required to create; when opening, the size the object must have.
    pub const fn size(mut self, bytes: u64) -> Self {
        self.size = Some(bytes);
        self
    }

    /// Permission bits for create (default 0600), applied with `fchmod` so the umask cannot
    /// change them.
    pub const fn mode(mut self, mode: u32) -> Self {
        self.mode = mode & 0o777;
        self
    }

    /// Read-write (default) or read-only access when opening.
    pub const fn access(mut self, access: Access) -> Self {
        self.access = access;
        self
    }

    /// Whose objects `open` accepts: ours only (default) or anyone's.
    pub const fn owner(mut self, owner: Owner) -> Self {
        self.owner = owner;
        self
    }

    /// [`Pages::Huge`] asks for (transparent) huge pages: tmpfs backs `/dev/shm`, so this is the `MADV_HUGEPAGE`
    /// hint, honoured where `/sys/kernel/mm/transparent_hugepage/shmem_enabled` allows. For
    /// guaranteed huge pages use [`Memfd`](crate::Memfd) or [`Anon`](crate::Anon).
    pub const fn pages(mut self, pages: Pages) -> Self {
        self.pages = pages;
        self
    }

    /// When opening finds a size-0 object (its creator has not sized it yet), keep checking for
    /// up to `limit` instead of failing at once with [`Error::NotReady`].
    pub const fn wait_ready(mut self, limit: Duration) -> Self {
        self.ready_wait = limit;
        self
    }

    /// `shm_open(O_CREAT|O_EXCL|O_NOFOLLOW)`—Creates a new segment exclusively, mode set with
    /// `fchmod`, memory reserved with `posix_fallocate`, then maps it. Returns the owner, which
    /// unlinks the name on drop. New segments read as zeros.
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::InvalidSize`] (before any syscall),
    /// [`Error::AlreadyExists`] (also for a symlink planted at the name), [`Error::NoSpace`] when
    /// `/dev/shm` is full (nothing is left behind), [`Error::PermissionDenied`].
    #[doc(alias = "shm_open")]
    pub fn create(&self, name: &str) -> Result<Shm> {
        name::validate(name)?;
        let size = check_size(self.size.unwrap_or(0))?;
        let fd = rustix::shm::open(
            name,
            OFlags::CREATE | OFlags::EXCL | OFlags::RDWR | nofollow(),
            Mode::from_raw_mode(0o600),
        )?;
        // From here on, undo the create on any error.
        let undo = |e: Error| {
            let _ = rustix::shm::unlink(name);
            e
        };
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(self.mode)).map_err(|e| undo(e.into()))?;
        rustix::fs::fallocate(&fd, FallocateFlags::empty(), 0, size as u64).map_err(|e| {
            undo(match e {
                rustix::io::Errno::FBIG | rustix::io::Errno::INVAL => {
                    Error::InvalidSize { size: size as u64 }
                }
                e => e.into(),
            })
        })?;
        let ptr = sys::map_fd(&fd, size, true, false).map_err(|e| undo(e.into()))?;
        if self.pages == Pages::Huge {
            let _ = sys::advise_huge(ptr, size);
        }
        Ok(Shm {
            region: Region::new(ptr, size, true, Release::Munmap),
            fd,
            name: Name {
                name: name.to_owned(),
                owner_pid: Some(std::process::id()),
            },
        })
    }

    /// `shm_open(O_NOFOLLOW|O_NONBLOCK)` + `fstat`—Opens an existing segment: refuses symlinks,
    /// anything but a regular file (a FIFO or directory planted at the name: without blocking),
    /// objects of another user (unless [`Owner::Anyone`]), and a
    /// size other than [`size`](Self::size) if one was given. Returns a non-owner.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Symlink`], [`Error::NotRegular`], [`Error::WrongOwner`],
    /// [`Error::SizeMismatch`], [`Error::NotReady`] (size 0 after the wait),
    /// [`Error::PermissionDenied`].
    pub fn open(&self, name: &str) -> Result<Shm> {
        name::validate(name)?;
        let (oflags, writable) = match self.access {
            Access::ReadWrite => (OFlags::RDWR, true),
            Access::ReadOnly => (OFlags::RDONLY, false),
        };
        // O_NONBLOCK: a FIFO planted at the name (anyone may create files in /dev/shm) would
        // otherwise block a read-only open until a writer appears. It changes nothing for a
        // regular file, and is cleared again once the object is known to be one.
        let fd = rustix::shm::open(name, oflags | nofollow() | nonblock(), Mode::empty()).map_err(
            |e| match e {
                rustix::io::Errno::ISDIR | rustix::io::Errno::NXIO => Error::NotRegular,
                e => e.into(),
            },
        )?;
        let size = self.checked_size(&fd)?;
        let fl = rustix::fs::fcntl_getfl(&fd)?;
        rustix::fs::fcntl_setfl(&fd, fl - rustix::fs::OFlags::NONBLOCK)?;
        let ptr = sys::map_fd(&fd, size, writable, false)?;
        Ok(Shm {
            region: Region::new(ptr, size, writable, Release::Munmap),
            fd,
            name: Name {
                name: name.to_owned(),
                owner_pid: None,
            },
        })
    }

    /// Opens the segment if it exists, else creates it; says which happened.
    ///
    /// # Errors
    /// As [`create`](Self::create) and [`open`](Self::open).
    pub fn open_or_create(&self, name: &str) -> Result<(Shm, Opened)> {
        loop {
            match self.create(name) {
                Ok(s) => return Ok((s, Opened::Created)),
                Err(Error::AlreadyExists) => {}
                Err(e) => return Err(e),
            }
            match self.open(name) {
                Ok(s) => return Ok((s, Opened::Existing)),
                Err(Error::NotFound) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn checked_size(&self, fd: &OwnedFd) -> Result<usize> {
        let deadline = Instant::now().checked_add(self.ready_wait);
        loop {
            let st = rustix::fs::fstat(fd)?;
            if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
                return Err(Error::NotRegular);
            }
            if self.owner == Owner::Me && st.st_uid != rustix::process::geteuid().as_raw() {
                return Err(Error::WrongOwner { uid: st.st_uid });
            }
            let actual = st.st_size.max(0) as u64;
            if actual == 0 {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(Error::NotReady);
                }
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            if let Some(expected) = self.size {
                if expected != actual {
                    return Err(Error::SizeMismatch { expected, actual });
                }
            }
            return check_size(actual);
        }
    }
}

/// A POSIX named shared-memory segment (`/dev/shm/NAME` on Linux), mapped.
///
/// Dereferences to its [`Region`]. The owner (from [`create`](ShmOptions::create)) unlinks the
/// name on drop, only in the process that created it; an opener never removes anything.
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
pub struct Shm {
    region: Region,
    fd: OwnedFd,
    name: Name,
}

/// The name, and who unlinks it on drop.
struct Name {
    name: String,
    owner_pid: Option<u32>,
}

impl Name {
    fn is_owner(&self) -> bool {
        self.owner_pid == Some(std::process::id())
    }
}

impl Drop for Name {
    fn drop(&mut self) {
        if self.is_owner() {
            let _ = rustix::shm::unlink(self.name.as_str());
        }
    }
}

impl fmt::Debug for Shm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shm")
            .field("name", &self.name.name)
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

    /// Opens an existing segment that must have `size` bytes (see [`ShmOptions::open`]).
    ///
    /// # Errors
    /// As [`ShmOptions::open`].
    pub fn open(name: &str, size: u64) -> Result<Shm> {
        ShmOptions::new().size(size).open(name)
    }

    /// The segment's name.
    pub fn name(&self) -> &str {
        &self.name.name
    }

    /// Whether this handle created the segment and will unlink it on drop.
    pub fn is_owner(&self) -> bool {
        self.name.is_owner()
    }

    /// Keeps the name after drop: the segment stays until [`unlink`] (or a reboot).
    pub fn persist(mut self) -> Shm {
        self.name.owner_pid = None;
        self
    }

    /// Checks that the object still has the size we mapped. Another process with write access
    /// can `ftruncate` a named segment; touching pages past the new end then raises `SIGBUS`.
    /// Call this after suspicious events, or use a sealed [`Memfd`](crate::Memfd).
    ///
    /// # Errors
    /// [`Error::SizeMismatch`] if it shrank or grew.
    pub fn check_size(&self) -> Result<()> {
        let actual = rustix::fs::fstat(&self.fd)?.st_size.max(0) as u64;
        let expected = self.region.len() as u64;
        if actual != expected {
            return Err(Error::SizeMismatch { expected, actual });
        }
        Ok(())
    }
}

/// `shm_unlink(name)`—Removes a name (a stale segment); mappings stay valid until unmapped.
///
/// # Errors
/// [`Error::InvalidName`], [`Error::NotFound`], [`Error::PermissionDenied`].
#[doc(alias = "shm_unlink")]
pub fn unlink(name: &str) -> Result<()> {
    name::validate(name)?;
    rustix::shm::unlink(name)?;
    Ok(())
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
    /// The descriptor, e.g. to pass to another process. The mapping is released, and an owner
    /// still unlinks the name (the object lives on while a descriptor or mapping refers to it).
    fn from(shm: Shm) -> OwnedFd {
        shm.fd
    }
}

impl AsRawFd for Shm {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
