//! `cargo xtask clean`: remove what a killed run left behind, and only that.

use crate::objects;
use crate::util::{Result, check_flags, wants_help};

const HELP: &str = "\
cargo xtask clean

Removes the IPC objects that the workspace's tests, demos and benches left behind: entries of
/dev/shm named ipcrs-* or sem.ipcrs-*, POSIX message queues /ipcrs-*, System V objects whose key
is in the workspace's range 0x4950xxxx (with their /dev/shm/ipc-sysv-*.owner companion files),
and ipcrs-* entries in the temp dir. Says what it removed. Objects of anyone else (other names,
other keys) are never touched.

It applies the crates' own liveness rule (ARCHITECTURE.md, The lifetime model): an object
whose owner holds its owner lock is kept, however the owner got there; a dead owner — killed,
exited, or a zombie not yet reaped — holds no lock. An object with no owner lock (made by raw
system calls, as the benches' baselines do) is kept only while the process whose pid its name
carries (ipcrs-<tag>-<pid>-..) is running and is not a zombie.
";

pub(crate) fn run(args: &[String]) -> Result {
    if wants_help(args, HELP) {
        return Ok(());
    }
    check_flags(args, &[], HELP)?;
    let cleaned = objects::remove_all()?;
    for k in &cleaned.kept {
        println!("clean: kept {k} (its owner is alive)");
    }
    if cleaned.removed.is_empty() {
        println!("clean: nothing of the workspace's was left behind");
    } else {
        for r in &cleaned.removed {
            println!("clean: removed {r}");
        }
        println!("clean: removed {} object(s)", cleaned.removed.len());
    }
    Ok(())
}
