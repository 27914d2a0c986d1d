//! Integration tests of ipc-shm: real segments, real processes, bounded in time.

mod fork;
mod memfd;
mod posix;
mod ring;
mod security;
mod sysv;
mod views;

use std::path::PathBuf;

/// Where a POSIX name lives on Linux.
pub(crate) fn dev_shm(name: &str) -> PathBuf {
    PathBuf::from(format!("/dev/shm{name}"))
}

/// Removes a path on drop (for files the tests plant in /dev/shm).
pub(crate) struct RmOnDrop(pub(crate) PathBuf);

impl Drop for RmOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn error_is_send_sync_static() {
    fn check<T: Send + Sync + 'static + std::error::Error>() {}
    check::<ipc_shm::Error>();
    let e: std::io::Error = ipc_shm::Error::NoSpace { name: "/x".into() }.into();
    assert_eq!(e.kind(), std::io::ErrorKind::StorageFull);
    assert_eq!(ipc_shm::Error::TimedOut.to_string(), "timed out");
}
