//! [`Region`]: a mapping of shared memory, a pointer and a length, accessed by checked copies.

use std::fmt;
use std::mem::{align_of, size_of};
use std::ptr::NonNull;

use crate::error::{Error, Result};
use crate::safe::{ShmAtomic, ShmSafe};
use crate::sys;

/// How a region is released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Release {
    Munmap,
    Shmdt,
}

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
pub struct Region {
    ptr: NonNull<u8>,
    len: usize,
    writable: bool,
    release: Release,
}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Region")
            .field("ptr", &self.ptr)
            .field("len", &self.len)
            .field("writable", &self.writable)
            .finish()
    }
}

impl Region {
    pub(crate) fn new(ptr: NonNull<u8>, len: usize, writable: bool, release: Release) -> Region {
        Region {
            ptr,
            len,
            writable,
            release,
        }
    }

    /// The length of the mapping in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the region is empty (never, for a region made by this crate).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the mapping is writable (false for read-only mappings).
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// The address of the mapping, for FFI. Dereferencing it is up to you (and `unsafe`).
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// The pointer to `offset..offset+len`, after checking the range.
    fn at(&self, offset: usize, len: usize) -> Result<*mut u8> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(self.ptr.as_ptr().wrapping_add(offset)),
            _ => Err(Error::OutOfBounds {
                offset,
                len,
                region: self.len,
            }),
        }
    }

    fn at_mut(&self, offset: usize, len: usize) -> Result<*mut u8> {
        if !self.writable {
            return Err(Error::ReadOnly);
        }
        self.at(offset, len)
    }

    /// Copies `buf.len()` bytes at `offset` out of the region.
    ///
    /// # Errors
    /// [`Error::OutOfBounds`] if the range is not inside the region.
    pub fn read_bytes(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        let p = self.at(offset, buf.len())?;
        sys::copy_out(p, buf);
        Ok(())
    }

    /// Copies `data` into the region at `offset`.
    ///
    /// # Errors
    /// [`Error::OutOfBounds`] if the range is not inside the region, [`Error::ReadOnly`] if the
    /// mapping is read-only.
    pub fn write_bytes(&self, offset: usize, data: &[u8]) -> Result<()> {
        let p = self.at_mut(offset, data.len())?;
        sys::copy_in(data, p);
        Ok(())
    }

    /// Reads a copy of the `T` at `offset` (any alignment).
    ///
    /// # Errors
    /// [`Error::OutOfBounds`] if it is not inside the region.
    pub fn read<T: ShmSafe>(&self, offset: usize) -> Result<T> {
        let p = self.at(offset, size_of::<T>())?;
        Ok(sys::read_value(p))
    }

    /// Writes `value` at `offset` (any alignment).
    ///
    /// # Errors
    /// [`Error::OutOfBounds`], [`Error::ReadOnly`].
    pub fn write<T: ShmSafe + Copy>(&self, offset: usize, value: &T) -> Result<()> {
        let p = self.at_mut(offset, size_of::<T>())?;
        sys::write_value(p, *value);
        Ok(())
    }

    /// Reads `count` consecutive `T`s at `offset` into a new vector (one copy); `count *
    /// size_of::<T>()` is checked against the region before anything is allocated.
    ///
    /// # Errors
    /// [`Error::OutOfBounds`] if the range overflows or is not inside the region.
    pub fn read_vec<T: ShmSafe>(&self, offset: usize, count: usize) -> Result<Vec<T>> {
        let bytes = count
            .checked_mul(size_of::<T>())
            .ok_or(Error::OutOfBounds {
                offset,
                len: usize::MAX,
                region: self.len,
            })?;
        let p = self.at(offset, bytes)?;
        Ok(sys::read_vec(p, count))
    }

    /// Writes the `T`s of `values` consecutively at `offset` (one copy).
    ///
    /// # Errors
    /// [`Error::OutOfBounds`], [`Error::ReadOnly`].
    pub fn write_slice<T: ShmSafe + Copy>(&self, offset: usize, values: &[T]) -> Result<()> {
        self.write_bytes(offset, sys::bytes_of(values))
    }

    /// Fills `len` bytes at `offset` with `byte`.
    ///
    /// # Errors
    /// [`Error::OutOfBounds`], [`Error::ReadOnly`].
    pub fn fill(&self, offset: usize, len: usize, byte: u8) -> Result<()> {
        self.at_mut(offset, len)?;
        let chunk = [byte; 4096];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(chunk.len());
            self.write_bytes(offset + done, &chunk[..n])?;
            done += n;
        }
        Ok(())
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
        let p = self.at_mut(offset, size_of::<T>())?;
        if !(p as usize).is_multiple_of(align_of::<T>()) {
            return Err(Error::Misaligned {
                offset,
                align: align_of::<T>(),
            });
        }
        Ok(sys::atomic_ref(self, p))
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        match self.release {
            Release::Munmap => sys::unmap(self.ptr, self.len),
            Release::Shmdt => sys::shmdt(self.ptr),
        }
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

/// Checks a caller's size: non-zero, fits `usize` and `isize::MAX`.
pub(crate) fn check_size(size: u64) -> Result<usize> {
    match usize::try_from(size) {
        Ok(s) if s > 0 && s <= isize::MAX as usize => Ok(s),
        _ => Err(Error::InvalidSize { size }),
    }
}
