//! Anonymous shared memory (`MAP_SHARED | MAP_ANONYMOUS`), shared with forked children.

use std::ops::Deref;

use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::posix::map_error;
use crate::region::{Region, Segment};
use crate::size::check_size;
use crate::sys::Map;

/// An anonymous `MAP_SHARED` region: no name, no descriptor. A child made by `fork` shares it
/// with its parent (the mapping is inherited); unrelated processes cannot reach it. It is
/// unmapped when dropped in each process. New regions read as zeros.
///
/// ```
/// let a = ipc_shm::Anon::new(1 << 16)?;
/// assert_eq!(a.read::<u64>(8)?, 0);
/// # Ok::<(), ipc_shm::Error>(())
/// ```
///
/// # After fork
/// This is the type made for `fork`: in a child forked from a multi-threaded parent, the
/// [`Region`] may be used (see there) and the handle dropped (one `munmap`); both processes see
/// each other's writes. The constructors are not for such a child.
#[derive(Debug)]
pub struct Anon {
    region: Region,
}

impl Anon {
    /// Maps `size` bytes of anonymous shared memory. The size is checked before the `mmap`
    /// ([`MAX_SIZE`](crate::MAX_SIZE), `RLIMIT_AS`).
    ///
    /// # Errors
    /// [`Error::InvalidSize`] (zero or too large), [`Error::LimitExceeded`] (`ENOMEM`: the
    /// kernel's overcommit policy or the address space refused it).
    #[doc(alias = "mmap")]
    pub fn new(size: u64) -> Result<Anon> {
        let len = check_size(size)?;
        let map = Map::anon(len, false).map_err(|e| map_error("anonymous mapping", size, e))?;
        Ok(Anon {
            region: Region::new(map),
        })
    }

    /// As [`new`](Self::new), backed by huge pages (`MAP_HUGETLB`); `size` is rounded up by the
    /// kernel to the huge page size.
    ///
    /// # Errors
    /// [`Error::HugePagesUnavailable`] when none are reserved (`/proc/sys/vm/nr_hugepages`).
    pub fn new_huge(size: u64) -> Result<Anon> {
        let len = check_size(size)?;
        let map = Map::anon(len, true).map_err(|e| match Errno::from_io_error(&e) {
            Some(Errno::NOMEM | Errno::INVAL) => Error::HugePagesUnavailable,
            _ => e.into(),
        })?;
        Ok(Anon {
            region: Region::new(map),
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
