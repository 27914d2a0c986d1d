//! Signals that interrupt blocking calls: whole transfers still arrive whole.
//!
//! The child installs a handler *without* `SA_RESTART` and arms a timer that sends the
//! transferring thread that signal every 100 µs (`timer_create` with `SIGEV_THREAD_ID`: a
//! process-directed signal could land on another thread of the harness and interrupt nothing).
//! Both pipes are shrunk to one page, and the parent is paced by the child's signals: the
//! handler also writes a byte to a notification pipe, and the parent reads or writes one
//! pipeful only after 1 to 3 of those. So the child's calls are mostly blocked when a signal
//! comes, and return early: `EINTR` (nothing moved yet) or a short count. Through that, in both
//! directions, the child moves megabytes with `write_all`/`read_exact`, frames (also lent with
//! vmsplice), `write_atomic`,
//! `write_all_timeout` (under the `Suppress` SIGPIPE policy), `ZeroCopyWriter` and the fast
//! `copy`; every byte must arrive once and in order. What the `Read`/`Write` impls report is
//! counted and shown (`--nocapture`), not asserted on; that interruption does happen here is
//! asserted once, deterministically: a blocked read on an empty pipe returns `EINTR`.
// The signal handler and the timer are libc calls: this is a test, not the library.
#![allow(unsafe_code)]

use std::io::{self, IoSlice, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::time::Duration;

use ipc_pipe::{
    ChildFds, FramedReader, FramedWriter, PipeReader, SigpipePolicy, ZeroCopyWriter, pipe,
};
use ipc_testkit::{SplitMix64, Watchdog, child, fnv1a64, role, test_path};

use crate::{LIMIT, payload, spawn};

/// Bytes per plain phase.
const PHASE: usize = 2 << 20;
/// Both pipes hold one page: writers block at every page, readers at every empty pipe.
const CAPACITY: usize = 4096;
/// How often the timer interrupts the transferring thread.
const EVERY: Duration = Duration::from_micros(100);
/// Frames per direction, sized by `frame_len` (about 2.3 MiB in all).
const FRAMES: u64 = 48;
/// Atomic records, sized by `record_len` (about 2 MiB in all).
const RECORDS: u64 = 1000;
/// The largest frame either side sends.
const MAX_FRAME: u32 = 1 << 20;

fn frame_len(i: u64) -> usize {
    // Empty, within PIPE_BUF (one write), just over it (writev), many pipes long.
    [0, 1, 100, 4092, 4093, 10_000, 65_537, 300_001][(i % 8) as usize]
}

fn record_len(i: u64) -> usize {
    1 + (i as usize * 397) % ipc_pipe::PIPE_BUF
}

/// Signals the handler saw.
static SIGNALS: AtomicU64 = AtomicU64::new(0);
/// The non-blocking notification pipe the handler writes a byte to, for the parent.
static NOTIFY_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(_: libc::c_int) {
    SIGNALS.fetch_add(1, Ordering::Relaxed);
    let fd = NOTIFY_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: returns the address of this thread's errno; no preconditions.
        let errno_at = unsafe { libc::__errno_location() };
        // SAFETY: the address is valid for the life of the thread. Saved here and restored
        // below, so the interrupted code sees its own errno whatever `write` sets.
        let errno = unsafe { *errno_at };
        // SAFETY: `write` is async-signal-safe; one byte from a valid buffer. A full pipe
        // (EAGAIN) only loses a notification.
        unsafe { libc::write(fd, [1u8].as_ptr().cast(), 1) };
        // SAFETY: as above.
        unsafe { *errno_at = errno };
    }
}

/// A handler for SIGUSR1 without `SA_RESTART`, and a timer that sends SIGUSR1 to the calling
/// thread every `every`; deleted when dropped.
struct Interrupter {
    timer: libc::timer_t,
}

impl Interrupter {
    fn start(every: Duration) -> Interrupter {
        // SAFETY: an all-zero sigaction is valid: empty mask, no flags (so no SA_RESTART).
        let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
        act.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        // SAFETY: a valid action whose handler only increments an atomic (async-signal-safe);
        // this runs in a child process that exits after the test.
        let r = unsafe { libc::sigaction(libc::SIGUSR1, &act, std::ptr::null_mut()) };
        assert_eq!(r, 0, "sigaction: {}", io::Error::last_os_error());
        // SAFETY: an all-zero sigevent is a valid value to fill in.
        let mut sev: libc::sigevent = unsafe { std::mem::zeroed() };
        sev.sigev_notify = libc::SIGEV_THREAD_ID;
        sev.sigev_signo = libc::SIGUSR1;
        sev.sigev_notify_thread_id = rustix::thread::gettid().as_raw_nonzero().get();
        let mut timer: libc::timer_t = std::ptr::null_mut();
        // SAFETY: valid pointers to a filled sigevent and to the timer id to be written.
        let r = unsafe { libc::timer_create(libc::CLOCK_MONOTONIC, &mut sev, &mut timer) };
        assert_eq!(r, 0, "timer_create: {}", io::Error::last_os_error());
        let ts = libc::timespec {
            tv_sec: every.as_secs() as libc::time_t,
            tv_nsec: libc::c_long::from(every.subsec_nanos() as i32),
        };
        let spec = libc::itimerspec {
            it_interval: ts,
            it_value: ts,
        };
        // SAFETY: `timer` was just created; `spec` is valid; the old value is not asked for.
        let r = unsafe { libc::timer_settime(timer, 0, &spec, std::ptr::null_mut()) };
        assert_eq!(r, 0, "timer_settime: {}", io::Error::last_os_error());
        Interrupter { timer }
    }
}

impl Drop for Interrupter {
    fn drop(&mut self) {
        // SAFETY: `timer` was created by `start` and is deleted once.
        unsafe { libc::timer_delete(self.timer) };
    }
}

/// What one side saw of its calls: interrupted ones, and writes that returned short.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    interrupted: u64,
    short: u64,
}

/// A `Read`/`Write` that counts what the pipe end under it reports; the retrying is done by
/// whatever sits on top (std's `write_all`/`read_exact`, the framed reader and writer).
struct Counting<T> {
    inner: T,
    seen: Seen,
}

impl<T> Counting<T> {
    fn new(inner: T) -> Counting<T> {
        Counting {
            inner,
            seen: Seen::default(),
        }
    }

    fn note(&mut self, r: &io::Result<usize>, asked: usize) {
        match r {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => self.seen.interrupted += 1,
            Ok(n) if *n < asked => self.seen.short += 1,
            _ => {}
        }
    }
}

impl<T: Write> Write for Counting<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let r = self.inner.write(buf);
        self.note(&r, buf.len());
        r
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let asked = bufs.iter().map(|b| b.len()).sum();
        let r = self.inner.write_vectored(bufs);
        self.note(&r, asked);
        r
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<T: Read> Read for Counting<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let r = self.inner.read(buf);
        // A short read is normal for a pipe: only interruptions count.
        self.note(&r, 0);
        r
    }
}

/// Panics unless `got` is `want`, without printing megabytes.
fn check(what: &str, got: &[u8], want: &[u8]) {
    if got != want {
        let at = got.iter().zip(want).position(|(a, b)| a != b);
        panic!(
            "{what}: {} bytes (fnv {:x}) where {} (fnv {:x}) were sent; first difference at {at:?}",
            got.len(),
            fnv1a64(got),
            want.len(),
            fnv1a64(want)
        );
    }
}

/// The parent's side of a pipe, paced by the child's signals: before each `read` or `write`
/// (of at most one pipeful) it waits for 1 to 3 notifications, so that the child is blocked
/// when they come. End-of-file on the notification pipe (the child is gone) ends the pacing.
struct Paced<'a, T> {
    inner: T,
    notify: &'a PipeReader,
    rng: SplitMix64,
}

impl<'a, T> Paced<'a, T> {
    fn new(inner: T, notify: &'a PipeReader, seed: u64) -> Paced<'a, T> {
        Paced {
            inner,
            notify,
            rng: SplitMix64::new(seed),
        }
    }

    fn wait(&mut self) -> io::Result<()> {
        let mut got = [0u8; 3];
        let want = self.rng.range(1, 3) as usize;
        let mut n = 0;
        while n < want {
            match (&*self.notify).read(&mut got[n..want]) {
                Ok(0) => return Ok(()),
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl<T: Read> Read for Paced<'_, T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.wait()?;
        self.inner.read(buf)
    }
}

impl<T: Write> Write for Paced<'_, T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.wait()?;
        self.inner.write(&buf[..buf.len().min(CAPACITY)])
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[test]
fn whole_transfers_survive_a_stream_of_interrupting_signals() {
    if role().is_some() {
        interrupted_child();
        return;
    }
    let _wd = Watchdog::new("EINTR", LIMIT);
    let (down_r, down_w) = pipe().unwrap();
    let (up_r, up_w) = pipe().unwrap();
    let (notify_r, notify_w) = pipe().unwrap();
    let mut cmd = child(
        &test_path!(whole_transfers_survive_a_stream_of_interrupting_signals),
        "interrupted",
    );
    ChildFds::new()
        .fd_at(3, down_r)
        .fd_at(4, up_w)
        .fd_at(5, notify_w)
        .apply(&mut cmd)
        .unwrap();
    let mut p = spawn(cmd);
    let notify = &notify_r;
    // The phases in the child's order; each direction paced by the child's signals.
    let verify = || -> Result<String, String> {
        let mut up = Paced::new(&up_r, notify, 1);
        let mut down = Paced::new(&down_w, notify, 2);
        let exact = |up: &mut Paced<&PipeReader>, what: &str, want: &[u8]| {
            let mut got = vec![0; want.len()];
            up.read_exact(&mut got)
                .map_err(|e| format!("{what}: {e}"))?;
            check(what, &got, want);
            Ok::<(), String>(())
        };
        exact(&mut up, "write_all", &payload(1, PHASE))?;
        down.write_all(&payload(2, PHASE))
            .map_err(|e| format!("read_exact: {e}"))?;
        let mut rx = FramedReader::new(up).max_frame(MAX_FRAME);
        let mut buf = Vec::new();
        for i in 0..FRAMES {
            let n = rx
                .read_frame_into(&mut buf)
                .map_err(|e| format!("frame {i} up: {e}"))?;
            check(
                &format!("frame {i} up"),
                &buf,
                &payload(100 + i, frame_len(i)),
            );
            assert_eq!(n, Some(frame_len(i)));
        }
        for i in 0..FRAMES {
            let n = rx
                .read_frame_into(&mut buf)
                .map_err(|e| format!("lent frame {i} up: {e}"))?;
            check(
                &format!("lent frame {i} up"),
                &buf,
                &payload(400 + i, frame_len(i)),
            );
            assert_eq!(n, Some(frame_len(i)));
        }
        // The child sends nothing more before it has the frames below: nothing read ahead.
        let (mut up, unread) = rx.into_parts();
        assert!(unread.is_empty(), "{} bytes read ahead", unread.len());
        let mut tx = FramedWriter::from_write(down).max_frame(MAX_FRAME);
        for i in 0..FRAMES {
            tx.write_frame(&payload(200 + i, frame_len(i)))
                .map_err(|e| format!("frame {i} down: {e}"))?;
        }
        for i in 0..RECORDS {
            let want = payload(300 + i, record_len(i));
            exact(&mut up, &format!("atomic record {i}"), &want)?;
        }
        exact(&mut up, "write_all_timeout", &payload(6, PHASE))?;
        exact(&mut up, "ZeroCopyWriter", &payload(7, PHASE))?;
        // The relay: what goes down comes back up by splice. Feed it from a thread, unpaced.
        let relay_in = tx.into_inner().inner.try_clone().unwrap();
        let feeder = std::thread::spawn(move || (&relay_in).write_all(&payload(8, PHASE)));
        exact(&mut up, "copy", &payload(8, PHASE))?;
        feeder
            .join()
            .unwrap()
            .map_err(|e| format!("relay input: {e}"))?;
        let mut rx = FramedReader::new(&up_r);
        let report = rx
            .read_frame()
            .map_err(|e| format!("report: {e}"))?
            .ok_or("no report")?;
        let end = rx.read_frame().map_err(|e| format!("after report: {e}"))?;
        assert_eq!(end, None, "nothing after the report");
        String::from_utf8(report).map_err(|e| e.to_string())
    };
    match verify() {
        Ok(report) => {
            let status = p.wait_timeout(LIMIT).unwrap();
            assert!(status.success(), "child: {status}");
            println!("under interrupting signals: {report}");
        }
        Err(e) => {
            let status = p.wait_timeout(LIMIT);
            panic!("{e} (child: {status:?})");
        }
    }
}

fn interrupted_child() {
    let _wd = Watchdog::new("EINTR child", LIMIT);
    let down = crate::inherited_reader(3);
    let mut up = crate::inherited_writer(4);
    assert_eq!(down.set_capacity(CAPACITY).unwrap(), CAPACITY);
    assert_eq!(up.set_capacity(CAPACITY).unwrap(), CAPACITY);
    let notify = crate::inherited_writer(5);
    notify.set_nonblocking(true).unwrap();
    NOTIFY_FD.store(notify.as_raw_fd(), Ordering::Relaxed);
    let timer = Interrupter::start(EVERY);

    // The premise, checked once: a call blocked here does return EINTR (no SA_RESTART). The
    // only other ways out of this read are data or end-of-file, and neither can come.
    {
        let (r, _w) = pipe().unwrap();
        let e = (&r).read(&mut [0; 1]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Interrupted, "{e}");
    }

    let mut report = String::new();
    let mut phase = |what: &str, seen: Option<Seen>| {
        let signals = SIGNALS.swap(0, Ordering::Relaxed);
        report += &format!("\n  {what}: {signals} signals");
        if let Some(s) = seen {
            report += &format!(", {} EINTR, {} short writes seen", s.interrupted, s.short);
        }
    };
    phase("setup", None);

    // 1. Child -> parent: `Write::write_all`.
    let mut w = Counting::new(&up);
    w.write_all(&payload(1, PHASE)).unwrap();
    phase("write_all", Some(w.seen));

    // 2. Parent -> child: `Read::read_exact`.
    let mut r = Counting::new(&down);
    let mut got = vec![0; PHASE];
    r.read_exact(&mut got).unwrap();
    check("read_exact", &got, &payload(2, PHASE));
    phase("read_exact", Some(r.seen));

    // 3. Child -> parent: frames, from empty to many pipes long.
    let mut tx = FramedWriter::from_write(Counting::new(&up)).max_frame(MAX_FRAME);
    for i in 0..FRAMES {
        tx.write_frame(&payload(100 + i, frame_len(i))).unwrap();
    }
    phase("write_frame", Some(tx.get_ref().seen));

    // 3b. Child -> parent: frames on the pipe's own path, where those of 32 KiB and more are
    // lent with vmsplice from the writer's ring (the pipe keeps its one page).
    let mut tx = FramedWriter::new(&up).grow_pipe(false).max_frame(MAX_FRAME);
    for i in 0..FRAMES {
        tx.write_frame(&payload(400 + i, frame_len(i))).unwrap();
    }
    drop(tx);
    phase("write_frame (lent)", None);

    // 4. Parent -> child: frames.
    let mut rx = FramedReader::new(Counting::new(&down)).max_frame(MAX_FRAME);
    let mut buf = Vec::new();
    for i in 0..FRAMES {
        let n = rx.read_frame_into(&mut buf).unwrap();
        assert_eq!(n, Some(frame_len(i)), "frame {i}");
        check(&format!("frame {i}"), &buf, &payload(200 + i, frame_len(i)));
    }
    phase("read_frame", Some(rx.get_ref().seen));

    // 5. Child -> parent: atomic records (retried inside `write_atomic`).
    for i in 0..RECORDS {
        up.write_atomic(&payload(300 + i, record_len(i))).unwrap();
    }
    phase("write_atomic", None);

    // 6. Child -> parent: `write_all_timeout`, with the SIGPIPE-suppressing write path.
    up.set_sigpipe_policy(SigpipePolicy::Suppress);
    up.write_all_timeout(&payload(6, PHASE), Duration::from_secs(30))
        .unwrap();
    up.set_sigpipe_policy(SigpipePolicy::Inherit);
    phase("write_all_timeout", None);

    // 7. Child -> parent: vmsplice through `ZeroCopyWriter`, pieces of mixed sizes so that
    // both its zero-copy path and its copying fallback run.
    let data = payload(7, PHASE);
    let mut z = ZeroCopyWriter::new(&up).unwrap();
    let (mut at, mut i) = (0, 0);
    while at < PHASE {
        let len = [4096, 1000, 3333, 1][i % 4].min(PHASE - at);
        z.send_with(len, |piece| piece.copy_from_slice(&data[at..at + len]))
            .unwrap();
        at += len;
        i += 1;
    }
    drop(z);
    phase("ZeroCopyWriter", None);

    // 8. Parent -> child -> parent: `copy` splices from one pipe into the other.
    let n = ipc_pipe::copy(&down, &up, Some(PHASE as u64)).unwrap();
    assert_eq!(n, PHASE as u64);
    phase("copy", None);

    // The report goes while the timer still runs: the parent drains the last of the relay only
    // after a signal.
    FramedWriter::new(&up)
        .write_frame(report.as_bytes())
        .unwrap();
    drop(timer);
    NOTIFY_FD.store(-1, Ordering::Relaxed);
}
