//! shmem-ipc's `sharedring`: a ring of items in a memfd, with an eventfd each way for
//! "no longer empty" / "no longer full". The receiver creates it and passes the memfd and both
//! eventfds to the sender over the control socket (`SCM_RIGHTS`, as the crate's docs ask).
//!
//! Items are 64-byte lines (`[u64; 8]`); a message of `size` bytes is `size / 64` items, written
//! with `send_raw` (copied in from the prepared message) and checked in place with
//! `receive_raw`, in two parts where it straddles the end of the ring. A side that cannot go on
//! polls the ring's count for up to 50 µs (as `Ring`'s adaptive wait spins), then blocks on the
//! crate's eventfd (`block_until_writable` / `block_until_readable`).

use std::fs::File;
use std::os::fd::AsFd;

use shmem_ipc::sharedring::{Receiver, Sender};

use super::{OneWay, Result, Rx, Tx};
use crate::ctl::{Params, Peer, Setup, poll_then_block};
use crate::proto::{Check, Payload};
use crate::raw::{Item, shmem_recv, shmem_send};

fn capacity(p: &Params) -> usize {
    p.buf / size_of::<Item>()
}

fn check_size(p: &Params) -> Result<()> {
    if p.size.is_multiple_of(size_of::<Item>()) {
        Ok(())
    } else {
        Err(format!("messages of whole 64-byte items, not {}", p.size).into())
    }
}

/// The sending end.
pub struct ShmemTx {
    s: Sender<Item>,
    msg: Payload,
}

impl Tx for ShmemTx {
    #[inline]
    fn send(&mut self, seq: u64) -> Result<()> {
        let ShmemTx { s, msg } = self;
        let bytes = msg.fill(seq);
        let mut off = 0;
        while off < bytes.len() {
            let k = shmem_send(s, &bytes[off..])?;
            if k == 0 {
                poll_then_block(
                    s,
                    |s| Ok((s.sender_mut().write_count()? > 0).then_some(())),
                    |s| Ok(s.block_until_writable().map(drop)?),
                )?;
            }
            off += k * size_of::<Item>();
        }
        Ok(())
    }
}

/// The receiving end.
pub struct ShmemRx {
    r: Receiver<Item>,
    size: usize,
}

impl std::fmt::Debug for ShmemRx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmemRx").field("size", &self.size).finish()
    }
}

impl Rx for ShmemRx {
    #[inline]
    fn recv(&mut self, seq: u64) -> Result<()> {
        let items = self.size / size_of::<Item>();
        let mut check = Check::new(seq, self.size);
        let mut got = 0;
        while got < items {
            let k = shmem_recv(&mut self.r, items - got, |part| Ok(check.feed(part)?))?;
            if k == 0 {
                poll_then_block(
                    &mut self.r,
                    |r| Ok((r.receiver_mut().read_count()? > 0).then_some(())),
                    |r| Ok(r.block_until_readable().map(drop)?),
                )?;
            }
            got += k;
        }
        Ok(check.finish()?)
    }
}

/// shmem-ipc 0.3 `sharedring`.
#[derive(Debug)]
pub struct ShmemIpc;

impl OneWay for ShmemIpc {
    const NAME: &'static str = "shmem-ipc";
    const KEY: &'static str = "shmem-ipc";
    type Tx = ShmemTx;
    type Rx = ShmemRx;

    fn rx(p: &Params, peer: &mut Peer) -> Result<ShmemRx> {
        check_size(p)?;
        let r = Receiver::<Item>::new(capacity(p))?;
        peer.setup(
            "",
            &[
                r.memfd().as_file().as_fd(),
                r.empty_signal().as_fd(),
                r.full_signal().as_fd(),
            ],
        )?;
        Ok(ShmemRx { r, size: p.size })
    }

    fn tx(p: &Params, setup: Setup) -> Result<ShmemTx> {
        check_size(p)?;
        let [memfd, empty, full]: [_; 3] =
            setup.fds.try_into().map_err(|_| "memfd and two eventfds")?;
        let s = Sender::open(
            capacity(p),
            File::from(memfd),
            File::from(empty),
            File::from(full),
        )?;
        Ok(ShmemTx {
            s,
            msg: Payload::new(p.size),
        })
    }
}
