//! A participant of each demo killed with SIGKILL at a random moment: the demo ends (recovering,
//! or failing with an error) within its bound, no process of it is left running, and whatever
//! the killed process owned is removed by `cargo xtask clean` — and only that.

use std::time::{Duration, Instant};

use ipc_testkit::SplitMix64;
use ipc_testkit::objects::{self, Snapshot};

use crate::{serial, tour};

/// How long a demo may take to notice a dead peer and finish.
const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn a_participant_killed_at_random_never_hangs_a_demo() {
    let _one = serial();
    let _wd = ipc_testkit::Watchdog::new("crash scenario", Duration::from_secs(600));
    let seed = ipc_testkit::env_parse("IPC_CRASH_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    eprintln!("crash scenario seed {seed} (rerun with IPC_CRASH_SEED={seed})");
    let mut rng = SplitMix64::new(seed);
    let mut failures = Vec::new();
    for demo in tour::demos() {
        let before = Snapshot::take();
        let mut p = tour::spawn(&demo);
        let pgid = p.id();
        let started = Instant::now();
        // Kill a random participant (never the demo's main process) at a random moment of
        // its protocol: wait a random 0..400 ms for one to exist.
        let at = Duration::from_millis(rng.range(0, 400));
        let mut killed = None;
        while started.elapsed() < at + Duration::from_secs(2) && killed.is_none() {
            let others: Vec<u32> = tour::group_members(pgid)
                .into_iter()
                .filter(|&pid| pid != pgid)
                .collect();
            if started.elapsed() >= at && !others.is_empty() {
                let victim = others[rng.range(0, others.len() as u64 - 1) as usize];
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(victim as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                killed = Some(victim);
            }
            if p.inner().try_wait().ok().flatten().is_some() {
                break;
            }
            // Polling the process table: the moment is random on purpose, this is no handshake.
            std::thread::sleep(Duration::from_millis(5));
        }
        let outcome = p.wait_timeout(LIMIT);
        let stragglers = tour::group_members(pgid);
        for s in &stragglers {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*s as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        eprintln!("crash: {demo}: killed {killed:?}, outcome {outcome:?}");
        match outcome {
            Ok(_) => {}
            Err(e) => failures.push(format!("{demo} (killed {killed:?}): {e}")),
        }
        if !stragglers.is_empty() {
            failures.push(format!(
                "{demo} (killed {killed:?}) left processes running: {stragglers:?}"
            ));
        }
        // What the dead participant owned may remain: `clean` must remove it, and only it.
        let _ = objects::remove_all();
        let leaks = Snapshot::take().leaks_since(&before);
        if !leaks.is_empty() {
            failures.push(format!("{demo}: clean left {}", leaks.join(", ")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
