//! memfd: seals, refusing unsealed descriptors, passing one to a child.

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use ipc_shm::{Error, Memfd, Seals};
use ipc_testkit::{Proc, Watchdog, child, fnv1a64, role, test_path};

#[test]
fn a_sealed_memfd_cannot_be_resized_and_an_unsealed_one_is_refused() {
    let m = Memfd::create("t", 8192).unwrap();
    assert!(m.read_vec::<u64>(0, 1024).unwrap().iter().all(|&w| w == 0));
    let unsealed = m.as_fd().try_clone_to_owned().unwrap();
    assert!(matches!(
        Memfd::from_fd(unsealed, Seals::SIZE),
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
    let peer = Memfd::from_fd(m.as_fd().try_clone_to_owned().unwrap(), Seals::SIZE).unwrap();
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
    assert!(matches!(m.seal(Seals::GROW), Err(Error::PermissionDenied)));
    let file = std::fs::File::from(m.as_fd().try_clone_to_owned().unwrap());
    use std::io::Write;
    assert!((&file).write_all(b"y").is_err(), "write(2) is refused too");
}

#[test]
fn a_sealed_memfd_passed_to_a_child_is_verified_there() {
    if role().as_deref() == Some("receiver") {
        let fd: OwnedFd = std::io::stdin().as_fd().try_clone_to_owned().unwrap();
        let m = Memfd::from_fd(fd, Seals::SIZE | Seals::WRITE).unwrap();
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
    match ipc_shm::SysvShm::create_with(ipc_shm::Key::PRIVATE, 2 << 20, 0o600, huge) {
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
