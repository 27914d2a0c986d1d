//! [`Region`]: a mapping of shared memory, a pointer and a length, accessed by checked copies.

use std::fmt;
use std::mem::{align_of, size_of};

use crate::error::{Error, Result};
use crate::safe::{ShmAtomic, ShmSafe};
use crate::sys::Map;

/// A mapping of shared memory: a raw pointer and a length, unmapped on drop.
///
/// Another process may write this memory at any moment, so the region never hands out `&[u8]`,
/// `&mut [u8]` or `&T` over plain data. It copies bytes and [`ShmSafe`] values in and out at
/// checked offsets ([`read_bytes`](Self::read_bytes), [`write`](Self::write), ...), and lends
/// `&T` only for [`ShmAtomic`] types ([`atomic`](Self::atomic)). Every offset is checked:
/// out-of-range or overflowing arithmetic is [`Error::OutOfBounds`], never a panic.
///
/// Each segment type ([`Shm`](crate::Shm), [`Memfd`](crate::Memfd), [`Anon`](crate::Anon),
/// [`SysvShm`](crate::SysvShm)) dereferences to its `Region`.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// let anon = ipc_shm::Anon::new(4096)?;
/// anon.write::<u32>(8, &7)?;
/// assert_eq!(anon.read::<u32>(8)?, 7);
/// let counter = anon.atomic::<AtomicU64>(64)?;
/// counter.fetch_add(1, Ordering::SeqCst);
/// assert!(anon.read::<u8>(4096).is_err()); // out of bounds: an error, not a panic
/// # Ok::<(), ipc_shm::Error>(())
/// ```
///
/// # After fork
/// A forked child shares the mapping (`MAP_SHARED`, System V attachments are inherited). Every
/// method of a region is plain loads, stores and copies with no system call, no lock and no
/// allocation, except [`read_vec`](Self::read_vec), which allocates: all of them may be called
/// in a child forked from a multi-threaded parent (`read_vec` only where the C library's
/// allocator survives `fork`, as glibc's does). Dropping it there is one `munmap`/`shmdt`.
pub struct Region {
    map: Map,
}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Region")
            .field("ptr", &self.map.addr())
            .field("len", &self.map.len())
            .field("writable", &self.map.writable())
            .finish()
    }
}

impl Region {
    pub(crate) fn new(map: Map) -> Region {
        Region { map }
    }

    #[inline]
    pub(crate) fn map(&self) -> &Map {
        &self.map
    }

    pub(crate) fn map_mut(&mut self) -> &mut Map {
        &mut self.map
    }

    /// The length of the mapping in bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the region is empty (never, for a region made by this crate).
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    /// Whether the mapping is writable (false for read-only mappings).
    pub fn is_writable(&self) -> bool {
        self.map.writable()
    }

    /// The address of the mapping, for FFI. Dereferencing it is up to you (and `unsafe`).
    pub fn as_ptr(&self) -> *const u8 {
        self.map.addr()
    }

    fn out_of_bounds(&self, offset: usize, len: usize) -> Error {
        Error::OutOfBounds {
            offset,
            len,
            region: self.len(),
        }
    }

    /// Checks `offset..offset+len` (and, for writes, that the mapping is writable) to report
    /// the precise error; the mapping checks again before it touches memory.
    fn check(&self, offset: usize, len: usize, write: bool) -> Result<()> {
        if write && !self.is_writable() {
            return Err(Error::ReadOnly);
        }
        match offset.checked_add(len) {
            Some(end) if end <= self.len() => Ok(()),
            _ => Err(self.out_of_bounds(offset, len)),
        }
    }

    /// Copies `buf.len()` bytes at `offset` out of the region.
    ///
    /// # Errors
    /// [`Error::OutOfBounds`] if the range is not inside the region.
    pub fn read_bytes(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        self.check(offset, buf.len(), false)?;
        if self.map.read(offset, buf) {
            Ok(())
        } else {
            Err(self.out_of_bounds(offset, buf.len()))
        }
    }

    /// Copies `data` into the region at `offset`.
    ///
    /// # Errors
    /// [`Error::OutOfBounds`] if the range is not inside the region, [`Error::ReadOnly`] if the
    /// mapping is read-only.
    pub fn write_bytes(&self, offset: usize, data: &[u8]) -> Result<()> {
        self.check(offset, data.len(), true)?;
        if self.map.write(offset, data) {
            Ok(())
        } else {
            Err(self.out_of_bounds(offset, data.len()))
        }
    }

    /// Reads a copy of the `T` at `offset` (any alignment).
    ///
    /// # Errors
    /// [`Error::OutOfBounds`] if it is not inside the region.
    pub fn read<T: ShmSafe>(&self, offset: usize) -> Result<T> {
        self.check(offset, size_of::<T>(), false)?;
        self.map
            .read_value(offset)
            .ok_or_else(|| self.out_of_bounds(offset, size_of::<T>()))
    }

    /// Writes `value` at `offset` (any alignment).
    ///
    /// # Errors
    /// [`Error::OutOfBounds`], [`Error::ReadOnly`].
    pub fn write<T: ShmSafe + Copy>(&self, offset: usize, value: &T) -> Result<()> {
        self.check(offset, size_of::<T>(), true)?;
        if self.map.write_value(offset, *value) {
            Ok(())
        } else {
            Err(self.out_of_bounds(offset, size_of::<T>()))
        }
    }

    /// Reads `count` consecutive `T`s at `offset` into a new vector (one copy); `count *
    /// size_of::<T>()` is checked against the region before anything is allocated, so the
    /// allocation is never larger than the region.
    ///
    /// # Errors
    /// [`Error::OutOfBounds`] if the range overflows or is not inside the region;
    /// [`Error::LimitExceeded`] if the memory for the copy cannot be allocated.
    pub fn read_vec<T: ShmSafe>(&self, offset: usize, count: usize) -> Result<Vec<T>> {
        let bytes = count
            .checked_mul(size_of::<T>())
            .ok_or_else(|| self.out_of_bounds(offset, usize::MAX))?;
        self.check(offset, bytes, false)?;
        let mut out = Vec::new();
        out.try_reserve_exact(count)
            .map_err(|_| Error::LimitExceeded {
                what: "memory for the copy",
                requested: bytes as u64,
                limit: 0,
            })?;
        if self.map.read_into_vec(offset, count, &mut out) {
            Ok(out)
        } else {
            Err(self.out_of_bounds(offset, bytes))
        }
    }

    /// Writes the `T`s of `values` consecutively at `offset` (one copy).
    ///
    /// # Errors
    /// [`Error::OutOfBounds`], [`Error::ReadOnly`].
    pub fn write_slice<T: ShmSafe + Copy>(&self, offset: usize, values: &[T]) -> Result<()> {
        let len = size_of_val(values);
        self.check(offset, len, true)?;
        if self.map.write_slice(offset, values) {
            Ok(())
        } else {
            Err(self.out_of_bounds(offset, len))
        }
    }

    /// Fills `len` bytes at `offset` with `byte`.
    ///
    /// # Errors
    /// [`Error::OutOfBounds`], [`Error::ReadOnly`].
    pub fn fill(&self, offset: usize, len: usize, byte: u8) -> Result<()> {
        self.check(offset, len, true)?;
        if self.map.fill(offset, len, byte) {
            Ok(())
        } else {
            Err(self.out_of_bounds(offset, len))
        }
    }

    /// A shared reference to the atomics-only `T` at `offset`, which must be aligned for `T`.
    ///
    /// This is the only kind of reference the region lends: every byte of `T` is atomic, so a
    /// peer's writes are atomic operations, not data races. The region must be writable: a
    /// store through an atomic into a read-only mapping would kill the process with SIGSEGV
    /// (read such fields as snapshots with [`read`](Self::read) instead).
    ///
    /// # Errors
    /// [`Error::ReadOnly`], [`Error::OutOfBounds`], [`Error::Misaligned`].
    pub fn atomic<T: ShmAtomic>(&self, offset: usize) -> Result<&T> {
        self.check(offset, size_of::<T>(), true)?;
        if !(self.map.addr() as usize)
            .wrapping_add(offset)
            .is_multiple_of(align_of::<T>())
        {
            return Err(Error::Misaligned {
                offset,
                align: align_of::<T>(),
            });
        }
        self.map
            .atomic(offset)
            .ok_or_else(|| self.out_of_bounds(offset, size_of::<T>()))
    }
}

/// Anything that owns a [`Region`]: the segment types, so that a [`Ring`](crate::Ring) can be
/// built on any of them.
pub trait Segment {
    /// The segment's mapping.
    fn region(&self) -> &Region;
}

impl Segment for Region {
    fn region(&self) -> &Region {
        self
    }
}

impl<T: Segment + ?Sized> Segment for &T {
    fn region(&self) -> &Region {
        (**self).region()
    }
}

impl<T: Segment + ?Sized> Segment for std::sync::Arc<T> {
    fn region(&self) -> &Region {
        (**self).region()
    }
}

impl<T: Segment + ?Sized> Segment for Box<T> {
    fn region(&self) -> &Region {
        (**self).region()
    }
}
