//! After `fork` in a multi-threaded process: the calls the crate docs list as safe there
//! ("After `fork`" in the README) work in such a child, while the parent's other threads are
//! busy taking locks (the allocator's, a mutex, the claim registry's, std's stdout) at the
//! moment of the fork.
//!
//! The forker is this test binary re-run with a role, so that its SIGPIPE disposition can be
//! the default (a C host) and its threads are this test's own. It forks many times; each child
//! runs `in_the_child` — only the listed calls, no allocation, no panic (a failure is an exit
//! code naming the step) — under `alarm`, so a deadlock ends it with SIGALRM instead of a hang.
// fork, alarm and _exit are libc calls: this is a test, not the library.
#![allow(unsafe_code)]

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipc_pipe::sigpipe::{self, Disposition};
use ipc_pipe::{
    Duplex, Error, FramedReader, FramedWriter, PipeReader, PipeWriter, SigpipePolicy, pipe,
};
use ipc_testkit::{Proc, Watchdog, child, role, test_path};
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::process::{Pid, PidfdFlags, WaitOptions, pidfd_open, waitpid};

use crate::LIMIT;

/// How many times the forker forks.
const FORKS: usize = 20;
/// What the parent puts in the child's input pipe before each fork.
const INPUT: &[u8] = b"from the parent, before the fork";
/// Bytes the child vmsplices: static, so they never change or go away.
static FIXED: [u8; 3000] = [0xF1; 3000];

/// Everything a forked child gets, made before the fork.
struct Handles {
    /// The child writes everything here; the parent checks it after the child is gone.
    out: PipeWriter,
    /// Holds `INPUT`, for the child to read.
    input: PipeReader,
    /// A writer whose reader is gone, with `SigpipePolicy::Suppress`.
    dead: PipeWriter,
    /// One side of a duplex; the parent reads the other.
    duplex: Duplex,
}

/// The child's body: each step is a call the README lists as safe after `fork`. Returns the
/// number of the step that went wrong.
fn in_the_child(h: Handles) -> Result<(), i32> {
    fn ok<T, E>(step: i32, r: Result<T, E>) -> Result<T, i32> {
        r.map_err(|_| step)
    }
    fn check(step: i32, cond: bool) -> Result<(), i32> {
        if cond { Ok(()) } else { Err(step) }
    }
    let Handles {
        out,
        input,
        dead,
        duplex,
    } = h;
    let mut buf = [0u8; 256];
    // 1. A new pipe, a record through it.
    let (r, w) = ok(1, pipe())?;
    ok(2, w.write_atomic(b"fresh"))?;
    check(3, ok(4, r.available())? == 5)?;
    check(5, ok(6, (&r).read(&mut buf))? == 5 && &buf[..5] == b"fresh")?;
    drop((r, w));
    // 2. Reading what the parent left, in every form.
    check(10, ok(11, input.available())? == INPUT.len())?;
    let n = ok(
        12,
        input.read_timeout(&mut buf[..10], Duration::from_secs(5)),
    )?;
    let m = ok(13, input.try_read(&mut buf[n..INPUT.len()]))?;
    check(14, n + m == INPUT.len() && &buf[..INPUT.len()] == INPUT)?;
    ok(15, input.set_nonblocking(true))?;
    check(16, ok(17, input.is_nonblocking())?)?;
    check(
        18,
        matches!(input.try_read(&mut buf), Err(Error::WouldBlock)),
    )?;
    check(
        19,
        matches!(
            input.read_timeout(&mut buf, Duration::from_millis(1)),
            Err(Error::TimedOut { .. })
        ),
    )?;
    // 3. Writing, in every form (the parent made room for all of it).
    check(20, ok(21, out.capacity())? >= 1 << 20)?;
    check(22, ok(23, out.set_capacity(1 << 20))? >= 1 << 20)?;
    ok(24, (&out).write_all(b"[write_all]"))?;
    ok(25, out.write_atomic(b"[write_atomic]"))?;
    check(
        26,
        ok(27, out.write_timeout(b"[t]", Duration::from_secs(5)))? == 3,
    )?;
    ok(
        28,
        out.write_all_timeout(&[0xAA; 10_000], Duration::from_secs(5)),
    )?;
    check(29, ok(30, out.try_write(b"[try]"))? == 5)?;
    let clone = ok(31, out.try_clone())?;
    ok(32, (&clone).write_all(b"[clone]"))?;
    drop(clone);
    let mut tx = FramedWriter::new(&out);
    ok(33, tx.write_frame(b"small frame"))?;
    ok(34, tx.write_frame(&[0xBB; 20_000]))?;
    ok(
        35,
        tx.write_frame_timeout(b"timed frame", Duration::from_secs(5)),
    )?;
    // SAFETY: FIXED is a static that is never written.
    let spliced = unsafe { ipc_pipe::vmsplice(&out, &FIXED) };
    check(36, ok(37, spliced)? == FIXED.len())?;
    // 4. Zero-copy between pipes: tee then splice what the child itself wrote.
    let (r, w) = ok(40, pipe())?;
    ok(41, w.write_atomic(b"[spliced]"))?;
    check(42, ok(43, ipc_pipe::tee(&r, &out, 64))? == 9)?;
    check(44, ok(45, ipc_pipe::splice(&r, &out, 64))? == 9)?;
    ok(46, w.write_atomic(b"[timed]"))?;
    let five = Duration::from_secs(5);
    check(47, ok(48, ipc_pipe::tee_timeout(&r, &out, 64, five))? == 7)?;
    check(
        49,
        ok(38, ipc_pipe::splice_timeout(&r, &out, 64, five))? == 7,
    )?;
    check(
        39,
        matches!(ipc_pipe::try_splice(&r, &out, 64), Err(Error::WouldBlock)),
    )?;
    drop((r, w));
    // 5. SIGPIPE: at its default action here, a suppressing writer still only gets an error.
    check(50, ok(51, sigpipe::disposition())? == Disposition::Default)?;
    check(52, matches!(dead.write_atomic(b"x"), Err(Error::NoReader)))?;
    check(
        53,
        matches!(
            ok(54, sigpipe::suppressed(|| (&dead).write(b"y")))?,
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe
        ),
    )?;
    // 6. The standard streams: the forker's stdout is /dev/null, stdin a pipe.
    check(
        60,
        matches!(PipeWriter::dup_stdout(), Err(Error::NotAPipe { fd: 1, .. })),
    )?;
    let stdin = ok(61, PipeReader::dup_stdin())?;
    drop(stdin);
    // 7. A duplex side.
    ok(70, (&duplex).write_all(b"[duplex]"))?;
    let (dr, dw) = duplex.into_parts();
    drop((dr, dw, out, input, dead));
    Ok(())
}

/// What the parent reads on `out` after each child.
fn expected() -> Vec<u8> {
    let mut v = Vec::new();
    v.extend(b"[write_all][write_atomic][t]");
    v.extend([0xAA; 10_000]);
    v.extend(b"[try][clone]");
    for frame in [&b"small frame"[..], &[0xBB; 20_000], b"timed frame"] {
        v.extend((frame.len() as u32).to_le_bytes());
        v.extend(frame);
    }
    v.extend(FIXED);
    v.extend(b"[spliced][spliced][timed][timed]");
    v
}

/// Busy threads, each taking a lock the fork may catch held.
fn busy(stop: &Arc<AtomicBool>, rounds: &Arc<AtomicU64>) -> Vec<std::thread::JoinHandle<()>> {
    let mut threads = Vec::new();
    let spawn = |f: Box<dyn Fn(u64) + Send>| {
        let (stop, rounds) = (Arc::clone(stop), Arc::clone(rounds));
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                f(i);
                i += 1;
                rounds.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // The allocator.
    threads.push(spawn(Box::new(|i| {
        let v = vec![i as u8; 1 + (i as usize * 4099) % 100_000];
        std::hint::black_box(v);
    })));
    // A mutex.
    let shared = Arc::new(Mutex::new(Vec::<u64>::new()));
    threads.push(spawn(Box::new(move |i| {
        let mut g = shared.lock().unwrap();
        g.push(i);
        if g.len() > 100 {
            g.clear();
        }
    })));
    // Pipe traffic with the suppressing policy, frames read into new buffers, /proc reads.
    threads.push(spawn(Box::new(|i| {
        let (r, mut w) = pipe().unwrap();
        w.set_sigpipe_policy(SigpipePolicy::Suppress);
        FramedWriter::new(&w).write_frame(&i.to_le_bytes()).unwrap();
        let frame = FramedReader::new(&r).read_frame().unwrap().unwrap();
        assert_eq!(frame, i.to_le_bytes());
        w.set_capacity(8192).unwrap();
    })));
    // The claim registry's lock: a number nothing opens is refused after taking it.
    threads.push(spawn(Box::new(|_| {
        // SAFETY: descriptor 900 is never opened in this process: nothing owns it.
        let r = unsafe { PipeReader::from_inherited(900) };
        assert!(r.is_err());
    })));
    // std's stdout lock (stdout is /dev/null here).
    threads.push(spawn(Box::new(|i| {
        println!("busy {i}");
    })));
    threads
}

/// Waits at most `limit` for child `pid`; kills it on time-out. Returns its raw wait status.
fn wait_bounded(pid: i32, limit: Duration) -> i32 {
    let p = Pid::from_raw(pid).unwrap();
    let fd = pidfd_open(p, PidfdFlags::empty()).unwrap();
    let ts = Timespec {
        tv_sec: limit.as_secs() as i64,
        tv_nsec: 0,
    };
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    let ready = loop {
        match poll(&mut fds, Some(&ts)) {
            Err(rustix::io::Errno::INTR) => continue,
            r => break r.unwrap(),
        }
    };
    if ready == 0 {
        // SAFETY: `pid` is our unreaped child, so the number cannot have been reused.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let (_, status) = waitpid(Some(p), WaitOptions::empty()).unwrap().unwrap();
    assert!(ready == 1, "a forked child did not finish within {limit:?}");
    status.as_raw()
}

fn forker() {
    assert_eq!(sigpipe::restore_default().unwrap(), Disposition::Ignore);
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));
    let threads = busy(&stop, &rounds);
    let want = expected();
    for k in 0..FORKS {
        let (out_r, out) = pipe().unwrap();
        out.set_capacity(1 << 20).unwrap();
        let (input, input_w) = pipe().unwrap();
        input_w.write_atomic(INPUT).unwrap();
        let (dead_r, mut dead) = pipe().unwrap();
        dead.set_sigpipe_policy(SigpipePolicy::Suppress);
        drop(dead_r);
        let (duplex, peer) = ipc_pipe::duplex().unwrap();
        // Fork while the other threads are at work.
        let before = rounds.load(Ordering::Relaxed);
        while rounds.load(Ordering::Relaxed) < before + 50 {
            std::thread::yield_now();
        }
        let handles = Handles {
            out,
            input,
            dead,
            duplex,
        };
        // SAFETY: the child runs only `in_the_child` (the calls the crate documents as safe
        // after fork in a multi-threaded process: no allocation, no lock), under `alarm`, and
        // ends with `_exit`, never returning into the harness.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            // SAFETY: alarm has no preconditions; SIGALRM's default action ends a child that
            // deadlocks.
            unsafe { libc::alarm(30) };
            let code = match in_the_child(handles) {
                Ok(()) => 0,
                Err(step) => step,
            };
            // SAFETY: ends the child without running the parent's destructors or handlers.
            unsafe { libc::_exit(code) };
        }
        drop(handles);
        drop(input_w);
        let status = wait_bounded(pid, Duration::from_secs(40));
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "fork {k}: raw wait status {status:#x} (an exit code is the step that failed; \
             SIGALRM (14) is a deadlock)"
        );
        let mut got = Vec::new();
        (&out_r).read_to_end(&mut got).unwrap();
        assert!(got == want, "fork {k}: the child's output differs");
        let (mut peer_r, peer_w) = peer.into_parts();
        drop(peer_w);
        let mut from_duplex = Vec::new();
        peer_r.read_to_end(&mut from_duplex).unwrap();
        assert_eq!(from_duplex, b"[duplex]");
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn after_fork_in_a_busy_multithreaded_process_the_documented_calls_work() {
    if role().is_some() {
        forker();
        return;
    }
    let _wd = Watchdog::new("after fork", LIMIT);
    let mut cmd = child(
        &test_path!(after_fork_in_a_busy_multithreaded_process_the_documented_calls_work),
        "forker",
    );
    // stdin a pipe (dup_stdin in the forked child), stdout /dev/null (dup_stdout refuses it).
    let (stdin_r, _stdin_w) = pipe().unwrap();
    cmd.stdin(stdin_r).stdout(std::process::Stdio::null());
    let p = Proc::spawn(&mut cmd).unwrap();
    drop(cmd);
    p.expect_success(LIMIT);
}
