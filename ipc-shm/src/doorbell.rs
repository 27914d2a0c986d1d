//! [`Doorbell`]: two descriptors a ring's endpoints ring for each other, so that a side can wait
//! for its peer in an event loop instead of on a futex.

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};

use rustix::event::EventfdFlags;
use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::name;
use crate::owner::{self, FileId, OwnerCheck, unlink_if_ours};
use crate::sys::{self, BellKind as Kind, Inherit};

/// One half of a doorbell: a non-blocking, close-on-exec descriptor.
pub(crate) struct Bell {
    fd: OwnedFd,
    kind: Kind,
}

impl fmt::Debug for Bell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bell")
            .field("fd", &self.fd)
            .field("kind", &self.kind)
            .finish()
    }
}

impl Bell {
    /// Makes the descriptor readable. A full FIFO or a saturated counter is already readable:
    /// errors change nothing the waiter can see.
    pub(crate) fn ring(&self) {
        let _ = match self.kind {
            Kind::EventFd => rustix::io::write(&self.fd, &1u64.to_ne_bytes()),
            Kind::Fifo => rustix::io::write(&self.fd, &[1u8]),
        };
    }

    /// Makes the descriptor not readable (until the next ring).
    pub(crate) fn drain(&self) {
        let mut buf = [0u8; 64];
        match self.kind {
            Kind::EventFd => {
                let _ = rustix::io::read(&self.fd, &mut buf[..8]);
            }
            Kind::Fifo => {
                // Until EAGAIN (empty): a short read may leave bytes written meanwhile, which
                // is a ring after this drain, as it should be.
                for _ in 0..1024 {
                    match rustix::io::read(&self.fd, &mut buf) {
                        Ok(n) if n == buf.len() => {}
                        Err(Errno::INTR) => {}
                        _ => break,
                    }
                }
            }
        }
    }

    pub(crate) fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn try_clone(&self) -> Result<Bell> {
        Ok(Bell {
            fd: self.fd.try_clone()?,
            kind: self.kind,
        })
    }

    /// A duplicate of the descriptor (same open file description), for an event loop that
    /// must own what it registers.
    #[cfg(feature = "tokio")]
    pub(crate) fn dup(&self) -> Result<OwnedFd> {
        Ok(self.fd.try_clone()?)
    }

    /// Checks what `fd` is and makes it non-blocking.
    fn from_fd(fd: OwnedFd) -> std::result::Result<Bell, &'static str> {
        let kind = sys::bell_kind(fd.as_fd())
            .ok_or("not a doorbell's descriptor (an eventfd or a FIFO)")?;
        let fl = rustix::fs::fcntl_getfl(&fd).map_err(|_| "cannot read its status flags")?;
        if !fl.contains(OFlags::NONBLOCK) {
            rustix::fs::fcntl_setfl(&fd, fl | OFlags::NONBLOCK)
                .map_err(|_| "cannot make it non-blocking")?;
        }
        Ok(Bell { fd, kind })
    }
}

/// A named doorbell's paths, and for the owner what to remove on drop.
struct Named {
    name: String,
    paths: [String; 2],
    /// The creating process and the identities of the FIFOs it made.
    owner: Option<(u32, [FileId; 2])>,
}

impl Drop for Named {
    fn drop(&mut self) {
        match self.owner {
            Some((pid, ids)) if pid == std::process::id() => {
                for (path, id) in self.paths.iter().zip(ids) {
                    let _ = unlink_if_ours(path, id);
                }
            }
            _ => {} // an opener, a copy, or a forked child's: remove nothing
        }
    }
}

/// The suffixes of a named doorbell's two FIFOs, after the name's path in `/dev/shm`.
const SUFFIXES: [&str; 2] = [".doorbell-data", ".doorbell-space"];

/// A ring's doorbell: two descriptors, one per direction, that the ring's endpoints make
/// readable for each other — the writer rings the *data* half when it commits a message while
/// the reader waits on that half, the reader rings the *space* half when it frees room while
/// the writer waits on it. Nothing rings while both sides are awake: the fast path of a ring
/// with a doorbell is the same as without.
///
/// Give each endpoint the same doorbell with [`Ring::with_doorbell`](crate::Ring::with_doorbell)
/// (a copy per process); an endpoint then waits on its half from an event loop
/// ([`RingReader::doorbell_fd`](crate::RingReader::doorbell_fd), or the `tokio` feature's async
/// endpoints). Three ways to share one:
///
/// - [`Doorbell::new`]: two eventfds, for a parent and the children it forks (inherited), or
///   spawns ([`data_fd`](Self::data_fd) and [`space_fd`](Self::space_fd) through
///   [`ChildFds`](crate::ChildFds); the child claims them with
///   [`from_inherited`](Self::from_inherited)), or sends over a Unix socket.
/// - [`Doorbell::create`] / [`Doorbell::open`]: two FIFOs named after a POSIX name (usually the
///   ring's segment's: `/dev/shm/NAME.doorbell-data` and `.doorbell-space`), for unrelated
///   processes. The creator is the owner, as for segments: mode 0600, the owner lock
///   ([`OWNER_LOCK`](crate::OWNER_LOCK)) held on its descriptors, and both FIFOs removed when
///   the owner is dropped (only in the creating process, only if the paths still name the
///   FIFOs it made); [`Doorbell::remove_stale`] removes those of a dead owner. Each side opens
///   them read-write (Linux), so neither ever sees end-of-file or blocks opening.
///
/// Every descriptor is non-blocking and close-on-exec.
///
/// ```
/// # let name = format!("/ipcrs-doc-bell-{}", std::process::id());
/// use ipc_shm::{Doorbell, Ring, Shm};
/// let size = Ring::segment_size(4096)?;
/// let seg = Shm::create(&name, size)?;
/// let bell = Doorbell::create(&name)?;            // beside the segment, removed with `bell`
/// let mut w = Ring::create(seg)?.with_doorbell(bell).into_writer()?;
/// // In another process:
/// let ring = Ring::open(Shm::open(&name, size)?)?.with_doorbell(Doorbell::open(&name)?);
/// let mut r = ring.into_reader()?;
/// w.send(b"hi")?;
/// assert_eq!(r.recv_vec()?, b"hi");
/// # Ok::<(), ipc_shm::Error>(())
/// ```
///
/// # After fork
/// A forked child inherits the descriptors. In a child forked from a multi-threaded parent it
/// may only drop a doorbell (`close`; a named owner's copy removes nothing there). While a
/// child keeps its copy of a named owner's descriptors, the doorbell counts as alive for
/// [`remove_stale`](Self::remove_stale), even if the parent dies.
pub struct Doorbell {
    // Field order is drop order: the names are removed while the descriptors still pin the
    // inodes.
    named: Option<Named>,
    pub(crate) data: Bell,
    pub(crate) space: Bell,
}

impl fmt::Debug for Doorbell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Doorbell")
            .field("name", &self.name())
            .field("owner", &self.is_owner())
            .field("data", &self.data)
            .field("space", &self.space)
            .finish()
    }
}

fn eventfd() -> Result<Bell> {
    let fd = rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
    Ok(Bell {
        fd,
        kind: Kind::EventFd,
    })
}

/// The two FIFO paths for `name`, after validating it as a POSIX name with room for the suffix.
fn paths(name: &str) -> Result<[String; 2]> {
    let path = name::validate(name)?;
    if name.len() - 1 + SUFFIXES[1].len() > name::NAME_MAX {
        return Err(Error::InvalidName {
            name: name.to_owned(),
            reason: "a doorbell's name is at most 240 bytes after the `/` (its FIFOs add a suffix)",
        });
    }
    Ok(SUFFIXES.map(|s| format!("{path}{s}")))
}

/// Opens a doorbell FIFO read-write, not following a symlink, and checks what it opened.
fn open_fifo(path: &str, check: OwnerCheck) -> Result<OwnedFd> {
    let fd = rustix::fs::open(
        path,
        OFlags::RDWR | OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )
    .map_err(|e| Error::at(path, e))?;
    let st = rustix::fs::fstat(&fd).map_err(|e| Error::at(path, e))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::Fifo {
        return Err(Error::NotRegular {
            name: path.to_owned(),
        });
    }
    check
        .check(st.st_uid)
        .map_err(|(expected, found)| Error::WrongOwner {
            name: path.to_owned(),
            expected,
            found,
        })?;
    Ok(fd)
}

impl Doorbell {
    /// `eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)`, twice—A doorbell for a parent and its
    /// children: inherited across `fork`, or passed to a spawned child as descriptors.
    ///
    /// # Errors
    /// `EMFILE`/`ENFILE` ([`Error::Io`]) when out of descriptors.
    #[doc(alias = "eventfd")]
    pub fn new() -> Result<Doorbell> {
        Ok(Doorbell {
            named: None,
            data: eventfd()?,
            space: eventfd()?,
        })
    }

    /// `mkfifo` + `open(O_RDWR | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC)`, twice—Creates the named
    /// doorbell `name` (a POSIX name, usually the ring's segment's), exclusively: its FIFOs are
    /// `/dev/shm/NAME.doorbell-data` and `/dev/shm/NAME.doorbell-space`, mode 0600 (set with
    /// `fchmod`), owner-locked. Returns the owner, which removes both when dropped.
    ///
    /// # Errors
    /// [`Error::InvalidName`] (also a name longer than 240 bytes), [`Error::AlreadyExists`]
    /// (remove a dead owner's with [`remove_stale`](Self::remove_stale)),
    /// [`Error::PermissionDenied`].
    #[doc(alias = "mkfifo")]
    pub fn create(name: &str) -> Result<Doorbell> {
        let paths = paths(name)?;
        let mut made: Vec<(String, FileId)> = Vec::new();
        let undo = |made: &[(String, FileId)], e: Error| {
            for (p, id) in made {
                let _ = unlink_if_ours(p, *id);
            }
            e
        };
        let mut fds = Vec::new();
        for path in &paths {
            rustix::fs::mknodat(
                rustix::fs::CWD,
                path.as_str(),
                FileType::Fifo,
                Mode::from_raw_mode(0o600),
                0,
            )
            .map_err(|e| {
                undo(
                    &made,
                    match e {
                        Errno::EXIST => Error::AlreadyExists {
                            name: name.to_owned(),
                        },
                        e => Error::at(path, e),
                    },
                )
            })?;
            let fd = open_fifo(path, OwnerCheck::SameUid).map_err(|e| undo(&made, e))?;
            let id = FileId::of(fd.as_fd()).map_err(|e| undo(&made, Error::at(path, e)))?;
            made.push((path.clone(), id));
            owner::hold(&fd).map_err(|e| undo(&made, Error::at(path, e)))?;
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o600))
                .map_err(|e| undo(&made, Error::at(path, e)))?;
            fds.push(fd);
        }
        let ids = [made[0].1, made[1].1];
        let space = fds
            .pop()
            .unwrap_or_else(|| unreachable!("two FIFOs were made"));
        let data = fds
            .pop()
            .unwrap_or_else(|| unreachable!("two FIFOs were made"));
        Ok(Doorbell {
            named: Some(Named {
                name: name.to_owned(),
                paths,
                owner: Some((std::process::id(), ids)),
            }),
            data: Bell {
                fd: data,
                kind: Kind::Fifo,
            },
            space: Bell {
                fd: space,
                kind: Kind::Fifo,
            },
        })
    }

    /// Opens the named doorbell `name` that another process created: both FIFOs, read-write,
    /// not following symlinks, checked to be FIFOs owned by our uid. The opener removes
    /// nothing.
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::NotFound`], [`Error::Symlink`], [`Error::NotRegular`]
    /// (not a FIFO), [`Error::WrongOwner`], [`Error::PermissionDenied`].
    pub fn open(name: &str) -> Result<Doorbell> {
        let paths = paths(name)?;
        let data = open_fifo(&paths[0], OwnerCheck::SameUid)?;
        let space = open_fifo(&paths[1], OwnerCheck::SameUid)?;
        Ok(Doorbell {
            named: Some(Named {
                name: name.to_owned(),
                paths,
                owner: None,
            }),
            data: Bell {
                fd: data,
                kind: Kind::Fifo,
            },
            space: Bell {
                fd: space,
                kind: Kind::Fifo,
            },
        })
    }

    /// Removes the named doorbell `name` only if no live owner holds it (its creator was
    /// killed or is a zombie), checking before each unlink that the path still names the FIFO
    /// it probed.
    ///
    /// # Errors
    /// [`Error::OwnerAlive`], [`Error::NotFound`] (neither FIFO exists), [`Error::InvalidName`],
    /// [`Error::NotRegular`] (something else at a path), [`Error::PermissionDenied`].
    pub fn remove_stale(name: &str) -> Result<()> {
        let paths = paths(name)?;
        let mut probes = Vec::new();
        for path in &paths {
            match owner::open_probe(path) {
                Ok(fd) => {
                    let st = rustix::fs::fstat(&fd)?;
                    if FileType::from_raw_mode(st.st_mode) != FileType::Fifo {
                        return Err(Error::NotRegular { name: path.clone() });
                    }
                    if owner::owner_alive(&fd).map_err(|e| Error::at(path, e))? {
                        return Err(Error::OwnerAlive {
                            name: name.to_owned(),
                        });
                    }
                    let id = FileId::of(fd.as_fd()).map_err(|e| Error::at(path, e))?;
                    probes.push((path, id, fd));
                }
                Err(Errno::NOENT) => {}
                Err(e) => return Err(Error::at(path, e)),
            }
        }
        if probes.is_empty() {
            return Err(Error::NotFound {
                name: name.to_owned(),
            });
        }
        for (path, id, _fd) in &probes {
            unlink_if_ours(path, *id).map_err(|e| Error::at(path, e))?;
        }
        Ok(())
    }

    /// Takes two descriptors received from a peer (an eventfd or a FIFO each: the data half,
    /// then the space half), and makes them non-blocking.
    ///
    /// # Errors
    /// [`Error::InvalidDescriptor`] for a descriptor of anything else.
    pub fn from_fds(data: OwnedFd, space: OwnedFd) -> Result<Doorbell> {
        use std::os::fd::AsRawFd;
        let (d, s) = (data.as_raw_fd(), space.as_raw_fd());
        Ok(Doorbell {
            named: None,
            data: Bell::from_fd(data)
                .map_err(|reason| Error::InvalidDescriptor { fd: d, reason })?,
            space: Bell::from_fd(space)
                .map_err(|reason| Error::InvalidDescriptor { fd: s, reason })?,
        })
    }

    /// Claims the doorbell a parent placed at descriptor numbers `data` and `space` of this
    /// process (with [`ChildFds`](crate::ChildFds), from [`data_fd`](Self::data_fd) and
    /// [`space_fd`](Self::space_fd)): checks that each is open, an eventfd or a FIFO, not a
    /// standard stream and not claimed before; makes them close-on-exec and non-blocking.
    ///
    /// # Errors
    /// [`Error::InvalidDescriptor`] naming the number and what is wrong with it.
    pub fn from_inherited(data: RawFd, space: RawFd) -> Result<Doorbell> {
        let d = sys::claim_inherited(data, Inherit::Doorbell)
            .map_err(|reason| Error::InvalidDescriptor { fd: data, reason })?;
        let s = sys::claim_inherited(space, Inherit::Doorbell)
            .map_err(|reason| Error::InvalidDescriptor { fd: space, reason })?;
        Doorbell::from_fds(d, s)
    }

    /// Another handle to the same doorbell (both descriptors duplicated, close-on-exec). The
    /// copy is never an owner: it removes nothing.
    ///
    /// # Errors
    /// `EMFILE` ([`Error::Io`]) when out of descriptors.
    pub fn try_clone(&self) -> Result<Doorbell> {
        Ok(Doorbell {
            named: self.named.as_ref().map(|n| Named {
                name: n.name.clone(),
                paths: n.paths.clone(),
                owner: None,
            }),
            data: self.data.try_clone()?,
            space: self.space.try_clone()?,
        })
    }

    /// The data half (the reader waits on it, the writer rings it), to pass to another
    /// process.
    pub fn data_fd(&self) -> BorrowedFd<'_> {
        self.data.as_fd()
    }

    /// The space half (the writer waits on it, the reader rings it), to pass to another
    /// process.
    pub fn space_fd(&self) -> BorrowedFd<'_> {
        self.space.as_fd()
    }

    /// The name of a named doorbell.
    pub fn name(&self) -> Option<&str> {
        self.named.as_ref().map(|n| n.name.as_str())
    }

    /// Whether this handle created the named doorbell and removes it on drop (false for
    /// eventfd doorbells, openers, copies, and in a forked child).
    pub fn is_owner(&self) -> bool {
        self.named
            .as_ref()
            .and_then(|n| n.owner)
            .is_some_and(|(pid, _)| pid == std::process::id())
    }
}
