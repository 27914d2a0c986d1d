//! Managing many processes at once: a supervisor and a pool of worker processes.
//!
//! Every mechanism has its job:
//! - **tasks** go out through a POSIX message queue (any idle worker takes the next one);
//! - **bulk data** lives in a shared-memory segment: each task's 4 KiB input, and its result and
//!   run count written back in place;
//! - **completion** is signalled with an eventfd semaphore, which the supervisor polls together
//!   with the workers' control pipes;
//! - **control** (start, go, status, stop) goes over a pair of pipes per worker.
//!
//! The supervisor kills one worker with SIGKILL in the middle of a task (after the worker has
//! taken it from the queue, before it commits), notices with `waitpid`, starts a replacement and
//! puts the task back in the queue. A worker that dies for any other reason is handled the same
//! way. At the end every task has run exactly once with the right result, and every object is
//! gone.
//!
//! Exactly once: a worker *commits* a task by storing its result and then incrementing the
//! task's run count in shared memory. When a worker dies holding a task, the supervisor re-queues
//! the task only if its run count is still zero.
//!
//! One `unsafe` call, in the worker: claiming the control duplex that the supervisor placed at
//! descriptors 3 and 4 (`Duplex::from_inherited`). Only the program itself can promise that
//! nothing else in it owns those numbers, as with `FromRawFd`.
#![deny(unsafe_code)]

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Child, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ipc_examples::{DemoError, demo_name, ensure, role, run, say, spawn_role};
use ipc_mq::{Access, MessageQueue};
use ipc_pipe::Duplex;
use ipc_sem::EventSemaphore;
use ipc_shm::Shm;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

const WORKERS: usize = 3;
const TASKS: usize = 24;
const INPUT_LEN: usize = 4096;
/// Where the results start: per task, an 8-byte result and an 8-byte run count.
const OUT_BASE: usize = TASKS * INPUT_LEN;
const SEGMENT_LEN: usize = OUT_BASE + TASKS * 16;
/// The task whose worker the supervisor kills mid-task.
const VICTIM: u32 = 7;
/// How long the whole pool may take.
const LIMIT: Duration = Duration::from_secs(30);
/// The control pipe's descriptors in a worker.
const CTL_IN: i32 = 3;
const CTL_OUT: i32 = 4;

const SHM_ENV: &str = "IPC_DEMO_SHM";
const QUEUE_ENV: &str = "IPC_DEMO_QUEUE";

fn result_at(k: u32) -> usize {
    OUT_BASE + k as usize * 16
}

/// The work: a checksum of the task's input.
fn compute(input: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in input {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The input of task `k`: bytes anyone can recompute.
fn input_of(k: u32) -> Vec<u8> {
    (0..INPUT_LEN)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).wrapping_add(k * 97) as u8)
        .collect()
}

/// Reads whole lines from a pipe that `poll` said is readable.
#[derive(Default)]
struct Lines {
    buf: Vec<u8>,
}

impl Lines {
    /// One read; the complete lines it finished, or `None` at end of file.
    fn fill(&mut self, mut r: impl Read) -> Result<Option<Vec<String>>, DemoError> {
        let mut chunk = [0u8; 512];
        let n = r.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        self.buf.extend_from_slice(&chunk[..n]);
        let mut out = Vec::new();
        while let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=i).collect();
            out.push(String::from_utf8_lossy(&line[..i]).into_owned());
        }
        Ok(Some(out))
    }

    /// A whole line that an earlier read already brought in, if any.
    fn buffered(&mut self) -> Option<String> {
        let i = self.buf.iter().position(|&b| b == b'\n')?;
        let line: Vec<u8> = self.buf.drain(..=i).collect();
        Some(String::from_utf8_lossy(&line[..i]).into_owned())
    }

    /// Blocks until one whole line arrives (`None` at end of file).
    fn next_line(&mut self, mut r: impl Read) -> Result<Option<String>, DemoError> {
        loop {
            if let Some(line) = self.buffered() {
                return Ok(Some(line));
            }
            let mut chunk = [0u8; 512];
            let n = r.read(&mut chunk)?;
            if n == 0 {
                return Ok(None);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

// ------------------------------------------------------------------------------------------
// The worker.

/// The worker's control duplex, at the numbers the supervisor placed it.
#[allow(unsafe_code)]
fn control() -> Result<Duplex, DemoError> {
    // SAFETY: the supervisor placed this worker's control pipes at CTL_IN and CTL_OUT
    // (`Duplex::attach_at`), and nothing else in this process owns those numbers: the worker
    // claims them once, first thing.
    Ok(unsafe { Duplex::from_inherited(CTL_IN, CTL_OUT) }?)
}

fn worker() -> Result<(), DemoError> {
    let ctl = control()?;
    // The completion semaphore arrived as standard input.
    let done = EventSemaphore::from(std::io::stdin().as_fd().try_clone_to_owned()?);
    let shm = Shm::open(&std::env::var(SHM_ENV)?, SEGMENT_LEN as u64)?;
    let tasks = MessageQueue::open(&std::env::var(QUEUE_ENV)?, Access::Receive)?;
    let mut lines = Lines::default();
    let mut finished = 0u64;
    let mut input = vec![0u8; INPUT_LEN];
    let mut msg = [0u8; 16];
    ensure(
        lines.next_line(ctl.reader())?.as_deref() == Some("start"),
        "expected start",
    )?;
    say!("worker", "started");
    loop {
        // A control line may already be buffered (read together with an earlier one): poll
        // would not report it again.
        let buffered = lines.buffered();
        let (ctl_ready, task_ready) = if buffered.is_some() {
            (true, false)
        } else {
            let mut fds = [
                PollFd::new(ctl.reader().as_fd(), PollFlags::POLLIN),
                PollFd::new(tasks.as_fd(), PollFlags::POLLIN),
            ];
            poll(&mut fds, PollTimeout::NONE)?;
            (
                fds[0].revents().is_some_and(|r| !r.is_empty()),
                fds[1].revents().is_some_and(|r| !r.is_empty()),
            )
        };
        if ctl_ready {
            let line = match buffered {
                Some(l) => Some(l),
                None => lines.next_line(ctl.reader())?,
            };
            match line.as_deref() {
                Some("status") => writeln!(ctl.writer(), "status {finished}")?,
                Some("stop") | None => {
                    say!("worker", "stopping after {finished} task(s)");
                    writeln!(ctl.writer(), "bye")?;
                    return Ok(());
                }
                Some(other) => return Err(format!("unexpected control {other:?}").into()),
            }
            continue;
        }
        if !task_ready {
            continue;
        }
        // Another worker may have taken it first.
        let Ok((n, _)) = tasks.try_receive(&mut msg) else {
            continue;
        };
        ensure(n == 4, format!("task message of {n} bytes"))?;
        let k = u32::from_le_bytes([msg[0], msg[1], msg[2], msg[3]]);
        ensure((k as usize) < TASKS, format!("task {k} out of range"))?;
        // Take the lease: the supervisor answers "go" (or kills us).
        writeln!(ctl.writer(), "took {k}")?;
        ensure(
            lines.next_line(ctl.reader())?.as_deref() == Some("go"),
            "expected go",
        )?;
        shm.read_bytes(k as usize * INPUT_LEN, &mut input)?;
        let r = compute(&input);
        shm.atomic::<AtomicU64>(result_at(k))?
            .store(r, Ordering::Release);
        shm.atomic::<AtomicU64>(result_at(k) + 8)?
            .fetch_add(1, Ordering::AcqRel);
        finished += 1;
        done.post()?;
    }
}

// ------------------------------------------------------------------------------------------
// The supervisor.

struct Worker {
    child: Child,
    ctl: Duplex,
    lines: Lines,
    holding: Option<u32>,
}

/// A worker the supervisor lets go of (it returns early, say, on an error) is stopped and
/// reaped, so none outlives the demo; one already reaped is left as it is.
impl Drop for Worker {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

struct Pool {
    shm_name: String,
    queue_name: String,
    done: EventSemaphore,
}

impl Pool {
    fn start_worker(&self) -> Result<Worker, DemoError> {
        let (ours, theirs) = ipc_pipe::duplex()?;
        let mut cmd = spawn_role("worker")?;
        cmd.env(SHM_ENV, &self.shm_name)
            .env(QUEUE_ENV, &self.queue_name)
            .stdin(Stdio::from(OwnedFd::from(self.done.try_clone()?)));
        theirs.attach_at(&mut cmd, CTL_IN, CTL_OUT)?;
        let child = cmd.spawn()?;
        // The command holds the child's ends: drop them so a dead worker means end of file.
        drop(cmd);
        tell(&ours, "start")?;
        say!("supervisor", "started worker {}", child.id());
        Ok(Worker {
            child,
            ctl: ours,
            lines: Lines::default(),
            holding: None,
        })
    }
}

/// Sends a control line to a worker. A worker that died meanwhile is not an error here: its
/// control pipe reports end of file at the next poll, and the supervisor handles the death there.
fn tell(ctl: &Duplex, line: &str) -> Result<(), DemoError> {
    match writeln!(ctl.writer(), "{line}") {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

fn runs(shm: &Shm, k: u32) -> Result<u64, DemoError> {
    Ok(shm
        .atomic::<AtomicU64>(result_at(k) + 8)?
        .load(Ordering::Acquire))
}

fn body() -> Result<String, DemoError> {
    let pool = Pool {
        shm_name: demo_name("pool-data"),
        queue_name: demo_name("pool-tasks"),
        done: EventSemaphore::new(0)?,
    };
    let shm = Shm::create(&pool.shm_name, SEGMENT_LEN as u64)?;
    for k in 0..TASKS as u32 {
        shm.write_bytes(k as usize * INPUT_LEN, &input_of(k))?;
    }
    let queue = MessageQueue::options()
        .max_messages(8)
        .message_size(4)
        .create(&pool.queue_name)?;
    say!(
        "supervisor",
        "{TASKS} tasks of {INPUT_LEN} B in shared memory {}; task queue {}",
        pool.shm_name,
        pool.queue_name
    );
    let mut workers = (0..WORKERS)
        .map(|_| pool.start_worker())
        .collect::<Result<Vec<_>, _>>()?;

    let mut pending: Vec<u32> = (0..TASKS as u32).rev().collect();
    let mut killed = None;
    let mut restarts = 0;
    let deadline = Instant::now() + LIMIT;
    let all_done = |shm: &Shm| -> Result<bool, DemoError> {
        Ok((0..TASKS as u32).all(|k| runs(shm, k).is_ok_and(|r| r >= 1)))
    };
    while !all_done(&shm)? {
        let left = deadline.saturating_duration_since(Instant::now());
        ensure(!left.is_zero(), "the pool did not finish in time")?;
        // One poll: every worker's control pipe, the completion semaphore, and (while tasks
        // wait to go out) room in the queue.
        let mut fds: Vec<PollFd> = workers
            .iter()
            .map(|w| PollFd::new(w.ctl.reader().as_fd(), PollFlags::POLLIN))
            .collect();
        fds.push(PollFd::new(pool.done.as_fd(), PollFlags::POLLIN));
        if !pending.is_empty() {
            fds.push(PollFd::new(queue.as_fd(), PollFlags::POLLOUT));
        }
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        poll(&mut fds, PollTimeout::from(ms))?;
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);

        while pool.done.try_wait().is_ok() {}
        if ready.get(WORKERS + 1) == Some(&true) {
            while let Some(&k) = pending.last() {
                match queue.try_send(&k.to_le_bytes(), 0) {
                    Ok(()) => {
                        pending.pop();
                    }
                    Err(ipc_mq::Error::WouldBlock) => break,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        for i in 0..WORKERS {
            if !ready[i] {
                continue;
            }
            let w = &mut workers[i];
            let Some(lines) = w.lines.fill(w.ctl.reader())? else {
                // End of file: the worker is gone. waitpid says how it ended.
                let status = w.child.wait()?;
                say!(
                    "supervisor",
                    "worker {} died ({status}) holding task {:?}",
                    w.child.id(),
                    w.holding
                );
                if let Some(k) = w.holding {
                    if runs(&shm, k)? == 0 {
                        say!("supervisor", "task {k} never committed: back in the queue");
                        pending.push(k);
                    } else {
                        say!("supervisor", "task {k} was committed before the death");
                    }
                }
                restarts += 1;
                workers[i] = pool.start_worker()?;
                continue;
            };
            for line in lines {
                let Some(k) = line
                    .strip_prefix("took ")
                    .and_then(|k| k.parse::<u32>().ok())
                else {
                    return Err(format!("worker said {line:?}").into());
                };
                w.holding = Some(k);
                if k == VICTIM && killed.is_none() {
                    say!(
                        "supervisor",
                        "worker {} holds task {k}: killing it with SIGKILL mid-task",
                        w.child.id()
                    );
                    killed = Some(w.child.id());
                    w.child.kill()?;
                    // Its end of file arrives at the next poll.
                } else {
                    tell(&w.ctl, "go")?;
                }
            }
        }
    }

    // Status, then stop, over the control pipes.
    let mut reported = 0;
    for w in &mut workers {
        tell(&w.ctl, "status")?;
        let Some(line) = w.lines.next_line(w.ctl.reader())? else {
            // It died after the last task was committed: nothing is left to re-do.
            let status = w.child.wait()?;
            say!(
                "supervisor",
                "worker {} died after the work was done ({status})",
                w.child.id()
            );
            continue;
        };
        let n: u64 = line
            .strip_prefix("status ")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("bad status {line:?}"))?;
        say!(
            "supervisor",
            "worker {} reports {n} task(s) done",
            w.child.id()
        );
        reported += n;
        tell(&w.ctl, "stop")?;
        let bye = w.lines.next_line(w.ctl.reader())?;
        let status = w.child.wait()?;
        ensure(
            bye.as_deref() == Some("bye") && status.success(),
            format!("worker did not stop cleanly ({status})"),
        )?;
    }

    for k in 0..TASKS as u32 {
        let r = runs(&shm, k)?;
        ensure(r == 1, format!("task {k} ran {r} times"))?;
        let got = shm
            .atomic::<AtomicU64>(result_at(k))?
            .load(Ordering::Acquire);
        ensure(
            got == compute(&input_of(k)),
            format!("task {k}: wrong result"),
        )?;
    }
    ensure(killed.is_some(), "the victim task never came up")?;
    say!(
        "supervisor",
        "live workers report {reported} task(s); the rest were done by workers that died"
    );
    Ok(format!(
        "{TASKS} tasks each done exactly once with the right result; 1 worker killed, {restarts} restart(s)"
    ))
}

fn main() -> ExitCode {
    if role().as_deref() == Some("worker") {
        return match worker() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                say!("worker", "failed: {e}");
                ExitCode::FAILURE
            }
        };
    }
    run(
        "worker_pool",
        "a supervisor runs a pool of workers (queue, shared memory, semaphore, pipes) and survives a killed worker",
        body,
    )
}
