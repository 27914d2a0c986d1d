//! memfd: seals, refusing unsealed descriptors, passing one to a child.

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use ipc_shm::{Error, Memfd, Seals, Size};
use ipc_testkit::{Proc, Watchdog, child, fnv1a64, role, test_path};

#[test]
fn a_sealed_memfd_cannot_be_resized_and_an_unsealed_one_is_refused() {
    let m = Memfd::create("t", 8192).unwrap();
    assert!(m.read_vec::<u64>(0, 1024).unwrap().iter().all(|&w| w == 0));
    let unsealed = m.as_fd().try_clone_to_owned().unwrap();
    assert!(matches!(
        Memfd::from_fd(unsealed, Seals::SIZE, 8192),
        Err(Error::NotSealed { missing }) if missing == Seals::SIZE.bits()
    ));
    let mut m = m;
    m.seal(Seals::SHRINK | Seals::GROW).unwrap();
    assert!(m.seals().unwrap().contains(Seals::SIZE));
    let file = std::fs::File::from(m.as_fd().try_clone_to_owned().unwrap());
    let shrink = file.set_len(4096).unwrap_err();
    assert_eq!(shrink.raw_os_error(), Some(1), "EPERM: {shrink}");
    let grow = file.set_len(16384).unwrap_err();
    assert_eq!(grow.raw_os_error(), Some(1), "EPERM: {grow}");
    let peer = Memfd::from_fd(m.as_fd().try_clone_to_owned().unwrap(), Seals::SIZE, 8192).unwrap();
    assert_eq!(peer.len(), 8192);
    assert!(peer.is_writable(), "size seals leave it writable");
    assert!(
        peer.sealed_bytes().is_none(),
        "no &[u8] while it can change"
    );
}

#[test]
fn write_seal_makes_it_read_only_everywhere() {
    let mut m = Memfd::create("w", 4096).unwrap();
    m.write_bytes(0, b"constant").unwrap();
    m.seal(Seals::SIZE | Seals::WRITE | Seals::SEAL).unwrap();
    assert!(matches!(m.write_bytes(0, b"x"), Err(Error::ReadOnly)));
    assert_eq!(&m.sealed_bytes().unwrap()[..8], b"constant");
    assert!(matches!(
        m.seal(Seals::GROW),
        Err(Error::PermissionDenied { .. })
    ));
    let file = std::fs::File::from(m.as_fd().try_clone_to_owned().unwrap());
    use std::io::Write;
    assert!((&file).write_all(b"y").is_err(), "write(2) is refused too");
}

#[test]
fn a_write_seal_alone_lends_no_slice_because_the_file_can_still_shrink() {
    let mut m = Memfd::create("w-only", 8192).unwrap();
    m.write_bytes(4096, b"second page").unwrap();
    m.seal(Seals::WRITE).unwrap();
    assert!(!m.is_writable());
    assert!(m.sealed_bytes().is_none(), "a peer could still truncate it");
    let peer = Memfd::from_fd(
        m.as_fd().try_clone_to_owned().unwrap(),
        Seals::WRITE,
        Size::AtMost(8192),
    )
    .unwrap();
    assert!(!peer.is_writable() && peer.sealed_bytes().is_none());
    let mut buf = [0u8; 11];
    peer.read_bytes(4096, &mut buf).unwrap();
    assert_eq!(&buf, b"second page");
    drop(peer);
    // What the slice would have been exposed to: write-sealed, yet shrinkable.
    let file = std::fs::File::from(m.as_fd().try_clone_to_owned().unwrap());
    file.set_len(4096).unwrap();
    assert_eq!(m.seals().unwrap(), Seals::WRITE);
    drop(file);
    // Adding SHRINK once the size is settled makes it immutable for good.
    let mut m = Memfd::create("w-then-shrink", 4096).unwrap();
    m.seal(Seals::WRITE).unwrap();
    m.seal(Seals::SHRINK).unwrap();
    assert_eq!(m.sealed_bytes().map(<[u8]>::len), Some(4096));
}

#[test]
fn future_write_keeps_existing_mappings_and_refuses_new_writers() {
    let mut m = Memfd::create("fw", 4096).unwrap();
    m.seal(Seals::FUTURE_WRITE | Seals::SIZE).unwrap();
    assert!(m.seals().unwrap().contains(Seals::FUTURE_WRITE));
    assert!(m.is_writable(), "our mapping predates the seal");
    m.write_bytes(0, b"producer").unwrap();
    assert!(m.sealed_bytes().is_none(), "we can still write it");
    let peer = Memfd::from_fd(
        m.as_fd().try_clone_to_owned().unwrap(),
        Seals::FUTURE_WRITE | Seals::SIZE,
        4096,
    )
    .unwrap();
    assert!(!peer.is_writable(), "a new mapping is read-only");
    assert!(matches!(peer.write_bytes(0, b"x"), Err(Error::ReadOnly)));
    let mut buf = [0u8; 8];
    peer.read_bytes(0, &mut buf).unwrap();
    assert_eq!(&buf, b"producer");
    m.write_bytes(0, b"updated!").unwrap();
    peer.read_bytes(0, &mut buf).unwrap();
    assert_eq!(&buf, b"updated!", "the consumer sees the producer's writes");
    let file = std::fs::File::from(m.as_fd().try_clone_to_owned().unwrap());
    use std::io::Write;
    let e = (&file).write_all(b"y").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(1), "write(2) is EPERM: {e}");
}

#[test]
fn bad_memfd_sizes_and_names_are_typed_errors() {
    // Huge sizes are tested in a child under RLIMIT_AS (sizes.rs); zero here.
    assert!(matches!(
        Memfd::create("s", 0),
        Err(Error::InvalidSize { size: 0, .. })
    ));
    assert!(matches!(
        Memfd::create("nul\0", 4096),
        Err(Error::InvalidName { .. })
    ));
    assert!(matches!(
        Memfd::create(&"x".repeat(250), 4096),
        Err(Error::InvalidName { .. })
    ));
    // A descriptor that is no memfd at all.
    let file = std::fs::File::open("/proc/self/exe").unwrap();
    assert!(matches!(
        Memfd::from_fd(file.into(), Seals::NONE, Size::AtMost(1 << 30)),
        Err(Error::NotRegular { .. })
    ));
}

#[test]
fn a_sealed_memfd_passed_to_a_child_is_verified_there() {
    if role().as_deref() == Some("receiver") {
        let fd: OwnedFd = std::io::stdin().as_fd().try_clone_to_owned().unwrap();
        let m = Memfd::from_fd(fd, Seals::SIZE | Seals::WRITE, 1 << 16).unwrap();
        let bytes = m.sealed_bytes().unwrap();
        let want: u64 = std::env::var("SUM").unwrap().parse().unwrap();
        assert_eq!(fnv1a64(bytes), want);
        return;
    }
    let _wd = Watchdog::new("memfd child", Duration::from_secs(20));
    let mut m = Memfd::create("pass", 1 << 16).unwrap();
    let mut data = vec![0u8; 1 << 16];
    ipc_testkit::SplitMix64::new(3).fill(&mut data);
    m.write_bytes(0, &data).unwrap();
    m.seal(Seals::SIZE | Seals::WRITE).unwrap();
    let mut c = child(
        &test_path!(a_sealed_memfd_passed_to_a_child_is_verified_there),
        "receiver",
    );
    c.env("SUM", fnv1a64(&data).to_string())
        .stdin(std::process::Stdio::from(OwnedFd::from(m)));
    Proc::spawn(&mut c)
        .unwrap()
        .expect_success(Duration::from_secs(15));
}

#[test]
fn huge_pages_work_or_say_unavailable() {
    match Memfd::create_huge("huge", 2 << 20) {
        Ok(m) => assert_eq!(m.read::<u64>(0).unwrap(), 0),
        Err(e) => assert!(matches!(e, Error::HugePagesUnavailable), "{e:?}"),
    }
    match ipc_shm::Anon::new_huge(2 << 20) {
        Ok(a) => assert_eq!(a.read::<u64>(0).unwrap(), 0),
        Err(e) => assert!(matches!(e, Error::HugePagesUnavailable), "{e:?}"),
    }
    let huge = ipc_shm::Pages::Huge;
    match ipc_shm::SysvShm::options()
        .size(2 << 20)
        .pages(huge)
        .create(ipc_shm::Key::PRIVATE)
    {
        Ok(s) => assert_eq!(s.read::<u64>(0).unwrap(), 0),
        Err(e) => assert!(matches!(e, Error::HugePagesUnavailable), "{e:?}"),
    }
    // Named segments live on tmpfs: huge pages are a transparent-huge-page hint there.
    let name = ipc_testkit::posix_name("huge");
    let seg = ipc_shm::Shm::options()
        .size(2 << 20)
        .pages(huge)
        .create(&name)
        .unwrap();
    assert_eq!(seg.read::<u64>(1 << 20).unwrap(), 0);
}

/// A descriptor from a peer is checked before it is mapped: what it is, how it was opened, its
/// size; a typed error for each, never a crash.
#[test]
fn received_descriptors_are_checked_before_mapping() {
    let m = Memfd::create("recv", 4096).unwrap();
    // Write-only: cannot be mapped, and says so.
    let wronly: OwnedFd = std::fs::OpenOptions::new()
        .write(true)
        .open(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&m)
        ))
        .unwrap()
        .into();
    let dup = wronly.try_clone().unwrap();
    let r = Memfd::from_fd(wronly, Seals::NONE, 4096);
    assert!(matches!(r, Err(Error::PermissionDenied { .. })), "{r:?}");
    let r = ipc_shm::Shm::from_fd(dup, 4096);
    assert!(matches!(r, Err(Error::PermissionDenied { .. })), "{r:?}");
    // Read-only: mapped read-only.
    let rdonly: OwnedFd = std::fs::File::open(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&m)
    ))
    .unwrap()
    .into();
    let ro = Memfd::from_fd(rdonly, Seals::NONE, Size::AtMost(4096)).unwrap();
    assert!(!ro.is_writable());
    // A pipe, a directory: not shared memory.
    let (r_end, _w_end) = rustix::pipe::pipe().unwrap();
    let r = ipc_shm::Shm::from_fd(r_end, Size::AtMost(4096));
    assert!(matches!(r, Err(Error::NotRegular { .. })), "{r:?}");
    let dir: OwnedFd = std::fs::File::open("/dev/shm").unwrap().into();
    let r = ipc_shm::Shm::from_fd(dir.try_clone().unwrap(), Size::AtMost(4096));
    assert!(matches!(r, Err(Error::NotRegular { .. })), "{r:?}");
    let r = Memfd::from_fd(dir, Seals::NONE, Size::AtMost(4096));
    assert!(matches!(r, Err(Error::NotRegular { .. })), "{r:?}");
    // An empty memfd: nothing to map yet.
    let empty = rustix::fs::memfd_create("empty", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
    let r = Memfd::from_fd(empty, Seals::NONE, Size::AtMost(4096));
    assert!(matches!(r, Err(Error::NotReady { .. })), "{r:?}");
}
