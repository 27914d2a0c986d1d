//! `cargo xtask test`: everything a contributor must pass.

use crate::demo;
use crate::objects::Snapshot;
use crate::util::{Result, cargo, check_flags, run_cmd, wants_help};

const HELP: &str = "\
cargo xtask test [--no-demos]

Runs, in order:
  1. cargo test --workspace (unit, integration and doc tests of every crate, the cross-crate
     scenarios in ipc-examples/tests, and xtask's tidy check);
  2. every demo of the tour in check mode (output shown only when a demo fails);
  3. the leak check: no IPC object of the workspace (/dev/shm ipcrs-*, POSIX queues /ipcrs-*,
     System V ids, ipcrs-* temp entries) exists now that did not exist before step 1.
Fails if any step fails. `cargo xtask clean` removes what a failed run left behind.

  --no-demos   skip step 2
";

pub(crate) fn run(args: &[String]) -> Result {
    if wants_help(args, HELP) {
        return Ok(());
    }
    check_flags(args, &["--no-demos"], HELP)?;
    let before = Snapshot::take();
    if before.mq.is_none() {
        eprintln!(
            "test: note: POSIX message queues cannot be listed here; their leak check is skipped"
        );
    }
    let tests = run_cmd(cargo().args(["test", "--workspace"]));
    let demos = if args.iter().any(|a| a == "--no-demos") {
        Ok(())
    } else {
        println!("\ntest: the tour in check mode");
        let all = demo::catalog()?;
        let refs: Vec<&demo::Demo> = all.iter().collect();
        demo::run_demos(&refs, true)
    };
    let leaks = Snapshot::take().leaks_since(&before);
    tests?;
    demos?;
    if leaks.is_empty() {
        println!("test: leak check passed: no IPC object of the workspace was left behind");
        Ok(())
    } else {
        Err(format!(
            "leak check: {} object(s) left behind (remove with `cargo xtask clean`):\n  {}",
            leaks.len(),
            leaks.join("\n  ")
        ))
    }
}
