//! Test-only shared memory: a named POSIX segment (`shm_open` + `mmap`) that re-run child
//! processes map by name. The mechanism crates may not depend on ipc-shm, so this lives here.
#![allow(unsafe_code)]

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ipc_sem::{RawRobustMutex, RawSemaphore};
use rustix::fs::{Mode, ftruncate};
use rustix::mm::{MapFlags, ProtFlags, mmap, munmap};
use rustix::shm;

/// The environment variable that carries the segment's name to a child.
pub(crate) const SHM_ENV: &str = "IPC_SEM_TEST_SHM";

/// What the tests keep in shared memory. Every field is atomic or an `UnsafeCell` inside, so a
/// `&Region` over memory other processes write is sound.
#[repr(C)]
pub(crate) struct Region {
    pub(crate) sem: RawSemaphore,
    pub(crate) mutex: RawRobustMutex,
    /// The counter the 16 processes increment (load + store: a non-atomic increment, on
    /// purpose, so that a missing lock loses updates without undefined behaviour).
    pub(crate) counter: AtomicU64,
    /// Children that are ready to start.
    pub(crate) ready: AtomicU64,
    /// Set to 1 by the parent: start.
    pub(crate) go: AtomicU64,
    /// Set by a child: "I hold the lock".
    pub(crate) held: AtomicU64,
    /// Holders inside the pool now, and the most ever seen.
    pub(crate) inside: AtomicU64,
    pub(crate) max_inside: AtomicU64,
    /// More slots for the init-once races, and what each racer was told per slot.
    pub(crate) sems: [RawSemaphore; 2],
    pub(crate) mutexes: [RawRobustMutex; 2],
    pub(crate) created: [AtomicU64; 4],
    pub(crate) existing: [AtomicU64; 4],
    /// An early opener's thread id and the address of the state word it waits on.
    pub(crate) waiter_tid: AtomicU64,
    pub(crate) waiter_addr: AtomicU64,
    /// The records of the bounded-buffer tests (`tokio` module): sequence-numbered and
    /// checksummed, written by a producer process, checked by the consumer.
    pub(crate) ring: [Record; RING_SLOTS],
}

/// How many records the ring holds.
pub(crate) const RING_SLOTS: usize = 4;

/// One record of the ring: every field atomic (relaxed; the semaphores order them), so a
/// record read while a broken semaphore let the producer overwrite it is a wrong checksum, not
/// undefined behaviour.
#[repr(C)]
pub(crate) struct Record {
    pub(crate) seq: AtomicU64,
    pub(crate) sum: AtomicU64,
    pub(crate) payload: [AtomicU64; 6],
}

#[cfg(feature = "tokio")]
impl Region {
    /// Writes record `seq` into its slot: a payload drawn from `seq`, and its checksum.
    pub(crate) fn write_record(&self, seq: u64) {
        let r = &self.ring[(seq % RING_SLOTS as u64) as usize];
        let mut rng = ipc_testkit::SplitMix64::new(seq);
        let mut bytes = Vec::with_capacity(48);
        for w in &r.payload {
            let v = rng.next_u64();
            w.store(v, Ordering::Relaxed);
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        r.sum
            .store(ipc_testkit::fnv1a64(&bytes) ^ seq, Ordering::Relaxed);
        r.seq.store(seq, Ordering::Relaxed);
    }

    /// Checks that record `seq` is in its slot, whole.
    pub(crate) fn check_record(&self, seq: u64) {
        let r = &self.ring[(seq % RING_SLOTS as u64) as usize];
        assert_eq!(
            r.seq.load(Ordering::Relaxed),
            seq,
            "record {seq}: wrong sequence number"
        );
        let mut rng = ipc_testkit::SplitMix64::new(seq);
        let mut bytes = Vec::with_capacity(48);
        for w in &r.payload {
            let v = w.load(Ordering::Relaxed);
            assert_eq!(v, rng.next_u64(), "record {seq}: wrong payload");
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        assert_eq!(
            r.sum.load(Ordering::Relaxed),
            ipc_testkit::fnv1a64(&bytes) ^ seq,
            "record {seq}: wrong checksum"
        );
    }
}

/// A mapped segment; the creator unlinks its name on drop.
pub(crate) struct Shared {
    ptr: NonNull<Region>,
    len: usize,
    name: String,
    owner: bool,
}

// SAFETY: a `Shared` is a mapping of shared memory that is only reached through `&Region`,
// whose fields are all atomic or behind an `UnsafeCell` (the crate's raw slots); any thread may
// use it, and unmapping happens once, in `drop`.
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

impl Shared {
    /// Creates a zero-filled segment.
    pub(crate) fn create() -> Shared {
        let name = ipc_testkit::posix_name("semt");
        let fd = shm::open(
            name.as_str(),
            shm::OFlags::CREATE | shm::OFlags::EXCL | shm::OFlags::RDWR,
            Mode::from_raw_mode(0o600),
        )
        .expect("shm_open");
        let len = 4096;
        ftruncate(&fd, len as u64).expect("ftruncate");
        Shared::map(fd, name, true)
    }

    /// Maps the segment named in [`SHM_ENV`] (in a child).
    pub(crate) fn from_env() -> Shared {
        let name = std::env::var(SHM_ENV).expect("IPC_SEM_TEST_SHM");
        let fd = shm::open(name.as_str(), shm::OFlags::RDWR, Mode::empty()).expect("shm_open");
        Shared::map(fd, name, false)
    }

    fn map(fd: std::os::fd::OwnedFd, name: String, owner: bool) -> Shared {
        let len = 4096;
        assert!(size_of::<Region>() <= len);
        // SAFETY: a new mapping at an address the kernel picks aliases no Rust object; the
        // segment is `len` bytes long.
        let p = unsafe {
            mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                &fd,
                0,
            )
        }
        .expect("mmap");
        Shared {
            ptr: NonNull::new(p.cast()).expect("non-null mapping"),
            len,
            name,
            owner,
        }
    }

    pub(crate) fn region(&self) -> &Region {
        // SAFETY: the mapping is page-aligned, at least `size_of::<Region>()` bytes, zero-filled
        // or written only through atomics and the semaphore/mutex functions, and lives as long
        // as `self`; every field of `Region` is atomic or behind an `UnsafeCell`.
        unsafe { self.ptr.as_ref() }
    }

    pub(crate) fn sem_slot(&self) -> NonNull<RawSemaphore> {
        NonNull::from(&self.region().sem)
    }

    pub(crate) fn mutex_slot(&self) -> NonNull<RawRobustMutex> {
        NonNull::from(&self.region().mutex)
    }

    pub(crate) fn sem_slot_n(&self, n: usize) -> NonNull<RawSemaphore> {
        NonNull::from(&self.region().sems[n])
    }

    pub(crate) fn mutex_slot_n(&self, n: usize) -> NonNull<RawRobustMutex> {
        NonNull::from(&self.region().mutexes[n])
    }

    /// A command for a child with the segment's name in its environment.
    pub(crate) fn child(&self, test: &str, role: &str) -> std::process::Command {
        let mut cmd = ipc_testkit::child(test, role);
        cmd.env(SHM_ENV, &self.name);
        cmd
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: the mapping is ours and no reference into it outlives `self`.
        let _ = unsafe { munmap(self.ptr.as_ptr().cast(), self.len) };
        if self.owner {
            let _ = shm::unlink(self.name.as_str());
        }
    }
}

/// Spins (yielding) until `cond` holds; the test's watchdog bounds it.
pub(crate) fn spin_until(mut cond: impl FnMut() -> bool) {
    while !cond() {
        std::thread::yield_now();
    }
}

/// A child's start barrier: report ready, then wait for the parent's go.
pub(crate) fn ready_and_wait_for_go(r: &Region) {
    r.ready.fetch_add(1, Ordering::SeqCst);
    spin_until(|| r.go.load(Ordering::SeqCst) == 1);
}

/// Parks the calling process forever (a child that holds a lock until it is killed).
pub(crate) fn hold_forever() -> ! {
    loop {
        std::thread::park_timeout(Duration::from_secs(3600));
    }
}

/// A System V set under a key in the workspace's range (not IPC_PRIVATE), so that
/// `cargo xtask clean` can find it if an aborted test leaves it behind.
pub(crate) fn new_set(values: &[u16]) -> ipc_sem::SemSet {
    loop {
        match ipc_sem::SemSet::create(ipc_sem::Key::new(ipc_testkit::sysv_key()), values) {
            Err(ipc_sem::Error::AlreadyExists { .. }) => continue,
            r => return r.expect("semget"),
        }
    }
}
