#![doc = include_str!("../README.md")]
#![deny(unsafe_op_in_unsafe_fn)]

mod anon;
#[cfg(feature = "tokio")]
mod asynch;
mod child;
mod doorbell;
mod error;
mod futex;
mod header;
mod memfd;
mod name;
mod owner;
pub mod posix;
mod region;
mod ring;
mod safe;
mod size;
mod sys;
pub mod sysv;

pub use anon::Anon;
#[cfg(feature = "tokio")]
pub use asynch::{AsyncRingReader, AsyncRingWriter};
pub use child::ChildFds;
pub use doorbell::Doorbell;
pub use error::{Error, Result};
pub use header::Header;
pub use memfd::{Memfd, Seals};
pub use owner::{OWNER_LOCK, OnDrop, Opened, OwnerCheck};
pub use posix::{Access, Pages, Shm, ShmOptions, remove_stale, unlink};
pub use region::{Region, Segment};
pub use ring::{Message, Reservation, Ring, RingReader, RingWriter, Wait};
#[doc(hidden)]
pub use safe::__private;
pub use safe::{ShmAtomic, ShmSafe};
pub use size::{MAX_SIZE, Size};
pub use sysv::{Key, SysvShm, SysvShmOptions};
