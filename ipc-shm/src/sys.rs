//! The ground floor: the only file with unsafe code. It owns mappings ([`Map`]), copies bytes
//! and plain values across the process boundary, lends references to atomics in shared memory,
//! wraps the System V calls that have no safe binding, and places descriptors in a spawned
//! child. It takes and returns raw or std types (and its own [`Map`]) and depends on nothing
//! above it: the concept files (`region.rs`, `posix.rs`, ...) wrap it.
//!
//! Every block is one call with a `// SAFETY:` comment. Soundness never depends on a caller's
//! check: every access through a [`Map`] checks its range (and alignment, and writability) here.
//!
//! The memory model. A mapping may be written at any moment by another process, which no
//! Rust-level synchronisation can order, so the crate treats it the way a driver treats device
//! memory: plain data is only ever *copied* through raw pointers (one `memcpy` or one unaligned
//! load/store per access, no reference created), what is copied out is private from then on and
//! is only ever interpreted as bytes or as [`ShmSafe`] values (for which every bit pattern is
//! valid), and anything used as an index or a length is validated on that private copy (see
//! `ring.rs`). References are lent only to [`ShmAtomic`] types, whose every byte is an atomic,
//! and, as `&[u8]`, to the read-only mapping of a memfd sealed against writes and shrinking.
//! The Rust memory model has no notion of a second process; within one process, a copy that
//! races with another thread's write to the same bytes is formally a data race. The crate
//! relies, as every shared-memory crate does, on such a copy compiling to the plain loads and
//! stores it is written as; the values it yields are then arbitrary, never undefined.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_void};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::ptr::{self, NonNull};
use std::sync::Mutex;
use std::sync::atomic::{
    AtomicI8, AtomicI16, AtomicI32, AtomicI64, AtomicIsize, AtomicU8, AtomicU16, AtomicU32,
    AtomicU64, AtomicUsize, Ordering,
};

use rustix::fs::SealFlags;
use rustix::mm::{Advice, MapFlags, ProtFlags};

// The marker traits live here because declaring and implementing an `unsafe trait` is unsafe
// code; `crate::safe` re-exports them and holds the macros for users' structs.

/// Data that may be copied into and out of shared memory: integers, floats, atomics (a copy is a
/// snapshot), arrays of them, and your structs of them through [`shm_safe!`](crate::shm_safe).
///
/// # Safety
/// Implement only for types where *every* bit pattern of `size_of::<Self>()` bytes is a valid
/// value (a peer may write anything), with a stable layout (`#[repr(C)]` or a primitive), no
/// padding bytes (they would leak private memory into the segment), and no pointers or references
/// (they mean nothing in another process). Use [`shm_safe!`](crate::shm_safe) for your structs:
/// it declares the struct `#[repr(C)]` itself and checks the layout at compile time.
///
/// `bool`, `char`, enums, references and `NonZero*` have invalid bit patterns and so do not
/// implement it:
///
/// ```compile_fail,E0277
/// fn needs<T: ipc_shm::ShmSafe>() {}
/// needs::<bool>();
/// ```
/// ```compile_fail,E0277
/// fn needs<T: ipc_shm::ShmSafe>() {}
/// needs::<char>();
/// ```
/// ```compile_fail,E0277
/// fn needs<T: ipc_shm::ShmSafe>() {}
/// needs::<&'static u32>();
/// ```
/// ```compile_fail,E0277
/// fn needs<T: ipc_shm::ShmSafe>() {}
/// needs::<std::num::NonZeroU32>();
/// ```
/// ```compile_fail,E0277
/// fn needs<T: ipc_shm::ShmSafe>() {}
/// #[repr(u8)] enum E { A, B }
/// needs::<E>();
/// ```
pub unsafe trait ShmSafe: Sized + 'static {}

/// Types whose every byte is inside an atomic, so a `&Self` into shared memory is sound even
/// while a peer writes it: [`Region::atomic`](crate::Region::atomic) hands them out.
///
/// # Safety
/// Every byte of `Self` must be part of an atomic (no plain fields, no padding), every bit
/// pattern valid, layout stable (`#[repr(C)]`), every field at an offset aligned for it. Use
/// [`shm_atomic!`](crate::shm_atomic) for your structs.
///
/// ```compile_fail,E0277
/// fn needs<T: ipc_shm::ShmAtomic>() {}
/// needs::<u64>(); // plain data is copied, never borrowed
/// ```
pub unsafe trait ShmAtomic: Sync + 'static {}

macro_rules! impl_marker {
    ($tr:ident: $($t:ty),*) => { $(
        // SAFETY: `$t` is a primitive integer or float, `()`, or an atomic integer (which has
        // the size and bit validity of its integer, and is nothing but that atomic): every bit
        // pattern is valid, there is no padding and no pointer, and for `ShmAtomic` every byte
        // is inside the atomic.
        unsafe impl $tr for $t {}
    )* };
}

impl_marker!(ShmSafe: u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, f32, f64, ());
// SAFETY: arrays of `ShmSafe` have no padding between elements (size is a multiple of align) and
// every bit pattern is valid element-wise.
unsafe impl<T: ShmSafe, const N: usize> ShmSafe for [T; N] {}

impl_marker!(ShmSafe: AtomicU8, AtomicU16, AtomicU32, AtomicU64, AtomicUsize, AtomicI8, AtomicI16,
    AtomicI32, AtomicI64, AtomicIsize);

impl_marker!(ShmAtomic: AtomicU8, AtomicU16, AtomicU32, AtomicU64, AtomicUsize, AtomicI8,
    AtomicI16, AtomicI32, AtomicI64, AtomicIsize);
// SAFETY: arrays of atomics are atomics back to back, with no padding.
unsafe impl<T: ShmAtomic, const N: usize> ShmAtomic for [T; N] {}

/// How a [`Map`] is released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Release {
    Munmap,
    Shmdt,
}

/// A mapping of shared memory this process owns: a pointer and a length, released once on
/// drop. Every access checks its range here, so no caller can reach outside the mapping.
#[derive(Debug)]
pub(crate) struct Map {
    ptr: NonNull<u8>,
    len: usize,
    writable: bool,
    release: Release,
    /// (device, inode) of the file mapped, for mappings of a descriptor.
    file: Option<(u64, u64)>,
    /// Checked by [`Map::freeze`]: a read-only mapping of a file sealed against writes and
    /// shrinking, which no process can change or cut short.
    frozen: bool,
}

/// Copies `len` bytes from `src` to `dst`. Short copies (up to 64 bytes: a ring's small
/// messages) are done inline in pieces of `P` bytes (the last one overlapping) rather than by
/// `memcpy`, which may move 64 bytes with one load and one store: a store-to-load forward works
/// only from a store that covers the load, so a copy that loads with pieces no wider than the
/// stores that just wrote its source (8 bytes: how messages are usually built), and stores
/// pieces at least as wide as the loads that will read it (16 bytes), runs without stalls.
/// Others go through `memcpy`.
///
/// # Safety
/// `src` must be valid for reads and `dst` for writes of `len` bytes, and the two ranges must
/// not overlap.
#[inline(always)]
unsafe fn copy_bytes<const P: usize>(src: *const u8, dst: *mut u8, len: usize) {
    if (P..=64).contains(&len) {
        // Pieces at 0, P, 2P, .. and len - P (no loop: a loop would become a `memcpy` call).
        let piece = |at: usize| {
            // SAFETY: `P <= len` and `at <= len - P`: both P-byte ranges are inside the
            // caller's ranges, which do not overlap.
            unsafe { ptr::copy_nonoverlapping(src.wrapping_add(at), dst.wrapping_add(at), P) }
        };
        piece(0);
        piece(len - P);
        let mut at = P;
        for _ in 0..(64 / P - 2) {
            if len > at + P {
                piece(at);
            }
            at += P;
        }
    } else {
        // SAFETY: the caller's contract.
        unsafe { ptr::copy_nonoverlapping(src, dst, len) };
    }
}

// SAFETY: a `Map` owns its mapping (a raw pointer and a length) and releases it once, in `Drop`;
// `munmap`/`shmdt` may be called from any thread, and no thread-local state is involved.
unsafe impl Send for Map {}
// SAFETY: through `&Map` a thread can only copy bytes and `ShmSafe` values in and out through raw
// pointers, borrow `ShmAtomic` types (themselves `Sync`), or borrow the bytes of a frozen memfd
// that nothing can write. Concurrent copies from several threads are the same as copies
// concurrent with another process: see the memory model in the module docs.
unsafe impl Sync for Map {}

fn prot(writable: bool) -> ProtFlags {
    if writable {
        ProtFlags::READ | ProtFlags::WRITE
    } else {
        ProtFlags::READ
    }
}

impl Map {
    /// `mmap(NULL, len, prot, MAP_SHARED [| MAP_HUGETLB], fd, 0)`.
    pub(crate) fn fd(
        fd: BorrowedFd<'_>,
        len: usize,
        writable: bool,
        huge: bool,
    ) -> io::Result<Map> {
        let st = rustix::fs::fstat(fd)?;
        let mut flags = MapFlags::SHARED;
        if huge {
            flags |= MapFlags::HUGETLB;
        }
        // SAFETY: a NULL hint lets the kernel choose fresh addresses, so no existing Rust object
        // is replaced or aliased; the `Map` owns the returned mapping and unmaps it once.
        let p = unsafe { rustix::mm::mmap(ptr::null_mut(), len, prot(writable), flags, fd, 0) }?;
        let ptr = NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned NULL"))?;
        Ok(Map {
            ptr,
            len,
            writable,
            release: Release::Munmap,
            file: Some((st.st_dev, st.st_ino)),
            frozen: false,
        })
    }

    /// `mmap(NULL, len, PROT_READ|PROT_WRITE, MAP_SHARED|MAP_ANONYMOUS [| MAP_HUGETLB], -1, 0)`.
    pub(crate) fn anon(len: usize, huge: bool) -> io::Result<Map> {
        let mut flags = MapFlags::SHARED;
        if huge {
            flags |= MapFlags::HUGETLB;
        }
        // SAFETY: as in `fd`: fresh addresses, owned by the returned `Map`.
        let p = unsafe { rustix::mm::mmap_anonymous(ptr::null_mut(), len, prot(true), flags) }?;
        let ptr = NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned NULL"))?;
        Ok(Map {
            ptr,
            len,
            writable: true,
            release: Release::Munmap,
            file: None,
            frozen: false,
        })
    }

    /// `shmat(id, NULL, flags)`, then `IPC_STAT`: the attachment and the segment's state, measured
    /// while attached (so it is the segment mapped, even if its id is removed meanwhile: the
    /// kernel keeps an attached segment and its id).
    pub(crate) fn shm_attach(id: i32, writable: bool) -> io::Result<(Map, ShmStat)> {
        let flags = if writable { 0 } else { libc::SHM_RDONLY };
        // SAFETY: a NULL address lets the kernel choose fresh addresses (no Rust object is
        // replaced); the `Map` built below owns the attachment and detaches it once.
        let p = unsafe { libc::shmat(id, ptr::null(), flags) };
        if p as isize == -1 {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast()).ok_or_else(|| io::Error::other("shmat returned NULL"))?;
        let mut map = Map {
            ptr,
            len: 0,
            writable,
            release: Release::Shmdt,
            file: None,
            frozen: false,
        };
        let st = shm_stat(id)?; // on error, dropping `map` detaches
        map.len = usize::try_from(st.size).map_err(|_| io::Error::other("segment size"))?;
        Ok((map, st))
    }

    /// The length in bytes.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping may be written.
    #[inline]
    pub(crate) fn writable(&self) -> bool {
        self.writable
    }

    /// The address, for FFI and alignment arithmetic.
    pub(crate) fn addr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// The pointer to `offset..offset+len`, if that range is inside the mapping.
    #[inline]
    fn at(&self, offset: usize, len: usize) -> Option<*mut u8> {
        let end = offset.checked_add(len)?;
        (end <= self.len).then(|| self.ptr.as_ptr().wrapping_add(offset))
    }

    #[inline]
    fn at_mut(&self, offset: usize, len: usize) -> Option<*mut u8> {
        if self.writable {
            self.at(offset, len)
        } else {
            None
        }
    }

    /// Copies `dst.len()` bytes at `offset` out of the mapping; false if out of range.
    #[inline]
    pub(crate) fn read(&self, offset: usize, dst: &mut [u8]) -> bool {
        let Some(src) = self.at(offset, dst.len()) else {
            return false;
        };
        // SAFETY: the source range is inside this live readable mapping (checked above) and
        // cannot overlap `dst`, which is private memory borrowed mutably; no reference to the
        // source is created. A peer may write the source concurrently: the copy then yields
        // arbitrary bytes (see the module docs), every bit pattern of `u8` is valid, and callers
        // treat what they read as untrusted.
        unsafe { copy_bytes::<16>(src, dst.as_mut_ptr(), dst.len()) };
        true
    }

    /// Copies `src` into the mapping at `offset`; false if out of range or read-only.
    #[inline]
    pub(crate) fn write(&self, offset: usize, src: &[u8]) -> bool {
        let Some(dst) = self.at_mut(offset, src.len()) else {
            return false;
        };
        // SAFETY: the destination range is inside this live writable mapping (checked above).
        // The only references ever lent into a writable mapping are to `ShmAtomic` types, whose
        // bytes are inside `UnsafeCell`s and so may change under a shared reference: no `&`/
        // `&mut` is invalidated. `src` is private and cannot overlap the mapping.
        unsafe { copy_bytes::<8>(src.as_ptr(), dst, src.len()) };
        true
    }

    /// Sets `len` bytes at `offset` to `byte`; false if out of range or read-only.
    pub(crate) fn fill(&self, offset: usize, len: usize, byte: u8) -> bool {
        let Some(dst) = self.at_mut(offset, len) else {
            return false;
        };
        // SAFETY: as in `write`: a checked range of this live writable mapping, under which only
        // references to atomics can exist.
        unsafe { ptr::write_bytes(dst, byte, len) };
        true
    }

    /// Reads a `T` at `offset` (any alignment); `None` if out of range.
    pub(crate) fn read_value<T: ShmSafe>(&self, offset: usize) -> Option<T> {
        let src = self.at(offset, size_of::<T>())?;
        // SAFETY: `src..src+size_of::<T>()` is inside this live mapping (checked above);
        // `read_unaligned` needs no alignment, and `T: ShmSafe` means every bit pattern is a
        // valid `T`, so whatever a peer wrote (even mid-write, even torn) is a valid value.
        Some(unsafe { src.cast::<T>().read_unaligned() })
    }

    /// Writes `value` at `offset` (any alignment); false if out of range or read-only.
    pub(crate) fn write_value<T: ShmSafe + Copy>(&self, offset: usize, value: T) -> bool {
        let Some(dst) = self.at_mut(offset, size_of::<T>()) else {
            return false;
        };
        // SAFETY: a checked range of this live writable mapping; as in `write`, only references
        // to atomics exist into it, which tolerate the change; `write_unaligned` needs no
        // alignment; `T: ShmSafe` has no padding, so no uninitialised byte reaches the peer.
        unsafe { dst.cast::<T>().write_unaligned(value) };
        true
    }

    /// Writes the `T`s of `values` consecutively at `offset`, in one copy; false if out of
    /// range or read-only.
    pub(crate) fn write_slice<T: ShmSafe + Copy>(&self, offset: usize, values: &[T]) -> bool {
        let bytes = size_of_val(values);
        let Some(dst) = self.at_mut(offset, bytes) else {
            return false;
        };
        // SAFETY: a checked range of this live writable mapping (as in `write`); `values` is a
        // private slice of `bytes` bytes, all initialised because `T: ShmSafe` has no padding,
        // and unchanging during the copy because `T: Copy` rules out `UnsafeCell`; the ranges
        // cannot overlap.
        unsafe { ptr::copy_nonoverlapping(values.as_ptr().cast::<u8>(), dst, bytes) };
        true
    }

    /// Appends `count` consecutive `T`s read at `offset` to `out`, in one copy. False, with `out`
    /// unchanged, if the range is outside the mapping or `out` has not reserved room for them.
    pub(crate) fn read_into_vec<T: ShmSafe>(
        &self,
        offset: usize,
        count: usize,
        out: &mut Vec<T>,
    ) -> bool {
        let Some(bytes) = count.checked_mul(size_of::<T>()) else {
            return false;
        };
        let Some(src) = self.at(offset, bytes) else {
            return false;
        };
        if out.capacity() - out.len() < count {
            return false;
        }
        let spare = out.spare_capacity_mut();
        // SAFETY: `src..src+bytes` is inside this live mapping and `spare` (private memory of at
        // least `count` elements, checked above) has room for `bytes` bytes; they cannot
        // overlap. A peer writing concurrently yields arbitrary bytes: see the module docs.
        unsafe { ptr::copy_nonoverlapping(src, spare.as_mut_ptr().cast::<u8>(), bytes) };
        let len = out.len() + count;
        // SAFETY: the capacity is at least `len` (checked above); the `count` elements after the
        // old length were just written, and `T: ShmSafe` makes any bytes a valid `T` (for a
        // zero-sized `T` there is nothing to write and any count is valid).
        unsafe { out.set_len(len) };
        true
    }

    /// Writes one record of a ring in place, with one range check for all of it: `payload` at
    /// `offset + 8`, then a zero `u64` at `offset + rec` (relaxed: the next record's header
    /// slot), then `header` at `offset` with release ordering (the record's commit). False,
    /// with nothing written, unless `offset..offset + rec + 8` is inside this writable mapping,
    /// 8-aligned in memory, and `rec` is a multiple of 8 holding the 8-byte header and the
    /// payload.
    #[inline]
    pub(crate) fn put_record(
        &self,
        offset: usize,
        payload: &[u8],
        rec: usize,
        header: u64,
    ) -> bool {
        // `payload.len() <= isize::MAX`, so the sum cannot overflow.
        if !rec.is_multiple_of(8) || rec < payload.len() + 8 {
            return false;
        }
        let Some(p) = rec
            .checked_add(8)
            .and_then(|span| self.at_mut(offset, span))
        else {
            return false;
        };
        if !(p as usize).is_multiple_of(align_of::<AtomicU64>()) {
            return false;
        }
        // SAFETY: `p + 8..p + 8 + payload.len()` is inside `p..p + rec`, inside this live writable
        // mapping (checked above); as in `write`, only references to atomics exist into it, and
        // `payload` is private memory that cannot overlap it.
        unsafe { copy_bytes::<8>(payload.as_ptr(), p.wrapping_add(8), payload.len()) };
        // SAFETY: `p + rec..p + rec + 8` is inside the mapping and 8-aligned (`p` is, `rec` is a
        // multiple of 8); every bit pattern is a valid `AtomicU64` and a peer's concurrent
        // accesses to it are atomic too (as in `atomic`). The reference lives for this call.
        let next = unsafe { &*p.wrapping_add(rec).cast::<AtomicU64>() };
        next.store(0, Ordering::Relaxed);
        // SAFETY: as above, for `p..p + 8`.
        let slot = unsafe { &*p.cast::<AtomicU64>() };
        slot.store(header, Ordering::Release);
        true
    }

    /// Loads the `u64` at `offset` with acquire ordering, as `atomic::<AtomicU64>(offset)`
    /// would, without lending the reference: `None` unless the 8 bytes are inside this writable
    /// mapping (never a frozen one, whose bytes may be lent as `&[u8]`) and 8-aligned in memory.
    #[inline]
    pub(crate) fn load_acquire(&self, offset: usize) -> Option<u64> {
        let p = self.at_mut(offset, 8)?;
        if !(p as usize).is_multiple_of(align_of::<AtomicU64>()) {
            return None;
        }
        // SAFETY: as in `atomic`: `p..p + 8` is inside this live writable mapping and 8-aligned
        // (checked above), every bit pattern is a valid `AtomicU64`, and concurrent writes by a
        // peer are atomic operations or copies (see the module docs). The reference lives for
        // this call.
        let word = unsafe { &*p.cast::<AtomicU64>() };
        Some(word.load(Ordering::Acquire))
    }

    /// A shared reference to the atomics-only `T` at `offset`: `None` unless the range is inside
    /// the mapping, the address is aligned for `T` and the mapping is writable (a store through
    /// an atomic into a read-only mapping would kill the process with SIGSEGV).
    #[inline]
    pub(crate) fn atomic<T: ShmAtomic>(&self, offset: usize) -> Option<&T> {
        let p = self.at_mut(offset, size_of::<T>())?;
        if !(p as usize).is_multiple_of(align_of::<T>()) {
            return None;
        }
        // SAFETY: `p..p+size_of::<T>()` is inside this live mapping and `p` is aligned for `T`
        // (checked above); `T: ShmAtomic` means every byte of `T` is inside an atomic, so
        // concurrent writes by a peer are atomic operations, not data races, and every bit
        // pattern is valid. The lifetime is tied to `&self`, so the mapping outlives it.
        Some(unsafe { &*p.cast::<T>() })
    }

    /// `madvise(MADV_HUGEPAGE)`: a hint; errors are ignored.
    pub(crate) fn advise_huge(&self) {
        // SAFETY: `ptr..ptr+len` is this live mapping; the advice does not change its contents.
        let _ = unsafe {
            rustix::mm::madvise(self.ptr.as_ptr().cast(), self.len, Advice::LinuxHugepage)
        };
    }

    /// Marks the mapping frozen if it is a read-only mapping of `fd`'s file (same device and
    /// inode), lying within the file's size, and the file carries `F_SEAL_WRITE` and
    /// `F_SEAL_SHRINK`. Returns whether it is frozen now.
    pub(crate) fn freeze(&mut self, fd: BorrowedFd<'_>) -> bool {
        if self.writable || self.release != Release::Munmap {
            return false;
        }
        let (Ok(st), Ok(seals)) = (rustix::fs::fstat(fd), rustix::fs::fcntl_get_seals(fd)) else {
            return false;
        };
        let within =
            u64::try_from(self.len).is_ok_and(|l| i64::try_from(l).is_ok_and(|l| l <= st.st_size));
        if self.file == Some((st.st_dev, st.st_ino))
            && within
            && seals.contains(SealFlags::WRITE | SealFlags::SHRINK)
        {
            self.frozen = true;
        }
        self.frozen
    }

    /// The whole mapping as bytes, if [`freeze`](Self::freeze) found it frozen.
    pub(crate) fn frozen_bytes(&self) -> Option<&[u8]> {
        if !self.frozen {
            return None;
        }
        // SAFETY: `freeze` checked that this is a read-only mapping of a file that carries
        // `F_SEAL_WRITE` and `F_SEAL_SHRINK` and is at least as long as the mapping. Seals are
        // never removed: for the rest of the file's life the kernel refuses every write, every
        // writable mapping and every truncation, from any process, so the bytes neither change
        // nor vanish (no SIGBUS) while borrowed; the mapping is live and readable for `self`'s
        // lifetime, which bounds the borrow, and is `len` bytes long.
        Some(unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) })
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        match self.release {
            Release::Munmap => {
                // SAFETY: `ptr, len` is the mapping this `Map` made and owns; it is unmapped once,
                // here, after every borrow of it (which borrow the `Map`) has ended.
                let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
            }
            Release::Shmdt => {
                // SAFETY: `ptr` came from `shmat` and is detached once, here, after every borrow
                // of it has ended.
                let _ = unsafe { libc::shmdt(self.ptr.as_ptr().cast::<c_void>()) };
            }
        }
    }
}

/// `ftok(path, proj_id)`.
pub(crate) fn ftok(path: &CStr, proj_id: u8) -> io::Result<i32> {
    // SAFETY: `path` is NUL-terminated and outlives the call; ftok only reads it.
    let k = unsafe { libc::ftok(path.as_ptr(), libc::c_int::from(proj_id)) };
    if k == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(k)
    }
}

/// `shmget(key, size, flags)`.
pub(crate) fn shmget(key: i32, size: usize, flags: i32) -> io::Result<i32> {
    // SAFETY: plain integer arguments; no memory is passed.
    let id = unsafe { libc::shmget(key, size, flags) };
    if id < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(id)
    }
}

/// `shmctl(id, IPC_RMID, NULL)`.
pub(crate) fn shm_rmid(id: i32) -> io::Result<()> {
    // SAFETY: IPC_RMID reads no buffer; NULL is allowed.
    let r = unsafe { libc::shmctl(id, libc::IPC_RMID, ptr::null_mut()) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `SHM_DEST` in `shm_perm.mode` (linux/shm.h): marked for removal, destroyed at the last detach.
pub(crate) const SHM_DEST: u32 = 0o1000;

/// What `shmctl(IPC_STAT)` says about a segment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ShmStat {
    /// The owner's uid (`shm_perm.uid`).
    pub(crate) uid: u32,
    /// The creator's uid (`shm_perm.cuid`).
    pub(crate) cuid: u32,
    /// The size in bytes.
    pub(crate) size: u64,
    /// `shm_perm.mode`: permission bits and the `SHM_DEST` flag.
    pub(crate) mode: u32,
}

/// `shmctl(id, IPC_STAT)`.
pub(crate) fn shm_stat(id: i32) -> io::Result<ShmStat> {
    let mut ds = MaybeUninit::<libc::shmid_ds>::zeroed();
    // SAFETY: `ds` is a valid, writable `shmid_ds` (all-zero bytes are a valid value of this
    // plain C struct) for the duration of the call.
    let r = unsafe { libc::shmctl(id, libc::IPC_STAT, ds.as_mut_ptr()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: zero-initialised above and filled by the kernel on success; every bit pattern of
    // this plain C struct is valid.
    let ds = unsafe { ds.assume_init() };
    Ok(ShmStat {
        uid: ds.shm_perm.uid,
        cuid: ds.shm_perm.cuid,
        size: ds.shm_segsz as u64,
        mode: u32::from(ds.shm_perm.mode),
    })
}

/// Arranges for the child of `cmd` to find each `(fd, target)` at descriptor number `target`,
/// not close-on-exec, whatever numbers the descriptors have in the parent (the same scheme as
/// ipc-pipe's `ChildFds`).
///
/// The parent keeps the descriptors open, close-on-exec (they live in the closure, owned by
/// `cmd`), until `cmd` is dropped, so no other child spawned meanwhile inherits them. In the
/// child, between `fork` and `exec`, only `fcntl` and `dup2` run: both are async-signal-safe
/// (POSIX.1-2017, 2.4.3), and the closure neither allocates nor locks.
pub(crate) fn install_fd_map(cmd: &mut Command, map: Vec<(OwnedFd, RawFd)>) {
    // Raw numbers, computed now so the child allocates nothing. `work[i]` is where descriptor i
    // is found in the child during the two phases below.
    let raw: Vec<(RawFd, RawFd)> = map.iter().map(|(fd, t)| (fd.as_raw_fd(), *t)).collect();
    let mut work: Vec<RawFd> = raw.iter().map(|&(s, _)| s).collect();
    let above = raw
        .iter()
        .map(|&(_, t)| t)
        .max()
        .unwrap_or(2)
        .saturating_add(1);
    let hook = move || -> io::Result<()> {
        let _keep_open = &map;
        // Phase 1: a source that sits on another entry's target would be overwritten by that
        // entry's dup2: move it above every target first.
        for (i, slot) in work.iter_mut().enumerate() {
            let clash = raw
                .iter()
                .enumerate()
                .any(|(j, &(_, t))| j != i && t == *slot);
            if clash {
                // SAFETY: fcntl(F_DUPFD_CLOEXEC) on a descriptor this process owns (inherited
                // from the parent's `map`); async-signal-safe.
                let moved = unsafe { libc::fcntl(*slot, libc::F_DUPFD_CLOEXEC, above) };
                if moved < 0 {
                    return Err(io::Error::last_os_error());
                }
                *slot = moved;
            }
        }
        // Phase 2: put each one in place. dup2 clears FD_CLOEXEC on the new number; a source
        // already at its target only has the flag cleared.
        for (i, &(_, target)) in raw.iter().enumerate() {
            if work[i] == target {
                // SAFETY: fcntl(F_SETFD, 0) on an open descriptor; async-signal-safe.
                let r = unsafe { libc::fcntl(target, libc::F_SETFD, 0) };
                if r < 0 {
                    return Err(io::Error::last_os_error());
                }
            } else {
                // SAFETY: dup2 between two descriptor numbers; `target` is not the source of any
                // other entry (phase 1); async-signal-safe.
                let r = unsafe { libc::dup2(work[i], target) };
                if r < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        Ok(())
    };
    // SAFETY: the hook only calls async-signal-safe functions (fcntl, dup2) on numbers computed
    // before the fork, reads memory the closure owns, and does not allocate, lock or unwind.
    unsafe {
        cmd.pre_exec(hook);
    }
}

/// What a doorbell half is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BellKind {
    /// An eventfd: ringing adds 1 to its counter, draining reads it back to 0.
    EventFd,
    /// A FIFO opened read-write: ringing writes a byte, draining reads what is there.
    Fifo,
}

/// What kind of doorbell half `fd` is, if any: a FIFO (by `fstat`) or an eventfd (an anonymous
/// inode, which only `/proc` names).
pub(crate) fn bell_kind(fd: BorrowedFd<'_>) -> Option<BellKind> {
    let st = rustix::fs::fstat(fd).ok()?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Fifo {
        return Some(BellKind::Fifo);
    }
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
    (link.as_os_str() == "anon_inode:[eventfd]").then_some(BellKind::EventFd)
}

/// The descriptor numbers already claimed by [`claim_inherited`] in this process.
static CLAIMED: Mutex<Vec<RawFd>> = Mutex::new(Vec::new());

/// Why [`claim_inherited`] refused a descriptor number.
pub(crate) type Refusal = &'static str;

/// What [`claim_inherited`] accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Inherit {
    /// A regular file: a memfd or a POSIX segment.
    Segment,
    /// A doorbell half: an eventfd or a FIFO.
    Doorbell,
}

/// Takes ownership of descriptor `fd`, inherited from the parent at exec, after checking that it
/// is open, of the kind asked for (a regular file for a segment, an eventfd or a FIFO for a
/// doorbell), not 0..=2 (the standard streams belong to `std::io`), and not claimed before in
/// this process. Marks it close-on-exec so it is not passed on further by accident.
pub(crate) fn claim_inherited(fd: RawFd, kind: Inherit) -> Result<OwnedFd, Refusal> {
    if fd <= 2 {
        return Err(
            "descriptors 0, 1 and 2 are the standard streams: take them with std::io::stdin().as_fd()",
        );
    }
    let mut claimed = CLAIMED.lock().unwrap_or_else(|e| e.into_inner());
    if claimed.contains(&fd) {
        return Err("this descriptor was already claimed in this process");
    }
    // SAFETY: `fcntl(F_GETFD)` only inspects the descriptor table; an unknown number is EBADF.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err("no such open descriptor");
    }
    // SAFETY: `fd` is open (checked just above) and is borrowed only for the checks below, which
    // complete before this function returns.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    match kind {
        Inherit::Segment => {
            let regular = rustix::fs::fstat(borrowed).is_ok_and(|st| {
                rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile
            });
            if !regular {
                return Err("not a shared-memory file (a memfd or a POSIX segment)");
            }
        }
        Inherit::Doorbell => {
            if bell_kind(borrowed).is_none() {
                return Err("not a doorbell's descriptor (an eventfd or a FIFO)");
            }
        }
    }
    if rustix::io::fcntl_setfd(borrowed, rustix::io::FdFlags::CLOEXEC).is_err() {
        return Err("cannot make it close-on-exec");
    }
    claimed.push(fd);
    // SAFETY: the descriptor is open and was inherited at exec (by the caller's contract with its
    // parent); the CLAIMED registry guarantees no other handle of this crate owns it, and numbers
    // above 2 are not owned by std. This is the same argument as systemd's `sd_listen_fds`.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The byte of a file whose open-file-description lock says "an owner holds this object"
/// (ARCHITECTURE.md, the lifetime model): far past any real size, so no data lock touches it.
pub(crate) const OWNER_LOCK_OFFSET: u64 = 0x7fff_ffff_ffff_fffe;

/// A `flock` describing one byte at [`OWNER_LOCK_OFFSET`] with lock type `l_type`.
fn owner_flock(l_type: libc::c_int) -> libc::flock {
    // SAFETY: `flock` is a plain C struct of integers (and, on some targets, padding), for which
    // all-zero bytes are a valid value; the fields that matter are set below.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = l_type as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = OWNER_LOCK_OFFSET as libc::off_t;
    fl.l_len = 1;
    fl.l_pid = 0; // required by F_OFD_*
    fl
}

/// `fcntl(fd, F_OFD_SETLK, read lock on OWNER_LOCK)`—Takes the owner lock; it lasts as long as
/// the open file description (every duplicate of `fd`, in any process) stays open.
pub(crate) fn hold_owner_lock(fd: BorrowedFd<'_>) -> io::Result<()> {
    let fl = owner_flock(libc::F_RDLCK);
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_OFD_SETLK(&fl))
        .map(drop)
        .map_err(io::Error::from)
}

/// `fcntl(fd, F_OFD_GETLK, write lock on OWNER_LOCK)`—Whether another open file description
/// holds the owner lock of the file `fd` refers to (`fd` is the prober's own descriptor).
pub(crate) fn owner_lock_held(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut fl = owner_flock(libc::F_WRLCK);
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_OFD_GETLK(&mut fl)).map_err(io::Error::from)?;
    Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
}

/// `AsyncFd::with_interest(fd, READABLE)`—Registers a descriptor this crate owns with the
/// current tokio reactor, for readability.
///
/// # Panics
/// Outside a tokio runtime (as tokio's own constructors do).
#[cfg(feature = "tokio")]
pub(crate) fn register_readable(fd: OwnedFd) -> io::Result<::tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: `AsyncFd` requires the descriptor to stay open and to refer to the same open file
    // description for the whole life of the `AsyncFd`. It takes the `OwnedFd` by value and owns
    // it from here on: nothing else can close it or put another file at its number while the
    // `AsyncFd` lives, and this crate never hands out a mutable access to it (callers only get
    // `&AsyncFd`, through whose `get_ref` the descriptor can be read from, never replaced).
    unsafe {
        ::tokio::io::unix::AsyncFd::register_with_interest(fd, ::tokio::io::Interest::READABLE)
    }
    .map_err(|e| e.into_parts().1)
}
