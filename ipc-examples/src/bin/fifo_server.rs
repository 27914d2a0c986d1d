//! `fifo_server`: one server, several unrelated client programs, a well-known FIFO.
//!
//! Three kinds of process, each a separate program (this binary started again with a role), none
//! the child of another: a launcher, one server and a few clients. They share nothing but the
//! path of a private directory (0700: nobody else can squat a name in it), which the launcher
//! makes and hands to each in an environment variable.
//!
//! The server checks that the directory is private and ours, creates the well-known FIFO
//! `server` in it and reads requests with a keep-alive reader, so the stream does not end each
//! time a client leaves; then it tells the launcher it is ready (a record on the launcher's
//! `ready` FIFO). Only then does the launcher start the clients. Each client makes its own reply
//! FIFO, opens it for reading without waiting, sends one record — atomic, so the requests of
//! clients writing at the same time never mix — and waits for its answer. The server answers
//! each on the client's FIFO; each client checks its answer. Every process removes the FIFO it
//! made, and the launcher checks that nothing is left before it removes the directory.
//!
//! Every wait is bounded (`WAIT`), so a process that dies makes the others fail, not hang.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use ipc_examples::{DemoError, Family, ensure, role, run, say, spawn_role};
use ipc_fifo::{DirStatus, Fifo, FifoReader, FifoWriter, KeepAlive, PrivateDir, RecordReader};

const CLIENTS: u64 = 4;
const DIR_ENV: &str = "FIFO_DEMO_DIR";
const ID_ENV: &str = "FIFO_DEMO_CLIENT";
const WAIT: Duration = Duration::from_secs(5);
const READY: &[u8] = b"ready";

/// The server's answer to a request: the sum of the squares of its numbers.
fn answer(numbers: &[u64]) -> u64 {
    numbers.iter().map(|n| n * n).sum()
}

fn main() -> ExitCode {
    let (who, body): (&str, fn() -> Result<(), DemoError>) = match role().as_deref() {
        Some("server") => ("server", server),
        Some("client") => ("client", client),
        _ => {
            return run(
                "fifo_server",
                "a server on a well-known FIFO, unrelated client programs, replies on \
                 per-client FIFOs",
                launcher,
            );
        }
    };
    match body() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            say(who, format!("FAIL: {e}"));
            ExitCode::FAILURE
        }
    }
}

/// The directory the launcher handed to this process.
fn place_path() -> Result<PathBuf, DemoError> {
    Ok(PathBuf::from(
        std::env::var_os(DIR_ENV).ok_or("no FIFO_DEMO_DIR")?,
    ))
}

fn launcher() -> Result<String, DemoError> {
    let dir = PrivateDir::new("ipcrs-demo-fifo")?;
    say!(
        "launcher",
        "made private dir {} (0700, only we can create names in it)",
        dir.path().display()
    );
    // The server says "ready" here once its FIFO is open; our reader does not wait to open.
    let ready = Fifo::create(dir.join("ready")?)?;
    let mut ready_reader = RecordReader::new(FifoReader::try_open(ready.path())?);

    // Every process still running is killed and reaped if we bail out early.
    let mut family = Family::new();
    let server = spawn_role("server")?.env(DIR_ENV, dir.path()).spawn()?;
    say!(
        "launcher",
        "started the server program (pid {})",
        server.id()
    );
    family.add("the server", server);

    let said = ready_reader
        .recv_timeout(WAIT)
        .map_err(|e| format!("waiting for the server to be ready: {e}"))?
        .ok_or("the server left without saying it was ready")?;
    ensure(said == READY, format!("the server said {said:?}"))?;
    say!(
        "launcher",
        "the server is ready: starting {CLIENTS} client programs"
    );
    for id in 1..=CLIENTS {
        let client = spawn_role("client")?
            .env(DIR_ENV, dir.path())
            .env(ID_ENV, id.to_string())
            .spawn()?;
        say!(
            "launcher",
            "started client program {id} (pid {})",
            client.id()
        );
        family.add(format!("client {id}"), client);
    }

    // Each of them waits at most WAIT for each step, so these waits are bounded.
    family.wait_all()?;
    say!(
        "launcher",
        "the server and every client exited successfully"
    );

    drop(ready_reader);
    drop(ready);
    let left: Vec<_> = std::fs::read_dir(dir.path())?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    ensure(
        left.is_empty(),
        format!("FIFOs left in the private directory: {left:?}"),
    )?;
    let path = dir.path().to_owned();
    drop(dir);
    ensure(!path.exists(), "the private directory was not removed")?;
    say!(
        "launcher",
        "every process removed its own FIFO; removed the private directory"
    );
    Ok(format!(
        "{CLIENTS} unrelated clients got the right answer on their own FIFOs; nothing left behind"
    ))
}

fn server() -> Result<(), DemoError> {
    // Not ours to remove (the launcher made it), but checked before use: a directory, ours,
    // with no access for anyone else. A squatted or shared place is refused.
    let place = PrivateDir::open_or_create(place_path()?)?;
    ensure(
        place.status() == DirStatus::Existed,
        "the launcher's directory was missing",
    )?;
    let well_known = Fifo::create(place.join("server")?)?;
    say!(
        "server",
        "checked {} is private and ours; made FIFO `server` in it (0600)",
        place.path().display()
    );
    // Keep-alive: the server also holds a write end, so no end-of-file between clients.
    let reader = FifoReader::options()
        .keep_alive(KeepAlive::On)
        .open(well_known.path())?;
    let mut requests = RecordReader::new(reader);
    FifoWriter::open_timeout(place.join("ready")?, WAIT)?.write_record(READY)?;
    say!(
        "server",
        "reading requests with a keep-alive reader; told the launcher"
    );

    let mut answered = 0;
    while answered < CLIENTS {
        let record = requests
            .recv_timeout(WAIT)?
            .ok_or("a keep-alive reader never sees end-of-file")?;
        let text = std::str::from_utf8(record)?.to_owned();
        // "<reply FIFO name> <n> <n> ..."; `join` refuses a name that is not one component.
        let mut words = text.split_whitespace();
        let reply_name = words.next().ok_or("empty request")?;
        let numbers = words.map(str::parse).collect::<Result<Vec<u64>, _>>()?;
        let sum = answer(&numbers);
        say!("server", "request {text:?} -> {sum}");
        let reply = FifoWriter::open_timeout(place.join(reply_name)?, WAIT)?;
        reply.write_record(sum.to_string().as_bytes())?;
        answered += 1;
    }
    say!(
        "server",
        "answered {answered} clients; the last one left, yet no end-of-file: stopping by count"
    );
    ensure(
        matches!(requests.try_recv(), Err(ipc_fifo::Error::WouldBlock)),
        "expected no further request",
    )?;
    drop(requests);
    drop(well_known);
    say!("server", "removed FIFO `server`");
    Ok(())
}

fn client() -> Result<(), DemoError> {
    let dir = place_path()?;
    let id: u64 = std::env::var(ID_ENV)?.parse()?;
    let name = format!("client-{}", std::process::id());
    // The reply FIFO is ours: we remove it when we are done.
    let reply = Fifo::create(dir.join(&name))?;
    // Open it for reading now, without waiting for the server: our reads wait for its answer.
    let mut answers = RecordReader::new(FifoReader::try_open(reply.path())?);

    let numbers: Vec<u64> = (0..3).map(|k| id * 10 + k).collect();
    let request = format!(
        "{name} {}",
        numbers
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let server = FifoWriter::open_timeout(dir.join("server"), WAIT)?;
    server.write_record(request.as_bytes())?;
    drop(server);
    say!("client", "client {id} sent {request:?}");

    let got = answers.recv_timeout(WAIT)?.ok_or("the server hung up")?;
    let got: u64 = std::str::from_utf8(got)?.parse()?;
    let expect = answer(&numbers);
    ensure(
        got == expect,
        format!("client {id}: got {got}, expected {expect}"),
    )?;
    say!("client", "client {id} got {got}: correct");
    Ok(())
}
