//! `cargo xtask clean` (objects::remove_all) removes the workspace's leftovers and nothing else.

use std::path::Path;

use ipc_testkit::objects;

use crate::serial;

#[test]
fn clean_removes_only_the_workspace_prefix() {
    let _one = serial();
    // A leftover of a dead process (pid 0 never names a live one), and one of ours, alive.
    let ours = Path::new("/dev/shm").join("ipcrs-clean-0-1");
    let in_use = Path::new("/dev/shm").join(ipc_testkit::unique("clean"));
    std::fs::write(&in_use, b"in use by this very test").expect("create in-use");
    let theirs = Path::new("/dev/shm").join(format!("not-ours-{}", std::process::id()));
    let fifo_dir = std::env::temp_dir().join("ipcrs-clean-0-2");
    std::fs::write(&ours, b"left behind by a killed test").expect("create ours");
    std::fs::write(&theirs, b"somebody else's").expect("create theirs");
    std::fs::create_dir(&fifo_dir).expect("create dir");
    let cleaned = objects::remove_all().expect("clean");
    let theirs_left = theirs.exists();
    let in_use_left = in_use.exists();
    let _ = std::fs::remove_file(&theirs);
    let _ = std::fs::remove_file(&in_use);
    assert!(
        in_use_left,
        "clean removed an object whose process is alive"
    );
    assert!(!ours.exists(), "our /dev/shm leftover was not removed");
    assert!(!fifo_dir.exists(), "our temp-dir leftover was not removed");
    assert!(
        theirs_left,
        "clean removed an object that is not the workspace's"
    );
    assert!(
        cleaned
            .removed
            .iter()
            .any(|r| r.ends_with(&*ours.to_string_lossy())),
        "clean did not say what it removed: {cleaned:?}"
    );
}
