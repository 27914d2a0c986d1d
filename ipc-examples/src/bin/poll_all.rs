//! One process, four mechanisms, one `poll` call.
//!
//! Every descriptor-based mechanism of the workspace can wait in the same `poll(2)`: an
//! anonymous pipe, a FIFO, a POSIX message queue (on Linux its descriptor is pollable) and an
//! eventfd semaphore. Four child processes each send ROUNDS events through one of them; the
//! parent waits for all four kinds at once and checks every event that arrived. The same
//! descriptors could be registered with epoll or an async runtime's fd adapter.
//!
//! One `unsafe` call, in the pipe child: claiming the write end the parent placed at
//! descriptor 3 (`PipeWriter::from_inherited`). Only the program itself can promise that
//! nothing else in it owns that number, as with `FromRawFd`.
#![deny(unsafe_code)]

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use ipc_examples::{DemoError, Family, demo_name, ensure, role, run, say, spawn_role};
use ipc_fifo::{Fifo, FifoReader, FifoWriter, KeepAlive, PrivateDir, RecordReader};
use ipc_mq::{Access, MessageQueue};
use ipc_pipe::{ChildFds, PipeWriter};
use ipc_sem::EventSemaphore;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

const ROUNDS: u32 = 3;
const QUEUE_ENV: &str = "IPC_DEMO_QUEUE";
const FIFO_ENV: &str = "IPC_DEMO_FIFO";
/// The descriptor number at which the pipe's write end reaches its child.
const PIPE_FD: i32 = 3;
/// How long the whole exchange may take.
const LIMIT: Duration = Duration::from_secs(10);

/// The children: each sends ROUNDS events through its mechanism, then exits.
fn child(role: &str) -> Result<(), DemoError> {
    match role {
        "pipe" => {
            #[allow(unsafe_code)]
            // SAFETY: the parent placed the pipe's write end at PIPE_FD (`ChildFds`), and
            // nothing else in this process owns that number: it is claimed once, here.
            let w = unsafe { PipeWriter::from_inherited(PIPE_FD) }?;
            for k in 1..=ROUNDS {
                w.write_atomic(format!("pipe {k}\n").as_bytes())?;
            }
        }
        "fifo" => {
            let w = FifoWriter::open_timeout(std::env::var(FIFO_ENV)?, LIMIT)?;
            for k in 1..=ROUNDS {
                w.write_record(format!("fifo {k}").as_bytes())?;
            }
        }
        "mq" => {
            let q = MessageQueue::open(&std::env::var(QUEUE_ENV)?, Access::Send)?;
            for k in 1..=ROUNDS {
                q.send_timeout(format!("mq {k}").as_bytes(), k, LIMIT)?;
            }
        }
        "eventfd" => {
            // The eventfd arrived as this process's standard input.
            let fd: OwnedFd = std::io::stdin().as_fd().try_clone_to_owned()?;
            let ev = EventSemaphore::from(fd);
            for _ in 0..ROUNDS {
                ev.post()?;
            }
        }
        other => return Err(format!("unknown role {other}").into()),
    }
    say!(role, "sent {ROUNDS} events");
    Ok(())
}

fn body() -> Result<String, DemoError> {
    let (pipe_r, pipe_w) = ipc_pipe::pipe()?;
    let dir = PrivateDir::new("ipcrs-demo-poll")?;
    let fifo = Fifo::create(dir.join("events")?)?;
    // Keep-alive: the reader holds a write end itself, so it opens at once and never sees a
    // false end-of-file before (or after) its writer.
    let mut fifo_r = RecordReader::new(
        FifoReader::options()
            .keep_alive(KeepAlive::On)
            .try_open(fifo.path())?,
    );
    let queue_name = demo_name("poll");
    let queue = MessageQueue::options()
        .max_messages(ROUNDS.into())
        .message_size(64)
        .create(&queue_name)?;
    let ev = EventSemaphore::new(0)?;
    say!(
        "parent",
        "made a pipe, the FIFO {}, the queue {} and an eventfd semaphore",
        fifo.path().display(),
        queue_name
    );

    let mut children = Family::new();
    let mut cmd = spawn_role("pipe")?;
    ChildFds::new().fd_at(PIPE_FD, pipe_w).apply(&mut cmd)?;
    children.add("the pipe child", cmd.spawn()?);
    // The command owns our copy of the write end: drop it, or the pipe never reaches EOF.
    drop(cmd);
    children.add(
        "the fifo child",
        spawn_role("fifo")?.env(FIFO_ENV, fifo.path()).spawn()?,
    );
    children.add(
        "the mq child",
        spawn_role("mq")?.env(QUEUE_ENV, &queue_name).spawn()?,
    );
    children.add(
        "the eventfd child",
        spawn_role("eventfd")?
            .stdin(Stdio::from(OwnedFd::from(ev.try_clone()?)))
            .spawn()?,
    );
    say!(
        "parent",
        "started 4 children; now one poll() waits on all four descriptors"
    );

    let mut pipe_r = Some(pipe_r);
    let mut pipe_text = String::new();
    let (mut fifo_got, mut mq_got, mut ev_got) = (Vec::new(), Vec::new(), 0u32);
    let mut polls = 0;
    let deadline = Instant::now() + LIMIT;
    let done = |pipe_open: bool, f: usize, m: usize, e: u32| {
        !pipe_open && f == ROUNDS as usize && m == ROUNDS as usize && e == ROUNDS
    };
    while !done(pipe_r.is_some(), fifo_got.len(), mq_got.len(), ev_got) {
        let left = deadline.saturating_duration_since(Instant::now());
        ensure(!left.is_zero(), "timed out waiting for events")?;
        let mut fds = vec![
            PollFd::new(fifo_r.get_ref().as_fd(), PollFlags::POLLIN),
            PollFd::new(queue.as_fd(), PollFlags::POLLIN),
            PollFd::new(ev.as_fd(), PollFlags::POLLIN),
        ];
        if let Some(p) = &pipe_r {
            fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
        }
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let n = poll(&mut fds, PollTimeout::from(ms))?;
        polls += 1;
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        say!("parent", "poll #{polls}: {n} descriptor(s) ready");
        if ready[0] {
            loop {
                match fifo_r.try_recv() {
                    Ok(Some(rec)) => {
                        let rec = String::from_utf8_lossy(rec).into_owned();
                        say!("parent", "  FIFO: {rec:?}");
                        fifo_got.push(rec);
                    }
                    Ok(None) | Err(ipc_fifo::Error::WouldBlock) => break,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        if ready[1] {
            while let Ok((msg, prio)) = queue.try_receive_vec() {
                let msg = String::from_utf8_lossy(&msg).into_owned();
                say!("parent", "  queue: {msg:?} (priority {prio})");
                mq_got.push(msg);
            }
        }
        if ready[2] {
            while ev.try_wait().is_ok() {
                ev_got += 1;
                say!("parent", "  eventfd: one post (total {ev_got})");
            }
        }
        if ready.get(3) == Some(&true) {
            let mut buf = [0u8; 256];
            let p = pipe_r.as_ref().ok_or("pipe gone")?;
            let n = (&*p).read(&mut buf)?;
            if n == 0 {
                say!("parent", "  pipe: end of file (its writer exited)");
                pipe_r = None;
            } else {
                let s = String::from_utf8_lossy(&buf[..n]);
                say!("parent", "  pipe: {:?}", s.trim_end());
                pipe_text.push_str(&s);
            }
        }
    }
    children.wait_all()?;

    let want =
        |kind: &str| -> Vec<String> { (1..=ROUNDS).map(|k| format!("{kind} {k}")).collect() };
    let pipe_lines: Vec<String> = pipe_text.lines().map(str::to_owned).collect();
    ensure(
        pipe_lines == want("pipe"),
        format!("pipe delivered {pipe_lines:?}"),
    )?;
    ensure(
        fifo_got == want("fifo"),
        format!("FIFO delivered {fifo_got:?}"),
    )?;
    let mut mq_sorted = mq_got.clone();
    mq_sorted.sort();
    ensure(
        mq_sorted == want("mq"),
        format!("queue delivered {mq_got:?}"),
    )?;
    Ok(format!(
        "{} events from 4 mechanisms arrived whole through {polls} poll calls",
        4 * ROUNDS
    ))
}

fn main() -> ExitCode {
    if let Some(r) = role() {
        return match child(&r) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                say!(&r, "failed: {e}");
                ExitCode::FAILURE
            }
        };
    }
    run(
        "poll_all",
        "one process waits on a pipe, a FIFO, a POSIX queue and an eventfd with one poll call",
        body,
    )
}
