//! The ring's reader against a hostile writer: between the reader's operations the input
//! scribbles arbitrary bytes over the control block and the data area of a real shared mapping
//! (an anonymous `MAP_SHARED` region). Every message returned must lie within the buffer and the
//! ring's maximum, be the bytes that are in the ring at its record, and advance the published
//! position by exactly one record; everything else must be a typed error. Only `try_` and
//! zero-timeout forms are used, so a hostile ring cannot make a run block.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use ipc_shm::{Anon, Error, Ring, Wait};
use libfuzzer_sys::fuzz_target;

const CAP: usize = 1024;
const DATA_OFF: usize = 384;
const READER_POS: usize = 256;

static SEG: OnceLock<Anon> = OnceLock::new();

fn record_len(len: usize) -> u64 {
    ((64 + len + 63) & !63) as u64
}

/// Takes `n` bytes from the front of the input.
fn take<'a>(ops: &mut &'a [u8], n: usize) -> &'a [u8] {
    let n = n.min(ops.len());
    let (head, rest) = ops.split_at(n);
    *ops = rest;
    head
}

fn word(bytes: &[u8]) -> usize {
    bytes.iter().rev().fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
}

fuzz_target!(|data: &[u8]| {
    let seg = SEG.get_or_init(|| Anon::new(Ring::segment_size(CAP).unwrap()).unwrap());
    seg.fill(0, seg.len(), 0).unwrap();
    let mut rx = Ring::create(seg).unwrap().into_reader().unwrap();
    rx.set_wait(Wait::Park);
    let max = rx.max_message();
    let mut head = 0u64;
    let mut ops = data;
    while let Some((&op, rest)) = ops.split_first() {
        ops = rest;
        match op % 4 {
            0 | 1 => {
                // Scribble: offset (2 bytes), length (1 byte), bytes.
                let off = word(take(&mut ops, 2)) % seg.len();
                let len = word(take(&mut ops, 1));
                let bytes = take(&mut ops, len);
                let n = bytes.len().min(seg.len() - off);
                seg.write_bytes(off, &bytes[..n]).unwrap();
            }
            2 => {
                let size = word(take(&mut ops, 2)) % (CAP + 64);
                let mut buf = vec![0u8; size];
                let r = if op & 4 == 0 {
                    rx.try_recv(&mut buf)
                } else {
                    rx.recv_timeout(&mut buf, Duration::ZERO)
                };
                match r {
                    Ok(n) => {
                        assert!(n <= buf.len() && n <= max, "{n} of {} / {max}", buf.len());
                        check_record(seg, head, &buf[..n]);
                        head = advanced(seg, head, n);
                    }
                    Err(Error::BufferTooSmall { needed }) => {
                        assert!(needed > buf.len() && needed <= max)
                    }
                    Err(Error::WouldBlock | Error::TimedOut | Error::PeerGone) => {}
                    Err(Error::Corrupt { .. }) => {}
                    Err(e) => panic!("unexpected error {e:?}"),
                }
            }
            _ => match rx.try_recv_vec() {
                Ok(v) => {
                    assert!(v.len() <= max && v.capacity() <= max.max(1) * 2);
                    check_record(seg, head, &v);
                    head = advanced(seg, head, v.len());
                }
                Err(Error::WouldBlock | Error::PeerGone | Error::Corrupt { .. }) => {}
                Err(e) => panic!("unexpected error {e:?}"),
            },
        }
    }
});

/// The payload returned is what the ring holds after the record header at `head`.
fn check_record(seg: &Anon, head: u64, got: &[u8]) {
    let start = (head as usize + 64) % CAP;
    let first = got.len().min(CAP - start);
    let mut want = vec![0u8; got.len()];
    seg.read_bytes(DATA_OFF + start, &mut want[..first]).unwrap();
    seg.read_bytes(DATA_OFF, &mut want[first..]).unwrap();
    assert_eq!(got, &want[..], "the bytes of the record");
}

/// The reader published exactly one record more.
fn advanced(seg: &Anon, head: u64, n: usize) -> u64 {
    let now = seg.read::<u64>(READER_POS).unwrap();
    assert_eq!(now, head.wrapping_add(record_len(n)), "one record consumed");
    now
}
