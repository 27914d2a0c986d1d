//! Anonymous shared memory (`MAP_SHARED | MAP_ANONYMOUS`), shared with forked children.

use std::ops::Deref;

use crate::error::{Error, Result};
use crate::region::{Region, Release, Segment, check_size};
use crate::sys;

/// An anonymous `MAP_SHARED` region: no name, no descriptor. A child made by `fork` shares it
/// with its parent (the mapping is inherited); unrelated processes cannot reach it. It is
/// unmapped when dropped in each process. New regions read as zeros.
///
/// ```
/// let a = ipc_shm::Anon::new(1 << 16)?;
/// assert_eq!(a.read::<u64>(8)?, 0);
/// # Ok::<(), ipc_shm::Error>(())
/// ```
#[derive(Debug)]
pub struct Anon {
    region: Region,
}

impl Anon {
    /// Maps `size` bytes of anonymous shared memory.
    ///
    /// # Errors
    /// [`Error::InvalidSize`] (zero or too large), `ENOMEM` as [`Error::Io`].
    #[doc(alias = "mmap")]
    pub fn new(size: u64) -> Result<Anon> {
        let len = check_size(size)?;
        let ptr = sys::map_anon(len, false)?;
        Ok(Anon {
            region: Region::new(ptr, len, true, Release::Munmap),
        })
    }

    /// As [`new`](Self::new), backed by huge pages (`MAP_HUGETLB`); `size` is rounded up by the
    /// kernel to the huge page size.
    ///
    /// # Errors
    /// [`Error::HugePagesUnavailable`] when none are reserved (`/proc/sys/vm/nr_hugepages`).
    pub fn new_huge(size: u64) -> Result<Anon> {
        let len = check_size(size)?;
        let ptr =
            sys::map_anon(len, true).map_err(|e| match rustix::io::Errno::from_io_error(&e) {
                Some(rustix::io::Errno::NOMEM | rustix::io::Errno::INVAL) => {
                    Error::HugePagesUnavailable
                }
                _ => e.into(),
            })?;
        Ok(Anon {
            region: Region::new(ptr, len, true, Release::Munmap),
        })
    }
}

impl Deref for Anon {
    type Target = Region;
    fn deref(&self) -> &Region {
        &self.region
    }
}

impl Segment for Anon {
    fn region(&self) -> &Region {
        &self.region
    }
}
