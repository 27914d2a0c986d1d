#![doc = include_str!("../README.md")]
#![deny(unsafe_op_in_unsafe_fn)]

mod anon;
mod error;
mod futex;
mod header;
mod memfd;
mod name;
pub mod posix;
mod region;
mod ring;
mod safe;
mod sys;
pub mod sysv;

pub use anon::Anon;
pub use error::{Error, Result};
pub use header::Header;
pub use memfd::{Memfd, Seals};
pub use posix::{Access, Opened, Owner, Pages, Shm, ShmOptions};
pub use region::{Region, Segment};
pub use ring::{Ring, RingReader, RingWriter, Wait};
#[doc(hidden)]
pub use safe::__private;
pub use safe::{ShmAtomic, ShmSafe};
pub use sysv::{Key, SysvShm};
