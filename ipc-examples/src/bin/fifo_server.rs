//! `fifo_server`: one server, several unrelated client programs, a well-known FIFO.
//!
//! The server makes a private directory (0700: nobody else can squat a name in it) and a
//! well-known FIFO in it, and reads requests with a keep-alive reader, so the stream does not
//! end each time a client leaves. The clients are separate programs (this binary started again
//! with a role), sharing nothing with the server but the directory's path. Each client makes its
//! own reply FIFO, opens it for reading without waiting, sends one record — atomic, so the
//! requests of clients writing at the same time never mix — and waits for its answer. The server
//! answers each on the client's FIFO. Everything is removed at the end.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, ExitCode};
use std::time::Duration;

use ipc_examples::{DemoError, ensure, role, run, say, spawn_role};
use ipc_fifo::{Fifo, FifoReader, FifoWriter, KeepAlive, PrivateDir, RecordReader};

const CLIENTS: u64 = 4;
const DIR_ENV: &str = "FIFO_DEMO_DIR";
const ID_ENV: &str = "FIFO_DEMO_CLIENT";
const WAIT: Duration = Duration::from_secs(5);

/// The server's answer to a request: the sum of the squares of its numbers.
fn answer(numbers: &[u64]) -> u64 {
    numbers.iter().map(|n| n * n).sum()
}

fn main() -> ExitCode {
    if role().as_deref() == Some("client") {
        return match client() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                say("client", format!("FAIL: {e}"));
                ExitCode::FAILURE
            }
        };
    }
    run(
        "fifo_server",
        "a server on a well-known FIFO, unrelated client programs, replies on per-client FIFOs",
        server,
    )
}

/// Kills and reaps the clients still running if the server bails out early.
struct Clients(Vec<Child>);

impl Drop for Clients {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn server() -> Result<String, DemoError> {
    let dir = PrivateDir::new("ipcrs-demo-fifo")?;
    let well_known = Fifo::create(dir.join("server")?)?;
    say!(
        "server",
        "made private dir {} (0700) and FIFO `server` in it (0600)",
        dir.path().display()
    );
    // Keep-alive: the server also holds a write end, so no end-of-file between clients.
    let reader = FifoReader::options()
        .keep_alive(KeepAlive::On)
        .open(well_known.path())?;
    let mut requests = RecordReader::new(reader);
    say!("server", "reading requests with a keep-alive reader");

    let mut clients = Clients(Vec::new());
    for id in 1..=CLIENTS {
        let child = spawn_role("client")?
            .env(DIR_ENV, dir.path())
            .env(ID_ENV, id.to_string())
            .spawn()?;
        say!("server", "started client program {id} (pid {})", child.id());
        clients.0.push(child);
    }

    let mut answered = 0;
    while answered < CLIENTS {
        let record = requests
            .recv_timeout(WAIT)?
            .ok_or("a keep-alive reader never sees end-of-file")?;
        let text = std::str::from_utf8(record)?.to_owned();
        // "<reply FIFO name> <n> <n> ..."
        let mut words = text.split_whitespace();
        let reply_name = words.next().ok_or("empty request")?;
        let numbers = words.map(str::parse).collect::<Result<Vec<u64>, _>>()?;
        let sum = answer(&numbers);
        say!("server", "request {text:?} -> {sum}");
        let reply = FifoWriter::open_timeout(dir.join(reply_name)?, WAIT)?;
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

    // Every client waits at most WAIT for each step, so these waits are bounded.
    for (i, child) in clients.0.iter_mut().enumerate() {
        let status = child.wait()?;
        ensure(
            status.success(),
            format!("client {} failed: {status}", i + 1),
        )?;
    }
    clients.0.clear();

    drop(requests);
    drop(well_known);
    let path: PathBuf = dir.path().to_owned();
    drop(dir);
    ensure(!path.exists(), "the private directory was not removed")?;
    say!("server", "removed the FIFO and the private directory");
    Ok(format!(
        "{CLIENTS} unrelated clients got the right answer on their own FIFOs; nothing left behind"
    ))
}

fn client() -> Result<(), DemoError> {
    let dir = PathBuf::from(std::env::var_os(DIR_ENV).ok_or("no FIFO_DEMO_DIR")?);
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
    let server = FifoWriter::open_timeout(Path::new(&dir).join("server"), WAIT)?;
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
