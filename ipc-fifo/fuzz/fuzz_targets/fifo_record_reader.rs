//! `RecordReader::new` (atomic records, at most `RECORD_MAX` bytes each) reading whatever a
//! hostile peer wrote into a real pipe: every record it returns is exactly the next one in the
//! stream and within `RECORD_MAX`, the stream's end is reported as it is (clean end-of-file,
//! `Truncated`, `MessageTooLarge` for a header beyond the maximum, `WouldBlock` while the writer
//! is still there), and the reader allocates nothing beyond its fixed 64 KiB buffer.
#![no_main]

mod common;

use ipc_fifo::{FifoReader, RECORD_MAX, RecordReader};

#[global_allocator]
static ALLOC: common::Track = common::Track;

/// The reader's buffer: it never grows for records.
const BUFFER: usize = 64 * 1024;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // First byte: whether the writer stays open. The rest is the stream (what fits in a pipe).
    let Some((&mode, stream)) = data.split_first() else {
        return;
    };
    let stream = &stream[..stream.len().min(BUFFER)];
    let waiting = mode & 1 == 1;
    let (r, w) = common::pipe_with(stream, waiting);
    let (reader, p0) = common::tracked(|| RecordReader::new(FifoReader::try_from(r).unwrap()));
    let mut reader = reader;
    let peak = common::check(&mut reader, stream, RECORD_MAX, waiting).max(p0);
    assert!(peak <= BUFFER, "allocated {peak} bytes reading records");
    drop(w);
});
