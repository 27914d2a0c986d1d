//! The bounded buffer (producer/consumer) in a named shared-memory segment.
//!
//! The textbook solution with three semaphores: `empty` counts free slots (starts at SLOTS),
//! `full` counts filled slots (starts at 0), and `mutex` (a binary semaphore) guards the `in` and
//! `out` indices. A producer waits on `empty`, takes the mutex, writes its item at `in`, advances
//! `in`, releases the mutex and posts `full`; a consumer does the mirror image. When every
//! producer is done, the parent puts one "stop" item per consumer through the same protocol.
//!
//! Every item carries its producer, a sequence number and a checksum; consumers check each one
//! and tick it off in a table in the same segment, and the parent checks that every item was
//! consumed exactly once. Waits have time-outs, so a dead peer is an error, not a hang.
#![forbid(unsafe_code)]

use std::process::{Child, ExitCode};

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use ipc_examples::{DemoError, Family, demo_name, ensure, role, run, say, spawn_role};
use ipc_sem::NamedSemaphore;
use ipc_shm::Shm;

const SLOTS: usize = 8;
const PRODUCERS: u32 = 2;
const CONSUMERS: u32 = 2;
const ITEMS: u32 = 2_000;
const ITEM_LEN: usize = 64;
/// Segment layout: in, out (u64 each), then the slots, then one tick counter per item.
const IN_AT: usize = 0;
const OUT_AT: usize = 8;
const SLOTS_AT: usize = 64;
const TICKS_AT: usize = SLOTS_AT + SLOTS * ITEM_LEN;
const SEGMENT_LEN: usize = TICKS_AT + (PRODUCERS * ITEMS) as usize * 4;
/// The producer id of a stop item.
const STOP: u32 = u32::MAX;
const WAIT: Duration = Duration::from_secs(10);

const NAME_ENV: &str = "IPC_DEMO_BB";
const ID_ENV: &str = "IPC_DEMO_ID";

/// The shared state, as each process sees it.
struct Buffer {
    shm: Shm,
    empty: NamedSemaphore,
    full: NamedSemaphore,
    mutex: NamedSemaphore,
}

fn names(base: &str) -> [String; 4] {
    ["data", "empty", "full", "mutex"].map(|n| format!("{base}-{n}"))
}

/// An item: producer, seq, 48 payload bytes derived from both, FNV-1a of the first 56 bytes.
fn item(producer: u32, seq: u32) -> [u8; ITEM_LEN] {
    let mut it = [0u8; ITEM_LEN];
    it[0..4].copy_from_slice(&producer.to_le_bytes());
    it[4..8].copy_from_slice(&seq.to_le_bytes());
    for (i, b) in it[8..56].iter_mut().enumerate() {
        *b = (producer ^ seq.wrapping_mul(31) ^ i as u32) as u8;
    }
    let sum = checksum(&it[..56]);
    it[56..].copy_from_slice(&sum.to_le_bytes());
    it
}

fn checksum(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl Buffer {
    fn put(&self, it: &[u8; ITEM_LEN]) -> Result<(), DemoError> {
        self.empty.wait_timeout(WAIT)?;
        {
            let _m = self.mutex.acquire_timeout(WAIT)?;
            let pos = self.shm.atomic::<AtomicU64>(IN_AT)?;
            let i = pos.load(Ordering::Relaxed);
            self.shm
                .write_bytes(SLOTS_AT + (i as usize % SLOTS) * ITEM_LEN, it)?;
            pos.store(i + 1, Ordering::Relaxed);
        }
        self.full.post()?;
        Ok(())
    }

    fn take(&self) -> Result<[u8; ITEM_LEN], DemoError> {
        self.full.wait_timeout(WAIT)?;
        let mut it = [0u8; ITEM_LEN];
        {
            let _m = self.mutex.acquire_timeout(WAIT)?;
            let pos = self.shm.atomic::<AtomicU64>(OUT_AT)?;
            let i = pos.load(Ordering::Relaxed);
            self.shm
                .read_bytes(SLOTS_AT + (i as usize % SLOTS) * ITEM_LEN, &mut it)?;
            pos.store(i + 1, Ordering::Relaxed);
        }
        self.empty.post()?;
        Ok(it)
    }
}

fn open_buffer() -> Result<Buffer, DemoError> {
    let [data, empty, full, mutex] = names(&std::env::var(NAME_ENV)?);
    Ok(Buffer {
        shm: Shm::open(&data, SEGMENT_LEN as u64)?,
        empty: NamedSemaphore::open(&empty)?,
        full: NamedSemaphore::open(&full)?,
        mutex: NamedSemaphore::open(&mutex)?,
    })
}

fn producer() -> Result<(), DemoError> {
    let id: u32 = std::env::var(ID_ENV)?.parse()?;
    let buf = open_buffer()?;
    for seq in 0..ITEMS {
        buf.put(&item(id, seq))?;
    }
    say!("producer", "put {ITEMS} items");
    Ok(())
}

fn consumer() -> Result<(), DemoError> {
    let buf = open_buffer()?;
    let mut got = 0;
    loop {
        let it = buf.take()?;
        let producer = u32::from_le_bytes(it[0..4].try_into()?);
        if producer == STOP {
            break;
        }
        let seq = u32::from_le_bytes(it[4..8].try_into()?);
        ensure(
            producer < PRODUCERS && seq < ITEMS && it == item(producer, seq),
            format!("torn or foreign item (producer {producer}, seq {seq})"),
        )?;
        buf.shm
            .atomic::<AtomicU32>(TICKS_AT + ((producer * ITEMS + seq) as usize) * 4)?
            .fetch_add(1, Ordering::Relaxed);
        got += 1;
    }
    say!("consumer", "took {got} items, every checksum right");
    Ok(())
}

fn body() -> Result<String, DemoError> {
    let base = demo_name("bb");
    let [data, empty, full, mutex] = names(&base);
    let buf = Buffer {
        shm: Shm::create(&data, SEGMENT_LEN as u64)?,
        empty: NamedSemaphore::create(&empty, SLOTS as u32)?,
        full: NamedSemaphore::create(&full, 0)?,
        mutex: NamedSemaphore::create(&mutex, 1)?,
    };
    say!(
        "parent",
        "a {SLOTS}-slot buffer in {data}; semaphores empty={SLOTS}, full=0, mutex=1"
    );
    let spawn = |role: &str, id: u32| -> Result<Child, DemoError> {
        Ok(spawn_role(role)?
            .env(NAME_ENV, &base)
            .env(ID_ENV, id.to_string())
            .spawn()?)
    };
    // If anything fails, dropping a Family kills and reaps its members: no orphans.
    let mut consumers = Family::new();
    for i in 0..CONSUMERS {
        consumers.add(format!("consumer {i}"), spawn("consumer", i)?);
    }
    let mut producers = Family::new();
    for i in 0..PRODUCERS {
        producers.add(format!("producer {i}"), spawn("producer", i)?);
    }
    say!(
        "parent",
        "{PRODUCERS} producers x {ITEMS} items, {CONSUMERS} consumers started"
    );
    producers.wait_all()?;
    say!("parent", "producers done: one stop item per consumer");
    for _ in 0..CONSUMERS {
        let mut stop = [0u8; ITEM_LEN];
        stop[0..4].copy_from_slice(&STOP.to_le_bytes());
        buf.put(&stop)?;
    }
    consumers.wait_all()?;

    let ticks = buf
        .shm
        .read_vec::<u32>(TICKS_AT, (PRODUCERS * ITEMS) as usize)?;
    let missing = ticks.iter().filter(|&&t| t == 0).count();
    let twice = ticks.iter().filter(|&&t| t > 1).count();
    ensure(
        missing == 0 && twice == 0,
        format!("{missing} items never consumed, {twice} consumed more than once"),
    )?;
    ensure(
        buf.full.value()? == 0 && buf.empty.value()? == SLOTS as u32,
        "the semaphores do not show an empty buffer at the end",
    )?;
    Ok(format!(
        "{} items through {SLOTS} slots, each consumed exactly once and intact",
        PRODUCERS * ITEMS
    ))
}

fn main() -> ExitCode {
    let outcome = match role().as_deref() {
        Some("producer") => producer(),
        Some("consumer") => consumer(),
        Some(other) => Err(format!("unknown role {other}").into()),
        None => {
            return run(
                "shm_bounded_buffer",
                "producers and consumers share a bounded buffer in shared memory, guarded by empty/full/mutex semaphores",
                body,
            );
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            say!("child", "failed: {e}");
            ExitCode::FAILURE
        }
    }
}
