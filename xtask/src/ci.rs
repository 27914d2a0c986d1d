//! `cargo xtask ci`: what CI runs before the demos and the bench smoke run.

use crate::util::{Result, cargo, check_flags, run_cmd, wants_help};

const HELP: &str = "\
cargo xtask ci

Runs: cargo fmt --all --check; cargo clippy --workspace --all-targets -- -D warnings (also
with --all-features);
RUSTDOCFLAGS=-Dwarnings cargo doc --workspace --no-deps; cargo xtask tidy (which builds every
README example as its own program); cargo package of every library crate (verified: built from
the .crate alone); the declared rust-version checked with that toolchain (installed with rustup
if missing, skipped with a plain message if it cannot be); cargo xtask test;
then, when a nightly toolchain is installed (it says plainly that it skipped them otherwise),
every fuzz target for a short bounded time (IPC_CI_FUZZ_SECS, default 10 s each) and
cargo xtask sanitize.
";

pub(crate) fn run(args: &[String]) -> Result {
    if wants_help(args, HELP) {
        return Ok(());
    }
    check_flags(args, &[], HELP)?;
    run_cmd(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run_cmd(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // Again with every crate's optional integration (tokio) turned on.
    run_cmd(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ]))?;
    run_cmd(
        cargo()
            .args(["doc", "--workspace", "--no-deps"])
            .env("RUSTDOCFLAGS", "-Dwarnings"),
    )?;
    crate::tidy::run(&[])?;
    // Each library crate as it would be published (license files, README, changelog; tests
    // and benches excluded on purpose), verified by building it from the .crate alone.
    let mut package = cargo();
    package.args(["package", "--quiet", "--allow-dirty"]);
    for m in crate::util::mechanism_crates() {
        package.args(["-p", &m]);
    }
    run_cmd(&mut package)?;
    crate::msrv::check()?;
    crate::test::run(&[])?;
    let secs = std::env::var("IPC_CI_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let outcomes = crate::fuzz::fuzz(&crate::fuzz::targets(), secs)?;
    crate::fuzz::report(&outcomes)?;
    crate::sanitize::sanitize()
}
