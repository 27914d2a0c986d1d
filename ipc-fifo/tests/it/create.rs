use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::time::Duration;

use ipc_fifo::{Error, Fifo, FifoReader};
use ipc_testkit::{Proc, Watchdog, child, role, test_path};

use crate::{CHILD_LIMIT, PATH_ENV, child_path, place};

fn mode_of(path: &std::path::Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

/// In a child (umask is process-wide): create under the umask given by the role, check modes.
fn create_under_umask(mask: u32) {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(mask));
    let dir = child_path();
    let a = Fifo::create(dir.join("default")).unwrap();
    assert_eq!(
        mode_of(a.path()),
        0o600,
        "default mode under umask {mask:03o}"
    );
    let b = Fifo::options()
        .mode(0o640)
        .create(dir.join("explicit"))
        .unwrap();
    assert_eq!(mode_of(b.path()), 0o640, "mode 0640 under umask {mask:03o}");
    let c = Fifo::options()
        .mode(0o000)
        .create(dir.join("none"))
        .unwrap();
    assert_eq!(mode_of(c.path()), 0o000, "mode 0 under umask {mask:03o}");
    assert!(
        std::fs::symlink_metadata(a.path())
            .unwrap()
            .file_type()
            .is_fifo()
    );
}

#[test]
fn created_mode_is_exact_under_any_umask() {
    match role().as_deref() {
        Some("umask0") => return create_under_umask(0),
        Some("umask077") => return create_under_umask(0o077),
        Some("umask777") => return create_under_umask(0o777),
        _ => {}
    }
    let _wd = Watchdog::new(
        "created_mode_is_exact_under_any_umask",
        Duration::from_secs(60),
    );
    let dir = place();
    for r in ["umask0", "umask077", "umask777"] {
        Proc::spawn(
            child(&test_path!(created_mode_is_exact_under_any_umask), r).env(PATH_ENV, dir.path()),
        )
        .unwrap()
        .expect_success(CHILD_LIMIT);
    }
    // The children's owners removed their FIFOs.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn creating_twice_is_already_exists() {
    let dir = place();
    let path = dir.join("twice").unwrap();
    let first = Fifo::create(&path).unwrap();
    let ino = std::fs::metadata(&path).unwrap().ino();
    assert!(matches!(
        Fifo::create(&path),
        Err(Error::AlreadyExists { .. })
    ));
    // The failed create did not touch the first FIFO, and it is still there.
    assert_eq!(std::fs::metadata(&path).unwrap().ino(), ino);
    drop(first);
    assert!(!path.exists());
    // Over a regular file, a directory, a symlink: AlreadyExists too.
    std::fs::write(dir.join("file").unwrap(), b"x").unwrap();
    std::os::unix::fs::symlink("/nonexistent", dir.join("dangling").unwrap()).unwrap();
    for name in ["file", "dangling"] {
        assert!(matches!(
            Fifo::create(dir.join(name).unwrap()),
            Err(Error::AlreadyExists { .. })
        ));
    }
    assert!(matches!(
        Fifo::create(dir.path()),
        Err(Error::AlreadyExists { .. })
    ));
}

#[test]
fn owner_removes_on_drop_and_opener_does_not() {
    let dir = place();
    let path = dir.join("owned").unwrap();
    let owner = Fifo::create(&path).unwrap();
    let reader = FifoReader::try_open(&path).unwrap();
    drop(reader);
    assert!(path.exists(), "an opener must not remove the FIFO");
    drop(owner);
    assert!(!path.exists(), "the owner removes the FIFO on drop");

    // persist() keeps it; unlink() removes it.
    let mut kept = Fifo::create(&path).unwrap();
    kept.persist();
    assert!(kept.is_owner(), "the owner until dropped");
    drop(kept);
    assert!(path.exists());
    ipc_fifo::unlink(&path).unwrap();
    assert!(!path.exists());

    // remove() reports; a second owner-less unlink is NotFound.
    let owner = Fifo::create(&path).unwrap();
    owner.remove().unwrap();
    assert!(matches!(
        ipc_fifo::unlink(&path),
        Err(Error::NotFound { .. })
    ));

    // unlink() refuses what is not a FIFO.
    let file = dir.join("file").unwrap();
    std::fs::write(&file, b"keep me").unwrap();
    assert!(matches!(
        ipc_fifo::unlink(&file),
        Err(Error::NotAFifo { .. })
    ));
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
}

#[test]
fn owner_does_not_remove_a_file_that_replaced_its_fifo() {
    let dir = place();
    let path = dir.join("replaced").unwrap();
    let owner = Fifo::create(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, b"someone else's").unwrap();
    drop(owner);
    assert_eq!(std::fs::read(&path).unwrap(), b"someone else's");
}

#[test]
fn owner_drop_never_panics_whatever_became_of_the_path() {
    let dir = place();
    let path = dir.join("gone").unwrap();

    // Removed by someone else: drop is silent; `remove` reports it.
    let owner = Fifo::create(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    drop(owner);
    let owner = Fifo::create(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(owner.remove(), Err(Error::NotFound { .. })));

    // Replaced by a directory, or by another FIFO of ours (a new inode): left alone.
    let owner = Fifo::create(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    drop(owner);
    assert!(path.is_dir());
    std::fs::remove_dir(&path).unwrap();
    let owner = Fifo::create(&path).unwrap();
    let moved = dir.join("moved").unwrap();
    std::fs::rename(&path, &moved).unwrap();
    let other = Fifo::create(&path).unwrap();
    drop(owner);
    assert!(path.exists(), "removed a FIFO it did not create");
    assert!(moved.exists(), "followed its FIFO to a new name");
    drop(other);
    ipc_fifo::unlink(&moved).unwrap();

    // Its whole directory is gone.
    let sub = ipc_fifo::PrivateDir::open_or_create(dir.join("sub").unwrap())
        .unwrap()
        .0;
    let owner = Fifo::create(sub.join("f").unwrap()).unwrap();
    let sub_path = sub.path().to_owned();
    drop(sub);
    std::fs::remove_dir_all(&sub_path).unwrap();
    drop(owner);

    // Made unreachable (a directory we may not search): see the unprivileged role below.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// The child role: creates an owner and forks; the forked child drops its inherited copy.
///
/// This role process has a few threads (the test harness's), so the forked child keeps to
/// what is safe there: the owner's drop makes `getpid` and (were it the creator) `lstat` /
/// `unlink` system calls, and frees one `PathBuf` (glibc's `fork` re-initialises `malloc`
/// in the child); then `_exit`.
#[allow(unsafe_code)]
fn fork_role() {
    let path = child_path();
    let owner = Fifo::create(&path).unwrap();
    // SAFETY: see above; the child never returns into the caller's frames.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        drop(owner);
        let code = i32::from(!path.exists());
        // SAFETY: `_exit` ends the child without running the parent's destructors or handlers.
        unsafe { libc::_exit(code) };
    }
    assert!(pid > 0, "fork failed");
    let pid = rustix::process::Pid::from_raw(pid).unwrap();
    let (_, status) = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty())
        .unwrap()
        .unwrap();
    assert_eq!(
        status.exit_status(),
        Some(0),
        "the forked child's drop removed the FIFO"
    );
    assert!(
        path.exists(),
        "a forked child's drop removed the parent's FIFO"
    );
    drop(owner);
    assert!(!path.exists(), "the creating process removes it");
}

#[test]
fn forked_child_does_not_remove_the_owners_fifo() {
    if role().as_deref() == Some("fork") {
        return fork_role();
    }
    let _wd = Watchdog::new(
        "forked_child_does_not_remove_the_owners_fifo",
        Duration::from_secs(60),
    );
    let dir = place();
    let path = dir.join("forked").unwrap();
    Proc::spawn(
        child(
            &test_path!(forked_child_does_not_remove_the_owners_fifo),
            "fork",
        )
        .env(PATH_ENV, &path),
    )
    .unwrap()
    .expect_success(CHILD_LIMIT);
    assert!(!path.exists());
}

/// Child role: as uid 65534 (no root bypass) under umask 0777, which strips even our own bits
/// from `mkfifo`'s mode, so `create` must take its `chmod` fallback.
fn unprivileged_umask_role() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o777));
    rustix::thread::set_thread_uid(rustix::process::Uid::from_raw(65534)).unwrap();
    let dir = child_path();
    let a = Fifo::create(dir.join("default")).unwrap();
    assert_eq!(mode_of(a.path()), 0o600);
    let b = Fifo::options()
        .mode(0o640)
        .create(dir.join("explicit"))
        .unwrap();
    assert_eq!(mode_of(b.path()), 0o640);
    // And an unprivileged opener of its own FIFO is fine.
    drop(ipc_fifo::FifoReader::try_open(a.path()).unwrap());

    // An owner whose path can no longer be reached (its directory made 0000; no root bypass
    // here) drops without a panic and removes nothing.
    let c = Fifo::create(dir.join("unreachable")).unwrap();
    std::fs::set_permissions(&dir, PermissionsExt::from_mode(0o000)).unwrap();
    drop(c);
    std::fs::set_permissions(&dir, PermissionsExt::from_mode(0o700)).unwrap();
    assert!(dir.join("unreachable").exists());
    ipc_fifo::unlink(dir.join("unreachable")).unwrap();
}

#[test]
fn created_mode_is_exact_for_an_unprivileged_user_under_umask_777() {
    if role().as_deref() == Some("nobody") {
        return unprivileged_umask_role();
    }
    let _wd = Watchdog::new("unprivileged_umask", Duration::from_secs(60));
    let dir = place();
    std::fs::set_permissions(dir.path(), PermissionsExt::from_mode(0o711)).unwrap();
    let theirs = dir.join("nobody").unwrap();
    std::fs::create_dir(&theirs).unwrap();
    rustix::fs::chown(&theirs, Some(rustix::process::Uid::from_raw(65534)), None).unwrap();
    Proc::spawn(
        child(
            &test_path!(created_mode_is_exact_for_an_unprivileged_user_under_umask_777),
            "nobody",
        )
        .env(PATH_ENV, &theirs),
    )
    .unwrap()
    .expect_success(CHILD_LIMIT);
    assert_eq!(
        std::fs::read_dir(&theirs).unwrap().count(),
        0,
        "the owners removed their FIFOs"
    );
}

/// The names in `IN_OPEN` events read so far from the non-blocking inotify descriptor `ino`.
fn opened_names(ino: &std::os::fd::OwnedFd) -> Vec<String> {
    use rustix::fs::inotify;
    let mut buf = [std::mem::MaybeUninit::uninit(); 4096];
    let mut reader = inotify::Reader::new(ino, &mut buf);
    let mut names = Vec::new();
    while let Ok(ev) = reader.next() {
        if ev.events().contains(inotify::ReadFlags::OPEN) {
            if let Some(name) = ev.file_name() {
                names.push(name.to_string_lossy().into_owned());
            }
        }
    }
    names
}

#[test]
fn create_never_opens_the_fifo_so_no_reader_appears() {
    use rustix::fs::inotify;
    let dir = place();
    let ino =
        inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK).unwrap();
    inotify::add_watch(&ino, dir.path(), inotify::WatchFlags::OPEN).unwrap();
    let a = Fifo::create(dir.join("a").unwrap()).unwrap();
    let b = Fifo::options()
        .mode(0o644)
        .create(dir.join("b").unwrap())
        .unwrap();
    assert_eq!(mode_of(b.path()), 0o644);
    assert!(opened_names(&ino).is_empty(), "create opened the FIFO");
    // The watch works: an open is reported.
    drop(FifoReader::try_open(a.path()).unwrap());
    assert_eq!(opened_names(&ino), ["a"]);
}

/// Child role, in a mount namespace of its own where `/proc` is an empty tmpfs: `create` takes
/// its fallback (open the FIFO for an instant and `fchmod`, or `chmod` the path when the umask
/// took our own read bit), and a reader's wait has no inotify watch through `/proc/self/fd`.
fn no_proc_role() {
    use rustix::fs::Mode;
    assert!(
        !std::path::Path::new("/proc/self/fd").exists(),
        "/proc is still there"
    );
    let dir = child_path();
    rustix::process::umask(Mode::from_raw_mode(0o077));
    let a = Fifo::create(dir.join("a")).unwrap();
    assert_eq!(mode_of(a.path()), 0o600);
    let b = Fifo::options().mode(0o644).create(dir.join("b")).unwrap();
    assert_eq!(mode_of(b.path()), 0o644);
    drop((a, b));

    // The reader's wait for a writer, without the watch: still bounded, still typed.
    let c = Fifo::create(dir.join("c")).unwrap();
    let t = std::time::Instant::now();
    let r = FifoReader::open_timeout(c.path(), Duration::from_millis(200));
    assert!(matches!(r, Err(Error::TimedOut)), "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    drop(c);

    // As uid 65534 (no root bypass) under umask 0777: `chmod` of the path.
    rustix::process::umask(Mode::from_raw_mode(0o777));
    rustix::thread::set_thread_uid(rustix::process::Uid::from_raw(65534)).unwrap();
    let d = Fifo::create(dir.join("nobody").join("d")).unwrap();
    assert_eq!(mode_of(d.path()), 0o600);
}

/// A `pre_exec` hook: a mount namespace of the child's own, with an empty tmpfs on `/proc`.
/// Async-signal-safe: system calls on static C strings, and `io::Error` from errno.
#[allow(unsafe_code)]
fn hide_proc() -> std::io::Result<()> {
    // SAFETY: no pointers.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: static NUL-terminated strings; null type and data are allowed for a remount.
    let private = unsafe {
        libc::mount(
            c"none".as_ptr(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    };
    if private != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: static NUL-terminated strings; null data is allowed.
    let tmpfs = unsafe {
        libc::mount(
            c"none".as_ptr(),
            c"/proc".as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if tmpfs != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[test]
#[allow(unsafe_code)]
fn create_sets_the_exact_mode_without_proc_too() {
    use std::os::unix::process::CommandExt;
    if role().as_deref() == Some("no-proc") {
        return no_proc_role();
    }
    // AddressSanitizer reads /proc/self/maps as the child starts: with /proc hidden it dies
    // before the test runs. The normal build runs it.
    if ipc_testkit::skip_under_sanitizer("a child with /proc hidden (ASan needs /proc)") {
        return;
    }
    let _wd = Watchdog::new("no_proc", Duration::from_secs(60));
    let dir = place();
    std::fs::set_permissions(dir.path(), PermissionsExt::from_mode(0o711)).unwrap();
    let theirs = dir.join("nobody").unwrap();
    std::fs::create_dir(&theirs).unwrap();
    rustix::fs::chown(&theirs, Some(rustix::process::Uid::from_raw(65534)), None).unwrap();

    let mut cmd = child(
        &test_path!(create_sets_the_exact_mode_without_proc_too),
        "no-proc",
    );
    cmd.env(PATH_ENV, dir.path());
    // SAFETY: the hook runs in the child between fork and exec, where only async-signal-safe
    // calls are allowed: `hide_proc` makes three system calls and allocates nothing.
    unsafe { cmd.pre_exec(hide_proc) };
    let proc = match Proc::spawn(&mut cmd) {
        Ok(p) => p,
        // No mount namespaces for us here (not root, or a sandbox forbids them).
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EINVAL)) => {
            eprintln!("skipped: cannot hide /proc in a mount namespace: {e}");
            return;
        }
        Err(e) => panic!("spawn: {e}"),
    };
    proc.expect_success(CHILD_LIMIT);
    assert_eq!(std::fs::read_dir(&theirs).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

/// Child role: the FIFO `create` makes is swapped for a regular file (of someone else's) at
/// the moment `create` opens it by name (a seccomp hook, so no timing is involved). Whatever
/// `create` then does, it must not remove that file.
fn swap_role() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = child_path();
    let done = Arc::new(AtomicBool::new(false));
    let (d, flag) = (dir.clone(), Arc::clone(&done));
    let hooked = crate::intercept::on_o_path_open(move || {
        if flag.swap(true, Ordering::SeqCst) {
            return;
        }
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_fifo() {
                let name = e.file_name().to_string_lossy().into_owned();
                std::fs::rename(e.path(), d.join(format!("moved-{name}"))).unwrap();
                std::fs::write(e.path(), b"someone else's file").unwrap();
            }
        }
    });
    if !hooked {
        eprintln!("skipped: no seccomp user notification here");
        return;
    }
    let r = Fifo::create(dir.join("victim"));
    assert!(done.load(Ordering::SeqCst), "the hook never ran");
    assert!(r.is_err(), "create succeeded on a swapped FIFO: {r:?}");
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| std::fs::read(e.path()).unwrap())
        .collect();
    assert_eq!(
        files,
        [b"someone else's file".to_vec()],
        "create removed the file that replaced its FIFO"
    );
}

#[test]
fn a_failed_create_never_removes_what_replaced_its_fifo() {
    if role().as_deref() == Some("swap") {
        return swap_role();
    }
    let _wd = Watchdog::new("swap", Duration::from_secs(60));
    let dir = place();
    Proc::spawn(
        child(
            &test_path!(a_failed_create_never_removes_what_replaced_its_fifo),
            "swap",
        )
        .env(PATH_ENV, dir.path()),
    )
    .unwrap()
    .expect_success(CHILD_LIMIT);
}

/// The lowest limit on descriptor numbers that leaves exactly `free` numbers unused.
fn nofile_limit_leaving(free: usize) -> u64 {
    let used: std::collections::BTreeSet<u64> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
        .collect();
    // (The listing's own descriptor is closed again by now.)
    let mut left = free;
    let mut limit = 0u64;
    loop {
        if !used.contains(&limit) || limit == *used.iter().next_back().unwrap() + 1 {
            if left == 0 {
                return limit;
            }
            if !used.contains(&limit) {
                left -= 1;
            }
        }
        limit += 1;
    }
}

/// Child role: `create` with only 0, 1, 2, ... descriptors to spare. Each either works or
/// fails with EMFILE, and leaves nothing behind in the directory (no temporary name).
fn emfile_role() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let dir = child_path();
    let orig = getrlimit(Resource::Nofile);
    let mut worked = false;
    for free in 0..6 {
        let path = dir.join(format!("f{free}"));
        let limit = nofile_limit_leaving(free);
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(limit),
                maximum: orig.maximum,
            },
        )
        .unwrap();
        let r = Fifo::create(&path);
        setrlimit(Resource::Nofile, orig).unwrap();
        match r {
            Ok(f) => {
                worked = true;
                assert!(path.exists());
                drop(f);
            }
            Err(Error::Io(e)) => assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "{free}"),
            Err(e) => panic!("{free} free descriptors: {e:?}"),
        }
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "{free} free descriptors: left {left:?}");
    }
    assert!(worked, "never enough descriptors");
}

#[test]
fn create_out_of_descriptors_fails_cleanly_at_every_step() {
    if role().as_deref() == Some("emfile") {
        return emfile_role();
    }
    let _wd = Watchdog::new("emfile", Duration::from_secs(60));
    let dir = place();
    Proc::spawn(
        child(
            &test_path!(create_out_of_descriptors_fails_cleanly_at_every_step),
            "emfile",
        )
        .env(PATH_ENV, dir.path()),
    )
    .unwrap()
    .expect_success(CHILD_LIMIT);
}
