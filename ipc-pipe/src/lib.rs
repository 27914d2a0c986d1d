#![doc = include_str!("../README.md")]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(
    clippy::undocumented_unsafe_blocks,
    clippy::multiple_unsafe_ops_per_block
)]

#[cfg(feature = "tokio")]
mod asynch;
mod child;
mod error;
mod frame;
mod pipe;
pub mod sigpipe;
mod splice;
mod sys;

#[cfg(feature = "tokio")]
pub use asynch::{
    AsyncDuplex, AsyncFramedReader, AsyncFramedWriter, AsyncPipeReader, AsyncPipeWriter, SendFrame,
    async_pipe,
};
pub use child::{ChildFds, Duplex, duplex};
pub use error::{Error, Result};
pub use frame::{DEFAULT_MAX_FRAME, FramedReader, FramedWriter, HEADER_LEN};
pub use pipe::{
    PIPE_BUF, PIPE_MAX_SIZE_FILE, PIPE_USER_PAGES_HARD_FILE, PIPE_USER_PAGES_SOFT_FILE, PipeReader,
    PipeWriter, pipe, pipe_max_size,
};
pub use sigpipe::SigpipePolicy;
pub use splice::{
    ZeroCopyWriter, copy, splice, splice_timeout, tee, tee_timeout, try_splice, try_tee, vmsplice,
};
