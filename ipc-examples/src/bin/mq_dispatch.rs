//! `mq_dispatch`: a dispatcher hands tasks of three priorities to a pool of worker processes
//! through a POSIX message queue; results come back on a second queue; a System V queue
//! carries messages addressed to one worker each by message type.
//!
//! Each round the dispatcher fills the task queue (urgent, normal and low tasks, sent low
//! first), then tells every worker "go" on the System V queue, each under its own message type.
//! The workers drain the task queue: the kernel hands out the most urgent task first, so each
//! worker sees priorities that never rise within a round. Results and a per-worker "done" go
//! back on the results queue. The dispatcher checks each result and replies to every worker on
//! the one System V queue, addressed by the worker's type, with how many of *its* results it
//! checked; each worker receives only its own reply and confirms the count. At the end the
//! dispatcher checks every task was done exactly once, with the right answer, and that urgent
//! work was taken first.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::process::{Child, ExitCode};
use std::time::{Duration, Instant};

use ipc_examples::{DemoError, demo_keys, ensure, role, run, say, spawn_role};
use ipc_mq::{Access, Error, Key, MessageQueue, Priority, Select, SysvQueue};

const WORKERS: u64 = 3;
const ROUNDS: u32 = 3;
const URGENT: Priority = 20;
const NORMAL: Priority = 10;
const LOW: Priority = 1;
/// One round's tasks, in the order they are sent: low ones first, urgent ones last.
const ROUND: [Priority; 10] = [
    LOW, NORMAL, LOW, URGENT, LOW, NORMAL, URGENT, LOW, NORMAL, URGENT,
];
const MSG: u64 = 64;

const TASKS_ENV: &str = "MQ_DISPATCH_TASKS";
const RESULTS_ENV: &str = "MQ_DISPATCH_RESULTS";
const SYSV_ENV: &str = "MQ_DISPATCH_SYSV";
const INDEX_ENV: &str = "MQ_DISPATCH_WORKER";

fn label(p: Priority) -> &'static str {
    match p {
        URGENT => "urgent",
        NORMAL => "normal",
        _ => "low",
    }
}

/// The work: a little hashing (so that the workers share a round), checked by the dispatcher.
fn answer(task: u64) -> u64 {
    let mut h = task;
    for i in 0..200_000u64 {
        h = (h ^ i).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn env(key: &str) -> Result<String, DemoError> {
    std::env::var(key).map_err(|_| format!("{key} not set").into())
}

fn main() -> ExitCode {
    if role().as_deref() == Some("worker") {
        return match worker() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                say!(
                    &format!("worker {}", env(INDEX_ENV).unwrap_or_default()),
                    "FAIL: {e}"
                );
                ExitCode::FAILURE
            }
        };
    }
    run(
        "mq_dispatch",
        "prioritized tasks to a pool of worker processes over POSIX queues, typed replies over System V",
        dispatcher,
    )
}

/// Kills and reaps the workers if the dispatcher leaves early.
struct Pool(Vec<Child>);

impl Drop for Pool {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Pool {
    fn join(mut self, limit: Duration) -> Result<(), DemoError> {
        let deadline = Instant::now() + limit;
        for c in &mut self.0 {
            loop {
                if let Some(status) = c.try_wait()? {
                    ensure(
                        status.success(),
                        format!("worker {} failed: {status}", c.id()),
                    )?;
                    break;
                }
                ensure(Instant::now() < deadline, "workers did not stop in time")?;
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        self.0.clear();
        Ok(())
    }
}

fn dispatcher() -> Result<String, DemoError> {
    let me = "dispatcher";
    let tasks_name = ipc_examples::demo_name("tasks");
    let results_name = ipc_examples::demo_name("results");
    let tasks = MessageQueue::create(&tasks_name, ROUND.len() as u64, MSG)?;
    let results = MessageQueue::create(&results_name, 10, 2 * MSG)?;
    // Under a workspace key rather than IPC_PRIVATE, so that `cargo xtask clean` finds the
    // queue if the dispatcher is killed; the workers are handed its id all the same. A queue
    // left at a key by a dispatcher that was killed is stale and is replaced; one whose owner
    // lives (another run) is skipped.
    let control = demo_keys()
        .find_map(
            |key| match SysvQueue::options().replace_stale().create(Key::new(key)) {
                Err(Error::AlreadyExists { .. } | Error::OwnerAlive { .. }) => None,
                r => Some(r),
            },
        )
        .ok_or("no free System V key in the demo range")??;
    say!(
        me,
        "task queue {tasks_name} and result queue {results_name} (10 messages each), System V queue id {}",
        control.id()
    );

    let mut pool = Pool(Vec::new());
    for w in 1..=WORKERS {
        let child = spawn_role("worker")?
            .env(TASKS_ENV, &tasks_name)
            .env(RESULTS_ENV, &results_name)
            .env(SYSV_ENV, control.id().to_string())
            .env(INDEX_ENV, w.to_string())
            .spawn()?;
        say!(
            me,
            "started worker {w} (pid {}), message type {w} on the System V queue",
            child.id()
        );
        pool.0.push(child);
    }

    // task id -> (priority, who did it, answer)
    let mut done: BTreeMap<u64, (Priority, u64, u64)> = BTreeMap::new();
    for round in 1..=ROUNDS {
        for (i, &prio) in ROUND.iter().enumerate() {
            let id = u64::from(round) * 100 + i as u64;
            tasks.send(format!("{id}").as_bytes(), prio)?;
        }
        say!(
            me,
            "round {round}: queued {} tasks (low first, urgent last); queue holds {}",
            ROUND.len(),
            tasks.len()?
        );
        for w in 1..=WORKERS {
            control.send(w as i64, format!("go {round} for {w}").as_bytes())?;
        }
        // Every worker reports its results and then "done" (sent last, at the lowest
        // priority, so it arrives after that worker's results); a round ends with all dones.
        let mut dones = 0;
        let mut checked: BTreeMap<u64, u64> = (1..=WORKERS).map(|w| (w, 0)).collect();
        let mut urgent_first = false;
        let mut buf = vec![0; results.message_size()];
        while dones < WORKERS {
            let (n, _) = results.receive_timeout(&mut buf, Duration::from_secs(5))?;
            let text = std::str::from_utf8(&buf[..n])?;
            let f: Vec<&str> = text.split(' ').collect();
            match f.as_slice() {
                ["done", w, taken, firsts] => {
                    dones += 1;
                    let (w, taken): (u64, u64) = (w.parse()?, taken.parse()?);
                    say!(
                        me,
                        "round {round}: worker {w} took {taken} tasks, in order {firsts}"
                    );
                    ensure(
                        checked.get(&w) == Some(&taken),
                        format!("round {round}: worker {w} took {taken} but sent {checked:?}"),
                    )?;
                    urgent_first |= firsts.starts_with("urgent");
                }
                ["result", w, id, prio, ans] => {
                    let (w, id, prio, ans): (u64, u64, Priority, u64) =
                        (w.parse()?, id.parse()?, prio.parse()?, ans.parse()?);
                    ensure(ans == answer(id), format!("task {id}: wrong answer {ans}"))?;
                    ensure(
                        done.insert(id, (prio, w, ans)).is_none(),
                        format!("task {id} was done twice"),
                    )?;
                    *checked
                        .get_mut(&w)
                        .ok_or_else(|| format!("result from unknown worker {w}"))? += 1;
                }
                _ => return Err(format!("unexpected result message {text:?}").into()),
            }
        }
        ensure(tasks.is_empty()?, format!("round {round}: tasks left over"))?;
        // The whole round was queued before any worker started, so the very first task taken
        // was an urgent one, and whoever took it began with it.
        ensure(
            urgent_first,
            format!("round {round}: no worker began with an urgent task"),
        )?;
        // Replies: one System V queue, one message per worker, addressed by its type.
        for (&w, &n) in &checked {
            control.send(w as i64, format!("checked {round} {n} for {w}").as_bytes())?;
        }
        say!(
            me,
            "round {round}: replied to each worker on the System V queue under its own type: \
             {checked:?} results checked"
        );
    }
    for w in 1..=WORKERS {
        control.send(w as i64, format!("stop for {w}").as_bytes())?;
    }
    pool.join(Duration::from_secs(10))?;

    let expected = ROUNDS as usize * ROUND.len();
    ensure(
        done.len() == expected,
        format!("{} of {expected} tasks done", done.len()),
    )?;
    for round in 1..=ROUNDS {
        for (i, &prio) in ROUND.iter().enumerate() {
            let id = u64::from(round) * 100 + i as u64;
            let got = done.get(&id).map(|d| d.0);
            ensure(
                got == Some(prio),
                format!("task {id}: priority {got:?}, sent {prio}"),
            )?;
        }
    }
    let mut per_worker = BTreeMap::new();
    for (_, w, _) in done.values() {
        *per_worker.entry(*w).or_insert(0) += 1;
    }
    say!(me, "tasks per worker: {per_worker:?}");
    ensure(
        control.stats()?.messages == 0,
        "System V messages left undelivered",
    )?;
    Ok(format!(
        "{expected} tasks of 3 priorities done exactly once by {WORKERS} workers, every worker \
         took urgent before normal before low, and each worker read only the System V replies \
         of its own type"
    ))
}

fn worker() -> Result<(), DemoError> {
    let w: u64 = env(INDEX_ENV)?.parse()?;
    let me = format!("worker {w}");
    let tasks = MessageQueue::open(&env(TASKS_ENV)?, Access::Receive)?;
    let results = MessageQueue::open(&env(RESULTS_ENV)?, Access::Send)?;
    let control = SysvQueue::from_id(env(SYSV_ENV)?.parse()?)?;
    let mut buf = vec![0; tasks.message_size()];
    // Only messages of our type reach us; the others stay for their workers.
    let mail = || -> Result<(String, i64), DemoError> {
        let mut mail = [0; 64];
        let (n, mtype) = control.receive(&mut mail, Select::Type(w as i64))?;
        let text = std::str::from_utf8(&mail[..n])?.to_owned();
        ensure(
            mtype == w as i64 && text.ends_with(&format!("for {w}")),
            format!("worker {w} got {text:?} of type {mtype}"),
        )?;
        Ok((text, mtype))
    };
    loop {
        let (text, mtype) = mail()?;
        if text.starts_with("stop") {
            say!(&me, "got {text:?} (System V type {mtype}): stopping");
            return Ok(());
        }
        say!(&me, "got {text:?} (System V type {mtype}): taking tasks");
        // Drain the task queue: most urgent first, oldest first within a priority.
        let mut taken = Vec::new();
        loop {
            match tasks.try_receive(&mut buf) {
                Ok((n, prio)) => {
                    let id: u64 = std::str::from_utf8(&buf[..n])?.parse()?;
                    if let Some(&(_, prev)) = taken.last() {
                        ensure(prio <= prev, format!("{me}: took {prio} after {prev}"))?;
                    }
                    taken.push((id, prio));
                    results.send(
                        format!("result {w} {id} {prio} {}", answer(id)).as_bytes(),
                        prio,
                    )?;
                }
                Err(Error::WouldBlock) => break,
                Err(e) => return Err(e.into()),
            }
        }
        let order: Vec<&str> = taken.iter().map(|&(_, p)| label(p)).collect();
        let order = if order.is_empty() {
            "-".to_owned()
        } else {
            order.join(",")
        };
        // "done" has the lowest priority: the dispatcher reads it after this worker's results.
        results.send(format!("done {w} {} {order}", taken.len()).as_bytes(), 0)?;
        // The dispatcher's reply, addressed to us: how many of our results it checked.
        let (reply, mtype) = mail()?;
        let round = text.split(' ').nth(1).unwrap_or("?");
        let expected = format!("checked {round} {} for {w}", taken.len());
        ensure(
            reply == expected,
            format!("{me}: reply {reply:?}, expected {expected:?}"),
        )?;
        say!(
            &me,
            "reply {reply:?} (System V type {mtype}): all {} of my results were checked",
            taken.len()
        );
    }
}
