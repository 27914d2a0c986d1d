//! Pipes and child processes: an end at a chosen descriptor number ([`ChildFds`]) and a
//! two-pipe [`Duplex`] for request/reply.
//!
//! As a child's standard stream, an end needs no helper: `cmd.stdin(reader)` (every end converts
//! into [`Stdio`]). Every end is close-on-exec, so a child receives exactly the ends it is given
//! and no other: a forgotten write end in a child would keep the reader from ever seeing
//! end-of-file.

use std::fmt;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::process::{Child, Command, Stdio};

use rustix::io::Errno;

use crate::{Error, PipeReader, PipeWriter, Result, pipe, sys};

/// Descriptors to place at chosen numbers in a child process (3 and up, usually), whatever their
/// numbers in the parent.
///
/// The mapping is done between `fork` and `exec` by a `pre_exec` hook that calls only
/// async-signal-safe functions (`fcntl`, `dup2`) and allocates nothing. It handles numbers that
/// collide (an end already sitting at another entry's target). The child finds each descriptor
/// without close-on-exec; the parent keeps its copies open until the `Command` is dropped, so
/// drop the `Command` (or the whole builder) after spawning if the parent needs end-of-file.
///
/// A target number must not be taken, in the child, by one of `spawn`'s own descriptors (std
/// reports a failed `exec` through a pipe it makes during `spawn`, at the lowest free numbers):
/// [`ChildFds::apply`] therefore holds every target that is free in the parent with a
/// close-on-exec placeholder until the `Command` is dropped.
///
/// ```
/// use std::io::Read;
/// use std::process::Command;
/// use ipc_pipe::ChildFds;
///
/// let (mut r, w) = ipc_pipe::pipe()?;
/// let mut cmd = Command::new("sh");
/// cmd.args(["-c", "echo via fd 5 >&5"]);
/// ChildFds::new().fd_at(5, w).apply(&mut cmd)?;
/// let mut child = cmd.spawn()?;
/// drop(cmd); // the parent's copy of the write end goes with the Command
/// let mut out = String::new();
/// r.read_to_string(&mut out)?;
/// assert_eq!(out, "via fd 5\n");
/// assert!(child.wait()?.success());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Default)]
pub struct ChildFds {
    map: Vec<(OwnedFd, RawFd)>,
}

impl fmt::Debug for ChildFds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pairs: Vec<(RawFd, RawFd)> = self
            .map
            .iter()
            .map(|(fd, t)| (fd.as_raw_fd(), *t))
            .collect();
        f.debug_struct("ChildFds").field("map", &pairs).finish()
    }
}

impl ChildFds {
    /// An empty mapping.
    pub fn new() -> ChildFds {
        ChildFds::default()
    }

    /// Places `fd` at number `target` in the child; a later entry for the same target replaces
    /// an earlier one (whose descriptor is closed). Targets 0..=2 override what the `Command`
    /// set as standard streams (prefer `cmd.stdin(..)` for those). A negative target, or one at
    /// or above the limit on open descriptors, is refused by [`Self::apply`].
    #[must_use]
    pub fn fd_at(mut self, target: RawFd, fd: impl Into<OwnedFd>) -> ChildFds {
        self.map.retain(|(_, t)| *t != target);
        self.map.push((fd.into(), target));
        self
    }

    /// Installs the mapping on `cmd` (one `pre_exec` hook). The descriptors now belong to `cmd`,
    /// and so do the placeholders that hold free target numbers in the parent.
    ///
    /// # Errors
    /// [`Error::InvalidDescriptor`] (naming the target) if a target is negative or at or above
    /// the process's limit on open descriptors (`RLIMIT_NOFILE`); the descriptors are closed and
    /// `cmd` is unchanged. [`Error::Io`] if the process is out of descriptors.
    pub fn apply(self, cmd: &mut Command) -> Result<&mut Command> {
        let mut placeholders = Vec::new();
        for &(ref fd, target) in &self.map {
            if target < 0 {
                return Err(Error::InvalidDescriptor {
                    fd: target,
                    reason: "descriptor numbers are not negative",
                });
            }
            if self.map.iter().any(|(s, _)| s.as_raw_fd() == target) {
                continue; // held by one of the sources themselves
            }
            // The lowest free number at or above `target`: `target` itself if it is free.
            match rustix::io::fcntl_dupfd_cloexec(fd.as_fd(), target) {
                Ok(held) if held.as_raw_fd() == target => placeholders.push(held),
                // Taken in the parent by another descriptor, which keeps it from `spawn`.
                Ok(_) => {}
                Err(Errno::INVAL) => {
                    return Err(Error::InvalidDescriptor {
                        fd: target,
                        reason: "at or above the limit on open descriptors (RLIMIT_NOFILE)",
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
        if !self.map.is_empty() {
            sys::install_fd_map(cmd, self.map, placeholders);
        }
        Ok(cmd)
    }
}

/// Two pipes, one per direction: a bidirectional byte stream between two processes, for
/// request/reply. `Read` reads from the peer, `Write` writes to it.
///
/// Mind the classic deadlock: if both sides write more than a pipe's capacity before reading,
/// both block forever. Keep requests and replies alternating, or read in another thread.
///
/// ```
/// use std::io::{BufRead, BufReader, Write};
/// use std::process::Command;
///
/// // The child's stdin and stdout become its side of the duplex.
/// let (child, mut duplex) = ipc_pipe::Duplex::spawn(Command::new("tr").arg("a-z").arg("A-Z"))?;
/// duplex.write_all(b"request\n")?;
/// let (reader, writer) = duplex.into_parts();
/// drop(writer); // end of requests: tr flushes and exits
/// let mut reply = String::new();
/// BufReader::new(reader).read_line(&mut reply)?;
/// assert_eq!(reply, "REQUEST\n");
/// assert!(child.wait_with_output()?.status.success());
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Duplex {
    reader: PipeReader,
    writer: PipeWriter,
}

/// Creates a connected pair of [`Duplex`] ends: what one writes, the other reads.
///
/// ```
/// use std::io::{Read, Write};
/// let (mut a, mut b) = ipc_pipe::duplex()?;
/// a.write_all(b"ping")?;
/// let mut buf = [0; 4];
/// b.read_exact(&mut buf)?;
/// b.write_all(b"pong")?;
/// a.read_exact(&mut buf)?;
/// assert_eq!(&buf, b"pong");
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Errors
/// [`Error::Io`] with `EMFILE`/`ENFILE` when out of descriptors.
pub fn duplex() -> Result<(Duplex, Duplex)> {
    let (ra, wb) = pipe()?;
    let (rb, wa) = pipe()?;
    Ok((
        Duplex {
            reader: ra,
            writer: wa,
        },
        Duplex {
            reader: rb,
            writer: wb,
        },
    ))
}

impl Duplex {
    /// A duplex from a read end and a write end (of two different pipes).
    pub fn from_parts(reader: PipeReader, writer: PipeWriter) -> Duplex {
        Duplex { reader, writer }
    }

    /// The two ends: dropping the writer tells the peer "no more requests" (end-of-file).
    pub fn into_parts(self) -> (PipeReader, PipeWriter) {
        (self.reader, self.writer)
    }

    /// The end this side reads from.
    pub fn reader(&self) -> &PipeReader {
        &self.reader
    }

    /// The end this side writes to.
    pub fn writer(&self) -> &PipeWriter {
        &self.writer
    }

    /// Sets the write end's [`SigpipePolicy`](crate::SigpipePolicy): what writing to a peer
    /// that has gone does to this process (see [`crate::sigpipe`]).
    ///
    /// ```
    /// use std::io::Write;
    /// use ipc_pipe::SigpipePolicy;
    /// let (mut ours, theirs) = ipc_pipe::duplex()?;
    /// ours.set_sigpipe_policy(SigpipePolicy::Suppress);
    /// drop(theirs);
    /// assert_eq!(ours.write(b"x").unwrap_err().kind(), std::io::ErrorKind::BrokenPipe);
    /// # Ok::<(), ipc_pipe::Error>(())
    /// ```
    pub fn set_sigpipe_policy(&mut self, policy: crate::SigpipePolicy) {
        self.writer.set_sigpipe_policy(policy);
    }

    /// Makes this duplex the child's standard input and output.
    pub fn attach_stdio(self, cmd: &mut Command) -> &mut Command {
        cmd.stdin(Stdio::from(self.reader))
            .stdout(Stdio::from(self.writer))
    }

    /// Places this duplex at descriptors `read_fd` and `write_fd` in the child, which claims
    /// them with [`Duplex::from_inherited`] (see [`ChildFds`]).
    ///
    /// ```
    /// use std::io::{Read, Write};
    /// use std::process::Command;
    /// let (mut ours, theirs) = ipc_pipe::duplex()?;
    /// let mut cmd = Command::new("sh");
    /// cmd.args(["-c", "read line <&3; echo \"got $line\" >&4"]);
    /// theirs.attach_at(&mut cmd, 3, 4)?;
    /// let mut child = cmd.spawn()?;
    /// drop(cmd);
    /// ours.write_all(b"hi\n")?;
    /// let mut reply = String::new();
    /// ours.read_to_string(&mut reply)?;
    /// assert_eq!(reply, "got hi\n");
    /// assert!(child.wait()?.success());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`ChildFds::apply`].
    pub fn attach_at(
        self,
        cmd: &mut Command,
        read_fd: RawFd,
        write_fd: RawFd,
    ) -> Result<&mut Command> {
        ChildFds::new()
            .fd_at(read_fd, self.reader)
            .fd_at(write_fd, self.writer)
            .apply(cmd)
    }

    /// In the child: claims the two descriptors placed by [`Duplex::attach_at`] (see
    /// [`PipeReader::from_inherited`] for the checks).
    ///
    /// ```no_run
    /// use ipc_pipe::Duplex;
    /// // In a child started with `theirs.attach_at(&mut cmd, 3, 4)`:
    /// // SAFETY: the parent placed the duplex's ends at 3 and 4, and nothing else in this
    /// // process took ownership of those descriptors.
    /// let d = unsafe { Duplex::from_inherited(3, 4) }?;
    /// # Ok::<(), ipc_pipe::Error>(())
    /// ```
    ///
    /// # Safety
    /// As for [`PipeReader::from_inherited`], for both numbers: nothing else in this process
    /// may own `read_fd` or `write_fd`, because the duplex closes them when dropped.
    ///
    /// ```compile_fail,E0133
    /// use std::os::fd::AsRawFd;
    /// let (r, w) = std::io::pipe()?;
    /// let stolen = ipc_pipe::Duplex::from_inherited(r.as_raw_fd(), w.as_raw_fd());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`crate::Error::NotAPipe`] or [`crate::Error::InvalidDescriptor`] when a check fails.
    /// If `read_fd` was claimed and `write_fd` then fails, the claimed read end is closed.
    #[allow(unsafe_code, unsafe_op_in_unsafe_fn)]
    pub unsafe fn from_inherited(read_fd: RawFd, write_fd: RawFd) -> Result<Duplex> {
        // SAFETY: this function's contract is the two claims' contract, passed on to our
        // caller; the two unsafe calls are those, so no unsafe block (those live in sys.rs).
        Ok(Duplex {
            reader: PipeReader::from_inherited(read_fd)?,
            writer: PipeWriter::from_inherited(write_fd)?,
        })
    }

    /// Spawns `cmd` with its standard input and output connected to a new duplex, and returns
    /// the child and the parent's side. The child's side is closed in the parent before this
    /// returns, so each side sees end-of-file when the other is done.
    ///
    /// # Errors
    /// What `pipe2` or `spawn` fail with ([`Error::Io`]).
    pub fn spawn(cmd: &mut Command) -> Result<(Child, Duplex)> {
        let (ours, theirs) = duplex()?;
        let child = theirs.attach_stdio(cmd).spawn();
        // `cmd` still holds the child's ends as Stdio; replace them so they close now.
        cmd.stdin(Stdio::inherit()).stdout(Stdio::inherit());
        Ok((child.map_err(Error::Io)?, ours))
    }
}

impl Read for &Duplex {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.reader).read(buf)
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        (&self.reader).read_vectored(bufs)
    }
}

impl Read for Duplex {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        (&*self).read_vectored(bufs)
    }
}

impl Write for &Duplex {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&self.writer).write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        (&self.writer).write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Write for Duplex {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        (&*self).write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
