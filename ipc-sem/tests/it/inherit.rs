//! Every descriptor the crate opens is close-on-exec from birth: children spawned while other
//! threads create and open every kind of object inherit none of them.
//!
//! glibc's `sem_open` opened `/dev/shm/sem.*` without `O_CLOEXEC`, so a `Command::spawn` racing
//! it handed the descriptor to the child (hundreds of 1000 spawns). The children here are
//! `ls -l /proc/self/fd/`: their listing is what they inherited.

use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use ipc_sem::{EventSemaphore, NamedMutex, NamedSemaphore, SemOp, SharedMutex, SharedSemaphore};
use ipc_testkit::Watchdog;

/// One round of every kind of object that holds a descriptor, made, opened and dropped.
pub(crate) fn churn(tag: &str) {
    let name = ipc_testkit::posix_name(tag);
    let owner = NamedSemaphore::create(&name, 1).unwrap();
    let opener = NamedSemaphore::open(&name).unwrap();
    opener.post().unwrap();
    drop((opener, owner));
    let (m, _) = NamedMutex::open_or_create(&name).unwrap();
    let other = NamedMutex::open(&name).unwrap();
    drop((other, m));
    let shared = SharedSemaphore::new(0).unwrap();
    let again = SharedSemaphore::from_fd(shared.as_fd().try_clone_to_owned().unwrap()).unwrap();
    again.post().unwrap();
    drop((again, shared));
    let mutex = SharedMutex::new().unwrap();
    drop(mutex.lock().unwrap());
    drop(mutex);
    let set = crate::shared::new_set(&[1]);
    set.apply(&[SemOp::post(0)]).unwrap();
    drop(set);
    let ev = EventSemaphore::new(1).unwrap();
    drop(ev.try_clone().unwrap());
}

/// What a listing of /proc/self/fd shows for descriptors of ours.
fn ours(listing: &str) -> Vec<&str> {
    listing
        .lines()
        .filter(|l| l.contains("/dev/shm/") || l.contains("memfd:") || l.contains("[eventfd]"))
        .collect()
}

#[test]
fn spawned_children_inherit_no_descriptor_of_any_kind() {
    const SPAWNS: usize = 1000;
    let _wd = Watchdog::new("spawn race", Duration::from_secs(300));
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));
    let churners: Vec<_> = (0..2)
        .map(|t| {
            let (stop, rounds) = (stop.clone(), rounds.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    churn(&format!("inh{t}"));
                    rounds.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    // Let the churners get going before the first spawn.
    while rounds.load(Ordering::Relaxed) == 0 {
        std::thread::yield_now();
    }
    let mut leaks = Vec::new();
    for _ in 0..SPAWNS {
        let out = Command::new("/bin/ls")
            .args(["-l", "/proc/self/fd/"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "ls failed");
        let text = String::from_utf8_lossy(&out.stdout);
        leaks.extend(ours(&text).into_iter().map(str::to_owned));
    }
    stop.store(true, Ordering::Relaxed);
    for c in churners {
        c.join().unwrap();
    }
    let rounds = rounds.load(Ordering::Relaxed);
    eprintln!("{rounds} rounds of every kind during {SPAWNS} spawns");
    assert!(rounds >= 10, "too few rounds ({rounds}) to race the spawns");
    assert!(
        leaks.is_empty(),
        "{} descriptors inherited by spawned children, e.g. {:?}",
        leaks.len(),
        &leaks[..leaks.len().min(5)]
    );
}
