//! System V semaphore sets (`semget`, `semop`, `semtimedop`, `semctl`), the workspace's System V
//! [`Key`], and the free functions that remove sets: [`remove`] by id and [`remove_stale`] by
//! key.
//!
//! The types are re-exported at the crate root (`ipc_sem::SemSet`, `ipc_sem::Key`, ...); the
//! free functions live here only (`ipc_sem::sysv::remove`).
//!
//! A System V set has no file, so its owner's liveness lock lives on a companion file,
//! `/dev/shm/ipc-sysv-sem-{id}.owner` (mode 0600), made right after the set and removed with
//! it. [`remove_stale`] removes a set only if no live process holds that lock.

use std::ffi::CString;
use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::file::{self, Ident, SHM_DIR, Unlinked};
use crate::lifetime::{OPEN_OR_CREATE_ATTEMPTS, OnDrop, Opened, OwnerCheck, check_mode};
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
        let name = || path.display().to_string();
        let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::InvalidName {
            name: name(),
            reason: "must not contain NUL",
        })?;
        Ok(Key(
            sys::ftok(&c, proj_id).map_err(|e| Error::named(e, name))?
        ))
    }

    /// The raw key.
    pub const fn as_raw(self) -> i32 {
        self.0
    }

    /// How errors name the set of this key: `"key 0x4950abcd"` (`"key IPC_PRIVATE"`).
    fn name(self) -> String {
        if self == Key::PRIVATE {
            "key IPC_PRIVATE".to_owned()
        } else {
            format!("key {:#010x}", self.0 as u32)
        }
    }
}

/// A key from a number, as [`Key::new`]: `Key::from(0x4950_0001)`.
impl From<i32> for Key {
    fn from(key: i32) -> Key {
        Key::new(key)
    }
}

/// How errors name a set by id: `"id 42"`.
fn id_name(id: i32) -> String {
    format!("id {id}")
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

// ---------------------------------------------------------------------------------------------
// The companion file: the owner's liveness lock

/// `/dev/shm/ipc-sysv-sem-{id}.owner`.
fn companion_path(id: i32) -> CString {
    CString::new(format!("{SHM_DIR}/ipc-sysv-sem-{id}.owner")).unwrap_or_default()
}

/// The owner's half of a set: its companion file, locked while the descriptor is open.
struct SetOwner {
    /// Holds the owner lock while open.
    _companion: OwnedFd,
    path: CString,
    ident: Ident,
    pid: u32,
    on_drop: OnDrop,
}

/// Makes (or takes over) the companion of set `id` and takes its owner lock.
///
/// `O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC | O_RDWR`, mode 0600 by `fchmod`. One that exists
/// already was left by the owner of an earlier set with this id: it is reused only if it is a
/// regular file of ours whose lock is free; anything else is unlinked (only what was looked at)
/// and made anew.
fn make_companion(id: i32) -> std::io::Result<(OwnedFd, CString, Ident)> {
    let path = companion_path(id);
    let me = rustix::process::geteuid().as_raw();
    for _ in 0..4 {
        match rustix::fs::open(
            path.as_c_str(),
            OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::RDWR,
            Mode::RUSR | Mode::WUSR,
        ) {
            Ok(fd) => {
                let ident = Ident::of(fd.as_fd())?;
                let locked = rustix::fs::fchmod(&fd, Mode::RUSR | Mode::WUSR)
                    .map_err(std::io::Error::from)
                    .and_then(|()| file::take_owner_lock(fd.as_fd()));
                if let Err(e) = locked {
                    // Remove what we made (only if the path is still ours).
                    let _ = file::unlink_if(&path, ident);
                    return Err(e);
                }
                return Ok((fd, path, ident));
            }
            Err(Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        let old = match rustix::fs::statat(CWD, path.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(e.into()),
        };
        if FileType::from_raw_mode(old.st_mode) == FileType::RegularFile && old.st_uid == me {
            if let Ok(fd) = rustix::fs::open(
                path.as_c_str(),
                OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
                Mode::empty(),
            ) {
                let ident = Ident::of(fd.as_fd())?;
                if ident == Ident::from_stat(&old)
                    && !file::owner_alive(fd.as_fd())?
                    && file::take_owner_lock(fd.as_fd()).is_ok()
                {
                    rustix::fs::fchmod(&fd, Mode::RUSR | Mode::WUSR)?;
                    return Ok((fd, path, ident));
                }
            }
        }
        // Not ours to reuse (another user's, not a regular file, or locked by a live owner of
        // a set that no longer exists): replace it.
        file::unlink_if(&path, Ident::from_stat(&old))?;
    }
    Err(std::io::Error::from_raw_os_error(libc::EEXIST))
}

/// Removes the companion of set `id` if nobody holds its lock.
fn remove_free_companion(id: i32) {
    let path = companion_path(id);
    if let Ok(fd) = rustix::fs::open(
        path.as_c_str(),
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    ) {
        if let (Ok(false), Ok(ident)) = (file::owner_alive(fd.as_fd()), Ident::of(fd.as_fd())) {
            let _ = file::unlink_if(&path, ident);
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// The fields of `/proc/sys/kernel/sem`: SEMMSL, SEMMNS, SEMOPM, SEMMNI.
fn sem_limits() -> Option<[u64; 4]> {
    let s = std::fs::read_to_string("/proc/sys/kernel/sem").ok()?;
    let v: Vec<u64> = s
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    Some([*v.first()?, *v.get(1)?, *v.get(2)?, *v.get(3)?])
}

/// How to create or open a [`SemSet`]: `SemSet::options()`, `const fn` setters, then
/// [`create`](Self::create), [`open`](Self::open), [`open_id`](Self::open_id) or
/// [`open_or_create`](Self::open_or_create).
///
/// ```
/// # fn main() -> Result<(), ipc_sem::Error> {
/// use ipc_sem::{Key, SemSet};
/// let set = SemSet::options().mode(0o640).create(Key::PRIVATE, &[1, 0])?;
/// assert_eq!(set.values()?, [1, 0]);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SemSetOptions {
    mode: u32,
    on_drop: OnDrop,
    owner_check: OwnerCheck,
    replace_stale: bool,
    wait_ready: Duration,
}

impl Default for SemSetOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl SemSetOptions {
    /// The defaults: mode 0600, [`OnDrop::Remove`], [`OwnerCheck::SameUid`], no
    /// `replace_stale`, `open` waits up to one second for the creator to initialise the set.
    pub const fn new() -> Self {
        SemSetOptions {
            mode: 0o600,
            on_drop: OnDrop::Remove,
            owner_check: OwnerCheck::SameUid,
            replace_stale: false,
            wait_ready: Duration::from_secs(1),
        }
    }

    /// The permission bits of a created set (default `0o600`; System V ignores the umask, so
    /// they are exact). Bits outside `0o777` are [`Error::InvalidMode`].
    pub const fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// What the owner does when dropped (default [`OnDrop::Remove`]).
    pub const fn on_drop(mut self, on_drop: OnDrop) -> Self {
        self.on_drop = on_drop;
        self
    }

    /// Whose sets `open` accepts, by the set's `sem_perm.uid` (default
    /// [`OwnerCheck::SameUid`]).
    pub const fn owner_check(mut self, check: OwnerCheck) -> Self {
        self.owner_check = check;
        self
    }

    /// `create` first removes a stale set under the key (owner dead, as [`remove_stale`]); a
    /// live owner's is [`Error::OwnerAlive`].
    pub const fn replace_stale(mut self) -> Self {
        self.replace_stale = true;
        self
    }

    /// How long `open` waits for a set's creator to finish initialising it (default one
    /// second; the creator needs microseconds). System V has no notification for this, so the
    /// wait polls every millisecond.
    pub const fn wait_ready(mut self, limit: Duration) -> Self {
        self.wait_ready = limit;
        self
    }

    /// `semget(IPC_CREAT | IPC_EXCL)`—Creates a set with one semaphore per entry of `values`,
    /// initialised to them, and returns its owner.
    ///
    /// Right after `semget`, the owner makes its companion file and takes its lock; then the
    /// set is initialised (`SETALL`) and marked ready by one `semop` (which sets `sem_otime`),
    /// so [`open`](Self::open) in another process never sees it half-made. Any failure removes
    /// what was made.
    ///
    /// # Errors
    /// Before any syscall: [`Error::EmptySet`], [`Error::ValueTooLarge`] (over [`SEMVMX`]),
    /// [`Error::InvalidMode`], [`Error::LimitExceeded`] (more than SEMMSL semaphores). Then
    /// [`Error::AlreadyExists`] for a key in use; [`Error::OwnerAlive`] with `replace_stale`;
    /// [`Error::LimitExceeded`] when the system is out of sets (SEMMNI) or semaphores (SEMMNS).
    #[doc(alias = "semget")]
    pub fn create(&self, key: Key, values: &[u16]) -> Result<SemSet> {
        if values.is_empty() {
            return Err(Error::EmptySet);
        }
        if let Some(&v) = values.iter().find(|&&v| v > SEMVMX) {
            return Err(Error::ValueTooLarge {
                value: u64::from(v),
                max: u64::from(SEMVMX),
            });
        }
        check_mode(self.mode)?;
        let limits = sem_limits();
        let semmsl = limits.map_or(32000, |l| l[0]);
        let nsems = i32::try_from(values.len())
            .ok()
            .filter(|&n| n as u64 <= semmsl)
            .ok_or(Error::LimitExceeded {
                what: "SEMMSL (semaphores per set)",
                requested: values.len() as u64,
                limit: semmsl,
            })?;
        if self.replace_stale && key != Key::PRIVATE {
            match remove_stale(key) {
                Ok(()) | Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let flags = libc::IPC_CREAT | libc::IPC_EXCL | self.mode as i32;
        let id = match sys::semget(key.as_raw(), nsems, flags) {
            Ok(id) => id,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                return Err(Error::LimitExceeded {
                    what: "SEMMNI/SEMMNS (semaphore sets / semaphores system-wide)",
                    requested: values.len() as u64,
                    limit: limits.map_or(0, |l| l[1]),
                });
            }
            Err(e) => return Err(Error::named(e, || key.name())),
        };
        let (companion, path, ident) = match make_companion(id) {
            Ok(c) => c,
            Err(e) => {
                let _ = sys::semctl_rmid(id);
                return Err(Error::named(e, || {
                    format!("the owner file of {}", id_name(id))
                }));
            }
        };
        // From here on, dropping `set` removes the set and its companion.
        let mut set = SemSet {
            id,
            len: values.len(),
            owner: Some(SetOwner {
                _companion: companion,
                path,
                ident,
                pid: std::process::id(),
                on_drop: OnDrop::Remove,
            }),
        };
        sys::semctl_setall(id, values).map_err(|e| stat_error(e, id))?;
        // Mark the set initialised: a semop sets sem_otime, which `open` waits for. +1 then -1
        // (or the reverse at SEMVMX) leaves the value as it is.
        let (a, b) = if values[0] < SEMVMX { (1, -1) } else { (-1, 1) };
        set.try_apply(&[SemOp::add(0, a), SemOp::add(0, b)])?;
        if let Some(o) = &mut set.owner {
            o.on_drop = self.on_drop;
        }
        Ok(set)
    }

    /// `semget(key, 0, 0)`—Opens an existing set by key, checks its owner (`sem_perm.uid`),
    /// and waits up to [`wait_ready`](Self::wait_ready) for its creator to finish initialising
    /// it. The handle never removes it on drop.
    ///
    /// # Errors
    /// [`Error::NotFound`] (also for [`Key::PRIVATE`]); [`Error::PermissionDenied`];
    /// [`Error::WrongOwner`]; [`Error::TimedOut`] if the set stays uninitialised.
    pub fn open(&self, key: Key) -> Result<SemSet> {
        if key == Key::PRIVATE {
            return Err(Error::NotFound { name: key.name() });
        }
        let id = sys::semget(key.as_raw(), 0, 0).map_err(|e| Error::named(e, || key.name()))?;
        self.open_existing(id, &|| key.name())
    }

    /// Opens a set by its id (from [`SemSet::id`] in another process; the way to share a
    /// [`Key::PRIVATE`] set), with the same checks as [`open`](Self::open).
    ///
    /// # Errors
    /// [`Error::NotFound`] if no such set exists; as [`open`](Self::open).
    pub fn open_id(&self, id: i32) -> Result<SemSet> {
        self.open_existing(id, &|| id_name(id))
    }

    fn open_existing(&self, id: i32, name: &dyn Fn() -> String) -> Result<SemSet> {
        let deadline = Deadline::after(self.wait_ready);
        loop {
            let st = sys::semctl_stat(id).map_err(|e| match e.raw_os_error() {
                Some(libc::EINVAL | libc::EIDRM) => Error::NotFound { name: name() },
                _ => Error::named(e, name),
            })?;
            self.owner_check
                .check(st.uid)
                .map_err(|(expected, found)| Error::WrongOwner {
                    name: name(),
                    expected,
                    found,
                })?;
            if st.otime != 0 {
                return Ok(SemSet {
                    id,
                    len: st.nsems,
                    owner: None,
                });
            }
            match deadline.remaining() {
                Some(Duration::ZERO) => return Err(Error::TimedOut),
                left => {
                    // The creator is between semget and its first semop: microseconds.
                    let nap = Duration::from_millis(1);
                    std::thread::sleep(left.map_or(nap, |l| l.min(nap)));
                }
            }
        }
    }

    /// Opens the set under `key` if it exists, else creates it with `values` (only the creator
    /// initialises). Bounded: [`Error::Contended`] if the key keeps being created and removed
    /// between our attempts.
    ///
    /// # Errors
    /// As [`create`](Self::create) and [`open`](Self::open).
    pub fn open_or_create(&self, key: Key, values: &[u16]) -> Result<(SemSet, Opened)> {
        for _ in 0..OPEN_OR_CREATE_ATTEMPTS {
            match self.create(key, values) {
                Ok(s) => return Ok((s, Opened::Created)),
                Err(Error::AlreadyExists { .. } | Error::OwnerAlive { .. }) => {}
                Err(e) => return Err(e),
            }
            match self.open(key) {
                Ok(s) => return Ok((s, Opened::Existing)),
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Err(Error::Contended {
            name: key.name(),
            attempts: OPEN_OR_CREATE_ATTEMPTS,
        })
    }
}

/// A System V semaphore set: `len` semaphores that one call can change together, atomically.
///
/// The *owner* ([`create`](Self::create)) removes the set (`IPC_RMID`) when dropped in the
/// creating process (System V ids name one instance), together with its companion file;
/// [`open`](Self::open) and [`open_id`](Self::open_id) return handles that never remove it.
/// With [`SemOp::undo`], a process killed while holding units gives them back: this is the kind
/// that survives a holder's crash.
///
/// After `fork` (also from a multi-threaded parent), the child may call `apply`, `try_apply`,
/// `apply_timeout` and the `acquire` forms (each a `semop`/`semtimedop` system call; up to four
/// operations need no allocation), `value`, `set_value`, `waiters`, `id`, `len` and
/// `is_owner`, and drop the handle (closing the companion descriptor only: the child is not the
/// creator, so nothing is removed, and the owner lock stays held while any process has that
/// descriptor open). `values` allocates its result.
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
    owner: Option<SetOwner>,
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

impl SemSet {
    /// The options, to set the mode, the drop behaviour, the owner check, `replace_stale` or
    /// how long `open` waits.
    pub const fn options() -> SemSetOptions {
        SemSetOptions::new()
    }

    /// Creates a set initialised to `values`, mode 0600: `SemSet::options().create(key,
    /// values)`.
    ///
    /// # Errors
    /// As [`SemSetOptions::create`].
    #[doc(alias = "semget")]
    pub fn create(key: Key, values: &[u16]) -> Result<SemSet> {
        SemSet::options().create(key, values)
    }

    /// Opens a set of our uid by key: `SemSet::options().open(key)`.
    ///
    /// # Errors
    /// As [`SemSetOptions::open`].
    pub fn open(key: Key) -> Result<SemSet> {
        SemSet::options().open(key)
    }

    /// Opens a set of our uid by id: `SemSet::options().open_id(id)`.
    ///
    /// # Errors
    /// As [`SemSetOptions::open_id`].
    pub fn open_id(id: i32) -> Result<SemSet> {
        SemSet::options().open_id(id)
    }

    /// `SemSet::options().open_or_create(key, values)`.
    ///
    /// # Errors
    /// As [`SemSetOptions::open_or_create`].
    pub fn open_or_create(key: Key, values: &[u16]) -> Result<(SemSet, Opened)> {
        SemSet::options().open_or_create(key, values)
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

    /// Whether this handle is the owner: it created the set, in this process (false in a
    /// forked child and for openers). An owner told to keep the set ([`OnDrop::Keep`],
    /// [`persist`](Self::persist)) is still the owner until it is dropped.
    pub fn is_owner(&self) -> bool {
        self.owner
            .as_ref()
            .is_some_and(|o| o.pid == std::process::id())
    }

    /// Whether dropping this handle removes the set.
    fn removes_on_drop(&self) -> bool {
        self.is_owner()
            && self
                .owner
                .as_ref()
                .is_some_and(|o| o.on_drop == OnDrop::Remove)
    }

    /// Keeps the set after this owner is dropped (as [`OnDrop::Keep`] at create). The handle
    /// stays the owner — the lock of its companion file held, so [`remove_stale`] refuses —
    /// until it is dropped; then the set is ownerless. Remove it later with [`remove`] or
    /// [`remove_stale`].
    pub fn persist(&mut self) {
        if let Some(o) = &mut self.owner {
            o.on_drop = OnDrop::Keep;
        }
    }

    fn name(&self) -> String {
        id_name(self.id)
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
    /// `SIGSTOP`/`SIGCONT`, is retried with the time left, measured on the monotonic clock.
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

    /// The guard that gives back what `ops` took.
    pub(crate) fn guard(&self, ops: &[SemOp]) -> SetGuard<'_> {
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

    /// The index as the kernel takes it: below `len`, and within `sem_num`'s `u16`.
    fn check(&self, index: usize) -> Result<u16> {
        u16::try_from(index)
            .ok()
            .filter(|_| index < self.len)
            .ok_or(Error::IndexOutOfRange {
                index,
                len: self.len,
            })
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
        const EMPTY: libc::sembuf = libc::sembuf {
            sem_num: 0,
            sem_op: 0,
            sem_flg: 0,
        };
        let mut small = [EMPTY; 4];
        let mut big = Vec::new();
        let bufs: &mut [libc::sembuf] = if ops.len() <= small.len() {
            &mut small[..ops.len()]
        } else {
            big.resize(ops.len(), EMPTY);
            &mut big
        };
        for (b, o) in bufs.iter_mut().zip(ops) {
            b.sem_num = self.check(o.index)?;
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
            libc::EINVAL | libc::EIDRM => Error::Removed { name: self.name() },
            libc::EACCES | libc::EPERM => Error::PermissionDenied { name: self.name() },
            e => Error::errno(e),
        }
    }

    /// `semctl(GETVAL)`—The value of semaphore `index`.
    ///
    /// # Errors
    /// [`Error::IndexOutOfRange`] before any syscall; [`Error::Removed`].
    #[doc(alias = "GETVAL")]
    pub fn value(&self, index: usize) -> Result<u16> {
        let i = self.check(index)?;
        sys::semctl_get(self.id, i32::from(i), libc::GETVAL)
            .map(|v| u16::try_from(v).unwrap_or(u16::MAX))
            .map_err(|e| stat_error(e, self.id))
    }

    /// `semctl(SETVAL)`—Sets semaphore `index` to `value` (clearing every process's undo
    /// entries for it, as the kernel does).
    ///
    /// # Errors
    /// [`Error::IndexOutOfRange`], [`Error::ValueTooLarge`] before any syscall;
    /// [`Error::Removed`].
    #[doc(alias = "SETVAL")]
    pub fn set_value(&self, index: usize, value: u16) -> Result<()> {
        let i = self.check(index)?;
        if value > SEMVMX {
            return Err(Error::ValueTooLarge {
                value: u64::from(value),
                max: u64::from(SEMVMX),
            });
        }
        sys::semctl_setval(self.id, i32::from(i), i32::from(value))
            .map_err(|e| stat_error(e, self.id))
    }

    /// `semctl(GETALL)`—All values, in index order.
    ///
    /// # Errors
    /// [`Error::Removed`].
    #[doc(alias = "GETALL")]
    pub fn values(&self) -> Result<Vec<u16>> {
        self.check_still_ours()?;
        let mut v = vec![0u16; self.len];
        sys::semctl_getall(self.id, &mut v).map_err(|e| stat_error(e, self.id))?;
        Ok(v)
    }

    /// `GETALL` and `SETALL` move as many values as the set *now under this id* has: if ours
    /// was removed and its id given to a larger set (ids come back after 65536 creations in
    /// the namespace), they would write or read past our buffer. Refuse a set of another size
    /// first (`IPC_STAT`); what is left is a window of microseconds that 65536 creations would
    /// have to fall into.
    fn check_still_ours(&self) -> Result<()> {
        let st = sys::semctl_stat(self.id).map_err(|e| stat_error(e, self.id))?;
        if st.nsems == self.len {
            Ok(())
        } else {
            Err(Error::Removed { name: self.name() })
        }
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
        self.check_still_ours()?;
        sys::semctl_setall(self.id, values).map_err(|e| stat_error(e, self.id))
    }

    /// `semctl(GETNCNT)`—How many processes wait for semaphore `index` to increase.
    ///
    /// # Errors
    /// [`Error::IndexOutOfRange`]; [`Error::Removed`].
    #[doc(alias = "GETNCNT")]
    pub fn waiters(&self, index: usize) -> Result<usize> {
        let i = self.check(index)?;
        sys::semctl_get(self.id, i32::from(i), libc::GETNCNT)
            .map(|v| usize::try_from(v).unwrap_or(0))
            .map_err(|e| stat_error(e, self.id))
    }

    /// `semctl(IPC_SET)`—Changes the permission bits.
    ///
    /// # Errors
    /// [`Error::InvalidMode`] for bits outside `0o777` (nothing changed);
    /// [`Error::PermissionDenied`] unless we own or created the set; [`Error::Removed`].
    pub fn set_mode(&self, mode: u32) -> Result<()> {
        check_mode(mode)?;
        sys::semctl_set_mode(self.id, mode).map_err(|e| stat_error(e, self.id))
    }

    /// `semctl(IPC_RMID)`—Removes the set now (waiters get [`Error::Removed`]) and its
    /// companion file. Only the owner may: an opener gets [`Error::NotOwner`] and removes
    /// nothing (remove a set you did not create with [`remove`] or
    /// [`remove_stale`]).
    ///
    /// # Errors
    /// [`Error::NotOwner`]; [`Error::PermissionDenied`]; [`Error::Removed`] if it is gone
    /// already.
    #[doc(alias = "IPC_RMID")]
    pub fn remove(mut self) -> Result<()> {
        if !self.is_owner() {
            return Err(Error::NotOwner { name: self.name() });
        }
        match self.owner.take() {
            Some(o) if o.pid == std::process::id() => {
                // A replaced companion means our set is gone and the id names another one now.
                let same = rustix::fs::statat(CWD, o.path.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)
                    .map_or(true, |st| Ident::from_stat(&st) == o.ident);
                if !same {
                    return Err(Error::Removed { name: self.name() });
                }
                let r = sys::semctl_rmid(self.id).map_err(|e| stat_error(e, self.id));
                if matches!(r, Ok(()) | Err(Error::Removed { .. })) {
                    let _ = file::unlink_if(&o.path, o.ident);
                }
                r
            }
            _ => remove(self.id),
        }
    }
}

/// Translates the errors of `semctl` on an open set.
fn stat_error(e: std::io::Error, id: i32) -> Error {
    match e.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::EIDRM) => Error::Removed { name: id_name(id) },
        _ => Error::named(e, || id_name(id)),
    }
}

impl Drop for SemSet {
    fn drop(&mut self) {
        if !self.removes_on_drop() {
            return;
        }
        let Some(o) = &self.owner else { return };
        // If our companion was replaced, the set we made is gone and its id names someone
        // else's set now: leave it alone.
        match file::unlink_if(&o.path, o.ident) {
            Ok(Unlinked::Replaced) => {}
            _ => {
                let _ = sys::semctl_rmid(self.id);
            }
        }
        // Then the companion's descriptor closes (the lock goes with the last copy).
    }
}

/// `semctl(IPC_RMID)`—Removes a set by id, whoever made it (explicit clean-up), and its
/// companion file if no live owner holds it. Prefer [`remove_stale`], which spares live owners.
///
/// # Errors
/// [`Error::NotFound`] if no such set exists; [`Error::PermissionDenied`].
#[doc(alias = "IPC_RMID")]
pub fn remove(id: i32) -> Result<()> {
    sys::semctl_rmid(id).map_err(|e| match e.raw_os_error() {
        Some(libc::EINVAL | libc::EIDRM) => Error::NotFound { name: id_name(id) },
        _ => Error::named(e, || id_name(id)),
    })?;
    remove_free_companion(id);
    Ok(())
}

/// How long a set may stay "being created" (no companion, never operated on) before
/// [`remove_stale`] treats it as stale: its creator needs microseconds between `semget` and
/// the companion.
const CREATION_GRACE_SECS: i64 = 10;

/// Removes the set under `key` only if its owner is dead: no live process holds the lock of its
/// companion file (the creator was killed, is a zombie, or dropped it with [`OnDrop::Keep`]), or
/// it has no companion (made by a program that does not use this crate).
///
/// A set with no companion that was never operated on and was created less than ten seconds
/// ago is taken to be in the middle of its creation ([`Error::OwnerAlive`]): its creator makes
/// the companion right after `semget`.
///
/// # Errors
/// [`Error::NotFound`] (also for [`Key::PRIVATE`], which names no set); [`Error::OwnerAlive`];
/// [`Error::PermissionDenied`].
pub fn remove_stale(key: Key) -> Result<()> {
    if key == Key::PRIVATE {
        return Err(Error::NotFound { name: key.name() });
    }
    let id = sys::semget(key.as_raw(), 0, 0).map_err(|e| Error::named(e, || key.name()))?;
    let gone = |e: std::io::Error| match e.raw_os_error() {
        Some(libc::EINVAL | libc::EIDRM) => Error::NotFound { name: key.name() },
        _ => Error::named(e, || key.name()),
    };
    let st = sys::semctl_stat(id).map_err(gone)?;
    let path = companion_path(id);
    let companion = rustix::fs::open(
        path.as_c_str(),
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    );
    match &companion {
        Ok(fd) => {
            if file::owner_alive(fd.as_fd())? {
                return Err(Error::OwnerAlive { name: key.name() });
            }
        }
        // Something we may not open (another user's file, say) might be a live owner's.
        Err(e) if !matches!(*e, Errno::NOENT | Errno::LOOP) => {
            return Err(Error::named((*e).into(), || {
                format!("the owner file of {}", key.name())
            }));
        }
        // No companion (or a symbolic link, which holds no lock): no owner lock.
        Err(_) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            if st.otime == 0 && now.saturating_sub(st.ctime) < CREATION_GRACE_SECS {
                return Err(Error::OwnerAlive { name: key.name() });
            }
        }
    }
    sys::semctl_rmid(id).map_err(gone)?;
    if let Ok(fd) = companion {
        if let Ok(ident) = Ident::of(fd.as_fd()) {
            let _ = file::unlink_if(&path, ident);
        }
    }
    Ok(())
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
