//! ipmpsc: a multi-producer single-consumer ring in a shared file, with a process-shared pthread
//! mutex and condition variable, messages encoded with bincode. The receiver creates the file
//! (in /dev/shm, so it is memory, not disk) and the sender opens it by path.
//!
//! A message is `serde_bytes::Bytes` (a length and the bytes, one copy into the ring), and the
//! receiver checks it in place through ipmpsc's `ZeroCopyContext` (a `&[u8]` into the ring).
//! The receiver polls `try_recv` for up to 50 µs, then blocks in `recv` (the crate's
//! condition variable); the sender uses `send`, which waits on the same condition when full.

use ipmpsc::{Receiver, Sender, SharedRingBuffer};
use serde_bytes::Bytes;

use super::{OneWay, Result, Rx, Tx};
use crate::ctl::{POLL, Params, Peer, Setup, Spin};
use crate::proto::{Payload, verify};

/// Removes the ring's file when the receiver is done (ipmpsc's `create` leaves it).
#[derive(Debug)]
struct Unlink(String);

impl Drop for Unlink {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The sending end.
pub struct IpmpscTx {
    tx: Sender,
    msg: Payload,
}

impl Tx for IpmpscTx {
    #[inline]
    fn send(&mut self, seq: u64) -> Result<()> {
        self.tx.send(&Bytes::new(self.msg.fill(seq)))?;
        Ok(())
    }
}

/// The receiving end.
pub struct IpmpscRx {
    rx: Receiver,
    size: usize,
    _file: Unlink,
}

impl Rx for IpmpscRx {
    #[inline]
    fn recv(&mut self, seq: u64) -> Result<()> {
        let mut spin = Spin::new();
        loop {
            let mut ctx = self.rx.zero_copy_context();
            if let Some(b) = ctx.try_recv::<&Bytes>()? {
                verify(b, seq, self.size)?;
                return Ok(());
            }
            drop(ctx);
            if spin.longer_than(POLL) {
                break;
            }
            spin.wait()?;
        }
        let mut ctx = self.rx.zero_copy_context();
        let b = ctx.recv::<&Bytes>()?;
        verify(b, seq, self.size)?;
        Ok(())
    }
}

/// ipmpsc 0.5.
#[derive(Debug)]
pub struct Ipmpsc;

impl OneWay for Ipmpsc {
    const NAME: &'static str = "ipmpsc";
    const KEY: &'static str = "ipmpsc";
    type Tx = IpmpscTx;
    type Rx = IpmpscRx;

    fn rx(p: &Params, peer: &mut Peer) -> Result<IpmpscRx> {
        let path = format!("/dev/shm/{}", ipc_testkit::unique("peers-ipmpsc"));
        let file = Unlink(path.clone());
        let ring = SharedRingBuffer::create(&path, u32::try_from(p.buf)?)?;
        peer.setup(&path, &[])?;
        Ok(IpmpscRx {
            rx: Receiver::new(ring),
            size: p.size,
            _file: file,
        })
    }

    fn tx(p: &Params, setup: Setup) -> Result<IpmpscTx> {
        Ok(IpmpscTx {
            tx: Sender::new(SharedRingBuffer::open(&setup.text)?),
            msg: Payload::new(p.size),
        })
    }
}
