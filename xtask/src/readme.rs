//! The crate READMEs' examples, as a user meets them: complete programs that build in a project
//! depending on that one crate.
//!
//! A README is also its crate's documentation (`#![doc = include_str!("../README.md")]`), so its
//! examples run as doc tests; but on a code host, or pasted into `src/main.rs`, rustdoc's hidden
//! lines (`# let name = ..`) are shown or missing. So every Rust block of a crate README must be
//! a whole program (`fn main`), with no hidden line, and `cargo xtask tidy` builds each one in a
//! scratch project whose only dependency is that crate (plus tokio, with the crate's `tokio`
//! feature, for an example that uses it).

use std::fs;
use std::path::Path;

use crate::util::{Result, cargo, mechanism_crates, root, run_cmd, target_dir};

/// One fenced Rust block of a README.
#[derive(Debug)]
pub(crate) struct Example {
    /// 1-based line of the opening fence.
    pub(crate) line: usize,
    /// The code.
    pub(crate) code: String,
}

/// The fenced Rust blocks of `markdown`: ```` ``` ````, ```` ```rust ````, with attributes (an
/// `ignore`d one too: a tokio example is `ignore` for rustdoc, which builds the crate without its
/// features, and is built here with them); not `text`, `toml`, `sh`.
pub(crate) fn examples(markdown: &str) -> Vec<Example> {
    let mut out = Vec::new();
    let mut lines = markdown.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        let Some(info) = line.trim_start().strip_prefix("```") else {
            continue;
        };
        let mut parts = info.split(',').map(str::trim);
        let lang = parts.next().unwrap_or("");
        let attrs: Vec<String> = parts.map(str::to_owned).collect();
        let is_rust = lang.is_empty() || lang == "rust";
        let mut code = String::new();
        for (_, l) in lines.by_ref() {
            if l.trim_start().starts_with("```") {
                break;
            }
            code.push_str(l);
            code.push('\n');
        }
        // A block that shows what does not compile is not a program to paste.
        if is_rust && !attrs.iter().any(|a| a == "compile_fail") {
            out.push(Example { line: i + 1, code });
        }
    }
    out
}

/// What is wrong with the examples of one README as written (cheap: no build).
pub(crate) fn lint(krate: &str, markdown: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for ex in examples(markdown) {
        let at = format!("{krate}/README.md:{}", ex.line);
        if !ex.code.contains("fn main(") {
            problems.push(format!(
                "{at}: a README example must be a whole program (fn main)"
            ));
        }
        for (n, l) in ex.code.lines().enumerate() {
            let t = l.trim_start();
            if t == "#" || t.starts_with("# ") || t.starts_with("#!#") {
                problems.push(format!(
                    "{at}: line {} of the example is a hidden doc-test line: readers of the \
                     README see it (or miss it)",
                    n + 1
                ));
            }
        }
        if ex.code.contains("rustix::") && krate != "ipc-pipe" {
            // A user's project depending on one crate does not have rustix.
            problems.push(format!(
                "{at}: the example uses rustix, which a project depending only on {krate} lacks"
            ));
        }
    }
    problems
}

/// Builds every README example of every mechanism crate in a scratch project that depends on
/// that crate alone (under `target/readme-examples`).
pub(crate) fn build_all() -> Result {
    let scratch = target_dir().join("readme-examples");
    let mut built = 0;
    for krate in mechanism_crates() {
        let dir = root().join(&krate);
        let markdown = fs::read_to_string(dir.join("README.md")).unwrap_or_default();
        let exs = examples(&markdown);
        if exs.is_empty() {
            continue;
        }
        let project = scratch.join(&krate);
        let bins = project.join("src/bin");
        let _ = fs::remove_dir_all(&bins);
        fs::create_dir_all(&bins).map_err(|e| format!("{}: {e}", bins.display()))?;
        let tokio = exs.iter().any(|e| e.code.contains("tokio::"));
        let mut manifest = format!(
            "[package]\nname = \"readme-{krate}\"\nversion = \"0.0.0\"\nedition = \"2024\"\n\
             publish = false\n\n[dependencies]\n{krate} = {{ path = {:?}{} }}\n",
            dir.display().to_string(),
            if tokio {
                ", features = [\"tokio\"]"
            } else {
                ""
            }
        );
        if tokio {
            manifest.push_str(
                "tokio = { version = \"1.54\", features = [\"rt\", \"macros\", \"time\", \"net\", \"io-util\"] }\n",
            );
        }
        // Its own workspace: not a member of ours.
        manifest.push_str("\n[workspace]\n");
        write(&project.join("Cargo.toml"), &manifest)?;
        for (i, ex) in exs.iter().enumerate() {
            let header = format!(
                "// {krate}/README.md line {}: built by `cargo xtask tidy`\n",
                ex.line
            );
            write(
                &bins.join(format!("example_{}.rs", i + 1)),
                &format!("{header}{}", ex.code),
            )?;
            built += 1;
        }
        let mut cmd = cargo();
        cmd.args(["build", "--quiet", "--bins", "--manifest-path"])
            .arg(project.join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", scratch.join("target"));
        run_cmd(&mut cmd).map_err(|e| {
            format!(
                "{krate}: a README example does not build as a program depending only on \
                 {krate} (scratch project {}): {e}",
                project.display()
            )
        })?;
    }
    println!("tidy: {built} README examples build as programs depending on their crate alone");
    Ok(())
}

fn write(path: &Path, text: &str) -> Result {
    if fs::read_to_string(path).ok().as_deref() == Some(text) {
        return Ok(());
    }
    fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::{examples, lint};

    #[test]
    fn rust_blocks_are_found_and_linted() {
        let md = "# x\n```rust\nfn main() {}\n```\n```text\nno\n```\n```\n# let a = 1;\nlet b = a;\n```\n\
                  ```rust,ignore\nfn main() { tokio::spawn(async {}); }\n```\n";
        let ex = examples(md);
        assert_eq!(ex.len(), 3);
        assert_eq!(ex[0].line, 2);
        assert!(
            ex[2].code.contains("tokio::spawn"),
            "an ignored block is built too"
        );
        let p = lint("ipc-x", md);
        assert_eq!(p.len(), 2, "{p:?}"); // the second block: no main, one hidden line
    }
}
