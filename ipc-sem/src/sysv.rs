//! System V semaphore sets (`semget`, `semop`, `semtimedop`, `semctl`).

use std::ffi::CString;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::sys;
use crate::time::{Deadline, to_timespec};

/// The largest value of a System V semaphore (`SEMVMX`).
pub const SEMVMX: u16 = 32767;

/// A System V IPC key: [`Key::PRIVATE`], a number the processes agree on, or
/// [`Key::from_path`]. The same shape as `ipc_mq::Key` and `ipc_shm::Key`.
///
/// ```
/// use ipc_sem::Key;
/// assert_eq!(Key::from(0x4950_0001), Key::new(0x4950_0001));
/// assert_eq!(Key::new(0x4950_0001).as_raw(), 0x4950_0001);
/// assert_eq!(Key::from(0), Key::PRIVATE); // IPC_PRIVATE is 0
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key(libc::key_t);

impl Key {
    /// `IPC_PRIVATE`: always a new set, reachable only through its id (pass [`SemSet::id`] to
    /// the processes that need it, and [`SemSet::open_id`] there); it cannot be
    /// [`open`](SemSet::open)ed by key.
    pub const PRIVATE: Key = Key(libc::IPC_PRIVATE);

    /// A key from a number (on Linux, 0 is [`Key::PRIVATE`]).
    pub const fn new(key: i32) -> Key {
        Key(key)
    }

    /// `ftok(path, proj_id)`—A key derived from an existing file's inode and a project byte.
    /// Different files can give the same key: create exclusively.
    ///
    /// # Errors
    /// [`Error::NotFound`] if `path` does not exist, [`Error::InvalidName`] if it holds a NUL.
    #[doc(alias = "ftok")]
    pub fn from_path(path: &Path, proj_id: u8) -> Result<Key> {
        let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::InvalidName {
            name: path.display().to_string(),
            reason: "must not contain NUL",
        })?;
        Ok(Key(sys::ftok(&c, proj_id)?))
    }

    /// The raw key.
    pub const fn as_raw(self) -> i32 {
        self.0
    }
}

/// A key from a number, as [`Key::new`]: `Key::from(0x4950_0001)`.
impl From<i32> for Key {
    fn from(key: i32) -> Key {
        Key::new(key)
    }
}

/// One operation of an atomic [`SemSet::apply`]: add `delta` to semaphore `index` (waiting
/// while the result would be negative), or wait until it is zero (`delta == 0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SemOp {
    index: usize,
    delta: i16,
    undo: bool,
}

impl SemOp {
    /// Subtracts 1 (waits while the value is 0): take one unit.
    pub const fn wait(index: usize) -> SemOp {
        SemOp::add(index, -1)
    }

    /// Adds 1: give one unit back.
    pub const fn post(index: usize) -> SemOp {
        SemOp::add(index, 1)
    }

    /// Adds `delta` (negative: waits until the value is at least `-delta`).
    pub const fn add(index: usize, delta: i16) -> SemOp {
        SemOp {
            index,
            delta,
            undo: false,
        }
    }

    /// Waits until the value is zero.
    pub const fn wait_zero(index: usize) -> SemOp {
        SemOp::add(index, 0)
    }

    /// `SEM_UNDO`: the kernel reverts this operation when the process exits, however it exits
    /// (even by `SIGKILL`). Use it on every operation that takes a unit the process must give
    /// back, and on the operation that gives it back.
    pub const fn undo(mut self) -> SemOp {
        self.undo = true;
        self
    }

    /// The semaphore's index in the set.
    pub const fn index(&self) -> usize {
        self.index
    }

    /// The amount added (0: wait for zero).
    pub const fn delta(&self) -> i16 {
        self.delta
    }

    /// Whether `SEM_UNDO` is set.
    pub const fn is_undo(&self) -> bool {
        self.undo
    }
}

#[derive(Clone, Copy)]
enum Wait {
    Block,
    Try,
    Until(Deadline),
}

/// A System V semaphore set: `len` semaphores that one call can change together, atomically.
///
/// The *owner* ([`create`](Self::create)) removes the set (`IPC_RMID`) when dropped in the
/// creating process; [`open`](Self::open) and [`open_id`](Self::open_id) return handles that
/// never remove it. With [`SemOp::undo`], a process killed while holding units gives them back:
/// this is the kind that survives a holder's crash.
///
/// ```
/// # fn main() -> Result<(), ipc_sem::Error> {
/// use std::time::Duration;
/// use ipc_sem::{Key, SemOp, SemSet};
/// // Semaphore 0: a lock; semaphore 1: items ready.
/// let set = SemSet::create(Key::PRIVATE, &[1, 0])?;
/// set.apply(&[SemOp::post(1)])?; // a producer: one item
/// // A consumer: the lock and an item together, or wait; undo if we die meanwhile.
/// set.apply_timeout(&[SemOp::wait(0).undo(), SemOp::wait(1)], Duration::from_secs(1))?;
/// set.apply(&[SemOp::post(0).undo()])?; // unlock
/// assert_eq!(set.values()?, [1, 0]);
/// # Ok(()) }
/// ```
pub struct SemSet {
    id: i32,
    len: usize,
    owner: Option<u32>,
}

impl fmt::Debug for SemSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SemSet")
            .field("id", &self.id)
            .field("len", &self.len)
            .field("owner", &self.is_owner())
            .finish()
    }
}

/// The fields of `/proc/sys/kernel/sem`: SEMMSL, SEMMNS, SEMOPM, SEMMNI.
fn sem_limits() -> Option<[u64; 4]> {
    let s = std::fs::read_to_string("/proc/sys/kernel/sem").ok()?;
    let v: Vec<u64> = s
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    Some([*v.first()?, *v.get(1)?, *v.get(2)?, *v.get(3)?])
}

impl SemSet {
    /// `semget(IPC_CREAT | IPC_EXCL)`—Creates a set with one semaphore per entry of `values`,
    /// initialised to them, mode 0600. Returns the owner.
    ///
    /// The set is initialised (`SETALL`) and then marked ready by one `semop` (which sets
    /// `sem_otime`), so [`open`](Self::open) in another process never sees it half-made.
    ///
    /// # Errors
    /// Before any syscall: [`Error::EmptySet`], [`Error::ValueTooLarge`] (over [`SEMVMX`]),
    /// [`Error::LimitExceeded`] (more than SEMMSL semaphores). Then [`Error::AlreadyExists`]
    /// for a key in use; [`Error::LimitExceeded`] when the system is out of sets (SEMMNI) or
    /// semaphores (SEMMNS).
    #[doc(alias = "semget")]
    pub fn create(key: Key, values: &[u16]) -> Result<SemSet> {
        SemSet::create_with_mode(key, values, 0o600)
    }

    /// Like [`create`](Self::create) with the permission bits `mode` (System V ignores the
    /// umask, so `mode` is exact).
    ///
    /// # Errors
    /// As [`create`](Self::create).
    pub fn create_with_mode(key: Key, values: &[u16], mode: u32) -> Result<SemSet> {
        if values.is_empty() {
            return Err(Error::EmptySet);
        }
        if let Some(&v) = values.iter().find(|&&v| v > SEMVMX) {
            return Err(Error::ValueTooLarge {
                value: u64::from(v),
                max: u64::from(SEMVMX),
            });
        }
        let limits = sem_limits();
        let semmsl = limits.map_or(32000, |l| l[0]);
        if values.len() as u64 > semmsl {
            return Err(Error::LimitExceeded {
                what: "SEMMSL (semaphores per set)",
                requested: values.len() as u64,
                limit: semmsl,
            });
        }
        let flags = libc::IPC_CREAT | libc::IPC_EXCL | (mode & 0o777) as i32;
        let id = match sys::semget(key.as_raw(), values.len() as i32, flags) {
            Ok(id) => id,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                return Err(Error::LimitExceeded {
                    what: "SEMMNI/SEMMNS (semaphore sets / semaphores system-wide)",
                    requested: values.len() as u64,
                    limit: limits.map_or(0, |l| l[1]),
                });
            }
            Err(e) => return Err(e.into()),
        };
        let set = SemSet {
            id,
            len: values.len(),
            owner: Some(std::process::id()),
        };
        // On any error below, dropping `set` removes it.
        sys::semctl_setall(id, values)?;
        // Mark the set initialised: a semop sets sem_otime, which `open` waits for. +1 then -1
        // (or the reverse at SEMVMX) leaves the value as it is.
        let (a, b) = if values[0] < SEMVMX { (1, -1) } else { (-1, 1) };
        set.try_apply(&[SemOp::add(0, a), SemOp::add(0, b)])?;
        Ok(set)
    }

    /// `semget(key, 0, 0)`—Opens an existing set by key, waiting up to one second for its
    /// creator to finish initialising it.
    ///
    /// # Errors
    /// [`Error::NotFound`] (also for [`Key::PRIVATE`]); [`Error::PermissionDenied`];
    /// [`Error::TimedOut`] if the set stays uninitialised.
    pub fn open(key: Key) -> Result<SemSet> {
        SemSet::open_timeout(key, Duration::from_secs(1))
    }

    /// Like [`open`](Self::open), waiting at most `timeout` for initialisation.
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn open_timeout(key: Key, timeout: Duration) -> Result<SemSet> {
        if key == Key::PRIVATE {
            return Err(Error::NotFound);
        }
        let id = sys::semget(key.as_raw(), 0, 0)?;
        let start = Instant::now();
        loop {
            let (len, otime, _, _) = sys::semctl_stat(id).map_err(stat_error)?;
            if otime != 0 {
                return Ok(SemSet {
                    id,
                    len,
                    owner: None,
                });
            }
            if start.elapsed() >= timeout {
                return Err(Error::TimedOut);
            }
            // The creator is between semget and its first semop: a few microseconds.
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Opens a set by its id (from [`id`](Self::id) in another process; the way to share an
    /// [`Key::PRIVATE`] set). The handle never removes it.
    ///
    /// # Errors
    /// [`Error::Removed`] if no such set exists; [`Error::PermissionDenied`].
    pub fn open_id(id: i32) -> Result<SemSet> {
        let (len, _, _, _) = sys::semctl_stat(id).map_err(stat_error)?;
        Ok(SemSet {
            id,
            len,
            owner: None,
        })
    }

    /// The set's id (valid in every process).
    pub fn id(&self) -> i32 {
        self.id
    }

    /// The number of semaphores.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a set has at least one semaphore.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether dropping this handle removes the set (it is the owner, in the creating process).
    pub fn is_owner(&self) -> bool {
        self.owner == Some(std::process::id())
    }

    /// Keeps the set after this handle is dropped; remove it later with [`remove`].
    pub fn into_persistent(mut self) -> SemSet {
        self.owner = None;
        self
    }

    /// `semop`—Applies all `ops` atomically: either all at once, or (while any would make a
    /// value negative, or a wait-for-zero is not met) none, waiting. `EINTR` is retried.
    ///
    /// # Errors
    /// [`Error::IndexOutOfRange`] before any syscall; [`Error::Removed`] if the set is removed
    /// (also while waiting); [`Error::Overflow`] if a value would exceed [`SEMVMX`];
    /// [`Error::LimitExceeded`] for more operations than SEMOPM.
    #[doc(alias = "semop")]
    pub fn apply(&self, ops: &[SemOp]) -> Result<()> {
        self.run(ops, Wait::Block)
    }

    /// `semop(IPC_NOWAIT)`—Like [`apply`](Self::apply), without waiting.
    ///
    /// # Errors
    /// [`Error::WouldBlock`] if the operations cannot all be applied now; as
    /// [`apply`](Self::apply).
    pub fn try_apply(&self, ops: &[SemOp]) -> Result<()> {
        self.run(ops, Wait::Try)
    }

    /// `semtimedop`—Like [`apply`](Self::apply), waiting at most `timeout` (zero only tries,
    /// `Duration::MAX` waits forever). `EINTR`, which `semop` returns even after a
    /// `SIGSTOP`/`SIGCONT`, is retried with the time left.
    ///
    /// # Errors
    /// [`Error::TimedOut`] at the deadline; as [`apply`](Self::apply).
    #[doc(alias = "semtimedop")]
    pub fn apply_timeout(&self, ops: &[SemOp], timeout: Duration) -> Result<()> {
        if timeout.is_zero() {
            return self.try_apply(ops).map_err(|e| match e {
                Error::WouldBlock => Error::TimedOut,
                e => e,
            });
        }
        match Deadline::after(timeout) {
            Deadline::Forever => self.run(ops, Wait::Block),
            d => self.run(ops, Wait::Until(d)),
        }
    }

    /// Applies `ops` like [`apply`](Self::apply) and returns a guard that applies their
    /// inverse (the same operations with `-delta`, same undo flags) when dropped.
    ///
    /// ```
    /// # fn main() -> Result<(), ipc_sem::Error> {
    /// use ipc_sem::{Key, SemOp, SemSet};
    /// let forks = SemSet::create(Key::PRIVATE, &[1, 1])?;
    /// {
    ///     // Both forks or neither, given back by the kernel if this process dies.
    ///     let _both = forks.acquire(&[SemOp::wait(0).undo(), SemOp::wait(1).undo()])?;
    ///     assert_eq!(forks.values()?, [0, 0]);
    /// }
    /// assert_eq!(forks.values()?, [1, 1]);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`apply`](Self::apply).
    pub fn acquire(&self, ops: &[SemOp]) -> Result<SetGuard<'_>> {
        self.apply(ops)?;
        Ok(self.guard(ops))
    }

    /// Like [`acquire`](Self::acquire) without waiting.
    ///
    /// # Errors
    /// As [`try_apply`](Self::try_apply).
    pub fn try_acquire(&self, ops: &[SemOp]) -> Result<SetGuard<'_>> {
        self.try_apply(ops)?;
        Ok(self.guard(ops))
    }

    /// Like [`acquire`](Self::acquire) waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`apply_timeout`](Self::apply_timeout).
    pub fn acquire_timeout(&self, ops: &[SemOp], timeout: Duration) -> Result<SetGuard<'_>> {
        self.apply_timeout(ops, timeout)?;
        Ok(self.guard(ops))
    }

    fn guard(&self, ops: &[SemOp]) -> SetGuard<'_> {
        SetGuard {
            set: self,
            undo: ops
                .iter()
                .filter(|o| o.delta != 0)
                .map(|o| SemOp {
                    delta: o.delta.saturating_neg(),
                    ..*o
                })
                .collect(),
        }
    }

    fn check(&self, index: usize) -> Result<()> {
        if index < self.len {
            Ok(())
        } else {
            Err(Error::IndexOutOfRange {
                index,
                len: self.len,
            })
        }
    }

    fn run(&self, ops: &[SemOp], wait: Wait) -> Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        let flag = |o: &SemOp| {
            let mut f = 0;
            if o.undo {
                f |= libc::SEM_UNDO;
            }
            if matches!(wait, Wait::Try) {
                f |= libc::IPC_NOWAIT;
            }
            f as i16
        };
        let mut small = [libc::sembuf {
            sem_num: 0,
            sem_op: 0,
            sem_flg: 0,
        }; 4];
        let mut big = Vec::new();
        let bufs: &mut [libc::sembuf] = if ops.len() <= small.len() {
            &mut small[..ops.len()]
        } else {
            big.resize(
                ops.len(),
                libc::sembuf {
                    sem_num: 0,
                    sem_op: 0,
                    sem_flg: 0,
                },
            );
            &mut big
        };
        for (b, o) in bufs.iter_mut().zip(ops) {
            self.check(o.index)?;
            b.sem_num = o.index as u16;
            b.sem_op = o.delta;
            b.sem_flg = flag(o);
        }
        loop {
            let r = match wait {
                Wait::Block | Wait::Try => sys::semop(self.id, bufs),
                // A zero time left still tries once (semtimedop does not wait then).
                Wait::Until(d) => match d.remaining() {
                    Some(left) => sys::semtimedop_rel(self.id, bufs, &to_timespec(left)),
                    None => sys::semop(self.id, bufs),
                },
            };
            match r {
                Ok(()) => return Ok(()),
                Err(libc::EINTR) => continue,
                Err(libc::EAGAIN) => {
                    return Err(match wait {
                        Wait::Try => Error::WouldBlock,
                        _ => Error::TimedOut,
                    });
                }
                Err(e) => return Err(self.op_error(e, ops.len())),
            }
        }
    }

    fn op_error(&self, e: i32, nops: usize) -> Error {
        match e {
            libc::ERANGE => Error::Overflow,
            libc::E2BIG => Error::LimitExceeded {
                what: "SEMOPM (operations per semop call)",
                requested: nops as u64,
                limit: sem_limits().map_or(0, |l| l[2]),
            },
            libc::ENOSPC => Error::LimitExceeded {
                what: "SEMUME (undo entries per process)",
                requested: nops as u64,
                limit: 0,
            },
            libc::EFBIG => Error::IndexOutOfRange {
                index: usize::MAX,
                len: self.len,
            },
            // Our arguments are checked, so EINVAL means the id no longer names a set.
            libc::EINVAL | libc::EIDRM => Error::Removed,
            e => Error::errno(e),
        }
    }

    /// `semctl(GETVAL)`—The value of semaphore `index`.
    ///
    /// # Errors
    /// [`Error::IndexOutOfRange`] before any syscall; [`Error::Removed`].
    #[doc(alias = "GETVAL")]
    pub fn value(&self, index: usize) -> Result<u16> {
        self.check(index)?;
        sys::semctl_get(self.id, index as i32, libc::GETVAL)
            .map(|v| v as u16)
            .map_err(stat_error)
    }

    /// `semctl(SETVAL)`—Sets semaphore `index` to `value` (clearing every process's undo
    /// entries for it, as the kernel does).
    ///
    /// # Errors
    /// [`Error::IndexOutOfRange`], [`Error::ValueTooLarge`] before any syscall;
    /// [`Error::Removed`].
    #[doc(alias = "SETVAL")]
    pub fn set_value(&self, index: usize, value: u16) -> Result<()> {
        self.check(index)?;
        if value > SEMVMX {
            return Err(Error::ValueTooLarge {
                value: u64::from(value),
                max: u64::from(SEMVMX),
            });
        }
        sys::semctl_setval(self.id, index as i32, i32::from(value)).map_err(stat_error)
    }

    /// `semctl(GETALL)`—All values, in index order.
    ///
    /// # Errors
    /// [`Error::Removed`].
    #[doc(alias = "GETALL")]
    pub fn values(&self) -> Result<Vec<u16>> {
        let mut v = vec![0u16; self.len];
        sys::semctl_getall(self.id, &mut v).map_err(stat_error)?;
        Ok(v)
    }

    /// `semctl(SETALL)`—Sets all values at once.
    ///
    /// # Errors
    /// [`Error::IndexOutOfRange`] if `values.len()` is not [`len`](Self::len);
    /// [`Error::ValueTooLarge`]; [`Error::Removed`].
    #[doc(alias = "SETALL")]
    pub fn set_values(&self, values: &[u16]) -> Result<()> {
        if values.len() != self.len {
            return Err(Error::IndexOutOfRange {
                index: values.len(),
                len: self.len,
            });
        }
        if let Some(&v) = values.iter().find(|&&v| v > SEMVMX) {
            return Err(Error::ValueTooLarge {
                value: u64::from(v),
                max: u64::from(SEMVMX),
            });
        }
        sys::semctl_setall(self.id, values).map_err(stat_error)
    }

    /// `semctl(GETNCNT)`—How many processes wait for semaphore `index` to increase.
    ///
    /// # Errors
    /// [`Error::IndexOutOfRange`]; [`Error::Removed`].
    #[doc(alias = "GETNCNT")]
    pub fn waiters(&self, index: usize) -> Result<usize> {
        self.check(index)?;
        sys::semctl_get(self.id, index as i32, libc::GETNCNT)
            .map(|v| v as usize)
            .map_err(stat_error)
    }

    /// `semctl(IPC_SET)`—Changes the permission bits.
    ///
    /// # Errors
    /// [`Error::PermissionDenied`] unless we own or created the set; [`Error::Removed`].
    pub fn set_mode(&self, mode: u32) -> Result<()> {
        sys::semctl_set_mode(self.id, mode & 0o777).map_err(stat_error)
    }

    /// `semctl(IPC_RMID)`—Removes the set now (waiters get [`Error::Removed`]), whoever owns
    /// this handle.
    ///
    /// # Errors
    /// [`Error::PermissionDenied`]; [`Error::Removed`] if it is gone already.
    pub fn remove(mut self) -> Result<()> {
        self.owner = None;
        remove(self.id)
    }
}

fn stat_error(e: std::io::Error) -> Error {
    match e.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::EIDRM) => Error::Removed,
        _ => e.into(),
    }
}

impl Drop for SemSet {
    fn drop(&mut self) {
        if self.is_owner() {
            let _ = sys::semctl_rmid(self.id);
        }
    }
}

/// `semctl(IPC_RMID)`—Removes a set by id (for explicit clean-up of a persistent set).
///
/// # Errors
/// [`Error::Removed`] if no such set exists; [`Error::PermissionDenied`].
#[doc(alias = "IPC_RMID")]
pub fn remove(id: i32) -> Result<()> {
    sys::semctl_rmid(id).map_err(stat_error)
}

/// Operations taken by [`SemSet::acquire`]; applies their inverse when dropped.
#[must_use = "dropping the guard gives the units back at once"]
pub struct SetGuard<'a> {
    set: &'a SemSet,
    undo: Vec<SemOp>,
}

impl fmt::Debug for SetGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SetGuard")
            .field("release", &self.undo)
            .finish()
    }
}

impl SetGuard<'_> {
    /// Gives the units back now and reports an error (`Drop` would ignore it).
    ///
    /// # Errors
    /// As [`SemSet::apply`] (e.g. [`Error::Removed`]).
    pub fn release(mut self) -> Result<()> {
        let ops = std::mem::take(&mut self.undo);
        self.set.apply(&ops)
    }
}

impl Drop for SetGuard<'_> {
    fn drop(&mut self) {
        if !self.undo.is_empty() {
            let _ = self.set.apply(&self.undo);
        }
    }
}
