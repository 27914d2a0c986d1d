//! `cargo xtask sanitize`: the test suite under AddressSanitizer (nightly).

use crate::nightly;
use crate::util::{Result, check_flags, root, target_dir, wants_help};

const HELP: &str = "\
cargo xtask sanitize

Runs the workspace's unit and integration tests (and the scenarios, whose demo binaries are
built instrumented too) under AddressSanitizer with LeakSanitizer: a nightly toolchain builds
them with -Zsanitizer=address for the host target (so build scripts and proc macros are not
instrumented) into target/asan. Tests learn from IPC_SANITIZER=address that they run
instrumented, and skip, saying so, the few checks that cannot work under it (a hidden /proc, a
small RLIMIT_AS, seccomp strict mode). Doc tests are not run here (`cargo xtask test` runs
them). Without a nightly toolchain it says so and skips.
";

pub(crate) fn run(args: &[String]) -> Result {
    if wants_help(args, HELP) {
        return Ok(());
    }
    check_flags(args, &[], HELP)?;
    sanitize()
}

/// Runs the suite under ASan; `Ok` (after saying so) without nightly.
pub(crate) fn sanitize() -> Result {
    let Some(mut cmd) = nightly::cargo() else {
        nightly::skipped("sanitize");
        return Ok(());
    };
    let triple = nightly::host_triple().ok_or("cannot read the host triple from `rustc -vV`")?;
    cmd.current_dir(root())
        .args([
            "test",
            "--workspace",
            "--lib",
            "--bins",
            "--tests",
            "--all-features",
            "--no-fail-fast",
            "--target",
            &triple,
        ])
        .env("CARGO_TARGET_DIR", target_dir().join("asan"))
        .env(
            "RUSTFLAGS",
            "-Zsanitizer=address -Cforce-frame-pointers=yes",
        )
        .env("IPC_SANITIZER", "address")
        .env(
            "ASAN_OPTIONS",
            "detect_leaks=1:abort_on_error=0:halt_on_error=1:detect_stack_use_after_return=1:handle_sigbus=0:handle_segv=1",
        );
    println!("sanitize: the test suite under AddressSanitizer (target/asan)");
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run cargo +nightly: {e}"))?;
    if status.success() {
        println!("sanitize: clean: no AddressSanitizer or LeakSanitizer report, every test passed");
        Ok(())
    } else {
        Err(format!(
            "the test suite under AddressSanitizer failed ({status}): see the report above"
        ))
    }
}
