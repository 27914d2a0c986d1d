//! The declared `rust-version`, checked with that very toolchain.

use std::process::{Command, Stdio};

use crate::util::{Result, root, run_cmd, target_dir};

/// The workspace's `rust-version` (`[workspace.package]`).
fn declared() -> Option<String> {
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).ok()?;
    manifest.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == "rust-version").then(|| v.trim().trim_matches('"').to_owned())
    })
}

fn have(toolchain: &str) -> bool {
    Command::new("cargo")
        .arg(format!("+{toolchain}"))
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `cargo +<rust-version> check --workspace --all-targets --all-features`, installing the
/// toolchain with rustup (minimal profile) if it is missing; says plainly that it skipped when
/// it cannot be had (no rustup, or no network).
pub(crate) fn check() -> Result {
    let Some(v) = declared() else {
        return Err("Cargo.toml declares no rust-version".into());
    };
    if !have(&v) {
        println!("msrv: installing Rust {v} (minimal) to check the declared rust-version");
        let installed = Command::new("rustup")
            .args(["toolchain", "install", &v, "--profile", "minimal"])
            .status()
            .is_ok_and(|s| s.success());
        if !installed || !have(&v) {
            println!(
                "msrv: SKIPPED: Rust {v} (the declared rust-version) is not installed and \
                 rustup could not install it; the declared version was not checked"
            );
            return Ok(());
        }
    }
    let mut cmd = Command::new("cargo");
    cmd.arg(format!("+{v}"))
        .args([
            "check",
            "--quiet",
            "--workspace",
            "--all-targets",
            "--all-features",
        ])
        .current_dir(root())
        .env("CARGO_TARGET_DIR", target_dir().join("msrv"));
    for var in [
        "RUSTC",
        "RUSTDOC",
        "CARGO",
        "RUSTC_WRAPPER",
        "RUSTUP_TOOLCHAIN",
    ] {
        cmd.env_remove(var);
    }
    run_cmd(&mut cmd).map_err(|e| format!("the declared rust-version {v} does not build: {e}"))?;
    println!("msrv: the workspace builds with Rust {v}, its declared rust-version");
    Ok(())
}
