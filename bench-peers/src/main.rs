//! bench-peers: the ipc crates against the crates people use instead (issue 14).
//!
//! Run: `cargo run --release` in this directory (`IPC_BENCH=smoke|quick|full`, `PIN=none` to
//! leave placement to the scheduler, case ids as arguments to run only those). See README.md.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use ipc_testkit::bench::{Better, Latency, Mode, Row};

mod ctl;
mod peers;
mod proto;
mod raw;

use ctl::Params;
use peers::{Entry, Outcome, Result};

/// The bytes of buffering each shared-memory contender gets (ring size, queue depth × size).
const BUF: usize = 4 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    OneWay,
    RoundTrip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    /// Millions of messages per second.
    Msgs,
    /// 10^9 bytes per second.
    Gbps,
    /// Round-trip latency, µs.
    Latency,
}

/// One table row: ours against one peer.
#[derive(Debug, Clone)]
struct RowSpec {
    case: String,
    ours: &'static str,
    peer: &'static str,
    target: Option<f64>,
}

/// A set of contenders measured with the same parameters, slices alternating.
#[derive(Debug, Clone)]
struct Case {
    id: String,
    title: String,
    kind: Kind,
    unit: Unit,
    params: Params,
    contenders: Vec<&'static str>,
    rows: Vec<RowSpec>,
}

fn size_name(size: usize) -> String {
    match size {
        s if s >= 1 << 20 => format!("{} MiB", s >> 20),
        s if s >= 1 << 10 => format!("{} KiB", s >> 10),
        s => format!("{s} B"),
    }
}

fn row(case: &str, ours: &'static str, peer: &'static str, target: Option<f64>) -> RowSpec {
    RowSpec {
        case: case.to_owned(),
        ours,
        peer,
        target,
    }
}

fn plan(mode: Mode) -> Vec<Case> {
    let small = mode.pick(200_000u64, 2_000_000, 10_000_000);
    let bulk = mode.pick(32u64 << 20, 256 << 20, 1 << 30);
    let bulk_params = |size: usize| {
        let count = (bulk / size as u64).max(8);
        Params {
            size,
            warm: (count / 10).max(2 * BUF as u64 / size as u64).max(4),
            count,
            buf: BUF,
        }
    };
    let mut cases = Vec::new();

    // 1. 64-byte messages one way.
    let title = "64 B messages one way";
    cases.push(Case {
        id: "shm-64".into(),
        title: title.into(),
        kind: Kind::OneWay,
        unit: Unit::Msgs,
        params: Params {
            size: 64,
            warm: (small / 10).max(2 * raw::SLOTS),
            count: small,
            buf: BUF,
        },
        contenders: vec!["ring", "shmem-ipc", "iceoryx2", "ipmpsc", "spsc64"],
        rows: {
            let c = "Ring, 64 B one way";
            vec![
                row(c, "ring", "shmem-ipc", Some(3.0)),
                row(c, "ring", "iceoryx2", None),
                row(c, "ring", "ipmpsc", None),
                row(c, "ring", "spsc64", Some(0.5)),
            ]
        },
    });

    // 2. Larger messages one way.
    for size in [4 << 10, 64 << 10, 1 << 20] {
        let title = format!("{} messages one way", size_name(size));
        let c = format!("Ring, {} one way", size_name(size));
        let ice_target = (size >= 64 << 10).then_some(1.0);
        cases.push(Case {
            id: format!("shm-{}", size_name(size).replace(' ', "").to_lowercase()),
            title: title.clone(),
            kind: Kind::OneWay,
            unit: Unit::Gbps,
            params: bulk_params(size),
            contenders: vec!["ring", "shmem-ipc", "iceoryx2", "ipmpsc", "shm-sync"],
            rows: vec![
                row(&c, "ring", "iceoryx2", ice_target),
                row(&c, "ring", "shmem-ipc", None),
                row(&c, "ring", "ipmpsc", None),
                row(&c, "ring", "shm-sync", None),
            ],
        });
    }

    // 3. Spinning round trips.
    let rtt = mode.pick(10_000u64, 100_000, 500_000);
    let title = "64 B round trip, spinning";
    cases.push(Case {
        id: "rtt".into(),
        title: title.into(),
        kind: Kind::RoundTrip,
        unit: Unit::Latency,
        params: Params {
            size: 64,
            warm: mode.pick(1_000, 5_000, 10_000),
            count: rtt,
            buf: 64 << 10,
        },
        contenders: vec!["ring-spin", "spin-ring", "iceoryx2"],
        rows: {
            let c = "Ring (spin), 64 B round trip";
            vec![
                row(c, "ring-spin", "spin-ring", Some(1.0)),
                row(c, "ring-spin", "iceoryx2", None),
            ]
        },
    });

    // 4. Framed messages over a pipe.
    for size in [4 << 10, 64 << 10, 1 << 20] {
        let title = format!("framed {} over a pipe", size_name(size));
        let c = format!("Framed, {} frames, default pipe", size_name(size));
        let grown = format!("Framed, {} frames, pipe grown to 1 MiB", size_name(size));
        cases.push(Case {
            id: format!("pipe-{}", size_name(size).replace(' ', "").to_lowercase()),
            title: title.clone(),
            kind: Kind::OneWay,
            unit: Unit::Gbps,
            params: bulk_params(size),
            contenders: vec![
                "ipc-pipe",
                "ipc-channel",
                "std-pipe",
                "os-pipe",
                "ipc-pipe-1m",
                "std-pipe-writev",
            ],
            rows: vec![
                row(&c, "ipc-pipe", "ipc-channel", Some(1.0)),
                row(&c, "ipc-pipe", "std-pipe", Some(0.95)),
                row(&c, "ipc-pipe", "os-pipe", Some(0.95)),
                row(&grown, "ipc-pipe-1m", "ipc-channel", None),
            ],
        });
    }

    // 5. POSIX message queues.
    let title = "POSIX mq 64 B round trip";
    cases.push(Case {
        id: "mq-rtt".into(),
        title: title.into(),
        kind: Kind::RoundTrip,
        unit: Unit::Latency,
        params: Params {
            size: 64,
            warm: mode.pick(500, 2_000, 5_000),
            count: mode.pick(5_000, 50_000, 100_000),
            buf: 0,
        },
        contenders: vec!["ipc-mq", "posixmq"],
        rows: vec![row(
            "ipc-mq, 64 B round trip",
            "ipc-mq",
            "posixmq",
            Some(1.05),
        )],
    });
    let title = "POSIX mq 8 KiB one way";
    let count = mode.pick(10_000u64, 100_000, 400_000);
    cases.push(Case {
        id: "mq-8k".into(),
        title: title.into(),
        kind: Kind::OneWay,
        unit: Unit::Gbps,
        params: Params {
            size: 8192,
            warm: count / 10,
            count,
            buf: 0,
        },
        contenders: vec!["ipc-mq", "posixmq"],
        rows: vec![row(
            "ipc-mq, 8 KiB one way",
            "ipc-mq",
            "posixmq",
            Some(0.95),
        )],
    });
    cases
}

/// A contender's figures in one case, one per slice.
#[derive(Debug, Default, Clone)]
struct Figures {
    /// Throughput per slice (one-way), or p50 per slice (round trip).
    main: Vec<f64>,
    /// p99 per slice (round trip).
    p99: Vec<f64>,
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn lookup(entries: &[Entry], key: &str) -> Entry {
    *entries
        .iter()
        .find(|e| e.key == key)
        .unwrap_or_else(|| panic!("no contender {key}"))
}

fn run_case(case: &Case, rounds: usize) -> Result<Vec<(Entry, Figures)>> {
    let entries = match case.kind {
        Kind::OneWay => peers::one_way_entries(),
        Kind::RoundTrip => peers::round_trip_entries(),
    };
    let mut figs: Vec<(Entry, Figures)> = case
        .contenders
        .iter()
        .map(|k| (lookup(&entries, k), Figures::default()))
        .collect();
    let p = &case.params;
    for _ in 0..rounds {
        for (e, f) in &mut figs {
            let _wd = ipc_testkit::Watchdog::new(
                &format!("{} / {}", case.title, e.name),
                Duration::from_secs(600),
            );
            let out = (e.run)(p).map_err(|err| format!("{} / {}: {err}", case.title, e.name))?;
            match out {
                Outcome::Secs(s) => f.main.push(match case.unit {
                    Unit::Msgs => p.count as f64 / s / 1e6,
                    _ => (p.count * p.size as u64) as f64 / s / 1e9,
                }),
                Outcome::RoundTrips(mut samples) => {
                    let l = Latency::of(&mut samples);
                    f.main.push(l.p50_us);
                    f.p99.push(l.p99_us);
                }
            }
        }
    }
    Ok(figs)
}

fn unit_name(u: Unit) -> &'static str {
    match u {
        Unit::Msgs => "M msg/s",
        Unit::Gbps => "GB/s",
        Unit::Latency => "us",
    }
}

fn show(case: &Case, figs: &[(Entry, Figures)]) {
    println!(
        "{} ({} messages of {} B per slice after {} warm-up, {} slices each, alternating):",
        case.title,
        case.params.count,
        case.params.size,
        case.params.warm,
        figs.first().map_or(0, |(_, f)| f.main.len()),
    );
    for (e, f) in figs {
        let (lo, hi) = f
            .main
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        let extra = if f.p99.is_empty() {
            String::new()
        } else {
            format!(", p99 median {:.3}", median(&f.p99))
        };
        let what = if case.unit == Unit::Latency {
            "p50 median"
        } else {
            "median"
        };
        // The same round's figures of the first contender (ours) over this one's: the ratio
        // with the machine's state between rounds taken out.
        let paired = match figs.first() {
            Some((first, of)) if first.key != e.key => {
                let r: Vec<f64> = of.main.iter().zip(&f.main).map(|(o, t)| o / t).collect();
                format!(
                    ", {} / this per round: median {:.2}",
                    first.name,
                    median(&r)
                )
            }
            _ => String::new(),
        };
        println!(
            "  {:<30} {what} {:>8.3} {} (slices {lo:.3} .. {hi:.3}){extra}{paired}",
            e.name,
            median(&f.main),
            unit_name(case.unit),
        );
    }
}

/// Emits the case's `ipc-bench` lines; returns the summary-table lines.
fn emit(case: &Case, figs: &[(Entry, Figures)]) -> Vec<String> {
    let get = |key: &str| {
        figs.iter()
            .find(|(e, _)| e.key == key)
            .unwrap_or_else(|| panic!("no figures for {key}"))
    };
    let mut table = Vec::new();
    let ran = |key: &str| figs.iter().any(|(e, _)| e.key == key);
    for r in case.rows.iter().filter(|r| ran(r.ours) && ran(r.peer)) {
        let (_, of) = get(r.ours);
        let (peer, pf) = get(r.peer);
        let metrics: Vec<(&str, f64, f64, Option<f64>)> = match case.unit {
            Unit::Latency => vec![
                ("p50", median(&of.main), median(&pf.main), r.target),
                ("p99", median(&of.p99), median(&pf.p99), None),
            ],
            u => vec![(unit_name(u), median(&of.main), median(&pf.main), r.target)],
        };
        let case_name = &r.case;
        for (metric, o, b, target) in metrics {
            let better = if case.unit == Unit::Latency {
                Better::Lower
            } else {
                Better::Higher
            };
            Row {
                group: "peers",
                case: case_name,
                metric,
                unit: unit_name(case.unit),
                better,
                ours: o,
                baseline: b,
                baseline_name: peer.name,
                target,
            }
            .emit();
            let verdict = match (target, better) {
                (None, _) => String::new(),
                (Some(t), Better::Higher) => {
                    format!("≥ {t} {}", if o / b >= t { "met" } else { "NOT met" })
                }
                (Some(t), Better::Lower) => {
                    format!("≤ {t} {}", if o / b <= t { "met" } else { "NOT met" })
                }
            };
            table.push(format!(
                "| {case_name} | {metric} | {o:.3} | {} | {b:.3} | {:.2}× | {verdict} |",
                peer.name,
                o / b
            ));
        }
    }
    table
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn parent() -> Result<()> {
    let mode = Mode::from_env();
    let filter: Vec<String> = std::env::args().skip(1).collect();
    let pin = ctl::pin_parent();
    let rounds = mode.pick(1, 5, 9);
    let started = Instant::now();
    let load0 = loadavg();
    println!(
        "peers bench: {mode:?}, {rounds} slice(s) per contender and case, figures = median of slices; \
         parent (receiver/timer) on CPU {:?}, child on CPU {:?}; load average {load0}",
        pin.parent, pin.child
    );
    let mut table = Vec::new();
    // `BENCH_PEERS_ALSO=CASE:KEY,...` adds contenders to cases (figures shown, no table row),
    // e.g. `shm-4:shm-sync-cond`.
    let also: Vec<(String, String)> = std::env::var("BENCH_PEERS_ALSO")
        .unwrap_or_default()
        .split(',')
        .filter_map(|s| s.split_once(':'))
        .map(|(c, k)| (c.to_owned(), k.to_owned()))
        .collect();
    for mut case in plan(mode) {
        // Arguments: `CASE` (an id prefix) or `CASE/KEY` (one contender of it).
        let picked: Vec<Option<&str>> = filter
            .iter()
            .filter_map(|f| {
                let (c, k) = f
                    .split_once('/')
                    .map_or((f.as_str(), None), |(c, k)| (c, Some(k)));
                case.id.starts_with(c).then_some(k)
            })
            .collect();
        if !filter.is_empty() && picked.is_empty() {
            continue;
        }
        if !picked.contains(&None) && !picked.is_empty() {
            case.contenders.retain(|k| picked.contains(&Some(*k)));
        }
        for (c, k) in &also {
            if case.id.starts_with(c.as_str()) {
                let entries = match case.kind {
                    Kind::OneWay => peers::one_way_entries(),
                    Kind::RoundTrip => peers::round_trip_entries(),
                };
                case.contenders.push(lookup(&entries, k).key);
            }
        }
        let figs = run_case(&case, rounds)?;
        show(&case, &figs);
        table.extend(emit(&case, &figs));
    }
    println!();
    println!("| case | metric | ours | peer | peer's | ours/peer | target |");
    println!("|---|---|---|---|---|---|---|");
    for line in &table {
        println!("{line}");
    }
    println!(
        "\n{mode:?} run: {:.0} s; load average {load0} at the start, {} at the end ({} CPUs)",
        started.elapsed().as_secs_f64(),
        loadavg(),
        pin.cpus
    );
    Ok(())
}

fn main() -> ExitCode {
    match ctl::child() {
        Ok(Some((role, params, ctl))) => {
            let _wd = ipc_testkit::Watchdog::new(&role, Duration::from_secs(600));
            match peers::play(&role, &params, ctl) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("bench-peers child {role}: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Ok(None) => match parent() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench-peers FAILED: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("bench-peers child setup: {e}");
            ExitCode::FAILURE
        }
    }
}
