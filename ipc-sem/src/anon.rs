//! Anonymous placement: a sealed memfd that holds one slot, passed to children as a descriptor.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use rustix::fs::{FileType, MemfdFlags, Mode, SealFlags};
use rustix::io::Errno;

use crate::error::{Error, Result};

/// The seals every anonymous object has and every receiver demands: nobody can shrink the file
/// under a mapping (which would raise `SIGBUS`) or change its size at all.
const SEALS: SealFlags = SealFlags::SHRINK.union(SealFlags::GROW);

/// How errors name an object received as a descriptor.
pub(crate) fn fd_name(fd: BorrowedFd<'_>) -> String {
    format!("descriptor {}", fd.as_raw_fd())
}

/// `memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING)` of `len` zero bytes, mode 0600,
/// sealed against shrinking, growing and further sealing.
pub(crate) fn create(name: &str, len: usize) -> Result<OwnedFd> {
    let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
    rustix::fs::fchmod(&fd, Mode::RUSR | Mode::WUSR)?;
    rustix::fs::ftruncate(&fd, len as u64)?;
    rustix::fs::fcntl_add_seals(&fd, SEALS | SealFlags::SEAL)?;
    Ok(fd)
}

/// Checks a received descriptor before it is mapped: a regular file (a memfd is one) of
/// exactly `len` bytes, sealed against shrinking and growing.
pub(crate) fn check(fd: BorrowedFd<'_>, len: usize) -> Result<()> {
    let invalid = |reason| Error::InvalidObject {
        name: fd_name(fd),
        reason,
    };
    let st = rustix::fs::fstat(fd)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(invalid("not a memfd (not a regular file)"));
    }
    let seals = match rustix::fs::fcntl_get_seals(fd) {
        Ok(s) => s,
        Err(Errno::INVAL) => return Err(invalid("not a memfd (it takes no seals)")),
        Err(e) => return Err(e.into()),
    };
    if !seals.contains(SEALS) {
        return Err(invalid(
            "not sealed against shrinking and growing (F_SEAL_SHRINK, F_SEAL_GROW)",
        ));
    }
    let size = u64::try_from(st.st_size).unwrap_or(0);
    if size != len as u64 {
        return Err(Error::WrongSize {
            name: fd_name(fd),
            expected: len as u64,
            found: size,
        });
    }
    Ok(())
}
