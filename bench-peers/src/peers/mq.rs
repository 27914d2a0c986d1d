//! POSIX message queues: ipc-mq's `MessageQueue` against the posixmq crate, both one system call
//! per message. The receiver (or the timing side) creates the queues with 10 messages of the
//! message size and unlinks them when done; the child opens them by name. Every queue is closed
//! and unlinked: ipc-mq's owner unlinks on drop, posixmq's queues are unlinked by a guard here
//! (posixmq closes its descriptor on drop; nix's `MqdT`, which neither uses, would not).

use ipc_mq::{Access, MessageQueue};

use super::{OneWay, Result, RoundTrip, Rx, Tx};
use crate::ctl::{Params, Peer, Setup};
use crate::proto::{Payload, verify};

/// Queue depth: the system default (`/proc/sys/fs/mqueue/msg_default`), small for the shared
/// `RLIMIT_MSGQUEUE` budget.
const DEPTH: u64 = 10;

/// ipc-mq's sending end.
pub struct IpcMqTx {
    q: MessageQueue,
    msg: Payload,
}

impl Tx for IpcMqTx {
    #[inline]
    fn send(&mut self, seq: u64) -> Result<()> {
        self.q.send(self.msg.fill(seq), 0)?;
        Ok(())
    }
}

/// ipc-mq's receiving end.
pub struct IpcMqRx {
    q: MessageQueue,
    buf: Vec<u8>,
}

impl Rx for IpcMqRx {
    #[inline]
    fn recv(&mut self, seq: u64) -> Result<()> {
        let (n, _) = self.q.receive(&mut self.buf)?;
        Ok(verify(&self.buf[..n], seq, self.buf.len())?)
    }
}

fn ipc_mq_create(p: &Params) -> Result<(String, MessageQueue)> {
    let name = ipc_testkit::posix_name("peers-mq");
    let q = MessageQueue::create(&name, DEPTH, p.size as u64)?;
    Ok((name, q))
}

/// ipc-mq's POSIX queue.
#[derive(Debug)]
pub struct IpcMq;

impl OneWay for IpcMq {
    const NAME: &'static str = "ipc-mq";
    const KEY: &'static str = "ipc-mq";
    type Tx = IpcMqTx;
    type Rx = IpcMqRx;

    fn rx(p: &Params, peer: &mut Peer) -> Result<IpcMqRx> {
        let (name, q) = ipc_mq_create(p)?;
        peer.setup(&name, &[])?;
        Ok(IpcMqRx {
            q,
            buf: vec![0; p.size],
        })
    }

    fn tx(p: &Params, setup: Setup) -> Result<IpcMqTx> {
        Ok(IpcMqTx {
            q: MessageQueue::open(&setup.text, Access::Send)?,
            msg: Payload::new(p.size),
        })
    }
}

impl RoundTrip for IpcMq {
    const NAME: &'static str = "ipc-mq";
    const KEY: &'static str = "ipc-mq";
    type Tx = IpcMqTx;
    type Rx = IpcMqRx;

    fn parent(p: &Params, peer: &mut Peer) -> Result<(IpcMqTx, IpcMqRx)> {
        let (ping, a2b) = ipc_mq_create(p)?;
        let (pong, b2a) = ipc_mq_create(p)?;
        peer.setup(&format!("{ping} {pong}"), &[])?;
        Ok((
            IpcMqTx {
                q: a2b,
                msg: Payload::new(p.size),
            },
            IpcMqRx {
                q: b2a,
                buf: vec![0; p.size],
            },
        ))
    }

    fn child(p: &Params, setup: Setup) -> Result<(IpcMqTx, IpcMqRx)> {
        let (ping, pong) = setup.text.split_once(' ').ok_or("two names")?;
        Ok((
            IpcMqTx {
                q: MessageQueue::open(pong, Access::Send)?,
                msg: Payload::new(p.size),
            },
            IpcMqRx {
                q: MessageQueue::open(ping, Access::Receive)?,
                buf: vec![0; p.size],
            },
        ))
    }
}

/// Unlinks a posixmq queue's name when the slice is over.
#[derive(Debug)]
struct Unlink(String);

impl Drop for Unlink {
    fn drop(&mut self) {
        let _ = posixmq::remove_queue(&self.0);
    }
}

/// posixmq's sending end.
pub struct PosixTx {
    q: posixmq::PosixMq,
    msg: Payload,
}

impl Tx for PosixTx {
    #[inline]
    fn send(&mut self, seq: u64) -> Result<()> {
        self.q.send(0, self.msg.fill(seq))?;
        Ok(())
    }
}

/// posixmq's receiving end (and, in the parent, the names it unlinks).
pub struct PosixRx {
    q: posixmq::PosixMq,
    buf: Vec<u8>,
    _names: Vec<Unlink>,
}

impl Rx for PosixRx {
    #[inline]
    fn recv(&mut self, seq: u64) -> Result<()> {
        let (_, n) = self.q.recv(&mut self.buf)?;
        Ok(verify(&self.buf[..n], seq, self.buf.len())?)
    }
}

fn posix_create(p: &Params) -> Result<(String, Unlink, posixmq::PosixMq)> {
    let name = ipc_testkit::posix_name("peers-pmq");
    let q = posixmq::OpenOptions::readwrite()
        .capacity(DEPTH as usize)
        .max_msg_len(p.size)
        .mode(0o600)
        .create_new()
        .open(&name)?;
    Ok((name.clone(), Unlink(name), q))
}

fn posix_open(name: &str, write: bool) -> Result<posixmq::PosixMq> {
    let opts = if write {
        posixmq::OpenOptions::writeonly()
    } else {
        posixmq::OpenOptions::readonly()
    };
    Ok(opts.open(name)?)
}

/// The posixmq crate.
#[derive(Debug)]
pub struct PosixMq;

impl OneWay for PosixMq {
    const NAME: &'static str = "posixmq";
    const KEY: &'static str = "posixmq";
    type Tx = PosixTx;
    type Rx = PosixRx;

    fn rx(p: &Params, peer: &mut Peer) -> Result<PosixRx> {
        let (name, unlink, q) = posix_create(p)?;
        peer.setup(&name, &[])?;
        Ok(PosixRx {
            q,
            buf: vec![0; p.size],
            _names: vec![unlink],
        })
    }

    fn tx(p: &Params, setup: Setup) -> Result<PosixTx> {
        Ok(PosixTx {
            q: posix_open(&setup.text, true)?,
            msg: Payload::new(p.size),
        })
    }
}

impl RoundTrip for PosixMq {
    const NAME: &'static str = "posixmq";
    const KEY: &'static str = "posixmq";
    type Tx = PosixTx;
    type Rx = PosixRx;

    fn parent(p: &Params, peer: &mut Peer) -> Result<(PosixTx, PosixRx)> {
        let (ping, u1, a2b) = posix_create(p)?;
        let (pong, u2, b2a) = posix_create(p)?;
        peer.setup(&format!("{ping} {pong}"), &[])?;
        Ok((
            PosixTx {
                q: a2b,
                msg: Payload::new(p.size),
            },
            PosixRx {
                q: b2a,
                buf: vec![0; p.size],
                _names: vec![u1, u2],
            },
        ))
    }

    fn child(p: &Params, setup: Setup) -> Result<(PosixTx, PosixRx)> {
        let (ping, pong) = setup.text.split_once(' ').ok_or("two names")?;
        Ok((
            PosixTx {
                q: posix_open(pong, true)?,
                msg: Payload::new(p.size),
            },
            PosixRx {
                q: posix_open(ping, false)?,
                buf: vec![0; p.size],
                _names: Vec::new(),
            },
        ))
    }
}
