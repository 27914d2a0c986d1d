#![doc = include_str!("../README.md")]
#![deny(unsafe_op_in_unsafe_fn)]

mod error;
mod limits;
mod name;
mod posix;
mod sys;
mod sysv;

pub use error::{Error, Limit, Result};
pub use limits::Limits;
pub use name::{NAME_MAX, is_valid_name};
pub use posix::{
    Access, LimitCheck, MAX_PRIORITY, MessageQueue, MqAttr, MqOptions, Notify, OwnerCheck,
    Priority, unlink,
};
pub use sysv::{Key, Select, SysvMessage, SysvQueue, SysvStats};
