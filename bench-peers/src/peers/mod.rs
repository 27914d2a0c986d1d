//! The contenders, each in its own module, behind the same two protocols.
//!
//! One way ([`OneWay`]): the parent creates the channel and receives; the child opens it,
//! connects its end and says `R`; the parent connects its end and says `C`; the child sends
//! `warm` messages, waits for `G`, sends `count` messages; the parent times from `G` to the last
//! message (so the channel starts the timed part empty), checking every message.
//!
//! Round trip ([`RoundTrip`]): the parent sends message `k` and waits for the child's message
//! `k` back, timing each; the child checks each message it receives before it answers.
//!
//! The loops are generic over the contender (no dynamic call per message).

use std::time::Instant;

use crate::ctl::{Ctl, Params, Peer, Setup};

pub mod ice;
pub mod ipc_channel;
pub mod ipmpsc;
pub mod mq;
pub mod pipes;
pub mod ring;
pub mod shm_sync;
pub mod shmem_ipc;
pub mod spsc;

/// Errors of a slice: anything, with a message.
pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// A sending end.
pub trait Tx {
    /// Sends message `seq` (a [`crate::proto::Payload`] of the slice's size).
    ///
    /// # Errors
    /// The contender's error.
    fn send(&mut self, seq: u64) -> Result<()>;

    /// Called once both processes have made their ends, before the first message: completes
    /// the connection where a contender needs that (iceoryx2).
    ///
    /// # Errors
    /// The contender's error.
    fn connect(&mut self) -> Result<()> {
        Ok(())
    }

    /// Makes everything sent so far visible to the receiver (for protocols that publish in
    /// batches).
    ///
    /// # Errors
    /// The contender's error.
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

/// A receiving end.
pub trait Rx {
    /// Receives the next message and checks that it is message `seq`, reading every byte.
    ///
    /// # Errors
    /// The contender's error, or a [`crate::proto::Mismatch`].
    fn recv(&mut self, seq: u64) -> Result<()>;

    /// As [`Tx::connect`].
    ///
    /// # Errors
    /// The contender's error.
    fn connect(&mut self) -> Result<()> {
        Ok(())
    }
}

/// A one-way channel between two processes.
pub trait OneWay {
    /// The contender's name in the tables.
    const NAME: &'static str;
    /// Its key (the child's role, the command line).
    const KEY: &'static str;
    /// The sending end (in the child).
    type Tx: Tx;
    /// The receiving end (in the parent).
    type Rx: Rx;
    /// In the parent: creates the channel, hands the child what it needs
    /// ([`Peer::setup`]) and returns the receiving end.
    ///
    /// # Errors
    /// The contender's error.
    fn rx(p: &Params, peer: &mut Peer) -> Result<Self::Rx>;
    /// In the child: opens the sending end.
    ///
    /// # Errors
    /// The contender's error.
    fn tx(p: &Params, setup: Setup) -> Result<Self::Tx>;
}

/// A pair of channels for round trips.
pub trait RoundTrip {
    /// The contender's name in the tables.
    const NAME: &'static str;
    /// Its key.
    const KEY: &'static str;
    /// The sending end (one in each process).
    type Tx: Tx;
    /// The receiving end (one in each process).
    type Rx: Rx;
    /// In the parent: creates both channels, sets the child up, returns the parent's ends.
    ///
    /// # Errors
    /// The contender's error.
    fn parent(p: &Params, peer: &mut Peer) -> Result<(Self::Tx, Self::Rx)>;
    /// In the child: opens the child's ends.
    ///
    /// # Errors
    /// The contender's error.
    fn child(p: &Params, setup: Setup) -> Result<(Self::Tx, Self::Rx)>;
}

/// What one slice measured.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A one-way slice: seconds for the timed messages.
    Secs(f64),
    /// A round-trip slice: each timed round trip, in ns.
    RoundTrips(Vec<u64>),
}

/// A contender, type-erased: how to run a slice and how to play its child.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    /// Its name in the tables.
    pub name: &'static str,
    /// Its key.
    pub key: &'static str,
    /// Runs one slice (in the parent).
    pub run: fn(&Params) -> Result<Outcome>,
    /// Plays the child.
    pub child: fn(&Params, Ctl) -> Result<()>,
}

fn one_way<C: OneWay>() -> Entry {
    Entry {
        name: C::NAME,
        key: C::KEY,
        run: run_one_way::<C>,
        child: child_one_way::<C>,
    }
}

fn round_trip<C: RoundTrip>() -> Entry {
    Entry {
        name: C::NAME,
        key: C::KEY,
        run: run_round_trip::<C>,
        child: child_round_trip::<C>,
    }
}

/// Every one-way contender.
pub fn one_way_entries() -> Vec<Entry> {
    vec![
        one_way::<ring::RingC>(),
        one_way::<shmem_ipc::ShmemIpc>(),
        one_way::<ice::Ice>(),
        one_way::<ipmpsc::Ipmpsc>(),
        one_way::<shm_sync::ShmSync<true>>(),
        one_way::<shm_sync::ShmSync<false>>(),
        one_way::<spsc::Spsc64>(),
        one_way::<pipes::Framed<false>>(),
        one_way::<pipes::Framed<true>>(),
        one_way::<ipc_channel::Bytes>(),
        one_way::<pipes::StdPipe<false>>(),
        one_way::<pipes::StdPipe<true>>(),
        one_way::<pipes::OsPipe>(),
        one_way::<mq::IpcMq>(),
        one_way::<mq::PosixMq>(),
    ]
}

/// Every round-trip contender.
pub fn round_trip_entries() -> Vec<Entry> {
    vec![
        round_trip::<ring::RingSpin>(),
        round_trip::<spsc::SpinRing>(),
        round_trip::<ice::Ice>(),
        round_trip::<mq::IpcMq>(),
        round_trip::<mq::PosixMq>(),
    ]
}

/// The child of a one-way slice plays `1:KEY`, of a round trip `2:KEY`.
pub fn role(kind: u8, key: &str) -> String {
    format!("{kind}:{key}")
}

/// Plays the child `role`.
///
/// # Errors
/// An unknown role, or the contender's error.
pub fn play(role: &str, p: &Params, ctl: Ctl) -> Result<()> {
    let (list, key) = match role.split_once(':') {
        Some(("1", key)) => (one_way_entries(), key),
        Some(("2", key)) => (round_trip_entries(), key),
        _ => return Err(format!("unknown role {role:?}").into()),
    };
    let e = list
        .iter()
        .find(|e| e.key == key)
        .ok_or_else(|| format!("unknown contender {key:?}"))?;
    (e.child)(p, ctl)
}

fn run_one_way<C: OneWay>(p: &Params) -> Result<Outcome> {
    let mut peer = Peer::spawn(&role(1, C::KEY), p)?;
    let mut rx = C::rx(p, &mut peer)?;
    peer.wait_ready()?;
    rx.connect()?;
    peer.connected()?;
    for seq in 0..p.warm {
        rx.recv(seq)?;
    }
    let t0 = Instant::now();
    peer.go()?;
    for seq in p.warm..p.total() {
        rx.recv(seq)?;
    }
    let secs = t0.elapsed().as_secs_f64();
    peer.finish()?;
    drop(rx);
    Ok(Outcome::Secs(secs))
}

fn child_one_way<C: OneWay>(p: &Params, mut ctl: Ctl) -> Result<()> {
    let setup = ctl.setup()?;
    let mut tx = C::tx(p, setup)?;
    tx.connect()?;
    ctl.ready()?;
    ctl.wait(b'C')?;
    for seq in 0..p.warm {
        tx.send(seq)?;
    }
    tx.flush()?;
    ctl.wait(b'G')?;
    for seq in p.warm..p.total() {
        tx.send(seq)?;
    }
    tx.flush()?;
    // Keep the channel open until the parent has everything (some peers drop what a departed
    // sender left unread).
    ctl.wait(b'D')?;
    drop(tx);
    Ok(())
}

fn run_round_trip<C: RoundTrip>(p: &Params) -> Result<Outcome> {
    let mut peer = Peer::spawn(&role(2, C::KEY), p)?;
    let (mut tx, mut rx) = C::parent(p, &mut peer)?;
    peer.wait_ready()?;
    rx.connect()?;
    tx.connect()?;
    peer.connected()?;
    for seq in 0..p.warm {
        tx.send(seq)?;
        tx.flush()?;
        rx.recv(seq)?;
    }
    let mut samples = Vec::with_capacity(p.count as usize);
    for seq in p.warm..p.total() {
        let t = ipc_testkit::bench::now_ns();
        tx.send(seq)?;
        tx.flush()?;
        rx.recv(seq)?;
        samples.push(ipc_testkit::bench::now_ns() - t);
    }
    peer.finish()?;
    drop((tx, rx));
    Ok(Outcome::RoundTrips(samples))
}

fn child_round_trip<C: RoundTrip>(p: &Params, mut ctl: Ctl) -> Result<()> {
    let setup = ctl.setup()?;
    let (mut tx, mut rx) = C::child(p, setup)?;
    rx.connect()?;
    tx.connect()?;
    ctl.ready()?;
    ctl.wait(b'C')?;
    for seq in 0..p.total() {
        rx.recv(seq)?;
        tx.send(seq)?;
        tx.flush()?;
    }
    ctl.wait(b'D')?;
    drop((tx, rx));
    Ok(())
}
