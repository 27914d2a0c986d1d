//! The kernel's IPC objects that belong to this workspace: finding, diffing and removing them.
//!
//! Everything the workspace's tests, demos and benches create carries the prefix `ipcrs`
//! (`ipc_testkit::PREFIX`): POSIX shared memory and named semaphores in `/dev/shm`
//! (`ipcrs-*`, `sem.ipcrs-*`), POSIX message queues (`/ipcrs-*`), FIFO directories in the temp
//! dir (`ipcrs-*`). System V objects have no names; the workspace's keys are `0x4950xxxx`, and
//! `IPC_PRIVATE` objects are recognised only by being new (see `Snapshot::leaks_since`).
//!
//! Whether an object is still in use follows the crates' lifetime model (ARCHITECTURE.md): its
//! owner holds an open-file-description lock on one byte at `OWNER_LOCK` of the object's file
//! (a FIFO's: its directory, at the FIFO's inode number; a System V object's: its companion file
//! `/dev/shm/ipc-sysv-{kind}-{id}.owner`), and the kernel drops the lock however the owner dies.
//! The locks are read from `/proc/locks`, so this needs std only. An object without an owner
//! lock (made by raw system calls, as the benches' baselines do) counts as in use only while the
//! process whose pid its name carries is running and is not a zombie.
//!
//! This file is compiled twice: into xtask (clean, the leak check around `cargo xtask test`) and,
//! through `#[path]`, into `ipc-testkit` (the leak checks of the cross-crate scenarios). It uses
//! std only, so xtask stays free of ipc-* dependencies.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Errors are messages for the user.
pub type Result<T = ()> = std::result::Result<T, String>;

/// The name prefix of the workspace's objects.
pub const PREFIX: &str = "ipcrs";
/// The upper 16 bits of the workspace's System V keys.
const SYSV_KEY_BASE: u32 = 0x4950;
/// The byte an owner locks (ARCHITECTURE.md, "The lifetime model").
pub const OWNER_LOCK: u64 = 0x7fff_ffff_ffff_fffe;
/// Where System V owners keep their companion files, and their name's prefix and suffix.
const SYSV_OWNER_DIR: &str = "/dev/shm";
const SYSV_OWNER_PREFIX: &str = "ipc-sysv-";
const SYSV_OWNER_SUFFIX: &str = ".owner";

/// A System V object: kind (`msg`, `sem`, `shm`), key, id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SysV {
    /// `msg`, `sem` or `shm`.
    pub kind: &'static str,
    /// The key (0 for `IPC_PRIVATE`).
    pub key: i64,
    /// The identifier `ipcrm` takes.
    pub id: i64,
}

/// How long a System V object without a companion file counts as being created: its creator
/// makes the companion microseconds after `semget`/`msgget`/`shmget`, and the crates'
/// `sysv::remove_stale` grants it the same grace.
const CREATION_GRACE_SECS: i64 = 10;

impl SysV {
    fn ours(&self) -> bool {
        (self.key as u32) >> 16 == SYSV_KEY_BASE
    }

    /// The companion file whose lock says that its owner lives.
    fn companion(&self) -> PathBuf {
        companion_path(self.kind, self.id)
    }
}

impl std::fmt::Display for SysV {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "System V {} key {:#x} id {}",
            self.kind, self.key, self.id
        )
    }
}

fn companion_path(kind: &str, id: i64) -> PathBuf {
    Path::new(SYSV_OWNER_DIR).join(format!("{SYSV_OWNER_PREFIX}{kind}-{id}{SYSV_OWNER_SUFFIX}"))
}

/// The `(kind, id)` a companion file name stands for.
fn parse_companion(name: &str) -> Option<(&str, i64)> {
    let rest = name
        .strip_prefix(SYSV_OWNER_PREFIX)?
        .strip_suffix(SYSV_OWNER_SUFFIX)?;
    let (kind, id) = rest.split_once('-')?;
    matches!(kind, "msg" | "sem" | "shm")
        .then_some(())
        .and(id.parse().ok().map(|id| (kind, id)))
}

/// One open-file-description lock from `/proc/locks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lock {
    major: u64,
    minor: u64,
    ino: u64,
    start: u64,
    /// `None`: to the end of the file.
    end: Option<u64>,
}

/// The system's open-file-description locks, read once.
#[derive(Debug, Default)]
pub struct Locks(Vec<Lock>);

impl Locks {
    /// Reads `/proc/locks` (empty if it cannot be read).
    pub fn read() -> Locks {
        Locks::parse(&fs::read_to_string("/proc/locks").unwrap_or_default())
    }

    /// `1: OFDLCK ADVISORY  READ -1 00:1b:162 9223372036854775806 9223372036854775806`; the
    /// `->` lines of blocked waiters and every other kind of lock are skipped.
    fn parse(text: &str) -> Locks {
        let mut out = Vec::new();
        for line in text.lines() {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.get(1) != Some(&"OFDLCK") || cols.len() < 8 {
                continue;
            }
            let mut dev = cols[5].split(':');
            let (Some(major), Some(minor), Some(ino)) = (dev.next(), dev.next(), dev.next()) else {
                continue;
            };
            let (Ok(major), Ok(minor), Ok(ino), Ok(start)) = (
                u64::from_str_radix(major, 16),
                u64::from_str_radix(minor, 16),
                ino.parse(),
                cols[6].parse(),
            ) else {
                continue;
            };
            let end = cols[7].parse().ok();
            out.push(Lock {
                major,
                minor,
                ino,
                start,
                end,
            });
        }
        Locks(out)
    }

    fn on(&self, dev: u64, ino: u64) -> impl Iterator<Item = &Lock> {
        let (major, minor) = split_dev(dev);
        self.0
            .iter()
            .filter(move |l| l.major == major && l.minor == minor && l.ino == ino)
    }

    /// Whether a lock on the file `(dev, ino)` covers byte `at`.
    fn covers(&self, dev: u64, ino: u64, at: u64) -> bool {
        self.on(dev, ino)
            .any(|l| l.start <= at && l.end.is_none_or(|e| at <= e))
    }

    /// Whether the file at `path` (not followed if a symlink) carries an owner's lock.
    pub fn owner_holds(&self, path: &Path) -> bool {
        fs::symlink_metadata(path).is_ok_and(|m| self.covers(m.dev(), m.ino(), OWNER_LOCK))
    }

    /// Whether a directory is in use: its owner's lock, or the lock of an owner of a FIFO in it.
    fn dir_in_use(&self, dir: &Path) -> bool {
        fs::symlink_metadata(dir).is_ok_and(|m| self.on(m.dev(), m.ino()).next().is_some())
    }

    /// Whether the owner of the FIFO at `path` lives: a lock on its directory at its inode.
    fn fifo_owner_holds(&self, path: &Path) -> bool {
        let (Ok(f), Some(Ok(d))) = (
            fs::symlink_metadata(path),
            path.parent().map(fs::symlink_metadata),
        ) else {
            return false;
        };
        self.covers(d.dev(), d.ino(), f.ino() & (i64::MAX as u64))
    }
}

/// Linux's `major(dev)`, `minor(dev)`.
fn split_dev(dev: u64) -> (u64, u64) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major, minor)
}

/// A POSIX message queue: its name (no slash) and, where it could be read, `(dev, ino)`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Queue {
    /// The name without the leading slash.
    pub name: String,
    inode: Option<(u64, u64)>,
}

/// What exists now.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Entries of /dev/shm with the prefix (shm segments, `sem.` named semaphores).
    pub shm: BTreeSet<String>,
    /// POSIX message queues with the prefix, or `None` when queues cannot be listed here.
    pub mq: Option<BTreeSet<String>>,
    /// Every System V object.
    pub sysv: BTreeSet<SysV>,
    /// System V owners' companion files in /dev/shm (names), ours or anyone's.
    pub companions: BTreeSet<String>,
    /// Directories and files with the prefix (FIFO places) in the temp dir and in
    /// `$XDG_RUNTIME_DIR`, as full paths.
    pub tmp: BTreeSet<String>,
    queues: BTreeMap<String, Queue>,
}

impl Snapshot {
    /// Reads the kernel's tables now.
    pub fn take() -> Snapshot {
        let queues = list_queues().ok();
        Snapshot {
            shm: prefixed_entries(Path::new("/dev/shm")),
            mq: queues
                .as_ref()
                .map(|q| q.iter().map(|q| q.name.clone()).collect()),
            sysv: sysv_objects(),
            companions: companions(),
            tmp: place_dirs()
                .iter()
                .flat_map(|d| prefixed_entries(d).into_iter().map(|e| d.join(e)))
                .map(|p| p.display().to_string())
                .collect(),
            queues: queues
                .unwrap_or_default()
                .into_iter()
                .map(|q| (q.name.clone(), q))
                .collect(),
        }
    }

    /// What exists now that did not exist at `before`: every prefixed name, every companion
    /// file, and every new System V object (ours by key, or IPC_PRIVATE created since) — except
    /// what another live process is still using (its owner's lock is held, or the pid its name
    /// carries is running and is not this process): a run beside this one is not a leak of
    /// this one.
    pub fn leaks_since(&self, before: &Snapshot) -> Vec<String> {
        let locks = Locks::read();
        let me = std::process::id();
        let others = |name: &str| name_pid(name).is_some_and(|p| p != me && pid_alive(p));
        let mut out = Vec::new();
        for s in self.shm.difference(&before.shm) {
            let p = Path::new("/dev/shm").join(s);
            if !locks.owner_holds(&p) && !others(s) {
                out.push(p.display().to_string());
            }
        }
        if let (Some(now), Some(then)) = (&self.mq, &before.mq) {
            for q in now.difference(then) {
                if !self.queue_locked(&locks, q) && !others(q) {
                    out.push(format!("POSIX message queue /{q}"));
                }
            }
        }
        for o in self.sysv.difference(&before.sysv) {
            if (o.ours() || o.key == 0) && !locks.owner_holds(&o.companion()) {
                out.push(o.to_string());
            }
        }
        for c in self.companions.difference(&before.companions) {
            let p = Path::new(SYSV_OWNER_DIR).join(c);
            if !locks.owner_holds(&p) {
                out.push(p.display().to_string());
            }
        }
        for t in self.tmp.difference(&before.tmp) {
            let p = Path::new(t);
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            if !tmp_locked(&locks, p) && !name.is_some_and(|n| others(&n)) {
                out.push(t.clone());
            }
        }
        out
    }

    fn queue_locked(&self, locks: &Locks, name: &str) -> bool {
        self.queues
            .get(name)
            .and_then(|q| q.inode)
            .is_some_and(|(dev, ino)| locks.covers(dev, ino, OWNER_LOCK))
    }
}

/// Whether a temp-dir entry (a FIFO directory, or a FIFO) has a live owner.
fn tmp_locked(locks: &Locks, p: &Path) -> bool {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => locks.dir_in_use(p),
        Ok(m) if m.file_type().is_fifo() => locks.fifo_owner_holds(p),
        _ => false,
    }
}

/// Where the workspace's FIFO directories may be: the temp dir and `$XDG_RUNTIME_DIR`.
fn place_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![std::env::temp_dir()];
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        if x.is_absolute() && !dirs.contains(&x) {
            dirs.push(x);
        }
    }
    dirs
}

fn prefixed_entries(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(PREFIX) || name.starts_with(&format!("sem.{PREFIX}")) {
                out.insert(name);
            }
        }
    }
    out
}

fn companions() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if let Ok(entries) = fs::read_dir(SYSV_OWNER_DIR) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if parse_companion(&name).is_some() {
                out.insert(name);
            }
        }
    }
    out
}

fn sysv_objects() -> BTreeSet<SysV> {
    sysv_table().into_iter().map(|(o, _)| o).collect()
}

/// Every System V object with its `ctime` (creation, or the last change of its permissions).
fn sysv_table() -> Vec<(SysV, i64)> {
    let mut out = Vec::new();
    for kind in ["msg", "sem", "shm"] {
        let Ok(text) = fs::read_to_string(format!("/proc/sysvipc/{kind}")) else {
            continue;
        };
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
        let ctime_col = header.iter().position(|h| *h == "ctime");
        for line in lines {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(key), Some(id)) = (cols.first(), cols.get(1)) else {
                continue;
            };
            let ctime = ctime_col
                .and_then(|c| cols.get(c))
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            if let (Ok(key), Ok(id)) = (key.parse(), id.parse()) {
                out.push((SysV { kind, key, id }, ctime));
            }
        }
    }
    out
}

/// Whether a System V object without a companion file may still be being created.
fn just_created(ctime: i64) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    now.saturating_sub(ctime) < CREATION_GRACE_SECS
}

/// A shell snippet run with the mqueue file system mounted at `$d`.
///
/// `/dev/mqueue` is not mounted on every machine, so a private mount namespace (`unshare
/// --mount`, root) mounts the queue file system of *our* IPC namespace where nobody else sees it.
fn with_mqueue_fs(script: &str) -> Result<String> {
    let mounted = fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/dev/mqueue"));
    let out = if mounted {
        Command::new("sh")
            .args(["-c", &format!("d=/dev/mqueue; {script}")])
            .output()
    } else {
        Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                &format!(
                    "d=$(mktemp -d) && mount -t mqueue none \"$d\" && {{ {script} ; }}; \
                     r=$?; umount \"$d\" 2>/dev/null; rmdir \"$d\"; exit $r"
                ),
            ])
            .output()
    };
    let out = out.map_err(|e| format!("cannot list POSIX message queues: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "cannot list POSIX message queues: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The workspace's POSIX message queues, with the device and inode of each (so that an owner's
/// lock on it can be found in `/proc/locks`).
fn list_queues() -> Result<Vec<Queue>> {
    // `%D` is the device in hex, `%i` the inode; a name has no newline (it has no slash either).
    let text = with_mqueue_fs(&format!(
        "for f in \"$d\"/{PREFIX}*; do [ -e \"$f\" ] && stat -c '%D %i %n' \"$f\"; done; true"
    ))?;
    let mut out = Vec::new();
    for line in text.lines() {
        let mut cols = line.splitn(3, ' ');
        let (Some(dev), Some(ino), Some(path)) = (cols.next(), cols.next(), cols.next()) else {
            continue;
        };
        let Some(name) = path.rsplit('/').next() else {
            continue;
        };
        let inode = u64::from_str_radix(dev, 16).ok().zip(ino.parse().ok());
        out.push(Queue {
            name: name.to_owned(),
            inode,
        });
    }
    Ok(out)
}

/// The pid a workspace name carries: its first all-digit `-` segment (`ipcrs-{tag}-{pid}-{n}`,
/// `ipcrs-demo-{tag}-{pid}`), if any.
pub fn name_pid(name: &str) -> Option<u32> {
    name.split(['-', '.', '/'])
        .find(|seg| !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|seg| seg.parse().ok())
}

/// Whether process `pid` is running: it exists and is not a zombie (a zombie holds nothing).
pub fn pid_alive(pid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which may contain spaces and parentheses.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, Some("Z" | "X") | None)
}

/// Whether a named object without an owner lock may be in use: the process its name carries.
fn name_in_use(name: &str) -> bool {
    name_pid(name).is_some_and(pid_alive)
}

/// What [`remove_all`] did.
#[derive(Debug, Default)]
pub struct Cleaned {
    /// Objects removed.
    pub removed: Vec<String>,
    /// Objects left alone because their owner (or the process named in them) is alive.
    pub kept: Vec<String>,
}

/// Removes every object of the workspace that no live process owns; returns what it removed
/// and what it kept.
///
/// An object is kept while its owner holds its lock (ARCHITECTURE.md, "The lifetime model");
/// one without an owner lock is kept while the process whose pid its name carries is running
/// and is not a zombie. System V objects carry no pid: one with a workspace key is removed unless
/// its companion file is locked, or it has no companion yet and was made less than
/// `CREATION_GRACE_SECS` ago (its creator is between `semget` and the companion). A companion
/// file whose System V object is gone is removed too (whoever's it was), unless it is locked.
///
/// # Errors
/// When POSIX message queues cannot be listed or removed.
pub fn remove_all() -> Result<Cleaned> {
    let mut all = remove_all_once()?;
    // A process killed a moment ago may still show its locks for a little while (its last
    // descriptors are released just after it is seen to end, and a child it was spawning holds
    // copies until exec): look again, briefly, before calling such an owner alive.
    for _ in 0..4 {
        if all.kept.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
        let again = remove_all_once()?;
        all.removed.extend(again.removed);
        all.kept = again.kept;
    }
    Ok(all)
}

fn remove_all_once() -> Result<Cleaned> {
    let mut out = Cleaned::default();
    let snap = Snapshot::take();
    let locks = Locks::read();
    for s in &snap.shm {
        let p = Path::new("/dev/shm").join(s);
        if locks.owner_holds(&p) || name_in_use(s) {
            out.kept.push(p.display().to_string());
        } else if fs::remove_file(&p).is_ok() {
            out.removed.push(p.display().to_string());
        }
    }
    if let Some(queues) = &snap.mq {
        let (busy, stale): (Vec<&String>, Vec<&String>) = queues
            .iter()
            .partition(|q| snap.queue_locked(&locks, q) || name_in_use(q));
        out.kept
            .extend(busy.iter().map(|q| format!("POSIX message queue /{q}")));
        if !stale.is_empty() {
            let names: Vec<String> = stale.iter().map(|q| format!("\"$d/{q}\"")).collect();
            with_mqueue_fs(&format!("rm -f {}", names.join(" ")))?;
            out.removed
                .extend(stale.iter().map(|q| format!("POSIX message queue /{q}")));
        }
    }
    let ctimes: BTreeMap<SysV, i64> = sysv_table().into_iter().collect();
    for o in snap.sysv.iter().filter(|o| o.ours()) {
        let companion = o.companion();
        let being_created = !companion.exists() && ctimes.get(o).is_some_and(|&t| just_created(t));
        if locks.owner_holds(&companion) || being_created {
            out.kept.push(o.to_string());
            continue;
        }
        let flag = match o.kind {
            "msg" => "-q",
            "sem" => "-s",
            _ => "-m",
        };
        let ok = Command::new("ipcrm")
            .args([flag, &o.id.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            out.removed.push(o.to_string());
            let _ = fs::remove_file(o.companion());
        }
    }
    let alive: BTreeSet<(&str, i64)> = sysv_objects().into_iter().map(|o| (o.kind, o.id)).collect();
    for c in &snap.companions {
        let p = Path::new(SYSV_OWNER_DIR).join(c);
        let Some((kind, id)) = parse_companion(c) else {
            continue;
        };
        let gone = !alive.iter().any(|&(k, i)| k == kind && i == id);
        if gone && !locks.owner_holds(&p) && fs::remove_file(&p).is_ok() {
            out.removed.push(p.display().to_string());
        }
    }
    for t in &snap.tmp {
        let p = PathBuf::from(t);
        let named_alive = p
            .file_name()
            .is_some_and(|n| name_in_use(&n.to_string_lossy()));
        if tmp_locked(&locks, &p) || named_alive {
            out.kept.push(p.display().to_string());
            continue;
        }
        let res = if p.is_dir() {
            fs::remove_dir_all(&p)
        } else {
            fs::remove_file(&p)
        };
        if res.is_ok() {
            out.removed.push(p.display().to_string());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::{Locks, name_pid, parse_companion, split_dev};

    #[test]
    fn the_pid_is_the_first_numeric_segment() {
        assert_eq!(name_pid("ipcrs-t-1234-7"), Some(1234));
        assert_eq!(name_pid("sem.ipcrs-demo-x-99"), Some(99));
        assert_eq!(name_pid("ipcrs-bench-a2b-31200"), Some(31200));
        assert_eq!(name_pid("ipcrs-dir"), None);
    }

    #[test]
    fn proc_locks_lines_are_parsed() {
        let l = Locks::parse(
            "1: OFDLCK ADVISORY  READ -1 00:1b:162 9223372036854775806 9223372036854775806\n\
             2: POSIX  ADVISORY  WRITE 77 00:1b:163 0 EOF\n\
             2: -> OFDLCK ADVISORY  WRITE -1 00:1b:162 0 EOF\n\
             3: OFDLCK ADVISORY  READ -1 fe:00:246951 12345 EOF\n",
        );
        assert_eq!(l.0.len(), 2);
        let shm_dev = 0x1b; // major 0, minor 0x1b
        assert!(l.covers(shm_dev, 162, super::OWNER_LOCK));
        assert!(!l.covers(shm_dev, 162, 0));
        assert!(
            !l.covers(shm_dev, 163, super::OWNER_LOCK),
            "POSIX locks are not owners'"
        );
        assert_eq!(split_dev(0xfe00), (0xfe, 0));
        assert!(l.covers(0xfe00, 246951, 12345) && l.covers(0xfe00, 246951, u64::MAX));
    }

    #[test]
    fn companion_names_are_parsed() {
        assert_eq!(
            parse_companion("ipc-sysv-sem-32769.owner"),
            Some(("sem", 32769))
        );
        assert_eq!(parse_companion("ipc-sysv-foo-1.owner"), None);
        assert_eq!(parse_companion("ipc-sysv-msg-x.owner"), None);
    }
}
