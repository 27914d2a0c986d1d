//! Cross-crate scenarios, run by `cargo xtask test`: the tour under leak checks and crashes,
//! every mechanism under stress at once.
//!
//! The scenarios take one lock each (`serial()`): a leak check compares the workspace's kernel
//! objects before and after, which only means something when no other scenario runs meanwhile.

mod clean;
mod crash;
mod leaks;
mod stress;
mod tour;

use std::sync::{Mutex, MutexGuard};

static SERIAL: Mutex<()> = Mutex::new(());

/// Runs scenarios one at a time (a panicking one must not poison the others).
fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}
