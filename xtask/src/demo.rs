//! `cargo xtask demo [--list] [NAME]`: the tour.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{Result, cargo, check_flags, root, run_cmd, target_dir, wants_help};

const HELP: &str = "\
cargo xtask demo [--list] [NAME..]

Builds ipc-examples once (release) and runs the tour: every demo listed in
ipc-examples/demos.txt, in that order, each with a header saying what it shows. Fails if any demo
fails (exits non-zero) or takes longer than 120 s.

  --list   list the demos with one line each, run nothing
  NAME     run only these demos
";

/// How long one demo may run before it counts as hung.
const DEMO_LIMIT: Duration = Duration::from_secs(120);

/// One entry of the tour.
pub(crate) struct Demo {
    pub(crate) name: String,
    pub(crate) shows: String,
}

/// The tour, in order, from `ipc-examples/demos.txt`.
pub(crate) fn catalog() -> Result<Vec<Demo>> {
    let path = root().join("ipc-examples/demos.txt");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, shows)) = line.split_once('\t') else {
            return Err(format!(
                "{}:{}: expected NAME<TAB>what it shows",
                path.display(),
                n + 1
            ));
        };
        out.push(Demo {
            name: name.trim().to_owned(),
            shows: shows.trim().to_owned(),
        });
    }
    Ok(out)
}

pub(crate) fn run(args: &[String]) -> Result {
    if wants_help(args, HELP) {
        return Ok(());
    }
    check_flags(args, &["--list"], HELP)?;
    let all = catalog()?;
    if args.iter().any(|a| a == "--list") {
        let width = all.iter().map(|d| d.name.len()).max().unwrap_or(0);
        for d in &all {
            println!("{:width$}  {}", d.name, d.shows);
        }
        return Ok(());
    }
    let wanted: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    for w in &wanted {
        if !all.iter().any(|d| &d.name == *w) {
            return Err(format!(
                "no demo named `{w}` (see `cargo xtask demo --list`)"
            ));
        }
    }
    let chosen: Vec<&Demo> = all
        .iter()
        .filter(|d| wanted.is_empty() || wanted.contains(&&d.name))
        .collect();
    run_demos(&chosen, false)
}

/// Builds the demos and runs `demos` in order. `quiet`: show a demo's output only if it fails.
pub(crate) fn run_demos(demos: &[&Demo], quiet: bool) -> Result {
    if demos.is_empty() {
        println!("demo: the tour has no demos yet");
        return Ok(());
    }
    run_cmd(cargo().args([
        "build",
        "--release",
        "--quiet",
        "-p",
        "ipc-examples",
        "--bins",
    ]))?;
    let bin_dir = target_dir().join("release");
    let mut failed = Vec::new();
    let started = Instant::now();
    for (i, d) in demos.iter().enumerate() {
        println!();
        println!("━━━ [{}/{}] {} — {}", i + 1, demos.len(), d.name, d.shows);
        let t0 = Instant::now();
        let outcome = run_one(&bin_dir.join(&d.name), quiet);
        let secs = t0.elapsed().as_secs_f64();
        match outcome {
            Ok(()) => println!("━━━ {} passed in {secs:.1} s", d.name),
            Err(e) => {
                println!("━━━ {} FAILED in {secs:.1} s: {e}", d.name);
                failed.push(d.name.clone());
            }
        }
    }
    println!();
    println!(
        "demo: {} of {} passed in {:.1} s",
        demos.len() - failed.len(),
        demos.len(),
        started.elapsed().as_secs_f64()
    );
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("failed demos: {}", failed.join(", ")))
    }
}

fn run_one(bin: &std::path::Path, quiet: bool) -> Result {
    let mut cmd = Command::new(bin);
    cmd.current_dir(root()).stdin(Stdio::null());
    if quiet {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    // Output is read by threads so a chatty demo never blocks on a full pipe.
    let readers = quiet.then(|| {
        let mut out = child.stdout.take().expect("piped");
        let mut err = child.stderr.take().expect("piped");
        (
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = std::io::Read::read_to_string(&mut out, &mut s);
                s
            }),
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = std::io::Read::read_to_string(&mut err, &mut s);
                s
            }),
        )
    });
    let deadline = Instant::now() + DEMO_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = readers.map(|(o, e)| (o.join().unwrap_or_default(), e.join().unwrap_or_default()));
    let result = match status {
        Some(s) if s.success() => Ok(()),
        Some(s) => Err(format!("exited with {s}")),
        None => Err(format!("still running after {DEMO_LIMIT:?}; killed")),
    };
    if let (Err(_), Some((out, err))) = (&result, output) {
        print!("{out}");
        eprint!("{err}");
    }
    result
}
