//! memfd: anonymous shared memory behind a descriptor, with seals.

use std::fmt;
use std::ops::{BitOr, Deref};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use rustix::fs::{FallocateFlags, MemfdFlags, SealFlags};

use crate::error::{Error, Result};
use crate::region::{Region, Release, Segment, check_size};
use crate::sys;

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
/// The descriptor is the only handle: pass it to a child (for example as its stdin, or with
/// `SCM_RIGHTS`); the receiver calls [`Memfd::from_fd`] with the seals it requires, so a peer
/// cannot shrink the file under its mapping. Dereferences to its [`Region`].
///
/// ```
/// use ipc_shm::{Memfd, Seals};
/// let mut m = Memfd::create("doc", 4096)?;
/// m.write_bytes(0, b"hello")?;
/// m.seal(Seals::SIZE | Seals::WRITE)?;              // now immutable, and mapped read-only
/// assert_eq!(m.sealed_bytes().unwrap()[..5], *b"hello");
/// let fd = m.as_fd().try_clone_to_owned().unwrap();  // what a peer would receive
/// let peer = Memfd::from_fd(fd, Seals::SIZE)?;       // refuses an unsealed memfd
/// assert_eq!(peer.len(), 4096);
/// # use std::os::fd::AsFd;
/// # Ok::<(), ipc_shm::Error>(())
/// ```
pub struct Memfd {
    region: Region,
    fd: OwnedFd,
    len: usize,
    /// Sealed against writes *and* shrinking: the contents can never change nor go away, so
    /// [`sealed_bytes`](Memfd::sealed_bytes) may lend them as `&[u8]`.
    frozen: bool,
}

impl fmt::Debug for Memfd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Memfd")
            .field("fd", &self.fd)
            .field("len", &self.len)
            .field("frozen", &self.frozen)
            .finish()
    }
}

impl Memfd {
    /// Creates a memfd of `size` bytes (reserved with `fallocate`, so a full memory cgroup is a
    /// clean [`Error::NoSpace`] now, not a SIGBUS later) and maps it read-write. `name` is only a
    /// label shown in `/proc/PID/fd`.
    ///
    /// # Errors
    /// [`Error::InvalidSize`], [`Error::InvalidName`] (a NUL or more than 249 bytes),
    /// [`Error::NoSpace`].
    #[doc(alias = "memfd_create")]
    pub fn create(name: &str, size: u64) -> Result<Memfd> {
        Self::create_with(name, size, false)
    }

    /// As [`create`](Self::create), backed by huge pages (`MFD_HUGETLB`); `size` must be a
    /// multiple of the huge page size.
    ///
    /// # Errors
    /// [`Error::HugePagesUnavailable`] when the system has none reserved, and as `create`.
    pub fn create_huge(name: &str, size: u64) -> Result<Memfd> {
        Self::create_with(name, size, true)
    }

    fn create_with(name: &str, size: u64, huge: bool) -> Result<Memfd> {
        if name.len() > 249 || name.contains('\0') {
            return Err(Error::InvalidName);
        }
        let len = check_size(size)?;
        let mut flags = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
        if huge {
            flags |= MemfdFlags::HUGETLB;
        }
        let fd = rustix::fs::memfd_create(name, flags).map_err(|e| match e {
            rustix::io::Errno::INVAL if huge => Error::HugePagesUnavailable,
            e => e.into(),
        })?;
        let reserve = if huge {
            rustix::fs::ftruncate(&fd, size)
        } else {
            rustix::fs::fallocate(&fd, FallocateFlags::empty(), 0, size)
        };
        reserve.map_err(|e| match e {
            rustix::io::Errno::FBIG | rustix::io::Errno::INVAL => Error::InvalidSize { size },
            e => e.into(),
        })?;
        let ptr =
            sys::map_fd(&fd, len, true, huge).map_err(
                |e| match rustix::io::Errno::from_io_error(&e) {
                    Some(rustix::io::Errno::NOMEM | rustix::io::Errno::INVAL) if huge => {
                        Error::HugePagesUnavailable
                    }
                    _ => e.into(),
                },
            )?;
        Ok(Memfd {
            region: Region::new(ptr, len, true, Release::Munmap),
            fd,
            len,
            frozen: false,
        })
    }

    /// Maps a memfd received from a peer, after checking that it carries at least `required`
    /// seals. With [`Seals::SHRINK`] the peer cannot shrink it under the mapping (no SIGBUS);
    /// with [`Seals::WRITE`] (or [`Seals::FUTURE_WRITE`]) it is mapped read-only, and with
    /// `WRITE` and `SHRINK` its bytes can be borrowed ([`sealed_bytes`](Self::sealed_bytes)).
    ///
    /// # Errors
    /// [`Error::NotSealed`] naming the missing seals, [`Error::NotRegular`], [`Error::NotReady`]
    /// for a size-0 file, or what `fcntl`/`fstat`/`mmap` fail with.
    pub fn from_fd(fd: OwnedFd, required: Seals) -> Result<Memfd> {
        let have = rustix::fs::fcntl_get_seals(&fd).map_err(|e| match e {
            rustix::io::Errno::INVAL => Error::NotRegular,
            e => e.into(),
        })?;
        let have = Seals(have.bits());
        if !have.contains(required) {
            return Err(Error::NotSealed {
                missing: required.0 & !have.0,
            });
        }
        let st = rustix::fs::fstat(&fd)?;
        if st.st_size == 0 {
            return Err(Error::NotReady);
        }
        let len = check_size(st.st_size.max(0) as u64)?;
        let writable = !(have.contains(Seals::WRITE) || have.contains(Seals::FUTURE_WRITE));
        let ptr = sys::map_fd(&fd, len, writable, false)?;
        Ok(Memfd {
            region: Region::new(ptr, len, writable, Release::Munmap),
            fd,
            len,
            frozen: have.contains(Seals::WRITE | Seals::SHRINK),
        })
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
        if !seals.contains(Seals::WRITE) {
            rustix::fs::fcntl_add_seals(&self.fd, add)?;
            // E.g. SHRINK added to a file already sealed against writes (and so mapped
            // read-only, the full length).
            self.frozen = !self.region.is_writable()
                && self.region.len() == self.len
                && self.seals()?.contains(Seals::WRITE | Seals::SHRINK);
            return Ok(());
        }
        // The kernel refuses F_SEAL_WRITE while any shared mapping that may write exists, so
        // unmap ours first (a one-page placeholder holds the place), seal, then map read-only.
        let was_writable = self.region.is_writable();
        let placeholder = sys::map_anon(1, false)?;
        drop(std::mem::replace(
            &mut self.region,
            Region::new(placeholder, 1, false, Release::Munmap),
        ));
        if let Err(e) = rustix::fs::fcntl_add_seals(&self.fd, add) {
            if let Ok(p) = sys::map_fd(&self.fd, self.len, was_writable, false) {
                self.region = Region::new(p, self.len, was_writable, Release::Munmap);
            }
            return Err(e.into());
        }
        let ro = sys::map_fd(&self.fd, self.len, false, false)?;
        self.region = Region::new(ro, self.len, false, Release::Munmap);
        self.frozen = self.seals()?.contains(Seals::WRITE | Seals::SHRINK);
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
    /// ([`Seals::WRITE`] and [`Seals::SHRINK`]): then no process can change them or cut them
    /// off (a write seal alone still lets a peer `ftruncate` the file, after which touching the
    /// slice would raise SIGBUS), so a `&[u8]` is sound. `None` otherwise.
    pub fn sealed_bytes(&self) -> Option<&[u8]> {
        if !self.frozen {
            return None;
        }
        Some(sys::sealed_slice(&self.region))
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
