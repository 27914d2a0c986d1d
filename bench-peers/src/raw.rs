//! The only module with unsafe code: the hand-written rings (the floors) and the raw-pointer
//! parts of the peers whose APIs hand out raw pointers (shmem-ipc, shared_memory, raw_sync).
//! One operation per unsafe block, each with its SAFETY argument.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, OwnedFd};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::ctl::Spin;
use crate::peers::Result;

/// A `MAP_SHARED` mapping of a memfd, unmapped on drop.
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    /// A new zero-filled (and pre-faulted) shared mapping of `len` bytes, and its memfd to pass
    /// to the peer.
    ///
    /// # Errors
    /// If the memfd or the mapping cannot be made.
    pub fn create(len: usize) -> Result<(Mapping, OwnedFd)> {
        let fd = rustix::fs::memfd_create("bench-peers", rustix::fs::MemfdFlags::CLOEXEC)?;
        rustix::fs::ftruncate(&fd, len as u64)?;
        let map = Mapping::map(&fd, len)?;
        // SAFETY: the mapping is `len` bytes, writable, and nobody else has it yet.
        unsafe { ptr::write_bytes(map.ptr.as_ptr(), 0, len) };
        Ok((map, fd))
    }

    /// Maps the peer's memfd, which must hold at least `len` bytes.
    ///
    /// # Errors
    /// If it is smaller, or cannot be mapped.
    pub fn open(fd: OwnedFd, len: usize) -> Result<Mapping> {
        let size = rustix::fs::fstat(&fd)?.st_size;
        if (size as u64) < len as u64 {
            return Err(format!("shared file of {size} bytes, expected {len}").into());
        }
        Mapping::map(&fd, len)
    }

    fn map(fd: &OwnedFd, len: usize) -> Result<Mapping> {
        // SAFETY: a new mapping at an address the kernel picks; it aliases nothing in this
        // process. The file is at least `len` bytes long (checked or just truncated to it).
        let p = unsafe {
            rustix::mm::mmap(
                ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
                fd.as_fd(),
                0,
            )
        }?;
        Ok(Mapping {
            ptr: NonNull::new(p.cast()).ok_or("mmap returned null")?,
            len,
        })
    }

    fn atomic(&self, off: usize) -> &AtomicU64 {
        assert!(off + 8 <= self.len && off.is_multiple_of(8));
        // SAFETY: in bounds and aligned (checked); the memory is shared and lives as long as
        // `self`; every access to these words, here and in the peer, is atomic.
        unsafe { &*self.ptr.as_ptr().wrapping_add(off).cast::<AtomicU64>() }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `map` mapped; no reference into it outlives `self`.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

// SAFETY: the mapping is plain shared memory; the rings below use it from one thread.
unsafe impl Send for Mapping {}

/// Slots of the spsc64 ring: 2^16 of 64 bytes, 4 MiB, as `../shared/baseline/spsc64.c`.
pub const SLOTS: u64 = 1 << 16;
const HEAD: usize = 0;
const TAIL: usize = 128;
const DATA: usize = 256;

/// The bytes a slot ring's mapping needs.
pub const fn slot_ring_len() -> usize {
    DATA + 64 * SLOTS as usize
}

/// The writing end of a ring of fixed 64-byte slots (the protocol of `spsc64.c`): it caches the
/// reader's position and publishes its own every `batch` messages (and on [`SlotTx::flush`]).
#[derive(Debug)]
pub struct SlotTx {
    map: Mapping,
    head: u64,
    tail_cache: u64,
    batch: u64,
}

impl SlotTx {
    /// The writer on `map` (of [`slot_ring_len`] bytes), publishing every `batch` messages.
    pub fn new(map: Mapping, batch: u64) -> SlotTx {
        assert!(map.len >= slot_ring_len());
        SlotTx {
            map,
            head: 0,
            tail_cache: 0,
            batch,
        }
    }

    /// Writes one message, spinning while the ring is full.
    ///
    /// # Errors
    /// If the reader makes no progress for [`crate::ctl::WAIT`].
    #[inline]
    pub fn send(&mut self, msg: &[u8; 64]) -> Result<()> {
        if self.head - self.tail_cache >= SLOTS {
            let tail = self.map.atomic(TAIL);
            let mut spin = Spin::new();
            loop {
                self.tail_cache = tail.load(Ordering::Acquire);
                if self.head - self.tail_cache < SLOTS {
                    break;
                }
                spin.wait()?;
            }
        }
        let off = DATA + (self.head & (SLOTS - 1)) as usize * 64;
        // SAFETY: `off + 64 <= slot_ring_len() <= len`; the reader does not touch this slot
        // until `head` is published past it (Release below, Acquire in the reader).
        unsafe {
            ptr::copy_nonoverlapping(msg.as_ptr(), self.map.ptr.as_ptr().wrapping_add(off), 64)
        };
        self.head += 1;
        if self.head.is_multiple_of(self.batch) {
            self.map.atomic(HEAD).store(self.head, Ordering::Release);
        }
        Ok(())
    }

    /// Publishes every message written so far.
    pub fn flush(&mut self) {
        self.map.atomic(HEAD).store(self.head, Ordering::Release);
    }
}

/// The reading end of the slot ring: caches the writer's position, publishes its own every
/// `batch` messages or when it has caught up.
#[derive(Debug)]
pub struct SlotRx {
    map: Mapping,
    tail: u64,
    head_cache: u64,
    batch: u64,
}

impl SlotRx {
    /// The reader on `map`.
    pub fn new(map: Mapping, batch: u64) -> SlotRx {
        assert!(map.len >= slot_ring_len());
        SlotRx {
            map,
            tail: 0,
            head_cache: 0,
            batch,
        }
    }

    /// Copies the next message out, spinning while the ring is empty.
    ///
    /// # Errors
    /// If the writer makes no progress for [`crate::ctl::WAIT`], or publishes an impossible
    /// position.
    #[inline]
    pub fn recv(&mut self, out: &mut [u8; 64]) -> Result<()> {
        if self.tail == self.head_cache {
            let head = self.map.atomic(HEAD);
            let mut spin = Spin::new();
            loop {
                self.head_cache = head.load(Ordering::Acquire);
                if self.head_cache != self.tail {
                    break;
                }
                spin.wait()?;
            }
            if self.head_cache.wrapping_sub(self.tail) > SLOTS {
                return Err(format!("writer position {} impossible", self.head_cache).into());
            }
        }
        let off = DATA + (self.tail & (SLOTS - 1)) as usize * 64;
        // SAFETY: in bounds as in `send`; the writer published this slot (Acquire above) and
        // does not reuse it until `tail` is published past it.
        unsafe {
            ptr::copy_nonoverlapping(
                self.map.ptr.as_ptr().wrapping_add(off),
                out.as_mut_ptr(),
                64,
            )
        };
        self.tail += 1;
        if self.tail.is_multiple_of(self.batch) || self.tail == self.head_cache {
            self.map.atomic(TAIL).store(self.tail, Ordering::Release);
        }
        Ok(())
    }
}

/// shmem-ipc's ring item: one 64-byte line.
pub type Item = [u64; 8];

/// Writes as many whole items of `src` as fit now into shmem-ipc's ring (one `send_raw`, which
/// signals the reader's eventfd when the ring was empty); returns how many.
///
/// # Errors
/// shmem-ipc's.
pub fn shmem_send(s: &mut shmem_ipc::sharedring::Sender<Item>, src: &[u8]) -> Result<usize> {
    let want = src.len() / 64;
    let mut wrote = 0;
    s.send_raw(|p, room| {
        wrote = want.min(room);
        // SAFETY: shmem-ipc hands out `room` writable items at `p`; `wrote <= room`, and `src`
        // holds `wrote * 64` bytes; the reader does not read them before `send_raw` publishes.
        unsafe { ptr::copy_nonoverlapping(src.as_ptr(), p.cast::<u8>(), wrote * 64) };
        wrote
    })?;
    Ok(wrote)
}

/// Lets `f` read up to `max` items in place in shmem-ipc's ring (one `receive_raw`); returns
/// how many it consumed (0 if the ring was empty).
///
/// # Errors
/// shmem-ipc's, or `f`'s (the items are consumed either way).
pub fn shmem_recv(
    r: &mut shmem_ipc::sharedring::Receiver<Item>,
    max: usize,
    f: impl FnOnce(&[u8]) -> Result<()>,
) -> Result<usize> {
    let mut took = 0;
    let mut res = Ok(());
    r.receive_raw(|p, avail| {
        took = max.min(avail);
        // SAFETY: shmem-ipc hands out `avail` readable items at `p`, which the writer does not
        // touch until this call returns; `took <= avail`; the slice does not escape `f`.
        let bytes = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), took * 64) };
        res = f(bytes);
        took
    })?;
    res.map(|()| took)
}

/// Which raw_sync event the shared_memory contender uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// `raw_sync::events::Event`: a process-shared pthread mutex and condition variable.
    Cond,
    /// `raw_sync::events::BusyEvent`: an atomic flag, spun on.
    Busy,
}

/// A raw_sync event placed in a shared_memory segment.
pub struct Event(Box<dyn raw_sync::events::EventImpl>);

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Event")
    }
}

/// The bytes an event of `kind` takes.
pub fn event_size(kind: EventKind) -> usize {
    use raw_sync::events::{BusyEvent, EventInit};
    match kind {
        EventKind::Cond => raw_sync::events::Event::size_of(None),
        EventKind::Busy => BusyEvent::size_of(None),
    }
}

fn at(seg: &shared_memory::Shmem, off: usize, len: usize) -> Result<*mut u8> {
    if off.checked_add(len).is_none_or(|end| end > seg.len()) {
        return Err(format!("{len} bytes at {off} outside a segment of {}", seg.len()).into());
    }
    Ok(seg.as_ptr().wrapping_add(off))
}

impl Event {
    /// Initialises a new auto-reset event at `off` in `seg` (the segment's creator, once).
    ///
    /// # Errors
    /// raw_sync's.
    pub fn create(seg: &shared_memory::Shmem, off: usize, kind: EventKind) -> Result<Event> {
        use raw_sync::events::{BusyEvent, EventInit};
        let p = at(seg, off, event_size(kind))?;
        let made = match kind {
            // SAFETY: `p` has room for the event inside the live segment, which outlives the
            // event's use (the caller keeps both together), and nothing else uses it yet.
            EventKind::Cond => unsafe { raw_sync::events::Event::new(p, true) },
            // SAFETY: as above.
            EventKind::Busy => unsafe { BusyEvent::new(p, true) },
        };
        Ok(Event(made.map_err(|e| e.to_string())?.0))
    }

    /// Opens the event the peer initialised at `off` in `seg`.
    ///
    /// # Errors
    /// raw_sync's.
    pub fn open(seg: &shared_memory::Shmem, off: usize, kind: EventKind) -> Result<Event> {
        use raw_sync::events::{BusyEvent, EventInit};
        let p = at(seg, off, event_size(kind))?;
        let made = match kind {
            // SAFETY: `p` is in the live segment where the peer initialised this kind of event.
            EventKind::Cond => unsafe { raw_sync::events::Event::from_existing(p) },
            // SAFETY: as above.
            EventKind::Busy => unsafe { BusyEvent::from_existing(p) },
        };
        Ok(Event(made.map_err(|e| e.to_string())?.0))
    }

    /// Waits until the event is signalled (at most `crate::ctl::WAIT`), then resets it.
    ///
    /// # Errors
    /// On time-out.
    pub fn wait(&self) -> Result<()> {
        self.0
            .wait(raw_sync::Timeout::Val(crate::ctl::WAIT))
            .map_err(|e| e.to_string())?;
        // BusyEvent signals with relaxed atomics: order the data after the signal ourselves.
        std::sync::atomic::fence(Ordering::Acquire);
        Ok(())
    }

    /// Signals the event.
    ///
    /// # Errors
    /// raw_sync's.
    pub fn set(&self) -> Result<()> {
        std::sync::atomic::fence(Ordering::Release);
        self.0
            .set(raw_sync::events::EventState::Signaled)
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// Copies `src` to `off` in `seg`.
///
/// # Errors
/// If it does not fit.
pub fn shm_write(seg: &shared_memory::Shmem, off: usize, src: &[u8]) -> Result<()> {
    let p = at(seg, off, src.len())?;
    // SAFETY: in bounds (checked); the reader does not look at the slot until the event that
    // follows this copy is signalled.
    unsafe { ptr::copy_nonoverlapping(src.as_ptr(), p, src.len()) };
    Ok(())
}

/// Lets `f` read `len` bytes at `off` in `seg` in place.
///
/// # Errors
/// If out of bounds, or `f`'s.
pub fn shm_read<T>(
    seg: &shared_memory::Shmem,
    off: usize,
    len: usize,
    f: impl FnOnce(&[u8]) -> Result<T>,
) -> Result<T> {
    let p = at(seg, off, len)?;
    // SAFETY: in bounds (checked); the writer does not touch the slot until this side signals
    // that it is done with it, after `f` returns; the slice does not escape `f`.
    f(unsafe { std::slice::from_raw_parts(p, len) })
}
