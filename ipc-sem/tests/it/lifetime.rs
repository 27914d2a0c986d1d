//! The lifetime model, for every kind of named object of the crate (named semaphore, named
//! mutex, System V set), across real processes: owners and openers, `persist`, `remove`,
//! liveness through the owner lock (alive, killed, zombie, kept), identity (a name re-created by
//! someone else is never removed by the first owner), `replace_stale`, `open_or_create` races,
//! the owner check and exact modes.
#![allow(unsafe_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::process::Stdio;
use std::time::Duration;

use ipc_sem::{Error, Key, NamedMutex, NamedSemaphore, OnDrop, Opened, OwnerCheck, SemSet};
use ipc_testkit::{Proc, Watchdog, test_path};

const KIND_ENV: &str = "IPC_SEM_TEST_KIND";
const ID_ENV: &str = "IPC_SEM_TEST_OBJ";

/// The kinds of named object.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum K {
    Sem,
    Mutex,
    Set,
}

pub(crate) const KINDS: [K; 3] = [K::Sem, K::Mutex, K::Set];

/// A handle of any kind.
pub(crate) enum Obj {
    Sem(NamedSemaphore),
    Mutex(NamedMutex),
    Set(SemSet),
}

impl Obj {
    pub(crate) fn is_owner(&self) -> bool {
        match self {
            Obj::Sem(s) => s.is_owner(),
            Obj::Mutex(m) => m.is_owner(),
            Obj::Set(s) => s.is_owner(),
        }
    }

    pub(crate) fn persist(&mut self) {
        match self {
            Obj::Sem(s) => s.persist(),
            Obj::Mutex(m) => m.persist(),
            Obj::Set(s) => s.persist(),
        }
    }

    pub(crate) fn remove(self) -> Result<(), Error> {
        match self {
            Obj::Sem(s) => s.remove(),
            Obj::Mutex(m) => m.remove(),
            Obj::Set(s) => s.remove(),
        }
    }
}

impl K {
    fn from_env() -> K {
        match std::env::var(KIND_ENV).unwrap().as_str() {
            "sem" => K::Sem,
            "mutex" => K::Mutex,
            _ => K::Set,
        }
    }

    fn env(self) -> &'static str {
        match self {
            K::Sem => "sem",
            K::Mutex => "mutex",
            K::Set => "set",
        }
    }

    /// A fresh name, or a free System V key (as a decimal string).
    pub(crate) fn fresh(self) -> String {
        match self {
            K::Sem | K::Mutex => ipc_testkit::posix_name("lt"),
            K::Set => loop {
                let key = ipc_testkit::sysv_key();
                if !self.exists(&key.to_string()) {
                    break key.to_string();
                }
            },
        }
    }

    /// The key of System V set `id` (`IPC_STAT`), as a decimal string.
    pub(crate) fn key_of(self, id: i32) -> i32 {
        // SAFETY: `semid_ds` is plain data; IPC_STAT overwrites it.
        let mut ds: libc::semid_ds = unsafe { std::mem::zeroed() };
        // SAFETY: IPC_STAT writes one `semid_ds` through `union semun.buf`, valid for it.
        let rc = unsafe { libc::semctl(id, 0, libc::IPC_STAT, &mut ds as *mut libc::semid_ds) };
        assert_eq!(rc, 0);
        ds.sem_perm.__key
    }

    fn key(id: &str) -> Key {
        Key::new(id.parse().unwrap())
    }

    pub(crate) fn create_with(
        self,
        id: &str,
        on_drop: OnDrop,
        replace: bool,
        mode: u32,
    ) -> Result<Obj, Error> {
        match self {
            K::Sem => {
                let o = NamedSemaphore::options().on_drop(on_drop).mode(mode);
                let o = if replace { o.replace_stale() } else { o };
                o.create(id, 1).map(Obj::Sem)
            }
            K::Mutex => {
                let o = NamedMutex::options().on_drop(on_drop).mode(mode);
                let o = if replace { o.replace_stale() } else { o };
                o.create(id).map(Obj::Mutex)
            }
            K::Set => {
                let o = SemSet::options().on_drop(on_drop).mode(mode);
                let o = if replace { o.replace_stale() } else { o };
                o.create(K::key(id), &[1]).map(Obj::Set)
            }
        }
    }

    pub(crate) fn create(self, id: &str) -> Result<Obj, Error> {
        self.create_with(id, OnDrop::Remove, false, 0o600)
    }

    pub(crate) fn open_with(self, id: &str, check: OwnerCheck) -> Result<Obj, Error> {
        match self {
            K::Sem => NamedSemaphore::options()
                .owner_check(check)
                .open(id)
                .map(Obj::Sem),
            K::Mutex => NamedMutex::options()
                .owner_check(check)
                .open(id)
                .map(Obj::Mutex),
            K::Set => SemSet::options()
                .owner_check(check)
                .open(K::key(id))
                .map(Obj::Set),
        }
    }

    pub(crate) fn open(self, id: &str) -> Result<Obj, Error> {
        self.open_with(id, OwnerCheck::SameUid)
    }

    pub(crate) fn open_or_create(self, id: &str) -> Result<(Obj, Opened), Error> {
        match self {
            K::Sem => NamedSemaphore::open_or_create(id, 1).map(|(s, o)| (Obj::Sem(s), o)),
            K::Mutex => NamedMutex::open_or_create(id).map(|(m, o)| (Obj::Mutex(m), o)),
            K::Set => SemSet::open_or_create(K::key(id), &[1]).map(|(s, o)| (Obj::Set(s), o)),
        }
    }

    pub(crate) fn remove_stale(self, id: &str) -> Result<(), Error> {
        match self {
            K::Sem => ipc_sem::remove_stale(id),
            K::Mutex => NamedMutex::remove_stale(id),
            K::Set => ipc_sem::sysv::remove_stale(K::key(id)),
        }
    }

    /// Removes whatever is under the name or key, as an unrelated clean-up would.
    pub(crate) fn unlink(self, id: &str) -> Result<(), Error> {
        match self {
            K::Sem => ipc_sem::unlink(id),
            K::Mutex => NamedMutex::unlink(id),
            K::Set => {
                let set = SemSet::options()
                    .owner_check(OwnerCheck::AnyUid)
                    .open(K::key(id))?;
                ipc_sem::sysv::remove(set.id())
            }
        }
    }

    /// Which object the name refers to now: the file's inode, or the set's id.
    pub(crate) fn ident(self, id: &str) -> Option<u64> {
        match self {
            K::Sem => std::fs::symlink_metadata(format!("/dev/shm/sem.{}", &id[1..]))
                .ok()
                .map(|m| m.ino()),
            K::Mutex => std::fs::symlink_metadata(format!("/dev/shm/{}", &id[1..]))
                .ok()
                .map(|m| m.ino()),
            K::Set => {
                // SAFETY: plain integer arguments.
                let set = unsafe { libc::semget(id.parse().unwrap(), 0, 0) };
                (set >= 0).then_some(set as u64)
            }
        }
    }

    pub(crate) fn exists(self, id: &str) -> bool {
        self.ident(id).is_some()
    }
}

/// `remove_stale` of an object whose owner this process just dropped. Other tests of this
/// harness fork and spawn children all the time, and a child holds copies of every descriptor
/// of ours until it execs or exits, the dropped owner's among them: for that moment the owner is
/// alive, as documented. So retry `OwnerAlive` for a bounded while.
pub(crate) fn stale_soon(kind: K, id: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match kind.remove_stale(id) {
            Err(Error::OwnerAlive { .. }) if std::time::Instant::now() < deadline => {
                std::thread::yield_now();
            }
            r => {
                r.unwrap_or_else(|e| panic!("{kind:?}: {e}"));
                return;
            }
        }
    }
}

/// A child that creates `id` of `kind` (with `on_drop`), says "ready" on stdout, then holds
/// it until its stdin closes (or until it is killed); with `Keep` it exits at once instead.
fn holder_role() {
    let kind = K::from_env();
    let id = std::env::var(ID_ENV).unwrap();
    let keep = ipc_testkit::role().as_deref() == Some("keeper");
    let on_drop = if keep { OnDrop::Keep } else { OnDrop::Remove };
    let obj = kind.create_with(&id, on_drop, false, 0o600).unwrap();
    say("ready");
    if !keep {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    }
    drop(obj);
}

/// Starts a holder (or keeper) child of `kind` for `id` and waits until it has created it.
fn spawn_holder(test: &str, role: &str, kind: K, id: &str) -> Proc {
    let mut cmd = ipc_testkit::child(test, role);
    cmd.env(KIND_ENV, kind.env())
        .env(ID_ENV, id)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut p = Proc::spawn(&mut cmd).unwrap();
    let word = hear(&mut p);
    assert_eq!(word, "ready", "{kind:?} holder did not start");
    p
}

/// A child's word to its parent on stdout (libtest prints its own lines there too).
pub(crate) fn say(word: &str) {
    println!("@@{word}");
    std::io::stdout().flush().unwrap();
}

/// The first word the child says (empty at end of file). Takes the child's stdout and drains
/// the rest of it in the background, so the child never writes into a closed pipe.
pub(crate) fn hear(p: &mut Proc) -> String {
    let out = p.inner().stdout.take().expect("stdout piped");
    let mut lines = BufReader::new(out).lines();
    let word = lines
        .by_ref()
        .find_map(|l| l.ok()?.strip_prefix("@@").map(str::to_owned))
        .unwrap_or_default();
    std::thread::spawn(move || lines.for_each(drop));
    word
}

/// Waits until child `pid` is a zombie: dead, every thread gone (so its descriptors are
/// closed and its locks released), not yet reaped. `waitid(WEXITED | WNOWAIT)` reports the
/// death only once the whole thread group is gone; the leader alone shows `Z` earlier.
pub(crate) fn until_zombie(pid: u32) {
    let p = rustix::process::Pid::from_raw(pid as i32).unwrap();
    loop {
        match rustix::process::waitid(
            rustix::process::WaitId::Pid(p),
            rustix::process::WaitIdOptions::EXITED | rustix::process::WaitIdOptions::NOWAIT,
        ) {
            Err(rustix::io::Errno::INTR) => continue,
            r => {
                r.unwrap();
                break;
            }
        }
    }
    assert_eq!(state(pid), 'Z');
}

/// The state letter of process `pid` (`Z` for a zombie).
pub(crate) fn state(pid: u32) -> char {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, r)| r.trim_start().chars().next())
        })
        .unwrap_or('?')
}

#[test]
fn remove_stale_spares_live_owners_and_removes_killed_zombie_and_kept_ones() {
    if ipc_testkit::role().is_some() {
        holder_role();
        return;
    }
    let _wd = Watchdog::new("remove_stale", Duration::from_secs(120));
    let test = test_path!(remove_stale_spares_live_owners_and_removes_killed_zombie_and_kept_ones);
    for kind in KINDS {
        // Alive: refused. Then SIGKILL, not reaped (a zombie holds no lock): removed.
        let id = kind.fresh();
        let mut holder = spawn_holder(&test, "holder", kind, &id);
        let r = kind.remove_stale(&id);
        assert!(
            matches!(r, Err(Error::OwnerAlive { .. })),
            "{kind:?} alive: {r:?}"
        );
        assert!(kind.exists(&id), "{kind:?}: nothing removed while alive");
        holder.kill().unwrap();
        until_zombie(holder.id());
        kind.remove_stale(&id)
            .unwrap_or_else(|e| panic!("{kind:?} zombie owner: {e}"));
        assert!(!kind.exists(&id), "{kind:?}: removed");
        let _ = holder.wait_timeout(Duration::from_secs(10));
        assert!(
            matches!(kind.remove_stale(&id), Err(Error::NotFound { .. })),
            "{kind:?}: nothing left"
        );

        // Killed and reaped: removed.
        let id = kind.fresh();
        let mut holder = spawn_holder(&test, "holder", kind, &id);
        holder.kill().unwrap();
        let _ = holder.wait_timeout(Duration::from_secs(10));
        assert!(kind.exists(&id), "{kind:?}: a killed owner cannot remove");
        kind.remove_stale(&id)
            .unwrap_or_else(|e| panic!("{kind:?} killed owner: {e}"));
        assert!(!kind.exists(&id));

        // Kept (OnDrop::Keep) and exited: it stays, usable, and is stale.
        let id = kind.fresh();
        let keeper = spawn_holder(&test, "keeper", kind, &id);
        keeper.expect_success(Duration::from_secs(10));
        assert!(kind.exists(&id), "{kind:?}: kept after its owner exited");
        let opened = kind.open(&id).unwrap();
        assert!(!opened.is_owner());
        kind.remove_stale(&id)
            .unwrap_or_else(|e| panic!("{kind:?} kept: {e}"));
        assert!(!kind.exists(&id));
        drop(opened);

        // Re-created under the same name by a live owner: refused again (the lock is the new
        // object's).
        let mut holder = spawn_holder(&test, "holder", kind, &id);
        assert!(matches!(
            kind.remove_stale(&id),
            Err(Error::OwnerAlive { .. })
        ));
        // Our own live owner is alive too.
        drop(holder.inner().stdin.take());
        holder.wait_timeout(Duration::from_secs(10)).unwrap();
        assert!(!kind.exists(&id), "{kind:?}: its owner removed it on exit");
        let mine = kind.create(&id).unwrap();
        assert!(matches!(
            kind.remove_stale(&id),
            Err(Error::OwnerAlive { .. })
        ));
        drop(mine);
        assert!(!kind.exists(&id));
    }
}

#[test]
fn an_owner_never_removes_a_name_someone_else_recreated() {
    if ipc_testkit::role().is_some() {
        // Another process removes the name and makes a new object under it, which it keeps.
        let kind = K::from_env();
        let id = std::env::var(ID_ENV).unwrap();
        kind.unlink(&id).unwrap();
        let mut newcomer = kind.create(&id).unwrap();
        newcomer.persist();
        return;
    }
    let _wd = Watchdog::new("identity", Duration::from_secs(60));
    let test = test_path!(an_owner_never_removes_a_name_someone_else_recreated);
    for kind in KINDS {
        for by_remove in [false, true] {
            let id = kind.fresh();
            let first = kind.create(&id).unwrap();
            let before = kind.ident(&id).unwrap();
            let mut cmd = ipc_testkit::child(&test, "recreate");
            cmd.env(KIND_ENV, kind.env()).env(ID_ENV, &id);
            Proc::spawn(&mut cmd)
                .unwrap()
                .expect_success(Duration::from_secs(10));
            let after = kind.ident(&id).expect("the newcomer's object");
            assert_ne!(before, after, "{kind:?}: a new object under the name");
            assert!(first.is_owner());
            if by_remove {
                let r = first.remove();
                assert!(
                    matches!(r, Err(Error::NotFound { .. } | Error::Removed { .. })),
                    "{kind:?}: remove of an object that is no longer at the name: {r:?}"
                );
            } else {
                drop(first);
            }
            assert_eq!(
                kind.ident(&id),
                Some(after),
                "{kind:?}: the first owner removed the newcomer's object (remove: {by_remove})"
            );
            kind.remove_stale(&id)
                .expect("the newcomer's object is ownerless");
        }
    }
}

#[test]
fn remove_reports_and_persist_keeps() {
    for kind in KINDS {
        let id = kind.fresh();
        let owner = kind.create(&id).unwrap();
        assert!(owner.is_owner());
        let opener = kind.open(&id).unwrap();
        assert!(!opener.is_owner());
        drop(opener);
        assert!(kind.exists(&id), "{kind:?}: an opener removes nothing");
        owner.remove().unwrap();
        assert!(!kind.exists(&id), "{kind:?}: remove");

        let mut owner = kind.create(&id).unwrap();
        owner.persist();
        assert!(
            owner.is_owner(),
            "{kind:?}: the owner until dropped, after persist too"
        );
        assert!(
            matches!(kind.remove_stale(&id), Err(Error::OwnerAlive { .. })),
            "{kind:?}: a persisted owner that lives still holds its lock"
        );
        drop(owner);
        assert!(kind.exists(&id), "{kind:?}: persisted");
        let again = kind.open(&id).unwrap();
        let unlinked = kind.unlink(&id);
        assert!(unlinked.is_ok(), "{kind:?}: {unlinked:?}");
        let r = again.remove();
        assert!(
            matches!(r, Err(Error::NotOwner { .. })),
            "{kind:?}: an opener removes nothing: {r:?}"
        );

        let kept = kind.create_with(&id, OnDrop::Keep, false, 0o600).unwrap();
        assert!(
            kept.is_owner(),
            "{kind:?}: OnDrop::Keep is an owner until dropped"
        );
        drop(kept);
        assert!(kind.exists(&id));
        stale_soon(kind, &id);
    }
}

#[test]
fn replace_stale_replaces_a_dead_owners_object_and_refuses_a_live_ones() {
    if ipc_testkit::role().is_some() {
        holder_role();
        return;
    }
    let _wd = Watchdog::new("replace_stale", Duration::from_secs(60));
    let test = test_path!(replace_stale_replaces_a_dead_owners_object_and_refuses_a_live_ones);
    for kind in KINDS {
        let id = kind.fresh();
        let mut holder = spawn_holder(&test, "holder", kind, &id);
        let r = kind.create_with(&id, OnDrop::Remove, true, 0o600);
        assert!(
            matches!(r, Err(Error::OwnerAlive { .. })),
            "{kind:?}: {:?}",
            r.err()
        );
        let r = kind.create(&id);
        assert!(
            matches!(r, Err(Error::AlreadyExists { .. })),
            "{kind:?}: {:?}",
            r.err()
        );
        holder.kill().unwrap();
        let _ = holder.wait_timeout(Duration::from_secs(10));
        let old = kind.ident(&id).unwrap();
        let restarted = kind.create_with(&id, OnDrop::Remove, true, 0o600).unwrap();
        assert!(restarted.is_owner());
        assert_ne!(kind.ident(&id), Some(old), "{kind:?}: a new object");
        // Nothing stale under the name: replace_stale creates as usual.
        drop(restarted);
        let fresh = kind.create_with(&id, OnDrop::Remove, true, 0o600).unwrap();
        drop(fresh);
        assert!(!kind.exists(&id));
    }
}

#[test]
fn processes_racing_open_or_create_make_exactly_one_owner() {
    const RACERS: usize = 8;
    if ipc_testkit::role().is_some() {
        let kind = K::from_env();
        let id = std::env::var(ID_ENV).unwrap();
        let (obj, how) = kind.open_or_create(&id).unwrap();
        assert_eq!(obj.is_owner(), how == Opened::Created);
        say(if how == Opened::Created {
            "created"
        } else {
            "existing"
        });
        // Hold it until the parent has heard from everyone (so nobody re-creates it).
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        return;
    }
    let _wd = Watchdog::new("open_or_create race", Duration::from_secs(120));
    let test = test_path!(processes_racing_open_or_create_make_exactly_one_owner);
    for kind in KINDS {
        let id = kind.fresh();
        let mut racers: Vec<Proc> = (0..RACERS)
            .map(|_| {
                let mut cmd = ipc_testkit::child(&test, "racer");
                cmd.env(KIND_ENV, kind.env())
                    .env(ID_ENV, &id)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped());
                Proc::spawn(&mut cmd).unwrap()
            })
            .collect();
        let mut created = 0;
        for r in &mut racers {
            match hear(r).as_str() {
                "created" => created += 1,
                "existing" => {}
                other => panic!("{kind:?} racer said {other:?}"),
            }
        }
        assert_eq!(created, 1, "{kind:?}: exactly one Created of {RACERS}");
        for mut r in racers {
            drop(r.inner().stdin.take());
            let status = r.wait_timeout(Duration::from_secs(10)).unwrap();
            assert!(status.success(), "{kind:?} racer failed");
        }
        assert!(!kind.exists(&id), "{kind:?}: the owner removed it");
        // In one process: Created, then Existing.
        let (a, how_a) = kind.open_or_create(&id).unwrap();
        let (b, how_b) = kind.open_or_create(&id).unwrap();
        assert_eq!((how_a, how_b), (Opened::Created, Opened::Existing));
        assert!(a.is_owner() && !b.is_owner());
    }
}

#[test]
fn open_refuses_objects_of_other_users_unless_asked() {
    if ipc_testkit::role().is_some() {
        // Process-global: only in this child.
        // SAFETY: setuid has no memory-safety preconditions; glibc applies it to all threads.
        assert_eq!(unsafe { libc::setuid(65534) }, 0);
        let kind = K::from_env();
        let id = std::env::var(ID_ENV).unwrap();
        let mut obj = kind.create_with(&id, OnDrop::Keep, false, 0o666).unwrap();
        obj.persist();
        return;
    }
    let _wd = Watchdog::new("owner check", Duration::from_secs(60));
    let test = test_path!(open_refuses_objects_of_other_users_unless_asked);
    for kind in KINDS {
        let id = kind.fresh();
        let mut cmd = ipc_testkit::child(&test, "nobody");
        cmd.env(KIND_ENV, kind.env()).env(ID_ENV, &id);
        Proc::spawn(&mut cmd)
            .unwrap()
            .expect_success(Duration::from_secs(10));
        match kind.open(&id) {
            Err(e @ Error::WrongOwner { .. }) => {
                let Error::WrongOwner {
                    expected, found, ..
                } = &e
                else {
                    unreachable!()
                };
                assert_eq!(
                    (*expected, *found),
                    (rustix::process::geteuid().as_raw(), 65534)
                );
                let text = e.to_string();
                assert!(text.contains("owner_check(OwnerCheck::AnyUid)"), "{text}");
                assert!(text.contains(&id) || kind == K::Set, "{text}");
            }
            other => panic!("{kind:?}: expected WrongOwner, got {:?}", other.err()),
        }
        let opened = kind.open_with(&id, OwnerCheck::AnyUid).unwrap();
        assert!(!opened.is_owner());
        drop(opened);
        kind.remove_stale(&id).unwrap();
        assert!(!kind.exists(&id));
    }
}

#[test]
fn modes_are_exact_whatever_the_umask_and_bad_bits_are_refused_first() {
    if ipc_testkit::role().is_some() {
        // Process-global: only in this child.
        rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o277));
        for kind in KINDS {
            for mode in [0o600, 0o640, 0o604, 0o777] {
                let id = kind.fresh();
                let obj = kind.create_with(&id, OnDrop::Remove, false, mode).unwrap();
                let found = match kind {
                    K::Sem => std::fs::metadata(format!("/dev/shm/sem.{}", &id[1..]))
                        .unwrap()
                        .mode(),
                    K::Mutex => std::fs::metadata(format!("/dev/shm/{}", &id[1..]))
                        .unwrap()
                        .mode(),
                    K::Set => crate::bad_input::sysv_mode(kind.ident(&id).unwrap() as i32),
                };
                assert_eq!(found & 0o777, mode, "{kind:?} mode {mode:o}");
                drop(obj);
            }
            for bad in [0o1777, 0o4600, 0o2000, 0o10000, u32::MAX] {
                let id = kind.fresh();
                match kind.create_with(&id, OnDrop::Remove, false, bad) {
                    Err(Error::InvalidMode { mode }) => assert_eq!(mode, bad),
                    other => panic!("{kind:?} {bad:o}: {:?}", other.err()),
                }
                assert!(!kind.exists(&id), "{kind:?}: nothing created");
            }
        }
        let e = Error::InvalidMode { mode: 0o1777 };
        assert!(e.to_string().contains("0o1777") && !e.to_string().contains("value"));
        let set = crate::shared::new_set(&[1]);
        assert!(matches!(
            set.set_mode(0o1777),
            Err(Error::InvalidMode { mode: 0o1777 })
        ));
        return;
    }
    let _wd = Watchdog::new("modes", Duration::from_secs(60));
    Proc::spawn(&mut ipc_testkit::child(
        &test_path!(modes_are_exact_whatever_the_umask_and_bad_bits_are_refused_first),
        "umask",
    ))
    .unwrap()
    .expect_success(Duration::from_secs(50));
}
