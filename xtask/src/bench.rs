//! `cargo xtask bench`: every crate's benchmark, one table, a report and a chart.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::process::Stdio;

use crate::util::{Result, cargo, check_flags, mechanism_crates, root, target_dir, wants_help};

const HELP: &str = "\
cargo xtask bench [--smoke|--quick] [--update-readme] [GROUP..]
cargo xtask bench --peers [--smoke|--quick] [--update-readme] [CASE..]

Runs every mechanism crate's benches (ipc-*/benches/*.rs, harness = false). Each bench measures
the crate and the same protocol on raw syscalls in the same run and prints `ipc-bench` lines;
this command gathers them into one table (ours, baseline, ratio = ours / baseline, the issue's
target) and writes target/ipc-bench/report.md and target/ipc-bench/chart.svg.

  --smoke          a few iterations: proves the benches run (figures are meaningless)
  --quick          a short run
  --update-readme  also replace the figures block of README.md with this run's table and
                   write its chart to docs/bench-chart.svg
  GROUP            only these crates (pipe, fifo, mq, sem, shm)
  --peers          instead, build and run bench-peers/ (not a workspace member: the ipc crates
                   against shmem-ipc, iceoryx2, ipmpsc, shared_memory+raw_sync, ipc-channel,
                   std::io::pipe, os_pipe, posixmq) and write target/ipc-bench/peers.md;
                   with --update-readme, its table goes into bench-peers/README.md and
                   README.md.
                   CASE: only cases whose id starts so (shm-64, pipe, ...; see its README)
";

/// One parsed `ipc-bench` line.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) group: String,
    pub(crate) case: String,
    pub(crate) metric: String,
    pub(crate) unit: String,
    pub(crate) lower_is_better: bool,
    pub(crate) ours: f64,
    pub(crate) baseline: f64,
    pub(crate) baseline_name: String,
    pub(crate) target: Option<f64>,
}

impl Row {
    /// `ours / baseline`.
    pub(crate) fn ratio(&self) -> f64 {
        self.ours / self.baseline
    }

    /// How much better than the baseline (> 1: better), whichever direction is better.
    fn relative(&self) -> f64 {
        if self.lower_is_better {
            self.baseline / self.ours
        } else {
            self.ours / self.baseline
        }
    }

    fn verdict(&self) -> &'static str {
        match self.target {
            None => "",
            Some(t) if self.lower_is_better == (self.ratio() <= t) => "met",
            Some(_) => "missed",
        }
    }

    fn target_text(&self) -> String {
        match self.target {
            None => String::new(),
            Some(t) if self.lower_is_better => format!("≤ {t}×"),
            Some(t) => format!("≥ {t}×"),
        }
    }
}

/// Parses one `ipc-bench` line; `None` for any other line.
pub(crate) fn parse_line(line: &str) -> Option<Row> {
    let mut fields = line.split('\t');
    if fields.next()? != "ipc-bench" {
        return None;
    }
    let kv: BTreeMap<&str, &str> = fields.filter_map(|f| f.split_once('=')).collect();
    Some(Row {
        group: kv.get("group")?.to_string(),
        case: kv.get("case")?.to_string(),
        metric: kv.get("metric")?.to_string(),
        unit: kv.get("unit")?.to_string(),
        lower_is_better: *kv.get("better")? == "lower",
        ours: kv.get("ours")?.parse().ok()?,
        baseline: kv.get("baseline")?.parse().ok()?,
        baseline_name: kv.get("baseline_name")?.to_string(),
        target: kv.get("target").and_then(|t| t.parse().ok()),
    })
}

pub(crate) fn run(args: &[String]) -> Result {
    if wants_help(args, HELP) {
        return Ok(());
    }
    check_flags(
        args,
        &["--smoke", "--quick", "--update-readme", "--peers"],
        HELP,
    )?;
    let mode = if args.iter().any(|a| a == "--smoke") {
        "smoke"
    } else if args.iter().any(|a| a == "--quick") {
        "quick"
    } else {
        "full"
    };
    let groups: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    if args.iter().any(|a| a == "--peers") {
        return peers(mode, &groups, args.iter().any(|a| a == "--update-readme"));
    }
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for krate in mechanism_crates() {
        let group = krate.trim_start_matches("ipc-");
        if !groups.is_empty() && !groups.iter().any(|g| *g == group || **g == krate) {
            continue;
        }
        let dir = root().join(&krate).join("benches");
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        let mut benches: Vec<String> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_suffix(".rs").map(str::to_owned)
            })
            .collect();
        benches.sort();
        for bench in benches {
            eprintln!("bench: {krate} {bench} ({mode})");
            let out = cargo()
                .args(["bench", "--quiet", "-p", &krate, "--bench", &bench])
                .env("IPC_BENCH", mode)
                .stdin(Stdio::null())
                .stderr(Stdio::inherit())
                .output()
                .map_err(|e| format!("cannot run cargo bench: {e}"))?;
            gather(&format!("{krate}/{bench}"), &out, &mut rows, &mut failures);
        }
    }
    let table = markdown_table(&rows);
    println!("\n{table}");
    let out_dir = target_dir().join("ipc-bench");
    fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let report = format!(
        "# ipc benchmark report\n\nMode: `{mode}`. Generated by `cargo xtask bench{}`; each ratio is \
         ours / baseline measured in the same run on this machine.\n\n{table}\n![chart](chart.svg)\n",
        if mode == "full" {
            String::new()
        } else {
            format!(" --{mode}")
        }
    );
    fs::write(out_dir.join("report.md"), report).map_err(|e| e.to_string())?;
    fs::write(out_dir.join("chart.svg"), svg_chart(&rows)).map_err(|e| e.to_string())?;
    println!(
        "bench: wrote {} and chart.svg",
        out_dir.join("report.md").display()
    );
    if args.iter().any(|a| a == "--update-readme") {
        let docs = root().join("docs");
        fs::create_dir_all(&docs).map_err(|e| format!("{}: {e}", docs.display()))?;
        fs::write(docs.join("bench-chart.svg"), svg_chart(&rows)).map_err(|e| e.to_string())?;
        update_readme(&table, mode)?;
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}

/// Keeps the `ipc-bench` lines of a bench's output as rows, shows the rest, notes failures.
fn gather(
    label: &str,
    out: &std::process::Output,
    rows: &mut Vec<Row>,
    failures: &mut Vec<String>,
) {
    let text = String::from_utf8_lossy(&out.stdout);
    let mut n = 0;
    for line in text.lines() {
        match parse_line(line) {
            Some(r) => {
                n += 1;
                rows.push(r);
            }
            None if !line.trim().is_empty() => println!("  {label}: {line}"),
            None => {}
        }
    }
    if !out.status.success() {
        failures.push(format!("{label} failed: {}", out.status));
    } else if n == 0 {
        failures.push(format!("{label} printed no ipc-bench line"));
    }
}

const PEERS_START: &str = "<!-- peers-table -->";
const PEERS_END: &str = "<!-- /peers-table -->";

/// `--peers`: bench-peers/ is its own workspace (its peers' dependencies stay out of ours), so
/// it is built and run through its manifest; its lines make the same table.
fn peers(mode: &str, cases: &[&String], update_readme: bool) -> Result {
    eprintln!("bench: bench-peers ({mode})");
    let manifest = root().join("bench-peers").join("Cargo.toml");
    let out = cargo()
        .args(["run", "--release", "--quiet", "--manifest-path"])
        .arg(&manifest)
        .arg("--")
        .args(cases.iter().map(|c| c.as_str()))
        .env("IPC_BENCH", mode)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run bench-peers: {e}"))?;
    let (mut rows, mut failures) = (Vec::new(), Vec::new());
    gather("bench-peers", &out, &mut rows, &mut failures);
    let table = markdown_table(&rows);
    println!("\n{table}");
    let out_dir = target_dir().join("ipc-bench");
    fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let flag = if mode == "full" {
        String::new()
    } else {
        format!(" --{mode}")
    };
    let report = format!(
        "# ipc against its peers\n\nMode: `{mode}`. Generated by `cargo xtask bench --peers{flag}`; \
         each ratio is ours / peer measured in the same run on this machine.\n\n{table}"
    );
    fs::write(out_dir.join("peers.md"), report).map_err(|e| e.to_string())?;
    println!("bench: wrote {}", out_dir.join("peers.md").display());
    if update_readme && failures.is_empty() {
        // The table goes into bench-peers' own README and the workspace's.
        for rel in ["bench-peers/README.md", "README.md"] {
            let path = root().join(rel);
            let text = fs::read_to_string(&path).map_err(|e| e.to_string())?;
            let (Some(a), Some(b)) = (text.find(PEERS_START), text.find(PEERS_END)) else {
                return Err(format!("{rel} has no {PEERS_START} block"));
            };
            let block = format!(
                "{PEERS_START}\n_Generated by `cargo xtask bench --peers{flag} --update-readme`; \
                 compare ratios, not absolute figures._\n\n{table}"
            );
            let new = format!("{}{block}{}", &text[..a], &text[b..]);
            fs::write(&path, new).map_err(|e| e.to_string())?;
            println!("bench: updated the table in {rel}");
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}

/// The table every output shows.
pub(crate) fn markdown_table(rows: &[Row]) -> String {
    let mut s = String::from(
        "| mechanism | case | metric | ours | baseline | ratio | target |\n|---|---|---|---:|---:|---:|---|\n",
    );
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} {} | {} {} ({}) | {:.2}× | {} {} |",
            r.group,
            r.case,
            r.metric,
            fmt_num(r.ours),
            r.unit,
            fmt_num(r.baseline),
            r.unit,
            r.baseline_name,
            r.ratio(),
            r.target_text(),
            r.verdict()
        );
    }
    s
}

fn fmt_num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A horizontal bar per row: performance relative to its baseline (> 1 is better), with a line
/// at 1.
pub(crate) fn svg_chart(rows: &[Row]) -> String {
    let bar_h = 18.0;
    let label_w = 430.0;
    let plot_w = 420.0;
    let height = 50.0 + bar_h * rows.len() as f64 + 30.0;
    let max = rows
        .iter()
        .map(Row::relative)
        .filter(|v| v.is_finite())
        .fold(1.5_f64, f64::max)
        .min(20.0);
    let x = |v: f64| label_w + plot_w * (v.min(max) / max);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"20\" font-size=\"14\">ipc vs raw syscalls, same run: performance relative to baseline (longer is better; line = 1×)</text>\n",
        label_w + plot_w + 80.0
    );
    for (i, r) in rows.iter().enumerate() {
        let y = 40.0 + bar_h * i as f64;
        let rel = r.relative();
        let color = match r.verdict() {
            "missed" => "#d9534f",
            _ => "#4a7ebb",
        };
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{} · {} · {}</text>\
             <rect x=\"{label_w}\" y=\"{}\" width=\"{:.1}\" height=\"{}\" fill=\"{color}\"/>\
             <text x=\"{:.1}\" y=\"{}\">{rel:.2}×</text>",
            label_w - 6.0,
            y + 12.0,
            xml(&r.group),
            xml(&r.case),
            xml(&r.metric),
            y + 2.0,
            (x(rel) - label_w).max(1.0),
            bar_h - 4.0,
            x(rel) + 4.0,
            y + 12.0
        );
    }
    let one = x(1.0);
    let _ = writeln!(
        s,
        "<line x1=\"{one:.1}\" y1=\"32\" x2=\"{one:.1}\" y2=\"{:.1}\" stroke=\"black\" stroke-dasharray=\"4 3\"/>\n</svg>",
        height - 20.0
    );
    s
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

const START: &str = "<!-- bench:start -->";
const END: &str = "<!-- bench:end -->";

fn update_readme(table: &str, mode: &str) -> Result {
    let path = root().join("README.md");
    let text = fs::read_to_string(&path).map_err(|e| e.to_string())?;
    let (Some(a), Some(b)) = (text.find(START), text.find(END)) else {
        return Err(format!("README.md has no {START} … {END} block"));
    };
    let cmd = if mode == "full" {
        "cargo xtask bench --update-readme".to_owned()
    } else {
        format!("cargo xtask bench --{mode} --update-readme")
    };
    let block = format!(
        "{START}\n_Generated by `{cmd}` on this project's 2-core build machine; ratios are ours / baseline \
         measured in the same run. The machine is shared and noisy: compare ratios, not absolute \
         figures, and expect a few percent of drift between runs._\n\n{table}\n\
         ![ours relative to each baseline, same run](docs/bench-chart.svg)\n{END}"
    );
    let new = format!("{}{block}{}", &text[..a], &text[b + END.len()..]);
    fs::write(&path, new).map_err(|e| e.to_string())?;
    println!("bench: updated the figures in README.md");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_row_and_computes_the_ratio() {
        let r = parse_line(
            "ipc-bench\tgroup=pipe\tcase=64 B round trip\tmetric=p50\tunit=us\tbetter=lower\tours=10.5\tbaseline=10.0\tbaseline_name=raw libc\ttarget=1.05",
        )
        .expect("row");
        assert_eq!(r.group, "pipe");
        assert!((r.ratio() - 1.05).abs() < 1e-9);
        assert_eq!(r.verdict(), "met");
        assert!(parse_line("some other output").is_none());
        let t = markdown_table(std::slice::from_ref(&r));
        assert!(t.contains("| pipe | 64 B round trip | p50 | 10.5 us | 10.0 us (raw libc) | 1.05× | ≤ 1.05× met |"), "{t}");
        assert!(svg_chart(&[r]).contains("<svg"));
    }
}
