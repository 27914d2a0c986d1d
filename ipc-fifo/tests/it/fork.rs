//! After `fork`: a child forked from a multi-threaded process (other threads busy with the
//! crate) calls exactly what each type's docs allow there, and drops every handle; the parent
//! keeps everything it owns.

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ipc_fifo::{
    Error, Fifo, FifoReader, FifoWriter, KeepAlive, OWNER_LOCK, PrivateDir, RecordReader,
};
use ipc_testkit::{Proc, Watchdog, child, role, test_path};

use crate::{CHILD_LIMIT, ino, lock_held};

/// Threads that keep the allocator and the crate busy (creating, opening, dropping FIFOs and
/// directories, waiting with inotify) until `stop` is set.
fn busy_threads(stop: &Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<()>> {
    (0..3)
        .map(|i| {
            let stop = Arc::clone(stop);
            std::thread::spawn(move || {
                let dir = PrivateDir::new("ipcrs-fifo-busy").unwrap();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let f = Fifo::create(dir.join(format!("b{i}-{n}")).unwrap()).unwrap();
                    let r = FifoReader::try_open(f.path()).unwrap();
                    let w = FifoWriter::try_open(f.path()).unwrap();
                    // Allocates on purpose: the allocator's lock is busy when the fork comes.
                    let payload: Vec<u8> = std::iter::repeat_n(7u8, 100).collect();
                    w.write_record(&payload).unwrap();
                    let _ = FifoWriter::open_timeout(dir.join("missing").unwrap(), Duration::ZERO);
                    drop((r, w, f));
                    n += 1;
                }
            })
        })
        .collect()
}

/// What the child checks, one exit code each, so that it needs no allocation to report.
macro_rules! check {
    ($code:expr, $cond:expr) => {
        if !$cond {
            // SAFETY: ends the forked child at once, running nothing of the parent's.
            unsafe { libc::_exit($code) };
        }
    };
}

#[allow(unsafe_code)]
fn forker_role() {
    let stop = Arc::new(AtomicBool::new(false));
    let busy = busy_threads(&stop);

    let dir = PrivateDir::new("ipcrs-fifo-fork").unwrap();
    let (shared, _) = PrivateDir::open_or_create(dir.join("shared").unwrap()).unwrap();
    let fifo = Fifo::create(dir.join("f").unwrap()).unwrap();
    let opener = Fifo::open(fifo.path()).unwrap();
    let g = Fifo::create(shared.join("g").unwrap()).unwrap();
    let reader = FifoReader::try_open(fifo.path()).unwrap();
    let writer = FifoWriter::try_open(fifo.path()).unwrap();
    let keep = FifoReader::options()
        .keep_alive(KeepAlive::On)
        .open(g.path())
        .unwrap();
    let mut records = RecordReader::new(keep);
    let g_writer = FifoWriter::try_open(g.path()).unwrap();
    (&writer).write_all(b"xyz").unwrap();
    g_writer.write_record(b"before the fork").unwrap();
    assert!(matches!(records.try_recv(), Ok(Some(b"before the fork"))));
    g_writer.write_record(b"for the child").unwrap();

    // SAFETY: the child below makes only the calls the crate documents for a forked child
    // (system calls on descriptors it inherited, buffers on the stack), then `_exit`s.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        check!(
            10,
            !fifo.is_owner() && !dir.is_owner() && !opener.is_owner()
        );
        check!(
            11,
            !fifo.path().as_os_str().is_empty() && !dir.path().as_os_str().is_empty()
        );
        let mut buf = [0u8; 3];
        check!(
            12,
            matches!((&reader).read(&mut buf), Ok(3)) && &buf == b"xyz"
        );
        check!(
            13,
            matches!(reader.wait_readable(Duration::ZERO), Ok(false))
        );
        check!(14, reader.set_nonblocking(true).is_ok());
        check!(
            15,
            matches!(
                (&reader).read(&mut buf).map_err(|e| e.kind()),
                Err(std::io::ErrorKind::WouldBlock)
            )
        );
        check!(16, reader.set_nonblocking(false).is_ok());
        check!(20, writer.write_record(b"from the child").is_ok());
        check!(21, matches!(records.try_recv(), Ok(Some(b"for the child"))));
        check!(22, matches!(records.try_recv(), Err(Error::WouldBlock)));
        check!(
            23,
            matches!(
                records.recv_timeout(Duration::from_millis(1)),
                Err(Error::TimedOut)
            )
        );
        check!(24, g_writer.write_frame(b"a frame").is_ok());
        check!(25, g_writer.try_write_record(b"try").is_ok());
        check!(
            26,
            g_writer
                .write_record_timeout(b"timed", Duration::from_secs(5))
                .is_ok()
        );
        check!(27, (&g_writer).write(&[]).is_ok());
        check!(28, g_writer.set_nonblocking(false).is_ok());
        let mut fifo = fifo;
        fifo.persist(); // does nothing here: it must not release the parent's lock
        let mut dir = dir;
        dir.persist();
        drop(records);
        drop((reader, writer, g_writer));
        drop((opener, fifo, g));
        drop((shared, dir));
        // SAFETY: ends the child without running the parent's destructors or handlers.
        unsafe { libc::_exit(0) };
    }
    assert!(pid > 0, "fork failed");
    let pid = rustix::process::Pid::from_raw(pid).unwrap();
    let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).unwrap();
    let mut fds = [rustix::event::PollFd::new(
        &pidfd,
        rustix::event::PollFlags::IN,
    )];
    let limit = rustix::event::Timespec {
        tv_sec: 20,
        tv_nsec: 0,
    };
    let ready = loop {
        match rustix::event::poll(&mut fds, Some(&limit)) {
            Err(rustix::io::Errno::INTR) => continue,
            r => break r.unwrap(),
        }
    };
    if ready == 0 {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
    let (_, status) = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty())
        .unwrap()
        .unwrap();
    assert!(
        ready > 0,
        "the forked child hung (a lock held across fork?)"
    );
    assert_eq!(
        status.exit_status(),
        Some(0),
        "check {:?} failed in the child",
        status
    );

    stop.store(true, Ordering::Relaxed);
    for t in busy {
        t.join().unwrap();
    }
    // The parent still owns everything, with its locks.
    assert!(fifo.is_owner() && dir.is_owner());
    assert!(fifo.path().exists() && g.path().exists() && dir.path().exists());
    assert!(lock_held(dir.path(), OWNER_LOCK));
    assert!(lock_held(dir.path(), ino(fifo.path())));
    assert!(matches!(
        ipc_fifo::remove_stale(fifo.path()),
        Err(Error::OwnerAlive { .. })
    ));
    // What the child wrote arrived.
    let mut rec = RecordReader::new(reader);
    drop(writer);
    assert_eq!(rec.recv().unwrap(), Some(&b"from the child"[..]));
    for want in [&b"a frame"[..], b"try", b"timed"] {
        assert_eq!(records.recv_timeout(CHILD_LIMIT).unwrap(), Some(want));
    }
    let dir_path = dir.path().to_owned();
    drop((rec, records, g_writer, opener, fifo, g, shared));
    drop(dir);
    assert!(!dir_path.exists());
}

#[test]
fn a_forked_child_of_a_busy_process_uses_and_drops_every_handle_and_removes_nothing() {
    if role().as_deref() == Some("forker") {
        return forker_role();
    }
    let _wd = Watchdog::new("fork", Duration::from_secs(90));
    Proc::spawn(&mut child(
        &test_path!(
            a_forked_child_of_a_busy_process_uses_and_drops_every_handle_and_removes_nothing
        ),
        "forker",
    ))
    .unwrap()
    .expect_success(Duration::from_secs(60));
}
