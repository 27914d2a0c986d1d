//! Bytes a peer controls, as the file of a named semaphore (`/dev/shm/sem.NAME`) or of a named
//! mutex (`/dev/shm/NAME`): the input is written there (as a hostile process of ours could) and
//! opened. Promises: no panic, no abort, no `SIGBUS`, no hang; `open` succeeds only for a file
//! of exactly the object's size holding a plausible object; operations on an opened handle are
//! consistent with the value it reports; `remove_stale` removes the ownerless file.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use ipc_sem::{Error, Locked, NamedMutex, NamedSemaphore, SEM_VALUE_MAX};
use libfuzzer_sys::fuzz_target;

struct Names {
    sem: String,
    sem_file: PathBuf,
    mutex: String,
    mutex_file: PathBuf,
}

fn names() -> &'static Names {
    static N: OnceLock<Names> = OnceLock::new();
    N.get_or_init(|| {
        let pid = std::process::id();
        Names {
            sem: format!("/ipcrs-fuzz-{pid}-s"),
            sem_file: format!("/dev/shm/sem.ipcrs-fuzz-{pid}-s").into(),
            mutex: format!("/ipcrs-fuzz-{pid}-m"),
            mutex_file: format!("/dev/shm/ipcrs-fuzz-{pid}-m").into(),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let n = names();
    std::fs::write(&n.sem_file, data).expect("plant the semaphore file");
    match NamedSemaphore::open(&n.sem) {
        Ok(sem) => {
            assert_eq!(data.len(), 32, "accepted a file of {} bytes", data.len());
            assert!(!sem.is_owner());
            let v = sem.value().expect("value");
            assert!(v <= SEM_VALUE_MAX);
            match sem.try_wait() {
                Ok(()) => assert_eq!(sem.value().unwrap(), v - 1),
                Err(Error::WouldBlock) => assert_eq!(v, 0),
                Err(e) => panic!("try_wait: {e}"),
            }
            let v = sem.value().unwrap();
            match sem.post() {
                Ok(()) => assert_eq!(sem.value().unwrap(), v + 1),
                Err(Error::Overflow) => assert_eq!(v, SEM_VALUE_MAX),
                Err(e) => panic!("post: {e}"),
            }
            match sem.wait_timeout(Duration::ZERO) {
                Ok(()) | Err(Error::TimedOut) => {}
                Err(e) => panic!("wait_timeout: {e}"),
            }
        }
        Err(Error::Io(e)) => panic!("untyped error {e}"),
        Err(_) => {}
    }
    // Nobody holds an owner lock on a planted file: it is stale.
    ipc_sem::remove_stale(&n.sem).expect("remove_stale of an ownerless file");
    assert!(!n.sem_file.exists());

    std::fs::write(&n.mutex_file, data).expect("plant the mutex file");
    match NamedMutex::open(&n.mutex) {
        Ok(m) => {
            assert_eq!(data.len(), 48, "accepted a file of {} bytes", data.len());
            for _ in 0..2 {
                match m.try_lock() {
                    Ok(Locked::Normal(g)) => drop(g),
                    Ok(Locked::OwnerDied(g)) => drop(g.make_consistent()),
                    Err(_) => {}
                }
            }
        }
        Err(Error::Io(e)) => panic!("untyped error {e}"),
        Err(_) => {}
    }
    NamedMutex::remove_stale(&n.mutex).expect("remove_stale of an ownerless file");
});
