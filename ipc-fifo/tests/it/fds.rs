//! Every descriptor the crate opens is close-on-exec from birth: those its handles keep (the
//! owner's directory and `O_PATH` pin, both ends, a keep-alive end, a private directory's) and
//! those that live only while an open waits or a handle is dropped (inotify instances, `tee`
//! probe pipes, directory listings; with the `tokio` feature also the runtime's, timerfds and
//! the duplicate a hang-up re-registers). Checked exactly, not by looking at the right moment: a
//! seccomp filter kills the process on any descriptor-making system call without
//! close-on-exec.

use std::collections::BTreeMap;
use std::time::Duration;

use ipc_fifo::{Error, Fifo, FifoReader, FifoWriter, KeepAlive, PrivateDir, RecordReader};
use ipc_testkit::{Proc, Watchdog, child, role, test_path};

use crate::intercept;

#[allow(unsafe_code)]
fn cloexec(fd: i32) -> Option<bool> {
    // SAFETY: F_GETFD reads no memory; a number that is not open fails with EBADF.
    let r = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    (r >= 0).then_some(r & libc::FD_CLOEXEC != 0)
}

/// Every open descriptor of this process: number → (close-on-exec, what it is), without the
/// listing's own.
fn fds() -> BTreeMap<i32, (bool, String)> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(fd) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let what = std::fs::read_link(e.path())
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        if let Some(c) = cloexec(fd) {
            if !what.ends_with("/fd") {
                out.insert(fd, (c, what));
            }
        }
    }
    out
}

fn workload() {
    let dir = PrivateDir::new("ipcrs-fifo-fds").unwrap();
    let (shared, _) = PrivateDir::open_or_create(dir.join("shared").unwrap()).unwrap();
    let fifo = Fifo::create(shared.join("f").unwrap()).unwrap();
    let (opener, _) = Fifo::open_or_create(fifo.path()).unwrap();
    let reader = FifoReader::options()
        .keep_alive(KeepAlive::On)
        .open(fifo.path())
        .unwrap();
    let writer = FifoWriter::open_timeout(fifo.path(), Duration::from_secs(10)).unwrap();
    writer.write_record(b"x").unwrap();
    writer
        .write_record_timeout(b"y", Duration::from_secs(10))
        .unwrap();
    let mut records = RecordReader::new(reader);
    assert_eq!(records.recv().unwrap(), Some(&b"x"[..]));
    assert_eq!(
        records.recv_timeout(Duration::from_secs(10)).unwrap(),
        Some(&b"y"[..])
    );
    let lonely = Fifo::create(dir.join("lonely").unwrap()).unwrap();
    // Waits: for a writer (inotify on the FIFO, tee probe pipes), for a reader (inotify on the
    // path), for a FIFO and its directory to appear (inotify on an ancestor).
    let short = Duration::from_millis(100);
    assert!(matches!(
        FifoReader::open_timeout(lonely.path(), short),
        Err(Error::TimedOut)
    ));
    assert!(matches!(
        FifoWriter::open_timeout(lonely.path(), short),
        Err(Error::TimedOut)
    ));
    let missing = dir.join("missing").unwrap().join("f");
    assert!(matches!(
        FifoWriter::open_timeout(&missing, short),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        FifoReader::open_timeout(&missing, short),
        Err(Error::NotFound { .. })
    ));
    // A reader that waits for a writer that comes (the tee probe sees it).
    let late = {
        let path = lonely.path().to_owned();
        std::thread::spawn(move || FifoWriter::open_timeout(path, Duration::from_secs(10)))
    };
    let r = FifoReader::open_timeout(lonely.path(), Duration::from_secs(10)).unwrap();
    let w = late.join().unwrap().unwrap();
    ipc_fifo::remove_stale(dir.join("none").unwrap()).unwrap_err();
    let mut kept = Fifo::create(dir.join("kept").unwrap()).unwrap();
    kept.persist();
    drop(kept);
    ipc_fifo::remove_stale(dir.join("kept").unwrap()).unwrap();
    let (r2, w2) = (
        FifoReader::try_from(std::os::fd::OwnedFd::from(r)).unwrap(),
        FifoWriter::try_from(std::os::fd::OwnedFd::from(w)).unwrap(),
    );
    #[cfg(feature = "tokio")]
    async_workload(&dir);
    drop((r2, w2, records, writer, opener, fifo, lonely, shared, dir));
}

/// The async ends' descriptors: the runtime's own, timerfds and inotify instances of waits
/// (timed out, or dropped half-way), `tee` probes, the duplicate a hang-up re-registers.
#[cfg(feature = "tokio")]
fn async_workload(dir: &PrivateDir) {
    use ipc_fifo::{AsyncFifoReader, AsyncFifoWriter};
    use std::io::Write;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let lonely = Fifo::create(dir.join("async-lonely").unwrap()).unwrap();
        let short = Duration::from_millis(100);
        let r = AsyncFifoReader::open_timeout(lonely.path(), short).await;
        assert!(matches!(r, Err(Error::TimedOut)), "{r:?}");
        let r = AsyncFifoWriter::open_timeout(lonely.path(), short).await;
        assert!(matches!(r, Err(Error::TimedOut)), "{r:?}");
        let missing = dir.join("async-missing").unwrap().join("f");
        let r = AsyncFifoWriter::open_timeout(&missing, short).await;
        assert!(matches!(r, Err(Error::NotFound { .. })), "{r:?}");
        // Waits dropped half-way.
        let wait = tokio::time::timeout(short, AsyncFifoReader::open(lonely.path()));
        assert!(wait.await.is_err());
        let wait = tokio::time::timeout(short, AsyncFifoWriter::open(lonely.path()));
        assert!(wait.await.is_err());
        let wait = tokio::time::timeout(short, AsyncFifoReader::open(&missing));
        assert!(wait.await.is_err());
        // A hang-up, then a writer back: the reader registers a duplicate of its descriptor.
        let mut r = AsyncFifoReader::try_open(lonely.path()).unwrap();
        let w = FifoWriter::try_open(lonely.path()).unwrap();
        (&w).write_all(b"1").unwrap();
        drop(w);
        let mut buf = [0u8; 4];
        assert_eq!(r.read(&mut buf).await.unwrap(), 1);
        assert_eq!(r.read(&mut buf).await.unwrap(), 0);
        let w = FifoWriter::try_open(lonely.path()).unwrap();
        assert!(tokio::time::timeout(short, r.read(&mut buf)).await.is_err());
        let mut w = AsyncFifoWriter::new(w).unwrap();
        w.write_all(b"2").await.unwrap();
        assert_eq!(r.read(&mut buf).await.unwrap(), 1);
        drop(w.into_blocking().await.unwrap());
        drop(r.into_blocking().unwrap());
    });
}

fn audit_role() {
    // tokio's process-wide descriptors first, before the snapshot: with tokio's `signal`
    // feature on (unified in from another package of the workspace, as under
    // `cargo xtask sanitize --all-features`), the first runtime makes tokio's signal
    // socketpair, which lives until exit by design.
    #[cfg(feature = "tokio")]
    drop(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
    );
    let before = fds();
    // While the handles live: every descriptor they keep is close-on-exec.
    {
        let dir = PrivateDir::new("ipcrs-fifo-fds").unwrap();
        let fifo = Fifo::create(dir.join("f").unwrap()).unwrap();
        let r = FifoReader::options()
            .keep_alive(KeepAlive::On)
            .try_open(fifo.path())
            .unwrap();
        let w = FifoWriter::try_open(fifo.path()).unwrap();
        let ours: Vec<_> = fds()
            .into_iter()
            .filter(|(fd, (_, what))| before.get(fd).is_none_or(|(_, w)| w != what))
            .collect();
        // The dir's descriptor, the FIFO's directory and pin, two ends and a keep-alive end.
        assert!(ours.len() >= 6, "{ours:?}");
        for (fd, (c, what)) in &ours {
            assert!(c, "descriptor {fd} ({what}) is not close-on-exec");
        }
        drop((r, w, fifo, dir));
    }
    // Everything else, exactly: the process dies if a descriptor is made without it.
    if !intercept::require_cloexec() {
        eprintln!("skipped the exact audit: no seccomp filter here");
    }
    workload();
    // And every descriptor is closed again.
    let after: Vec<_> = fds()
        .into_iter()
        .filter(|(fd, (_, what))| before.get(fd).is_none_or(|(_, w)| w != what))
        .collect();
    assert!(after.is_empty(), "descriptors left open: {after:?}");
}

#[test]
fn every_descriptor_the_crate_opens_is_close_on_exec_and_closed_again() {
    if role().as_deref() == Some("audit") {
        return audit_role();
    }
    let _wd = Watchdog::new("cloexec", Duration::from_secs(90));
    // In a process of its own: the filter stays for life, and no other test's descriptors
    // come and go meanwhile.
    let mut p = Proc::spawn(&mut child(
        &test_path!(every_descriptor_the_crate_opens_is_close_on_exec_and_closed_again),
        "audit",
    ))
    .unwrap();
    let status = p.wait_timeout(Duration::from_secs(60)).unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_ne!(
        status.signal(),
        Some(libc::SIGSYS),
        "a descriptor was made without close-on-exec"
    );
    assert!(status.success(), "{status}");
}
