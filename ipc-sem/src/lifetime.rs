//! The words of the workspace's lifetime model: `Opened`, `OnDrop`, `OwnerCheck`.

/// Which of the two `open_or_create` (or `init_or_attach`) did.
///
/// Only the handle that got `Created` set the object's initial value; an `Existing` one found
/// it made already.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Opened {
    /// This call created (or initialised) the object: the handle is its owner.
    Created,
    /// The object existed (or was initialised by someone else): the handle is an opener.
    Existing,
}

/// What the owner does with the object when it is dropped (`.on_drop(..)` at create;
/// `persist` later).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OnDrop {
    /// Remove the name (unlink, `IPC_RMID`), if it still refers to the object this owner
    /// created, and only in the process that created it.
    #[default]
    Remove,
    /// Leave the object for others. It is then ownerless once this handle is dropped, so
    /// `remove_stale` may remove it.
    Keep,
}

/// Whose objects `open` accepts (`.owner_check(..)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OwnerCheck {
    /// Only objects owned by our effective uid; others are [`Error::WrongOwner`](crate::Error).
    #[default]
    SameUid,
    /// Objects of any user the mode lets us open.
    AnyUid,
}

impl OwnerCheck {
    /// `Err((expected, found))` if an object owned by `uid` is refused.
    pub(crate) fn check(self, uid: u32) -> Result<(), (u32, u32)> {
        let me = rustix::process::geteuid().as_raw();
        match self {
            OwnerCheck::SameUid if uid != me => Err((me, uid)),
            _ => Ok(()),
        }
    }
}

/// Checks `.mode(..)` bits before any syscall.
pub(crate) fn check_mode(mode: u32) -> crate::Result<()> {
    if mode & !0o777 != 0 {
        Err(crate::Error::InvalidMode { mode })
    } else {
        Ok(())
    }
}

/// The byte an owner keeps an open-file-description read lock on, in the file that stands for
/// its object (the semaphore's or mutex's file; a System V set's companion file), for as long as
/// it lives: `remove_stale` asks the kernel whether anyone holds it (ARCHITECTURE.md, "The
/// lifetime model").
pub const OWNER_LOCK: u64 = 0x7fff_ffff_ffff_fffe;

/// How many times `open_or_create` tries create, then open, before giving up.
pub(crate) const OPEN_OR_CREATE_ATTEMPTS: u32 = 8;
