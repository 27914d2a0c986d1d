//! The result format every bench prints, and the few helpers every bench needs.
//!
//! A bench binary (`benches/X.rs`, `harness = false`) measures its mechanism through the crate
//! and the same protocol on raw syscalls *in the same run*, then prints one line per figure:
//!
//! ```text
//! ipc-bench<TAB>group=pipe<TAB>case=64 B round trip<TAB>metric=p50<TAB>unit=us<TAB>better=lower<TAB>ours=13.1<TAB>baseline=12.9<TAB>baseline_name=raw libc
//! ```
//!
//! `cargo xtask bench` runs every bench, keeps the lines that start with `ipc-bench`, and prints
//! one table with the ratio `ours / baseline`. Anything else a bench prints is shown as it is.
//! [`Row::emit`] writes the line; nothing else should.

use std::time::Instant;

/// How long a bench should run, from `IPC_BENCH` (`smoke`, `quick`, anything else: full).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A few iterations: only proves the bench runs (`cargo xtask bench --smoke`, CI).
    Smoke,
    /// A short but meaningful run (`cargo xtask bench --quick`).
    Quick,
    /// The full run (`cargo xtask bench`).
    Full,
}

impl Mode {
    /// The mode chosen by the `IPC_BENCH` environment variable.
    pub fn from_env() -> Mode {
        match std::env::var("IPC_BENCH").as_deref() {
            Ok("smoke") => Mode::Smoke,
            Ok("quick") => Mode::Quick,
            _ => Mode::Full,
        }
    }

    /// Picks one of three values by mode.
    pub fn pick<T>(self, smoke: T, quick: T, full: T) -> T {
        match self {
            Mode::Smoke => smoke,
            Mode::Quick => quick,
            Mode::Full => full,
        }
    }
}

/// Whether a smaller or a larger figure is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// Latency, time.
    Lower,
    /// Throughput.
    Higher,
}

/// One figure: ours next to its baseline measured in the same run.
#[derive(Debug, Clone)]
pub struct Row<'a> {
    /// The mechanism group, usually the crate without `ipc-` (`pipe`, `fifo`, `mq`, `sem`, `shm`).
    pub group: &'a str,
    /// What was measured, in words (`64 B round trip`, `1 GiB in 64 KiB chunks`).
    pub case: &'a str,
    /// `p50`, `p99`, `GB/s`, `ns/op`, ...
    pub metric: &'a str,
    /// The unit of `ours` and `baseline` (`us`, `GB/s`, `ns`).
    pub unit: &'a str,
    /// Which direction is better.
    pub better: Better,
    /// Our figure.
    pub ours: f64,
    /// The baseline's figure.
    pub baseline: f64,
    /// What the baseline is (`raw libc`, `raw ring`, `plain pipe`).
    pub baseline_name: &'a str,
    /// The issue's target for `ours / baseline`: an upper bound when lower is better, a lower
    /// bound when higher is better. `None`: reported without a verdict.
    pub target: Option<f64>,
}

impl Row<'_> {
    /// Prints the row in the `ipc-bench` line format on standard output.
    pub fn emit(&self) {
        let better = match self.better {
            Better::Lower => "lower",
            Better::Higher => "higher",
        };
        let target = self
            .target
            .map(|t| format!("\ttarget={t}"))
            .unwrap_or_default();
        println!(
            "ipc-bench\tgroup={}\tcase={}\tmetric={}\tunit={}\tbetter={better}\tours={:.4}\tbaseline={:.4}\tbaseline_name={}{target}",
            self.group,
            self.case,
            self.metric,
            self.unit,
            self.ours,
            self.baseline,
            self.baseline_name
        );
    }
}

/// Latency summary of a set of samples in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    /// Median, µs.
    pub p50_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
}

impl Latency {
    /// Sorts `samples_ns` and takes its percentiles.
    ///
    /// # Panics
    /// If `samples_ns` is empty.
    pub fn of(samples_ns: &mut [u64]) -> Latency {
        assert!(!samples_ns.is_empty(), "no samples");
        samples_ns.sort_unstable();
        let at = |p: usize| samples_ns[(samples_ns.len() * p / 100).min(samples_ns.len() - 1)];
        Latency {
            p50_us: at(50) as f64 / 1e3,
            p99_us: at(99) as f64 / 1e3,
        }
    }
}

/// Emits the p50 and p99 rows of a latency comparison; the p50 target is `p50_target`
/// (the issues' usual one is 1.05), p99 is reported without a verdict.
pub fn emit_latency(
    group: &str,
    case: &str,
    ours: Latency,
    baseline: Latency,
    baseline_name: &str,
    p50_target: Option<f64>,
) {
    for (metric, o, b, target) in [
        ("p50", ours.p50_us, baseline.p50_us, p50_target),
        ("p99", ours.p99_us, baseline.p99_us, None),
    ] {
        Row {
            group,
            case,
            metric,
            unit: "us",
            better: Better::Lower,
            ours: o,
            baseline: b,
            baseline_name,
            target,
        }
        .emit();
    }
}

/// Emits a throughput comparison in GB/s (10^9 bytes per second) with a lower-bound target
/// for `ours / baseline` (the issues' usual one is 0.95).
pub fn emit_throughput(
    group: &str,
    case: &str,
    ours_gbps: f64,
    baseline_gbps: f64,
    baseline_name: &str,
    target: Option<f64>,
) {
    Row {
        group,
        case,
        metric: "GB/s",
        unit: "GB/s",
        better: Better::Higher,
        ours: ours_gbps,
        baseline: baseline_gbps,
        baseline_name,
        target,
    }
    .emit();
}

/// Bytes per second over an elapsed time, in GB/s.
pub fn gbps(bytes: u64, since: Instant) -> f64 {
    bytes as f64 / since.elapsed().as_secs_f64() / 1e9
}

/// Nanoseconds on the monotonic clock since an arbitrary start (for latency samples).
pub fn now_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Pins the calling process (and the children it forks afterwards) to the `cpu`-th CPU (modulo
/// their number) of those this process could run on when first asked; returns the CPU chosen, or `None` if pinning failed.
///
/// Benchmarks pin their two processes to two CPUs (`PIN=split` in `../shared/baseline`) where
/// the scheduler's placement would otherwise decide the figure: a one-way stream between two
/// processes moves by 2-4x depending on whether they share a core.
pub fn pin(cpu: usize) -> Option<usize> {
    // The CPUs allowed when first asked, before any pin narrowed them.
    static CPUS: std::sync::OnceLock<Vec<usize>> = std::sync::OnceLock::new();
    let cpus = CPUS.get_or_init(|| {
        let set = rustix::thread::sched_getaffinity(None).ok();
        (0..rustix::thread::CpuSet::MAX_CPU)
            .filter(|&c| set.as_ref().is_some_and(|s| s.is_set(c)))
            .collect()
    });
    let &target = cpus.get(cpu % cpus.len().max(1))?;
    let mut set = rustix::thread::CpuSet::new();
    set.set(target);
    rustix::thread::sched_setaffinity(None, &set)
        .ok()
        .map(|()| target)
}

/// Forks a child that runs `f` and exits with its result; returns the child's pid.
///
/// Only for bench binaries (`harness = false`), which are single-threaded: fork from a
/// multi-threaded process is unsound for anything but async-signal-safe code, so this panics if
/// the process has more than one thread. Pair with [`wait_ok`].
///
/// # Panics
/// If the process has more than one thread, or `fork` fails.
pub fn fork(f: impl FnOnce() -> i32) -> i32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse::<u32>().ok());
    assert_eq!(
        threads,
        Some(1),
        "bench::fork needs a single-threaded process"
    );
    crate::sys::fork_run(f).expect("fork")
}

/// Waits for a child made by [`fork`] and panics unless it exited with status 0.
///
/// # Panics
/// If the child failed or `waitpid` fails.
pub fn wait_ok(pid: i32) {
    let pid = rustix::process::Pid::from_raw(pid).expect("positive pid");
    let status = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty())
        .expect("waitpid")
        .map(|(_, s)| s)
        .expect("status");
    assert!(
        status.exited() && status.exit_status() == Some(0),
        "bench child failed: {status:?}"
    );
}
