//! Handing a segment's descriptor to a spawned child at a chosen descriptor number.
//!
//! As a child's standard input, a descriptor needs no helper (`cmd.stdin(Stdio::from(fd))`), but
//! a child usually keeps its standard streams for themselves. [`ChildFds`] places descriptors at
//! the numbers the child expects (3 and up, usually); the child claims them with
//! [`Memfd::from_inherited`](crate::Memfd::from_inherited) or
//! [`Shm::from_inherited`](crate::Shm::from_inherited).

use std::fmt;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::process::Command;

use crate::error::{Error, Result};
use crate::sys;

/// Descriptors to place at chosen numbers in a child process, whatever their numbers in the
/// parent.
///
/// Every descriptor of this crate is close-on-exec from birth, and stays so in the parent: a
/// child spawned by another thread meanwhile inherits none of them. The mapping is done in the
/// child between `fork` and `exec` by a `pre_exec` hook that calls only async-signal-safe
/// functions (`fcntl`, `dup2`) and allocates nothing; it handles numbers that collide (a
/// descriptor already sitting at another entry's target). The child finds each descriptor at its
/// number without close-on-exec. The parent keeps its copies open until the `Command` is
/// dropped.
///
/// Pass a memfd itself (`OwnedFd::from(memfd)`, or a duplicate from
/// `memfd.as_fd().try_clone_to_owned()`); for a named segment pass
/// [`Shm::try_clone_fd`](crate::Shm::try_clone_fd), a new open file description that does not
/// share the owner's lock (so the child does not keep the owner "alive").
///
/// ```
/// use std::os::fd::AsFd;
/// use std::process::Command;
/// use ipc_shm::{ChildFds, Memfd, Seals};
///
/// let mut m = Memfd::create("for-child", 4096)?;
/// m.write_bytes(0, b"via fd 5")?;
/// m.seal(Seals::SIZE | Seals::WRITE)?;
/// let mut cmd = Command::new("sh");
/// cmd.args(["-c", "head -c 8 <&5"]);
/// ChildFds::new().fd_at(5, m.as_fd().try_clone_to_owned()?)?.apply(&mut cmd);
/// let out = cmd.output()?;
/// assert_eq!(out.stdout, b"via fd 5");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// After fork: a `ChildFds` is for `Command::spawn`, which runs its hook in the child it
/// forks; building or applying one in a child forked by hand from a multi-threaded parent
/// allocates and is not supported there (dropping one only closes descriptors).
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
    /// an earlier one. Targets 0..=2 override what the `Command` set as standard streams.
    ///
    /// # Errors
    /// [`Error::InvalidDescriptor`] for a negative `target` (`fd` is closed).
    pub fn fd_at(mut self, target: RawFd, fd: impl Into<OwnedFd>) -> Result<ChildFds> {
        let fd = fd.into();
        if target < 0 {
            return Err(Error::InvalidDescriptor {
                fd: target,
                reason: "descriptor numbers are not negative",
            });
        }
        self.map.retain(|(_, t)| *t != target);
        self.map.push((fd, target));
        Ok(self)
    }

    /// Installs the mapping on `cmd` (one `pre_exec` hook). The descriptors now belong to `cmd`.
    pub fn apply(self, cmd: &mut Command) -> &mut Command {
        if !self.map.is_empty() {
            sys::install_fd_map(cmd, self.map);
        }
        cmd
    }
}
