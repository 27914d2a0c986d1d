//! Await-able forms of every kind (the `tokio` feature).
//!
//! - [`AsyncEventSemaphore`]: an eventfd semaphore on tokio's reactor (a non-blocking
//!   descriptor registered with the runtime; no thread).
//! - [`AsyncSemaphore`] (POSIX: named, anonymous, in place), [`AsyncMutex`] (robust mutexes)
//!   and [`AsyncSemSet`] (System V): the kernel gives no descriptor for these, so one waiter
//!   thread per process watches all of their waits (`crate::helper`). They work on any
//!   executor, not only tokio's.
//!
//! In every form, a future takes what it waits for only in the `poll` that returns it: a
//! future dropped before it completed (by `select!`, `tokio::time::timeout`, an aborted task)
//! has taken nothing, so nothing is lost.

use std::fmt;
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use ::tokio::io::unix::AsyncFd;

use crate::error::{Error, Result};
use crate::eventfd::{self, EventSemaphore};
use crate::helper::{self, Helper, MutexTarget, Op, SemTarget, Watch};
use crate::mutex::RobustMutex;
use crate::named::NamedSemaphore;
use crate::placed::{NamedMutex, SharedMutex};
use crate::posix::{self, InPlaceSemaphore, SemGuard, SharedSemaphore};
use crate::sys::SemCell;
use crate::sysv::{SemOp, SemSet, SetGuard};

// ---------------------------------------------------------------------------------------------
// eventfd, on tokio's reactor

/// An [`EventSemaphore`] driven by tokio's reactor: [`wait`](Self::wait) is `async` and sleeps
/// without blocking a thread.
///
/// *Available with the crate feature `tokio`.*
///
/// [`new`](Self::new) makes the semaphore's descriptor non-blocking and registers it with the
/// current runtime (one registration, no thread, nothing polls: the task sleeps until the
/// kernel reports the eventfd readable, that is a unit is there). Its cost is the reactor's:
/// a wake-up of the runtime per post that finds the task waiting.
///
/// # Cancellation
/// A unit is taken only in the `poll` that then returns `Ready` (one non-blocking `read`): a
/// `wait` dropped before it completed took nothing, and the unit stays for the next waiter, in
/// this process or another. Use `tokio::time::timeout` for a timed wait. Several tasks may wait
/// on one semaphore at once (share it in an `Arc`).
///
/// ```
/// use ipc_sem::{AsyncEventSemaphore, EventSemaphore};
///
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
///     runtime.block_on(async {
///         let jobs = AsyncEventSemaphore::new(EventSemaphore::new(0)?)?;
///         jobs.post_n(2)?; // e.g. from another process that has the descriptor
///         jobs.wait().await?;
///         jobs.wait().await?;
///         // Nothing left: a timed wait gives up, and its dropped future took nothing.
///         let late = tokio::time::timeout(std::time::Duration::from_millis(10), jobs.wait());
///         assert!(late.await.is_err());
///         Ok::<(), Box<dyn std::error::Error>>(())
///     })
/// }
/// ```
///
/// # After `fork`
/// tokio's reactor belongs to the parent: in a child forked from a process that runs a runtime,
/// this type may not be used or dropped before `exec` (dropping deregisters from the reactor,
/// which takes its locks); `std::mem::forget` it there, or `exec`.
pub struct AsyncEventSemaphore {
    io: AsyncFd<OwnedFd>,
}

impl fmt::Debug for AsyncEventSemaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncEventSemaphore")
            .field("fd", &self.as_raw_fd())
            .finish()
    }
}

/// [`AsyncEventSemaphore::new`] failed; the semaphore comes back with the error.
///
/// *Available with the crate feature `tokio`.*
pub struct RegisterError {
    error: Error,
    sem: EventSemaphore,
}

impl RegisterError {
    /// What went wrong.
    pub fn error(&self) -> &Error {
        &self.error
    }

    /// The semaphore, unchanged but for its descriptor's mode (non-blocking if `new` got so
    /// far).
    pub fn into_inner(self) -> EventSemaphore {
        self.sem
    }

    /// The error and the semaphore.
    pub fn into_parts(self) -> (Error, EventSemaphore) {
        (self.error, self.sem)
    }
}

impl fmt::Debug for RegisterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegisterError")
            .field("error", &self.error)
            .field("sem", &self.sem)
            .finish()
    }
}

impl fmt::Display for RegisterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot register the eventfd semaphore with tokio: {}",
            self.error
        )
    }
}

impl std::error::Error for RegisterError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// The error, without the semaphore.
impl From<RegisterError> for Error {
    fn from(e: RegisterError) -> Error {
        e.error
    }
}

/// The error, without the semaphore.
impl From<RegisterError> for io::Error {
    fn from(e: RegisterError) -> io::Error {
        e.error.into()
    }
}

impl AsyncEventSemaphore {
    /// Makes `sem`'s descriptor non-blocking and registers it with the current tokio runtime.
    ///
    /// The mode belongs to the open file description, which copies of the descriptor share
    /// ([`EventSemaphore::try_clone`], descriptors passed to other processes): every
    /// [`EventSemaphore`] method works in either mode, but a program of another kind reading
    /// a shared copy would see `EAGAIN` where it used to block.
    ///
    /// # Errors
    /// Outside a tokio runtime: [`Error::Io`] saying so; [`Error::Io`] if the reactor refuses
    /// the descriptor. The semaphore comes back in the error.
    ///
    /// # Panics
    /// In a tokio runtime built without IO (`enable_io`), as tokio's own I/O types do.
    pub fn new(sem: EventSemaphore) -> std::result::Result<AsyncEventSemaphore, RegisterError> {
        if ::tokio::runtime::Handle::try_current().is_err() {
            let error = Error::Io(io::Error::other(
                "AsyncEventSemaphore::new must be called inside a tokio runtime (with IO enabled)",
            ));
            return Err(RegisterError { error, sem });
        }
        if let Err(error) = sem.set_nonblocking(true) {
            return Err(RegisterError { error, sem });
        }
        match crate::sys::register_readable(OwnedFd::from(sem)) {
            Ok(io) => Ok(AsyncEventSemaphore { io }),
            Err(e) => {
                let (fd, cause) = e.into_parts();
                Err(RegisterError {
                    error: Error::Io(cause),
                    sem: EventSemaphore::from(fd),
                })
            }
        }
    }

    /// Waits for a unit and takes it, without blocking the thread.
    ///
    /// # Errors
    /// Only unexpected OS errors (and a descriptor that is not an eventfd, see
    /// [`EventSemaphore`]).
    pub async fn wait(&self) -> Result<()> {
        loop {
            match self.try_wait() {
                Err(Error::WouldBlock) => {}
                r => return r,
            }
            // Every task that waits here is woken when the eventfd becomes readable.
            let mut ready = self.io.readable().await.map_err(Error::Io)?;
            // Readiness is edge-triggered: forget it only when the count is seen zero, so a
            // unit left for another waiter is never missed.
            match eventfd::try_wait(self.as_fd()) {
                Err(Error::WouldBlock) => ready.clear_ready(),
                r => return r,
            }
        }
    }

    /// The poll form of [`wait`](Self::wait), for hand-written futures: `Ready` with the unit
    /// taken, or `Pending` with `cx`'s waker registered for readiness. Only the waker of the
    /// last call is kept (as for tokio's `poll_read_ready`): one task per semaphore uses this
    /// form; any number may use [`wait`](Self::wait).
    ///
    /// # Errors
    /// As [`wait`](Self::wait).
    pub fn poll_wait(&self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        loop {
            match self.try_wait() {
                Err(Error::WouldBlock) => {}
                r => return Poll::Ready(r),
            }
            let mut ready = match self.io.poll_read_ready(cx) {
                Poll::Ready(Ok(r)) => r,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(Error::Io(e))),
                Poll::Pending => return Poll::Pending,
            };
            // Readiness is edge-triggered: forget it only when the count is seen zero, so a
            // unit left for another waiter is never missed.
            match eventfd::try_wait(self.as_fd()) {
                Err(Error::WouldBlock) => ready.clear_ready(),
                r => return Poll::Ready(r),
            }
        }
    }

    /// Takes a unit if there is one, without waiting.
    ///
    /// # Errors
    /// [`Error::WouldBlock`] if the count is zero.
    pub fn try_wait(&self) -> Result<()> {
        eventfd::try_wait(self.as_fd())
    }

    /// Adds one unit, waking a waiter.
    ///
    /// # Errors
    /// [`Error::Overflow`] at [`EVENTFD_MAX`](crate::EVENTFD_MAX) (the descriptor is
    /// non-blocking: a post never waits).
    pub fn post(&self) -> Result<()> {
        self.post_n(1)
    }

    /// Adds `n` units.
    ///
    /// # Errors
    /// [`Error::Overflow`] if the count would pass [`EVENTFD_MAX`](crate::EVENTFD_MAX) (nothing
    /// is added); [`Error::ValueTooLarge`] for `n > EVENTFD_MAX`.
    pub fn post_n(&self, n: u64) -> Result<()> {
        eventfd::post_n(self.as_fd(), n)
    }

    /// Ends the registration and gives the semaphore back (its descriptor stays non-blocking:
    /// [`EventSemaphore::set_nonblocking`] changes that).
    pub fn into_inner(self) -> EventSemaphore {
        EventSemaphore::from(self.io.into_inner())
    }
}

impl AsFd for AsyncEventSemaphore {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.io.get_ref().as_fd()
    }
}

impl AsRawFd for AsyncEventSemaphore {
    fn as_raw_fd(&self) -> RawFd {
        self.io.get_ref().as_raw_fd()
    }
}

// ---------------------------------------------------------------------------------------------
// What the waiter thread serves

/// The POSIX semaphore handles [`AsyncSemaphore`] wraps: [`NamedSemaphore`],
/// [`SharedSemaphore`] and [`InPlaceSemaphore`]. Sealed.
///
/// *Available with the crate feature `tokio`.*
// Sealed by its crate-private supertrait, which nothing outside the crate can implement.
#[allow(private_bounds)]
pub trait PosixSemaphore: SemTarget + fmt::Debug {}

impl SemTarget for NamedSemaphore {
    fn sem_cell(&self) -> &SemCell {
        self.cell()
    }
}
impl SemTarget for SharedSemaphore {
    fn sem_cell(&self) -> &SemCell {
        self.cell()
    }
}
impl SemTarget for InPlaceSemaphore {
    fn sem_cell(&self) -> &SemCell {
        self.cell()
    }
}
impl PosixSemaphore for NamedSemaphore {}
impl PosixSemaphore for SharedSemaphore {}
impl PosixSemaphore for InPlaceSemaphore {}

/// The robust mutex handles [`AsyncMutex`] wraps: [`NamedMutex`], [`SharedMutex`] and
/// [`RobustMutex`]. Sealed.
///
/// *Available with the crate feature `tokio`.*
// Sealed by its crate-private supertrait, which nothing outside the crate can implement.
#[allow(private_bounds)]
pub trait RobustMutexHandle: MutexTarget + fmt::Debug {}

impl MutexTarget for NamedMutex {
    fn robust(&self) -> &RobustMutex {
        self
    }
}
impl MutexTarget for SharedMutex {
    fn robust(&self) -> &RobustMutex {
        self
    }
}
impl MutexTarget for RobustMutex {
    fn robust(&self) -> &RobustMutex {
        self
    }
}
impl RobustMutexHandle for NamedMutex {}
impl RobustMutexHandle for SharedMutex {}
impl RobustMutexHandle for RobustMutex {}

/// The part of an async handle that names it to the waiter thread. Declared first in every
/// handle, so dropped before the object: it removes the waiters of futures that were forgotten
/// (`std::mem::forget`) instead of dropped, while the object's memory is still there.
#[derive(Debug)]
struct Owner {
    token: u64,
    used: AtomicBool,
}

impl Owner {
    fn new() -> Owner {
        Owner {
            token: helper::owner_token(),
            used: AtomicBool::new(false),
        }
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        // Never used: nothing to do (not even asking for the pid). In a forked child,
        // `existing` is `None` without taking a lock.
        if *self.used.get_mut() {
            if let Some(h) = Helper::existing() {
                h.forget_owner(self.token);
            }
        }
    }
}

/// A future's registration with the waiter thread; dropped, it removes the waiter (passing on
/// a wake-up it may have used up).
struct Watcher {
    reg: Option<(Arc<Helper>, u64)>,
}

impl Watcher {
    const fn new() -> Watcher {
        Watcher { reg: None }
    }

    fn registered(&self) -> bool {
        self.reg.is_some()
    }

    /// Watches for the task of `cx`: registers the first time, watches again after a wake-up.
    fn watch(
        &mut self,
        owner: &Owner,
        cx: &Context<'_>,
        what: impl FnOnce() -> Watch,
    ) -> Result<()> {
        if let Some((h, id)) = &self.reg {
            if h.is_alive() {
                h.rearm(*id, cx.waker());
                return Ok(());
            }
            // Its thread is gone (it never ends, unless a bug unwound it), and the waiter with
            // it: register with a new one.
            self.reg = None;
        }
        let h = Helper::get()?;
        owner.used.store(true, Ordering::SeqCst);
        let id = h.register(owner.token, what(), cx.waker());
        self.reg = Some((h, id));
        Ok(())
    }

    /// Whether the waiter thread woke this future (or this future is not registered, or its
    /// thread is gone), so that it should try again. Updates the waker.
    fn woken(&self, cx: &Context<'_>) -> bool {
        match &self.reg {
            Some((h, id)) => !h.is_alive() || h.notified(*id, cx.waker()),
            None => true,
        }
    }

    /// The future is done: it took what it waited for (`took`), or failed.
    fn finish(&mut self, took: bool) {
        if let Some((h, id)) = self.reg.take() {
            h.remove(id, took);
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.finish(false);
    }
}

// ---------------------------------------------------------------------------------------------
// POSIX semaphores

/// A POSIX semaphore ([`NamedSemaphore`], [`SharedSemaphore`] or [`InPlaceSemaphore`]) whose
/// waits are `async`: [`wait`](Self::wait) and [`acquire`](Self::acquire) sleep without
/// blocking a thread, on any executor.
///
/// *Available with the crate feature `tokio`.*
///
/// The kernel gives no descriptor for a POSIX semaphore, so one waiter thread per process (the
/// same for every async semaphore, mutex and System V set; started by the first wait that has
/// to wait, and kept until the process ends) watches every pending wait: it counts itself among
/// the semaphore's waiters as glibc's `sem_wait` does (so `sem_post`, from any process or a C
/// program, wakes it) and sleeps on all watched semaphores at once (`futex_waitv`, Linux 5.16;
/// older kernels: it looks every millisecond). Its costs:
///
/// - one thread per process, asleep when nothing changes: no CPU while waits are pending;
/// - a wake-up of a pending wait costs one more hand-off than a blocking wait (that thread
///   wakes the task): a round trip between two processes measured 6.8 µs against 4.2 µs
///   blocking on one CPU, 43 against 31 µs across two (p50, a loaded 2-core VM);
/// - while a wait is pending, `sem_post` on that semaphore makes a `futex` system call (as
///   with any sleeping waiter); a wait that can take a unit at once costs what
///   [`try_wait`](Self::try_wait) costs: no system call;
/// - more than 127 semaphores and mutexes with pending waits at once: the excess is looked at
///   every millisecond.
///
/// # Cancellation
/// The unit is taken only in the `poll` that returns it (`sem_trywait`): a `wait` or `acquire`
/// dropped before it completed took nothing. If the post that woke the waiter thread is then
/// not taken by this process, it is passed on to a waiter that sleeps in another process. Use
/// `tokio::time::timeout` for a timed wait. Several tasks may wait on one semaphore at once;
/// when units come, as many tasks are woken as there are units.
///
/// The README's example (keep the two the same):
///
/// ```
/// use std::time::Duration;
///
/// use ipc_sem::{AsyncMutex, AsyncSemaphore, NamedMutex, NamedSemaphore};
///
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let name = format!("/myapp-jobs-{}", std::process::id());
///     let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
///     runtime.block_on(async {
///         let jobs = AsyncSemaphore::new(NamedSemaphore::create(&name, 0)?);
///         let lock = AsyncMutex::new(NamedMutex::create(&format!("{name}-lock"))?);
///         jobs.post()?; // another process would post
///         jobs.wait().await?;
///         // Timed out: the wait is dropped, and a dropped wait took nothing.
///         let late = tokio::time::timeout(Duration::from_millis(10), jobs.wait()).await;
///         assert!(late.is_err());
///         let guard = lock.lock().await?.recover()?; // nothing to repair after a crash here
///         tokio::task::yield_now().await; // held across an await
///         drop(guard); // unlocked when `drop` returns
///         Ok(())
///     })
/// }
/// ```
///
/// # After `fork`
/// The child has no waiter thread: it may drop this handle, its futures and guards (dropping
/// touches nothing of the parent's waits), and call [`post`](Self::post),
/// [`try_wait`](Self::try_wait) and [`value`](Self::value), as on the semaphore itself.
///
/// If a future is forgotten (`std::mem::forget`) rather than dropped, its registration lives
/// until this handle is dropped.
pub struct AsyncSemaphore<S: PosixSemaphore> {
    owner: Owner,
    sem: Arc<S>,
}

impl<S: PosixSemaphore> fmt::Debug for AsyncSemaphore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncSemaphore")
            .field("sem", &self.sem)
            .finish()
    }
}

impl<S: PosixSemaphore> AsyncSemaphore<S> {
    /// Wraps `sem`. Starts no thread (the first wait that has to wait does).
    pub fn new(sem: S) -> AsyncSemaphore<S> {
        AsyncSemaphore {
            owner: Owner::new(),
            sem: Arc::new(sem),
        }
    }

    fn cell(&self) -> &SemCell {
        self.sem.sem_cell()
    }

    /// Waits until the value is above zero and decrements it (`sem_trywait` when woken),
    /// without blocking the thread.
    ///
    /// # Errors
    /// Only unexpected OS errors; [`Error::Io`] if the waiter thread cannot be started.
    #[doc(alias = "sem_wait")]
    pub fn wait(&self) -> impl Future<Output = Result<()>> + Send + '_ {
        SemWait {
            sem: self,
            watcher: Watcher::new(),
            done: false,
        }
    }

    /// Waits like [`wait`](Self::wait) and returns a guard that posts on drop.
    ///
    /// # Errors
    /// As [`wait`](Self::wait).
    pub fn acquire(&self) -> impl Future<Output = Result<SemGuard<'_>>> + Send + '_ {
        let wait = self.wait();
        async move {
            wait.await?;
            Ok(SemGuard::new(self.cell()))
        }
    }

    /// `sem_trywait`—Takes a unit if there is one, without waiting (no system call).
    ///
    /// # Errors
    /// [`Error::WouldBlock`] if the value is zero.
    pub fn try_wait(&self) -> Result<()> {
        posix::try_wait(self.cell())
    }

    /// Like [`try_wait`](Self::try_wait), returning a guard that posts on drop.
    ///
    /// # Errors
    /// [`Error::WouldBlock`] if the value is zero.
    pub fn try_acquire(&self) -> Result<SemGuard<'_>> {
        self.try_wait()?;
        Ok(SemGuard::new(self.cell()))
    }

    /// `sem_post`—Increments the value, waking one waiter (in any process).
    ///
    /// # Errors
    /// [`Error::Overflow`] at `SEM_VALUE_MAX`.
    pub fn post(&self) -> Result<()> {
        posix::post(self.cell())
    }

    /// `sem_getvalue`—The current value (a snapshot).
    ///
    /// # Errors
    /// Only unexpected OS errors.
    pub fn value(&self) -> Result<u32> {
        posix::value(self.cell())
    }

    /// The semaphore (its name, ownership, and blocking forms, which block the thread: not for
    /// use in a task).
    pub fn get_ref(&self) -> &S {
        &self.sem
    }

    /// The semaphore back.
    pub fn into_inner(self) -> S {
        let AsyncSemaphore { owner, sem } = self;
        drop(owner);
        unwrap_sole(sem)
    }
}

/// The inner value of an `Arc` that only the async handle holds: futures and guards borrow the
/// handle, and the waiter thread's references go when `Owner` is dropped (the calls it makes for
/// a handle drop their references before they answer).
fn unwrap_sole<T>(arc: Arc<T>) -> T {
    match Arc::try_unwrap(arc) {
        Ok(t) => t,
        Err(_) => unreachable!("an async handle's object is shared only while borrowed"),
    }
}

struct SemWait<'a, S: PosixSemaphore> {
    sem: &'a AsyncSemaphore<S>,
    watcher: Watcher,
    done: bool,
}

const POLLED_AFTER_DONE: &str = "an ipc-sem future was polled after it completed";

impl<S: PosixSemaphore> SemWait<'_, S> {
    /// One attempt; `None` if it would block.
    fn attempt(&mut self) -> Option<Result<()>> {
        let r = match self.sem.try_wait() {
            Ok(()) => {
                self.watcher.finish(true);
                Ok(())
            }
            Err(Error::WouldBlock) => return None,
            Err(e) => {
                self.watcher.finish(false);
                Err(e)
            }
        };
        self.done = true;
        Some(r)
    }
}

impl<S: PosixSemaphore> Future for SemWait<'_, S> {
    type Output = Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = &mut *self;
        // A completed wait must not take a second unit.
        assert!(!this.done, "{POLLED_AFTER_DONE}");
        if let Some(r) = this.attempt() {
            return Poll::Ready(r);
        }
        let first = !this.watcher.registered();
        let sem = this.sem;
        if let Err(e) = this
            .watcher
            .watch(&sem.owner, cx, || Watch::Sem(sem.sem.clone()))
        {
            return Poll::Ready(Err(e));
        }
        if first {
            // A post between the attempt and the registration found no waiter to wake.
            if let Some(r) = this.attempt() {
                return Poll::Ready(r);
            }
        }
        Poll::Pending
    }
}

// ---------------------------------------------------------------------------------------------
// Robust mutexes

/// A robust mutex ([`NamedMutex`], [`SharedMutex`] or an in-place [`RobustMutex`]) with an
/// `async` [`lock`](Self::lock) whose guard may be held across `.await` and sent between
/// threads, on any executor.
///
/// *Available with the crate feature `tokio`.*
///
/// A pthread mutex belongs to the thread that locked it: it must be unlocked by that thread,
/// and the kernel releases it as "owner died" when that thread ends. A task moves between
/// threads, so the locks of async guards are taken and released by the process's waiter thread
/// (the one of [`AsyncSemaphore`]), which lives until the process ends:
///
/// - `lock` hands a non-blocking lock attempt to that thread and waits for its answer (the
///   calling thread waits, about 5 µs: that thread never blocks on anything but its sleep,
///   which the request interrupts); if the mutex is held, the future sleeps without
///   blocking and that thread watches the lock word (it sets `FUTEX_WAITERS` in it, as a
///   blocked `pthread_mutex_lock` does, so the holder's unlock, or the kernel when the holder
///   dies, wakes it), then the future tries again;
/// - dropping the guard hands the unlock to that thread, and returns when it is done (so a
///   process that exits right after dropping a guard has released the lock): an uncontended
///   async lock and unlock measured 10 µs, against 10 ns for the blocking forms;
/// - the crash-safety of the kind is kept: if this process dies, its waiter thread dies with it
///   and the kernel hands every lock it held to the next locker as "owner died".
///
/// # Cancellation
/// The lock is taken only in the `poll` that returns it (the attempt is made and answered
/// inside that `poll`): a `lock` dropped before it completed holds nothing, and a mutex whose
/// owner died is still "owner died" for the next locker. A wake-up it used up is passed on to
/// a locker that sleeps in another process. Use `tokio::time::timeout` for a timed lock.
///
/// Tasks of this process that lock the same mutex at once wait for each other (the waiter
/// thread holds the lock for one guard at a time); a task that locks a mutex it already holds
/// waits forever, as with any mutex.
///
/// ```
/// use ipc_sem::{AsyncMutex, NamedMutex};
///
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let name = format!("/myapp-async-mutex-{}", std::process::id());
///     let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
///     runtime.block_on(async {
///         let m = AsyncMutex::new(NamedMutex::create(&name)?);
///         let guard = m.lock().await?.recover()?; // `recover`: no data to repair here
///         tokio::task::yield_now().await; // held across an await
///         drop(guard); // unlocked when this returns
///         Ok::<(), Box<dyn std::error::Error>>(())
///     })
/// }
/// ```
///
/// # After `fork`
/// The child has no waiter thread: it may drop this handle, its futures and guards (dropping a
/// guard there unlocks nothing: the lock is the parent's thread's), but not lock.
pub struct AsyncMutex<M: RobustMutexHandle> {
    owner: Owner,
    mutex: Arc<M>,
}

impl<M: RobustMutexHandle> fmt::Debug for AsyncMutex<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncMutex")
            .field("mutex", &self.mutex)
            .finish()
    }
}

/// The result of a successful async lock: normal, or after the previous owner died holding it.
///
/// *Available with the crate feature `tokio`.*
#[must_use = "dropping the result unlocks the mutex at once"]
#[derive(Debug)]
pub enum AsyncLocked<'a, M: RobustMutexHandle> {
    /// Locked; the previous owner unlocked normally.
    Normal(AsyncMutexGuard<'a, M>),
    /// Locked, but the previous owner died holding it: repair the data it protects, then call
    /// [`AsyncOwnerDiedGuard::make_consistent`].
    OwnerDied(AsyncOwnerDiedGuard<'a, M>),
}

impl<'a, M: RobustMutexHandle> AsyncLocked<'a, M> {
    /// Whether the previous owner died holding the mutex.
    pub fn is_owner_died(&self) -> bool {
        matches!(self, AsyncLocked::OwnerDied(_))
    }

    /// The guard, marking the mutex consistent first if its owner died (for data that needs
    /// no repair).
    ///
    /// # Errors
    /// What `pthread_mutex_consistent` fails with.
    pub fn recover(self) -> Result<AsyncMutexGuard<'a, M>> {
        match self {
            AsyncLocked::Normal(g) => Ok(g),
            AsyncLocked::OwnerDied(g) => g.make_consistent(),
        }
    }
}

/// Holds a robust mutex for an async task (the lock is the waiter thread's); unlocks it when
/// dropped, and returns once it is unlocked. It may be sent to another thread.
///
/// *Available with the crate feature `tokio`.*
#[must_use = "dropping the guard unlocks the mutex at once"]
pub struct AsyncMutexGuard<'a, M: RobustMutexHandle> {
    mutex: &'a AsyncMutex<M>,
    helper: Arc<Helper>,
}

impl<M: RobustMutexHandle> fmt::Debug for AsyncMutexGuard<'_, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncMutexGuard").finish_non_exhaustive()
    }
}

impl<M: RobustMutexHandle> Drop for AsyncMutexGuard<'_, M> {
    fn drop(&mut self) {
        // In a forked child, `call` returns at once: the lock belongs to the parent's thread.
        let _ = self.helper.call(Op::Unlock, &self.mutex.target());
    }
}

/// Holds a robust mutex whose previous owner died, for an async task. Call
/// [`make_consistent`](Self::make_consistent) after repairing the data; dropping this guard
/// without it unlocks the mutex *unrecoverably* (as POSIX defines).
///
/// *Available with the crate feature `tokio`.*
#[must_use = "dropping this guard makes the mutex unrecoverable"]
pub struct AsyncOwnerDiedGuard<'a, M: RobustMutexHandle> {
    guard: AsyncMutexGuard<'a, M>,
}

impl<M: RobustMutexHandle> fmt::Debug for AsyncOwnerDiedGuard<'_, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncOwnerDiedGuard")
            .finish_non_exhaustive()
    }
}

impl<'a, M: RobustMutexHandle> AsyncOwnerDiedGuard<'a, M> {
    /// `pthread_mutex_consistent` (by the waiter thread, which holds the lock)—Declares the
    /// protected data repaired; the mutex works normally again. Returns the normal guard.
    ///
    /// # Errors
    /// What `pthread_mutex_consistent` fails with; the mutex is then unlocked without being
    /// made consistent (so it becomes unrecoverable).
    #[doc(alias = "pthread_mutex_consistent")]
    pub fn make_consistent(self) -> Result<AsyncMutexGuard<'a, M>> {
        let guard = self.guard;
        match guard.helper.call(Op::MakeConsistent, &guard.mutex.target()) {
            0 => Ok(guard),
            rc => Err(Error::errno(rc)),
        }
    }
}

impl<M: RobustMutexHandle> AsyncMutex<M> {
    /// Wraps `mutex`. Starts no thread (the first lock does).
    pub fn new(mutex: M) -> AsyncMutex<M> {
        AsyncMutex {
            owner: Owner::new(),
            mutex: Arc::new(mutex),
        }
    }

    fn target(&self) -> Arc<dyn MutexTarget> {
        self.mutex.clone()
    }

    /// One attempt by the waiter thread: a guard, or `None` if the mutex is held.
    fn attempt(&self) -> Option<Result<AsyncLocked<'_, M>>> {
        let helper = match Helper::get() {
            Ok(h) => h,
            Err(e) => return Some(Err(e)),
        };
        let rc = helper.call(Op::TryLock, &self.target());
        let guard = |helper| AsyncMutexGuard {
            mutex: self,
            helper,
        };
        match rc {
            0 => Some(Ok(AsyncLocked::Normal(guard(helper)))),
            libc::EOWNERDEAD => Some(Ok(AsyncLocked::OwnerDied(AsyncOwnerDiedGuard {
                guard: guard(helper),
            }))),
            // EDEADLK: the waiter thread holds it, for another guard of this process.
            libc::EBUSY | libc::EDEADLK => None,
            rc => Some(Err(Error::errno(rc))),
        }
    }

    /// Waits for the mutex without blocking the thread (see the type's docs for how), and
    /// returns its guard.
    ///
    /// # Errors
    /// [`Error::NotRecoverable`] if an owner died and nobody made it consistent;
    /// [`Error::Io`] if the waiter thread cannot be started.
    #[doc(alias = "pthread_mutex_lock")]
    pub fn lock(&self) -> impl Future<Output = Result<AsyncLocked<'_, M>>> + Send + '_ {
        Lock {
            mutex: self,
            watcher: Watcher::new(),
            done: false,
        }
    }

    /// Takes the mutex if it is free, without waiting (one hand-off to the waiter thread).
    ///
    /// # Errors
    /// [`Error::WouldBlock`] if it is held (also by another guard of this process); as
    /// [`lock`](Self::lock).
    #[doc(alias = "pthread_mutex_trylock")]
    pub fn try_lock(&self) -> Result<AsyncLocked<'_, M>> {
        self.attempt().unwrap_or(Err(Error::WouldBlock))
    }

    /// The mutex (its name, ownership, and blocking forms: a lock taken through those belongs
    /// to the calling thread).
    pub fn get_ref(&self) -> &M {
        &self.mutex
    }

    /// The mutex back.
    pub fn into_inner(self) -> M {
        let AsyncMutex { owner, mutex } = self;
        drop(owner);
        unwrap_sole(mutex)
    }
}

struct Lock<'a, M: RobustMutexHandle> {
    mutex: &'a AsyncMutex<M>,
    watcher: Watcher,
    done: bool,
}

impl<'a, M: RobustMutexHandle> Future for Lock<'a, M> {
    type Output = Result<AsyncLocked<'a, M>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        assert!(!this.done, "{POLLED_AFTER_DONE}");
        // A poll that was not a wake-up (a `select!` polling every branch) makes no attempt:
        // each costs a hand-off to the waiter thread.
        if !this.watcher.woken(cx) {
            return Poll::Pending;
        }
        let mutex = this.mutex;
        match mutex.attempt() {
            Some(r) => {
                this.watcher.finish(r.is_ok());
                this.done = true;
                Poll::Ready(r)
            }
            None => match this
                .watcher
                .watch(&mutex.owner, cx, || Watch::Mutex(mutex.mutex.clone()))
            {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// System V sets

/// A System V semaphore set whose operations can be awaited: [`apply`](Self::apply) and
/// [`acquire`](Self::acquire) wait without blocking a thread, on any executor.
///
/// *Available with the crate feature `tokio`.*
///
/// System V gives neither a descriptor nor a futex: the process's waiter thread (the one of
/// [`AsyncSemaphore`]) looks at the values of a pending wait's semaphores (`semctl(GETVAL)`,
/// which changes nothing) 50 µs after it began, then at doubling intervals up to every 5 ms, on
/// a grid that all waits at the same interval share, and wakes the task when its operations
/// would go through; the task then applies them (`semop(IPC_NOWAIT)`). Its costs:
///
/// - a pending wait is noticed up to its current interval late: up to 5 ms once it has waited
///   a few milliseconds (the blocking [`SemSet::apply`] wakes at once); a round trip between
///   two processes across two CPUs measured 53 µs against 35 µs blocking (p50);
/// - while any System V wait is pending, the waiter thread wakes up to 200 times a second,
///   plus one `semctl` per pending wait per look.
///
/// # Cancellation
/// The operations are applied only in the `poll` that returns `Ready`: an `apply` or `acquire`
/// dropped before it completed changed nothing (no unit taken, no undo entry made). Use
/// `tokio::time::timeout` for a timed wait.
///
/// ```
/// use ipc_sem::{AsyncSemSet, Key, SemOp, SemSet};
///
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
///     runtime.block_on(async {
///         let forks = AsyncSemSet::new(SemSet::create(Key::PRIVATE, &[1, 1])?);
///         // Both forks or neither, given back by the kernel if this process dies.
///         let both = forks.acquire(&[SemOp::wait(0).undo(), SemOp::wait(1).undo()]).await?;
///         assert_eq!(forks.get_ref().values()?, [0, 0]);
///         drop(both);
///         assert_eq!(forks.get_ref().values()?, [1, 1]);
///         Ok::<(), Box<dyn std::error::Error>>(())
///     })
/// }
/// ```
///
/// # After `fork`
/// The child has no waiter thread: it may drop this handle and its futures (touching nothing of
/// the parent's waits) and use [`get_ref`](Self::get_ref)'s set as after any fork.
pub struct AsyncSemSet {
    owner: Owner,
    set: SemSet,
}

impl fmt::Debug for AsyncSemSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncSemSet")
            .field("set", &self.set)
            .finish()
    }
}

impl AsyncSemSet {
    /// Wraps `set`. Starts no thread (the first wait that has to wait does).
    pub fn new(set: SemSet) -> AsyncSemSet {
        AsyncSemSet {
            owner: Owner::new(),
            set,
        }
    }

    /// Applies all `ops` atomically when they can all be applied, waiting without blocking the
    /// thread (see [`SemSet::apply`] for what they mean).
    ///
    /// # Errors
    /// As [`SemSet::apply`] ([`Error::IndexOutOfRange`] before anything else,
    /// [`Error::Removed`] if the set is removed while waiting); [`Error::Io`] if the waiter
    /// thread cannot be started.
    #[doc(alias = "semop")]
    pub fn apply<'a>(&'a self, ops: &[SemOp]) -> impl Future<Output = Result<()>> + Send + use<'a> {
        Apply {
            set: self,
            ops: ops.to_vec(),
            watcher: Watcher::new(),
            done: false,
        }
    }

    /// Applies `ops` like [`apply`](Self::apply) and returns a guard that applies their inverse
    /// when dropped (see [`SemSet::acquire`]).
    ///
    /// # Errors
    /// As [`apply`](Self::apply).
    pub fn acquire<'a>(
        &'a self,
        ops: &[SemOp],
    ) -> impl Future<Output = Result<SetGuard<'a>>> + Send + use<'a> {
        let apply = self.apply(ops);
        let ops = ops.to_vec();
        async move {
            apply.await?;
            Ok(self.set.guard(&ops))
        }
    }

    /// The set (its values, ownership, the `try_` forms; its blocking forms block the thread:
    /// not for use in a task).
    pub fn get_ref(&self) -> &SemSet {
        &self.set
    }

    /// The set back.
    pub fn into_inner(self) -> SemSet {
        let AsyncSemSet { owner, set } = self;
        drop(owner);
        set
    }
}

struct Apply<'a> {
    set: &'a AsyncSemSet,
    ops: Vec<SemOp>,
    watcher: Watcher,
    done: bool,
}

impl Apply<'_> {
    fn attempt(&mut self) -> Option<Result<()>> {
        let r = match self.set.set.try_apply(&self.ops) {
            Ok(()) => {
                self.watcher.finish(true);
                Ok(())
            }
            Err(Error::WouldBlock) => return None,
            Err(e) => {
                self.watcher.finish(false);
                Err(e)
            }
        };
        self.done = true;
        Some(r)
    }
}

impl Future for Apply<'_> {
    type Output = Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = &mut *self;
        // Completed operations must not be applied twice.
        assert!(!this.done, "{POLLED_AFTER_DONE}");
        if let Some(r) = this.attempt() {
            return Poll::Ready(r);
        }
        let first = !this.watcher.registered();
        let set = this.set;
        // `attempt` checked every index against the set's length (IndexOutOfRange otherwise),
        // and the kernel's `sem_num` is a u16.
        let ops = &this.ops;
        let watch = || Watch::Sysv {
            id: set.set.id(),
            ops: ops
                .iter()
                .map(|o| (u16::try_from(o.index()).unwrap_or(u16::MAX), o.delta()))
                .collect(),
        };
        if let Err(e) = this.watcher.watch(&set.owner, cx, watch) {
            return Poll::Ready(Err(e));
        }
        if first {
            if let Some(r) = this.attempt() {
                return Poll::Ready(r);
            }
        }
        Poll::Pending
    }
}
