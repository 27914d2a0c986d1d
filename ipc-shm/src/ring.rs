//! A single-producer single-consumer ring of byte messages in a shared segment.

use std::fmt;
use std::hint;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::futex;
use crate::header::Header;
use crate::region::{Region, Segment};

const MAGIC: u64 = u64::from_le_bytes(*b"IPCRSRNG");
const VERSION: u32 = 1;
/// Offsets of the control lines; each its own 128-byte line (two cache lines, so the adjacent-
/// line prefetcher does not couple them).
const META_OFF: usize = Header::SIZE;
const WRITER_OFF: usize = 128;
const READER_OFF: usize = 256;
const DATA_OFF: usize = 384;
/// A record: its length (a `u64`) at the start of a 64-byte header slot, then the payload, the
/// whole padded to 64 bytes, so every payload starts on a cache line (aligned copies, no 4 KiB
/// aliasing between ring and buffer offsets).
const REC_HDR: usize = 64;
/// The smallest capacity a ring accepts.
const MIN_CAPACITY: usize = 64;
/// How long a blocked side spins before it parks, when it spins.
const SPIN: Duration = Duration::from_micros(50);
/// The longest single futex sleep: how often a parked side re-checks that its peer lives.
const SLICE: Duration = Duration::from_millis(50);

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
    }
}

crate::shm_atomic! {
    /// One side's hot line: its position, and the flag the *other* side sets when it sleeps on it.
    #[derive(Debug)]
    struct Line {
        pos: AtomicU64,
        sleeping: AtomicU32,
        spare: AtomicU32,
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

/// The shortest spin an adaptive side shrinks to.
const MIN_SPIN: Duration = Duration::from_micros(2);

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

/// The bytes a record of `len` payload bytes occupies: header slot + payload, rounded up to 64.
fn record_len(len: u64) -> Option<u64> {
    len.checked_add(REC_HDR as u64 + 63).map(|n| n & !63)
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

/// A ring laid out in a segment, before it is split into its [`RingWriter`] and [`RingReader`].
///
/// Layout: a [`Header`], a metadata line, the writer's line (tail), the reader's line (head),
/// each on its own 128-byte line, then `capacity` bytes of data (a power of two). Messages are
/// copied in by the writer and out by the reader; the reader checks every index and length the
/// writer published, so a corrupt or hostile writer gives [`Error::Corrupt`], never a panic or
/// an access outside the segment.
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
}

impl<S: Segment> fmt::Debug for Ring<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring").field("capacity", &self.cap).finish()
    }
}

impl Ring<Region> {
    /// The segment size a ring of `capacity` data bytes needs: the control block (384 bytes)
    /// plus `capacity`, ready for a segment constructor (`Shm::create(name,
    /// Ring::segment_size(1 << 20)?)`). Works for a ring on any segment type (it is written on
    /// `Ring<Region>` only so that no type needs naming).
    ///
    /// `capacity` must be a power of two of at least 64 bytes: anything else is refused, never
    /// rounded.
    ///
    /// ```
    /// use ipc_shm::Ring;
    /// assert_eq!(Ring::segment_size(1 << 16)?, 384 + (1 << 16));
    /// assert!(matches!(Ring::segment_size(1000), Err(ipc_shm::Error::InvalidSize { .. })));
    /// # Ok::<(), ipc_shm::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidSize`] for a capacity that is not a power of two, is below 64, or makes
    /// a segment larger than [`MAX_SIZE`](crate::MAX_SIZE).
    pub fn segment_size(capacity: usize) -> Result<u64> {
        let size = capacity as u64;
        if !capacity.is_power_of_two() || capacity < MIN_CAPACITY {
            return Err(Error::InvalidSize {
                size,
                reason: "a ring's capacity is a power of two of at least 64 bytes",
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
    /// else uses yet. The capacity is the largest power of two that fits after the control
    /// block: exactly the one asked for when the segment was sized with
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
        let cap = 1usize << (usize::BITS - 1 - room.leading_zeros());
        region.fill(0, DATA_OFF, 0)?;
        let meta = region.atomic::<Meta>(META_OFF)?;
        meta.capacity.store(cap as u64, Ordering::Relaxed);
        Header::at(region, 0)?.publish(MAGIC, VERSION, (DATA_OFF + cap) as u64);
        Ok(Ring { seg, cap })
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

    /// The data capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// The largest message: capacity minus a 64-byte record header.
    pub fn max_message(&self) -> usize {
        self.cap - REC_HDR
    }

    /// The segment the ring lives in.
    pub fn segment(&self) -> &S {
        &self.seg
    }

    fn claim(
        &self,
        pid_of: fn(&Meta) -> &AtomicU32,
        closed_of: fn(&Meta) -> &AtomicU32,
    ) -> Result<()> {
        let meta = self.seg.region().atomic::<Meta>(META_OFF)?;
        let me = my_pid();
        let slot = pid_of(meta);
        let cur = slot.load(Ordering::Acquire);
        let free = cur == 0 || closed_of(meta).load(Ordering::Acquire) != 0 || !alive(cur);
        if !free || cur == me && closed_of(meta).load(Ordering::Acquire) == 0 {
            return Err(Error::RoleTaken);
        }
        slot.compare_exchange(cur, me, Ordering::AcqRel, Ordering::Acquire)
            .map_err(|_| Error::RoleTaken)?;
        closed_of(meta).store(0, Ordering::Release);
        Ok(())
    }

    /// Claims the writer role and returns the writer endpoint.
    ///
    /// # Errors
    /// [`Error::RoleTaken`] if a live process holds it, [`Error::Corrupt`] if the published
    /// positions are impossible.
    pub fn into_writer(self) -> Result<RingWriter<S>> {
        let region = self.seg.region();
        let tail = region
            .atomic::<Line>(WRITER_OFF)?
            .pos
            .load(Ordering::Acquire);
        // Messages a previous writer left unread stay: start from the reader's position.
        let head = region
            .atomic::<Line>(READER_OFF)?
            .pos
            .load(Ordering::Acquire);
        if tail.wrapping_sub(head) > self.cap as u64 {
            return Err(Error::Corrupt {
                what: "reader position",
            });
        }
        // Every record starts on a 64-byte boundary and both ends advance by whole records.
        if !tail.is_multiple_of(REC_HDR as u64) {
            return Err(Error::Corrupt {
                what: "writer position",
            });
        }
        if !head.is_multiple_of(REC_HDR as u64) {
            return Err(Error::Corrupt {
                what: "reader position",
            });
        }
        self.claim(|m| &m.writer_pid, |m| &m.writer_closed)?;
        let policy = Policy::of(Wait::Adaptive);
        region
            .atomic::<Meta>(META_OFF)?
            .writer_cpu
            .store(policy.cpu, Ordering::Relaxed);
        Ok(RingWriter {
            mask: self.cap as u64 - 1,
            cap: self.cap,
            seg: self.seg,
            tail,
            head,
            policy,
            pid: my_pid(),
        })
    }

    /// Claims the reader role and returns the reader endpoint.
    ///
    /// # Errors
    /// [`Error::RoleTaken`] if a live process holds it, [`Error::Corrupt`] if the published
    /// reader position is impossible (records start on 64-byte boundaries).
    pub fn into_reader(self) -> Result<RingReader<S>> {
        // A previous reader's position, read from shared memory: every record starts on a
        // 64-byte boundary, and the reader only ever advances by whole records.
        let head = self
            .seg
            .region()
            .atomic::<Line>(READER_OFF)?
            .pos
            .load(Ordering::Acquire);
        if !head.is_multiple_of(REC_HDR as u64) {
            return Err(Error::Corrupt {
                what: "reader position",
            });
        }
        self.claim(|m| &m.reader_pid, |m| &m.reader_closed)?;
        let policy = Policy::of(Wait::Adaptive);
        let meta = self.seg.region().atomic::<Meta>(META_OFF)?;
        meta.reader_cpu.store(policy.cpu, Ordering::Relaxed);
        Ok(RingReader {
            mask: self.cap as u64 - 1,
            cap: self.cap,
            seg: self.seg,
            head,
            pending: None,
            consumed: 0,
            policy,
            pid: my_pid(),
        })
    }
}

/// Spins, yields, then parks on `word` until `ready()` or the deadline; `gone()` is checked
/// before each sleep.
fn block(
    word: &AtomicU32,
    policy: &mut Policy,
    peer_cpu: &AtomicU32,
    dl: Deadline,
    mut ready: impl FnMut() -> Result<bool>,
    mut gone: impl FnMut(bool) -> bool,
) -> Result<()> {
    if ready()? {
        return Ok(());
    }
    if matches!(dl, Deadline::Now) {
        return Err(if gone(true) && !ready()? {
            Error::PeerGone
        } else {
            Error::WouldBlock
        });
    }
    let one_core = policy.one_core(peer_cpu);
    if one_core {
        // The peer cannot run while we spin: let it have the CPU once, then sleep.
        rustix::thread::sched_yield();
        if ready()? {
            return Ok(());
        }
    } else if !policy.spin.is_zero() {
        let start = Instant::now();
        loop {
            for _ in 0..64 {
                hint::spin_loop();
                if ready()? {
                    policy.spun_enough();
                    return Ok(());
                }
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
        word.store(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if ready()? {
            word.store(0, Ordering::Relaxed);
            return Ok(());
        }
        if gone(slept) {
            word.store(0, Ordering::Relaxed);
            return if ready()? {
                Ok(())
            } else {
                Err(Error::PeerGone)
            };
        }
        if !futex::wait_slice(word, 1, dl.instant(), SLICE) {
            word.store(0, Ordering::Relaxed);
            return if ready()? {
                Ok(())
            } else {
                Err(Error::TimedOut)
            };
        }
        slept = true;
    }
}

/// Publishes `pos` on `line` and wakes the peer if it announced that it sleeps.
fn publish(line: &Line, pos: u64) {
    line.pos.store(pos, Ordering::Release);
    fence(Ordering::SeqCst);
    if line.sleeping.load(Ordering::Relaxed) != 0 {
        line.sleeping.store(0, Ordering::Relaxed);
        futex::wake_one(&line.sleeping);
    }
}

/// The writing end of a [`Ring`]: copies messages in.
///
/// After fork: see [`Ring`]; in a child forked from a multi-threaded parent, an inherited
/// writer may only be dropped (which touches nothing).
pub struct RingWriter<S: Segment> {
    seg: S,
    cap: usize,
    mask: u64,
    tail: u64,
    /// The last head seen (the reader's position).
    head: u64,
    policy: Policy,
    pid: u32,
}

impl<S: Segment> fmt::Debug for RingWriter<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingWriter")
            .field("capacity", &self.cap)
            .field("tail", &self.tail)
            .field("policy", &self.policy)
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
        self.cap - REC_HDR
    }

    /// Whether the reader has neither closed its end nor exited (true before it attaches).
    pub fn is_peer_alive(&self) -> bool {
        self.seg.region().atomic::<Meta>(META_OFF).is_ok_and(|m| {
            m.reader_closed.load(Ordering::Acquire) == 0
                && alive(m.reader_pid.load(Ordering::Relaxed))
        })
    }

    /// Sends `msg`, waiting while the ring is full.
    ///
    /// # Errors
    /// [`Error::MessageTooLarge`], [`Error::PeerGone`] (reader closed or exited),
    /// [`Error::Corrupt`] (the reader published an impossible position).
    pub fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.send_until(msg, Deadline::Never)
    }

    /// Sends `msg` if there is room now.
    ///
    /// # Errors
    /// [`Error::WouldBlock`] when full, and as [`send`](Self::send).
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

    fn send_until(&mut self, msg: &[u8], dl: Deadline) -> Result<()> {
        let too_large = Error::MessageTooLarge {
            len: msg.len(),
            max: self.max_message(),
        };
        let rec = match record_len(msg.len() as u64) {
            Some(r) if r <= self.cap as u64 => r,
            _ => return Err(too_large),
        };
        let region = self.seg.region();
        let meta = region.atomic::<Meta>(META_OFF)?;
        if meta.reader_closed.load(Ordering::Relaxed) != 0 {
            return Err(Error::PeerGone);
        }
        let cap = self.cap as u64;
        let tail = self.tail;
        if cap - tail.wrapping_sub(self.head) < rec {
            let reader = region.atomic::<Line>(READER_OFF)?;
            let head = &mut self.head;
            block(
                &reader.sleeping,
                &mut self.policy,
                &meta.reader_cpu,
                dl,
                || {
                    let h = reader.pos.load(Ordering::Acquire);
                    let used = tail.wrapping_sub(h);
                    if used > cap {
                        return Err(Error::Corrupt {
                            what: "reader position",
                        });
                    }
                    *head = h;
                    Ok(cap - used >= rec)
                },
                |check_pid| {
                    meta.reader_closed.load(Ordering::Acquire) != 0
                        || check_pid && !alive(meta.reader_pid.load(Ordering::Relaxed))
                },
            )?;
        }
        region.write::<u64>(DATA_OFF + (tail & self.mask) as usize, &(msg.len() as u64))?;
        // Positions wrap at 2^64 (they may start anywhere a previous writer left them).
        let off = (tail.wrapping_add(REC_HDR as u64) & self.mask) as usize;
        let first = msg.len().min(self.cap - off);
        region.write_bytes(DATA_OFF + off, &msg[..first])?;
        if first < msg.len() {
            region.write_bytes(DATA_OFF, &msg[first..])?;
        }
        self.tail = tail.wrapping_add(rec);
        publish(region.atomic::<Line>(WRITER_OFF)?, self.tail);
        Ok(())
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
            meta.writer_closed.store(1, Ordering::Release);
            line.sleeping.store(0, Ordering::SeqCst);
            futex::wake_all(&line.sleeping);
        }
    }
}

/// The reading end of a [`Ring`]: validates and copies messages out.
///
/// After fork: see [`Ring`]; in a child forked from a multi-threaded parent, an inherited
/// reader may only be dropped (which touches nothing).
pub struct RingReader<S: Segment> {
    seg: S,
    cap: usize,
    mask: u64,
    head: u64,
    /// The validated length of the next message, if already looked at.
    pending: Option<usize>,
    /// How much of the pending message [`Read`](std::io::Read) has already copied out.
    consumed: usize,
    policy: Policy,
    pid: u32,
}

impl<S: Segment> fmt::Debug for RingReader<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingReader")
            .field("capacity", &self.cap)
            .field("head", &self.head)
            .field("policy", &self.policy)
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
        self.cap - REC_HDR
    }

    /// Whether the writer has neither closed its end nor exited (true before it attaches).
    pub fn is_peer_alive(&self) -> bool {
        self.seg.region().atomic::<Meta>(META_OFF).is_ok_and(|m| {
            m.writer_closed.load(Ordering::Acquire) == 0
                && alive(m.writer_pid.load(Ordering::Relaxed))
        })
    }

    /// Receives the next message into `buf`, waiting while the ring is empty; returns its length.
    ///
    /// # Errors
    /// [`Error::BufferTooSmall`] (the message stays queued), [`Error::PeerGone`] once the writer
    /// closed or exited and the ring is drained, [`Error::Corrupt`] when the writer published an
    /// impossible index or length.
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<usize> {
        self.recv_until(buf, Deadline::Never)
    }

    /// Receives a message if one is there now.
    ///
    /// # Errors
    /// [`Error::WouldBlock`] when empty, and as [`recv`](Self::recv).
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
    fn recv_until(&mut self, buf: &mut [u8], dl: Deadline) -> Result<usize> {
        let rest = self.next_len(dl)? - self.consumed;
        let Some(dst) = buf.get_mut(..rest) else {
            return Err(Error::BufferTooSmall { needed: rest });
        };
        self.take(dst)?;
        Ok(rest)
    }

    /// Waits for the next record and validates its length against what the writer published.
    fn next_len(&mut self, dl: Deadline) -> Result<usize> {
        if let Some(len) = self.pending {
            return Ok(len);
        }
        let region = self.seg.region();
        let meta = region.atomic::<Meta>(META_OFF)?;
        let writer = region.atomic::<Line>(WRITER_OFF)?;
        let (head, cap, mask) = (self.head, self.cap as u64, self.mask);
        let mut len = 0u64;
        block(
            &writer.sleeping,
            &mut self.policy,
            &meta.writer_cpu,
            dl,
            || {
                let tail = writer.pos.load(Ordering::Acquire);
                let avail = tail.wrapping_sub(head);
                if avail == 0 {
                    return Ok(false);
                }
                if avail > cap {
                    return Err(Error::Corrupt {
                        what: "writer position",
                    });
                }
                if avail < REC_HDR as u64 {
                    return Err(Error::Corrupt {
                        what: "partial record",
                    });
                }
                len = region.read::<u64>(DATA_OFF + (head & mask) as usize)?;
                match record_len(len) {
                    Some(rec) if len <= avail - REC_HDR as u64 && rec <= avail => Ok(true),
                    _ => Err(Error::Corrupt {
                        what: "message length",
                    }),
                }
            },
            |check_pid| {
                meta.writer_closed.load(Ordering::Acquire) != 0
                    || check_pid && !alive(meta.writer_pid.load(Ordering::Relaxed))
            },
        )?;
        // `len <= avail - 64 < cap`, and cap fits in usize.
        let len = len as usize;
        self.pending = Some(len);
        Ok(len)
    }

    /// Copies the next `dst.len()` bytes of the pending message out; once all of it is out,
    /// frees its space. The caller keeps `consumed + dst.len() <= pending length`.
    fn take(&mut self, dst: &mut [u8]) -> Result<()> {
        let len = self.pending.unwrap_or(0);
        let region = self.seg.region();
        let start = self.head.wrapping_add((REC_HDR + self.consumed) as u64);
        let off = (start & self.mask) as usize;
        let first = dst.len().min(self.cap - off);
        region.read_bytes(DATA_OFF + off, &mut dst[..first])?;
        if first < dst.len() {
            region.read_bytes(DATA_OFF, &mut dst[first..])?;
        }
        self.consumed += dst.len();
        if self.consumed >= len {
            let rec = record_len(len as u64).unwrap_or(u64::MAX);
            self.head = self.head.wrapping_add(rec);
            self.pending = None;
            self.consumed = 0;
            publish(region.atomic::<Line>(READER_OFF)?, self.head);
        }
        Ok(())
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
/// full. A reader that closed or exited is `ErrorKind::BrokenPipe`.
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
            meta.reader_closed.store(1, Ordering::Release);
            line.sleeping.store(0, Ordering::SeqCst);
            futex::wake_all(&line.sleeping);
        }
    }
}
