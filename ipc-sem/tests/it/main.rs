//! Behaviour of ipc-sem across real processes.
//! Test code may use unsafe (in-place constructors, fork, setuid), each block with a SAFETY note.

#![allow(unsafe_code)]

mod bad_input;
mod counter;
mod errors;
mod eventfd;
mod fallback;
mod fast_path;
mod fork;
mod hostile;
mod inherit;
mod init_once;
mod interop;
mod killed;
mod lifetime;
mod placement;
mod pool;
mod shared;
mod sysv;
mod timeouts;
mod tokio;
