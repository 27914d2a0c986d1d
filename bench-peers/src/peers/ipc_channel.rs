//! ipc-channel's `bytes_channel`: raw bytes over a Unix `SOCK_SEQPACKET` socket (fragmented and
//! reassembled by ipc-channel above the socket's limit). Set up the way ipc-channel's docs show
//! for two processes: the receiver makes an `IpcOneShotServer` and hands its name to the child;
//! the child makes the bytes channel, keeps the sender and sends the receiver back through the
//! one-shot server. Each `recv` returns a new `Vec` (ipc-channel's API), which is checked.

use ipc_channel::ipc::{self, IpcBytesReceiver, IpcBytesSender, IpcOneShotServer, IpcSender};

use super::{OneWay, Result, Rx, Tx};
use crate::ctl::{Params, Peer, Setup};
use crate::proto::{Payload, verify};

/// The sending end.
pub struct BytesTx {
    tx: IpcBytesSender,
    msg: Payload,
}

impl Tx for BytesTx {
    #[inline]
    fn send(&mut self, seq: u64) -> Result<()> {
        self.tx.send(self.msg.fill(seq))?;
        Ok(())
    }
}

/// The receiving end.
pub struct BytesRx {
    rx: IpcBytesReceiver,
    size: usize,
}

impl Rx for BytesRx {
    #[inline]
    fn recv(&mut self, seq: u64) -> Result<()> {
        let v = self.rx.recv()?;
        Ok(verify(&v, seq, self.size)?)
    }
}

/// ipc-channel 0.23 `bytes_channel`.
#[derive(Debug)]
pub struct Bytes;

impl OneWay for Bytes {
    const NAME: &'static str = "ipc-channel bytes_channel";
    const KEY: &'static str = "ipc-channel";
    type Tx = BytesTx;
    type Rx = BytesRx;

    fn rx(p: &Params, peer: &mut Peer) -> Result<BytesRx> {
        let (server, name) = IpcOneShotServer::<IpcBytesReceiver>::new()?;
        peer.setup(&name, &[])?;
        // Blocks until the child connects (bounded by the slice's watchdog).
        let (_bootstrap, rx) = server.accept()?;
        Ok(BytesRx { rx, size: p.size })
    }

    fn tx(p: &Params, setup: Setup) -> Result<BytesTx> {
        let (tx, rx) = ipc::bytes_channel()?;
        IpcSender::<IpcBytesReceiver>::connect(setup.text)?.send(rx)?;
        Ok(BytesTx {
            tx,
            msg: Payload::new(p.size),
        })
    }
}
