//! `fifo_server`: one server, unrelated client programs, a well-known FIFO — started in any
//! order, and a server restarted after a crash.
//!
//! Every process is a separate program (this binary started again with a role), none the child
//! of another but the launcher's. They share only the path of a well-known place, a private
//! directory (0700: nobody else can squat a name in it), which the launcher hands to each in
//! an environment variable (a real deployment would use `PrivateDir::base().join("myapp")`).
//!
//! 1. Two clients start first, before any server and before the place exists. The first to
//!    come makes the place (`PrivateDir::open_or_create`, which never removes it: whoever
//!    made it, the others keep using it). Each makes its own reply FIFO, and waits — within a
//!    bound — for the server's FIFO to appear and for a reader.
//! 2. The server starts: it takes the place, creates its well-known FIFO `server` with
//!    `Fifo::options().replace_stale()` and reads requests with a keep-alive reader (no
//!    end-of-file between clients). It answers each client on that client's FIFO.
//! 3. A rival server tries the same call while the first one lives: `OwnerAlive`, refused.
//! 4. The server crashes (the launcher kills it with SIGKILL): its FIFO is left behind,
//!    ownerless (the kernel dropped the owner's lock with the process).
//! 5. Two more clients start and wait for a reader on the stale FIFO.
//! 6. The server is restarted: the same call takes over the stale FIFO, and it serves them.
//!
//! Every wait is bounded (`WAIT`), so a process that dies makes the others fail, not hang; a
//! server with nothing to do for `WAIT` stops.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::{Child, ExitCode};
use std::time::Duration;

use ipc_examples::{DemoError, Family, ensure, role, run, say, spawn_role};
use ipc_fifo::{Error, Fifo, FifoReader, FifoWriter, KeepAlive, Opened, PrivateDir, RecordReader};

const PLACE_ENV: &str = "FIFO_DEMO_PLACE";
const ID_ENV: &str = "FIFO_DEMO_CLIENT";
/// How many requests a server run answers before it stops (none: until idle for `WAIT`).
const SERVE_ENV: &str = "FIFO_DEMO_SERVE";
const WAIT: Duration = Duration::from_secs(10);

/// The server's answer to a request: the sum of the squares of its numbers.
fn answer(numbers: &[u64]) -> u64 {
    numbers.iter().map(|n| n * n).sum()
}

fn main() -> ExitCode {
    let (who, body): (&str, fn() -> Result<(), DemoError>) = match role().as_deref() {
        Some("server") => ("server", server),
        Some("rival") => ("rival", rival),
        Some("client") => ("client", client),
        _ => {
            return run(
                "fifo_server",
                "a server on a well-known FIFO and unrelated clients, started in any order; \
                 a crashed server restarted takes over its stale FIFO",
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

/// The well-known place the launcher handed to this process.
fn place_path() -> Result<PathBuf, DemoError> {
    Ok(PathBuf::from(
        std::env::var_os(PLACE_ENV).ok_or("no FIFO_DEMO_PLACE")?,
    ))
}

/// A server run that is killed and reaped if the launcher bails out early.
struct Run(Child);

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_clients(
    family: &mut Family,
    place: &std::path::Path,
    ids: std::ops::RangeInclusive<u64>,
) -> Result<(), DemoError> {
    for id in ids {
        let c = spawn_role("client")?
            .env(PLACE_ENV, place)
            .env(ID_ENV, id.to_string())
            .spawn()?;
        say!("launcher", "started client program {id} (pid {})", c.id());
        family.add(format!("client {id}"), c);
    }
    Ok(())
}

fn launcher() -> Result<String, DemoError> {
    // Ours alone, removed (with everything in it) when we are done.
    let base = PrivateDir::new("ipcrs-demo-fifo")?;
    let place = base.join("app")?;
    say!(
        "launcher",
        "the well-known place will be {} (not made yet)",
        place.display()
    );

    // 1. Clients first: they wait for the server.
    let mut early = Family::new();
    start_clients(&mut early, &place, 1..=2)?;

    // 2. The server, second.
    let first = spawn_role("server")?.env(PLACE_ENV, &place).spawn()?;
    say!(
        "launcher",
        "started the server program (pid {})",
        first.id()
    );
    let mut first = Run(first);
    early.wait_all()?;
    say!("launcher", "clients 1 and 2 were served");

    // 3. A rival while the server lives.
    let mut rival = Family::new();
    rival.add(
        "the rival",
        spawn_role("rival")?.env(PLACE_ENV, &place).spawn()?,
    );
    rival.wait_all()?;

    // 4. The crash.
    first.0.kill()?;
    first.0.wait()?;
    say!(
        "launcher",
        "killed the server with SIGKILL: its FIFO is left behind, ownerless"
    );
    ensure(
        place.join("server").exists(),
        "the killed server's FIFO is gone",
    )?;

    // 5. Clients while no server runs, 6. then the restart.
    let mut late = Family::new();
    start_clients(&mut late, &place, 3..=4)?;
    let second = spawn_role("server")?
        .env(PLACE_ENV, &place)
        .env(SERVE_ENV, "2")
        .spawn()?;
    say!("launcher", "restarted the server (pid {})", second.id());
    late.add("the restarted server", second);
    late.wait_all()?;
    say!(
        "launcher",
        "the restarted server and clients 3 and 4 exited successfully"
    );

    let left: Vec<_> = std::fs::read_dir(&place)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    ensure(
        left.is_empty(),
        format!("FIFOs left in the well-known place: {left:?}"),
    )?;
    say!(
        "launcher",
        "the shared place is still there (nobody removes it), empty: every process removed its \
         own FIFO, and the stale one was taken over"
    );
    let path = base.path().to_owned();
    drop(base);
    ensure(!path.exists(), "the private directory was not removed")?;
    Ok(
        "4 clients served by a server started after them and by its restart after a crash; \
         a rival was refused while the owner lived; nothing left behind"
            .to_owned(),
    )
}

fn server() -> Result<(), DemoError> {
    // Shared: made by whoever came first, checked (ours, 0700), never removed by us.
    let (place, how) = PrivateDir::open_or_create(place_path()?)?;
    say!(
        "server",
        "{} the place {} (private and ours)",
        if how == Opened::Created {
            "made"
        } else {
            "found"
        },
        place.path().display()
    );
    let path = place.join("server")?;
    let stale = path.exists();
    // The one call for a server that may be restarted after a crash: a FIFO whose owner is
    // dead is taken over; one whose owner lives is refused (OwnerAlive).
    let well_known = Fifo::options().replace_stale().create(&path)?;
    say!(
        "server",
        "{} FIFO `server` (0600)",
        if stale {
            "took over the stale"
        } else {
            "made the"
        }
    );
    // Keep-alive: the server also holds a write end, so no end-of-file between clients.
    let reader = FifoReader::options()
        .keep_alive(KeepAlive::On)
        .open(well_known.path())?;
    let mut requests = RecordReader::new(reader);
    say!("server", "reading requests with a keep-alive reader");

    let serve: Option<u64> = std::env::var(SERVE_ENV)
        .ok()
        .map(|s| s.parse())
        .transpose()?;
    let mut answered = 0;
    while serve.is_none_or(|n| answered < n) {
        let record = match requests.recv_timeout(WAIT) {
            Ok(r) => r.ok_or("a keep-alive reader never sees end-of-file")?,
            // Nobody came for a while (our launcher is gone?): stop.
            Err(Error::TimedOut) if serve.is_none() => break,
            Err(e) => return Err(e.into()),
        };
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
    drop(requests);
    drop(well_known);
    say!("server", "removed FIFO `server`");
    Ok(())
}

fn rival() -> Result<(), DemoError> {
    let (place, _) = PrivateDir::open_or_create(place_path()?)?;
    match Fifo::options()
        .replace_stale()
        .create(place.join("server")?)
    {
        Err(e @ Error::OwnerAlive { .. }) => {
            say!("rival", "refused, as it should be: {e}");
            Ok(())
        }
        Ok(_) => Err("a second server took over a live server's FIFO".into()),
        Err(e) => Err(e.into()),
    }
}

fn client() -> Result<(), DemoError> {
    let id: u64 = std::env::var(ID_ENV)?.parse()?;
    let (dir, how) = PrivateDir::open_or_create(place_path()?)?;
    if how == Opened::Created {
        say!(
            "client",
            "client {id} came first: made the place (it will not remove it)"
        );
    }
    let name = format!("client-{}", std::process::id());
    // The reply FIFO is ours: we remove it when we are done.
    let reply = Fifo::create(dir.join(&name)?)?;
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
    // Waits (bounded) for the server's FIFO to appear, and for the server to read it.
    let server = FifoWriter::open_timeout(dir.join("server")?, WAIT)?;
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
