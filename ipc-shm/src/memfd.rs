//! memfd: anonymous shared memory behind a descriptor, with seals.

use std::fmt;
use std::ops::{BitOr, Deref};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use rustix::fs::{MemfdFlags, OFlags, SealFlags};
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::posix::{map_error, reserve};
use crate::region::{Region, Segment};
use crate::size::{Size, check_file_size, check_size};
use crate::sys::{self, Map};

/// A set of memfd seals (`F_SEAL_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Seals(u32);

impl Seals {
    /// No seals.
    pub const NONE: Seals = Seals(0);
    /// `F_SEAL_SEAL`: no more seals can be added.
    pub const SEAL: Seals = Seals(SealFlags::SEAL.bits());
    /// `F_SEAL_SHRINK`: the size cannot be reduced (so a mapping never SIGBUSes).
    pub const SHRINK: Seals = Seals(SealFlags::SHRINK.bits());
    /// `F_SEAL_GROW`: the size cannot be increased.
    pub const GROW: Seals = Seals(SealFlags::GROW.bits());
    /// `F_SEAL_WRITE`: the contents cannot change (needs no writable mapping to exist).
    pub const WRITE: Seals = Seals(SealFlags::WRITE.bits());
    /// `F_SEAL_FUTURE_WRITE`: no new writable mappings or writes; existing ones keep writing.
    pub const FUTURE_WRITE: Seals = Seals(SealFlags::FUTURE_WRITE.bits());
    /// Shrink and grow: the size is fixed, the usual requirement of an opener.
    pub const SIZE: Seals = Seals(Self::SHRINK.0 | Self::GROW.0);

    /// The raw `F_SEAL_*` bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Whether all of `other` is in `self`.
    pub const fn contains(self, other: Seals) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for Seals {
    type Output = Seals;
    fn bitor(self, rhs: Seals) -> Seals {
        Seals(self.0 | rhs.0)
    }
}

/// A memfd (`memfd_create(MFD_CLOEXEC | MFD_ALLOW_SEALING)`), sized and mapped.
///
/// The descriptor is the only handle: pass it to a child at a chosen descriptor number with
/// [`ChildFds`](crate::ChildFds) (or as its stdin), or with `SCM_RIGHTS`; the receiver calls
/// [`Memfd::from_inherited`] or [`Memfd::from_fd`] with the seals and the size it accepts, so a
/// peer can neither shrink the file under its mapping nor make it map (or allocate) more than
/// it chose. Dereferences to its [`Region`].
///
/// ```
/// use std::os::fd::AsFd;
/// use ipc_shm::{Memfd, Seals, Size};
/// let mut m = Memfd::create("doc", 4096)?;
/// m.write_bytes(0, b"hello")?;
/// m.seal(Seals::SIZE | Seals::WRITE)?;              // now immutable, and mapped read-only
/// assert_eq!(m.sealed_bytes().unwrap()[..5], *b"hello");
/// let fd = m.as_fd().try_clone_to_owned().unwrap();  // what a peer would receive
/// let peer = Memfd::from_fd(fd, Seals::SIZE, Size::AtMost(1 << 20))?; // sealed, and not huge
/// assert_eq!(peer.len(), 4096);
/// # Ok::<(), ipc_shm::Error>(())
/// ```
///
/// # After fork
/// A forked child shares the mapping and the descriptor. In a child forked from a
/// multi-threaded parent it may use the [`Region`], [`sealed_bytes`](Self::sealed_bytes),
/// `as_fd`, and drop the handle (`munmap`, `close`); [`seal`](Self::seal) and the constructors
/// allocate and are not for such a child. A memfd has no name, so nothing is ever removed.
pub struct Memfd {
    region: Region,
    fd: OwnedFd,
    /// `memfd:LABEL`, or `fd N` for a received descriptor: the name errors carry.
    name: String,
}

impl fmt::Debug for Memfd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Memfd")
            .field("name", &self.name)
            .field("fd", &self.fd)
            .field("len", &self.region.len())
            .field("frozen", &self.region.map().frozen_bytes().is_some())
            .finish()
    }
}

/// The longest memfd label: NAME_MAX less the `memfd:` prefix the kernel adds.
const LABEL_MAX: usize = 249;

impl Memfd {
    /// Creates a memfd of `size` bytes and maps it read-write, then reserves its memory with
    /// `fallocate` (so a full memory cgroup is a clean [`Error::NoSpace`] now, not a SIGBUS
    /// later). `label` is only shown in `/proc/PID/fd` (as `memfd:LABEL`).
    ///
    /// The size is checked before any system call ([`MAX_SIZE`](crate::MAX_SIZE), `RLIMIT_AS`,
    /// `RLIMIT_FSIZE`), and the file is mapped before its memory is reserved, so a size the
    /// address space cannot hold never reaches `fallocate`. A memfd is bounded by nothing but
    /// memory: a size the address space can map but the machine cannot hold is reserved until
    /// the kernel refuses (`ENOMEM`/`ENOSPC`), so choose sizes you mean.
    ///
    /// # Errors
    /// [`Error::InvalidSize`], [`Error::InvalidName`] (a NUL or more than 249 bytes),
    /// [`Error::NoSpace`], [`Error::LimitExceeded`] (`mmap`'s `ENOMEM`).
    #[doc(alias = "memfd_create")]
    pub fn create(label: &str, size: u64) -> Result<Memfd> {
        Self::create_memfd(label, size, false)
    }

    /// As [`create`](Self::create), backed by huge pages (`MFD_HUGETLB`); `size` must be a
    /// multiple of the huge page size.
    ///
    /// # Errors
    /// [`Error::HugePagesUnavailable`] when the system has none reserved, and as `create`.
    pub fn create_huge(label: &str, size: u64) -> Result<Memfd> {
        Self::create_memfd(label, size, true)
    }

    fn create_memfd(label: &str, size: u64, huge: bool) -> Result<Memfd> {
        let bad = |reason| Error::InvalidName {
            name: label.to_owned(),
            reason,
        };
        if label.len() > LABEL_MAX {
            return Err(bad("a memfd label has at most 249 bytes"));
        }
        if label.contains('\0') {
            return Err(bad("a NUL byte"));
        }
        let len = check_file_size(size)?;
        let name = format!("memfd:{label}");
        let mut flags = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
        if huge {
            flags |= MemfdFlags::HUGETLB;
        }
        let fd = rustix::fs::memfd_create(label, flags).map_err(|e| match e {
            Errno::INVAL if huge => Error::HugePagesUnavailable,
            e => Error::at(&name, e),
        })?;
        let huge_error = |e: std::io::Error| match Errno::from_io_error(&e) {
            Some(Errno::NOMEM | Errno::INVAL) => Error::HugePagesUnavailable,
            _ => Error::Io(e),
        };
        let map = if huge {
            // hugetlbfs reserves its pages at mmap; the size is set first.
            rustix::fs::ftruncate(&fd, size).map_err(|e| match e {
                Errno::FBIG | Errno::INVAL => Error::InvalidSize {
                    size,
                    reason: "not a multiple of the huge page size, or too large",
                },
                e => Error::at(&name, e),
            })?;
            Map::fd(fd.as_fd(), len, true, true).map_err(huge_error)?
        } else {
            // Map first: a size the address space cannot hold fails here, before any memory
            // is reserved.
            let map =
                Map::fd(fd.as_fd(), len, true, false).map_err(|e| map_error(&name, size, e))?;
            reserve(fd.as_fd(), size).map_err(|e| match e {
                Errno::NOSPC | Errno::NOMEM => Error::NoSpace { name: name.clone() },
                Errno::FBIG | Errno::INVAL => Error::InvalidSize {
                    size,
                    reason: "larger than the file system allows",
                },
                e => Error::at(&name, e),
            })?;
            map
        };
        Ok(Memfd {
            region: Region::new(map),
            fd,
            name,
        })
    }

    /// Maps a memfd received from a peer, after checking that it carries at least `required`
    /// seals and that its size is one `size` accepts (a `u64` is an exact size,
    /// [`Size::AtMost`] a bound): the peer chose the size, so the receiver bounds it. With
    /// [`Seals::SHRINK`] the peer cannot shrink it under the mapping (no SIGBUS); with
    /// [`Seals::WRITE`] (or [`Seals::FUTURE_WRITE`]) it is mapped read-only, and with `WRITE`
    /// and `SHRINK` its bytes can be borrowed ([`sealed_bytes`](Self::sealed_bytes)). Any tmpfs
    /// file answers the seal query, so a POSIX segment's descriptor maps too (it carries
    /// `F_SEAL_SEAL` only: require [`Seals::NONE`]).
    ///
    /// # Errors
    /// [`Error::NotSealed`] naming the missing seals, [`Error::NotRegular`], [`Error::NotReady`]
    /// for a size-0 file, [`Error::SizeMismatch`], [`Error::InvalidSize`], or what
    /// `fcntl`/`fstat`/`mmap` fail with.
    pub fn from_fd(fd: OwnedFd, required: Seals, size: impl Into<Size>) -> Result<Memfd> {
        let name = format!("fd {}", fd.as_raw_fd());
        let want = size.into().check()?;
        let have = rustix::fs::fcntl_get_seals(&fd).map_err(|e| match e {
            Errno::INVAL => Error::NotRegular { name: name.clone() },
            e => Error::at(&name, e),
        })?;
        let have = Seals(have.bits());
        if !have.contains(required) {
            return Err(Error::NotSealed {
                missing: required.0 & !have.0,
            });
        }
        let st = rustix::fs::fstat(&fd)?;
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
        let access_rw = rustix::fs::fcntl_getfl(&fd)? & OFlags::RWMODE == OFlags::RDWR;
        let writable =
            access_rw && !(have.contains(Seals::WRITE) || have.contains(Seals::FUTURE_WRITE));
        let mut map =
            Map::fd(fd.as_fd(), len, writable, false).map_err(|e| map_error(&name, actual, e))?;
        map.freeze(fd.as_fd());
        Ok(Memfd {
            region: Region::new(map),
            fd,
            name,
        })
    }

    /// Claims descriptor number `fd`, inherited from the parent (placed there with
    /// [`ChildFds`](crate::ChildFds)), and maps it as [`from_fd`](Self::from_fd) does. The
    /// number must be above 2, open, a regular file, and not claimed before in this process; it
    /// is made close-on-exec, so it is not passed on further by accident.
    ///
    /// ```no_run
    /// // In a child started with `ChildFds::new().fd_at(3, memfd)?`:
    /// let m = ipc_shm::Memfd::from_inherited(3, ipc_shm::Seals::SIZE, 4096)?;
    /// # Ok::<(), ipc_shm::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidDescriptor`], and as [`from_fd`](Self::from_fd).
    pub fn from_inherited(fd: RawFd, required: Seals, size: impl Into<Size>) -> Result<Memfd> {
        let owned = sys::claim_inherited(fd, sys::Inherit::Segment)
            .map_err(|reason| Error::InvalidDescriptor { fd, reason })?;
        Memfd::from_fd(owned, required, size)
    }

    /// Adds seals. Sealing [`Seals::WRITE`] first unmaps the writable mapping (the kernel refuses
    /// the seal while one exists) and maps the file again read-only. [`Seals::FUTURE_WRITE`]
    /// leaves existing writable mappings (ours included) writable, and refuses new ones.
    ///
    /// # Errors
    /// [`Error::PermissionDenied`] when the memfd is already sealed with [`Seals::SEAL`];
    /// `EBUSY` (as [`Error::Io`]) while another process has a writable mapping and `WRITE` is
    /// asked for.
    #[doc(alias = "F_ADD_SEALS")]
    pub fn seal(&mut self, seals: Seals) -> Result<()> {
        let add = SealFlags::from_bits_retain(seals.0);
        let len = self.region.len();
        if !seals.contains(Seals::WRITE) {
            rustix::fs::fcntl_add_seals(&self.fd, add).map_err(|e| Error::at(&self.name, e))?;
            // E.g. SHRINK added to a file already sealed against writes (and so mapped
            // read-only).
            self.region.map_mut().freeze(self.fd.as_fd());
            return Ok(());
        }
        // The kernel refuses F_SEAL_WRITE while any shared mapping that may write exists, so
        // unmap ours first (a one-page placeholder holds the place), seal, then map read-only.
        let was_writable = self.region.is_writable();
        let placeholder = Map::anon(1, false)?;
        drop(std::mem::replace(
            &mut self.region,
            Region::new(placeholder),
        ));
        if let Err(e) = rustix::fs::fcntl_add_seals(&self.fd, add) {
            if let Ok(m) = Map::fd(self.fd.as_fd(), len, was_writable, false) {
                self.region = Region::new(m);
            }
            return Err(Error::at(&self.name, e));
        }
        let mut ro = Map::fd(self.fd.as_fd(), len, false, false)?;
        ro.freeze(self.fd.as_fd());
        self.region = Region::new(ro);
        Ok(())
    }

    /// The seals the memfd carries now.
    ///
    /// # Errors
    /// What `fcntl(F_GET_SEALS)` fails with.
    pub fn seals(&self) -> Result<Seals> {
        Ok(Seals(rustix::fs::fcntl_get_seals(&self.fd)?.bits()))
    }

    /// The contents as a byte slice, only when sealed against writes and shrinking
    /// ([`Seals::WRITE`] and [`Seals::SHRINK`]) and mapped read-only: then no process can change
    /// them or cut them off (a write seal alone still lets a peer `ftruncate` the file, after
    /// which touching the slice would raise SIGBUS), so a `&[u8]` is sound. `None` otherwise.
    pub fn sealed_bytes(&self) -> Option<&[u8]> {
        self.region.map().frozen_bytes()
    }

    /// The descriptor, for passing to another process (the mapping is released).
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }
}

impl Deref for Memfd {
    type Target = Region;
    fn deref(&self) -> &Region {
        &self.region
    }
}

impl Segment for Memfd {
    fn region(&self) -> &Region {
        &self.region
    }
}

impl From<Memfd> for OwnedFd {
    fn from(m: Memfd) -> OwnedFd {
        m.into_fd()
    }
}

impl AsFd for Memfd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Memfd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
