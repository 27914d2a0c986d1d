//! Symlinks, other users' objects, modes under any umask, a less privileged peer.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::time::Duration;

use ipc_shm::{Error, Shm};
use ipc_testkit::{Proc, Watchdog, child, posix_name, role, test_path};

use crate::{RmOnDrop, dev_shm};

#[test]
fn a_planted_symlink_is_refused_by_create_and_open_and_its_target_is_unchanged() {
    let name = posix_name("link");
    let target = std::env::temp_dir().join(format!("{}-target", &name[1..]));
    let _rm_target = RmOnDrop(target.clone());
    std::fs::write(&target, b"precious").unwrap();
    let link = dev_shm(&name);
    let _rm_link = RmOnDrop(link.clone());
    std::os::unix::fs::symlink(&target, &link).unwrap();

    assert!(matches!(
        Shm::create(&name, 4096),
        Err(Error::AlreadyExists { .. })
    ));
    assert!(matches!(Shm::open(&name, 8), Err(Error::Symlink { .. })));
    assert!(matches!(
        Shm::options()
            .size(8)
            .owner_check(ipc_shm::OwnerCheck::AnyUid)
            .open(&name),
        Err(Error::Symlink { .. })
    ));
    assert_eq!(std::fs::read(&target).unwrap(), b"precious");
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn an_object_of_another_user_is_refused_by_default() {
    let name = posix_name("uid");
    let path = dev_shm(&name);
    let _rm = RmOnDrop(path.clone());
    std::fs::write(&path, [0u8; 4096]).unwrap();
    std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();

    assert!(matches!(
        Shm::create(&name, 4096),
        Err(Error::AlreadyExists { .. })
    ));
    assert!(matches!(
        Shm::open(&name, 4096),
        Err(Error::WrongOwner { found: 65534, .. })
    ));
    // Explicitly accepting any owner works (root may open it).
    let seg = Shm::options()
        .size(4096)
        .owner_check(ipc_shm::OwnerCheck::AnyUid)
        .open(&name)
        .unwrap();
    assert!(!seg.is_owner());
    drop(seg);
    assert!(path.exists(), "an opener never removes");
}

#[test]
fn created_mode_is_0600_under_umask_0_and_mode_is_exact_under_umask_077() {
    if role().as_deref() == Some("umask") {
        let name = posix_name("mode");
        let seg = Shm::create(&name, 4096).unwrap();
        let mode = std::fs::metadata(dev_shm(&name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "umask 0 must not widen the mode");
        let name2 = posix_name("mode");
        let seg2 = Shm::options()
            .size(4096)
            .mode(0o640)
            .create(&name2)
            .unwrap();
        let mode2 = std::fs::metadata(dev_shm(&name2))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode2, 0o640);
        drop((seg, seg2));
        return;
    }
    let _wd = Watchdog::new("umask", Duration::from_secs(20));
    for mask in ["0", "077"] {
        let exe = std::env::current_exe().unwrap();
        let mut c = std::process::Command::new("sh");
        c.arg("-c")
            .arg(format!("umask {mask}; exec \"$0\" \"$@\""))
            .arg(exe)
            .args([
                &test_path!(created_mode_is_0600_under_umask_0_and_mode_is_exact_under_umask_077),
                "--exact",
                "--nocapture",
                "--test-threads=1",
                "-q",
            ])
            .env(ipc_testkit::ROLE_ENV, "umask");
        Proc::spawn(&mut c)
            .unwrap()
            .expect_success(Duration::from_secs(15));
    }
}

#[test]
fn another_uid_cannot_open_a_0600_segment() {
    if role().as_deref() == Some("nobody") {
        let name = std::env::var("SHM_NAME").unwrap();
        assert_eq!(rustix_free_geteuid(), 65534);
        let r = Shm::options()
            .size(4096)
            .owner_check(ipc_shm::OwnerCheck::AnyUid)
            .open(&name);
        assert!(matches!(r, Err(Error::PermissionDenied { .. })), "{r:?}");
        return;
    }
    let _wd = Watchdog::new("nobody", Duration::from_secs(20));
    let name = posix_name("perm");
    let seg = Shm::create(&name, 4096).unwrap();
    assert_eq!(std::fs::metadata(dev_shm(&name)).unwrap().uid(), 0);
    let mut c = child(
        &test_path!(another_uid_cannot_open_a_0600_segment),
        "nobody",
    );
    c.env("SHM_NAME", &name).uid(65534).gid(65534);
    Proc::spawn(&mut c)
        .unwrap()
        .expect_success(Duration::from_secs(15));
    drop(seg);
}

fn rustix_free_geteuid() -> u32 {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX)
}

/// Anyone may create files in /dev/shm: a FIFO or a directory planted at the name is refused
/// at once (a FIFO opened read-only would otherwise block until a writer came).
#[test]
fn a_planted_fifo_or_directory_is_refused_without_blocking() {
    let _wd = Watchdog::new("planted fifo", Duration::from_secs(20));
    let name = posix_name("fifo");
    let path = dev_shm(&name);
    let _rm = RmOnDrop(path.clone());
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    for access in [ipc_shm::Access::ReadOnly, ipc_shm::Access::ReadWrite] {
        let r = Shm::options().max_size(4096).access(access).open(&name);
        assert!(
            matches!(r, Err(Error::NotRegular { .. })),
            "{access:?}: {r:?}"
        );
    }
    assert!(matches!(
        Shm::create(&name, 4096),
        Err(Error::AlreadyExists { .. })
    ));
    assert!(
        std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_fifo()
    );

    let dir_name = posix_name("dir");
    let dir = dev_shm(&dir_name);
    std::fs::create_dir(&dir).unwrap();
    struct RmDir(std::path::PathBuf);
    impl Drop for RmDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let _rm_dir = RmDir(dir);
    for access in [ipc_shm::Access::ReadOnly, ipc_shm::Access::ReadWrite] {
        let r = Shm::options().max_size(4096).access(access).open(&dir_name);
        assert!(
            matches!(r, Err(Error::NotRegular { .. })),
            "{access:?}: {r:?}"
        );
    }
}
