#![doc = include_str!("../README.md")]
#![deny(unsafe_op_in_unsafe_fn)]

mod error;
mod lifetime;
mod limits;
mod name;
mod posix;
mod sys;
pub mod sysv;
#[cfg(feature = "tokio")]
mod tokio;
#[cfg(feature = "tokio")]
mod wait;

pub use error::{Error, Limit, Result};
pub use lifetime::{OWNER_LOCK, OnDrop, Opened, OwnerCheck};
pub use limits::Limits;
pub use name::{NAME_MAX, is_valid_name};
pub use posix::{
    Access, LimitCheck, MAX_PRIORITY, MessageQueue, MessageQueueOptions, MqAttr, Notify, Priority,
    remove_stale, unlink,
};
pub use sysv::{Key, Select, SysvMessage, SysvQueue, SysvQueueOptions, SysvStats};
#[cfg(feature = "tokio")]
pub use tokio::{AsyncMessageQueue, AsyncSysvQueue, RegisterError};
