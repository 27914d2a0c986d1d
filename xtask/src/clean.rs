//! `cargo xtask clean`: remove what a killed run left behind, and only that.

use crate::objects;
use crate::util::{Result, check_flags, wants_help};

const HELP: &str = "\
cargo xtask clean

Removes the IPC objects that the workspace's tests, demos and benches left behind: entries of
/dev/shm named ipcrs-* or sem.ipcrs-*, POSIX message queues /ipcrs-*, System V objects whose key
is in the workspace's range 0x4950xxxx, and ipcrs-* entries in the temp dir. Says what it removed.
Objects of anyone else (other names, other keys) are never touched, and neither is a named object
whose creating process (the pid in its name, ipcrs-<tag>-<pid>-..) is still running.
";

pub(crate) fn run(args: &[String]) -> Result {
    if wants_help(args, HELP) {
        return Ok(());
    }
    check_flags(args, &[], HELP)?;
    let cleaned = objects::remove_all()?;
    for k in &cleaned.kept {
        println!("clean: kept {k} (its process is still running)");
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
