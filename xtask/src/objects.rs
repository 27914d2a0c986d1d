//! The kernel's IPC objects that belong to this workspace: finding, diffing and removing them.
//!
//! Everything the workspace's tests, demos and benches create carries the prefix `ipcrs`
//! (`ipc_testkit::PREFIX`): POSIX shared memory and named semaphores in `/dev/shm`
//! (`ipcrs-*`, `sem.ipcrs-*`), POSIX message queues (`/ipcrs-*`), FIFO directories in the temp
//! dir (`ipcrs-*`). System V objects have no names; the workspace's keys are `0x4950xxxx`, and
//! `IPC_PRIVATE` objects are recognised only by being new (see `Snapshot::leaks_since`).
//!
//! This file is compiled twice: into xtask (clean, the leak check around `cargo xtask test`) and,
//! through `#[path]`, into `ipc-testkit` (the leak checks of the cross-crate scenarios). It uses
//! std only, so xtask stays free of ipc-* dependencies.

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;
use std::process::Command;

/// Errors are messages for the user.
pub type Result<T = ()> = std::result::Result<T, String>;

/// The name prefix of the workspace's objects.
pub const PREFIX: &str = "ipcrs";
/// The upper 16 bits of the workspace's System V keys.
const SYSV_KEY_BASE: u32 = 0x4950;

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

impl SysV {
    fn ours(&self) -> bool {
        (self.key as u32) >> 16 == SYSV_KEY_BASE
    }
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
    /// Directories and files with the prefix (FIFO places) in the temp dir and in
    /// `$XDG_RUNTIME_DIR`, as full paths.
    pub tmp: BTreeSet<String>,
}

impl Snapshot {
    /// Reads the kernel's tables now.
    pub fn take() -> Snapshot {
        Snapshot {
            shm: prefixed_entries(&PathBuf::from("/dev/shm")),
            mq: list_mqueues().ok(),
            sysv: sysv_objects(),
            tmp: place_dirs()
                .iter()
                .flat_map(|d| prefixed_entries(d).into_iter().map(|e| d.join(e)))
                .map(|p| p.display().to_string())
                .collect(),
        }
    }

    /// What exists now that did not exist at `before`: every prefixed name, and every new
    /// System V object (ours by key, or IPC_PRIVATE created since).
    pub fn leaks_since(&self, before: &Snapshot) -> Vec<String> {
        let mut out = Vec::new();
        for s in self.shm.difference(&before.shm) {
            out.push(format!("/dev/shm/{s}"));
        }
        if let (Some(now), Some(then)) = (&self.mq, &before.mq) {
            for q in now.difference(then) {
                out.push(format!("POSIX message queue /{q}"));
            }
        }
        for o in self.sysv.difference(&before.sysv) {
            if o.ours() || o.key == 0 {
                out.push(format!("System V {} key {:#x} id {}", o.kind, o.key, o.id));
            }
        }
        for t in self.tmp.difference(&before.tmp) {
            out.push(t.clone());
        }
        out
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

fn prefixed_entries(dir: &PathBuf) -> BTreeSet<String> {
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

fn sysv_objects() -> BTreeSet<SysV> {
    let mut out = BTreeSet::new();
    for kind in ["msg", "sem", "shm"] {
        let Ok(text) = fs::read_to_string(format!("/proc/sysvipc/{kind}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let mut cols = line.split_whitespace();
            let (Some(key), Some(id)) = (cols.next(), cols.next()) else {
                continue;
            };
            if let (Ok(key), Ok(id)) = (key.parse(), id.parse()) {
                out.insert(SysV { kind, key, id });
            }
        }
    }
    out
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

/// The workspace's POSIX message queues (names without the leading slash).
///
/// # Errors
/// When the mqueue file system can be neither read nor mounted privately.
pub fn list_mqueues() -> Result<BTreeSet<String>> {
    let text = with_mqueue_fs("ls -1 \"$d\"")?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with(PREFIX))
        .map(str::to_owned)
        .collect())
}

/// The pid a workspace name carries: its first all-digit `-` segment (`ipcrs-{tag}-{pid}-{n}`,
/// `ipcrs-demo-{tag}-{pid}`), if any.
pub fn name_pid(name: &str) -> Option<u32> {
    name.split(['-', '.', '/'])
        .find(|seg| !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|seg| seg.parse().ok())
}

/// Whether the process a name belongs to is still running (then its object may be in use).
fn in_use(name: &str) -> bool {
    name_pid(name).is_some_and(|pid| pid != 0 && PathBuf::from(format!("/proc/{pid}")).exists())
}

/// What [`remove_all`] did.
#[derive(Debug, Default)]
pub struct Cleaned {
    /// Objects removed.
    pub removed: Vec<String>,
    /// Objects left alone because the process named in them is alive (a run in progress).
    pub kept: Vec<String>,
}

/// Removes every object of the workspace whose creating process is gone; returns what it
/// removed and what it kept because its process (the pid in the name) is still running.
/// System V objects carry no pid: every one with a workspace key is removed.
///
/// # Errors
/// When POSIX message queues cannot be listed or removed.
pub fn remove_all() -> Result<Cleaned> {
    let mut out = Cleaned::default();
    let snap = Snapshot::take();
    for s in &snap.shm {
        let p = PathBuf::from("/dev/shm").join(s);
        if in_use(s) {
            out.kept.push(p.display().to_string());
        } else if fs::remove_file(&p).is_ok() {
            out.removed.push(p.display().to_string());
        }
    }
    if let Some(queues) = &snap.mq {
        let (busy, stale): (Vec<&String>, Vec<&String>) = queues.iter().partition(|q| in_use(q));
        out.kept
            .extend(busy.iter().map(|q| format!("POSIX message queue /{q}")));
        if !stale.is_empty() {
            let names: Vec<String> = stale.iter().map(|q| format!("\"$d/{q}\"")).collect();
            with_mqueue_fs(&format!("rm -f {}", names.join(" ")))?;
            out.removed
                .extend(stale.iter().map(|q| format!("POSIX message queue /{q}")));
        }
    }
    for o in snap.sysv.iter().filter(|o| o.ours()) {
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
            out.removed
                .push(format!("System V {} key {:#x} id {}", o.kind, o.key, o.id));
        }
    }
    for t in &snap.tmp {
        let p = PathBuf::from(t);
        if p.file_name().is_some_and(|n| in_use(&n.to_string_lossy())) {
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
    use super::name_pid;

    #[test]
    fn the_pid_is_the_first_numeric_segment() {
        assert_eq!(name_pid("ipcrs-t-1234-7"), Some(1234));
        assert_eq!(name_pid("sem.ipcrs-demo-x-99"), Some(99));
        assert_eq!(name_pid("ipcrs-bench-a2b-31200"), Some(31200));
        assert_eq!(name_pid("ipcrs-dir"), None);
    }
}
