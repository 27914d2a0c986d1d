//! Sizes: every constructor refuses what the address space cannot map before any system call,
//! and every opener bounds a size its peer chose. Huge sizes only ever in a child under
//! RLIMIT_AS (and RLIMIT_FSIZE, so that even a regression could not reserve memory).

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use ipc_shm::{Anon, Error, MAX_SIZE, Memfd, Ring, Seals, Shm, Size, SysvShm};
use ipc_testkit::{Proc, Watchdog, child, posix_name, role, test_path};

use crate::{RmOnDrop, dev_shm, open_fds};

const AS_LIMIT: u64 = 2 << 30;
const FSIZE_LIMIT: u64 = 64 << 20;

fn set_limit(res: rustix::process::Resource, soft: u64) {
    let old = rustix::process::getrlimit(res);
    rustix::process::setrlimit(
        res,
        rustix::process::Rlimit {
            current: Some(soft),
            maximum: old.maximum,
        },
    )
    .unwrap();
}

/// A sparse memfd of `size` bytes (ftruncate: nothing is allocated), sealed against resizing.
fn sparse_memfd(size: u64) -> OwnedFd {
    let fd = rustix::fs::memfd_create(
        "sparse",
        rustix::fs::MemfdFlags::CLOEXEC | rustix::fs::MemfdFlags::ALLOW_SEALING,
    )
    .unwrap();
    rustix::fs::ftruncate(&fd, size).unwrap();
    rustix::fs::fcntl_add_seals(
        &fd,
        rustix::fs::SealFlags::SHRINK | rustix::fs::SealFlags::GROW,
    )
    .unwrap();
    fd
}

fn invalid<T: std::fmt::Debug>(r: ipc_shm::Result<T>, what: &str) {
    assert!(matches!(r, Err(Error::InvalidSize { .. })), "{what}: {r:?}");
}

fn limits_role() {
    // A sealed 1 TiB memfd and a 1 TiB /dev/shm file, both sparse (made before the limits).
    let tib = sparse_memfd(1 << 40);
    let big_name = posix_name("tib");
    let big_path = dev_shm(&big_name);
    let _rm = RmOnDrop(big_path.clone());
    std::fs::File::create_new(&big_path)
        .unwrap()
        .set_len(1 << 40)
        .unwrap();
    set_limit(rustix::process::Resource::As, AS_LIMIT);
    set_limit(rustix::process::Resource::Fsize, FSIZE_LIMIT);

    // Above MAX_SIZE, above RLIMIT_AS, above RLIMIT_FSIZE: InvalidSize from every constructor.
    let name = posix_name("huge");
    let key = loop {
        let k = ipc_testkit::sysv_key();
        if matches!(SysvShm::open(k, 4096), Err(Error::NotFound { .. })) {
            break k;
        }
    };
    for size in [u64::MAX, i64::MAX as u64, 1 << 62, MAX_SIZE + 1, 3 << 30] {
        invalid(Shm::create(&name, size), "Shm::create");
        invalid(Memfd::create("huge", size), "Memfd::create");
        invalid(Memfd::create_huge("huge", size), "Memfd::create_huge");
        invalid(Anon::new(size), "Anon::new");
        invalid(Anon::new_huge(size), "Anon::new_huge");
        invalid(SysvShm::create(key, size), "SysvShm::create");
        assert!(!dev_shm(&name).exists(), "nothing left behind");
    }
    for cap in [1usize << 62, 1 << 48, usize::MAX / 2 + 1] {
        invalid(Ring::segment_size(cap), "Ring::segment_size");
    }
    // Past RLIMIT_FSIZE (but mappable): refused up front, not killed by SIGXFSZ in fallocate.
    invalid(
        Shm::create(&name, 128 << 20),
        "Shm::create past RLIMIT_FSIZE",
    );
    invalid(
        Memfd::create("fsize", 128 << 20),
        "Memfd::create past RLIMIT_FSIZE",
    );

    // Before any system call that makes anything: with an object already at the name (or
    // key), the size is still what is refused...
    let taken = Shm::create(&name, 4096).unwrap();
    invalid(
        Shm::create(&name, i64::MAX as u64),
        "Shm::create over an existing name",
    );
    let seg = SysvShm::create(key, 4096).unwrap();
    invalid(
        SysvShm::create(key, 1 << 62),
        "SysvShm::create over an existing key",
    );
    drop((taken, seg));
    // ...and with no descriptor left to open, so would be a memfd_create or an open.
    let before = open_fds();
    let lowest_free = (0..).find(|fd| !before.contains(fd)).unwrap() as u64;
    set_limit(rustix::process::Resource::Nofile, lowest_free);
    invalid(
        Memfd::create("nofd", i64::MAX as u64),
        "Memfd::create without descriptors",
    );
    invalid(
        Shm::create(&name, 1 << 62),
        "Shm::create without descriptors",
    );
    set_limit(rustix::process::Resource::Nofile, 1024);
    assert_eq!(open_fds(), before, "no descriptor left open");

    // Openers bound what the peer chose: a 1 TiB memfd, sealed, is refused unless accepted.
    let dup = || tib.as_fd().try_clone_to_owned().unwrap();
    let r = Memfd::from_fd(dup(), Seals::SIZE, Size::AtMost(1 << 20));
    assert!(
        matches!(r, Err(Error::SizeMismatch { actual, .. }) if actual == 1 << 40),
        "{r:?}"
    );
    let r = Memfd::from_fd(dup(), Seals::SIZE, 4096);
    assert!(matches!(r, Err(Error::SizeMismatch { .. })), "{r:?}");
    // Accepted by the caller, yet more than this process may map: refused before mmap.
    invalid(
        Memfd::from_fd(dup(), Seals::SIZE, 1 << 40),
        "Memfd::from_fd",
    );
    let r = Memfd::from_fd(dup(), Seals::SIZE, Size::AtMost(u64::MAX));
    assert!(matches!(r, Err(Error::InvalidSize { .. })), "{r:?}");
    // A named segment of 1 TiB: the opener states the size, or is told to.
    let r = Shm::options().open(&big_name);
    assert!(matches!(r, Err(Error::SizeRequired)), "{r:?}");
    let r = Shm::open(&big_name, Size::AtMost(1 << 20));
    assert!(matches!(r, Err(Error::SizeMismatch { .. })), "{r:?}");
    let r = Shm::options().max_size(1 << 20).open(&big_name);
    assert!(matches!(r, Err(Error::SizeMismatch { .. })), "{r:?}");
    invalid(Shm::open(&big_name, 1 << 40), "Shm::open of 1 TiB");
    let r = Shm::from_fd(
        std::fs::File::open(&big_path).unwrap().into(),
        Size::AtMost(1 << 20),
    );
    assert!(matches!(r, Err(Error::SizeMismatch { .. })), "{r:?}");
    // System V: attach and open bound the size too.
    let seg = SysvShm::create(ipc_shm::Key::PRIVATE, 1 << 20).unwrap();
    let r = SysvShm::attach(seg.id(), Size::AtMost(4096));
    assert!(matches!(r, Err(Error::SizeMismatch { .. })), "{r:?}");
    let r = SysvShm::options().attach(seg.id());
    assert!(matches!(r, Err(Error::SizeRequired)), "{r:?}");
    assert_eq!(
        SysvShm::attach(seg.id(), Size::AtMost(1 << 20))
            .unwrap()
            .len(),
        1 << 20
    );
    println!("LIMITS-OK");
}

#[test]
fn huge_sizes_are_refused_up_front_and_openers_bound_a_peers_size() {
    if role().as_deref() == Some("limits") {
        return limits_role();
    }
    // AddressSanitizer maps terabytes of shadow memory: it cannot run under the RLIMIT_AS
    // that keeps these probes harmless (and huge sizes are probed only under that limit).
    if ipc_testkit::skip_under_sanitizer("huge sizes under RLIMIT_AS") {
        return;
    }
    let _wd = Watchdog::new("limits", Duration::from_secs(60));
    let mut c = child(
        &test_path!(huge_sizes_are_refused_up_front_and_openers_bound_a_peers_size),
        "limits",
    );
    c.stdout(std::process::Stdio::piped());
    let mut p = Proc::spawn(&mut c).unwrap();
    let out = p.inner().stdout.take().unwrap();
    let status = p.wait_timeout(Duration::from_secs(50)).unwrap();
    let text = std::io::read_to_string(out).unwrap();
    assert!(status.success(), "{status:?}: {text}");
    assert!(text.contains("LIMITS-OK"), "{text}");
}

/// A hostile writer's ring claims a message as large as its (large) capacity: the reader never
/// maps more than it accepted, and `recv_vec` allocates only what the message holds.
#[test]
fn a_large_hostile_ring_is_bounded_by_the_readers_size() {
    let cap = 8usize << 20;
    let size = Ring::segment_size(cap).unwrap();
    let fd = sparse_memfd(size);
    let writer_view =
        Memfd::from_fd(fd.as_fd().try_clone_to_owned().unwrap(), Seals::SIZE, size).unwrap();
    Ring::create(&writer_view).unwrap();
    // The claim: one record as long as the ring, committed at position 0 (its header carries
    // the length and position 0's tag).
    writer_view
        .write::<u64>(384, &((0x8000_0000u64 << 32) | (cap - 72) as u64))
        .unwrap();
    // A reader that accepts at most 1 MiB refuses the segment outright.
    let r = Memfd::from_fd(
        fd.as_fd().try_clone_to_owned().unwrap(),
        Seals::SIZE,
        Size::AtMost(1 << 20),
    );
    assert!(matches!(r, Err(Error::SizeMismatch { .. })), "{r:?}");
    // One that accepts it gets the message, bounded by the capacity it accepted.
    let seg = Memfd::from_fd(fd, Seals::SIZE, Size::AtMost(size)).unwrap();
    let mut rx = Ring::open(&seg).unwrap().into_reader().unwrap();
    let v = rx.try_recv_vec().unwrap();
    assert_eq!(v.len(), cap - 72);
    assert!(v.len() <= rx.max_message());
    assert!(matches!(
        rx.try_recv_vec(),
        Err(Error::WouldBlock | Error::PeerGone)
    ));
    assert!(matches!(
        rx.recv_vec_timeout(Duration::from_millis(5)),
        Err(Error::TimedOut | Error::PeerGone)
    ));
}
