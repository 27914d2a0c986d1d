//! System V segments across processes.

use std::time::Duration;

use ipc_shm::{Access, Error, SysvShm};
use ipc_testkit::{Proc, Watchdog, child, role, sysv_key, test_path};

fn create_fresh(size: u64) -> (i32, SysvShm) {
    loop {
        let key = sysv_key();
        match SysvShm::create(key, size) {
            Err(Error::AlreadyExists) => continue,
            r => return (key, r.unwrap()),
        }
    }
}

#[test]
fn a_child_attaches_by_key_and_the_owner_removes_it() {
    if role().as_deref() == Some("peer") {
        let key: i32 = std::env::var("KEY").unwrap().parse().unwrap();
        assert!(matches!(
            SysvShm::open(key, 4096, Access::ReadWrite),
            Err(Error::SizeMismatch { .. })
        ));
        let seg = SysvShm::open(key, 8192, Access::ReadWrite).unwrap();
        assert_eq!(seg.read::<u64>(0).unwrap(), 0x5151);
        seg.write::<u64>(8, &0x7272).unwrap();
        return;
    }
    let _wd = Watchdog::new("sysv", Duration::from_secs(20));
    let (key, seg) = create_fresh(8192);
    assert!(seg.is_owner());
    assert!(
        seg.read_vec::<u64>(0, 1024)
            .unwrap()
            .iter()
            .all(|&w| w == 0)
    );
    seg.write::<u64>(0, &0x5151).unwrap();
    let mut c = child(
        &test_path!(a_child_attaches_by_key_and_the_owner_removes_it),
        "peer",
    );
    c.env("KEY", key.to_string());
    Proc::spawn(&mut c)
        .unwrap()
        .expect_success(Duration::from_secs(15));
    assert_eq!(seg.read::<u64>(8).unwrap(), 0x7272);
    let id = seg.id();
    let ro = SysvShm::attach(id, Access::ReadOnly).unwrap();
    assert!(matches!(ro.write::<u8>(0, &1), Err(Error::ReadOnly)));
    drop(ro);
    drop(seg);
    assert!(matches!(
        SysvShm::attach(id, Access::ReadWrite),
        Err(Error::NotFound)
    ));
}

#[test]
fn private_segments_and_bad_sizes() {
    assert!(matches!(
        SysvShm::create(ipc_shm::sysv::PRIVATE, 0),
        Err(Error::InvalidSize { size: 0 })
    ));
    assert!(matches!(
        SysvShm::create(ipc_shm::sysv::PRIVATE, u64::MAX),
        Err(Error::InvalidSize { .. })
    ));
    let seg = SysvShm::create(ipc_shm::sysv::PRIVATE, 100).unwrap();
    assert_eq!(seg.len(), 100);
    let kept = seg.persist();
    let id = kept.id();
    drop(kept);
    ipc_shm::sysv::remove(id).unwrap();
}
