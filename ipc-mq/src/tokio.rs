//! Async send and receive (the `tokio` feature): [`AsyncMessageQueue`] on tokio's reactor,
//! [`AsyncSysvQueue`] on the System V wait helper (any executor).

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::task::{Context, Poll};

use ::tokio::io::Interest;
use ::tokio::io::unix::AsyncFd;

use crate::error::{Error, Result};
use crate::posix::{MessageQueue, PAST, Priority};
use crate::sys;
use crate::sysv::{Select, SysvMessage, SysvQueue};
use crate::wait::{Need, Waiter};

/// A POSIX queue driven by tokio's reactor: `send` and `receive` are `async`, and wait without
/// blocking a thread.
///
/// *Available with the crate feature `tokio`.*
///
/// Made from a [`MessageQueue`] by [`new`](Self::new), which keeps the handle (its ownership
/// too: an owner's queue is removed when this is dropped, as the handle's `on_drop` says) and
/// registers a non-blocking descriptor of the same queue with the runtime:
///
/// - a handle opened non-blocking ([`MessageQueueOptions::nonblocking`](crate::MessageQueueOptions::nonblocking)`(true)` or
///   [`set_nonblocking`](MessageQueue::set_nonblocking)`(true)`) lends its own open file
///   description (a duplicate descriptor);
/// - a blocking handle keeps its mode: a second description of the queue is opened non-blocking
///   (through `/proc/self/fd`, else by the queue's name, checked to be the same queue), so the
///   handle's blocking calls, [`get_ref`](Self::get_ref)`().send(..)` say, still wait, and a
///   forked child that shares the handle's description is not affected.
///
/// Either way this costs one more descriptor and one registration with the reactor; there is no
/// thread and nothing polls: the task sleeps until the kernel reports the queue readable (a
/// message waits) or writable (there is room).
///
/// # Cancellation
/// Dropping a pending `send` or `receive` future loses nothing and leaves nothing half done. A
/// message is sent whole or not at all (`mq_send` is one system call), and only in the `poll`
/// that then returns `Ready`; a message leaves the queue only in the `poll` that returns it. So
/// a future dropped before it completed (by `select!`, `timeout`, an aborted task) has sent
/// nothing, or received nothing: the message is still in the queue for the next receiver, in
/// its place. Use `tokio::time::timeout` for timed calls.
///
/// Several tasks may wait on one queue at once (share it in an `Arc`); the
/// [`poll_send`](Self::poll_send) and [`poll_receive`](Self::poll_receive) forms serve one task
/// per direction.
///
/// ```
/// use ipc_mq::{AsyncMessageQueue, MessageQueue};
///
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let name = format!("/myapp-async-{}", std::process::id());
///     let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
///     runtime.block_on(async {
///         let queue = AsyncMessageQueue::new(MessageQueue::create(&name, 8, 256)?)?;
///         queue.send(b"job", 5).await?;
///         // tokio::time::timeout(limit, queue.receive_vec()) drops the receive when the limit
///         // passes: a dropped receive has taken nothing.
///         let (job, priority) = queue.receive_vec().await?;
///         assert_eq!((job.as_slice(), priority), (&b"job"[..], 5));
///         Ok::<(), Box<dyn std::error::Error>>(())
///     })
/// }
/// ```
///
/// # After `fork`
/// tokio's reactor belongs to the parent: in a child forked from a process that runs a
/// runtime, neither this type nor its futures may be used or dropped before `exec` (dropping
/// deregisters from the reactor, which takes its locks); `std::mem::forget` them, or `exec`.
/// [`into_inner`](Self::into_inner) gives the [`MessageQueue`] back for use there.
pub struct AsyncMessageQueue {
    // Declared first, so dropped first: the registration ends before the queue's handle (and
    // its ownership) goes.
    io: AsyncFd<OwnedFd>,
    queue: MessageQueue,
    readable: bool,
    writable: bool,
}

impl fmt::Debug for AsyncMessageQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncMessageQueue")
            .field("queue", &self.queue)
            .field("fd", &self.io.get_ref().as_raw_fd())
            .finish()
    }
}

/// [`AsyncMessageQueue::new`] failed: the error, and the queue handed back untouched (an owner
/// still owns its queue; nothing was removed).
///
/// *Available with the crate feature `tokio`.*
pub struct RegisterError {
    error: Error,
    queue: MessageQueue,
}

impl RegisterError {
    /// Why it failed.
    pub fn error(&self) -> &Error {
        &self.error
    }

    /// The queue that was given, unchanged.
    pub fn into_queue(self) -> MessageQueue {
        self.queue
    }

    /// The error and the queue.
    pub fn into_parts(self) -> (Error, MessageQueue) {
        (self.error, self.queue)
    }
}

impl fmt::Debug for RegisterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegisterError")
            .field("error", &self.error)
            .field("queue", &self.queue)
            .finish()
    }
}

impl fmt::Display for RegisterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl std::error::Error for RegisterError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// The error alone; the queue is dropped (an owner removes its queue, as its `on_drop` says).
impl From<RegisterError> for Error {
    fn from(e: RegisterError) -> Error {
        e.error
    }
}

/// The error alone, as an `io::Error`; the queue is dropped.
impl From<RegisterError> for io::Error {
    fn from(e: RegisterError) -> io::Error {
        e.error.into()
    }
}

fn ebadf() -> io::Error {
    io::Error::from_raw_os_error(libc::EBADF)
}

/// One try that never waits, whatever the description's mode: `mq_timedsend`/
/// `mq_timedreceive` with a deadline in the past fail at once with `EAGAIN` (non-blocking
/// description) or `ETIMEDOUT` (blocking: say a non-blocking handle lent its description and was
/// later set back to blocking), both `WouldBlock` for the reactor. Interrupted calls are retried.
fn attempt<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::ETIMEDOUT)) => {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            r => return r,
        }
    }
}

fn try_send(fd: &OwnedFd, msg: &[u8], priority: Priority) -> io::Result<()> {
    attempt(|| sys::mq_timedsend(fd.as_fd(), msg, priority, &PAST))
}

fn try_receive(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<(usize, Priority)> {
    attempt(|| sys::mq_timedreceive(fd.as_fd(), buf, &PAST))
}

impl AsyncMessageQueue {
    /// Registers `queue` with the current tokio runtime (see the type's docs for which
    /// descriptor).
    ///
    /// # Errors
    /// Outside a tokio runtime: [`Error::Io`] saying so. [`Error::Io`] if no non-blocking
    /// descriptor of the queue can be had (out of descriptors; a blocking handle whose queue
    /// `/proc/self/fd` and its name cannot reopen: open it non-blocking instead) or the reactor
    /// refuses it. The queue comes back in the error, unchanged.
    ///
    /// # Panics
    /// In a tokio runtime built without IO (`enable_io`), as tokio's own I/O types do.
    pub fn new(queue: MessageQueue) -> std::result::Result<AsyncMessageQueue, RegisterError> {
        if ::tokio::runtime::Handle::try_current().is_err() {
            let error = Error::Io(io::Error::other(format!(
                "{}: AsyncMessageQueue::new must be called inside a tokio runtime (with IO \
                 enabled)",
                queue.label()
            )));
            return Err(RegisterError { error, queue });
        }
        let (fd, readable, writable) = match queue.nonblocking_descriptor() {
            Ok(d) => d,
            Err(error) => return Err(RegisterError { error, queue }),
        };
        match sys::register_async(fd, readable, writable) {
            Ok(io) => Ok(AsyncMessageQueue {
                io,
                queue,
                readable,
                writable,
            }),
            Err(e) => {
                let error = Error::about(e, &queue.label());
                Err(RegisterError { error, queue })
            }
        }
    }

    /// The queue's handle: its attributes, name, ownership, and the `try_` forms. Its blocking
    /// forms block the thread: not for use in a task.
    pub fn get_ref(&self) -> &MessageQueue {
        &self.queue
    }

    /// Ends the registration and gives the handle back, in the mode it had. (Closing the
    /// registered descriptor ends this process's `mq_notify` registration on the queue, as
    /// closing any descriptor of a queue does on Linux.)
    pub fn into_inner(self) -> MessageQueue {
        let AsyncMessageQueue { io, queue, .. } = self;
        drop(io);
        queue
    }

    fn check_receive(&self, len: usize) -> Result<()> {
        if !self.readable {
            return Err(self.queue.io_error(ebadf(), 0));
        }
        let needed = self.queue.message_size();
        if len < needed {
            return Err(Error::BufferTooSmall {
                len,
                needed: Some(needed),
            });
        }
        Ok(())
    }

    fn check_send(&self, msg: &[u8], priority: Priority) -> Result<()> {
        self.queue.check_send(msg, priority)?;
        if !self.writable {
            return Err(self.queue.io_error(ebadf(), msg.len()));
        }
        Ok(())
    }

    /// Sends one message with `priority`, waiting (without blocking the thread) while the queue
    /// is full. Cancel-safe: a dropped future has sent nothing.
    ///
    /// # Errors
    /// As [`MessageQueue::send`]: [`Error::MessageTooLarge`], [`Error::InvalidPriority`] and a
    /// receive-only queue (`EBADF`) are reported at once, before any wait.
    #[doc(alias = "mq_send")]
    pub async fn send(&self, msg: &[u8], priority: Priority) -> Result<()> {
        self.check_send(msg, priority)?;
        self.io
            .async_io(Interest::WRITABLE, |fd| try_send(fd, msg, priority))
            .await
            .map_err(|e| self.queue.io_error(e, msg.len()))
    }

    /// Receives the oldest message of the highest priority into `buf`, waiting (without blocking
    /// the thread) while the queue is empty; returns its length and priority. Cancel-safe: a
    /// dropped future has taken nothing.
    ///
    /// # Errors
    /// As [`MessageQueue::receive`]: [`Error::BufferTooSmall`] and a send-only queue (`EBADF`)
    /// are reported at once.
    #[doc(alias = "mq_receive")]
    pub async fn receive(&self, buf: &mut [u8]) -> Result<(usize, Priority)> {
        self.check_receive(buf.len())?;
        self.io
            .async_io(Interest::READABLE, |fd| try_receive(fd, buf))
            .await
            .map_err(|e| self.queue.io_error(e, 0))
    }

    /// Receives a message into a new `Vec` sized from the queue's attributes. Cancel-safe.
    ///
    /// # Errors
    /// As [`receive`](Self::receive).
    pub async fn receive_vec(&self) -> Result<(Vec<u8>, Priority)> {
        let mut buf = vec![0; self.queue.message_size()];
        let (n, priority) = self.receive(&mut buf).await?;
        buf.truncate(n);
        Ok((buf, priority))
    }

    /// The poll form of [`send`](Self::send), for hand-written futures and sinks: `Ready` once
    /// the message is sent (or failed), `Pending` with `cx` woken when there may be room. Only
    /// the task that polled last is woken: one sending task at a time.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub fn poll_send(
        &self,
        cx: &mut Context<'_>,
        msg: &[u8],
        priority: Priority,
    ) -> Poll<Result<()>> {
        self.check_send(msg, priority)?;
        loop {
            let mut guard = match self.io.poll_write_ready(cx) {
                Poll::Ready(Ok(g)) => g,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(self.queue.io_error(e, msg.len()))),
                Poll::Pending => return Poll::Pending,
            };
            match guard.try_io(|fd| try_send(fd.get_ref(), msg, priority)) {
                Ok(r) => return Poll::Ready(r.map_err(|e| self.queue.io_error(e, msg.len()))),
                Err(_would_block) => {}
            }
        }
    }

    /// The poll form of [`receive`](Self::receive), for hand-written futures and streams:
    /// `Ready` with a message (or an error), `Pending` with `cx` woken when one may be waiting.
    /// Only the task that polled last is woken: one receiving task at a time.
    ///
    /// # Errors
    /// As [`receive`](Self::receive).
    pub fn poll_receive(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<Result<(usize, Priority)>> {
        self.check_receive(buf.len())?;
        loop {
            let mut guard = match self.io.poll_read_ready(cx) {
                Poll::Ready(Ok(g)) => g,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(self.queue.io_error(e, 0))),
                Poll::Pending => return Poll::Pending,
            };
            match guard.try_io(|fd| try_receive(fd.get_ref(), buf)) {
                Ok(r) => return Poll::Ready(r.map_err(|e| self.queue.io_error(e, 0))),
                Err(_would_block) => {}
            }
        }
    }
}

/// The registered (non-blocking) descriptor.
impl AsFd for AsyncMessageQueue {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.io.get_ref().as_fd()
    }
}

/// The registered (non-blocking) descriptor.
impl AsRawFd for AsyncMessageQueue {
    fn as_raw_fd(&self) -> RawFd {
        self.io.get_ref().as_raw_fd()
    }
}

/// A System V queue with `async` send and receive, on any executor (tokio's or another: it uses
/// only the task's waker).
///
/// *Available with the crate feature `tokio`.*
///
/// System V queues have no descriptor for a reactor to watch, so their waits are served by one
/// helper thread per process, shared by every pending System V wait. A future that finds the
/// queue empty (or full) registers with the helper and sleeps; the helper looks at the queue's
/// counters (`msgctl(IPC_STAT)`) on a backoff schedule and wakes the future when its try can
/// succeed; the future then tries again itself.
///
/// # Cost
/// - **Threads:** one per process, started by the first System V wait that has to wait, and
///   kept for the life of the process. A `send` or `receive` that succeeds at once never
///   touches it.
/// - **Latency:** a waiting future is looked after 50 µs, then at intervals that double up to
///   5 ms. A message (or room) that appears while a future waits is taken within that interval:
///   at once-ish for short waits, up to 5 ms late after a wait of more than about 10 ms. Use a
///   POSIX [`AsyncMessageQueue`] where that matters.
/// - **CPU while waiting:** with no System V wait pending, none (the helper sleeps on a
///   condition variable). With waits pending, the helper wakes about 200 times a second and
///   makes one `msgctl` per queue that has a wait due: waits that have reached the 5 ms
///   interval are looked at together on one 5 ms grid, however many there are (measured: 60
///   wake-ups in 300 ms for 1 wait and for 21 waits on 21 queues; a new wait adds about 10
///   looks in its first 10 ms). A wake-up costs what any timed sleep costs: measured on a
///   loaded 2-core VM, 30–50 µs of CPU, as much as a C loop of `nanosleep` and `msgctl` there
///   — about 1 % of one core while any System V wait is pending. The waiting tasks are not
///   polled meanwhile: the runtime is woken only when a queue's counters say a try can succeed
///   (for a receive by type, any message in the queue counts, so a queue full of other types'
///   messages wakes its waiter at every look).
/// - A receiver blocked in the kernel (a blocking `receive`, here or in another process) is
///   handed a new message before any future can look: it is served first.
///
/// # Cancellation
/// Dropping a pending future loses nothing. The helper never takes a message out of a queue, nor
/// puts one in: it only looks. A message leaves the queue in the `poll` of a live future, which
/// returns it in that same `poll`, and a message is sent whole or not at all in the `poll` that
/// returns `Ready`. A future dropped at any moment — before or after the helper woke it — leaves
/// every message in the queue, in its place; its registration with the helper goes with it.
///
/// ```
/// use ipc_mq::{AsyncSysvQueue, Key, Select, SysvQueue};
/// let rt = tokio::runtime::Builder::new_current_thread().build()?;
/// rt.block_on(async {
///     let q = AsyncSysvQueue::new(SysvQueue::create(Key::PRIVATE)?);
///     q.send(7, b"for seven").await?;
///     let (text, mtype) = q.receive_vec(Select::Type(7)).await?;
///     assert_eq!((text.as_slice(), mtype), (&b"for seven"[..], 7));
///     Ok::<(), ipc_mq::Error>(())
/// })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # After `fork`
/// The helper thread is not in a forked child: a wait there fails with [`Error::Io`] instead of
/// hanging. A pending future copied into the child must not be polled or dropped there (forget
/// it); the queue's handle ([`into_inner`](Self::into_inner), or a [`SysvQueue`] of its own)
/// may be used as its docs say.
#[derive(Debug)]
pub struct AsyncSysvQueue {
    queue: SysvQueue,
}

impl From<SysvQueue> for AsyncSysvQueue {
    fn from(queue: SysvQueue) -> AsyncSysvQueue {
        AsyncSysvQueue::new(queue)
    }
}

fn helper_error(e: io::Error) -> Error {
    Error::Io(e)
}

impl AsyncSysvQueue {
    /// Wraps `queue` (and its ownership: an owner's queue is removed when this is dropped, as
    /// its `on_drop` says). No thread starts until a wait has to wait.
    pub const fn new(queue: SysvQueue) -> AsyncSysvQueue {
        AsyncSysvQueue { queue }
    }

    /// The queue's handle: stats, id, ownership, and the `try_` forms. Its blocking forms block
    /// the thread: not for use in a task.
    pub fn get_ref(&self) -> &SysvQueue {
        &self.queue
    }

    /// Gives the handle back.
    pub fn into_inner(self) -> SysvQueue {
        self.queue
    }

    /// Sends `text` with type `mtype` (> 0), waiting while the queue is full. Cancel-safe: a
    /// dropped future has sent nothing.
    ///
    /// # Errors
    /// As [`SysvQueue::send`]; a message that could never fit is [`Error::MessageTooLarge`] at
    /// once, and an invalid type [`Error::InvalidMessageType`]. [`Error::Io`] if the helper
    /// thread cannot be started.
    #[doc(alias = "msgsnd")]
    pub async fn send(&self, mtype: i64, text: &[u8]) -> Result<()> {
        let mut w = Waiter::new();
        loop {
            match self.queue.try_send(mtype, text) {
                Err(Error::WouldBlock) => {}
                r => return r,
            }
            w.wait(self.queue.id(), Need::Room(text.len()))
                .await
                .map_err(helper_error)?;
        }
    }

    /// Sends a prepared [`SysvMessage`], waiting while the queue is full. Cancel-safe.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub async fn send_message(&self, msg: &SysvMessage) -> Result<()> {
        let mut w = Waiter::new();
        loop {
            match self.queue.try_send_message(msg) {
                Err(Error::WouldBlock) => {}
                r => return r,
            }
            w.wait(self.queue.id(), Need::Room(msg.text().len()))
                .await
                .map_err(helper_error)?;
        }
    }

    /// Receives the message `sel` picks into `buf`, waiting until there is one; returns its
    /// length and type. Cancel-safe: a dropped future has taken nothing.
    ///
    /// # Errors
    /// As [`SysvQueue::receive`]; [`Error::Removed`] if the queue is removed while waiting;
    /// [`Error::Io`] if the helper thread cannot be started.
    #[doc(alias = "msgrcv")]
    pub async fn receive(&self, buf: &mut [u8], sel: Select) -> Result<(usize, i64)> {
        let mut w = Waiter::new();
        loop {
            match self.queue.try_receive(buf, sel) {
                Err(Error::WouldBlock) => {}
                r => return r,
            }
            w.wait(self.queue.id(), Need::Message)
                .await
                .map_err(helper_error)?;
        }
    }

    /// Receives the message `sel` picks into a new `Vec` of its length. Cancel-safe.
    ///
    /// # Errors
    /// As [`receive`](Self::receive), without `BufferTooSmall`.
    pub async fn receive_vec(&self, sel: Select) -> Result<(Vec<u8>, i64)> {
        let mut w = Waiter::new();
        loop {
            match self.queue.try_receive_vec(sel) {
                Err(Error::WouldBlock) => {}
                r => return r,
            }
            w.wait(self.queue.id(), Need::Message)
                .await
                .map_err(helper_error)?;
        }
    }

    /// Receives into `msg` (up to its capacity) without copying. Cancel-safe.
    ///
    /// # Errors
    /// As [`receive`](Self::receive).
    pub async fn receive_message(&self, msg: &mut SysvMessage, sel: Select) -> Result<()> {
        let mut w = Waiter::new();
        loop {
            match self.queue.try_receive_message(msg, sel) {
                Err(Error::WouldBlock) => {}
                r => return r,
            }
            w.wait(self.queue.id(), Need::Message)
                .await
                .map_err(helper_error)?;
        }
    }
}
