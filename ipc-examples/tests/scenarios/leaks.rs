//! Every demo, run alone, leaves the workspace's kernel objects exactly as it found them.

use std::time::Duration;

use ipc_testkit::objects::Snapshot;

use crate::{serial, tour};

#[test]
fn every_demo_leaves_no_object_behind() {
    let _one = serial();
    let _wd = ipc_testkit::Watchdog::new("leak scenario", Duration::from_secs(300));
    let mut failures = Vec::new();
    for demo in tour::demos() {
        let before = Snapshot::take();
        let status = tour::run(&demo, Duration::from_secs(120));
        let leaks = Snapshot::take().leaks_since(&before);
        if !status.success() {
            failures.push(format!("{demo}: {status}"));
        }
        if !leaks.is_empty() {
            failures.push(format!("{demo} left behind: {}", leaks.join(", ")));
            let _ = ipc_testkit::objects::remove_all();
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
