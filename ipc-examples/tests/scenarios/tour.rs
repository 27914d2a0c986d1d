//! The tour's demos as the scenarios see them: names from demos.txt, binaries from cargo.

use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use ipc_testkit::Proc;

/// Every demo of the tour, in order.
pub(crate) fn demos() -> Vec<String> {
    include_str!("../../demos.txt")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split('\t').next())
        .map(|n| n.trim().to_owned())
        .collect()
}

/// The path of a demo binary. Cargo builds every binary of the package before its integration
/// tests and names it after the binary, next to the test's deps directory.
pub(crate) fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    dir.join(name)
}

/// A demo started in its own process group, its output discarded.
pub(crate) fn spawn(name: &str) -> Proc {
    let mut cmd = Command::new(binary(name));
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    // LeakSanitizer checks at exit from a tracer process of its own (a clone of the exiting
    // process): a random SIGKILL that lands on it leaves the exit waiting forever. The leak
    // check belongs to the rest of the suite; the demos killed here run without it.
    if ipc_testkit::sanitizer().is_some() {
        let asan = std::env::var("ASAN_OPTIONS").unwrap_or_default();
        cmd.env("ASAN_OPTIONS", format!("{asan}:detect_leaks=0"));
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    Proc::spawn(&mut cmd).unwrap_or_else(|e| panic!("cannot start demo {name}: {e}"))
}

/// Runs a demo to the end, bounded in time, showing its output only when it fails.
pub(crate) fn run(name: &str, limit: Duration) -> ExitStatus {
    let mut cmd = Command::new(binary(name));
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut p = Proc::spawn(&mut cmd).unwrap_or_else(|e| panic!("cannot start demo {name}: {e}"));
    let mut out = p.inner().stdout.take().expect("piped");
    let mut err = p.inner().stderr.take().expect("piped");
    let o = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        s
    });
    let e = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    let status = p.wait_timeout(limit);
    let (o, e) = (o.join().unwrap_or_default(), e.join().unwrap_or_default());
    match status {
        Ok(s) => {
            if !s.success() {
                eprintln!("--- {name} stdout\n{o}--- {name} stderr\n{e}");
            }
            s
        }
        Err(err) => panic!("demo {name}: {err}\n--- stdout\n{o}--- stderr\n{e}"),
    }
}

/// Every live process whose process group is `pgid`.
pub(crate) fn group_members(pgid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command name (which may contain spaces) start after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // state ppid pgrp ...
        let zombie = fields.first() == Some(&"Z");
        if !zombie && fields.get(2).and_then(|g| g.parse::<u32>().ok()) == Some(pgid) {
            out.push(pid);
        }
    }
    out
}

/// Every live descendant of `pid` (through `/proc/PID/task/TID/children`), not `pid` itself.
pub(crate) fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let path = t.path().join("children");
            for c in std::fs::read_to_string(path)
                .unwrap_or_default()
                .split_whitespace()
            {
                if let Ok(c) = c.parse::<u32>() {
                    out.push(c);
                    todo.push(c);
                }
            }
        }
    }
    out
}
