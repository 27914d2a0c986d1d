//! A single-producer single-consumer ring of byte messages in a shared segment.
//!
//! # The protocol
//!
//! Layout: a [`Header`] and the metadata, the reader's position for pollers, the writer's
//! line, the reader's line (each on its own 128-byte line, so the adjacent-line prefetcher does
//! not couple them), then `capacity` bytes of data.
//!
//! A record is an 8-byte header — the payload's length (low 32 bits) and a *tag* (high 32 bits)
//! derived from the record's position, with one bit saying whether the payload starts on the
//! next 64-byte boundary (messages of 1 KiB and more) — then the payload, padded to 8 bytes.
//! The writer copies the payload in, zeroes the header slot of the *next* record, and then
//! stores this record's header with release ordering: that store is the commit. The reader
//! polls the header at its own position: a header carrying that position's tag is a committed
//! record (its payload and the zeroed slot after it are visible), anything else is "not yet".
//! So a record is visible the moment it is committed — no index has to be published, no batch
//! flushed — and a record reserved but never committed is never seen. Tags repeat only every
//! 2^33 bytes and always have their top bit set, so neither a zeroed slot nor the bytes a
//! previous lap left behind can pass for a record (every slot the reader reaches was zeroed or
//! committed by the writer after the previous record, before that record's commit).
//!
//! Positions (`tail` in the writer's line, `head` in the reader's) are stored after every
//! record with plain release stores, in lines the peer reads only when it has to: the reader
//! never reads `tail` (a new writer does, when it attaches); a writer that finds the ring full
//! polls the copy of `head` the reader stores every 16 records (and whenever it is about to
//! wait, and when it closes), and reads the exact `head` only every 64 spins and before it
//! sleeps or gives up — so the reader's per-record store stays in its own cache. The writer
//! keeps 8 bytes free beyond its records for the zeroed slot.
//!
//! Waking: a side about to sleep announces it in the peer's line (`sleep`: 1 for a futex wait,
//! 2 for a doorbell), then re-checks; a side that publishes looks at that word and, if set,
//! wakes the sleeper. The store-then-load on both sides needs a full barrier on both sides
//! (Dekker). The publisher's barrier is skipped when it can be: its process registered for
//! `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)` and the peer has not asked for fences (the
//! `eager` word), in which case the sleeper issues that `membarrier` before its re-check, which
//! puts a full barrier into the publisher's instruction stream. A side that parks often (a
//! [`Wait::Park`] side, an adaptive side whose spins keep failing, one pinned to its peer's CPU,
//! an async side waiting on a doorbell) sets `eager` instead, and the publisher fences.

use std::fmt;
use std::hint;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
use std::time::{Duration, Instant};

use crate::doorbell::{Bell, Doorbell};
use crate::error::{Error, Result};
use crate::futex;
use crate::header::Header;
use crate::region::{Region, Segment};
use crate::sys::Map;

const MAGIC: u64 = u64::from_le_bytes(*b"IPCRSRNG");
/// Version 2: 8-byte record headers carrying a position tag (version 1 padded every record to
/// 64 bytes and published the writer's position after each).
const VERSION: u32 = 2;
/// Offsets of the control lines; each its own 128-byte line (two cache lines, so the adjacent-
/// line prefetcher does not couple them).
const META_OFF: usize = Header::SIZE;
/// The reader's position for pollers, stored every 16 records (and when the reader waits or
/// closes), on the metadata's second line (after the endpoints' capabilities, which change
/// only when an endpoint comes or goes), away from the lines written per record.
const PUBLISHED_OFF: usize = 96;
/// Records the reader frees between two stores of its position for pollers.
const PUBLISH_EVERY: u32 = 16;
const WRITER_OFF: usize = 128;
const READER_OFF: usize = 256;
const DATA_OFF: usize = 384;
/// A record's header: length (low 32 bits) and tag (high 32 bits).
const REC_HDR: usize = 8;
/// The bytes the writer keeps free after its last record: the zeroed header slot of the next.
const SLACK: u64 = 8;
/// The smallest capacity a ring accepts.
const MIN_CAPACITY: usize = 64;
/// The largest capacity: lengths are 32-bit, and tags repeat every 2^34 bytes.
const MAX_CAPACITY: u64 = 1 << 32;
/// How long a blocked side spins before it parks, when it spins.
const SPIN: Duration = Duration::from_micros(50);
/// The shortest spin an adaptive side shrinks to.
const MIN_SPIN: Duration = Duration::from_micros(2);
/// An adaptive side whose spin has shrunk below this parks often: it asks its peer to fence.
const EAGER_BELOW: Duration = Duration::from_micros(8);
/// The longest single futex sleep: how often a parked side re-checks that its peer lives.
const SLICE: Duration = Duration::from_millis(50);
/// A sleep bounded this tightly when a `membarrier` unexpectedly failed.
const SHORT_SLICE: Duration = Duration::from_millis(1);

/// `sleep` word values: awake, parked on the futex, waiting on a doorbell.
const AWAKE: u32 = 0;
const PARKED: u32 = 1;
const BELL: u32 = 2;

/// `*_caps` bits: the endpoint's process is registered for `membarrier` global expedited (it
/// may publish without fences), and the endpoint has a doorbell.
const CAP_FENCELESS: u32 = 1;
const CAP_BELL: u32 = 2;

crate::shm_atomic! {
    /// Fields written rarely: capacity and who the endpoints are.
    #[derive(Debug)]
    struct Meta {
        capacity: AtomicU64,
        writer_pid: AtomicU32,
        reader_pid: AtomicU32,
        writer_closed: AtomicU32,
        reader_closed: AtomicU32,
        /// The one CPU each side is pinned to, or `ANY_CPU`.
        writer_cpu: AtomicU32,
        reader_cpu: AtomicU32,
        /// `CAP_*` bits of each endpoint.
        writer_caps: AtomicU32,
        reader_caps: AtomicU32,
    }
}

static_assertions::const_assert!(META_OFF + size_of::<Meta>() <= PUBLISHED_OFF);
static_assertions::const_assert!(PUBLISHED_OFF + size_of::<Published>() <= WRITER_OFF);

crate::shm_atomic! {
    /// What the reader publishes for a writer that polls for room.
    #[derive(Debug)]
    struct Published {
        head: AtomicU64,
    }
}

crate::shm_atomic! {
    /// One side's hot line: its position, and two words the *other* side writes rarely.
    #[derive(Debug)]
    struct Line {
        /// The owner's position (the writer's tail, the reader's head).
        pos: AtomicU64,
        /// The other side sleeps: `AWAKE`, `PARKED` (futex on this word) or `BELL`.
        sleep: AtomicU32,
        /// The other side asks the owner to fence before it looks at `sleep`.
        eager: AtomicU32,
    }
}

/// How a blocked side waits for its peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Wait {
    /// Spin then park, the spin shrinking (down to 2 µs) while spins end in a park and growing
    /// back (up to 50 µs) while they succeed. When both sides are pinned to the same single CPU
    /// (e.g. both started under `taskset -c 0`; each side publishes its affinity in the ring),
    /// yield once and park at once instead, so it does not burn the time slice its peer needs.
    /// The default.
    #[default]
    Adaptive,
    /// Always spin briefly (about 50 µs), then park on a futex.
    SpinThenPark,
    /// Park on a futex at once (lowest CPU use, highest latency).
    Park,
}

/// "Not pinned to a single CPU", in the `*_cpu` fields.
const ANY_CPU: u32 = u32::MAX;

/// The CPU this thread is pinned to, if its affinity allows exactly one, else [`ANY_CPU`].
fn pinned_cpu() -> u32 {
    match rustix::thread::sched_getaffinity(None) {
        Ok(set) if set.count() == 1 => (0..rustix::thread::CpuSet::MAX_CPU)
            .find(|&c| set.is_set(c))
            .map_or(ANY_CPU, |c| c as u32),
        _ => ANY_CPU,
    }
}

#[derive(Debug, Clone, Copy)]
struct Policy {
    /// How long to spin now.
    spin: Duration,
    /// Whether `spin` adapts: halved when a spin ends in a park (the peer was slow or not
    /// running), doubled up to [`SPIN`] when a spin succeeds; and whether spinning is skipped
    /// when both sides are pinned to the same CPU.
    adapt: bool,
    /// The CPU this side is pinned to ([`ANY_CPU`]: not pinned to one).
    cpu: u32,
}

impl Policy {
    fn of(wait: Wait) -> Policy {
        let fixed = |spin| Policy {
            spin,
            adapt: false,
            cpu: ANY_CPU,
        };
        match wait {
            Wait::Park => fixed(Duration::ZERO),
            Wait::SpinThenPark => fixed(SPIN),
            Wait::Adaptive => Policy {
                spin: SPIN,
                adapt: true,
                cpu: pinned_cpu(),
            },
        }
    }

    /// Whether both sides can only run on the same CPU: spinning would burn the peer's slice.
    fn one_core(&self, peer_cpu: &AtomicU32) -> bool {
        self.adapt && self.cpu != ANY_CPU && peer_cpu.load(Ordering::Relaxed) == self.cpu
    }

    /// Whether this side parks often enough that its peer should fence rather than make it
    /// issue a `membarrier` before every park.
    fn eager(&self, peer_cpu: &AtomicU32) -> bool {
        self.spin < EAGER_BELOW || self.one_core(peer_cpu)
    }

    fn spun_in_vain(&mut self) {
        if self.adapt {
            self.spin = (self.spin / 2).max(MIN_SPIN);
        }
    }

    fn spun_enough(&mut self) {
        if self.adapt && self.spin < SPIN {
            self.spin = (self.spin * 2).min(SPIN);
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Deadline {
    Now,
    At(Instant),
    Never,
}

impl Deadline {
    fn after(limit: Duration) -> Deadline {
        match Instant::now().checked_add(limit) {
            Some(t) => Deadline::At(t),
            None => Deadline::Never,
        }
    }

    fn instant(self) -> Option<Instant> {
        match self {
            Deadline::Now => Some(Instant::now()),
            Deadline::At(t) => Some(t),
            Deadline::Never => None,
        }
    }

    fn passed(self) -> bool {
        match self {
            Deadline::Now => true,
            Deadline::At(t) => Instant::now() >= t,
            Deadline::Never => false,
        }
    }
}

/// Messages from this length on start on a 64-byte boundary (the header slot right before
/// the boundary, up to 56 bytes of padding before it): large copies run aligned, and ring and
/// buffer offsets do not alias every 4 KiB.
const ALIGN_FROM: usize = 1024;

/// Whether a message of `len` bytes starts on a 64-byte boundary (a choice the writer makes
/// when it reserves the room, and records in the header's `ALIGNED` bit).
#[inline]
fn aligned_for(len: usize) -> bool {
    len >= ALIGN_FROM
}

/// The bit, in a header's tag half, of a record whose payload starts on a 64-byte boundary.
const ALIGNED: u32 = 0x4000_0000;

/// Where the payload of a record at `pos` starts, from `pos`: right after the header, or at
/// the next 64-byte boundary for an aligned one.
#[inline]
fn payload_off(pos: u64, aligned: bool) -> u64 {
    if aligned {
        (pos.wrapping_add(REC_HDR as u64 + 63) & !63).wrapping_sub(pos)
    } else {
        REC_HDR as u64
    }
}

/// The bytes a record of `len` payload bytes at `pos` occupies: header (and padding), then the
/// payload rounded up to 8. `len` is at most the capacity (a `u32`), so nothing overflows.
#[inline]
fn rec_len(pos: u64, len: usize, aligned: bool) -> u64 {
    payload_off(pos, aligned) + ((len as u64 + 7) & !7)
}

/// The largest message a ring of capacity `cap` carries: what fits with its header, the padding
/// a large message may need, and the slot the writer keeps free.
fn max_for(cap: usize) -> usize {
    if cap >= 2 * ALIGN_FROM {
        cap - 72
    } else {
        cap - 16
    }
}

/// The tag of the record at `pos`: 30 bits of its 8-byte index with the top bit set (never
/// zero; repeats every 2^33 bytes, more than any capacity).
#[inline]
fn tag(pos: u64) -> u32 {
    ((pos >> 3) as u32 & 0x3fff_ffff) | 0x8000_0000
}

/// The committed header of a record of `len` bytes at `pos`.
#[inline]
fn record_header(pos: u64, len: usize, aligned: bool) -> u64 {
    let t = tag(pos) | if aligned { ALIGNED } else { 0 };
    (u64::from(t) << 32) | len as u64
}

/// The length, and whether it is aligned, of the record whose header was read at `pos`, if
/// the header is a committed record's.
#[inline]
fn committed(pos: u64, header: u64) -> Option<(u64, bool)> {
    let t = (header >> 32) as u32;
    (t & !ALIGNED == tag(pos)).then_some((header & 0xffff_ffff, t & ALIGNED != 0))
}

/// Whether the process `pid` (read from shared memory: untrusted) may still run. 0 means "not
/// attached yet" (alive); a value that is no pid at all counts as gone.
fn alive(pid: u32) -> bool {
    if pid == 0 {
        return true;
    }
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    match rustix::process::Pid::from_raw(raw) {
        None => true,
        Some(p) => {
            rustix::process::test_kill_process(p) != Err(rustix::io::Errno::SRCH) && !zombie(raw)
        }
    }
}

/// Whether `pid` has exited and waits to be reaped (state `Z` or `X` in `/proc/PID/stat`).
/// `kill(pid, 0)` succeeds on such a process, but it will never touch the ring again: a parent
/// blocked on a ring whose peer is its own dead, unreaped child must not wait forever. Without
/// `/proc`, the answer is "no".
fn zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X")
    })
}

fn my_pid() -> u32 {
    std::process::id()
}

/// This process's `membarrier` state: the pid it was decided for (a forked child decides again:
/// registration belongs to a process), and whether it is registered for global expedited
/// barriers and may issue them.
static FENCELESS_PID: AtomicU32 = AtomicU32::new(0);
static FENCED_PID: AtomicU32 = AtomicU32::new(0);

/// Whether this process may publish without fences (registered for
/// `MEMBARRIER_CMD_GLOBAL_EXPEDITED`) and may issue such barriers. Decided once per process.
fn fenceless_process() -> bool {
    use rustix::thread::{MembarrierCommand as Cmd, membarrier, membarrier_query};
    let me = my_pid();
    if FENCELESS_PID.load(Ordering::Relaxed) == me {
        return true;
    }
    if FENCED_PID.load(Ordering::Relaxed) == me {
        return false;
    }
    let q = membarrier_query();
    let ok = q.contains_command(Cmd::GlobalExpedited)
        && q.contains_command(Cmd::RegisterGlobalExpedited)
        && membarrier(Cmd::RegisterGlobalExpedited).is_ok();
    if ok {
        FENCELESS_PID.store(me, Ordering::Relaxed);
    } else {
        FENCED_PID.store(me, Ordering::Relaxed);
    }
    ok
}

/// The ring's memory as the endpoints use it on their hot paths: the control lines and the
/// data area at ring positions (wrapping). Every access goes through the mapping's own range,
/// alignment and writability checks (branches only); the results are `Option`/`bool`, small
/// enough to stay in registers, because an endpoint checked the layout when it attached and a
/// failure here means only that the mapping is not what it was ([`lost`]).
#[derive(Clone, Copy)]
struct Data<'a> {
    map: &'a Map,
    cap: usize,
    mask: u64,
}

/// The error for an access to the ring's layout that cannot fail once an endpoint attached.
#[cold]
#[inline(never)]
fn lost() -> Error {
    Error::Incompatible {
        what: "ring layout",
    }
}

impl<'a> Data<'a> {
    #[inline]
    fn new(region: &'a Region, cap: usize) -> Data<'a> {
        Data {
            map: region.map(),
            cap,
            mask: cap as u64 - 1,
        }
    }

    #[inline]
    fn at(&self, pos: u64) -> usize {
        (pos & self.mask) as usize
    }

    #[inline]
    fn meta(&self) -> Option<&'a Meta> {
        self.map.atomic::<Meta>(META_OFF)
    }

    #[inline]
    fn writer(&self) -> Option<&'a Line> {
        self.map.atomic::<Line>(WRITER_OFF)
    }

    #[inline]
    fn reader(&self) -> Option<&'a Line> {
        self.map.atomic::<Line>(READER_OFF)
    }

    #[inline]
    fn published(&self) -> Option<&'a Published> {
        self.map.atomic::<Published>(PUBLISHED_OFF)
    }

    /// The header slot at `pos` (8-aligned, so it never straddles the end).
    #[inline]
    fn header(&self, pos: u64) -> Option<&'a AtomicU64> {
        self.map.atomic::<AtomicU64>(DATA_OFF + self.at(pos))
    }

    #[inline]
    fn put(&self, pos: u64, bytes: &[u8]) -> bool {
        let off = self.at(pos);
        if bytes.len() <= self.cap - off {
            return self.map.write(DATA_OFF + off, bytes);
        }
        let (a, b) = bytes.split_at(self.cap - off);
        self.map.write(DATA_OFF + off, a) && self.map.write(DATA_OFF, b)
    }

    #[inline]
    fn get(&self, pos: u64, out: &mut [u8]) -> bool {
        let off = self.at(pos);
        if out.len() <= self.cap - off {
            return self.map.read(DATA_OFF + off, out);
        }
        let (a, b) = out.split_at_mut(self.cap - off);
        self.map.read(DATA_OFF + off, a) && self.map.read(DATA_OFF, b)
    }
}

/// A ring laid out in a segment, before it is split into its [`RingWriter`] and [`RingReader`].
///
/// Layout: a [`Header`], a metadata line, the writer's line, the reader's line, each on its own
/// 128-byte line, then `capacity` bytes of data (a power of two). A message costs 8 bytes of
/// header plus its length rounded up to 8. Messages are copied in by the writer (or written in
/// place through a [`Reservation`]) and copied out by the reader (or read in place through a
/// [`Message`]); the reader checks every length the writer wrote, so a corrupt or hostile
/// writer gives [`Error::Corrupt`], never a panic or an access outside the segment, and the
/// ring never lends a `&[u8]` over memory the peer can write.
///
/// Each record becomes visible to the reader the moment the writer commits it: there is no
/// batch to flush, and a writer that stops after one message has published that message.
/// Both sides spin briefly, then park on a futex ([`Wait`]); a side waiting in an event loop
/// uses a [`Doorbell`] instead ([`with_doorbell`](Self::with_doorbell)).
///
/// Each endpoint claims its role by recording its pid; a role held by a live process is
/// [`Error::RoleTaken`]. An endpoint that is dropped marks its side closed and wakes the peer; a
/// peer that exits without dropping is noticed through its pid within 50 ms of parking. Either
/// way the other side gets [`Error::PeerGone`] (the reader only after draining what was sent).
/// The pid check (`kill(pid, 0)`, and `/proc/PID/stat` to tell an exited but unreaped child
/// from a live one) could be fooled by pid reuse; timeouts bound that case.
/// A forked child must not use an endpoint its parent keeps using (single producer, single
/// consumer).
///
/// # After fork
/// A forked child shares the ring's memory. In a child forked from a multi-threaded parent, an
/// endpoint (or a `Ring`) it inherited may only be dropped: the drop sees that it is not the
/// process that claimed the role (`getpid`) and touches nothing, so the parent's endpoint stays
/// open and claimed. Sending and receiving in such a child are not supported: they may read
/// `/proc` (allocating) to check the peer, and the role belongs to the parent; a child that
/// should be an endpoint claims its own role after `exec`, or (single-threaded parent) with
/// `Ring::open(..)?.into_writer()` after the parent's endpoint is dropped.
///
/// ```
/// use ipc_shm::{Anon, Ring};
/// let seg = Anon::new(Ring::segment_size(1 << 16)?)?;
/// let mut w = Ring::create(&seg)?.into_writer()?;  // usually: in one process
/// let mut r = Ring::open(&seg)?.into_reader()?;    // and this in another
/// w.send(b"hello")?;
/// let mut buf = [0u8; 64];
/// let n = r.recv(&mut buf)?;
/// assert_eq!(&buf[..n], b"hello");
/// assert!(matches!(r.try_recv(&mut buf), Err(ipc_shm::Error::WouldBlock)));
/// # Ok::<(), ipc_shm::Error>(())
/// ```
pub struct Ring<S: Segment> {
    seg: S,
    cap: usize,
    bell: Option<Doorbell>,
}

impl<S: Segment> fmt::Debug for Ring<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("capacity", &self.cap)
            .field("doorbell", &self.bell)
            .finish()
    }
}

impl Ring<Region> {
    /// The segment size a ring of `capacity` data bytes needs: the control block (384 bytes)
    /// plus `capacity`, ready for a segment constructor (`Shm::create(name,
    /// Ring::segment_size(1 << 20)?)`). Works for a ring on any segment type (it is written on
    /// `Ring<Region>` only so that no type needs naming).
    ///
    /// `capacity` must be a power of two from 64 bytes to 4 GiB: anything else is refused,
    /// never rounded.
    ///
    /// ```
    /// use ipc_shm::Ring;
    /// assert_eq!(Ring::segment_size(1 << 16)?, 384 + (1 << 16));
    /// assert!(matches!(Ring::segment_size(1000), Err(ipc_shm::Error::InvalidSize { .. })));
    /// # Ok::<(), ipc_shm::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidSize`] for a capacity that is not a power of two, is below 64 or above
    /// 4 GiB, or makes a segment larger than [`MAX_SIZE`](crate::MAX_SIZE).
    pub fn segment_size(capacity: usize) -> Result<u64> {
        let size = capacity as u64;
        if !capacity.is_power_of_two() || capacity < MIN_CAPACITY {
            return Err(Error::InvalidSize {
                size,
                reason: "a ring's capacity is a power of two of at least 64 bytes",
            });
        }
        if size > MAX_CAPACITY {
            return Err(Error::InvalidSize {
                size,
                reason: "a ring's capacity is at most 4 GiB",
            });
        }
        match size.checked_add(DATA_OFF as u64) {
            Some(total) if total <= crate::MAX_SIZE => Ok(total),
            _ => Err(Error::InvalidSize {
                size,
                reason: "larger than the address space can map (ipc_shm::MAX_SIZE)",
            }),
        }
    }
}

impl<S: Segment> Ring<S> {
    /// Lays a new ring out in `seg` and publishes its header last. Use it on a segment nobody
    /// else uses yet. The capacity is the largest power of two (at most 4 GiB) that fits after
    /// the control block: exactly the one asked for when the segment was sized with
    /// [`segment_size`](Ring::segment_size) (any bytes beyond it stay unused).
    ///
    /// # Errors
    /// [`Error::InvalidSize`] if the segment holds less than 64 data bytes,
    /// [`Error::ReadOnly`].
    pub fn create(seg: S) -> Result<Ring<S>> {
        let region = seg.region();
        let room = region.len().saturating_sub(DATA_OFF);
        if room < MIN_CAPACITY {
            return Err(Error::InvalidSize {
                size: region.len() as u64,
                reason: "a ring needs a segment of at least 448 bytes (Ring::segment_size(64))",
            });
        }
        let cap = (1u64 << (usize::BITS - 1 - room.leading_zeros())).min(MAX_CAPACITY) as usize;
        // Zeroed control block; a zeroed header slot is never a record, so the data area needs
        // no clearing (it reads as zeros in a new segment, and slot 0 is zeroed below anyway).
        region.fill(0, DATA_OFF, 0)?;
        region.write::<u64>(DATA_OFF, &0)?;
        let meta = region.atomic::<Meta>(META_OFF)?;
        meta.capacity.store(cap as u64, Ordering::Relaxed);
        Header::at(region, 0)?.publish(MAGIC, VERSION, (DATA_OFF + cap) as u64);
        Ok(Ring {
            seg,
            cap,
            bell: None,
        })
    }

    /// Opens a ring another process created in `seg`, checking its header and capacity.
    ///
    /// # Errors
    /// [`Error::NotPublished`] (not published yet: see [`open_timeout`](Self::open_timeout)),
    /// [`Error::Incompatible`], [`Error::ReadOnly`] (both ends write their position).
    pub fn open(seg: S) -> Result<Ring<S>> {
        let region = seg.region();
        let header = Header::at(region, 0)?;
        let layout = header.layout_size();
        if layout == 0 {
            return Err(Error::NotPublished);
        }
        let cap = region
            .atomic::<Meta>(META_OFF)?
            .capacity
            .load(Ordering::Relaxed);
        let ok = cap.is_power_of_two()
            && cap >= MIN_CAPACITY as u64
            && cap <= MAX_CAPACITY
            && (DATA_OFF as u64).checked_add(cap) == Some(layout)
            && layout <= region.len() as u64;
        if !ok {
            return Err(Error::Incompatible {
                what: "ring capacity",
            });
        }
        header.validate(MAGIC, VERSION, layout)?;
        Ok(Ring {
            seg,
            cap: cap as usize,
            bell: None,
        })
    }

    /// As [`open`](Self::open), waiting up to `limit` for the creator to publish the ring.
    ///
    /// # Errors
    /// [`Error::TimedOut`], and as `open`.
    pub fn open_timeout(seg: S, limit: Duration) -> Result<Ring<S>> {
        Header::at(seg.region(), 0)?.wait_ready(limit)?;
        Self::open(seg)
    }

    /// Gives the endpoint made from this ring a [`Doorbell`]: it rings the peer's half when it
    /// publishes while the peer waits on its doorbell, and it can itself wait on its half from
    /// an event loop ([`RingReader::doorbell_fd`], or the `tokio` feature's async endpoints).
    ///
    /// Both endpoints of a ring with a doorbell need the same doorbell (a copy of it in each
    /// process: inherited by `fork`, passed as descriptors, or opened by name): an endpoint
    /// without one cannot ring it, so attaching one to a ring whose peer waits on a doorbell,
    /// or waiting on a doorbell while the peer has none, is [`Error::NoDoorbell`].
    ///
    /// ```
    /// use ipc_shm::{Anon, Doorbell, Ring};
    /// let seg = Anon::new(Ring::segment_size(4096)?)?;
    /// let bell = Doorbell::new()?; // two eventfds; a forked child inherits them
    /// let mut w = Ring::create(&seg)?.with_doorbell(bell.try_clone()?).into_writer()?;
    /// let mut r = Ring::open(&seg)?.with_doorbell(bell).into_reader()?;
    /// let mut buf = [0u8; 16];
    /// assert!(matches!(r.try_recv(&mut buf), Err(ipc_shm::Error::WouldBlock))); // armed
    /// w.send(b"ding")?; // the reader waits on its doorbell: ring it
    /// assert!(r.doorbell_fd().is_some());
    /// assert_eq!(r.try_recv(&mut buf)?, 4);
    /// # Ok::<(), ipc_shm::Error>(())
    /// ```
    pub fn with_doorbell(mut self, bell: Doorbell) -> Ring<S> {
        self.bell = Some(bell);
        self
    }

    /// The data capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// The largest message: capacity minus 16 bytes (a record header, and the free slot the
    /// writer keeps after its last record), or minus 72 from a capacity of 2 KiB on (messages
    /// of 1 KiB and more start on a 64-byte boundary, after up to 56 bytes of padding).
    pub fn max_message(&self) -> usize {
        max_for(self.cap)
    }

    /// The segment the ring lives in.
    pub fn segment(&self) -> &S {
        &self.seg
    }

    /// Claims a role: records our pid (compare-and-swap against a free or dead holder), then
    /// our capabilities; then, with a full barrier between, wakes the peer if it sleeps (it may
    /// have decided how to sleep before it could see our capabilities).
    fn claim(&self, side: Side, fenceless: bool) -> Result<Previous> {
        let region = self.seg.region();
        let meta = region.atomic::<Meta>(META_OFF)?;
        let (pid, closed, caps, peer_caps) = match side {
            Side::Writer => (
                &meta.writer_pid,
                &meta.writer_closed,
                &meta.writer_caps,
                &meta.reader_caps,
            ),
            Side::Reader => (
                &meta.reader_pid,
                &meta.reader_closed,
                &meta.reader_caps,
                &meta.writer_caps,
            ),
        };
        let me = my_pid();
        let cur = pid.load(Ordering::Acquire);
        let is_closed = closed.load(Ordering::Acquire) != 0;
        let free = cur == 0 || is_closed || !alive(cur);
        if !free || cur == me && !is_closed {
            return Err(Error::RoleTaken);
        }
        pid.compare_exchange(cur, me, Ordering::AcqRel, Ordering::Acquire)
            .map_err(|_| Error::RoleTaken)?;
        let previous = Previous {
            pid: cur,
            closed: u32::from(is_closed),
            caps: caps.load(Ordering::SeqCst),
        };
        let mine = if fenceless { CAP_FENCELESS } else { 0 }
            | if self.bell.is_some() { CAP_BELL } else { 0 };
        caps.store(mine, Ordering::SeqCst);
        closed.store(0, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        // A peer waiting on a doorbell needs one from us; one that could not see our claim
        // yet is caught by its own check (see `Park::announce`).
        if self.bell.is_none() && peer_caps.load(Ordering::SeqCst) & CAP_BELL != 0 {
            let peer_sleep = match side {
                Side::Writer => &region.atomic::<Line>(WRITER_OFF)?.sleep,
                Side::Reader => &region.atomic::<Line>(READER_OFF)?.sleep,
            };
            if peer_sleep.load(Ordering::SeqCst) == BELL {
                self.unclaim(side, previous);
                return Err(Error::NoDoorbell);
            }
        }
        // Wake a peer that parked before it could see our capabilities.
        let (line, bell) = match side {
            Side::Writer => (
                region.atomic::<Line>(WRITER_OFF)?,
                self.bell.as_ref().map(|b| &b.data),
            ),
            Side::Reader => (
                region.atomic::<Line>(READER_OFF)?,
                self.bell.as_ref().map(|b| &b.space),
            ),
        };
        if line.sleep.load(Ordering::SeqCst) != AWAKE {
            wake(line, bell);
        }
        Ok(previous)
    }

    /// Gives a role claimed by [`claim`](Self::claim) back as it was (an attach refused after
    /// the claim).
    fn unclaim(&self, side: Side, previous: Previous) {
        let Ok(meta) = self.seg.region().atomic::<Meta>(META_OFF) else {
            return;
        };
        let (pid, closed, caps) = match side {
            Side::Writer => (&meta.writer_pid, &meta.writer_closed, &meta.writer_caps),
            Side::Reader => (&meta.reader_pid, &meta.reader_closed, &meta.reader_caps),
        };
        caps.store(previous.caps, Ordering::SeqCst);
        closed.store(previous.closed, Ordering::SeqCst);
        pid.store(previous.pid, Ordering::SeqCst);
    }

    /// Where a new writer starts, after claiming the role (so no other writer can still be
    /// committing): after the records a previous writer committed, validated against the
    /// reader's position. Zeroes the slot there and publishes it.
    fn writer_start(&self) -> Result<(u64, u64)> {
        let region = self.seg.region();
        let data = Data::new(region, self.cap);
        let cap = self.cap as u64;
        let corrupt = |what| Error::Corrupt { what };
        let tail = region
            .atomic::<Line>(WRITER_OFF)?
            .pos
            .load(Ordering::Acquire);
        let head = region
            .atomic::<Line>(READER_OFF)?
            .pos
            .load(Ordering::Acquire);
        // Every record starts on an 8-byte boundary and both ends advance by whole records.
        if !tail.is_multiple_of(8) {
            return Err(corrupt("writer position"));
        }
        if !head.is_multiple_of(8) {
            return Err(corrupt("reader position"));
        }
        // The reader may have read past the published tail: a writer that died between a
        // commit and publishing its position. Start from whichever is ahead.
        let mut t = if tail.wrapping_sub(head) <= cap {
            tail
        } else if head.wrapping_sub(tail) <= cap {
            head
        } else {
            return Err(corrupt("reader position"));
        };
        // Walk over committed records (untrusted: bounded by the capacity, lengths checked).
        let max = max_for(self.cap) as u64;
        loop {
            let used = t.wrapping_sub(head);
            let slot = data.header(t).ok_or_else(lost)?;
            let Some((len, aligned)) = committed(t, slot.load(Ordering::Acquire)) else {
                break;
            };
            if len > max {
                break;
            }
            let rec = rec_len(t, len as usize, aligned);
            if used + rec + SLACK > cap {
                break;
            }
            t = t.wrapping_add(rec);
        }
        // The next record's slot: zeroed, whatever an old writer left there.
        data.header(t).ok_or_else(lost)?.store(0, Ordering::Release);
        region
            .atomic::<Line>(WRITER_OFF)?
            .pos
            .store(t, Ordering::Release);
        Ok((t, head))
    }

    /// Claims the writer role and returns the writer endpoint. A new writer continues after
    /// the records a previous writer committed (also those it committed without publishing its
    /// position, if it died in between): nothing unread is overwritten.
    ///
    /// # Errors
    /// [`Error::RoleTaken`] if a live process holds it, [`Error::Corrupt`] if the published
    /// positions are impossible, [`Error::NoDoorbell`] if the reader waits on a doorbell and
    /// this ring has none.
    pub fn into_writer(self) -> Result<RingWriter<S>> {
        let fenceless = fenceless_process();
        let previous = self.claim(Side::Writer, fenceless)?;
        let (t, head) = match self.writer_start() {
            Ok(start) => start,
            Err(e) => {
                self.unclaim(Side::Writer, previous);
                return Err(e);
            }
        };
        let region = self.seg.region();
        let policy = Policy::of(Wait::Adaptive);
        region
            .atomic::<Meta>(META_OFF)?
            .writer_cpu
            .store(policy.cpu, Ordering::Relaxed);
        Ok(RingWriter {
            cap: self.cap,
            seg: self.seg,
            tail: t,
            head,
            policy,
            pid: my_pid(),
            fenceless,
            bell: self.bell,
            armed: false,
            async_mode: false,
        })
    }

    /// Claims the reader role and returns the reader endpoint.
    ///
    /// # Errors
    /// [`Error::RoleTaken`] if a live process holds it, [`Error::Corrupt`] if the published
    /// reader position is impossible (records start on 8-byte boundaries),
    /// [`Error::NoDoorbell`] if the writer waits on a doorbell and this ring has none.
    pub fn into_reader(self) -> Result<RingReader<S>> {
        // A previous reader's position, read from shared memory: every record starts on an
        // 8-byte boundary, and the reader only ever advances by whole records.
        let head = self
            .seg
            .region()
            .atomic::<Line>(READER_OFF)?
            .pos
            .load(Ordering::Acquire);
        if !head.is_multiple_of(8) {
            return Err(Error::Corrupt {
                what: "reader position",
            });
        }
        let fenceless = fenceless_process();
        self.claim(Side::Reader, fenceless)?;
        let policy = Policy::of(Wait::Adaptive);
        let meta = self.seg.region().atomic::<Meta>(META_OFF)?;
        meta.reader_cpu.store(policy.cpu, Ordering::Relaxed);
        Ok(RingReader {
            cap: self.cap,
            seg: self.seg,
            head,
            pending: None,
            pending_aligned: false,
            unpublished: 0,
            consumed: 0,
            policy,
            pid: my_pid(),
            fenceless,
            bell: self.bell,
            armed: false,
            async_mode: false,
        })
    }
}

/// A role as it was before [`Ring::claim`] took it.
#[derive(Debug, Clone, Copy)]
struct Previous {
    pid: u32,
    closed: u32,
    caps: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Writer,
    Reader,
}

/// How a side waits: on the futex (blocking calls) or on its doorbell (`try_` calls of an
/// endpoint with a doorbell).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum How {
    Futex,
    Bell,
}

/// What a waiting side needs from the ring: where it announces that it sleeps, where it asks
/// for fences, and what it knows of its peer.
struct Park<'a> {
    /// The word this side sleeps on, in the peer's line.
    sleep: &'a AtomicU32,
    /// Where this side asks the peer to fence, in the peer's line.
    eager: &'a AtomicU32,
    peer_caps: &'a AtomicU32,
    peer_cpu: &'a AtomicU32,
    peer_pid: &'a AtomicU32,
    /// Whether this process can issue `membarrier` (else it always asks for fences).
    fenceless: bool,
}

impl Park<'_> {
    /// Announces that this side is about to sleep (`how`), with the barriers that make the
    /// peer's next publish see it, or this side's re-check see that publish. Returns whether
    /// the sleep must be kept short (a `membarrier` failed, so the peer may not have seen it).
    fn announce(&self, value: u32, policy: &Policy, how: How) -> Result<bool> {
        let eager = !self.fenceless || how == How::Bell || policy.eager(self.peer_cpu);
        let was_eager = self.eager.load(Ordering::Relaxed) != 0;
        if eager != was_eager {
            self.eager.store(u32::from(eager), Ordering::SeqCst);
        }
        self.sleep.store(value, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let peer_caps = self.peer_caps.load(Ordering::SeqCst);
        if how == How::Bell
            && peer_caps & CAP_BELL == 0
            && self.peer_pid.load(Ordering::SeqCst) != 0
        {
            // The peer is attached and cannot ring a doorbell (if it closes or dies, the
            // caller sees that first).
            return Err(Error::NoDoorbell);
        }
        // A peer that may publish without fences cannot be trusted to see `sleep` unless we
        // put a barrier into its instruction stream: always when we are not eager, and once
        // when we just became eager (publishes it made before it could see `eager`).
        if peer_caps & CAP_FENCELESS != 0
            && (!eager || !was_eager)
            && rustix::thread::membarrier(rustix::thread::MembarrierCommand::GlobalExpedited)
                .is_err()
        {
            self.eager.store(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            return Ok(true);
        }
        Ok(false)
    }
}

/// `poll(fd, POLLIN)` until readable or `limit` (retried on `EINTR` against the deadline):
/// whether it became readable.
fn poll_readable(fd: BorrowedFd<'_>, limit: Duration) -> Result<bool> {
    use rustix::event::{PollFd, PollFlags, Timespec};
    let deadline = Instant::now().checked_add(limit);
    loop {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let ts = left.map(|l| Timespec {
            tv_sec: l.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: i64::from(l.subsec_nanos()),
        });
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        match rustix::event::poll(&mut fds, ts.as_ref()) {
            Ok(n) => return Ok(n > 0),
            Err(rustix::io::Errno::INTR) => {
                if left.is_some_and(|l| l.is_zero()) {
                    return Ok(false);
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// How closely a waiting side looks at its peer's position: `Quick` reads what the peer
/// publishes for pollers (the reader's position every 16 records), `Exact` what it stores
/// after every record (read every 64 spins, and always before sleeping or giving up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Look {
    Quick,
    Exact,
}

/// Spins, yields, then parks until `ready()` or the deadline; `gone()` is checked before each
/// sleep. With `How::Bell` and `Deadline::Now` it arms the doorbell instead of sleeping:
/// `WouldBlock` then means the peer will ring it.
fn block(
    park: &Park<'_>,
    policy: &mut Policy,
    dl: Deadline,
    how: How,
    mut ready: impl FnMut(Look) -> Result<bool>,
    mut gone: impl FnMut(bool) -> bool,
) -> Result<()> {
    if ready(Look::Quick)? {
        return Ok(());
    }
    if matches!(dl, Deadline::Now) {
        if how == How::Bell {
            let armed = park.announce(BELL, policy, how);
            if ready(Look::Exact)? {
                park.sleep.store(AWAKE, Ordering::Relaxed);
                return Ok(());
            }
            if gone(true) {
                park.sleep.store(AWAKE, Ordering::Relaxed);
                return if ready(Look::Exact)? {
                    Ok(())
                } else {
                    Err(Error::PeerGone)
                };
            }
            if let Err(e) = armed {
                park.sleep.store(AWAKE, Ordering::Relaxed);
                return Err(e);
            }
            return Err(Error::WouldBlock);
        }
        if ready(Look::Exact)? {
            return Ok(());
        }
        return Err(if gone(true) && !ready(Look::Exact)? {
            Error::PeerGone
        } else {
            Error::WouldBlock
        });
    }
    let one_core = policy.one_core(park.peer_cpu);
    if one_core {
        // The peer cannot run while we spin: let it have the CPU once, then sleep.
        rustix::thread::sched_yield();
        if ready(Look::Exact)? {
            return Ok(());
        }
    } else if !policy.spin.is_zero() {
        let start = Instant::now();
        loop {
            for _ in 0..64 {
                hint::spin_loop();
                if ready(Look::Quick)? {
                    policy.spun_enough();
                    return Ok(());
                }
            }
            if ready(Look::Exact)? {
                policy.spun_enough();
                return Ok(());
            }
            if start.elapsed() >= policy.spin || dl.passed() {
                break;
            }
        }
        policy.spun_in_vain();
    }
    // The closed flag is checked before every sleep; the peer's pid (a syscall) only once a
    // sleep has ended without news, so a healthy wake-up costs no extra syscall.
    let mut slept = false;
    loop {
        let short = park.announce(PARKED, policy, How::Futex)?;
        if ready(Look::Exact)? {
            park.sleep.store(AWAKE, Ordering::Relaxed);
            return Ok(());
        }
        if gone(slept) {
            park.sleep.store(AWAKE, Ordering::Relaxed);
            return if ready(Look::Exact)? {
                Ok(())
            } else {
                Err(Error::PeerGone)
            };
        }
        let slice = if short { SHORT_SLICE } else { SLICE };
        if !futex::wait_slice(park.sleep, PARKED, dl.instant(), slice) {
            park.sleep.store(AWAKE, Ordering::Relaxed);
            return if ready(Look::Exact)? {
                Ok(())
            } else {
                Err(Error::TimedOut)
            };
        }
        slept = true;
    }
}

/// After publishing on `line`: wakes the peer if it announced that it sleeps. The full barrier
/// between the publish and the look at `sleep` is needed unless this process is registered for
/// `membarrier` and the peer did not ask for it (see the module docs).
#[inline]
fn notify(line: &Line, fenceless: bool, bell: Option<&Bell>) {
    if !fenceless || line.eager.load(Ordering::Relaxed) != 0 {
        fence(Ordering::SeqCst);
    }
    if line.sleep.load(Ordering::Relaxed) != AWAKE {
        wake(line, bell);
    }
}

/// Wakes the side sleeping on `line.sleep`: the futex, or its doorbell.
#[cold]
fn wake(line: &Line, bell: Option<&Bell>) {
    match line.sleep.swap(AWAKE, Ordering::SeqCst) {
        PARKED => futex::wake_all(&line.sleep),
        BELL => {
            if let Some(b) = bell {
                b.ring();
            }
        }
        _ => {}
    }
}

/// The writing end of a [`Ring`]: copies messages in, or lets the caller write them in place
/// ([`reserve`](Self::reserve)).
///
/// After fork: see [`Ring`]; in a child forked from a multi-threaded parent, an inherited
/// writer may only be dropped (which touches nothing).
pub struct RingWriter<S: Segment> {
    seg: S,
    cap: usize,
    tail: u64,
    /// The last head seen (the reader's position).
    head: u64,
    policy: Policy,
    pid: u32,
    fenceless: bool,
    bell: Option<Doorbell>,
    /// A `try_` call armed the doorbell (announced a doorbell wait) since the last drain.
    armed: bool,
    /// An async wrapper drains the doorbell itself (through its reactor registration).
    async_mode: bool,
}

impl<S: Segment> fmt::Debug for RingWriter<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingWriter")
            .field("capacity", &self.cap)
            .field("tail", &self.tail)
            .field("policy", &self.policy)
            .field("doorbell", &self.bell)
            .finish()
    }
}

impl<S: Segment> RingWriter<S> {
    /// Chooses how this side waits when the ring is full ([`Wait::Adaptive`] by default).
    /// Call it again after changing this thread's CPU affinity.
    pub fn set_wait(&mut self, wait: Wait) {
        self.policy = Policy::of(wait);
        if let Ok(meta) = self.seg.region().atomic::<Meta>(META_OFF) {
            meta.writer_cpu.store(self.policy.cpu, Ordering::Relaxed);
        }
    }

    /// The largest message the ring accepts.
    pub fn max_message(&self) -> usize {
        max_for(self.cap)
    }

    /// Whether the reader has neither closed its end nor exited (true before it attaches).
    pub fn is_peer_alive(&self) -> bool {
        self.seg.region().atomic::<Meta>(META_OFF).is_ok_and(|m| {
            m.reader_closed.load(Ordering::Acquire) == 0
                && alive(m.reader_pid.load(Ordering::Relaxed))
        })
    }

    /// The doorbell half this writer waits on (it becomes readable when the reader frees space
    /// while this writer waits on it), if the ring was given a [`Doorbell`]. For event loops:
    /// register it for readability; a `try_` call that returns [`Error::WouldBlock`] has armed
    /// it, and the next `try_` call clears it. See [`RingReader::doorbell_fd`].
    pub fn doorbell_fd(&self) -> Option<BorrowedFd<'_>> {
        self.bell.as_ref().map(|b| b.space.as_fd())
    }

    /// Waits (`poll`) until this writer's doorbell half is readable or `limit` passes: the
    /// wait an event loop does on [`doorbell_fd`](Self::doorbell_fd), for a loop written by
    /// hand. Returns whether it was rung; it stays rung until the next `try_` call.
    ///
    /// # Errors
    /// [`Error::NoDoorbell`] if the ring has no doorbell.
    pub fn wait_doorbell(&self, limit: Duration) -> Result<bool> {
        poll_readable(self.doorbell_fd().ok_or(Error::NoDoorbell)?, limit)
    }

    /// Sends `msg`, waiting while the ring is full.
    ///
    /// # Errors
    /// [`Error::MessageTooLarge`], [`Error::PeerGone`] (reader closed or exited),
    /// [`Error::Corrupt`] (the reader published an impossible position).
    #[inline]
    pub fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.send_until(msg, Deadline::Never)
    }

    /// Sends `msg` if there is room now. With a doorbell, [`Error::WouldBlock`] means the
    /// doorbell is armed: it rings when the reader frees space.
    ///
    /// # Errors
    /// [`Error::WouldBlock`] when full, and as [`send`](Self::send).
    #[inline]
    pub fn try_send(&mut self, msg: &[u8]) -> Result<()> {
        self.send_until(msg, Deadline::Now)
    }

    /// Sends `msg`, waiting at most `limit` for room (`Duration::MAX`: forever).
    ///
    /// # Errors
    /// [`Error::TimedOut`], and as [`send`](Self::send).
    pub fn send_timeout(&mut self, msg: &[u8], limit: Duration) -> Result<()> {
        self.send_until(msg, Deadline::after(limit))
    }

    /// Reserves room for a message of `len` bytes, waiting while the ring is full, and returns
    /// it for the caller to fill in place; nothing is visible to the reader until
    /// [`Reservation::commit`]. Dropping the reservation instead abandons it: nothing is sent.
    ///
    /// ```
    /// let seg = ipc_shm::Anon::new(ipc_shm::Ring::segment_size(4096)?)?;
    /// let mut w = ipc_shm::Ring::create(&seg)?.into_writer()?;
    /// let mut r = ipc_shm::Ring::open(&seg)?.into_reader()?;
    /// let mut res = w.reserve(12)?;
    /// res.write(0, b"in place")?;
    /// res.write(8, &7u32.to_le_bytes())?;
    /// res.commit();
    /// assert_eq!(r.recv_vec()?, b"in place\x07\0\0\0");
    /// drop(w.reserve(4)?);                       // abandoned: nothing sent
    /// assert!(matches!(r.try_recv_vec(), Err(ipc_shm::Error::WouldBlock)));
    /// # Ok::<(), ipc_shm::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub fn reserve(&mut self, len: usize) -> Result<Reservation<'_, S>> {
        self.reserve_until(len, Deadline::Never)
    }

    /// Reserves room for `len` bytes if there is room now.
    ///
    /// # Errors
    /// [`Error::WouldBlock`] when full, and as [`send`](Self::send).
    pub fn try_reserve(&mut self, len: usize) -> Result<Reservation<'_, S>> {
        self.reserve_until(len, Deadline::Now)
    }

    /// Reserves room for `len` bytes, waiting at most `limit` (`Duration::MAX`: forever).
    ///
    /// # Errors
    /// [`Error::TimedOut`], and as [`send`](Self::send).
    pub fn reserve_timeout(&mut self, len: usize, limit: Duration) -> Result<Reservation<'_, S>> {
        self.reserve_until(len, Deadline::after(limit))
    }

    /// Whether a message of `len` bytes fits now (arming the doorbell if not).
    #[cfg(feature = "tokio")]
    pub(crate) fn try_room(&mut self, len: usize) -> Result<()> {
        self.wait_room(len, aligned_for(len), Deadline::Now)
    }

    /// A duplicate of the doorbell half this writer waits on, if it has a doorbell.
    #[cfg(feature = "tokio")]
    pub(crate) fn wait_bell(&self) -> Result<Option<std::os::fd::OwnedFd>> {
        self.bell.as_ref().map(|b| b.space.dup()).transpose()
    }

    /// Whether an async wrapper drains the doorbell.
    #[cfg(feature = "tokio")]
    pub(crate) fn set_async(&mut self, on: bool) {
        self.async_mode = on;
    }

    /// The reader's pid as the ring records it (0: none attached yet).
    #[cfg(feature = "tokio")]
    pub(crate) fn peer_pid(&self) -> u32 {
        self.seg
            .region()
            .atomic::<Meta>(META_OFF)
            .map_or(0, |m| m.reader_pid.load(Ordering::Relaxed))
    }

    fn reserve_until(&mut self, len: usize, dl: Deadline) -> Result<Reservation<'_, S>> {
        let aligned = aligned_for(len);
        self.wait_room(len, aligned, dl)?;
        Ok(Reservation {
            writer: self,
            len,
            aligned,
        })
    }

    /// A send: the fast path inline, the general one out of line.
    #[inline]
    fn send_until(&mut self, msg: &[u8], dl: Deadline) -> Result<()> {
        if self.try_send_small(msg) {
            return Ok(());
        }
        self.send_general(msg, dl)
    }

    #[inline(never)]
    fn send_general(&mut self, msg: &[u8], dl: Deadline) -> Result<()> {
        let aligned = aligned_for(msg.len());
        self.wait_room(msg.len(), aligned, dl)?;
        let data = Data::new(self.seg.region(), self.cap);
        let at = self.tail.wrapping_add(payload_off(self.tail, aligned));
        if !data.put(at, msg) {
            return Err(lost());
        }
        self.commit(msg.len(), aligned)
    }

    /// The fast path of a send: a message that starts right after its header (below 1 KiB),
    /// fits now, and whose record and the slot after it do not wrap, written and committed with
    /// one range check. False (nothing done) when any of that does not hold, or the reader
    /// closed, or the doorbell was armed: the general path then decides.
    #[inline(always)]
    fn try_send_small(&mut self, msg: &[u8]) -> bool {
        let len = msg.len();
        if aligned_for(len) || self.armed {
            return false;
        }
        let region = self.seg.region();
        let data = Data::new(region, self.cap);
        let cap = self.cap as u64;
        let rec = rec_len(self.tail, len, false);
        let off = data.at(self.tail);
        let (Some(meta), Some(line)) = (data.meta(), data.writer()) else {
            return false;
        };
        if cap - self.tail.wrapping_sub(self.head) < rec + SLACK
            || off as u64 + rec + SLACK > cap
            || meta.reader_closed.load(Ordering::Relaxed) != 0
        {
            return false;
        }
        let header = record_header(self.tail, len, false);
        if !data
            .map
            .put_record(DATA_OFF + off, msg, rec as usize, header)
        {
            return false;
        }
        self.tail = self.tail.wrapping_add(rec);
        line.pos.store(self.tail, Ordering::Release);
        notify(line, self.fenceless, self.bell.as_ref().map(|b| &b.data));
        true
    }

    /// Waits until a record of `len` payload bytes fits (plus the slack slot after it).
    #[inline]
    fn wait_room(&mut self, len: usize, aligned: bool, dl: Deadline) -> Result<()> {
        if len > self.max_message() {
            return Err(too_large(len, self.max_message()));
        }
        let rec = rec_len(self.tail, len, aligned);
        let Some(meta) = Data::new(self.seg.region(), self.cap).meta() else {
            return Err(lost());
        };
        if meta.reader_closed.load(Ordering::Relaxed) != 0 {
            return Err(Error::PeerGone);
        }
        if self.armed {
            self.disarm();
        }
        let cap = self.cap as u64;
        if cap - self.tail.wrapping_sub(self.head) >= rec + SLACK {
            return Ok(());
        }
        self.wait_room_slow(rec, dl)
    }

    #[cold]
    #[inline(never)]
    fn wait_room_slow(&mut self, rec: u64, dl: Deadline) -> Result<()> {
        let region = self.seg.region();
        let meta = region.atomic::<Meta>(META_OFF)?;
        let reader = region.atomic::<Line>(READER_OFF)?;
        let published = region.atomic::<Published>(PUBLISHED_OFF)?;
        let cap = self.cap as u64;
        let tail = self.tail;
        let head = &mut self.head;
        let how = if self.bell.is_some() && matches!(dl, Deadline::Now) {
            How::Bell
        } else {
            How::Futex
        };
        let park = Park {
            sleep: &reader.sleep,
            eager: &reader.eager,
            peer_caps: &meta.reader_caps,
            peer_cpu: &meta.reader_cpu,
            peer_pid: &meta.reader_pid,
            fenceless: self.fenceless,
        };
        let r = block(
            &park,
            &mut self.policy,
            dl,
            how,
            |look| {
                let h = match look {
                    Look::Exact => reader.pos.load(Ordering::Acquire),
                    Look::Quick => published.head.load(Ordering::Acquire),
                };
                let used = tail.wrapping_sub(h);
                if used > cap || !h.is_multiple_of(8) {
                    if look == Look::Quick {
                        // The position for pollers lags by up to 16 records (or is garbage):
                        // no news; the exact one is checked soon.
                        return Ok(false);
                    }
                    return Err(Error::Corrupt {
                        what: "reader position",
                    });
                }
                // Both lie within a capacity behind the tail: keep the later one.
                if h.wrapping_sub(*head) <= cap {
                    *head = h;
                }
                Ok(cap - tail.wrapping_sub(*head) >= rec + SLACK)
            },
            |check_pid| {
                meta.reader_closed.load(Ordering::Acquire) != 0
                    || check_pid && !alive(meta.reader_pid.load(Ordering::Relaxed))
            },
        );
        if how == How::Bell && matches!(r, Err(Error::WouldBlock)) {
            self.armed = true;
        }
        r
    }

    /// Drains this side's doorbell half after a `try_` call armed it.
    #[cold]
    fn disarm(&mut self) {
        self.armed = false;
        if let (Some(b), false) = (&self.bell, self.async_mode) {
            b.space.drain();
        }
        if let Ok(reader) = self.seg.region().atomic::<Line>(READER_OFF) {
            let _ = reader
                .sleep
                .compare_exchange(BELL, AWAKE, Ordering::SeqCst, Ordering::Relaxed);
        }
    }

    /// Commits the record of `len` bytes written after the header slot at `tail`: zeroes the
    /// next slot, stores the header (release), publishes the position, wakes a sleeping reader.
    #[inline]
    fn commit(&mut self, len: usize, aligned: bool) -> Result<()> {
        let data = Data::new(self.seg.region(), self.cap);
        // `len <= max_message` was checked by `wait_room`.
        let rec = rec_len(self.tail, len, aligned);
        let tail = self.tail;
        let next = tail.wrapping_add(rec);
        let (Some(next_slot), Some(slot), Some(line)) =
            (data.header(next), data.header(tail), data.writer())
        else {
            return Err(lost());
        };
        next_slot.store(0, Ordering::Relaxed);
        slot.store(record_header(tail, len, aligned), Ordering::Release);
        self.tail = next;
        line.pos.store(next, Ordering::Release);
        notify(line, self.fenceless, self.bell.as_ref().map(|b| &b.data));
        Ok(())
    }
}

#[cold]
#[inline(never)]
fn too_large(len: usize, max: usize) -> Error {
    Error::MessageTooLarge { len, max }
}

/// Room for one message in a [`RingWriter`]'s ring, reserved by [`RingWriter::reserve`] and
/// filled in place: the bytes go straight into the ring (copied through checked writes — no
/// `&mut [u8]` over shared memory), and nothing is visible to the reader until
/// [`commit`](Self::commit). Dropped without a commit, it is abandoned and nothing is sent:
/// the reader never sees a half-written record.
pub struct Reservation<'a, S: Segment> {
    writer: &'a mut RingWriter<S>,
    len: usize,
    /// Where the payload goes was decided by the reserved length: a shorter commit keeps it.
    aligned: bool,
}

impl<S: Segment> fmt::Debug for Reservation<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("len", &self.len)
            .finish()
    }
}

impl<S: Segment> Reservation<'_, S> {
    /// The message's length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the message is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes `bytes` at `offset` of the message.
    ///
    /// # Errors
    /// [`Error::OutOfBounds`] if `offset + bytes.len()` is past the message's length.
    pub fn write(&mut self, offset: usize, bytes: &[u8]) -> Result<()> {
        match offset.checked_add(bytes.len()) {
            Some(end) if end <= self.len => {}
            _ => {
                return Err(Error::OutOfBounds {
                    offset,
                    len: bytes.len(),
                    region: self.len,
                });
            }
        }
        let w = &*self.writer;
        let data = Data::new(w.seg.region(), w.cap);
        let at = w
            .tail
            .wrapping_add(payload_off(w.tail, self.aligned) + offset as u64);
        if data.put(at, bytes) {
            Ok(())
        } else {
            Err(lost())
        }
    }

    /// Makes the message visible to the reader (and wakes it if it sleeps). Bytes never
    /// written hold whatever the ring held there.
    pub fn commit(self) {
        // Only a writable, in-bounds mapping got this far; the accesses cannot fail.
        let _ = self.writer.commit(self.len, self.aligned);
    }

    /// Commits only the first `len` bytes (for a message whose length is known after it is
    /// written: reserve the most it can be, write, then commit what it is).
    ///
    /// # Errors
    /// [`Error::OutOfBounds`] if `len` is more than was reserved (nothing is committed).
    pub fn commit_first(self, len: usize) -> Result<()> {
        if len > self.len {
            return Err(Error::OutOfBounds {
                offset: 0,
                len,
                region: self.len,
            });
        }
        self.writer.commit(len, self.aligned)
    }
}

impl<S: Segment> Drop for RingWriter<S> {
    fn drop(&mut self) {
        if self.pid != my_pid() {
            return;
        }
        let region = self.seg.region();
        if let (Ok(meta), Ok(line)) = (
            region.atomic::<Meta>(META_OFF),
            region.atomic::<Line>(WRITER_OFF),
        ) {
            meta.writer_caps.store(0, Ordering::SeqCst);
            meta.writer_closed.store(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            wake(line, self.bell.as_ref().map(|b| &b.data));
        }
    }
}

/// What the reader finds at its head (small, so it stays in registers on the hot path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    /// A committed record of this many bytes (its length checked), and whether its payload
    /// is aligned.
    Record(usize, bool),
    /// Nothing yet.
    Nothing,
    /// What the writer wrote breaks the ring's invariants: [`Error::Corrupt`].
    Corrupt(&'static str),
    /// The mapping is not what it was ([`lost`]).
    Lost,
}

impl Found {
    /// `Ok(Some(len))`, `Ok(None)` or the error.
    #[inline]
    fn result(self) -> Result<Option<usize>> {
        match self {
            Found::Record(len, _) => Ok(Some(len)),
            Found::Nothing => Ok(None),
            Found::Corrupt(what) => Err(Error::Corrupt { what }),
            Found::Lost => Err(lost()),
        }
    }
}

/// The record at `head`, if it is committed (its length checked).
#[inline]
fn peek_at(data: Data<'_>, head: u64) -> Found {
    let Some(header) = data.map.load_acquire(DATA_OFF + data.at(head)) else {
        return Found::Lost;
    };
    match committed(head, header) {
        None => Found::Nothing,
        Some((len, aligned)) if len <= max_for(data.cap) as u64 => {
            Found::Record(len as usize, aligned)
        }
        Some(_) => Found::Corrupt("message length"),
    }
}

/// The reading end of a [`Ring`]: validates and copies messages out, or lets the caller read
/// them in place ([`recv_with`](Self::recv_with)).
///
/// After fork: see [`Ring`]; in a child forked from a multi-threaded parent, an inherited
/// reader may only be dropped (which touches nothing).
pub struct RingReader<S: Segment> {
    seg: S,
    cap: usize,
    head: u64,
    /// The validated length of the next message, if already looked at.
    pending: Option<usize>,
    /// Whether the pending message's payload is aligned.
    pending_aligned: bool,
    /// Records freed since the position for pollers was last stored.
    unpublished: u32,
    /// How much of the pending message [`Read`](std::io::Read) has already copied out.
    consumed: usize,
    policy: Policy,
    pid: u32,
    fenceless: bool,
    bell: Option<Doorbell>,
    /// A `try_` call armed the doorbell since the last drain.
    armed: bool,
    /// An async wrapper drains the doorbell itself (through its reactor registration).
    async_mode: bool,
}

impl<S: Segment> fmt::Debug for RingReader<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingReader")
            .field("capacity", &self.cap)
            .field("head", &self.head)
            .field("policy", &self.policy)
            .field("doorbell", &self.bell)
            .finish()
    }
}

impl<S: Segment> RingReader<S> {
    /// Chooses how this side waits when the ring is empty ([`Wait::Adaptive`] by default).
    /// Call it again after changing this thread's CPU affinity.
    pub fn set_wait(&mut self, wait: Wait) {
        self.policy = Policy::of(wait);
        if let Ok(meta) = self.seg.region().atomic::<Meta>(META_OFF) {
            meta.reader_cpu.store(self.policy.cpu, Ordering::Relaxed);
        }
    }

    /// The largest message the ring can carry.
    pub fn max_message(&self) -> usize {
        max_for(self.cap)
    }

    /// Whether the writer has neither closed its end nor exited (true before it attaches).
    pub fn is_peer_alive(&self) -> bool {
        self.seg.region().atomic::<Meta>(META_OFF).is_ok_and(|m| {
            m.writer_closed.load(Ordering::Acquire) == 0
                && alive(m.writer_pid.load(Ordering::Relaxed))
        })
    }

    /// The doorbell half this reader waits on, if the ring was given a [`Doorbell`]: it
    /// becomes readable when the writer commits a message while this reader waits on it.
    ///
    /// The recipe for an event loop (epoll, mio, async-io; the descriptor is non-blocking):
    /// call [`try_recv`](Self::try_recv) (or any `try_` form) until it returns
    /// [`Error::WouldBlock`] — which arms the doorbell: the writer rings it with its next
    /// message — then wait for this descriptor to be readable, and call `try_recv` again (which
    /// clears it). A writer that exits without closing its end does not ring: bound the wait
    /// (`try_recv` then reports [`Error::PeerGone`]). [`wait_doorbell`](Self::wait_doorbell)
    /// plays the loop's wait below.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ipc_shm::{Anon, Doorbell, Error, Ring};
    /// let seg = Anon::new(Ring::segment_size(4096)?)?;
    /// let bell = Doorbell::new()?;
    /// let mut w = Ring::create(&seg)?.with_doorbell(bell.try_clone()?).into_writer()?;
    /// let mut r = Ring::open(&seg)?.with_doorbell(bell).into_reader()?;
    /// assert!(r.doorbell_fd().is_some()); // what an event loop registers for readability
    /// let mut buf = [0u8; 64];
    /// std::thread::scope(|s| {
    ///     s.spawn(move || w.send(b"hello").unwrap());
    ///     loop {
    ///         match r.try_recv(&mut buf) {
    ///             Ok(n) => break assert_eq!(&buf[..n], b"hello"),
    ///             Err(Error::WouldBlock) => {
    ///                 r.wait_doorbell(Duration::from_secs(5))?;
    ///             }
    ///             Err(e) => return Err(e),
    ///         }
    ///     }
    ///     Ok(())
    /// })?;
    /// # Ok::<(), ipc_shm::Error>(())
    /// ```
    pub fn doorbell_fd(&self) -> Option<BorrowedFd<'_>> {
        self.bell.as_ref().map(|b| b.data.as_fd())
    }

    /// Waits (`poll`) until this reader's doorbell half is readable or `limit` passes: the
    /// wait an event loop does on [`doorbell_fd`](Self::doorbell_fd), for a loop written by
    /// hand. Returns whether it was rung; it stays rung until the next `try_` call.
    ///
    /// # Errors
    /// [`Error::NoDoorbell`] if the ring has no doorbell.
    pub fn wait_doorbell(&self, limit: Duration) -> Result<bool> {
        poll_readable(self.doorbell_fd().ok_or(Error::NoDoorbell)?, limit)
    }

    /// Receives the next message into `buf`, waiting while the ring is empty; returns its length.
    ///
    /// # Errors
    /// [`Error::BufferTooSmall`] (the message stays queued), [`Error::PeerGone`] once the writer
    /// closed or exited and the ring is drained, [`Error::Corrupt`] when the writer wrote an
    /// impossible length.
    #[inline]
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<usize> {
        self.recv_until(buf, Deadline::Never)
    }

    /// Receives a message if one is there now. With a doorbell, [`Error::WouldBlock`] means
    /// the doorbell is armed: it rings with the writer's next message.
    ///
    /// # Errors
    /// [`Error::WouldBlock`] when empty, and as [`recv`](Self::recv).
    #[inline]
    pub fn try_recv(&mut self, buf: &mut [u8]) -> Result<usize> {
        self.recv_until(buf, Deadline::Now)
    }

    /// Receives a message, waiting at most `limit` (`Duration::MAX`: forever).
    ///
    /// # Errors
    /// [`Error::TimedOut`], and as [`recv`](Self::recv).
    pub fn recv_timeout(&mut self, buf: &mut [u8], limit: Duration) -> Result<usize> {
        self.recv_until(buf, Deadline::after(limit))
    }

    /// Receives the next message into a new vector, waiting while the ring is empty. At most
    /// [`max_message`](Self::max_message) bytes are allocated, whatever the writer claims: the
    /// ring's capacity is bounded by the segment, whose size the opener accepted.
    ///
    /// # Errors
    /// As [`recv`](Self::recv); [`Error::LimitExceeded`] if the memory cannot be allocated (the
    /// message stays queued).
    pub fn recv_vec(&mut self) -> Result<Vec<u8>> {
        self.recv_vec_until(Deadline::Never)
    }

    /// Receives a message into a new vector if one is there now.
    ///
    /// # Errors
    /// [`Error::WouldBlock`] when empty, and as [`recv_vec`](Self::recv_vec).
    pub fn try_recv_vec(&mut self) -> Result<Vec<u8>> {
        self.recv_vec_until(Deadline::Now)
    }

    /// Receives a message into a new vector, waiting at most `limit` (`Duration::MAX`:
    /// forever).
    ///
    /// # Errors
    /// [`Error::TimedOut`], and as [`recv_vec`](Self::recv_vec).
    pub fn recv_vec_timeout(&mut self, limit: Duration) -> Result<Vec<u8>> {
        self.recv_vec_until(Deadline::after(limit))
    }

    /// Receives the next message in place: waits while the ring is empty, then calls `f` with
    /// a [`Message`] that reads the bytes where they lie in the ring (bounds-checked copies, in
    /// chunks small enough to stay in cache: no `&[u8]` over memory the writer can write), and
    /// frees the message when `f` returns. Returns what `f` returns.
    ///
    /// ```
    /// let seg = ipc_shm::Anon::new(ipc_shm::Ring::segment_size(1 << 16)?)?;
    /// let mut w = ipc_shm::Ring::create(&seg)?.into_writer()?;
    /// let mut r = ipc_shm::Ring::open(&seg)?.into_reader()?;
    /// w.send(&[1u8; 10_000])?;
    /// let sum = r.recv_with(|msg| {
    ///     let mut sum = 0u64;
    ///     msg.for_each_chunk(|chunk| sum += chunk.iter().map(|&b| u64::from(b)).sum::<u64>());
    ///     sum
    /// })?;
    /// assert_eq!(sum, 10_000);
    /// # Ok::<(), ipc_shm::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`recv`](Self::recv) (no [`Error::BufferTooSmall`]: there is no buffer).
    pub fn recv_with<R>(&mut self, f: impl FnOnce(&Message<'_>) -> R) -> Result<R> {
        self.recv_with_until(Deadline::Never, f)
    }

    /// As [`recv_with`](Self::recv_with), if a message is there now.
    ///
    /// # Errors
    /// [`Error::WouldBlock`] when empty, and as [`recv`](Self::recv).
    pub fn try_recv_with<R>(&mut self, f: impl FnOnce(&Message<'_>) -> R) -> Result<R> {
        self.recv_with_until(Deadline::Now, f)
    }

    /// As [`recv_with`](Self::recv_with), waiting at most `limit` (`Duration::MAX`: forever).
    ///
    /// # Errors
    /// [`Error::TimedOut`], and as [`recv`](Self::recv).
    pub fn recv_with_timeout<R>(
        &mut self,
        limit: Duration,
        f: impl FnOnce(&Message<'_>) -> R,
    ) -> Result<R> {
        self.recv_with_until(Deadline::after(limit), f)
    }

    /// Whether a message is there now (arming the doorbell if not); a `try_` receive after
    /// `Ok` does not wait.
    #[cfg(feature = "tokio")]
    pub(crate) fn try_ready(&mut self) -> Result<()> {
        self.next_len(Deadline::Now).map(drop)
    }

    /// A duplicate of the doorbell half this reader waits on, if it has a doorbell.
    #[cfg(feature = "tokio")]
    pub(crate) fn wait_bell(&self) -> Result<Option<std::os::fd::OwnedFd>> {
        self.bell.as_ref().map(|b| b.data.dup()).transpose()
    }

    /// Whether an async wrapper drains the doorbell.
    #[cfg(feature = "tokio")]
    pub(crate) fn set_async(&mut self, on: bool) {
        self.async_mode = on;
    }

    /// The writer's pid as the ring records it (0: none attached yet).
    #[cfg(feature = "tokio")]
    pub(crate) fn peer_pid(&self) -> u32 {
        self.seg
            .region()
            .atomic::<Meta>(META_OFF)
            .map_or(0, |m| m.writer_pid.load(Ordering::Relaxed))
    }

    fn recv_with_until<R>(&mut self, dl: Deadline, f: impl FnOnce(&Message<'_>) -> R) -> Result<R> {
        let data = Data::new(self.seg.region(), self.cap);
        if let Some(len) = self.small_at_head(data) {
            // The fast path: nothing pending, so nothing consumed either.
            let msg = Message {
                data,
                start: self.head.wrapping_add(REC_HDR as u64),
                len,
            };
            let out = f(&msg);
            self.pending_aligned = false;
            self.free(len);
            return Ok(out);
        }
        let len = self.next_len(dl)?;
        let msg = Message {
            data: Data::new(self.seg.region(), self.cap),
            start: self
                .head
                .wrapping_add(payload_off(self.head, self.pending_aligned) + self.consumed as u64),
            len: len - self.consumed,
        };
        let out = f(&msg);
        self.free(len);
        Ok(out)
    }

    fn recv_vec_until(&mut self, dl: Deadline) -> Result<Vec<u8>> {
        let rest = self.next_len(dl)? - self.consumed;
        let mut v = Vec::new();
        v.try_reserve_exact(rest)
            .map_err(|_| Error::LimitExceeded {
                what: "memory for the message",
                requested: rest as u64,
                limit: 0,
            })?;
        v.resize(rest, 0);
        self.take(&mut v)?;
        Ok(v)
    }

    /// Receives the next message (or what [`Read`](std::io::Read) left of it).
    #[inline]
    fn recv_until(&mut self, buf: &mut [u8], dl: Deadline) -> Result<usize> {
        if let Some(n) = self.try_recv_small(buf) {
            return Ok(n);
        }
        self.recv_general(buf, dl)
    }

    #[inline(never)]
    fn recv_general(&mut self, buf: &mut [u8], dl: Deadline) -> Result<usize> {
        let rest = self.next_len(dl)? - self.consumed;
        let Some(dst) = buf.get_mut(..rest) else {
            return Err(Error::BufferTooSmall { needed: rest });
        };
        self.take(dst)?;
        Ok(rest)
    }

    /// The fast path of a receive: a committed record at the head (none pending) whose payload
    /// starts right after its header, fits `buf` and does not wrap, copied out and freed with
    /// one header load and one range check. `None` (nothing done) when any of that does not
    /// hold, or the doorbell was armed: the general path then decides (and reports what is
    /// wrong, if anything).
    #[inline(always)]
    fn try_recv_small(&mut self, buf: &mut [u8]) -> Option<usize> {
        let data = Data::new(self.seg.region(), self.cap);
        let len = self.small_at_head(data).filter(|&n| n <= buf.len())?;
        let off = data.at(self.head);
        if off + REC_HDR + len > self.cap
            || !data.map.read(DATA_OFF + off + REC_HDR, &mut buf[..len])
        {
            return None;
        }
        self.pending_aligned = false;
        self.free(len);
        Some(len)
    }

    /// The length of the committed record at the head, if nothing is pending, the doorbell is
    /// not armed, and the record's payload starts right after its header: one acquire load of
    /// the header, the length (the writer's) checked against the largest message. `None` when
    /// any of that does not hold: the general path then decides.
    #[inline]
    fn small_at_head(&self, data: Data<'_>) -> Option<usize> {
        if self.pending.is_some() || self.armed {
            return None;
        }
        let header = data.map.load_acquire(DATA_OFF + data.at(self.head))?;
        let (len, false) = committed(self.head, header)? else {
            return None;
        };
        usize::try_from(len)
            .ok()
            .filter(|&n| n <= max_for(data.cap))
    }

    /// Waits for the next record and validates its length.
    #[inline]
    fn next_len(&mut self, dl: Deadline) -> Result<usize> {
        if let Some(len) = self.pending {
            return Ok(len);
        }
        if self.armed {
            self.disarm();
        }
        let data = Data::new(self.seg.region(), self.cap);
        let len = match peek_at(data, self.head) {
            Found::Record(len, aligned) => {
                self.pending_aligned = aligned;
                len
            }
            Found::Nothing => {
                // About to wait: a writer polling for room sees everything freed.
                self.publish_head();
                self.next_len_slow(dl)?
            }
            other => return other.result().map(|_| 0),
        };
        self.pending = Some(len);
        Ok(len)
    }

    #[cold]
    #[inline(never)]
    fn next_len_slow(&mut self, dl: Deadline) -> Result<usize> {
        let region = self.seg.region();
        let meta = region.atomic::<Meta>(META_OFF)?;
        let writer = region.atomic::<Line>(WRITER_OFF)?;
        let how = if self.bell.is_some() && matches!(dl, Deadline::Now) {
            How::Bell
        } else {
            How::Futex
        };
        let park = Park {
            sleep: &writer.sleep,
            eager: &writer.eager,
            peer_caps: &meta.writer_caps,
            peer_cpu: &meta.writer_cpu,
            peer_pid: &meta.writer_pid,
            fenceless: self.fenceless,
        };
        let mut found = (0, false);
        let data = Data::new(region, self.cap);
        let head = self.head;
        let r = block(
            &park,
            &mut self.policy,
            dl,
            how,
            |_| match peek_at(data, head) {
                Found::Record(len, aligned) => {
                    found = (len, aligned);
                    Ok(true)
                }
                other => other.result().map(|_| false),
            },
            |check_pid| {
                meta.writer_closed.load(Ordering::Acquire) != 0
                    || check_pid && !alive(meta.writer_pid.load(Ordering::Relaxed))
            },
        );
        if how == How::Bell && matches!(r, Err(Error::WouldBlock)) {
            self.armed = true;
        }
        r.map(|()| {
            self.pending_aligned = found.1;
            found.0
        })
    }

    /// Drains this side's doorbell half after a `try_` call armed it.
    #[cold]
    fn disarm(&mut self) {
        self.armed = false;
        if let (Some(b), false) = (&self.bell, self.async_mode) {
            b.data.drain();
        }
        if let Ok(writer) = self.seg.region().atomic::<Line>(WRITER_OFF) {
            let _ = writer
                .sleep
                .compare_exchange(BELL, AWAKE, Ordering::SeqCst, Ordering::Relaxed);
        }
    }

    /// Copies the next `dst.len()` bytes of the pending message out; once all of it is out,
    /// frees its space. The caller keeps `consumed + dst.len() <= pending length`.
    #[inline]
    fn take(&mut self, dst: &mut [u8]) -> Result<()> {
        let len = self.pending.unwrap_or(0);
        let data = Data::new(self.seg.region(), self.cap);
        if !data.get(
            self.head
                .wrapping_add(payload_off(self.head, self.pending_aligned) + self.consumed as u64),
            dst,
        ) {
            return Err(lost());
        }
        self.consumed += dst.len();
        if self.consumed >= len {
            self.free(len);
        }
        Ok(())
    }

    /// Frees the pending record of `len` bytes: advances and publishes the head, wakes a
    /// writer that sleeps.
    #[inline]
    fn free(&mut self, len: usize) {
        self.head = self
            .head
            .wrapping_add(rec_len(self.head, len, self.pending_aligned));
        self.pending = None;
        self.consumed = 0;
        let data = Data::new(self.seg.region(), self.cap);
        if let Some(line) = data.reader() {
            line.pos.store(self.head, Ordering::Release);
            self.unpublished += 1;
            if self.unpublished >= PUBLISH_EVERY {
                self.unpublished = 0;
                if let Some(p) = data.published() {
                    p.head.store(self.head, Ordering::Release);
                }
            }
            notify(line, self.fenceless, self.bell.as_ref().map(|b| &b.space));
        }
    }

    /// Stores the position for pollers, if records were freed since the last store.
    #[inline]
    fn publish_head(&mut self) {
        if self.unpublished > 0 {
            self.unpublished = 0;
            if let Some(p) = Data::new(self.seg.region(), self.cap).published() {
                p.head.store(self.head, Ordering::Release);
            }
        }
    }
}

/// A message in the ring, lent to [`RingReader::recv_with`]'s closure: its bytes are read where
/// they lie, through bounds-checked copies (the writer's process can write this memory, so no
/// `&[u8]` over it is ever made). [`for_each_chunk`](Self::for_each_chunk) hands the bytes over
/// in pieces copied into a small buffer that stays in cache.
pub struct Message<'a> {
    data: Data<'a>,
    start: u64,
    len: usize,
}

impl fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message").field("len", &self.len).finish()
    }
}

/// The size of the pieces [`Message::for_each_chunk`] hands over.
const CHUNK: usize = 4096;

impl Message<'_> {
    /// The message's length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the message is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies `buf.len()` bytes at `offset` of the message into `buf`.
    ///
    /// # Errors
    /// [`Error::OutOfBounds`] if the range is past the message's end.
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        match offset.checked_add(buf.len()) {
            Some(end) if end <= self.len => {
                if self.data.get(self.start.wrapping_add(offset as u64), buf) {
                    Ok(())
                } else {
                    Err(lost())
                }
            }
            _ => Err(Error::OutOfBounds {
                offset,
                len: buf.len(),
                region: self.len,
            }),
        }
    }

    /// Calls `f` with the message's bytes in order, in pieces of up to 4 KiB, each a private
    /// copy made just before (so it is in cache while `f` reads it).
    pub fn for_each_chunk(&self, mut f: impl FnMut(&[u8])) {
        let mut buf = [0u8; CHUNK];
        let mut off = 0;
        while off < self.len {
            let n = (self.len - off).min(CHUNK);
            if self.read(off, &mut buf[..n]).is_err() {
                return; // cannot happen: the range is inside the message
            }
            f(&buf[..n]);
            off += n;
        }
    }

    /// Copies the whole message into a new vector.
    ///
    /// # Errors
    /// [`Error::LimitExceeded`] if the memory cannot be allocated.
    pub fn to_vec(&self) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        v.try_reserve_exact(self.len)
            .map_err(|_| Error::LimitExceeded {
                what: "memory for the message",
                requested: self.len as u64,
                limit: 0,
            })?;
        v.resize(self.len, 0);
        self.read(0, &mut v)?;
        Ok(v)
    }
}

/// The ring as a byte stream: each `read` copies out as much of the current message as fits
/// (the rest stays for the next call), waiting while the ring is empty; end of stream (`Ok(0)`)
/// once the writer closed or exited and the ring is drained. Message boundaries are not kept.
impl<S: Segment> std::io::Read for RingReader<S> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let len = match self.next_len(Deadline::Never) {
                Ok(len) => len,
                Err(Error::PeerGone) => return Ok(0),
                Err(e) => return Err(e.into()),
            };
            let n = (len - self.consumed).min(buf.len());
            self.take(&mut buf[..n])?;
            if n > 0 {
                return Ok(n);
            } // an empty message: not an end of stream, read on
        }
    }
}

/// The ring as a byte stream: each `write` sends up to a quarter of the ring's capacity as one
/// message (so both sides keep working on different parts of the ring), waiting while it is
/// full. A reader that closed or exited is `ErrorKind::BrokenPipe`. `flush` has nothing to do:
/// every message is visible once sent.
///
/// ```
/// use std::io::{Read, Write};
/// let seg = ipc_shm::Anon::new(ipc_shm::Ring::segment_size(4096)?)?;
/// let mut w = ipc_shm::Ring::create(&seg)?.into_writer()?;
/// let mut r = ipc_shm::Ring::open(&seg)?.into_reader()?;
/// w.write_all(b"a byte stream, ")?;
/// w.write_all(b"not messages")?;
/// drop(w); // end of stream
/// let mut text = String::new();
/// r.read_to_string(&mut text)?;
/// assert_eq!(text, "a byte stream, not messages");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
impl<S: Segment> std::io::Write for RingWriter<S> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = buf.len().min(self.cap / 4);
        self.send(&buf[..n])?;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<S: Segment> Drop for RingReader<S> {
    fn drop(&mut self) {
        if self.pid != my_pid() {
            return;
        }
        let region = self.seg.region();
        if let (Ok(meta), Ok(line)) = (
            region.atomic::<Meta>(META_OFF),
            region.atomic::<Line>(READER_OFF),
        ) {
            if let Ok(p) = region.atomic::<Published>(PUBLISHED_OFF) {
                p.head.store(self.head, Ordering::Release);
            }
            meta.reader_caps.store(0, Ordering::SeqCst);
            meta.reader_closed.store(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            wake(line, self.bell.as_ref().map(|b| &b.space));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_never_zero_and_repeat_only_every_8_gib() {
        assert_ne!(tag(0), 0);
        assert_ne!(tag(u64::MAX - 7), 0);
        assert_ne!(tag(8), tag(0));
        assert_eq!(tag(0), tag(1 << 33));
        assert_ne!(tag(0), tag(MAX_CAPACITY));
        assert_eq!(committed(64, record_header(64, 5, false)), Some((5, false)));
        assert_eq!(
            committed(64, record_header(64, 5000, true)),
            Some((5000, true))
        );
        assert_eq!(committed(72, record_header(64, 5, false)), None);
        assert_eq!(committed(0, 0), None);
        assert_eq!(rec_len(0, 0, false), 8);
        assert_eq!(rec_len(0, 1, false), 16);
        assert_eq!(rec_len(8, 64, false), 72);
        // Aligned payloads start on a 64-byte boundary.
        assert_eq!(payload_off(0, true), 64);
        assert_eq!(payload_off(56, true), 8);
        assert_eq!(payload_off(64, true), 64);
        assert_eq!(rec_len(56, 1024, true), 8 + 1024);
        assert_eq!(payload_off(u64::MAX - 7, true), 8);
        assert!(aligned_for(1024) && !aligned_for(1023));
        assert_eq!(max_for(1024), 1008);
        assert_eq!(max_for(2048), 1976);
    }
}
