//! `async_gateway`: one tokio process serves clients that arrive over a FIFO, a POSIX message
//! queue and a shared-memory ring, all at once, on one thread.
//!
//! The gateway creates its three doors — a well-known FIFO in a private directory, a request
//! queue, and a pair of rings (requests in, replies out) in named segments with named doorbells
//! — and waits on all of them in one `tokio::select!`. Every receive it races there is
//! cancellation-safe: when another door wins, the losing receives are dropped and lose nothing.
//! Each request is handled in a task of its own on the same thread, under a per-request timeout:
//! the clients' "slow" requests (the number 0) would take ten seconds and are answered `timeout`
//! after `PER_REQUEST` instead, while every other request keeps being served. On SIGTERM the gateway stops taking requests, reports what it
//! served and exits, its owners removing every object it made.
//!
//! The clients are separate programs using the blocking APIs: two on the FIFO (replies on their
//! own FIFOs), one on the queue (replies on its own queue), one on the rings. Each sends its
//! requests, checks every answer, and exits. The launcher waits for them, sends SIGTERM to the
//! gateway, and checks the gateway's own count against what the clients sent.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tokio::task::JoinSet;

use ipc_examples::{DemoError, Family, demo_name, ensure, role, run, say, spawn_role};
use ipc_fifo::{
    AsyncFifoWriter, AsyncRecordReader, Fifo, FifoReader, FifoWriter, KeepAlive, PrivateDir,
    RecordReader,
};
use ipc_mq::{Access, AsyncMessageQueue, MessageQueue};
use ipc_shm::{AsyncRingReader, AsyncRingWriter, Doorbell, Ring, Shm};

/// Requests each client sends, besides its one slow request.
const REQUESTS: u64 = 20;
/// The gateway's bound on handling one request.
const PER_REQUEST: Duration = Duration::from_millis(300);
/// What a slow request would take without the bound.
const SLOW: Duration = Duration::from_secs(10);
/// Every other wait of the demo.
const WAIT: Duration = Duration::from_secs(20);
/// Ring capacity (bytes).
const RING: u64 = 1 << 16;
/// A request or reply is a short line of text.
const MSG: usize = 256;

const DIR_ENV: &str = "GATEWAY_DIR";
const QUEUE_ENV: &str = "GATEWAY_QUEUE";
const RING_ENV: &str = "GATEWAY_RING";
const ID_ENV: &str = "GATEWAY_CLIENT";

fn main() -> ExitCode {
    let (who, body): (&str, fn() -> Result<(), DemoError>) = match role().as_deref() {
        Some("gateway") => ("gateway", gateway_main),
        Some("fifo-client") => ("fifo client", fifo_client),
        Some("mq-client") => ("mq client", mq_client),
        Some("ring-client") => ("ring client", ring_client),
        _ => {
            return run(
                "async_gateway",
                "one tokio process serves clients over a FIFO, a POSIX queue and a shared-memory \
                 ring at once, with per-request timeouts and a graceful shutdown on SIGTERM",
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

fn env_path(key: &str) -> Result<PathBuf, DemoError> {
    Ok(PathBuf::from(
        std::env::var_os(key).ok_or(format!("no {key}"))?,
    ))
}

fn env_str(key: &str) -> Result<String, DemoError> {
    Ok(std::env::var(key).map_err(|_| format!("no {key}"))?)
}

/// The answer to a request for `n` (0 is the slow request, answered by the timeout).
fn answer(n: u64) -> String {
    if n == 0 {
        "timeout".to_owned()
    } else {
        (n * n).to_string()
    }
}

/// The requests a client sends: `REQUESTS` numbers and, in the middle, one slow request.
fn numbers(id: u64) -> Vec<u64> {
    let mut v: Vec<u64> = (1..=REQUESTS).map(|k| id * 1000 + k).collect();
    v.insert(v.len() / 2, 0);
    v
}

/// Checks one reply line `{seq}:{answer}` against what request `seq` asked.
fn check_reply(who: &str, line: &[u8], asked: &[u64], seq: usize) -> Result<(), DemoError> {
    let line = std::str::from_utf8(line)?;
    let (s, got) = line.split_once(':').ok_or(format!("bad reply {line:?}"))?;
    ensure(
        s.parse::<usize>()? == seq,
        format!("{who}: reply {line:?} out of order (expected request {seq})"),
    )?;
    let want = answer(asked[seq]);
    ensure(
        got == want,
        format!(
            "{who}: request {seq} ({}) answered {got:?}, expected {want:?}",
            asked[seq]
        ),
    )
}

// ------------------------------------------------------------------------------------------
// The launcher.

fn launcher() -> Result<String, DemoError> {
    let dir = PrivateDir::new("ipcrs-demo-gw")?;
    let queue = demo_name("gw-req");
    let ring = demo_name("gw-ring");
    let mut family = Family::new();

    let mut gateway = spawn_role("gateway")?
        .env(DIR_ENV, dir.path())
        .env(QUEUE_ENV, &queue)
        .env(RING_ENV, &ring)
        .stdout(Stdio::piped())
        .spawn()?;
    let gateway_pid = gateway.id();
    // The gateway's narration goes through us: we watch it for READY and SERVED.
    let out = gateway.stdout.take().ok_or("gateway stdout")?;
    family.add("gateway", gateway);
    let (lines_tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            println!("{line}");
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    wait_for_line(&lines, "READY")?;
    say!(
        "launcher",
        "the gateway (pid {gateway_pid}) is ready; starting the clients"
    );

    let mut clients = Family::new();
    for id in 1..=2u64 {
        clients.add(
            format!("fifo client {id}"),
            spawn_role("fifo-client")?
                .env(DIR_ENV, dir.path())
                .env(ID_ENV, id.to_string())
                .spawn()?,
        );
    }
    clients.add(
        "mq client",
        spawn_role("mq-client")?
            .env(QUEUE_ENV, &queue)
            .env(ID_ENV, "3")
            .spawn()?,
    );
    clients.add(
        "ring client",
        spawn_role("ring-client")?
            .env(RING_ENV, &ring)
            .env(ID_ENV, "4")
            .spawn()?,
    );
    // A gateway that dies ends the wait at once (its clients would wait for replies in vain).
    clients.wait_all_watching(&mut family, ipc_examples::FAMILY_LIMIT)?;
    say!(
        "launcher",
        "every client checked its answers; SIGTERM to the gateway"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(gateway_pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    let served = wait_for_line(&lines, "SERVED")?;
    family.wait_all()?;

    let per_client = REQUESTS + 1;
    let want = format!(
        "SERVED fifo={} mq={per_client} ring={per_client} timeouts=4",
        2 * per_client
    );
    ensure(
        served.ends_with(&want),
        format!("the gateway reported {served:?}, expected {want:?}"),
    )?;
    Ok(format!(
        "{} requests over three doors, each answered correctly; 4 slow ones cut off at \
         {PER_REQUEST:?}; the gateway shut down on SIGTERM",
        4 * per_client
    ))
}

/// The first line from the gateway that contains `marker`, waiting at most `WAIT`.
fn wait_for_line(lines: &mpsc::Receiver<String>, marker: &str) -> Result<String, DemoError> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(marker) => return Ok(line),
            Ok(_) => {}
            Err(_) => {
                return Err(format!("the gateway did not say {marker} within {WAIT:?}").into());
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// The gateway.

fn gateway_main() -> Result<(), DemoError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(gateway())
}

/// What the gateway served, by door.
#[derive(Debug, Default)]
struct Served {
    fifo: u64,
    mq: u64,
    ring: u64,
    timeouts: u64,
}

/// Where a request came from, and so where its reply goes.
#[derive(Debug)]
enum Door {
    /// The FIFO door; the client's reply FIFO is named in the request.
    Fifo(String),
    /// The queue door; the client's reply queue is named in the request.
    Mq(String),
    /// The ring door (one client, replies on the reply ring).
    Ring,
}

/// Handles one request under the per-request bound: the answer, or `timeout`.
async fn handle(n: u64) -> String {
    let work = async move {
        if n == 0 {
            tokio::time::sleep(SLOW).await; // the slow request
        }
        (n * n).to_string()
    };
    match tokio::time::timeout(PER_REQUEST, work).await {
        Ok(answer) => answer,
        Err(_) => "timeout".to_owned(),
    }
}

/// Parses `{who}:{seq}:{n}`.
fn parse(request: &[u8]) -> Result<(String, u64, u64), DemoError> {
    let text = std::str::from_utf8(request)?;
    let mut parts = text.splitn(3, ':');
    let (Some(who), Some(seq), Some(n)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("bad request {text:?}").into());
    };
    Ok((who.to_owned(), seq.parse()?, n.parse()?))
}

async fn gateway() -> Result<(), DemoError> {
    let me = "gateway";
    let dir = env_path(DIR_ENV)?;
    // Door 1: a well-known FIFO, read by a keep-alive reader (no end-of-file between clients).
    let door = Fifo::create(dir.join("requests"))?;
    let reader = FifoReader::options()
        .keep_alive(KeepAlive::On)
        .open_async(door.path())
        .await?;
    let mut fifo_in = AsyncRecordReader::new(reader);
    // Door 2: a request queue.
    let queue = MessageQueue::create(&env_str(QUEUE_ENV)?, 10, MSG as u64)?;
    let mq_in = AsyncMessageQueue::new(queue).map_err(|e| e.error().to_string())?;
    // Door 3: two rings, requests in and replies out, with doorbells so that waiting for the
    // client is waiting on a descriptor the runtime polls.
    let ring = env_str(RING_ENV)?;
    let (req_name, rep_name) = (format!("{ring}-req"), format!("{ring}-rep"));
    let size = Ring::segment_size(RING as usize)?;
    let mut ring_in = AsyncRingReader::new(
        Ring::create(Shm::create(&req_name, size)?)?
            .with_doorbell(Doorbell::create(&req_name)?)
            .into_reader()?,
    )?;
    let mut ring_out = AsyncRingWriter::new(
        Ring::create(Shm::create(&rep_name, size)?)?
            .with_doorbell(Doorbell::create(&rep_name)?)
            .into_writer()?,
    )?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    say!(
        me,
        "READY: FIFO {}, queue, rings; one thread, one select!",
        door.path().display()
    );

    let mut served = Served::default();
    let mut fifo_out: HashMap<String, AsyncFifoWriter> = HashMap::new();
    let mut mq_out: HashMap<String, AsyncMessageQueue> = HashMap::new();
    let mut mq_buf = vec![0u8; MSG];
    let mut ring_buf = vec![0u8; MSG];
    let mut ring_open = true;
    // Requests being handled: each a task on this same thread, so a slow one holds up nobody.
    let mut pending: JoinSet<(Door, u64, String)> = JoinSet::new();
    loop {
        tokio::select! {
            _ = term.recv() => {
                say!(me, "SIGTERM: taking no more requests");
                break;
            }
            r = fifo_in.recv() => {
                let Some(record) = r? else { continue };
                let (who, seq, n) = parse(record)?;
                served.fifo += 1;
                pending.spawn(async move { (Door::Fifo(who), seq, handle(n).await) });
            }
            r = mq_in.receive(&mut mq_buf) => {
                let (len, _priority) = r?;
                let (who, seq, n) = parse(&mq_buf[..len])?;
                served.mq += 1;
                pending.spawn(async move { (Door::Mq(who), seq, handle(n).await) });
            }
            r = ring_in.recv(&mut ring_buf), if ring_open => match r {
                Ok(len) => {
                    let (_, seq, n) = parse(&ring_buf[..len])?;
                    served.ring += 1;
                    pending.spawn(async move { (Door::Ring, seq, handle(n).await) });
                }
                // The ring's one client closed its end after its last request: that door is
                // done, the others stay open.
                Err(ipc_shm::Error::PeerGone) => {
                    say!(me, "the ring client closed its end");
                    ring_open = false;
                }
                Err(e) => return Err(e.into()),
            },
            Some(done) = pending.join_next() => {
                let (door, seq, answer) = done?;
                served.timeouts += u64::from(answer == "timeout");
                let reply = format!("{seq}:{answer}");
                match door {
                    Door::Fifo(who) => {
                        if !fifo_out.contains_key(&who) {
                            let w = AsyncFifoWriter::open_timeout(dir.join(&who), WAIT).await?;
                            fifo_out.insert(who.clone(), w);
                        }
                        if let Some(w) = fifo_out.get_mut(&who) {
                            // A client that went away costs its own writer, not the gateway.
                            match tokio::time::timeout(WAIT, w.write_record(reply.as_bytes())).await {
                                Ok(Ok(())) => {}
                                Ok(Err(e)) => {
                                    say!(me, "client {who} is gone ({e}); dropping its reply FIFO");
                                    fifo_out.remove(&who);
                                }
                                Err(_) => {
                                    say!(me, "client {who} reads no replies; dropping it");
                                    fifo_out.remove(&who);
                                }
                            }
                        }
                    }
                    Door::Mq(who) => {
                        if !mq_out.contains_key(&who) {
                            let q = MessageQueue::open(&who, Access::Send)?;
                            let q = AsyncMessageQueue::new(q).map_err(|e| e.error().to_string())?;
                            mq_out.insert(who.clone(), q);
                        }
                        if let Some(q) = mq_out.get(&who) {
                            tokio::time::timeout(WAIT, q.send(reply.as_bytes(), 0)).await??;
                        }
                    }
                    Door::Ring => {
                        tokio::time::timeout(WAIT, ring_out.send(reply.as_bytes())).await??;
                    }
                }
            }
        }
    }
    say!(
        me,
        "SERVED fifo={} mq={} ring={} timeouts={}",
        served.fifo,
        served.mq,
        served.ring,
        served.timeouts
    );
    // Dropping the owners removes the FIFO, the queue, the segments and the doorbells.
    Ok(())
}

// ------------------------------------------------------------------------------------------
// The clients: separate programs, blocking APIs.

fn client_id() -> Result<u64, DemoError> {
    Ok(env_str(ID_ENV)?.parse()?)
}

fn fifo_client() -> Result<(), DemoError> {
    let id = client_id()?;
    let who = format!("fifo client {id}");
    let dir = env_path(DIR_ENV)?;
    let name = format!("reply-{}", std::process::id());
    // Our reply FIFO, opened for reading now, before the gateway's writer exists: a keep-alive
    // reader sees no end-of-file before the gateway first opens it (every wait is bounded).
    let reply = Fifo::create(dir.join(&name))?;
    let mut answers = RecordReader::new(
        FifoReader::options()
            .keep_alive(KeepAlive::On)
            .try_open(reply.path())?,
    );
    let door = FifoWriter::open_timeout(Path::new(&dir).join("requests"), WAIT)?;
    let asked = numbers(id);
    for (seq, n) in asked.iter().enumerate() {
        door.write_record(format!("{name}:{seq}:{n}").as_bytes())?;
        let got = answers
            .recv_timeout(WAIT)?
            .ok_or("the gateway closed our reply FIFO")?;
        check_reply(&who, got, &asked, seq)?;
    }
    say!(&who, "{} answers over FIFOs, all correct", asked.len());
    Ok(())
}

fn mq_client() -> Result<(), DemoError> {
    let id = client_id()?;
    let who = format!("mq client {id}");
    let name = demo_name(&format!("gw-rep{id}"));
    let replies = MessageQueue::options()
        .max_messages(10)
        .message_size(MSG as u64)
        .access(Access::Receive)
        .create(&name)?;
    let door = MessageQueue::open(&env_str(QUEUE_ENV)?, Access::Send)?;
    let asked = numbers(id);
    let mut buf = vec![0u8; MSG];
    for (seq, n) in asked.iter().enumerate() {
        door.send_timeout(format!("{name}:{seq}:{n}").as_bytes(), 1, WAIT)?;
        let (len, _) = replies.receive_timeout(&mut buf, WAIT)?;
        check_reply(&who, &buf[..len], &asked, seq)?;
    }
    say!(
        &who,
        "{} answers over POSIX queues, all correct",
        asked.len()
    );
    Ok(())
}

fn ring_client() -> Result<(), DemoError> {
    let id = client_id()?;
    let who = format!("ring client {id}");
    let ring = env_str(RING_ENV)?;
    let (req_name, rep_name) = (format!("{ring}-req"), format!("{ring}-rep"));
    let size = Ring::segment_size(RING as usize)?;
    let mut requests = Ring::open(Shm::open(&req_name, size)?)?
        .with_doorbell(Doorbell::open(&req_name)?)
        .into_writer()?;
    let mut replies = Ring::open(Shm::open(&rep_name, size)?)?
        .with_doorbell(Doorbell::open(&rep_name)?)
        .into_reader()?;
    let asked = numbers(id);
    let mut buf = vec![0u8; MSG];
    for (seq, n) in asked.iter().enumerate() {
        requests.send_timeout(format!("ring:{seq}:{n}").as_bytes(), WAIT)?;
        let len = replies.recv_timeout(&mut buf, WAIT)?;
        check_reply(&who, &buf[..len], &asked, seq)?;
    }
    say!(
        &who,
        "{} answers over shared-memory rings, all correct",
        asked.len()
    );
    Ok(())
}
