#![doc = include_str!("../README.md")]
// Without the `tokio` feature the crate has no unsafe code at all; with it, `src/sys.rs`
// registers descriptors with tokio's reactor (the workspace denies unsafe code elsewhere).
#![cfg_attr(not(feature = "tokio"), forbid(unsafe_code))]

#[cfg(feature = "tokio")]
mod asynch;

mod dir;
mod error;
mod fifo;
mod lock;
mod open;
mod path;
mod record;
#[cfg(feature = "tokio")]
mod sys;
mod time;

#[cfg(feature = "tokio")]
pub use asynch::{AsyncFifoReader, AsyncFifoWriter, AsyncRecordReader};
pub use dir::PrivateDir;
pub use error::{Error, FileKind, Result};
pub use fifo::{Fifo, FifoOptions, OnDrop, Opened, OwnerCheck, remove_stale, unlink};
pub use lock::OWNER_LOCK;
pub use open::{FifoReader, FifoWriter, KeepAlive, ReaderOptions, WriterOptions};
pub use record::{HEADER_LEN, PIPE_BUF, RECORD_MAX, RecordReader};
