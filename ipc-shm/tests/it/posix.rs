//! POSIX named segments: create/open semantics, sizes, zeros, shrink, a full /dev/shm.

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use ipc_shm::{Error, Opened, Shm, Size};
use ipc_testkit::{Proc, Watchdog, child, posix_name, role, test_path};

use crate::dev_shm;

#[test]
fn create_is_exclusive_zeroed_and_unlinked_on_drop() {
    let name = posix_name("shm");
    let owner = Shm::create(&name, 3 * 4096).unwrap();
    assert!(owner.is_owner());
    assert_eq!(owner.len(), 3 * 4096);
    assert!(
        owner
            .read_vec::<u64>(0, 3 * 512)
            .unwrap()
            .iter()
            .all(|&w| w == 0)
    );
    assert!(matches!(
        Shm::create(&name, 4096),
        Err(Error::AlreadyExists { .. })
    ));
    let opener = Shm::open(&name, 3 * 4096).unwrap();
    assert!(!opener.is_owner());
    owner.write::<u64>(4096, &0xfeed).unwrap();
    assert_eq!(opener.read::<u64>(4096).unwrap(), 0xfeed);
    assert!(matches!(
        Shm::open(&name, 4096),
        Err(Error::SizeMismatch {
            expected: Size::Exact(4096),
            actual: 12288,
            ..
        })
    ));
    drop(opener);
    assert!(dev_shm(&name).exists(), "an opener removes nothing");
    drop(owner);
    assert!(!dev_shm(&name).exists(), "the owner unlinks on drop");
    assert!(matches!(
        Shm::open(&name, 4096),
        Err(Error::NotFound { .. })
    ));
}

#[test]
fn open_or_create_says_which_happened_and_persist_keeps_the_name() {
    let name = posix_name("ooc");
    let opts = Shm::options().size(4096);
    let (a, how_a) = opts.open_or_create(&name).unwrap();
    let (b, how_b) = opts.open_or_create(&name).unwrap();
    assert_eq!((how_a, how_b), (Opened::Created, Opened::Existing));
    assert!(a.is_owner() && !b.is_owner());
    drop(b);
    let mut kept = a;
    kept.persist();
    assert!(kept.is_owner(), "the owner until dropped");
    drop(kept);
    assert!(dev_shm(&name).exists());
    ipc_shm::posix::unlink(&name).unwrap();
    assert!(!dev_shm(&name).exists());
}

#[test]
fn bad_names_and_sizes_fail_before_any_side_effect() {
    for bad in ["noslash", "/", "/a/b", "/..", "/."] {
        assert!(
            matches!(Shm::create(bad, 4096), Err(Error::InvalidName { .. })),
            "{bad}"
        );
        assert!(matches!(
            Shm::open(bad, 4096),
            Err(Error::InvalidName { .. })
        ));
    }
    let long = format!("/{}", "x".repeat(256));
    assert!(matches!(
        Shm::create(&long, 4096),
        Err(Error::InvalidName { .. })
    ));
    // Huge sizes are tested in a child under RLIMIT_AS (sizes.rs); zero here.
    let name = posix_name("size");
    assert!(matches!(
        Shm::create(&name, 0),
        Err(Error::InvalidSize { size: 0, .. })
    ));
    assert!(!dev_shm(&name).exists());
    assert!(matches!(
        ipc_shm::Anon::new(0),
        Err(Error::InvalidSize { size: 0, .. })
    ));
}

#[test]
fn read_only_open_refuses_writes() {
    let name = posix_name("ro");
    let owner = Shm::create(&name, 4096).unwrap();
    owner.write_bytes(0, b"abc").unwrap();
    let ro = Shm::options()
        .size(4096)
        .access(ipc_shm::Access::ReadOnly)
        .open(&name)
        .unwrap();
    assert!(!ro.is_writable());
    assert!(matches!(ro.write_bytes(0, b"x"), Err(Error::ReadOnly)));
    assert!(matches!(
        ro.atomic::<std::sync::atomic::AtomicU64>(0),
        Err(Error::ReadOnly)
    ));
    assert!(matches!(ipc_shm::Ring::open(&ro), Err(Error::ReadOnly)));
    let mut buf = [0; 3];
    ro.read_bytes(0, &mut buf).unwrap();
    assert_eq!(&buf, b"abc");
}

#[test]
fn size_zero_object_is_not_ready() {
    let name = posix_name("zero");
    let _rm = crate::RmOnDrop(dev_shm(&name));
    std::fs::File::create(dev_shm(&name)).unwrap();
    assert!(matches!(
        Shm::open(&name, 4096),
        Err(Error::NotReady { .. })
    ));
    let r = Shm::options()
        .max_size(4096)
        .wait_ready(Duration::from_millis(20))
        .open(&name);
    assert!(matches!(r, Err(Error::NotReady { .. })));
}

/// A peer with write access shrinks a named segment: the documented outcome is that
/// `check_size` reports it and touching a page past the new end raises SIGBUS.
#[test]
fn a_peer_shrinking_a_named_segment_is_detected_and_past_the_end_is_sigbus() {
    if role().as_deref() == Some("shrinker") {
        let name = std::env::var("SHM_NAME").unwrap();
        let seg = Shm::open(&name, 8192).unwrap();
        let file =
            std::fs::File::from(std::os::fd::AsFd::as_fd(&seg).try_clone_to_owned().unwrap());
        file.set_len(4096).unwrap();
        assert!(matches!(
            seg.check_size(),
            Err(Error::SizeMismatch {
                expected: Size::Exact(8192),
                actual: 4096,
                ..
            })
        ));
        assert_eq!(seg.read::<u64>(0).unwrap(), 7, "the first page still works");
        let _ = seg.read::<u64>(4096); // past the end of the file: SIGBUS
        std::process::exit(0);
    }
    let _wd = Watchdog::new("shrink", Duration::from_secs(20));
    let name = posix_name("shrink");
    let owner = Shm::create(&name, 8192).unwrap();
    owner.write::<u64>(0, &7).unwrap();
    let mut c = child(
        &test_path!(a_peer_shrinking_a_named_segment_is_detected_and_past_the_end_is_sigbus),
        "shrinker",
    );
    c.env("SHM_NAME", &name);
    let status = Proc::spawn(&mut c)
        .unwrap()
        .wait_timeout(Duration::from_secs(15))
        .unwrap();
    assert_eq!(status.signal(), Some(libc_sigbus()), "{status:?}");
    assert!(matches!(
        owner.check_size(),
        Err(Error::SizeMismatch { .. })
    ));
}

fn libc_sigbus() -> i32 {
    7 // SIGBUS on Linux x86, arm, riscv
}

/// A full /dev/shm: a child in its own IPC and mount namespaces with a 64 KiB tmpfs on /dev/shm
/// creates an 8 MiB segment: `NoSpace`, no SIGBUS, nothing left behind.
#[test]
fn full_dev_shm_is_a_clean_no_space_error() {
    if role().as_deref() == Some("full") {
        let name = posix_name("full");
        let r = Shm::create(&name, 8 << 20);
        assert!(matches!(r, Err(Error::NoSpace { .. })), "{r:?}");
        assert!(!dev_shm(&name).exists(), "nothing left behind");
        let entries = std::fs::read_dir("/dev/shm").unwrap().count();
        assert_eq!(entries, 0);
        // A segment that fits still works in the same namespace.
        let small = Shm::create(&posix_name("fits"), 16 << 10).unwrap();
        small.fill(0, 16 << 10, 0xa5).unwrap();
        println!("FULL-OK");
        return;
    }
    if std::process::Command::new("unshare")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: no unshare(1)");
        return;
    }
    let _wd = Watchdog::new("full", Duration::from_secs(30));
    let exe = std::env::current_exe().unwrap();
    let mut c = std::process::Command::new("unshare");
    c.args(["--ipc", "--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount -t tmpfs -o size=64k tmpfs /dev/shm && exec \"$0\" \"$@\"")
        .arg(exe)
        .args([
            &test_path!(full_dev_shm_is_a_clean_no_space_error),
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(ipc_testkit::ROLE_ENV, "full")
        .stdout(std::process::Stdio::piped());
    let mut p = Proc::spawn(&mut c).unwrap();
    let out = p.inner().stdout.take().unwrap();
    let status = p.wait_timeout(Duration::from_secs(20)).unwrap();
    let text = std::io::read_to_string(out).unwrap();
    assert!(status.success(), "{status:?}: {text}");
    assert_eq!(status.signal(), None, "no SIGBUS");
    assert!(text.contains("FULL-OK"), "{text}");
}

#[test]
fn into_owned_fd_keeps_the_object_alive_after_the_owner_unlinks() {
    let name = posix_name("fd");
    let seg = Shm::create(&name, 4096).unwrap();
    seg.write_bytes(0, b"still here").unwrap();
    let fd = std::os::fd::OwnedFd::from(seg);
    assert!(!dev_shm(&name).exists(), "the owner unlinked the name");
    let mut file = std::fs::File::from(fd);
    assert_eq!(file.metadata().unwrap().len(), 4096);
    let mut buf = [0u8; 10];
    std::io::Read::read_exact(&mut file, &mut buf).unwrap();
    assert_eq!(&buf, b"still here");
}

/// One limit for names, before any system call: 255 bytes after the slash work for create,
/// open, open_or_create, remove_stale and unlink; 256 are InvalidName for all of them.
#[test]
fn a_255_byte_name_works_everywhere_and_256_fails_everywhere_alike() {
    let base = posix_name("n");
    let long = format!("{base}{}", "x".repeat(256 - base.len()));
    assert_eq!(long.len(), 256, "a slash and 255 bytes");
    let owner = Shm::create(&long, 4096).unwrap();
    let opener = Shm::open(&long, 4096).unwrap();
    let (again, how) = Shm::open_or_create(&long, 4096).unwrap();
    assert_eq!(how, Opened::Existing);
    assert!(matches!(
        ipc_shm::remove_stale(&long),
        Err(Error::OwnerAlive { .. })
    ));
    drop((opener, again));
    let mut owner = owner;
    owner.persist();
    drop(owner);
    ipc_shm::unlink(&long).unwrap();
    assert!(!dev_shm(&long).exists());

    let too_long = format!("{long}y");
    let checks: [(&str, ipc_shm::Result<()>); 5] = [
        ("create", Shm::create(&too_long, 4096).map(drop)),
        ("open", Shm::open(&too_long, 4096).map(drop)),
        (
            "open_or_create",
            Shm::open_or_create(&too_long, 4096).map(drop),
        ),
        ("remove_stale", ipc_shm::remove_stale(&too_long)),
        ("unlink", ipc_shm::unlink(&too_long)),
    ];
    for (what, r) in checks {
        assert!(
            matches!(&r, Err(Error::InvalidName { name, reason }) if *name == too_long && reason.contains("255")),
            "{what}: {r:?}"
        );
    }
}
