//! `cargo xtask`: the workspace's automation, std only.
//!
//! It depends on no ipc-* crate: it drives cargo (`cargo run`, `cargo test`, `cargo bench`) and
//! reads the kernel's tables of IPC objects, so it builds in seconds.
#![forbid(unsafe_code)]

mod bench;
mod ci;
mod clean;
mod demo;
mod fuzz;
mod msrv;
mod nightly;
#[allow(unreachable_pub)] // shared with ipc-testkit, where these items are public
mod objects;
mod readme;
mod sanitize;
mod test;
mod tidy;
mod util;
mod vocabulary;

use std::process::ExitCode;

const HELP: &str = "\
cargo xtask <command> [--help]

Commands:
  demo [--list] [NAME]   build ipc-examples and run the tour (or one demo)
  test                   workspace tests (unit, integration, doc), the demos, and a leak check
  bench [--smoke|--quick] [GROUP..]
                         run every crate's benchmarks, print ours vs raw, write target/ipc-bench/
  ci                     fmt check, clippy -D warnings, rustdoc -D warnings, tidy, then test
  clean                  remove IPC objects the workspace's tests or demos left behind
  fuzz [--time S] [T..]  build and run the libFuzzer targets (nightly; skipped without it)
  sanitize               the test suite under AddressSanitizer (nightly; skipped without it)
  tidy                   check the workspace's structural rules (also a #[test])
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        eprint!("{HELP}");
        return ExitCode::FAILURE;
    };
    let result = match cmd.as_str() {
        "demo" => demo::run(rest),
        "test" => test::run(rest),
        "bench" => bench::run(rest),
        "ci" => ci::run(rest),
        "clean" => clean::run(rest),
        "fuzz" => fuzz::run(rest),
        "sanitize" => sanitize::run(rest),
        "tidy" => tidy::run(rest),
        "help" | "--help" | "-h" => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        other => {
            eprintln!("unknown command `{other}`\n");
            eprint!("{HELP}");
            return ExitCode::FAILURE;
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask {cmd}: error: {e}");
            ExitCode::FAILURE
        }
    }
}
