//! The nightly toolchain that fuzzing and sanitizers need, found or plainly reported missing.

use std::process::{Command, Stdio};

/// `cargo +nightly`, if a nightly toolchain is installed (through rustup).
///
/// Returns `None` when there is none; the caller says that it skipped, never fails for that.
pub(crate) fn cargo() -> Option<Command> {
    let ok = Command::new("cargo")
        .args(["+nightly", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        return None;
    }
    let mut cmd = Command::new("cargo");
    cmd.arg("+nightly");
    // The stable cargo that runs xtask exports variables (RUSTC, CARGO, ...) that would make
    // the nightly cargo build with the stable compiler.
    for var in [
        "RUSTC",
        "RUSTDOC",
        "CARGO",
        "RUSTC_WRAPPER",
        "RUSTUP_TOOLCHAIN",
    ] {
        cmd.env_remove(var);
    }
    Some(cmd)
}

/// The host's target triple (`rustc -vV`), which sanitizer builds name explicitly so that build
/// scripts and proc macros are not instrumented.
pub(crate) fn host_triple() -> Option<String> {
    let out = Command::new("rustc").arg("-vV").output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_owned)
}

/// What to print when there is no nightly toolchain.
pub(crate) fn skipped(what: &str) {
    println!(
        "{what}: SKIPPED: no nightly toolchain is installed (`rustup toolchain install nightly` \
         enables it); nothing was checked"
    );
}
