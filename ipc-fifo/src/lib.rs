#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod dir;
mod error;
mod fifo;
mod lock;
mod open;
mod path;
mod record;
mod time;

pub use dir::PrivateDir;
pub use error::{Error, FileKind, Result};
pub use fifo::{Fifo, FifoOptions, OnDrop, Opened, OwnerCheck, remove_stale, unlink};
pub use lock::OWNER_LOCK;
pub use open::{FifoReader, FifoWriter, KeepAlive, ReaderOptions, WriterOptions};
pub use record::{HEADER_LEN, PIPE_BUF, RECORD_MAX, RecordReader};
