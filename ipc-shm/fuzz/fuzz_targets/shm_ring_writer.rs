//! The ring's writer against a hostile reader: between the writer's operations the input
//! scribbles arbitrary bytes over the control block (the reader's published position, flags,
//! pids) and the data area of a real shared mapping. Every message accepted must be in the ring
//! at the writer's record, with its length, and advance the published position by exactly one
//! record; everything else must be a typed error, never a write outside the ring.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use ipc_shm::{Anon, Error, Ring, Wait};
use libfuzzer_sys::fuzz_target;

const CAP: usize = 1024;
const DATA_OFF: usize = 384;
const WRITER_POS: usize = 128;

static SEG: OnceLock<Anon> = OnceLock::new();

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
    let tail0 = seg.read::<u64>(WRITER_POS).unwrap();
    let mut tx = match ring.into_writer() {
        Ok(tx) => tx,
        Err(Error::Corrupt { .. } | Error::RoleTaken) => return,
        Err(e) => panic!("unexpected error {e:?}"),
    };
    tx.set_wait(Wait::Park);
    let max = tx.max_message();
    let mut tail = tail0;
    let mut n = 0u8;
    while let Some((&op, rest)) = ops.split_first() {
        ops = rest;
        if op % 3 == 0 {
            scribble(seg, &mut ops);
            continue;
        }
        let len = word(take(&mut ops, 2)) % (CAP + 64);
        n = n.wrapping_add(1);
        let msg: Vec<u8> = (0..len).map(|i| (i as u8) ^ n).collect();
        let r = if op % 3 == 1 {
            tx.try_send(&msg)
        } else {
            tx.send_timeout(&msg, Duration::ZERO)
        };
        match r {
            Ok(()) => {
                assert!(msg.len() <= max);
                let at = (tail as usize) % CAP;
                assert_eq!(seg.read::<u64>(DATA_OFF + at).unwrap(), msg.len() as u64);
                let start = (at + 64) % CAP;
                let first = msg.len().min(CAP - start);
                let mut got = vec![0u8; msg.len()];
                seg.read_bytes(DATA_OFF + start, &mut got[..first]).unwrap();
                seg.read_bytes(DATA_OFF, &mut got[first..]).unwrap();
                assert_eq!(got, msg, "the record's bytes");
                let now = seg.read::<u64>(WRITER_POS).unwrap();
                let rec = ((64 + msg.len() + 63) & !63) as u64;
                assert_eq!(now, tail.wrapping_add(rec), "one record published");
                tail = now;
            }
            Err(Error::MessageTooLarge { len, max: m }) => assert!(len > m && m == max),
            Err(Error::WouldBlock | Error::TimedOut | Error::PeerGone) => {}
            Err(Error::Corrupt { .. }) => {}
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
});
