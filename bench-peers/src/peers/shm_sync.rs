//! shared_memory + raw_sync: a named POSIX segment (shared_memory) holding two raw_sync events
//! and one message slot. These crates are building blocks, not a channel: they give a segment
//! and events, and the user writes the protocol. The plainest protocol on them is a mailbox:
//! the sender waits for "empty", writes the message into the slot, signals "full"; the receiver
//! waits for "full", checks the message in place, signals "empty". One hand-over per message.
//!
//! Left out of the 64-byte case: there a one-slot mailbox measures two hand-overs per message
//! (a round trip), and a ring of our own on their segment would measure our ring, not theirs.
//!
//! The events are raw_sync's `BusyEvent` (an atomic flag, spun on): with both processes pinned
//! to their own CPU it beats `Event` (a process-shared pthread condition variable) — see the
//! README. raw_sync signals `BusyEvent` with relaxed atomics, so the data is ordered by fences
//! around it (`crate::raw::Event`).

use shared_memory::{Shmem, ShmemConf};

use super::{OneWay, Result, Rx, Tx};
use crate::ctl::{Params, Peer, Setup};
use crate::proto::{Payload, verify};
use crate::raw::{Event, EventKind, event_size, shm_read, shm_write};

const fn kind(busy: bool) -> EventKind {
    if busy {
        EventKind::Busy
    } else {
        EventKind::Cond
    }
}

/// Offsets: the "full" event, the "empty" event, then the slot on its own cache line.
fn layout(kind: EventKind) -> (usize, usize, usize) {
    let e = event_size(kind).next_multiple_of(64);
    (0, e, 2 * e)
}

fn seg_len(kind: EventKind, p: &Params) -> usize {
    layout(kind).2 + p.size
}

/// The sending end.
pub struct ShmSyncTx {
    full: Event,
    empty: Event,
    seg: Shmem,
    slot: usize,
    msg: Payload,
}

impl Tx for ShmSyncTx {
    #[inline]
    fn send(&mut self, seq: u64) -> Result<()> {
        self.empty.wait()?;
        shm_write(&self.seg, self.slot, self.msg.fill(seq))?;
        self.full.set()
    }
}

/// The receiving end.
pub struct ShmSyncRx {
    full: Event,
    empty: Event,
    seg: Shmem,
    slot: usize,
    size: usize,
}

impl Rx for ShmSyncRx {
    #[inline]
    fn recv(&mut self, seq: u64) -> Result<()> {
        self.full.wait()?;
        shm_read(&self.seg, self.slot, self.size, |m| {
            Ok(verify(m, seq, self.size)?)
        })?;
        self.empty.set()
    }
}

/// shared_memory 0.12 + raw_sync 0.1, one-slot mailbox, with `BusyEvent`s (`BUSY`) or
/// `Event`s (pthread condition variables).
#[derive(Debug)]
pub struct ShmSync<const BUSY: bool>;

impl<const BUSY: bool> OneWay for ShmSync<BUSY> {
    const NAME: &'static str = if BUSY {
        "shared_memory+raw_sync"
    } else {
        "shared_memory+raw_sync (Event)"
    };
    const KEY: &'static str = if BUSY { "shm-sync" } else { "shm-sync-cond" };
    type Tx = ShmSyncTx;
    type Rx = ShmSyncRx;

    fn rx(p: &Params, peer: &mut Peer) -> Result<ShmSyncRx> {
        let id = ipc_testkit::unique("peers-shmsync");
        // The owner (this process) unlinks the segment on drop.
        let seg = ShmemConf::new()
            .size(seg_len(kind(BUSY), p))
            .os_id(&id)
            .create()?;
        let (f, e, slot) = layout(kind(BUSY));
        let full = Event::create(&seg, f, kind(BUSY))?;
        let empty = Event::create(&seg, e, kind(BUSY))?;
        empty.set()?; // the slot starts empty
        peer.setup(&id, &[])?;
        Ok(ShmSyncRx {
            full,
            empty,
            seg,
            slot,
            size: p.size,
        })
    }

    fn tx(p: &Params, setup: Setup) -> Result<ShmSyncTx> {
        let seg = ShmemConf::new().os_id(&setup.text).open()?;
        if seg.len() < seg_len(kind(BUSY), p) {
            return Err(format!("segment of {} bytes", seg.len()).into());
        }
        let (f, e, slot) = layout(kind(BUSY));
        Ok(ShmSyncTx {
            full: Event::open(&seg, f, kind(BUSY))?,
            empty: Event::open(&seg, e, kind(BUSY))?,
            seg,
            slot,
            msg: Payload::new(p.size),
        })
    }
}
