//! The ring's reader against a hostile writer: between the reader's operations the input
//! scribbles arbitrary bytes over the control block and the data area of a real shared mapping
//! (an anonymous `MAP_SHARED` region), or plants well-formed record headers (the tag of the
//! reader's position, a length, the aligned bit). Every message returned must lie within the
//! buffer and the ring's maximum, be the bytes that are in the ring at its record (copied out,
//! or read in place through `recv_with`), and advance the published position by exactly one
//! record; everything else must be a typed error. Only `try_` and zero-timeout forms are used,
//! so a hostile ring cannot make a run block.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use ipc_shm::{Anon, Error, Ring, Wait};
use libfuzzer_sys::fuzz_target;

const CAP: usize = 4096;
const DATA_OFF: usize = 384;
const READER_POS: usize = 256;
const ALIGNED: u32 = 0x4000_0000;

static SEG: OnceLock<Anon> = OnceLock::new();

fn tag(pos: u64) -> u32 {
    ((pos >> 3) as u32 & 0x3fff_ffff) | 0x8000_0000
}

/// The header the reader goes by for the record at `head`: the one it validated when it last
/// said the buffer was too small (it keeps that record's length and layout until it is taken),
/// else the one in the ring now.
fn header(seg: &Anon, head: u64, kept: Option<u64>) -> u64 {
    kept.unwrap_or_else(|| seg.read::<u64>(DATA_OFF + (head as usize % CAP)).unwrap())
}

/// Where the payload of the record at `head` starts, by its header's aligned bit.
fn payload_off(hdr: u64, head: u64) -> u64 {
    if (hdr >> 32) as u32 & ALIGNED != 0 {
        ((head + 8 + 63) & !63) - head
    } else {
        8
    }
}

fn record_len(hdr: u64, head: u64, len: usize) -> u64 {
    payload_off(hdr, head) + ((len as u64 + 7) & !7)
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
    // The header the reader validated when it said the buffer was too small.
    let mut kept: Option<u64> = None;
    let mut ops = data;
    while let Some((&op, rest)) = ops.split_first() {
        ops = rest;
        match op % 5 {
            0 => {
                // Scribble: offset (2 bytes), length (1 byte), bytes.
                let off = word(take(&mut ops, 2)) % seg.len();
                let len = word(take(&mut ops, 1));
                let bytes = take(&mut ops, len);
                let n = bytes.len().min(seg.len() - off);
                seg.write_bytes(off, &bytes[..n]).unwrap();
            }
            1 => {
                // A committed header at the reader's position: length (2 bytes), aligned bit.
                let len = word(take(&mut ops, 2)) as u64 % (CAP as u64 + 64);
                let bits = tag(head) | if op & 8 != 0 { ALIGNED } else { 0 };
                let hdr = (u64::from(bits) << 32) | len;
                seg.write::<u64>(DATA_OFF + head as usize % CAP, &hdr).unwrap();
            }
            2 => {
                let size = word(take(&mut ops, 2)) % (CAP + 64);
                let mut buf = vec![0u8; size];
                let r = if op & 8 == 0 {
                    rx.try_recv(&mut buf)
                } else {
                    rx.recv_timeout(&mut buf, Duration::ZERO)
                };
                match r {
                    Ok(n) => {
                        assert!(n <= buf.len() && n <= max, "{n} of {} / {max}", buf.len());
                        let hdr = header(seg, head, kept.take());
                        check_record(seg, head, hdr, &buf[..n]);
                        head = advanced(seg, head, hdr, n);
                    }
                    Err(Error::BufferTooSmall { needed }) => {
                        assert!(needed > buf.len() && needed <= max);
                        kept.get_or_insert(header(seg, head, None));
                    }
                    Err(Error::WouldBlock | Error::TimedOut | Error::PeerGone) => {}
                    Err(Error::Corrupt { .. }) => {}
                    Err(e) => panic!("unexpected error {e:?}"),
                }
            }
            3 => {
                // In place: a read at an offset from the input, and the chunks.
                let at = word(take(&mut ops, 2));
                let r = rx.try_recv_with(|m| {
                    let mut whole = Vec::new();
                    m.for_each_chunk(|c| whole.extend_from_slice(c));
                    assert_eq!(whole.len(), m.len());
                    let mut one = [0u8; 3];
                    match m.read(at, &mut one) {
                        Ok(()) => assert_eq!(&one[..], &whole[at..at + 3]),
                        Err(Error::OutOfBounds { .. }) => assert!(at + 3 > m.len()),
                        Err(e) => panic!("unexpected error {e:?}"),
                    }
                    whole
                });
                match r {
                    Ok(v) => {
                        assert!(v.len() <= max);
                        let hdr = header(seg, head, kept.take());
                        check_record(seg, head, hdr, &v);
                        head = advanced(seg, head, hdr, v.len());
                    }
                    Err(Error::WouldBlock | Error::PeerGone | Error::Corrupt { .. }) => {}
                    Err(e) => panic!("unexpected error {e:?}"),
                }
            }
            _ => match rx.try_recv_vec() {
                Ok(v) => {
                    assert!(v.len() <= max && v.capacity() <= max.max(1) * 2);
                    let hdr = header(seg, head, kept.take());
                    check_record(seg, head, hdr, &v);
                    head = advanced(seg, head, hdr, v.len());
                }
                Err(Error::WouldBlock | Error::PeerGone | Error::Corrupt { .. }) => {}
                Err(e) => panic!("unexpected error {e:?}"),
            },
        }
    }
});

/// The payload returned is what the ring holds at the record at `head`.
fn check_record(seg: &Anon, head: u64, hdr: u64, got: &[u8]) {
    let start = ((head + payload_off(hdr, head)) as usize) % CAP;
    let first = got.len().min(CAP - start);
    let mut want = vec![0u8; got.len()];
    seg.read_bytes(DATA_OFF + start, &mut want[..first]).unwrap();
    seg.read_bytes(DATA_OFF, &mut want[first..]).unwrap();
    assert_eq!(got, &want[..], "the bytes of the record");
}

/// The reader published exactly one record more.
fn advanced(seg: &Anon, head: u64, hdr: u64, n: usize) -> u64 {
    let now = seg.read::<u64>(READER_POS).unwrap();
    assert_eq!(now, head.wrapping_add(record_len(hdr, head, n)), "one record consumed");
    now
}
