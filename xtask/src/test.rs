//! `cargo xtask test`: everything a contributor must pass.

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::Instant;

use crate::demo;
use crate::objects::Snapshot;
use crate::util::{Result, cargo, check_flags, members, run_cmd, wants_help};

const HELP: &str = "\
cargo xtask test [--no-demos]

Runs, in order:
  1. the tests of every workspace member, one crate at a time (unit, integration and doc tests,
     the cross-crate scenarios in ipc-examples/tests, and xtask's tidy check), printed tersely:
     a dot per passing test, the full report of a failing one;
  2. every demo of the tour in check mode (output shown only when a demo fails);
  3. the leak check: no IPC object of the workspace (/dev/shm ipcrs-*, POSIX queues /ipcrs-*,
     System V ids and their owner files, ipcrs-* temp entries) exists now that did not exist
     before step 1 and that no live process still owns.
Ends with a table, one line per crate: tests passed, failed, ignored, and seconds.
Fails if any step fails. `cargo xtask clean` removes what a failed run left behind.

  --no-demos   skip step 2
";

/// The totals of one crate's test binaries.
#[derive(Debug, Default, Clone)]
struct Tally {
    passed: u64,
    failed: u64,
    ignored: u64,
    secs: f64,
    ok: bool,
}

impl Tally {
    /// Adds a libtest summary line: `test result: ok. 31 passed; 0 failed; 2 ignored; ...`.
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(['.', ';']) {
            let mut words = part.split_whitespace();
            let (Some(n), Some(what)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else {
                continue;
            };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

/// Runs one crate's tests, echoing the output, and tallies libtest's summary lines.
fn test_crate(krate: &str) -> Tally {
    let mut tally = Tally::default();
    let start = Instant::now();
    let mut cmd = cargo();
    cmd.args(["test", "--quiet", "--no-fail-fast", "-p", krate])
        .stdout(Stdio::piped());
    // A crate's optional ecosystem integration is tested too (its tests need the feature; the
    // default build is what clippy and rustdoc check without it).
    let features = optional_features(krate);
    if !features.is_empty() {
        cmd.args(["--features", &features.join(",")]);
    }
    eprintln!(
        "\ntest: {krate}{}",
        if features.is_empty() {
            String::new()
        } else {
            format!(" (features: {})", features.join(", "))
        }
    );
    let Ok(mut child) = cmd.spawn() else {
        eprintln!("test: cannot run cargo test -p {krate}");
        return tally;
    };
    let out = child.stdout.take().expect("piped");
    let mut stdout = std::io::stdout();
    // Binaries without tests (each demo is one) print an empty report: left out. Runs of blank
    // lines are squeezed to one.
    let mut empty_report = false;
    let mut blank = false;
    for line in BufReader::new(out).lines().map_while(std::io::Result::ok) {
        tally.add_line(&line);
        if line.trim() == "running 0 tests" {
            empty_report = true;
        }
        if empty_report {
            empty_report = !line.starts_with("test result:");
            continue;
        }
        if line.trim().is_empty() {
            if blank {
                continue;
            }
            blank = true;
        } else {
            blank = false;
        }
        let _ = writeln!(stdout, "{line}");
    }
    tally.ok = child.wait().is_ok_and(|s| s.success());
    tally.secs = start.elapsed().as_secs_f64();
    tally
}

/// The ecosystem features a member declares (`tokio = [..]` in its `[features]`).
fn optional_features(krate: &str) -> Vec<String> {
    let manifest = std::fs::read_to_string(crate::util::root().join(krate).join("Cargo.toml"))
        .unwrap_or_default();
    let mut in_features = false;
    let mut out = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_features = line == "[features]";
            continue;
        }
        if in_features && line.split('=').next().map(str::trim) == Some("tokio") {
            out.push("tokio".to_owned());
        }
    }
    out
}

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
    // Build everything first, so each crate's time below is its tests' time.
    run_cmd(cargo().args(["test", "--workspace", "--no-run", "--quiet"]))?;
    let started = Instant::now();
    let tallies: Vec<(String, Tally)> = members()
        .into_iter()
        .map(|m| {
            let t = test_crate(&m);
            (m, t)
        })
        .collect();
    let tests_secs = started.elapsed().as_secs_f64();
    let demo_start = Instant::now();
    let demos = if args.iter().any(|a| a == "--no-demos") {
        None
    } else {
        println!("\ntest: the tour in check mode");
        let all = demo::catalog()?;
        let refs: Vec<&demo::Demo> = all.iter().collect();
        Some(demo::run_demos(&refs, true))
    };
    let demo_secs = demo_start.elapsed().as_secs_f64();
    let leaks = Snapshot::take().leaks_since(&before);

    println!("\ntest: summary\n");
    println!(
        "{:<14} {:>7} {:>7} {:>8} {:>8}  result",
        "crate", "passed", "failed", "ignored", "seconds"
    );
    let mut total = Tally {
        ok: true,
        ..Tally::default()
    };
    for (m, t) in &tallies {
        println!(
            "{m:<14} {:>7} {:>7} {:>8} {:>8.1}  {}",
            t.passed,
            t.failed,
            t.ignored,
            t.secs,
            if t.ok { "ok" } else { "FAILED" }
        );
        total.passed += t.passed;
        total.failed += t.failed;
        total.ignored += t.ignored;
        total.ok &= t.ok;
    }
    println!(
        "{:<14} {:>7} {:>7} {:>8} {:>8.1}  {}",
        "all tests",
        total.passed,
        total.failed,
        total.ignored,
        tests_secs,
        if total.ok { "ok" } else { "FAILED" }
    );
    if let Some(d) = &demos {
        println!(
            "{:<14} {:>7} {:>7} {:>8} {:>8.1}  {}",
            "the tour",
            "",
            "",
            "",
            demo_secs,
            if d.is_ok() { "ok" } else { "FAILED" }
        );
    }
    println!(
        "{:<14} {:>7} {:>7} {:>8} {:>8}  {}",
        "leak check",
        "",
        "",
        "",
        "",
        if leaks.is_empty() {
            "ok".to_owned()
        } else {
            format!("FAILED: {} left behind", leaks.len())
        }
    );

    let failed: Vec<&str> = tallies
        .iter()
        .filter(|(_, t)| !t.ok)
        .map(|(m, _)| m.as_str())
        .collect();
    if !failed.is_empty() {
        return Err(format!("tests failed in: {}", failed.join(", ")));
    }
    if let Some(d) = demos {
        d?;
    }
    if leaks.is_empty() {
        println!("\ntest: leak check passed: no IPC object of the workspace was left behind");
        Ok(())
    } else {
        Err(format!(
            "leak check: {} object(s) left behind (remove with `cargo xtask clean`):\n  {}",
            leaks.len(),
            leaks.join("\n  ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::Tally;

    #[test]
    fn libtest_summaries_are_added_up() {
        let mut t = Tally::default();
        t.add_line("test result: ok. 31 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 2.05s");
        t.add_line("test result: FAILED. 3 passed; 1 failed; 0 ignored; 0 measured; 5 filtered out; finished in 0.1s");
        t.add_line("running 4 tests");
        assert_eq!((t.passed, t.failed, t.ignored), (34, 1, 2));
    }
}
