//! `FramedReader` against a hostile peer: the input is a byte stream of frame headers and
//! payloads, fed through a real pipe in pieces the input chooses, and read back in one of four
//! ways (blocking; non-blocking with `WouldBlock` mid-frame; the `try_` form on a blocking
//! descriptor; a fresh `Vec` per frame).
//!
//! Input: `[max lo, max hi, mode, piece seed, stream...]`; the maximum frame is the first two
//! bytes shifted left by the mode byte's top three bits (0..=65535 << 0..=7, so refusals and
//! acceptances are both common, and frames large enough for the reader's buffer to grow in
//! several steps are allowed).
//!
//! Promises checked: no panic; every frame returned is at most the maximum long and equal to
//! what a plain parser of the stream finds; the stream ends the way that parser says (clean
//! end, `MessageTooLarge` with the announced length, `UnexpectedEof`), and an error repeats on
//! the next call; no single allocation made while reading exceeds the maximum (or the reader's
//! fixed read-ahead buffer, about 64 KiB) — a counting global allocator watches every call.
#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{ErrorKind, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use ipc_pipe::{Error, FramedReader, PipeReader};
use libfuzzer_sys::fuzz_target;

/// The size of `FramedReader`'s read-ahead buffer.
const READ_AHEAD: usize = 64 * 1024 + 64;

/// The system allocator, recording the largest request while armed.
struct Watching;

static ARMED: AtomicBool = AtomicBool::new(false);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

fn note(size: usize) {
    if ARMED.load(Ordering::Relaxed) {
        LARGEST.fetch_max(size, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded to the system allocator unchanged; only sizes are recorded.
unsafe impl GlobalAlloc for Watching {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Watching = Watching;

/// How a stream ends, by the plain parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Clean,
    TooLarge(u32),
    Truncated,
}

/// The frames of `stream` and how it ends, parsed the obvious way.
fn parse(stream: &[u8], max: u32) -> (Vec<&[u8]>, End) {
    let mut frames = Vec::new();
    let mut at = 0;
    loop {
        let rest = &stream[at..];
        if rest.is_empty() {
            return (frames, End::Clean);
        }
        if rest.len() < 4 {
            return (frames, End::Truncated);
        }
        let len = u32::from_le_bytes(rest[..4].try_into().unwrap());
        if len > max {
            return (frames, End::TooLarge(len));
        }
        let len = len as usize;
        if rest.len() - 4 < len {
            return (frames, End::Truncated);
        }
        frames.push(&rest[4..4 + len]);
        at += 4 + len;
    }
}

/// One read through the reader, with the allocator watched.
fn watched<T>(f: impl FnOnce() -> T) -> T {
    ARMED.store(true, Ordering::Relaxed);
    let r = f();
    ARMED.store(false, Ordering::Relaxed);
    r
}

/// What a read returned, reduced to what the checks need.
enum Step {
    Frame(Vec<u8>),
    End(End),
    WouldBlock,
}

fn classify(r: ipc_pipe::Result<Option<Vec<u8>>>, max: u32) -> Step {
    match r {
        Ok(Some(frame)) => Step::Frame(frame),
        Ok(None) => Step::End(End::Clean),
        Err(Error::WouldBlock) => Step::WouldBlock,
        Err(Error::MessageTooLarge { len, max: m }) => {
            assert_eq!(m, u64::from(max));
            Step::End(End::TooLarge(u32::try_from(len).expect("an announced u32")))
        }
        Err(Error::Io(e)) if e.kind() == ErrorKind::UnexpectedEof => Step::End(End::Truncated),
        Err(e) => panic!("unexpected error: {e:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let max = u32::from(u16::from_le_bytes([data[0], data[1]])) << (data[2] >> 5);
    let mode = data[2] % 4;
    let mut seed = u32::from(data[3]) | 1;
    let stream = &data[4..];
    let (want, want_end) = parse(stream, max);

    let (r, w) = ipc_pipe::pipe().expect("a pipe");
    // Modes 1 and 2 feed the stream in pieces while reading; 0 and 3 write it first, which
    // needs room for all of it (a pipe holds at most pipe-max-size, 1 MiB by default).
    let feed_in_pieces = matches!(mode, 1 | 2);
    if !feed_in_pieces && stream.len() > 65_536 {
        if stream.len() > 1 << 20 {
            return;
        }
        w.set_capacity(stream.len()).expect("room for the whole stream");
    }
    if mode == 1 {
        r.set_nonblocking(true).unwrap();
    }
    w.set_nonblocking(true).unwrap();
    let mut rx = FramedReader::new(&r).max_frame(max);
    let mut buf = Vec::new();
    let read = |rx: &mut FramedReader<&PipeReader>, buf: &mut Vec<u8>| -> Step {
        let r = watched(|| match mode {
            // A fresh Vec per frame.
            3 => rx.read_frame(),
            // The try_ form: poll, then read, on a blocking descriptor.
            2 => rx.try_read_frame_into(buf).map(|n| n.map(|_| buf.clone())),
            _ => rx.read_frame_into(buf).map(|n| n.map(|_| buf.clone())),
        });
        classify(r, max)
    };
    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut w = Some(w);
    let mut pos = 0;
    if !feed_in_pieces {
        w.as_ref().unwrap().write_all(stream).unwrap();
        w = None;
    }
    let end = 'outer: loop {
        if feed_in_pieces {
            if pos < stream.len() {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                let piece = 1 + (seed >> 8) as usize % 5000;
                let piece = piece.min(stream.len() - pos);
                match w.as_ref().unwrap().write(&stream[pos..pos + piece]) {
                    Ok(n) => pos += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => panic!("feeding the pipe: {e}"),
                }
            } else {
                w = None; // end-of-file for the reader once it has drained the pipe
            }
        }
        loop {
            // A blocking read with the writer still open would wait for bytes not yet fed.
            if w.is_some() && mode != 1 && mode != 2 {
                break;
            }
            if w.is_some() && mode == 2 && r.available().unwrap() == 0 {
                break;
            }
            match read(&mut rx, &mut buf) {
                Step::Frame(frame) => {
                    assert!(frame.len() <= max as usize, "a frame above the maximum");
                    let i = got.len();
                    assert!(i < want.len(), "more frames than the stream holds");
                    assert!(frame == want[i], "frame {i} differs from the stream");
                    got.push(frame);
                }
                Step::WouldBlock => {
                    assert!(w.is_some(), "WouldBlock after end-of-file");
                    break;
                }
                Step::End(end) => break 'outer end,
            }
        }
    };
    assert_eq!(got.len(), want.len(), "frames lost");
    assert_eq!(end, want_end, "the stream ended differently");
    // An error repeats; a clean end stays a clean end.
    match read(&mut rx, &mut buf) {
        Step::End(again) => assert_eq!(again, end),
        _ => panic!("after {end:?} the reader read on"),
    }
    // The read-ahead buffer (a constant, about 64 KiB) is the one allocation no frame decides.
    let largest = LARGEST.swap(0, Ordering::Relaxed);
    assert!(
        largest <= (max as usize).max(READ_AHEAD),
        "an allocation of {largest} bytes with a maximum frame of {max}"
    );
    assert!(buf.capacity() <= (max as usize).max(512));
});
