#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod dir;
mod error;
mod fifo;
mod open;
mod record;
mod time;

pub use dir::{DirStatus, PrivateDir};
pub use error::{Error, FileKind, Result};
pub use fifo::{Fifo, FifoOptions, Owner, unlink};
pub use open::{FifoReader, FifoWriter, KeepAlive, ReaderOptions, WriterOptions};
pub use record::{HEADER_LEN, PIPE_BUF, RECORD_MAX, RecordReader};
