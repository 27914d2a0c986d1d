//! A participant of each demo killed with SIGKILL at a random moment: the demo ends (recovering,
//! or failing with an error) within its bound, no process of it is left running, and whatever
//! the killed process owned is removed by `cargo xtask clean` — and only that.

use std::time::{Duration, Instant};

use ipc_testkit::SplitMix64;
use ipc_testkit::objects::{self, Snapshot};

use crate::{serial, tour};

/// How long a demo may take to notice a dead peer and finish.
const LIMIT: Duration = Duration::from_secs(60);
/// Random kills per demo.
const TRIALS: usize = 3;

#[test]
fn a_participant_killed_at_random_never_hangs_a_demo() {
    let _one = serial();
    let _wd = ipc_testkit::Watchdog::new("crash scenario", Duration::from_secs(900));
    let seed = ipc_testkit::env_parse("IPC_CRASH_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    eprintln!("crash scenario seed {seed} (rerun with IPC_CRASH_SEED={seed})");
    let mut rng = SplitMix64::new(seed);
    let mut failures = Vec::new();
    let demos = tour::demos();
    let mut demos_hit = 0;
    for demo in &demos {
        // How long an undisturbed run takes: the kill lands somewhere inside it.
        let t0 = Instant::now();
        let status = tour::run(demo, LIMIT);
        let span = t0.elapsed();
        if !status.success() {
            failures.push(format!("{demo}: undisturbed run failed: {status}"));
            continue;
        }
        let mut hits = 0;
        for _ in 0..TRIALS {
            let before = Snapshot::take();
            let mut p = tour::spawn(demo);
            let main = p.id();
            let started = Instant::now();
            let at = Duration::from_micros(rng.range(0, span.as_micros() as u64));
            let mut killed = None;
            while killed.is_none() && p.inner().try_wait().ok().flatten().is_none() {
                if started.elapsed() >= at {
                    let victims = tour::descendants(main);
                    if !victims.is_empty() {
                        let victim = victims[rng.range(0, victims.len() as u64 - 1) as usize];
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(victim as i32),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                        killed = Some(victim);
                    }
                }
                // The moment is random on purpose: this polls the process table, it is no
                // handshake with the demo.
                std::thread::sleep(Duration::from_micros(200));
            }
            let outcome = p.wait_timeout(LIMIT);
            let stragglers = tour::group_members(main);
            for s in &stragglers {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(*s as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            eprintln!("crash: {demo}: at {at:?} killed {killed:?}: {outcome:?}");
            hits += usize::from(killed.is_some());
            if let Err(e) = outcome {
                failures.push(format!("{demo} (killed {killed:?}): {e}"));
            }
            if !stragglers.is_empty() {
                failures.push(format!(
                    "{demo} (killed {killed:?}) left processes running: {stragglers:?}"
                ));
            }
            // What the dead participant owned may remain: `clean` must remove it.
            let _ = objects::remove_all();
            let leaks = Snapshot::take().leaks_since(&before);
            if !leaks.is_empty() {
                failures.push(format!("{demo}: clean left {}", leaks.join(", ")));
            }
        }
        demos_hit += usize::from(hits > 0);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Every demo has child processes; random moments must have found some of them alive.
    assert!(
        demos_hit * 2 >= demos.len(),
        "only {demos_hit} of {} demos had a participant killed: the scenario tested little",
        demos.len()
    );
}
