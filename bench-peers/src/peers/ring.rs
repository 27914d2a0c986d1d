//! ipc-shm's `Ring` over a POSIX shared memory segment (`Shm`), the way two unrelated processes
//! use it: the receiver creates the segment and the ring, the sender opens both by name.
//!
//! Everything that touches ipc-shm's API is in this file. The receiver copies each message out
//! with `recv` into a buffer and checks it there: [`recv_checked`] is the one function to change
//! when the ring gains an in-place receive.

use std::time::Duration;

use ipc_shm::{Ring, RingReader, RingWriter, Shm, Wait};

use super::{OneWay, Result, RoundTrip, Rx, Tx};
use crate::ctl::{Params, Peer, Setup};
use crate::proto::{Payload, verify};

fn segment_size(p: &Params) -> u64 {
    Ring::segment_size(p.buf).expect("a power-of-two ring")
}

/// Creates a ring of `p.buf` data bytes; returns its name and the segment.
fn create(p: &Params, tag: &str) -> Result<(String, Ring<Shm>)> {
    let name = ipc_testkit::posix_name(tag);
    let ring = Ring::create(Shm::create(&name, segment_size(p))?)?;
    Ok((name, ring))
}

fn open(p: &Params, name: &str) -> Result<Ring<Shm>> {
    Ok(Ring::open_timeout(
        Shm::open(name, segment_size(p))?,
        Duration::from_secs(10),
    )?)
}

/// Receives the next message and checks it is message `seq`.
#[inline]
fn recv_checked(r: &mut RingReader<Shm>, buf: &mut [u8], seq: u64) -> Result<()> {
    let n = r.recv(buf)?;
    verify(&buf[..n], seq, buf.len())?;
    Ok(())
}

/// The sending end.
#[derive(Debug)]
pub struct RingTx {
    w: RingWriter<Shm>,
    msg: Payload,
}

impl Tx for RingTx {
    #[inline]
    fn send(&mut self, seq: u64) -> Result<()> {
        self.w.send(self.msg.fill(seq))?;
        Ok(())
    }
}

/// The receiving end.
#[derive(Debug)]
pub struct RingRx {
    r: RingReader<Shm>,
    buf: Vec<u8>,
}

impl Rx for RingRx {
    #[inline]
    fn recv(&mut self, seq: u64) -> Result<()> {
        recv_checked(&mut self.r, &mut self.buf, seq)
    }
}

/// `ipc_shm::Ring`, default (adaptive) wait.
#[derive(Debug)]
pub struct RingC;

impl OneWay for RingC {
    const NAME: &'static str = "ipc-shm Ring";
    const KEY: &'static str = "ring";
    type Tx = RingTx;
    type Rx = RingRx;

    fn rx(p: &Params, peer: &mut Peer) -> Result<RingRx> {
        let (name, ring) = create(p, "peers-ring")?;
        let r = ring.into_reader()?;
        peer.setup(&name, &[])?;
        Ok(RingRx {
            r,
            buf: vec![0; p.size],
        })
    }

    fn tx(p: &Params, setup: Setup) -> Result<RingTx> {
        Ok(RingTx {
            w: open(p, &setup.text)?.into_writer()?,
            msg: Payload::new(p.size),
        })
    }
}

/// Two rings, both ends spinning (`Wait::SpinThenPark`: spins about 50 µs before it would park,
/// far longer than a round trip).
#[derive(Debug)]
pub struct RingSpin;

impl RoundTrip for RingSpin {
    const NAME: &'static str = "ipc-shm Ring (spin)";
    const KEY: &'static str = "ring-spin";
    type Tx = RingTx;
    type Rx = RingRx;

    fn parent(p: &Params, peer: &mut Peer) -> Result<(RingTx, RingRx)> {
        let (ping, a) = create(p, "peers-ping")?;
        let (pong, b) = create(p, "peers-pong")?;
        let mut w = a.into_writer()?;
        let mut r = b.into_reader()?;
        w.set_wait(Wait::SpinThenPark);
        r.set_wait(Wait::SpinThenPark);
        peer.setup(&format!("{ping} {pong}"), &[])?;
        Ok((
            RingTx {
                w,
                msg: Payload::new(p.size),
            },
            RingRx {
                r,
                buf: vec![0; p.size],
            },
        ))
    }

    fn child(p: &Params, setup: Setup) -> Result<(RingTx, RingRx)> {
        let (ping, pong) = setup.text.split_once(' ').ok_or("two names")?;
        let mut r = open(p, ping)?.into_reader()?;
        let mut w = open(p, pong)?.into_writer()?;
        w.set_wait(Wait::SpinThenPark);
        r.set_wait(Wait::SpinThenPark);
        Ok((
            RingTx {
                w,
                msg: Payload::new(p.size),
            },
            RingRx {
                r,
                buf: vec![0; p.size],
            },
        ))
    }
}
