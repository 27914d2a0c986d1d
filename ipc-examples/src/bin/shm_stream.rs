//! `shm_stream`: a large file-like stream through a shared-memory ring between two processes.
//!
//! The writer (this process) creates a named segment holding an `ipc_shm::Ring`, starts a reader
//! process (this binary again, in the `reader` role), and streams 512 MiB through the ring in
//! 64 KiB messages. The reader reads each one in place (`recv_with`: the bytes where they lie in
//! the ring, a few KiB at a time), checks every chunk's sequence stamp and a checksum of the
//! whole stream, and both sides print the rate they measured. Dropping the writer closes the ring; the
//! reader sees `PeerGone` after the last chunk. The owner unlinks the segment on drop.
//!
//! Every wait is bounded: a reader that dies before it attaches to the ring (which the ring
//! cannot tell from one that has not attached yet) makes the writer's `send_timeout` fail
//! instead of waiting forever, and a writer that stalls makes the reader's `recv_timeout` fail.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::{Duration, Instant};

use ipc_examples::{DemoError, Family, demo_name, ensure, role, run, say, spawn_role};
use ipc_shm::{Error, Ring, Shm};

const TOTAL: u64 = 512 << 20;
const CHUNK: usize = 64 << 10;
const RING: usize = 4 << 20;
const PATTERN: usize = 1 << 20;
/// The longest either side waits for the other before it gives up (a healthy peer moves a chunk
/// in microseconds).
const STALL: Duration = Duration::from_secs(30);

/// 1 MiB of pseudo-random bytes (SplitMix64), the same in both processes.
fn pattern() -> Vec<u8> {
    let mut s: u64 = 0x5354_5245_414d;
    let mut out = Vec::with_capacity(PATTERN);
    while out.len() < PATTERN {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out
}

/// Chunk `k` of the stream: a window of the pattern, stamped with `k` in its first 8 bytes.
fn fill_chunk(pattern: &[u8], k: u64, out: &mut [u8]) {
    let start = (k as usize * 4099) % (PATTERN - CHUNK);
    out.copy_from_slice(&pattern[start..start + CHUNK]);
    out[..8].copy_from_slice(&k.to_le_bytes());
}

/// A word-wise FNV-style checksum, continued over the stream.
fn mix(mut h: u64, data: &[u8]) -> u64 {
    for w in data.chunks_exact(8) {
        h = (h ^ u64::from_le_bytes(w.try_into().unwrap_or_default()))
            .wrapping_mul(0x100_0000_01b3);
    }
    h
}

const SEED: u64 = 0xcbf2_9ce4_8422_2325;

fn main() -> ExitCode {
    if role().as_deref() == Some("reader") {
        return match reader() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                say!("reader", "FAILED: {e}");
                ExitCode::FAILURE
            }
        };
    }
    run(
        "shm_stream",
        "512 MiB streamed through a shared-memory ring to another process, verified",
        writer,
    )
}

fn writer() -> Result<String, DemoError> {
    let name = demo_name("stream");
    let size = Ring::segment_size(RING)?;
    let seg = Shm::create(&name, size)?;
    say!(
        "writer",
        "created {name}: {} MiB ring, 0600, reserved up front",
        RING >> 20
    );
    let mut tx = Ring::create(seg)?.into_writer()?;

    let pattern = pattern();
    let chunks = TOTAL / CHUNK as u64;
    let mut buf = vec![0u8; CHUNK];
    let mut expected = SEED;
    for k in 0..chunks {
        fill_chunk(&pattern, k, &mut buf);
        expected = mix(expected, &buf);
    }

    let reader = spawn_role("reader")?
        .env("SHM_STREAM_NAME", &name)
        .env("SHM_STREAM_SUM", expected.to_string())
        .spawn()?;
    say!(
        "writer",
        "started reader pid {}; streaming {} MiB in {} KiB messages",
        reader.id(),
        TOTAL >> 20,
        CHUNK >> 10
    );
    // On any error below, dropping the family kills and reaps the reader: no orphan.
    let mut family = Family::new();
    family.add("reader", reader);

    let t0 = Instant::now();
    for k in 0..chunks {
        fill_chunk(&pattern, k, &mut buf);
        tx.send_timeout(&buf, STALL)
            .map_err(|e| format!("send of chunk {k} failed: {e}"))?;
    }
    let secs = t0.elapsed().as_secs_f64();
    say!(
        "writer",
        "sent {} MiB in {secs:.3} s: {:.2} GB/s (including generating the data)",
        TOTAL >> 20,
        TOTAL as f64 / secs / 1e9
    );
    drop(tx); // closes the ring: the reader sees the end of the stream
    family.wait_all()?;
    Ok(format!(
        "{} MiB arrived intact, in order, checksum {expected:#018x}",
        TOTAL >> 20
    ))
}

fn reader() -> Result<(), DemoError> {
    let name = std::env::var("SHM_STREAM_NAME")?;
    let expected: u64 = std::env::var("SHM_STREAM_SUM")?.parse()?;
    let size = Ring::segment_size(RING)?;
    let mut rx = Ring::open(Shm::open(&name, size)?)?.into_reader()?;
    say!(
        "reader",
        "opened {name} (type, owner and size checked); reading"
    );
    let (mut got, mut k, mut sum) = (0u64, 0u64, SEED);
    let mut t0 = None;
    loop {
        // In place: each chunk is read where it lies in the ring, 4 KiB at a time through a
        // small private buffer (no 64 KiB copy to read again), and freed when the closure ends.
        let chunk = rx.recv_with_timeout(STALL, |m| {
            let mut stamp = [0u8; 8];
            let stamped = m.read(0, &mut stamp).is_ok();
            let mut s = sum;
            m.for_each_chunk(|piece| s = mix(s, piece));
            (m.len(), stamped.then(|| u64::from_le_bytes(stamp)), s)
        });
        let (n, stamp, s) = match chunk {
            Ok(c) => c,
            Err(Error::PeerGone) => break,
            Err(e) => return Err(e.into()),
        };
        t0.get_or_insert_with(Instant::now);
        ensure(n == CHUNK, format!("chunk {k} has {n} bytes"))?;
        ensure(
            stamp == Some(k),
            format!("chunk {k} carries stamp {stamp:?}: lost or reordered"),
        )?;
        sum = s;
        got += n as u64;
        k += 1;
    }
    let secs = t0.map_or(0.0, |t| t.elapsed().as_secs_f64());
    say!(
        "reader",
        "received {} MiB in {k} messages, {secs:.3} s: {:.2} GB/s (including verification)",
        got >> 20,
        got as f64 / secs.max(1e-9) / 1e9
    );
    ensure(
        got == TOTAL,
        format!("received {got} bytes, expected {TOTAL}"),
    )?;
    ensure(
        sum == expected,
        format!("checksum {sum:#018x}, expected {expected:#018x}"),
    )?;
    say!(
        "reader",
        "checksum {sum:#018x} matches; the writer closed the ring, so this is the end"
    );
    Ok(())
}
