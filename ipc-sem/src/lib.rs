#![doc = include_str!("../README.md")]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod error;
mod eventfd;
mod mutex;
mod name;
mod posix;
mod sys;
mod sysv;
mod time;

pub use error::{Error, Result};
pub use eventfd::{EVENTFD_MAX, EventSemaphore};
pub use mutex::{Locked, MutexGuard, OwnerDiedGuard, RawRobustMutex, RobustMutex};
pub use name::NAME_MAX;
pub use posix::{
    InPlaceSemaphore, NamedSemaphore, RawSemaphore, SEM_VALUE_MAX, SemGuard, SharedSemaphore,
    unlink,
};
pub use sysv::{Key, SEMVMX, SemOp, SemSet, SetGuard, remove};
