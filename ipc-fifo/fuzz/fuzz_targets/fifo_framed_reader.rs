//! `RecordReader::framed` (large frames from one writer, up to a maximum the input chooses)
//! reading whatever a hostile peer wrote into a real pipe: every frame it returns is exactly
//! the next one in the stream and within the maximum, the stream's end is reported as it is,
//! and memory grows only with the bytes that arrived — never with the length a header
//! announces: at most the 64 KiB start, or twice what was received, and never beyond the
//! maximum plus the header.
#![no_main]

mod common;

use ipc_fifo::{FifoReader, HEADER_LEN, RecordReader};

#[global_allocator]
static ALLOC: common::Track = common::Track;

/// The reader's starting buffer.
const START: usize = 64 * 1024;
/// The longest stream a target writes into its pipe (pipe-max-size is 1 MiB by default).
const MAX_STREAM: usize = 1 << 20;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // [max_len: u32 le][mode][body]: the reader's maximum (any, up to 4 GiB), whether the
    // writer stays open (bit 0), and how many times the body is repeated to make the stream
    // (bits 1..=5), so that short inputs also make streams longer than the reader's buffer.
    if data.len() < 5 {
        return;
    }
    let max = u32::from_le_bytes(data[..4].try_into().unwrap()) as usize;
    let mode = data[4];
    let body = &data[5..];
    let waiting = mode & 1 == 1;
    let reps = 1 + usize::from((mode >> 1) & 0x1f) * 8;
    let mut stream = Vec::with_capacity(body.len() * reps);
    for _ in 0..reps {
        if stream.len() + body.len() > MAX_STREAM {
            break;
        }
        stream.extend_from_slice(body);
    }
    let (r, w) = common::pipe_with(&stream, waiting);
    let (reader, p0) =
        common::tracked(|| RecordReader::framed(FifoReader::try_from(r).unwrap(), max));
    let mut reader = reader;
    let peak = common::check(&mut reader, &stream, max, waiting).max(p0);
    let bound = START.max((2 * stream.len()).min(max.saturating_add(HEADER_LEN)));
    assert!(
        peak <= bound,
        "allocated {peak} bytes for a stream of {} bytes (max {max})",
        stream.len()
    );
    drop(w);
});
