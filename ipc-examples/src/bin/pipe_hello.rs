//! The textbook pipe: the parent creates a pipe, forks, writes "Hello, child process!", and the
//! child reads it and prints it.
//!
//! This demo calls `fork` itself, because that is the example every course shows. That is the
//! one reason for `unsafe` here (and nowhere else in ipc-examples): after `fork` the child is a
//! copy of a process whose other threads (none here) might have held locks, so until it exits
//! it may only make async-signal-safe calls (signal-safety(7)). The child below does exactly
//! this: `read`, `write` and `close` on descriptors, formatting into a stack buffer (no
//! allocation, no lock), and `_exit`. It never returns into `main`, never touches `std::io`'s
//! locked stdout, never runs destructors of the parent's objects.
//!
//! Outside a demo, prefer spawning a program (`std::process::Command`, with a pipe end as its
//! stdin) or re-running the current binary with a role: see `pipe_pipeline`.
#![allow(unsafe_code)]

use std::io::Write;
use std::os::fd::AsRawFd;
use std::process::ExitCode;

use ipc_examples::{ensure, run, say};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork, getpid};

const GREETING: &[u8] = b"Hello, child process!";

fn main() -> ExitCode {
    run(
        "pipe_hello",
        "a parent forks, writes a greeting into a pipe; the child reads it (the textbook example)",
        || {
            say!(
                "parent",
                "step 1: pipe() creates a one-way channel: a read end and a write end"
            );
            let (reader, writer) = ipc_pipe::pipe()?;
            say!(
                "parent",
                "        read end is fd {}, write end is fd {} (both close-on-exec)",
                reader.as_raw_fd(),
                writer.as_raw_fd()
            );
            say!(
                "parent",
                "step 2: fork(): the child starts with copies of both ends"
            );
            std::io::stdout().flush()?;
            // SAFETY: the process has a single thread here (nothing was spawned), and the child
            // branch only makes async-signal-safe calls (read, write, close, _exit) before it
            // ends: see `child` and this file's header.
            match unsafe { fork() }? {
                ForkResult::Child => {
                    drop(writer); // close(2): async-signal-safe
                    child(&reader)
                }
                ForkResult::Parent { child } => {
                    say!(
                        "parent",
                        "step 3: I close my read end: only the child reads"
                    );
                    drop(reader);
                    say!(
                        "parent",
                        "step 4: write {:?} ({} bytes, atomic: <= PIPE_BUF)",
                        String::from_utf8_lossy(GREETING),
                        GREETING.len()
                    );
                    writer.write_atomic(GREETING)?;
                    say!(
                        "parent",
                        "step 5: close the write end: the child's read will see end-of-file"
                    );
                    drop(writer);
                    say!("parent", "step 6: waitpid({child}) for the child's verdict");
                    let status = waitpid(child, None)?;
                    ensure(
                        status == WaitStatus::Exited(child, 0),
                        format!("the child did not receive the greeting intact: {status:?}"),
                    )?;
                    say!(
                        "parent",
                        "the child exited with status 0: it read exactly the greeting"
                    );
                    Ok("the greeting crossed the pipe from parent to child".to_owned())
                }
            }
        },
    )
}

/// The child's whole life after `fork`: async-signal-safe calls only, then `_exit`.
fn child(reader: &ipc_pipe::PipeReader) -> ! {
    note(b"child: I closed my copy of the write end, so end-of-file can reach me");
    note(b"child: read() until end-of-file...");
    let mut buf = [0u8; 64];
    let mut len = 0;
    let code = loop {
        // read(2) through the crate: one system call, no allocation.
        match std::io::Read::read(&mut &*reader, &mut buf[len..]) {
            Ok(0) => break i32::from(&buf[..len] != GREETING),
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break 2,
        }
        if len == buf.len() {
            break 3;
        }
    };
    let mut line = [0u8; 128];
    let left = {
        let mut w = &mut line[..];
        let _ = w.write_all(b"child: received \"");
        let _ = w.write_all(&buf[..len]);
        let _ = w.write_all(if code == 0 {
            b"\" -- as sent"
        } else {
            b"\" -- WRONG"
        });
        w.len()
    };
    let used = line.len() - left;
    note(&line[..used]);
    // SAFETY: `_exit` is async-signal-safe and ends the process without running the parent's
    // atexit handlers or flushing stdio buffers copied from the parent.
    unsafe { nix::libc::_exit(code) }
}

/// One narration line, `[     child     pid] message`, formatted on the stack and written with a
/// single write(2) on fd 1: async-signal-safe, unlike `println!` (which locks stdout).
fn note(message: &[u8]) {
    let mut line = [0u8; 256];
    let left = {
        let mut w = &mut line[..];
        let _ = write!(w, "[{:>10} {:>7}] ", "child", getpid().as_raw());
        let _ = w.write_all(message);
        let _ = w.write_all(b"\n");
        w.len()
    };
    let used = line.len() - left;
    let _ = write_stdout(&line[..used]);
}

/// write(2) on standard output, retried on EINTR and short writes.
fn write_stdout(mut bytes: &[u8]) -> std::io::Result<()> {
    let fd = nix::libc::STDOUT_FILENO;
    while !bytes.is_empty() {
        // SAFETY: write(2) is async-signal-safe; `bytes` is valid for its length; fd 1 is open.
        let n = unsafe { nix::libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        bytes = &bytes[n as usize..];
    }
    Ok(())
}
