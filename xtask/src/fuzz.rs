//! `cargo xtask fuzz`: builds the crates' libFuzzer targets with nightly and runs them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::nightly;
use crate::util::{Result, root, target_dir, wants_help};

const HELP: &str = "\
cargo xtask fuzz [--list] [--time SECONDS] [TARGET..]

Builds every fuzz target (ipc-*/fuzz, cargo-fuzz layout) with a nightly toolchain, coverage
instrumentation and AddressSanitizer (the flags cargo-fuzz uses; cargo-fuzz itself is not
needed), then runs each TARGET (default: all) for SECONDS (default 60) and prints how many
inputs each ran. A crash, a leak, a timeout or an out-of-memory fails the command and names the
input that caused it (under target/fuzz/artifacts/TARGET/); turn it into a regression test.
The corpus grows in target/fuzz/corpus/TARGET/ and is reused by later runs. Without a nightly
toolchain it says so and skips.
";

/// The instrumentation cargo-fuzz applies (`cargo fuzz build` with its defaults).
const RUSTFLAGS: &str = "-Cpasses=sancov-module \
    -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
    -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares \
    --cfg fuzzing -Zsanitizer=address -Cdebug-assertions -Coverflow-checks";

/// One fuzz target: its crate's fuzz directory and its binary name.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    dir: PathBuf,
    name: String,
}

/// Every `[[bin]]` of every `ipc-*/fuzz/Cargo.toml`, sorted by name.
pub(crate) fn targets() -> Vec<Target> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(root()) else {
        return out;
    };
    for e in entries.flatten() {
        let dir = e.path().join("fuzz");
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("ipc-") {
            continue;
        }
        let Ok(manifest) = fs::read_to_string(dir.join("Cargo.toml")) else {
            continue;
        };
        out.extend(bin_names(&manifest).into_iter().map(|name| Target {
            dir: dir.clone(),
            name,
        }));
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The `name`s of the `[[bin]]` tables of a manifest.
fn bin_names(manifest: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_bin = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
            continue;
        }
        if in_bin {
            if let Some(v) = line
                .strip_prefix("name")
                .map(str::trim_start)
                .and_then(|r| r.strip_prefix('='))
            {
                out.push(v.trim().trim_matches('"').to_owned());
            }
        }
    }
    out
}

/// What one run of a target did.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// The target.
    pub(crate) name: String,
    /// Inputs executed (libFuzzer's `stat::number_of_executed_units`).
    pub(crate) execs: u64,
    /// Wall-clock seconds.
    pub(crate) secs: f64,
    /// `None` when clean; else what went wrong.
    pub(crate) failure: Option<String>,
}

pub(crate) fn run(args: &[String]) -> Result {
    if wants_help(args, HELP) {
        return Ok(());
    }
    let mut secs = 60u64;
    let mut names = Vec::new();
    let mut list = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--list" => list = true,
            "--time" => {
                secs = it
                    .next()
                    .and_then(|s| s.parse().ok())
                    .ok_or(format!("--time needs a number of seconds\n\n{HELP}"))?;
            }
            s if s.starts_with('-') => return Err(format!("unknown option `{s}`\n\n{HELP}")),
            s => names.push(s.to_owned()),
        }
    }
    let all = targets();
    if list {
        for t in &all {
            println!("{}", t.name);
        }
        return Ok(());
    }
    let chosen: Vec<Target> = if names.is_empty() {
        all.clone()
    } else {
        names
            .iter()
            .map(|n| {
                all.iter().find(|t| &t.name == n).cloned().ok_or(format!(
                    "no fuzz target `{n}` (`cargo xtask fuzz --list` lists them)"
                ))
            })
            .collect::<Result<_>>()?
    };
    let outcomes = fuzz(&chosen, secs)?;
    report(&outcomes)
}

/// Builds and runs `targets` for `secs` seconds each. `Ok(vec![])` (after saying so) without
/// nightly.
pub(crate) fn fuzz(targets: &[Target], secs: u64) -> Result<Vec<Outcome>> {
    let Some(_) = nightly::cargo() else {
        nightly::skipped("fuzz");
        return Ok(Vec::new());
    };
    if targets.is_empty() {
        return Err("no fuzz targets found (ipc-*/fuzz/Cargo.toml)".into());
    }
    let triple = nightly::host_triple().ok_or("cannot read the host triple from `rustc -vV`")?;
    let tdir = target_dir().join("fuzz");
    let mut dirs: Vec<&Path> = targets.iter().map(|t| t.dir.as_path()).collect();
    dirs.dedup();
    for dir in dirs {
        let mut cmd = nightly::cargo().ok_or("nightly vanished")?;
        cmd.args([
            "build",
            "--release",
            "--quiet",
            "--bins",
            "--target",
            &triple,
        ])
        .arg("--manifest-path")
        .arg(dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &tdir)
        .env("RUSTFLAGS", RUSTFLAGS);
        println!("fuzz: building {}", dir.display());
        let status = cmd
            .status()
            .map_err(|e| format!("cannot run cargo +nightly: {e}"))?;
        if !status.success() {
            return Err(format!(
                "building the fuzz targets of {} failed",
                dir.display()
            ));
        }
    }
    let bin_dir = tdir.join(&triple).join("release");
    let mut out = Vec::new();
    for t in targets {
        out.push(run_one(&bin_dir, &tdir, t, secs)?);
    }
    Ok(out)
}

fn run_one(bin_dir: &Path, tdir: &Path, t: &Target, secs: u64) -> Result<Outcome> {
    let corpus = tdir.join("corpus").join(&t.name);
    let artifacts = tdir.join("artifacts").join(&t.name);
    for d in [&corpus, &artifacts] {
        fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    }
    let mut cmd = Command::new(bin_dir.join(&t.name));
    cmd.arg(&corpus);
    // Seeds kept in the repository, if the crate has any: read, never written to.
    let seeds = t.dir.join("seeds").join(&t.name);
    if seeds.is_dir() {
        cmd.arg(&seeds);
    }
    cmd.arg(format!("-max_total_time={secs}"))
        .arg("-timeout=20")
        .arg("-rss_limit_mb=2048")
        .arg("-malloc_limit_mb=1024")
        .arg("-print_final_stats=1")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    println!("fuzz: running {} for {secs} s", t.name);
    let start = Instant::now();
    let output = cmd
        .output()
        .map_err(|e| format!("cannot run fuzz target {}: {e}", t.name))?;
    let secs = start.elapsed().as_secs_f64();
    let log = String::from_utf8_lossy(&output.stderr);
    let execs = log
        .lines()
        .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let failure = if output.status.success() {
        None
    } else {
        let artifact = log
            .lines()
            .find_map(|l| l.split_once("Test unit written to "))
            .map(|(_, path)| format!("input: {}", path.trim()))
            .unwrap_or_else(|| "no input was written".into());
        let reason = log
            .lines()
            .find(|l| l.contains("ERROR: ") || l.contains("panicked at") || l.contains("==ERROR"))
            .map(|l| l.trim().to_owned())
            .unwrap_or_else(|| format!("exit {}", output.status));
        // The whole log is what a contributor needs to reproduce it.
        eprintln!("--- {} ---\n{log}", t.name);
        Some(format!("{reason}; {artifact}"))
    };
    Ok(Outcome {
        name: t.name.clone(),
        execs,
        secs,
        failure,
    })
}

/// Prints one line per target; fails if any target found something.
pub(crate) fn report(outcomes: &[Outcome]) -> Result {
    if outcomes.is_empty() {
        return Ok(());
    }
    println!("\n| fuzz target | inputs run | seconds | result |\n|---|---:|---:|---|");
    for o in outcomes {
        println!(
            "| {} | {} | {:.0} | {} |",
            o.name,
            o.execs,
            o.secs,
            o.failure.as_deref().unwrap_or("no finding")
        );
    }
    let bad: Vec<&Outcome> = outcomes.iter().filter(|o| o.failure.is_some()).collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} fuzz target(s) found a failing input: {}",
            bad.len(),
            bad.iter()
                .map(|o| o.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::bin_names;

    #[test]
    fn bins_are_read_from_the_manifest() {
        let m = "[package]\nname = \"x-fuzz\"\n\n[[bin]]\nname = \"a_b\"\npath = \"f/a.rs\"\n\
                 [dependencies]\nname = 1\n[[bin]]\nname=\"c\"\n";
        assert_eq!(bin_names(m), ["a_b", "c"]);
    }
}
