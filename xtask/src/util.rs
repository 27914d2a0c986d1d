//! Small helpers: the workspace root, running commands, argument checks.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The error type of every subcommand: a message for the user.
pub(crate) type Result<T = ()> = std::result::Result<T, String>;

/// The workspace root (the parent of xtask's manifest directory).
pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_path_buf()
}

/// The target directory (`CARGO_TARGET_DIR` or `<root>/target`).
pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// A `cargo` command (the cargo that runs xtask) in the workspace root.
pub(crate) fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

/// Runs `cmd` with inherited stdio and fails unless it exits with status 0.
pub(crate) fn run_cmd(cmd: &mut Command) -> Result {
    let shown = show(cmd);
    eprintln!("$ {shown}");
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run `{shown}`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{shown}` failed: {status}"))
    }
}

fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Prints `help` and returns true when `args` asks for it.
pub(crate) fn wants_help(args: &[String], help: &str) -> bool {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        print!("{help}");
        true
    } else {
        false
    }
}

/// Fails on any argument starting with `-` that is not in `known`.
pub(crate) fn check_flags(args: &[String], known: &[&str], help: &str) -> Result {
    match args
        .iter()
        .find(|a| a.starts_with('-') && !known.contains(&a.as_str()))
    {
        Some(bad) => Err(format!("unknown option `{bad}`\n\n{help}")),
        None => Ok(()),
    }
}

/// The workspace members that are mechanism crates (`ipc-*` directories with a Cargo.toml,
/// excluding the tour and the test kit), sorted.
pub(crate) fn mechanism_crates() -> Vec<String> {
    members()
        .into_iter()
        .filter(|m| m.starts_with("ipc-") && m != "ipc-examples" && m != "ipc-testkit")
        .collect()
}

/// Every workspace member directory name, found by scanning the root like the workspace's
/// `members` globs do.
pub(crate) fn members() -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(root()) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if (name.starts_with("ipc-") || name == "xtask")
                && e.path().join("Cargo.toml").is_file()
            {
                out.push(name);
            }
        }
    }
    out.sort();
    out
}
