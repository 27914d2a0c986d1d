//! The floors: a Rust port of `../shared/baseline/spsc64.c` (fixed 64-byte slots, each side
//! caching the other's position and publishing its own every 16 messages), and the same ring
//! publishing every message and spinning forever for round trips. The raw parts are in
//! `crate::raw`; the memory is a memfd passed to the child.

use super::{OneWay, Result, RoundTrip, Rx, Tx};
use crate::ctl::{Params, Peer, Setup};
use crate::proto::{Payload, verify};
use crate::raw::{Mapping, SlotRx, SlotTx, slot_ring_len};
use std::os::fd::AsFd;

/// spsc64.c publishes its position every 16 messages.
const BATCH: u64 = 16;

fn check_size(p: &Params) -> Result<()> {
    if p.size == 64 {
        Ok(())
    } else {
        Err(format!("the slot ring carries 64-byte messages, not {}", p.size).into())
    }
}

/// The sending end.
#[derive(Debug)]
pub struct SpscTx {
    ring: SlotTx,
    msg: Payload,
}

impl Tx for SpscTx {
    #[inline]
    fn send(&mut self, seq: u64) -> Result<()> {
        let m: &[u8; 64] = self.msg.fill(seq).try_into()?;
        self.ring.send(m)
    }

    fn flush(&mut self) -> Result<()> {
        self.ring.flush();
        Ok(())
    }
}

/// The receiving end.
#[derive(Debug)]
pub struct SpscRx {
    ring: SlotRx,
}

impl Rx for SpscRx {
    #[inline]
    fn recv(&mut self, seq: u64) -> Result<()> {
        let mut m = [0u8; 64];
        self.ring.recv(&mut m)?;
        verify(&m, seq, 64)?;
        Ok(())
    }
}

/// The spsc64.c protocol in Rust: the small-message floor.
#[derive(Debug)]
pub struct Spsc64;

impl OneWay for Spsc64 {
    const NAME: &'static str = "spsc64 port (raw floor)";
    const KEY: &'static str = "spsc64";
    type Tx = SpscTx;
    type Rx = SpscRx;

    fn rx(p: &Params, peer: &mut Peer) -> Result<SpscRx> {
        check_size(p)?;
        let (map, fd) = Mapping::create(slot_ring_len())?;
        peer.setup("", &[fd.as_fd()])?;
        Ok(SpscRx {
            ring: SlotRx::new(map, BATCH),
        })
    }

    fn tx(p: &Params, mut setup: Setup) -> Result<SpscTx> {
        check_size(p)?;
        let fd = setup.fds.pop().ok_or("no memfd")?;
        Ok(SpscTx {
            ring: SlotTx::new(Mapping::open(fd, slot_ring_len())?, BATCH),
            msg: Payload::new(p.size),
        })
    }
}

/// Two slot rings that publish every message and spin forever: the round-trip floor.
#[derive(Debug)]
pub struct SpinRing;

impl RoundTrip for SpinRing {
    const NAME: &'static str = "raw spin ring";
    const KEY: &'static str = "spin-ring";
    type Tx = SpscTx;
    type Rx = SpscRx;

    fn parent(p: &Params, peer: &mut Peer) -> Result<(SpscTx, SpscRx)> {
        check_size(p)?;
        let (ping, ping_fd) = Mapping::create(slot_ring_len())?;
        let (pong, pong_fd) = Mapping::create(slot_ring_len())?;
        peer.setup("", &[ping_fd.as_fd(), pong_fd.as_fd()])?;
        Ok((
            SpscTx {
                ring: SlotTx::new(ping, 1),
                msg: Payload::new(p.size),
            },
            SpscRx {
                ring: SlotRx::new(pong, 1),
            },
        ))
    }

    fn child(p: &Params, setup: Setup) -> Result<(SpscTx, SpscRx)> {
        check_size(p)?;
        let [ping, pong]: [_; 2] = setup.fds.try_into().map_err(|_| "two memfds")?;
        Ok((
            SpscTx {
                ring: SlotTx::new(Mapping::open(pong, slot_ring_len())?, 1),
                msg: Payload::new(p.size),
            },
            SpscRx {
                ring: SlotRx::new(Mapping::open(ping, slot_ring_len())?, 1),
            },
        ))
    }
}
