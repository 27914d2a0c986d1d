//! The only file with unsafe code: mapping and unmapping memory, copying bytes across the
//! process boundary, handing out references to atomics in shared memory, and System V calls.
//!
//! Every block is one call with a `// SAFETY:` comment. The rest of the crate is safe code that
//! checks offsets and lengths before it calls in here.
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
use std::os::fd::AsFd;
use std::ptr::{self, NonNull};

use rustix::mm::{Advice, MapFlags, ProtFlags};

use std::sync::atomic::{
    AtomicI8, AtomicI16, AtomicI32, AtomicI64, AtomicIsize, AtomicU8, AtomicU16, AtomicU32,
    AtomicU64, AtomicUsize,
};

use crate::region::Region;

// SAFETY: a `Region` owns its mapping (a raw pointer and a length) and releases it once, in
// `Drop`; `munmap`/`shmdt` may be called from any thread, and no thread-local state is involved.
unsafe impl Send for Region {}
// SAFETY: through `&Region` a thread can only copy bytes and `ShmSafe` values in and out through
// raw pointers, borrow `ShmAtomic` types (themselves `Sync`), or borrow the bytes of a frozen
// memfd that nothing can write. Concurrent copies from several threads are the same as copies
// concurrent with another process: see the memory model in the module docs.
unsafe impl Sync for Region {}

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
/// it checks the layout at compile time.
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
/// pattern valid, layout stable (`#[repr(C)]`). Use [`shm_atomic!`](crate::shm_atomic) for your
/// structs.
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

fn prot(writable: bool) -> ProtFlags {
    if writable {
        ProtFlags::READ | ProtFlags::WRITE
    } else {
        ProtFlags::READ
    }
}

/// `mmap(NULL, len, prot, MAP_SHARED [| MAP_HUGETLB], fd, 0)`.
pub(crate) fn map_fd(
    fd: impl AsFd,
    len: usize,
    writable: bool,
    huge: bool,
) -> io::Result<NonNull<u8>> {
    let mut flags = MapFlags::SHARED;
    if huge {
        flags |= MapFlags::HUGETLB;
    }
    // SAFETY: a NULL hint lets the kernel choose fresh addresses, so no existing Rust object is
    // replaced or aliased; the caller owns the returned mapping and unmaps it exactly once.
    let p = unsafe { rustix::mm::mmap(ptr::null_mut(), len, prot(writable), flags, fd, 0) }?;
    NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned NULL"))
}

/// `mmap(NULL, len, PROT_READ|PROT_WRITE, MAP_SHARED|MAP_ANONYMOUS [| MAP_HUGETLB], -1, 0)`.
pub(crate) fn map_anon(len: usize, huge: bool) -> io::Result<NonNull<u8>> {
    let mut flags = MapFlags::SHARED;
    if huge {
        flags |= MapFlags::HUGETLB;
    }
    // SAFETY: as in `map_fd`: fresh addresses, owned by the caller.
    let p = unsafe { rustix::mm::mmap_anonymous(ptr::null_mut(), len, prot(true), flags) }?;
    NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned NULL"))
}

/// `madvise(MADV_HUGEPAGE)`: a hint, errors ignored by the caller.
pub(crate) fn advise_huge(p: NonNull<u8>, len: usize) -> io::Result<()> {
    // SAFETY: `p..p+len` is a mapping owned by the caller; the advice does not change contents.
    unsafe { rustix::mm::madvise(p.as_ptr().cast(), len, Advice::LinuxHugepage) }?;
    Ok(())
}

/// `munmap(p, len)`.
pub(crate) fn unmap(p: NonNull<u8>, len: usize) {
    // SAFETY: `p, len` is a mapping made by `map_fd`/`map_anon`, unmapped once, by the `Region`
    // that owns it, after every borrow of it (which borrow the `Region`) has ended.
    let _ = unsafe { rustix::mm::munmap(p.as_ptr().cast(), len) };
}

/// Copies `dst.len()` bytes from shared memory at `src` into private memory.
///
/// The caller checked that `src..src+dst.len()` is inside a live mapping.
pub(crate) fn copy_out(src: *const u8, dst: &mut [u8]) {
    // SAFETY: the source range is inside a live readable mapping (checked by the caller) and
    // cannot overlap `dst`, which is private memory borrowed mutably; no reference to the
    // source is created. A peer may write the source concurrently: the copy then yields
    // arbitrary bytes (see the module docs), every bit pattern of `u8` is valid, and callers
    // treat what they read as untrusted.
    unsafe { ptr::copy_nonoverlapping(src, dst.as_mut_ptr(), dst.len()) };
}

/// Copies `src` (private memory) into shared memory at `dst`.
///
/// The caller checked that `dst..dst+src.len()` is inside a live writable mapping.
pub(crate) fn copy_in(src: &[u8], dst: *mut u8) {
    // SAFETY: the destination range is inside a live writable mapping (checked by the caller).
    // The only references ever lent into a writable mapping are to `ShmAtomic` types, whose
    // bytes are inside `UnsafeCell`s and so may change under a shared reference: no `&`/`&mut`
    // is invalidated. `src` is private and cannot overlap the mapping.
    unsafe { ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len()) };
}

/// Reads a `T` from shared memory at `src` (any alignment).
pub(crate) fn read_value<T: ShmSafe>(src: *const u8) -> T {
    // SAFETY: the caller checked that `src..src+size_of::<T>()` is inside a live mapping;
    // `read_unaligned` needs no alignment, and `T: ShmSafe` means every bit pattern is a valid
    // `T`, so whatever a peer wrote (even mid-write, even torn) is a valid value.
    unsafe { src.cast::<T>().read_unaligned() }
}

/// Writes a `T` into shared memory at `dst` (any alignment).
pub(crate) fn write_value<T: ShmSafe + Copy>(dst: *mut u8, value: T) {
    // SAFETY: the caller checked that `dst..dst+size_of::<T>()` is inside a live writable
    // mapping; as in `copy_in`, only references to atomics exist into it, which tolerate the
    // change; `write_unaligned` needs no alignment; `T: ShmSafe` has no padding, so no
    // uninitialised byte of ours reaches the peer.
    unsafe { dst.cast::<T>().write_unaligned(value) };
}

/// Copies `count` consecutive `T`s from shared memory at `src` into a new vector, in one copy.
///
/// The caller checked that `src..src+count*size_of::<T>()` is inside a live mapping (so the
/// product does not overflow and the allocation is bounded by the mapping's size).
pub(crate) fn read_vec<T: ShmSafe>(src: *const u8, count: usize) -> Vec<T> {
    let mut out = Vec::<T>::with_capacity(count);
    copy_out_raw(src, out.as_mut_ptr().cast::<u8>(), count * size_of::<T>());
    // SAFETY: the capacity is at least `count`; the first `count * size_of::<T>()` bytes were
    // just written, so every element is initialised, and `T: ShmSafe` makes any bytes a valid
    // `T` (for a zero-sized `T` there is nothing to write and any `count` is valid).
    unsafe { out.set_len(count) };
    out
}

/// `copy_out` into raw private memory: `len` bytes from shared `src` to `dst`.
fn copy_out_raw(src: *const u8, dst: *mut u8, len: usize) {
    // SAFETY: `src..src+len` is inside a live readable mapping (checked by `read_vec`'s caller);
    // `dst` is a fresh private allocation of at least `len` bytes, so the ranges cannot overlap.
    // A peer writing concurrently yields arbitrary bytes: see the module docs.
    unsafe { ptr::copy_nonoverlapping(src, dst, len) };
}

/// The bytes of a slice of plain values (no padding, so every byte is initialised).
pub(crate) fn bytes_of<T: ShmSafe + Copy>(values: &[T]) -> &[u8] {
    // SAFETY: `values` is a live slice of `size_of_val(values)` bytes; `T: ShmSafe` has no
    // padding, so all of them are initialised, and `T: Copy` rules out `UnsafeCell` (no byte can
    // change while the borrow lasts); `u8` has alignment 1; the lifetime is `values`'.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), size_of_val(values)) }
}

/// A shared reference to a `T` of atomics at `p`, borrowed from `region`.
pub(crate) fn atomic_ref<T: ShmAtomic>(_region: &Region, p: *const u8) -> &T {
    // SAFETY: the caller checked that `p..p+size_of::<T>()` is inside `region`'s live mapping and
    // that `p` is aligned for `T`; `T: ShmAtomic` means every byte of `T` is inside an atomic,
    // so concurrent writes by a peer are atomic operations, not data races, and every bit
    // pattern is valid. The lifetime is tied to `&Region`, so the mapping outlives the reference.
    unsafe { &*p.cast::<T>() }
}

/// `ftok(path, proj_id)`.
pub(crate) fn ftok(path: &CStr, proj_id: u8) -> io::Result<libc::key_t> {
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

/// `shmat(id, NULL, flags)`.
pub(crate) fn shmat(id: i32, flags: i32) -> io::Result<NonNull<u8>> {
    // SAFETY: a NULL address lets the kernel choose fresh addresses (no Rust object is
    // replaced); the caller owns the attachment and detaches it once.
    let p = unsafe { libc::shmat(id, ptr::null(), flags) };
    if p as isize == -1 {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(p.cast()).ok_or_else(|| io::Error::other("shmat returned NULL"))
}

/// `shmdt(p)`.
pub(crate) fn shmdt(p: NonNull<u8>) {
    // SAFETY: `p` came from `shmat` and is detached once, by the `Region` that owns it, after
    // every borrow of it has ended.
    let _ = unsafe { libc::shmdt(p.as_ptr().cast::<c_void>()) };
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

/// `shmctl(id, IPC_STAT)`: (owner uid, size in bytes, mode bits).
pub(crate) fn shm_stat(id: i32) -> io::Result<(u32, u64, u32)> {
    // SAFETY: `shmid_ds` is a plain C struct for which all-zero bytes are a valid value.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: `ds` is a valid, writable `shmid_ds` for the duration of the call.
    let r = unsafe { libc::shmctl(id, libc::IPC_STAT, &mut ds) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((
        ds.shm_perm.uid,
        ds.shm_segsz as u64,
        u32::from(ds.shm_perm.mode) & 0o777,
    ))
}

/// The whole region as a byte slice; only for the read-only mapping of a memfd sealed with
/// `F_SEAL_WRITE` and `F_SEAL_SHRINK`.
pub(crate) fn sealed_slice(region: &Region) -> &[u8] {
    // SAFETY: the caller checked that `region` is a read-only mapping of the whole of a memfd
    // that carries `F_SEAL_WRITE` and `F_SEAL_SHRINK`. Seals are never removed: for the rest of
    // the file's life the kernel refuses every write, every writable mapping and every
    // truncation, from any process, so the bytes neither change nor vanish (no SIGBUS) while
    // borrowed; the mapping is live and readable for `region`'s lifetime, which bounds the
    // borrow, and is `region.len()` bytes long.
    unsafe { std::slice::from_raw_parts(region.as_ptr(), region.len()) }
}
