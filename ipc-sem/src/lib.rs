#![doc = include_str!("../README.md")]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod anon;
mod error;
mod eventfd;
mod file;
#[cfg(feature = "tokio")]
mod helper;
mod lifetime;
mod mutex;
mod name;
mod named;
mod once;
mod placed;
mod posix;
mod sys;
pub mod sysv;
mod time;
#[cfg(feature = "tokio")]
mod tokio;

pub use error::{Error, Result};
pub use eventfd::{EVENTFD_MAX, EventSemaphore};
pub use lifetime::{OWNER_LOCK, OnDrop, Opened, OwnerCheck};
pub use mutex::{Locked, MutexGuard, OwnerDiedGuard, RawRobustMutex, RobustMutex};
pub use name::NAME_MAX;
pub use named::{NamedSemaphore, NamedSemaphoreOptions, remove_stale, unlink};
pub use placed::{NamedMutex, NamedMutexOptions, SharedMutex};
pub use posix::{InPlaceSemaphore, RawSemaphore, SEM_VALUE_MAX, SemGuard, SharedSemaphore};
pub use sysv::{Key, SEMVMX, SemOp, SemSet, SemSetOptions, SetGuard};
#[cfg(feature = "tokio")]
pub use tokio::{
    AsyncEventSemaphore, AsyncLocked, AsyncMutex, AsyncMutexGuard, AsyncOwnerDiedGuard,
    AsyncSemSet, AsyncSemaphore, PosixSemaphore, RegisterError, RobustMutexHandle,
};
