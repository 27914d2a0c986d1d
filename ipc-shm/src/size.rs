//! Sizes: the one upper bound every constructor applies before it creates anything, and
//! [`Size`], what an opener accepts of a size its peer chose.

use std::fmt;

use crate::error::{Error, Result};

/// The largest segment any constructor accepts, before any system call: what the user address
/// space can hold in one mapping (x86-64: 128 TiB; aarch64: 256 TiB; other 64-bit targets:
/// 128 TiB; 32-bit targets: `isize::MAX`). A soft `RLIMIT_AS`, when set, lowers it further.
///
/// A size above the bound can never be mapped, so [`Shm::create`](crate::Shm::create),
/// [`Memfd::create`](crate::Memfd::create), [`Anon::new`](crate::Anon::new),
/// [`SysvShm::create`](crate::SysvShm::create) and [`Ring::segment_size`](crate::Ring) answer
/// [`Error::InvalidSize`] at once, and nothing is created, reserved or left behind. Below the
/// bound, every constructor maps before it reserves memory, so a size the address space cannot
/// hold after all fails in `mmap` (cheaply) and never reaches `fallocate`.
///
/// ```
/// assert!(ipc_shm::MAX_SIZE >= 1 << 31);
/// let huge = ipc_shm::Anon::new(ipc_shm::MAX_SIZE + 1);
/// assert!(matches!(huge, Err(ipc_shm::Error::InvalidSize { .. })));
/// ```
pub const MAX_SIZE: u64 = if cfg!(target_pointer_width = "32") {
    isize::MAX as u64
} else if cfg!(target_arch = "aarch64") {
    1 << 48
} else {
    1 << 47
};

/// The bound in force now: [`MAX_SIZE`], lowered by a soft `RLIMIT_AS` (read with `getrlimit`,
/// which creates nothing).
pub(crate) fn max_size() -> u64 {
    match rustix::process::getrlimit(rustix::process::Resource::As).current {
        Some(limit) => limit.min(MAX_SIZE),
        None => MAX_SIZE,
    }
}

/// Checks a size a caller asked for: not zero, at most [`max_size`].
pub(crate) fn check_size(size: u64) -> Result<usize> {
    if size == 0 {
        return Err(Error::InvalidSize {
            size,
            reason: "a segment cannot be empty",
        });
    }
    if size > MAX_SIZE {
        return Err(Error::InvalidSize {
            size,
            reason: "larger than the address space can map (ipc_shm::MAX_SIZE)",
        });
    }
    if size > max_size() {
        return Err(Error::InvalidSize {
            size,
            reason: "larger than this process may map (RLIMIT_AS)",
        });
    }
    usize::try_from(size).map_err(|_| Error::InvalidSize {
        size,
        reason: "larger than the address space can map (ipc_shm::MAX_SIZE)",
    })
}

/// [`check_size`] for a segment backed by a file (POSIX, memfd): also refuses what the file
/// size limit forbids, before `fallocate` would raise `SIGXFSZ` (which kills a process that has
/// not ignored it) or fail with `EFBIG`.
pub(crate) fn check_file_size(size: u64) -> Result<usize> {
    let len = check_size(size)?;
    if let Some(limit) = rustix::process::getrlimit(rustix::process::Resource::Fsize).current {
        if size > limit {
            return Err(Error::InvalidSize {
                size,
                reason: "larger than this process may make a file (RLIMIT_FSIZE)",
            });
        }
    }
    if size > i64::MAX as u64 {
        return Err(Error::InvalidSize {
            size,
            reason: "larger than a file can be",
        });
    }
    Ok(len)
}

/// The size an opener accepts for a segment whose size its peer chose: exactly this many bytes,
/// or at most this many. Nothing in the crate maps (or allocates) a peer-chosen amount without
/// one of these.
///
/// A plain `u64` converts into [`Size::Exact`], so `Shm::open(name, 4096)` asks for exactly
/// 4096 bytes.
///
/// ```
/// use ipc_shm::Size;
/// assert_eq!(Size::from(4096), Size::Exact(4096));
/// assert!(Size::AtMost(1 << 20).accepts(4096));
/// assert!(!Size::Exact(4096).accepts(8192));
/// assert_eq!(Size::AtMost(64).to_string(), "at most 64 bytes");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Size {
    /// Exactly this many bytes.
    Exact(u64),
    /// Any size from 1 up to this many bytes.
    AtMost(u64),
}

impl Size {
    /// Whether a segment of `actual` bytes is acceptable.
    pub const fn accepts(self, actual: u64) -> bool {
        match self {
            Size::Exact(n) => actual == n,
            Size::AtMost(n) => actual <= n,
        }
    }

    /// Checks the bound itself: `Exact(0)` and `AtMost(0)` accept nothing; an exact size above
    /// the address space could never be mapped.
    pub(crate) fn check(self) -> Result<Size> {
        match self {
            Size::Exact(n) => check_size(n).map(|_| self),
            Size::AtMost(0) => Err(Error::InvalidSize {
                size: 0,
                reason: "a segment cannot be empty",
            }),
            Size::AtMost(n) => Ok(Size::AtMost(n.min(MAX_SIZE))),
        }
    }
}

impl From<u64> for Size {
    fn from(n: u64) -> Size {
        Size::Exact(n)
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Size::Exact(n) => write!(f, "{n} bytes"),
            Size::AtMost(n) => write!(f, "at most {n} bytes"),
        }
    }
}
