//! System V shared memory: `shmget`, `shmat`, `shmdt`, `shmctl(IPC_RMID)`.

use std::ffi::CString;
use std::ops::Deref;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::posix::{Access, Pages};
use crate::region::{Region, Release, Segment, check_size};
use crate::sys;

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
        let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::InvalidName)?;
        Ok(Key(sys::ftok(&c, proj_id)?))
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

/// A System V shared-memory segment, attached.
///
/// The owner (from [`create`](Self::create)) marks it for removal (`IPC_RMID`) on drop, only in
/// the process that created it; the kernel frees it once the last process detaches. Segments
/// outlive processes otherwise: `ipcs -m` lists them. Dereferences to its [`Region`].
///
/// ```
/// use ipc_shm::SysvShm;
/// use ipc_shm::sysv::Key;
/// let seg = SysvShm::create(Key::PRIVATE, 4096)?;
/// seg.write::<u32>(0, &5)?;
/// let again = SysvShm::attach(seg.id(), ipc_shm::Access::ReadOnly)?;
/// assert_eq!(again.read::<u32>(0)?, 5);
/// assert!(again.write::<u32>(0, &6).is_err()); // read-only attachment
/// # Ok::<(), ipc_shm::Error>(())
/// ```
#[derive(Debug)]
pub struct SysvShm {
    region: Region,
    id: i32,
    owner_pid: Option<u32>,
}

impl SysvShm {
    /// `shmget(key, size, IPC_CREAT|IPC_EXCL|0600)` + `shmat`—Creates a segment exclusively
    /// and attaches it read-write. Returns the owner. `key` is a [`Key`] or an `i32`; with
    /// [`Key::PRIVATE`] the segment is reachable only through its [`id`](Self::id). New
    /// segments read as zeros.
    ///
    /// # Errors
    /// [`Error::InvalidSize`] (before any syscall), [`Error::AlreadyExists`],
    /// [`Error::LimitExceeded`] (`EINVAL` beyond `/proc/sys/kernel/shmmax`, `ENOSPC` beyond
    /// `shmmni`/`shmall`).
    #[doc(alias = "shmget")]
    pub fn create(key: impl Into<Key>, size: u64) -> Result<SysvShm> {
        Self::create_with(key, size, 0o600, Pages::Normal)
    }

    /// As [`create`](Self::create) with permission bits `mode` and, for [`Pages::Huge`],
    /// `SHM_HUGETLB`.
    ///
    /// # Errors
    /// As `create`; [`Error::HugePagesUnavailable`] for huge pages without reserved ones.
    pub fn create_with(key: impl Into<Key>, size: u64, mode: u32, pages: Pages) -> Result<SysvShm> {
        let key = key.into();
        let huge = pages == Pages::Huge;
        let len = check_size(size)?;
        let mut flags = libc::IPC_CREAT | libc::IPC_EXCL | (mode & 0o777) as i32;
        if huge {
            flags |= libc::SHM_HUGETLB;
        }
        let id =
            sys::shmget(key.0, len, flags).map_err(|e| {
                match rustix::io::Errno::from_io_error(&e) {
                    Some(rustix::io::Errno::INVAL) => Error::LimitExceeded {
                        what: "segment size (/proc/sys/kernel/shmmax)",
                        requested: size,
                        limit: read_proc("/proc/sys/kernel/shmmax"),
                    },
                    Some(rustix::io::Errno::NOSPC) => Error::LimitExceeded {
                        what: "segments (/proc/sys/kernel/shmmni) or pages (shmall)",
                        requested: size,
                        limit: read_proc("/proc/sys/kernel/shmmni"),
                    },
                    Some(rustix::io::Errno::NOMEM | rustix::io::Errno::PERM) if huge => {
                        Error::HugePagesUnavailable
                    }
                    _ => e.into(),
                }
            })?;
        let ptr = match sys::shmat(id, 0) {
            Ok(p) => p,
            Err(e) => {
                let _ = sys::shm_rmid(id);
                return Err(e.into());
            }
        };
        Ok(SysvShm {
            region: Region::new(ptr, len, true, Release::Shmdt),
            id,
            owner_pid: Some(std::process::id()),
        })
    }

    /// Attaches the existing segment with `key` (`shmget(key, 0, 0)`), which must belong to our
    /// effective uid and have `size` bytes.
    ///
    /// # Errors
    /// [`Error::NotFound`] (also for [`Key::PRIVATE`], which names no existing segment: attach
    /// those by id), [`Error::WrongOwner`], [`Error::SizeMismatch`], [`Error::PermissionDenied`].
    pub fn open(key: impl Into<Key>, size: u64, access: Access) -> Result<SysvShm> {
        let key = key.into();
        if key == Key::PRIVATE {
            // shmget(IPC_PRIVATE, 0, 0) would try to create a segment, not find one.
            return Err(Error::NotFound);
        }
        let id = sys::shmget(key.0, 0, 0)?;
        let (uid, actual, _) = sys::shm_stat(id).map_err(not_found)?;
        if uid != rustix::process::geteuid().as_raw() {
            return Err(Error::WrongOwner { uid });
        }
        if actual != size {
            return Err(Error::SizeMismatch {
                expected: size,
                actual,
            });
        }
        let seg = Self::attach(id, access)?;
        // `attach` measured the segment it actually attached: the same one, unless the key was
        // removed and reused in between.
        if seg.len() as u64 != size {
            return Err(Error::SizeMismatch {
                expected: size,
                actual: seg.len() as u64,
            });
        }
        Ok(seg)
    }

    /// `shmat(id)`—Attaches a segment by id (e.g. received from the creator), of whatever size it
    /// has. Returns a non-owner.
    ///
    /// # Errors
    /// [`Error::PermissionDenied`], `EINVAL` (no such id, or marked removed) as [`Error::NotFound`].
    #[doc(alias = "shmat")]
    pub fn attach(id: i32, access: Access) -> Result<SysvShm> {
        let (flags, writable) = match access {
            Access::ReadWrite => (0, true),
            Access::ReadOnly => (libc::SHM_RDONLY, false),
        };
        let ptr = sys::shmat(id, flags).map_err(not_found)?;
        // Measure the segment only now that it is attached: while we are attached the kernel
        // keeps the segment, and its id, even if someone removes it, so this is the size of the
        // memory we mapped (measured before `shmat`, the id could have been removed and reused
        // for a smaller segment in between). A System V segment never changes size.
        let len = match sys::shm_stat(id)
            .map_err(not_found)
            .and_then(|(_, size, _)| check_size(size))
        {
            Ok(len) => len,
            Err(e) => {
                sys::shmdt(ptr);
                return Err(e);
            }
        };
        Ok(SysvShm {
            region: Region::new(ptr, len, writable, Release::Shmdt),
            id,
            owner_pid: None,
        })
    }

    /// The segment id (what `ipcs -m` shows; what another process passes to [`attach`](Self::attach)).
    pub fn id(&self) -> i32 {
        self.id
    }

    /// Whether this handle created the segment and removes it on drop.
    pub fn is_owner(&self) -> bool {
        self.owner_pid == Some(std::process::id())
    }

    /// Keeps the segment after drop (remove it later with [`remove`]).
    pub fn persist(mut self) -> SysvShm {
        self.owner_pid = None;
        self
    }
}

fn not_found(e: std::io::Error) -> Error {
    match rustix::io::Errno::from_io_error(&e) {
        Some(rustix::io::Errno::INVAL | rustix::io::Errno::IDRM) => Error::NotFound,
        _ => e.into(),
    }
}

fn read_proc(path: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// `shmctl(id, IPC_RMID)`—Marks a segment for removal (a stale one, or a persisted one).
///
/// # Errors
/// [`Error::NotFound`], [`Error::PermissionDenied`].
#[doc(alias = "IPC_RMID")]
pub fn remove(id: i32) -> Result<()> {
    sys::shm_rmid(id).map_err(not_found)
}

impl Drop for SysvShm {
    fn drop(&mut self) {
        if self.is_owner() {
            let _ = sys::shm_rmid(self.id);
        }
    }
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
