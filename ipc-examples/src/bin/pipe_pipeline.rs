//! Child processes chained by pipes, as a shell runs `producer | filter | counter`, and a duplex
//! request/reply with a child.
//!
//! Each stage is this same program re-run with a role (`IPC_DEMO_ROLE`): no `fork` in sight, so
//! no unsafe code. Data flows on the stages' standard input and output, like a shell pipeline;
//! the stages narrate on standard error so that their narration does not mix with their data.
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::process::ExitCode;

use ipc_examples::{DemoError, Family, ensure, role, run, say, spawn_role};
use ipc_pipe::{Duplex, FramedReader, FramedWriter, PipeReader, PipeWriter, pipe};

/// How many numbers the producer emits.
const N: u64 = 100_000;

fn main() -> ExitCode {
    match role().as_deref() {
        Some("producer") => stage(producer),
        Some("filter") => stage(filter),
        Some("counter") => stage(counter),
        Some("squarer") => stage(squarer),
        _ => run(
            "pipe_pipeline",
            "producer | filter | counter as three processes joined by pipes, then a duplex request/reply",
            parent,
        ),
    }
}

/// Narration of a stage, on stderr: `[role pid] message`, in one `write` so that lines from
/// several processes never mix.
fn note(role: &str, message: impl std::fmt::Display) {
    let line = format!("[{role:>10} {:>7}] {message}\n", std::process::id());
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// Runs a stage; a failure is a message on stderr and exit status 1.
fn stage(body: fn() -> Result<(), DemoError>) -> ExitCode {
    match body() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            note("stage", format!("failed: {e}"));
            ExitCode::FAILURE
        }
    }
}

fn producer() -> Result<(), DemoError> {
    note(
        "producer",
        format!("writing the numbers 1..={N}, one per line, to stdout"),
    );
    let mut out = BufWriter::new(std::io::stdout().lock());
    for n in 1..=N {
        writeln!(out, "{n}")?;
    }
    out.flush()?;
    note(
        "producer",
        "done: closing stdout gives the filter end-of-file",
    );
    Ok(())
}

fn filter() -> Result<(), DemoError> {
    note("filter", "passing on the multiples of 3 or 5");
    let mut out = BufWriter::new(std::io::stdout().lock());
    let (mut seen, mut kept) = (0u64, 0u64);
    for line in std::io::stdin().lock().lines() {
        let n: u64 = line?.trim().parse()?;
        seen += 1;
        if n.is_multiple_of(3) || n.is_multiple_of(5) {
            writeln!(out, "{n}")?;
            kept += 1;
        }
    }
    out.flush()?;
    note(
        "filter",
        format!("end-of-file after {seen} lines; kept {kept}"),
    );
    Ok(())
}

fn counter() -> Result<(), DemoError> {
    let (mut count, mut sum) = (0u64, 0u64);
    for line in std::io::stdin().lock().lines() {
        let n: u64 = line?.trim().parse()?;
        count += 1;
        sum += n;
    }
    note(
        "counter",
        format!("end-of-file: {count} numbers, sum {sum}; reporting to the parent"),
    );
    println!("{count} {sum}");
    Ok(())
}

fn squarer() -> Result<(), DemoError> {
    // Its stdin and stdout are the duplex's two pipes: take them as pipe ends (duplicates that
    // fstat confirmed are pipes; a terminal or a file would be a typed error here).
    let (input, output) = (PipeReader::dup_stdin()?, PipeWriter::dup_stdout()?);
    note(
        "squarer",
        "serving requests on stdin, replies on stdout (framed; both are pipes)",
    );
    let mut rx = FramedReader::new(&input).max_frame(64);
    let mut tx = FramedWriter::new(&output);
    let mut served = 0;
    while let Some(req) = rx.read_frame()? {
        let n = u64::from_le_bytes(req.as_slice().try_into()?);
        tx.write_frame(&(n * n).to_le_bytes())?;
        served += 1;
    }
    note(
        "squarer",
        format!("end-of-file after {served} requests; exiting"),
    );
    Ok(())
}

fn parent() -> Result<String, DemoError> {
    // --- Part 1: the pipeline -------------------------------------------------------------
    say!("parent", "part 1: producer | filter | counter");
    let (filter_in, producer_out) = pipe()?;
    let (counter_in, filter_out) = pipe()?;
    let (mut result, counter_out) = pipe()?;
    say!(
        "parent",
        "created 3 pipes; each end goes to exactly one child (all are close-on-exec)"
    );

    // The family stops and reaps every stage if anything below fails (a stage that dies makes
    // its neighbours see end-of-file or a broken pipe, and the parent reports it).
    let mut family = Family::new();
    let mut cmd = spawn_role("producer")?;
    cmd.stdout(producer_out);
    let producer = cmd.spawn()?;
    drop(cmd); // the Command holds the parent's copy of the end: close it now
    let mut cmd = spawn_role("filter")?;
    cmd.stdin(filter_in).stdout(filter_out);
    let filter = cmd.spawn()?;
    drop(cmd);
    let mut cmd = spawn_role("counter")?;
    cmd.stdin(counter_in).stdout(counter_out);
    let counter = cmd.spawn()?;
    drop(cmd);
    say!(
        "parent",
        "spawned producer {}, filter {}, counter {}; I hold only the read end of the result pipe",
        producer.id(),
        filter.id(),
        counter.id()
    );
    family.add("producer", producer);
    family.add("filter", filter);
    family.add("counter", counter);

    let mut report = String::new();
    result.read_to_string(&mut report)?;
    family.wait_all()?;
    let expected: Vec<u64> = (1..=N)
        .filter(|n| n.is_multiple_of(3) || n.is_multiple_of(5))
        .collect();
    let want = format!("{} {}", expected.len(), expected.iter().sum::<u64>());
    say!(
        "parent",
        "counter reported {:?}; expected {want:?}",
        report.trim()
    );
    ensure(
        report.trim() == want,
        format!("pipeline result {report:?}, expected {want:?}"),
    )?;

    // --- Part 2: duplex request/reply ------------------------------------------------------
    say!(
        "parent",
        "part 2: a duplex (two pipes) to a child: requests out, replies back"
    );
    let (child, duplex) = Duplex::spawn(&mut spawn_role("squarer")?)?;
    say!(
        "parent",
        "spawned squarer {}; its stdin and stdout are the other side",
        child.id()
    );
    let mut family = Family::new();
    family.add("squarer", child);
    let (reader, writer) = duplex.into_parts();
    let mut tx = FramedWriter::new(writer);
    let mut rx = FramedReader::new(BufReader::new(&reader)).max_frame(64);
    for n in [3u64, 12, 99, 65_535, 1 << 31] {
        tx.write_frame(&n.to_le_bytes())?;
        let reply = rx.read_frame()?.ok_or("squarer closed early")?;
        let sq = u64::from_le_bytes(reply.as_slice().try_into()?);
        say!("parent", "asked {n}^2, got {sq}");
        ensure(sq == n * n, format!("{n}^2 is not {sq}"))?;
    }
    say!(
        "parent",
        "closing my write end: the squarer sees end-of-file and exits"
    );
    drop(tx);
    ensure(
        rx.read_frame()?.is_none(),
        "the squarer sent more than asked",
    )?;
    family.wait_all()?;

    Ok(format!(
        "pipeline counted {want:?} across 3 processes; 5 duplex round trips answered correctly"
    ))
}
