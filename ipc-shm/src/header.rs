//! A segment header: magic, version, layout size and a ready flag set last by the creator.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::futex;
use crate::region::Region;

crate::shm_atomic! {
    /// The first 32 bytes of a segment laid out by a protocol: lets an opener tell a good segment
    /// from a half-built or incompatible one.
    ///
    /// The creator writes its layout, then calls [`publish`](Self::publish), which stores the ready
    /// flag last (release). An opener calls [`validate`](Self::validate) or
    /// [`wait_ready`](Self::wait_ready) before it reads anything else.
    ///
    /// ```
    /// use ipc_shm::{Anon, Header};
    /// const MAGIC: u64 = u64::from_le_bytes(*b"MYPROTO1");
    /// let seg = Anon::new(4096)?;
    /// let h = Header::at(&seg, 0)?;
    /// assert!(matches!(h.validate(MAGIC, 1, 4096), Err(ipc_shm::Error::NotPublished)));
    /// h.publish(MAGIC, 1, 4096);
    /// h.validate(MAGIC, 1, 4096)?;
    /// assert!(h.validate(MAGIC, 2, 4096).is_err()); // another version: incompatible
    /// # Ok::<(), ipc_shm::Error>(())
    /// ```
    ///
    /// Every field can be rewritten by a peer at any moment: a successful `validate` says what
    /// the fields held at that instant. [`layout_size`](Self::layout_size) is the peer's claim,
    /// to be checked against the segment's real length before it is used for anything.
    ///
    /// # After fork
    /// Every method is atomic loads and stores, plus `futex` and the monotonic clock in
    /// [`wait_ready`](Self::wait_ready): all may be called in a child forked from a
    /// multi-threaded parent.
    #[derive(Debug)]
    pub struct Header {
        magic: AtomicU64,
        layout_size: AtomicU64,
        version: AtomicU32,
        ready: AtomicU32,
        reserved: AtomicU64,
    }
}

const READY: u32 = 1;

impl Header {
    /// The header's size in bytes (32).
    pub const SIZE: usize = size_of::<Header>();

    /// The header at `offset` of `region` (8-byte aligned, in a writable mapping).
    ///
    /// # Errors
    /// [`Error::ReadOnly`], [`Error::OutOfBounds`], [`Error::Misaligned`].
    pub fn at(region: &Region, offset: usize) -> Result<&Header> {
        region.atomic::<Header>(offset)
    }

    /// Writes magic, version and layout size, then sets the ready flag last and wakes openers
    /// waiting in [`wait_ready`](Self::wait_ready). Call it after the rest of the layout is
    /// initialised.
    pub fn publish(&self, magic: u64, version: u32, layout_size: u64) {
        self.magic.store(magic, Ordering::Relaxed);
        self.version.store(version, Ordering::Relaxed);
        self.layout_size.store(layout_size, Ordering::Relaxed);
        self.ready.store(READY, Ordering::Release);
        futex::wake_all(&self.ready);
    }

    /// Checks that the segment is ready and of this magic, version and layout size; a success
    /// makes everything the creator wrote before [`publish`](Self::publish) visible.
    ///
    /// # Errors
    /// [`Error::NotPublished`] (not published yet), [`Error::Incompatible`] naming the field.
    pub fn validate(&self, magic: u64, version: u32, layout_size: u64) -> Result<()> {
        if self.ready.load(Ordering::Acquire) != READY {
            return Err(Error::NotPublished);
        }
        if self.magic.load(Ordering::Relaxed) != magic {
            return Err(Error::Incompatible { what: "magic" });
        }
        if self.version.load(Ordering::Relaxed) != version {
            return Err(Error::Incompatible { what: "version" });
        }
        if self.layout_size.load(Ordering::Relaxed) != layout_size {
            return Err(Error::Incompatible {
                what: "layout size",
            });
        }
        Ok(())
    }

    /// The layout size the creator published (0 before it is ready): a peer's claim, unchecked;
    /// compare it with the region's length before trusting it.
    pub fn layout_size(&self) -> u64 {
        if self.ready.load(Ordering::Acquire) == READY {
            self.layout_size.load(Ordering::Relaxed)
        } else {
            0
        }
    }

    /// Whether the creator has published the header.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) == READY
    }

    /// Waits up to `limit` (`Duration::MAX`: forever) for the creator to publish: a futex wait
    /// on the ready flag against a deadline on the monotonic clock, in slices of at most a
    /// second; an interrupted or spurious wake-up waits again for what is left.
    ///
    /// # Errors
    /// [`Error::TimedOut`].
    pub fn wait_ready(&self, limit: Duration) -> Result<()> {
        let deadline = Instant::now().checked_add(limit);
        loop {
            let v = self.ready.load(Ordering::Acquire);
            if v == READY {
                return Ok(());
            }
            if !futex::wait(&self.ready, v, deadline) {
                return Err(Error::TimedOut);
            }
        }
    }
}
