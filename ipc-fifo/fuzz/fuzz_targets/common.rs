//! What both targets share: a real pipe (the kernel object of a FIFO) carrying the input, an
//! allocator that records the largest allocation made while armed, and the reference parser.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Records the largest single allocation (or reallocation) while armed.
pub struct Track;

static ARMED: AtomicBool = AtomicBool::new(false);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn note(size: usize) {
    if ARMED.load(Ordering::Relaxed) {
        PEAK.fetch_max(size, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded to `System` unchanged; only sizes are recorded.
unsafe impl GlobalAlloc for Track {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Runs `f` with allocation tracking armed; returns its result and the largest allocation.
pub fn tracked<T>(f: impl FnOnce() -> T) -> (T, usize) {
    PEAK.store(0, Ordering::Relaxed);
    ARMED.store(true, Ordering::Relaxed);
    let r = f();
    ARMED.store(false, Ordering::Relaxed);
    (r, PEAK.load(Ordering::Relaxed))
}

/// A pipe holding `stream` (all of it: the pipe is made large enough, so `stream` must fit
/// in `pipe-max-size`), and its write end if `keep_writer` (else it is closed: end-of-file
/// follows the data).
pub fn pipe_with(stream: &[u8], keep_writer: bool) -> (OwnedFd, Option<OwnedFd>) {
    use rustix::pipe::{PipeFlags, fcntl_setpipe_size, pipe_with};
    let (r, w) = pipe_with(PipeFlags::CLOEXEC).expect("pipe");
    if stream.len() > 65536 {
        fcntl_setpipe_size(&w, stream.len()).expect("F_SETPIPE_SZ");
    }
    let mut done = 0;
    while done < stream.len() {
        done += rustix::io::write(&w, &stream[done..]).expect("write into the pipe");
    }
    (r, keep_writer.then_some(w))
}

/// How a stream of length-prefixed messages ends, after its complete messages.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// Exactly at a message boundary.
    Clean,
    /// Inside a header or a payload.
    Truncated,
    /// A header announcing more than `max`.
    TooLarge(usize),
}

/// The reference parser: the messages of `stream` and how it ends, for a maximum of `max`.
pub fn parse(stream: &[u8], max: usize) -> (Vec<&[u8]>, End) {
    let mut out = Vec::new();
    let mut rest = stream;
    loop {
        if rest.is_empty() {
            return (out, End::Clean);
        }
        if rest.len() < 4 {
            return (out, End::Truncated);
        }
        let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
        if len > max {
            return (out, End::TooLarge(len));
        }
        if rest.len() - 4 < len {
            return (out, End::Truncated);
        }
        out.push(&rest[4..4 + len]);
        rest = &rest[4 + len..];
    }
}

/// Reads every message with `reader` and checks each (length and bytes), and the way the
/// stream ends, against the reference. `waiting`: the writer is still open, so an unfinished
/// stream ends in `WouldBlock` (with `try_recv`). Returns the largest allocation the reader made.
pub fn check(
    reader: &mut ipc_fifo::RecordReader,
    stream: &[u8],
    max: usize,
    waiting: bool,
) -> usize {
    use ipc_fifo::Error;
    let (want, end) = parse(stream, max);
    let mut peak = 0;
    let mut next = |reader: &mut ipc_fifo::RecordReader, expect: Option<&[u8]>| {
        // No allocation of ours inside: only the reader's are recorded.
        let (got, p) = tracked(|| {
            let r = if waiting { reader.try_recv() } else { reader.recv() };
            r.map(|m| m.map(|m| (m.len(), Some(m) == expect)))
        });
        peak = peak.max(p);
        got
    };
    for (i, w) in want.iter().enumerate() {
        match next(reader, Some(w)) {
            Ok(Some((len, true))) => assert!(len <= max),
            other => panic!("message {i} of {}: expected {} bytes, got {other:?}", want.len(), w.len()),
        }
    }
    let last = next(reader, None);
    match (end, last, waiting) {
        (End::Clean, Ok(None), false) => {}
        (End::Clean | End::Truncated, Err(Error::WouldBlock), true) => {}
        (End::Truncated, Err(Error::Truncated), false) => {}
        (End::TooLarge(len), Err(Error::MessageTooLarge { len: l, max: m }), _) => {
            assert_eq!((l, m), (len, max));
        }
        (end, last, waiting) => panic!("expected {end:?} (waiting {waiting}), got {last:?}"),
    }
    peak
}
