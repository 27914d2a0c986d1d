//! `cargo xtask tidy`: the workspace's structural rules, checked (also run as a `#[test]`).

use std::fs;
use std::path::{Path, PathBuf};

use crate::util::{Result, check_flags, mechanism_crates, members, root, wants_help};

const HELP: &str = "\
cargo xtask tidy

Checks the rules of ARCHITECTURE.md that a compiler does not: every member opts into the
workspace lints; every mechanism crate has a README that is its crate doc, an integration-test
binary (tests/it/main.rs) and a bench; library crates depend only on rustix, nix, libc and
static_assertions; unsafe blocks appear in library code only in src/sys.rs; xtask depends on no
ipc-* crate; every demo binary is in the tour (ipc-examples/demos.txt) and every tour entry has
a binary.
";

/// The only crates a library crate may depend on.
const ALLOWED_DEPS: [&str; 4] = ["rustix", "nix", "libc", "static_assertions"];
/// Ecosystem integrations a library crate may offer as an optional feature, off by default.
const OPTIONAL_DEPS: [&str; 1] = ["tokio"];

pub(crate) fn run(args: &[String]) -> Result {
    if wants_help(args, HELP) {
        return Ok(());
    }
    check_flags(args, &[], HELP)?;
    let problems = check(&root());
    if !problems.is_empty() {
        return Err(format!("tidy:\n  {}", problems.join("\n  ")));
    }
    crate::readme::build_all()?;
    println!("tidy: ok");
    Ok(())
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_default()
}

/// The `[section]` of a manifest: its lines up to the next section header.
fn section<'a>(manifest: &'a str, name: &str) -> Vec<&'a str> {
    let header = format!("[{name}]");
    let mut lines = manifest.lines().skip_while(|l| l.trim() != header);
    lines.next();
    lines
        .take_while(|l| !l.trim_start().starts_with('['))
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .collect()
}

fn dep_names(manifest: &str, name: &str) -> Vec<String> {
    section(manifest, name)
        .iter()
        .filter_map(|l| l.split(['=', '.']).next())
        .map(|k| k.trim().to_owned())
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                rust_files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
}

/// Every rule violation under `root`, one line each.
pub(crate) fn check(root: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    for m in members() {
        let manifest = read(&root.join(&m).join("Cargo.toml"));
        if !section(&manifest, "lints")
            .iter()
            .any(|l| l.replace(' ', "") == "workspace=true")
        {
            problems.push(format!(
                "{m}/Cargo.toml: missing `[lints] workspace = true`"
            ));
        }
    }
    for m in mechanism_crates() {
        let dir = root.join(&m);
        let manifest = read(&dir.join("Cargo.toml"));
        for line in section(&manifest, "dependencies") {
            let Some(dep) = line.split(['=', '.']).next().map(str::trim) else {
                continue;
            };
            if ALLOWED_DEPS.contains(&dep) {
                continue;
            }
            // An ecosystem integration: optional, behind a feature of the same name, off by
            // default.
            let optional = line.replace(' ', "").contains("optional=true");
            let off_by_default = !section(&manifest, "features")
                .iter()
                .any(|l| l.trim_start().starts_with("default") && l.contains(dep));
            if !(OPTIONAL_DEPS.contains(&dep) && optional && off_by_default) {
                problems.push(format!(
                    "{m}: library dependency `{dep}` (allowed: {}; and {} as an optional \
                     feature, off by default)",
                    ALLOWED_DEPS.join(", "),
                    OPTIONAL_DEPS.join(", ")
                ));
            }
        }
        if !dir.join("README.md").is_file() {
            problems.push(format!("{m}: no README.md"));
        }
        if !read(&dir.join("src/lib.rs")).starts_with("#![doc = include_str!(\"../README.md\")]") {
            problems.push(format!(
                "{m}/src/lib.rs: must start with #![doc = include_str!(\"../README.md\")]"
            ));
        }
        // A crate whose issue has not landed yet is a placeholder: it has no tests or bench.
        let placeholder = read(&dir.join("README.md")).contains("placeholder in the workspace");
        if !placeholder && !dir.join("tests/it/main.rs").is_file() {
            problems.push(format!("{m}: no integration-test binary tests/it/main.rs"));
        }
        let group = m.trim_start_matches("ipc-");
        if !placeholder && !dir.join(format!("benches/{group}.rs")).is_file() {
            problems.push(format!("{m}: no bench benches/{group}.rs"));
        }
        let mut files = Vec::new();
        rust_files(&dir.join("src"), &mut files);
        for f in files {
            if f.file_name().is_some_and(|n| n == "sys.rs") {
                continue;
            }
            for (i, line) in read(&f).lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                if code.contains("unsafe {") {
                    problems.push(format!(
                        "{}:{}: unsafe block outside src/sys.rs",
                        f.strip_prefix(root).unwrap_or(&f).display(),
                        i + 1
                    ));
                }
            }
        }
    }
    let xtask = read(&root.join("xtask/Cargo.toml"));
    for dep in dep_names(&xtask, "dependencies") {
        if dep.starts_with("ipc-") {
            problems.push(format!(
                "xtask depends on {dep}: it must drive cargo instead"
            ));
        }
    }
    let listed: Vec<String> = read(&root.join("ipc-examples/demos.txt"))
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split('\t').next())
        .map(|n| n.trim().to_owned())
        .collect();
    let mut bins = Vec::new();
    if let Ok(entries) = fs::read_dir(root.join("ipc-examples/src/bin")) {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if let Some(stem) = n.strip_suffix(".rs") {
                bins.push(stem.to_owned());
            }
        }
    }
    for b in &bins {
        if !listed.contains(b) {
            problems.push(format!("demo `{b}` is not in ipc-examples/demos.txt"));
        }
    }
    for l in &listed {
        if !bins.contains(l) {
            problems.push(format!(
                "ipc-examples/demos.txt lists `{l}` but src/bin/{l}.rs does not exist"
            ));
        }
    }
    problems.extend(crate::vocabulary::check(root));
    for m in mechanism_crates() {
        let readme = read(&root.join(&m).join("README.md"));
        problems.extend(crate::readme::lint(&m, &readme));
    }
    problems
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_workspace_is_tidy() {
        let problems = super::check(&crate::util::root());
        assert!(problems.is_empty(), "tidy:\n  {}", problems.join("\n  "));
    }
}
