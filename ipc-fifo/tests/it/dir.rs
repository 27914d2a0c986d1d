use std::os::unix::fs::{MetadataExt, PermissionsExt};

use ipc_fifo::{DirStatus, Error, Fifo, FileKind, PrivateDir};

fn mode(p: &std::path::Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn private_dir_is_0700_ours_and_removed_on_drop() {
    let dir = PrivateDir::new("ipcrs-fifo-dir").unwrap();
    let path = dir.path().to_owned();
    assert_eq!(dir.status(), DirStatus::Created);
    assert!(path.starts_with(PrivateDir::base()));
    assert!(
        path.file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("ipcrs-fifo-dir-")
    );
    assert_eq!(mode(&path), 0o700);
    assert_eq!(
        std::fs::metadata(&path).unwrap().uid(),
        rustix::process::geteuid().as_raw()
    );
    let fifo = Fifo::create(dir.join("f").unwrap()).unwrap().persist();
    assert!(fifo.exists());
    drop(dir);
    assert!(
        !path.exists(),
        "a created private dir is removed with its contents"
    );
}

#[test]
fn open_or_create_makes_or_checks_a_well_known_place() {
    let parent = PrivateDir::new("ipcrs-fifo-wk").unwrap();
    let place = parent.join("app").unwrap();
    let first = PrivateDir::open_or_create(&place).unwrap();
    assert_eq!(first.status(), DirStatus::Created);
    let second = PrivateDir::open_or_create(&place).unwrap();
    assert_eq!(second.status(), DirStatus::Existed);
    drop(second);
    assert!(place.exists(), "a checked (not created) dir is left alone");
    drop(first);
    assert!(!place.exists());

    // Not private: mode 0755.
    std::fs::create_dir(&place).unwrap();
    std::fs::set_permissions(&place, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(matches!(
        PrivateDir::open_or_create(&place),
        Err(Error::NotPrivate { mode: 0o755, .. })
    ));
    // Another owner.
    std::fs::set_permissions(&place, std::fs::Permissions::from_mode(0o700)).unwrap();
    rustix::fs::chown(&place, Some(rustix::process::Uid::from_raw(65534)), None).unwrap();
    assert!(matches!(
        PrivateDir::open_or_create(&place),
        Err(Error::WrongOwner { found: 65534, .. })
    ));
    // A symlink to a private directory, and a file.
    let link = parent.join("link").unwrap();
    std::os::unix::fs::symlink(parent.path(), &link).unwrap();
    assert!(matches!(
        PrivateDir::open_or_create(&link),
        Err(Error::NotADirectory {
            found: FileKind::Symlink
        })
    ));
    let file = parent.join("file").unwrap();
    std::fs::write(&file, b"x").unwrap();
    assert!(matches!(
        PrivateDir::open_or_create(&file),
        Err(Error::NotADirectory {
            found: FileKind::Regular
        })
    ));
    assert!(matches!(PrivateDir::new("a/b"), Err(Error::InvalidName)));
}
