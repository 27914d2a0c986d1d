//! The ring's writer against a hostile reader: between the writer's operations the input
//! scribbles arbitrary bytes over the control block (the reader's published position, flags,
//! pids) and the data area of a real shared mapping. Every message accepted — sent whole, or
//! reserved, written in pieces and committed (in full or a prefix) — must be in the ring at the
//! writer's record, with its length and its position's tag, the slot after it zeroed, and
//! advance the published position by exactly one record; an abandoned reservation publishes
//! nothing; everything else must be a typed error, never a write outside the ring.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use ipc_shm::{Anon, Error, Ring, Wait};
use libfuzzer_sys::fuzz_target;

const CAP: usize = 4096;
const DATA_OFF: usize = 384;
const WRITER_POS: usize = 128;
const ALIGNED: u32 = 0x4000_0000;

static SEG: OnceLock<Anon> = OnceLock::new();

fn tag(pos: u64) -> u32 {
    ((pos >> 3) as u32 & 0x3fff_ffff) | 0x8000_0000
}

fn take<'a>(ops: &mut &'a [u8], n: usize) -> &'a [u8] {
    let n = n.min(ops.len());
    let (head, rest) = ops.split_at(n);
    *ops = rest;
    head
}

fn word(bytes: &[u8]) -> usize {
    bytes.iter().rev().fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
}

fn scribble(seg: &Anon, ops: &mut &[u8]) {
    let off = word(take(ops, 2)) % seg.len();
    let len = word(take(ops, 1));
    let bytes = take(ops, len);
    let n = bytes.len().min(seg.len() - off);
    seg.write_bytes(off, &bytes[..n]).unwrap();
}

/// Checks the record of `msg` committed at `tail` (reserved for `reserved` bytes, which decides
/// where its payload went) and returns the new tail.
fn check_committed(seg: &Anon, tail: u64, msg: &[u8], reserved: usize) -> u64 {
    let at = tail as usize % CAP;
    let hdr = seg.read::<u64>(DATA_OFF + at).unwrap();
    let aligned = reserved >= 1024;
    let bits = tag(tail) | if aligned { ALIGNED } else { 0 };
    assert_eq!(hdr, (u64::from(bits) << 32) | msg.len() as u64, "the header");
    let off = if aligned { ((tail + 8 + 63) & !63) - tail } else { 8 };
    let start = (tail + off) as usize % CAP;
    let first = msg.len().min(CAP - start);
    let mut got = vec![0u8; msg.len()];
    seg.read_bytes(DATA_OFF + start, &mut got[..first]).unwrap();
    seg.read_bytes(DATA_OFF, &mut got[first..]).unwrap();
    assert_eq!(got, msg, "the record's bytes");
    let rec = off + ((msg.len() as u64 + 7) & !7);
    let next = tail.wrapping_add(rec);
    assert_eq!(
        seg.read::<u64>(DATA_OFF + next as usize % CAP).unwrap(),
        0,
        "the next slot zeroed"
    );
    let now = seg.read::<u64>(WRITER_POS).unwrap();
    assert_eq!(now, next, "one record published");
    now
}

fuzz_target!(|data: &[u8]| {
    let seg = SEG.get_or_init(|| Anon::new(Ring::segment_size(CAP).unwrap()).unwrap());
    seg.fill(0, seg.len(), 0).unwrap();
    let ring = Ring::create(seg).unwrap();
    let mut ops = data;
    // Optionally, a previous endpoint's leftovers before the writer attaches.
    if ops.first().is_some_and(|b| b & 1 == 1) {
        ops = &ops[1..];
        scribble(seg, &mut ops);
    }
    let mut tx = match ring.into_writer() {
        Ok(tx) => tx,
        Err(Error::Corrupt { .. } | Error::RoleTaken | Error::NoDoorbell) => return,
        Err(e) => panic!("unexpected error {e:?}"),
    };
    tx.set_wait(Wait::Park);
    let max = tx.max_message();
    let mut tail = seg.read::<u64>(WRITER_POS).unwrap();
    let mut n = 0u8;
    while let Some((&op, rest)) = ops.split_first() {
        ops = rest;
        if op % 4 == 0 {
            scribble(seg, &mut ops);
            continue;
        }
        let len = word(take(&mut ops, 2)) % (CAP + 64);
        n = n.wrapping_add(1);
        let msg: Vec<u8> = (0..len).map(|i| (i as u8) ^ n).collect();
        if op % 4 == 3 {
            // In place: reserve, write in two pieces, then commit all, a prefix, or nothing.
            let cut = word(take(&mut ops, 2)) % (len + 1);
            let published = seg.read::<u64>(WRITER_POS).unwrap();
            let mut res = match tx.try_reserve(len) {
                Ok(res) => res,
                Err(Error::MessageTooLarge { len: l, max: m }) => {
                    assert!(l > m && m == max);
                    continue;
                }
                Err(Error::WouldBlock | Error::PeerGone | Error::Corrupt { .. }) => continue,
                Err(e) => panic!("unexpected error {e:?}"),
            };
            assert!(len <= max);
            res.write(cut, &msg[cut..]).unwrap();
            res.write(0, &msg[..cut]).unwrap();
            assert!(matches!(res.write(len, b"x"), Err(Error::OutOfBounds { .. })));
            match op >> 2 & 3 {
                0 => {
                    drop(res);
                    assert_eq!(seg.read::<u64>(WRITER_POS).unwrap(), published, "abandoned");
                }
                1 => {
                    res.commit_first(cut).unwrap();
                    tail = check_committed(seg, tail, &msg[..cut], len);
                }
                _ => {
                    res.commit();
                    tail = check_committed(seg, tail, &msg, len);
                }
            }
            continue;
        }
        let r = if op % 4 == 1 {
            tx.try_send(&msg)
        } else {
            tx.send_timeout(&msg, Duration::ZERO)
        };
        match r {
            Ok(()) => {
                assert!(msg.len() <= max);
                tail = check_committed(seg, tail, &msg, msg.len());
            }
            Err(Error::MessageTooLarge { len, max: m }) => assert!(len > m && m == max),
            Err(Error::WouldBlock | Error::TimedOut | Error::PeerGone) => {}
            Err(Error::Corrupt { .. }) => {}
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
});
