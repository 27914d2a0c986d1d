//! `cargo xtask clean` (objects::remove_all) removes the workspace's leftovers and nothing else.

use std::path::Path;

use ipc_testkit::objects;

use crate::serial;

#[test]
fn clean_removes_only_the_workspace_prefix() {
    let _one = serial();
    let ours = Path::new("/dev/shm").join(ipc_testkit::unique("clean"));
    let theirs = Path::new("/dev/shm").join(format!("not-ours-{}", std::process::id()));
    let fifo_dir = std::env::temp_dir().join(ipc_testkit::unique("clean"));
    std::fs::write(&ours, b"left behind by a killed test").expect("create ours");
    std::fs::write(&theirs, b"somebody else's").expect("create theirs");
    std::fs::create_dir(&fifo_dir).expect("create dir");
    let removed = objects::remove_all().expect("clean");
    let theirs_left = theirs.exists();
    let _ = std::fs::remove_file(&theirs);
    assert!(!ours.exists(), "our /dev/shm leftover was not removed");
    assert!(!fifo_dir.exists(), "our temp-dir leftover was not removed");
    assert!(
        theirs_left,
        "clean removed an object that is not the workspace's"
    );
    assert!(
        removed
            .iter()
            .any(|r| r.ends_with(&*ours.to_string_lossy())),
        "clean did not say what it removed: {removed:?}"
    );
}
