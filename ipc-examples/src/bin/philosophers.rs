//! Dining philosophers with a System V semaphore set.
//!
//! Five philosopher processes share five forks, one semaphore each. A philosopher takes *both*
//! forks in one atomic `semop` (so no one ever holds one fork while waiting for the other: no
//! deadlock), with `SEM_UNDO` on each. One philosopher is killed with SIGKILL while eating; the
//! kernel undoes its operations at exit, its forks go back on the table, and the others finish.
#![forbid(unsafe_code)]

use std::process::{Child, ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use ipc_examples::{DemoError, demo_keys, ensure, role, run, say, spawn_role};
use ipc_sem::{Key, SemOp, SemSet};

const PHILOSOPHERS: usize = 5;
const MEALS: u16 = 5;
/// Index of the semaphore the victim posts when it is eating (the parent waits on it).
const EATING: usize = PHILOSOPHERS;
/// Index of the semaphore counting finished meals.
const MEALS_DONE: usize = PHILOSOPHERS + 1;
/// The philosopher who is killed while eating.
const VICTIM: usize = 2;

const SET_ENV: &str = "IPC_DEMO_SET";
const SEAT_ENV: &str = "IPC_DEMO_SEAT";

fn forks_of(seat: usize) -> [SemOp; 2] {
    let left = seat;
    let right = (seat + 1) % PHILOSOPHERS;
    [SemOp::wait(left).undo(), SemOp::wait(right).undo()]
}

fn philosopher() -> Result<(), DemoError> {
    let seat: usize = std::env::var(SEAT_ENV)?.parse()?;
    let me = format!("phil {seat}");
    let table = SemSet::open_id(std::env::var(SET_ENV)?.parse()?)?;
    let meals = if seat == VICTIM { 1 } else { MEALS };
    for meal in 1..=meals {
        std::thread::sleep(Duration::from_millis(2)); // thinking
        // Both forks or neither, atomically; the kernel gives them back if we die.
        let forks = table.acquire_timeout(&forks_of(seat), Duration::from_secs(10))?;
        say!(
            &me,
            "eating meal {meal} with forks {seat} and {}",
            (seat + 1) % PHILOSOPHERS
        );
        if seat == VICTIM {
            // Tell the parent we hold both forks, then eat forever: it will kill us here.
            table.apply(&[SemOp::post(EATING)])?;
            loop {
                std::thread::park();
            }
        }
        std::thread::sleep(Duration::from_millis(3)); // eating
        drop(forks);
        table.apply(&[SemOp::post(MEALS_DONE)])?;
    }
    say!(&me, "finished {meals} meals");
    Ok(())
}

/// Children that are killed and reaped if the demo fails half-way.
struct Table(Vec<Child>);

impl Drop for Table {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_bounded(child: &mut Child, limit: Duration) -> Result<ExitStatus, DemoError> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if start.elapsed() > limit {
            return Err(format!("process {} still running after {limit:?}", child.id()).into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn parent() -> Result<String, DemoError> {
    let mut values = vec![1u16; PHILOSOPHERS];
    values.extend([0, 0]); // EATING, MEALS_DONE
    // A key in the workspace's System V range (0x4950xxxx), so that `cargo xtask clean` can
    // remove the set if this demo is killed. `create` is exclusive; `replace_stale` first
    // removes a set a killed earlier run left under the key (its owner is dead), and a key
    // whose owner is alive (another run) is skipped for the next one (`demo_keys`).
    let table = demo_keys()
        .find_map(|key| {
            match SemSet::options()
                .replace_stale()
                .create(Key::new(key), &values)
            {
                Err(ipc_sem::Error::AlreadyExists { .. } | ipc_sem::Error::OwnerAlive { .. }) => {
                    None
                }
                r => Some(r),
            }
        })
        .ok_or("no free System V key")??;
    ensure(table.is_owner(), "the parent owns the table")?;
    say!(
        "parent",
        "laid {PHILOSOPHERS} forks (System V set id {})",
        table.id()
    );
    let mut kids = Table(Vec::new());
    for seat in 0..PHILOSOPHERS {
        let child = spawn_role("philosopher")?
            .env(SET_ENV, table.id().to_string())
            .env(SEAT_ENV, seat.to_string())
            .stdin(Stdio::null())
            .spawn()?;
        say!("parent", "philosopher {seat} is process {}", child.id());
        kids.0.push(child);
    }
    // Wait until the victim holds both forks, then kill it mid-meal.
    table.apply_timeout(&[SemOp::wait(EATING)], Duration::from_secs(10))?;
    let victim = &mut kids.0[VICTIM];
    say!(
        "parent",
        "killing philosopher {VICTIM} (pid {}) with SIGKILL while it eats",
        victim.id()
    );
    victim.kill()?;
    let status = wait_bounded(victim, Duration::from_secs(10))?;
    ensure(!status.success(), "the victim was killed")?;
    say!(
        "parent",
        "philosopher {VICTIM} died ({status}); SEM_UNDO returns its forks"
    );
    for (seat, child) in kids.0.iter_mut().enumerate() {
        if seat == VICTIM {
            continue;
        }
        let status = wait_bounded(child, Duration::from_secs(30))?;
        ensure(
            status.success(),
            format!("philosopher {seat} failed: {status}"),
        )?;
    }
    kids.0.clear();
    let meals = table.value(MEALS_DONE)?;
    let expected = (PHILOSOPHERS as u16 - 1) * MEALS;
    ensure(
        meals == expected,
        format!("{meals} meals eaten, expected {expected}"),
    )?;
    let forks = table.values()?;
    ensure(
        forks[..PHILOSOPHERS].iter().all(|&f| f == 1),
        format!(
            "forks on the table at the end: {:?}",
            &forks[..PHILOSOPHERS]
        ),
    )?;
    say!(
        "parent",
        "all {PHILOSOPHERS} forks are back on the table: {:?}",
        &forks[..PHILOSOPHERS]
    );
    Ok(format!(
        "{} philosophers ate {meals} meals without deadlock; the killed one's forks came back by SEM_UNDO",
        PHILOSOPHERS - 1
    ))
}

fn main() -> ExitCode {
    if role().as_deref() == Some("philosopher") {
        return match philosopher() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                say!("phil", "error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    run(
        "philosophers",
        "five processes share five forks; a System V set takes both at once, SEM_UNDO survives a kill",
        parent,
    )
}
