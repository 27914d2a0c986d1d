//! The two classic uses of a semaphore, between processes.
//!
//! 1. A *binary* semaphore (initial value 1) as a lock: four processes each add 1 to a counter
//!    kept in a file 200 times (read, add, write back). Under the lock no update is lost.
//! 2. A *counting* semaphore (initial value N) as a pool of N resources ("printers"): five
//!    processes take a printer 10 times each. Every holder counts the holders inside (in the
//!    same file, under the lock) and checks there are never more than N.
#![forbid(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitCode, Stdio};
use std::time::{Duration, Instant};

use ipc_examples::{DemoError, demo_name, ensure, role, run, say, spawn_role};
use ipc_sem::NamedSemaphore;

const LOCKERS: usize = 4;
const INCREMENTS: u64 = 200;
const PRINTERS: u32 = 2;
const USERS: usize = 5;
const JOBS: u64 = 10;

const LOCK_ENV: &str = "IPC_DEMO_LOCK";
const POOL_ENV: &str = "IPC_DEMO_POOL";
const FILE_ENV: &str = "IPC_DEMO_FILE";

/// The shared state file: "counter inside max".
fn read_state(f: &mut File) -> Result<[u64; 3], DemoError> {
    let mut s = String::new();
    f.seek(SeekFrom::Start(0))?;
    f.read_to_string(&mut s)?;
    let v: Vec<u64> = s
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    ensure(v.len() == 3, format!("state file holds {s:?}"))?;
    Ok([v[0], v[1], v[2]])
}

fn write_state(f: &mut File, st: [u64; 3]) -> Result<(), DemoError> {
    let text = format!("{:020} {:020} {:020}\n", st[0], st[1], st[2]);
    f.seek(SeekFrom::Start(0))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

fn open_state() -> Result<File, DemoError> {
    Ok(OpenOptions::new()
        .read(true)
        .write(true)
        .open(std::env::var(FILE_ENV)?)?)
}

/// Role "locker": INCREMENTS read-modify-write cycles under the binary semaphore.
fn locker() -> Result<(), DemoError> {
    let lock = NamedSemaphore::open(&std::env::var(LOCK_ENV)?)?;
    let mut f = open_state()?;
    for _ in 0..INCREMENTS {
        // Bounded: a locker killed while holding the lock never gives it back (POSIX
        // semaphores do not survive their holder), and the others must fail, not hang.
        let _held = lock.acquire_timeout(Duration::from_secs(10))?;
        let mut st = read_state(&mut f)?;
        st[0] += 1;
        write_state(&mut f, st)?;
    }
    say!("locker", "added {INCREMENTS} under the lock");
    Ok(())
}

/// Role "user": JOBS uses of a printer from the pool; checks the bound on every use.
fn user() -> Result<(), DemoError> {
    let lock = NamedSemaphore::open(&std::env::var(LOCK_ENV)?)?;
    let pool = NamedSemaphore::open(&std::env::var(POOL_ENV)?)?;
    let mut f = open_state()?;
    let mut most = 0;
    for _ in 0..JOBS {
        let printer = pool.acquire_timeout(Duration::from_secs(10))?;
        let inside = {
            let _held = lock.acquire_timeout(Duration::from_secs(10))?;
            let mut st = read_state(&mut f)?;
            st[1] += 1;
            st[2] = st[2].max(st[1]);
            write_state(&mut f, st)?;
            st[1]
        };
        most = most.max(inside);
        ensure(
            inside <= u64::from(PRINTERS),
            format!("{inside} holders of {PRINTERS} printers"),
        )?;
        std::thread::sleep(Duration::from_millis(2)); // printing
        {
            let _held = lock.acquire_timeout(Duration::from_secs(10))?;
            let mut st = read_state(&mut f)?;
            st[1] -= 1;
            write_state(&mut f, st)?;
        }
        drop(printer);
    }
    say!(
        "user",
        "printed {JOBS} jobs; at most {most} printers busy while I held one"
    );
    Ok(())
}

/// Removes the state file and kills leftover children if the demo fails half-way.
struct Cleanup {
    file: PathBuf,
    kids: Vec<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &mut self.kids {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(&self.file);
    }
}

fn spawn_all(
    c: &mut Cleanup,
    role: &str,
    n: usize,
    lock: &str,
    pool: &str,
) -> Result<(), DemoError> {
    for _ in 0..n {
        let child = spawn_role(role)?
            .env(LOCK_ENV, lock)
            .env(POOL_ENV, pool)
            .env(FILE_ENV, &c.file)
            .stdin(Stdio::null())
            .spawn()?;
        c.kids.push(child);
    }
    say!("parent", "started {n} {role} processes");
    Ok(())
}

fn wait_all(c: &mut Cleanup) -> Result<(), DemoError> {
    let start = Instant::now();
    for child in &mut c.kids {
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break s;
            }
            ensure(
                start.elapsed() < Duration::from_secs(60),
                "children did not finish",
            )?;
            std::thread::sleep(Duration::from_millis(5));
        };
        ensure(
            status.success(),
            format!("child {} failed: {status}", child.id()),
        )?;
    }
    c.kids.clear();
    Ok(())
}

fn state_of(path: &Path) -> Result<[u64; 3], DemoError> {
    read_state(&mut File::open(path)?)
}

fn parent() -> Result<String, DemoError> {
    let lock_name = demo_name("lock");
    let pool_name = demo_name("pool");
    // `create` is exclusive and makes the parent the owner of both (mode 0600): they are
    // removed when it drops them. The children `open` them by name: openers remove nothing.
    let lock = NamedSemaphore::create(&lock_name, 1)?;
    let pool = NamedSemaphore::create(&pool_name, PRINTERS)?;
    ensure(lock.is_owner() && pool.is_owner(), "the parent owns both")?;
    let file = std::env::temp_dir().join(format!("ipcrs-demo-sem-{}", std::process::id()));
    let mut c = Cleanup {
        file,
        kids: Vec::new(),
    };
    write_state(&mut File::create(&c.file)?, [0, 0, 0])?;
    say!(
        "parent",
        "binary semaphore {lock_name} = 1 (a lock), counting semaphore {pool_name} = {PRINTERS} (printers)"
    );

    spawn_all(&mut c, "locker", LOCKERS, &lock_name, &pool_name)?;
    wait_all(&mut c)?;
    let [count, _, _] = state_of(&c.file)?;
    let expected = LOCKERS as u64 * INCREMENTS;
    say!("parent", "counter = {count} (expected {expected})");
    ensure(
        count == expected,
        format!("lost updates: {count} of {expected}"),
    )?;

    spawn_all(&mut c, "user", USERS, &lock_name, &pool_name)?;
    wait_all(&mut c)?;
    let [_, inside, max] = state_of(&c.file)?;
    say!(
        "parent",
        "most printers in use at once: {max} of {PRINTERS}; in use now: {inside}"
    );
    ensure(
        max <= u64::from(PRINTERS) && max >= 1,
        format!("{max} holders at once"),
    )?;
    ensure(inside == 0, "a printer was not given back")?;
    ensure(pool.value()? == PRINTERS, "the pool is not full again")?;
    ensure(lock.value()? == 1, "the lock is not free")?;
    Ok(format!(
        "the lock kept all {expected} increments; the pool never had more than {PRINTERS} holders"
    ))
}

fn main() -> ExitCode {
    let r = match role().as_deref() {
        Some("locker") => Some(locker()),
        Some("user") => Some(user()),
        _ => None,
    };
    if let Some(r) = r {
        return match r {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                say!("child", "error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    run(
        "sem_basics",
        "a binary semaphore as a lock and a counting semaphore as a pool of N resources",
        parent,
    )
}
