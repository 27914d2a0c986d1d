//! Framed messages over a pipe: ipc-pipe's `FramedWriter`/`FramedReader`, and the same
//! length-prefixed framing (a 4-byte little-endian length, then the bytes) written by hand on
//! `std::io::pipe` and on `os_pipe`. The receiver makes the pipe and passes the write end to the
//! sender over the control socket.
//!
//! The hand-written framing is what one writes by hand: `write_all` of the header, `write_all`
//! of the payload (two `write`s), `read_exact` of the header, then `read_exact` of the payload
//! into a buffer that is reused. (`os_pipe::PipeWriter::write_vectored` is std's default, which
//! writes only the first buffer: so a `write_vectored` loop on os_pipe is also two `write`s.)
//! A third variant on `std::io::pipe` writes header and payload with one `writev`, as
//! ipc-pipe's `FramedWriter` does above `PIPE_BUF`, to show what that choice costs: a frame of
//! 64 KiB + 4 no longer fits a 64 KiB pipe, so every frame takes two hand-overs.

use std::io::{self, IoSlice, Read, Write};
use std::os::fd::AsFd;

use ipc_pipe::{FramedReader, FramedWriter, PipeReader, PipeWriter};

use super::{OneWay, Result, Rx, Tx};
use crate::ctl::{Params, Peer, Setup};
use crate::proto::{Payload, verify};

fn max_frame(p: &Params) -> Result<u32> {
    Ok(u32::try_from(p.size)?)
}

/// ipc-pipe's framed writer.
pub struct FramedTx {
    w: FramedWriter<PipeWriter>,
    msg: Payload,
}

impl Tx for FramedTx {
    #[inline]
    fn send(&mut self, seq: u64) -> Result<()> {
        self.w.write_frame(self.msg.fill(seq))?;
        Ok(())
    }
}

/// ipc-pipe's framed reader.
pub struct FramedRx {
    r: FramedReader<PipeReader>,
    buf: Vec<u8>,
    size: usize,
}

impl Rx for FramedRx {
    #[inline]
    fn recv(&mut self, seq: u64) -> Result<()> {
        match self.r.read_frame_into(&mut self.buf)? {
            Some(n) => Ok(verify(&self.buf[..n], seq, self.size)?),
            None => Err(format!("end of stream before message {seq}").into()),
        }
    }
}

/// `ipc_pipe::FramedWriter`/`FramedReader` on a pipe of the default capacity (64 KiB), or on one
/// grown to 1 MiB (`GROWN`).
#[derive(Debug)]
pub struct Framed<const GROWN: bool>;

impl<const GROWN: bool> OneWay for Framed<GROWN> {
    const NAME: &'static str = if GROWN {
        "ipc-pipe Framed, 1 MiB pipe"
    } else {
        "ipc-pipe Framed"
    };
    const KEY: &'static str = if GROWN { "ipc-pipe-1m" } else { "ipc-pipe" };
    type Tx = FramedTx;
    type Rx = FramedRx;

    fn rx(p: &Params, peer: &mut Peer) -> Result<FramedRx> {
        let (r, w) = ipc_pipe::pipe()?;
        if GROWN {
            w.set_capacity(1 << 20)?;
        }
        peer.setup("", &[w.as_fd()])?;
        drop(w);
        Ok(FramedRx {
            r: FramedReader::new(r).max_frame(max_frame(p)?),
            buf: Vec::with_capacity(p.size),
            size: p.size,
        })
    }

    fn tx(p: &Params, mut setup: Setup) -> Result<FramedTx> {
        let fd = setup.fds.pop().ok_or("no pipe")?;
        Ok(FramedTx {
            w: FramedWriter::new(PipeWriter::from(fd)).max_frame(max_frame(p)?),
            msg: Payload::new(p.size),
        })
    }
}

/// One frame: the header, then the payload (`write_all` each).
fn write_frame(w: &mut impl Write, payload: &[u8]) -> io::Result<()> {
    let header = u32::try_from(payload.len())
        .map_err(|_| io::Error::other("frame too large"))?
        .to_le_bytes();
    w.write_all(&header)?;
    w.write_all(payload)
}

/// One frame with one `writev` of header and payload, continued after short writes.
fn write_frame_vectored(w: &mut impl Write, payload: &[u8]) -> io::Result<()> {
    let header = u32::try_from(payload.len())
        .map_err(|_| io::Error::other("frame too large"))?
        .to_le_bytes();
    let (mut a, mut b) = (&header[..], payload);
    while !a.is_empty() || !b.is_empty() {
        match w.write_vectored(&[IoSlice::new(a), IoSlice::new(b)]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                let from_a = n.min(a.len());
                a = &a[from_a..];
                b = &b[n - from_a..];
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One frame into `buf` (resized to the frame, its allocation reused); refuses one above `max`.
fn read_frame(r: &mut impl Read, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
    let mut header = [0u8; 4];
    r.read_exact(&mut header)?;
    let len = u32::from_le_bytes(header) as usize;
    if len > max {
        return Err(io::Error::other(format!("frame of {len} bytes > {max}")));
    }
    buf.resize(len, 0);
    r.read_exact(buf)?;
    Ok(len)
}

/// A hand-framed sending end on any `Write` (`VECTORED`: one `writev` per frame).
pub struct HandTx<W, const VECTORED: bool = false> {
    w: W,
    msg: Payload,
}

impl<W: Write, const VECTORED: bool> Tx for HandTx<W, VECTORED> {
    #[inline]
    fn send(&mut self, seq: u64) -> Result<()> {
        if VECTORED {
            write_frame_vectored(&mut self.w, self.msg.fill(seq))?;
        } else {
            write_frame(&mut self.w, self.msg.fill(seq))?;
        }
        Ok(())
    }
}

/// A hand-framed receiving end on any `Read`.
pub struct HandRx<R> {
    r: R,
    buf: Vec<u8>,
    size: usize,
}

impl<R: Read> Rx for HandRx<R> {
    #[inline]
    fn recv(&mut self, seq: u64) -> Result<()> {
        let n = read_frame(&mut self.r, &mut self.buf, self.size)?;
        Ok(verify(&self.buf[..n], seq, self.size)?)
    }
}

/// `std::io::pipe` with hand-written framing (`VECTORED`: one `writev` per frame).
#[derive(Debug)]
pub struct StdPipe<const VECTORED: bool>;

impl<const VECTORED: bool> OneWay for StdPipe<VECTORED> {
    const NAME: &'static str = if VECTORED {
        "std::io::pipe + framing, writev"
    } else {
        "std::io::pipe + framing"
    };
    const KEY: &'static str = if VECTORED {
        "std-pipe-writev"
    } else {
        "std-pipe"
    };
    type Tx = HandTx<std::io::PipeWriter, VECTORED>;
    type Rx = HandRx<std::io::PipeReader>;

    fn rx(p: &Params, peer: &mut Peer) -> Result<Self::Rx> {
        let (r, w) = std::io::pipe()?;
        peer.setup("", &[w.as_fd()])?;
        drop(w);
        Ok(HandRx {
            r,
            buf: Vec::with_capacity(p.size),
            size: p.size,
        })
    }

    fn tx(p: &Params, mut setup: Setup) -> Result<Self::Tx> {
        let fd = setup.fds.pop().ok_or("no pipe")?;
        Ok(HandTx {
            w: std::io::PipeWriter::from(fd),
            msg: Payload::new(p.size),
        })
    }
}

/// `os_pipe` with hand-written framing.
#[derive(Debug)]
pub struct OsPipe;

impl OneWay for OsPipe {
    const NAME: &'static str = "os_pipe + framing";
    const KEY: &'static str = "os-pipe";
    type Tx = HandTx<os_pipe::PipeWriter>;
    type Rx = HandRx<os_pipe::PipeReader>;

    fn rx(p: &Params, peer: &mut Peer) -> Result<Self::Rx> {
        let (r, w) = os_pipe::pipe()?;
        peer.setup("", &[w.as_fd()])?;
        drop(w);
        Ok(HandRx {
            r,
            buf: Vec::with_capacity(p.size),
            size: p.size,
        })
    }

    fn tx(p: &Params, mut setup: Setup) -> Result<Self::Tx> {
        let fd = setup.fds.pop().ok_or("no pipe")?;
        Ok(HandTx {
            w: os_pipe::PipeWriter::from(fd),
            msg: Payload::new(p.size),
        })
    }
}
