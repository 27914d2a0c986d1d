//! The lifetime model's one vocabulary (ARCHITECTURE.md, "The lifetime model"), checked against
//! each crate's public names. Part of `cargo xtask tidy`.
//!
//! The crates are independent, so each writes the small shared types itself; this check keeps
//! their shapes identical: the same type and variant names, the same verbs, the same signatures,
//! and none of the words they replaced.

use std::fs;
use std::path::{Path, PathBuf};

/// Crates with named objects (POSIX names or FIFO paths).
const NAMED: [&str; 4] = ["ipc-fifo", "ipc-mq", "ipc-sem", "ipc-shm"];
/// Crates with System V kinds, each in a public `sysv` module.
const SYSV: [&str; 3] = ["ipc-mq", "ipc-sem", "ipc-shm"];
/// Every mechanism crate.
const ALL: [&str; 5] = ["ipc-fifo", "ipc-mq", "ipc-pipe", "ipc-sem", "ipc-shm"];

/// The enums every named crate defines, with exactly these variants.
const ENUMS: [(&str, &[&str]); 3] = [
    ("Opened", &["Created", "Existing"]),
    ("OnDrop", &["Remove", "Keep"]),
    ("OwnerCheck", &["SameUid", "AnyUid"]),
];

/// Signatures (whitespace-insensitive prefixes) every named crate has somewhere in `src/`.
const VERBS: [&str; 11] = [
    "pub fn open_or_create(",
    "pub fn persist(&mut self)",
    "pub fn is_owner(&self) -> bool",
    "pub fn remove(self) -> Result<()>", // `mut self` is the same shape
    "pub fn remove_stale(",
    "pub fn unlink(",
    "pub const fn owner_check(self, check: OwnerCheck)",
    "pub const fn on_drop(self, on_drop: OnDrop)",
    "pub const fn replace_stale(self)",
    "pub const fn mode(self, mode: u32)",
    "pub const fn options()",
];

/// Error variants every named crate's `Error` has.
const ERRORS: [&str; 7] = [
    "InvalidName",
    "InvalidMode",
    "AlreadyExists",
    "NotFound",
    "PermissionDenied",
    "WrongOwner",
    "OwnerAlive",
];

/// What each System V module (`src/sysv.rs`, or `src/sysv/*.rs`) has.
const SYSV_ITEMS: [&str; 7] = [
    "pub struct Key(",
    "pub const PRIVATE: Key",
    "pub const fn new(key: i32) -> Key",
    "pub fn from_path(",
    "pub const fn as_raw(self) -> i32",
    "pub fn remove(id: i32) -> Result<()>",
    "pub fn remove_stale(key: Key) -> Result<()>",
];

/// Words the vocabulary replaced; none may be public again.
const RETIRED: [&str; 11] = [
    "fn into_persistent",
    "fn persist(self",
    "enum DirStatus",
    "enum Owner {",
    "Owner::Me",
    "Owner::Any",
    "Anyone",
    "OwnerCheck::Ours",
    "fn create_with_mode",
    "fn create_with(",
    "fn remove_id",
];

fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn sources(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = fs::read_to_string(&p).unwrap_or_default();
                out.push((p, text));
            }
        }
    }
    out.sort();
    out
}

/// Code without comments, one string, whitespace squashed (doc examples are comments too);
/// `(mut self` reads as `(self`: whether a body mutates its receiver is not a shape.
fn code(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(|l| {
            let t = l.trim_start();
            if t.starts_with("//") { "" } else { l }
        })
        .collect();
    squash(&lines.join("\n")).replace("(mut self", "(self")
}

/// The variants of `pub enum NAME { .. }` in `code` (squashed, comment-free), if it is there.
fn variants(code: &str, name: &str) -> Option<Vec<String>> {
    let start = code.find(&format!("pub enum {name} {{"))?;
    let body = &code[start..];
    let open = body.find('{')?;
    let mut depth = 0usize;
    let mut end = None;
    for (i, c) in body.char_indices().skip(open) {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    end = Some(i);
                    break;
                }
            }
            _ => {}
        }
    }
    let inner = &body[open + 1..end?];
    // Drop attributes, then split on top-level commas.
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut cur = String::new();
    for c in inner.chars() {
        match c {
            '[' | '(' | '{' => depth += 1,
            ']' | ')' | '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    Some(
        out.iter()
            .map(|v| {
                let mut v = v.trim();
                while let Some(rest) = v.strip_prefix("#[") {
                    v = rest.split_once(']').map_or("", |(_, r)| r).trim();
                }
                v.split(|c: char| !c.is_alphanumeric() && c != '_')
                    .next()
                    .unwrap_or("")
                    .to_owned()
            })
            .filter(|v| !v.is_empty())
            .collect(),
    )
}

/// Every departure from the vocabulary under `root`, one line each.
pub(crate) fn check(root: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    for krate in ALL {
        let files = sources(&root.join(krate).join("src"));
        let all: String = files.iter().map(|(_, t)| code(t)).collect::<Vec<_>>().join(" ");
        if !all.contains("pub type Result<T, E = Error> = std::result::Result<T, E>;") {
            problems.push(format!(
                "{krate}: no `pub type Result<T, E = Error> = std::result::Result<T, E>;`"
            ));
        }
        if !NAMED.contains(&krate) {
            continue;
        }
        for (name, want) in ENUMS {
            match variants(&all, name) {
                None => problems.push(format!("{krate}: no `pub enum {name}`")),
                Some(got) if got != want => problems.push(format!(
                    "{krate}: `enum {name}` has variants {got:?}, the vocabulary says {want:?}"
                )),
                Some(_) => {}
            }
        }
        for verb in VERBS {
            if !all.contains(&squash(verb)) {
                problems.push(format!("{krate}: no `{verb}`"));
            }
        }
        match variants(&all, "Error") {
            None => problems.push(format!("{krate}: no `pub enum Error`")),
            Some(got) => {
                for e in ERRORS {
                    if !got.iter().any(|g| g == e) {
                        problems.push(format!("{krate}: `Error` has no variant `{e}`"));
                    }
                }
            }
        }
        for (path, text) in &files {
            let c = code(text);
            for word in RETIRED {
                if c.contains(&squash(word)) {
                    problems.push(format!(
                        "{}: uses the retired `{word}` (see ARCHITECTURE.md, The lifetime model)",
                        path.strip_prefix(root).unwrap_or(path).display()
                    ));
                }
            }
        }
        if SYSV.contains(&krate) {
            if !all.contains("pub mod sysv") {
                problems.push(format!("{krate}: no public `sysv` module"));
            }
            let sysv: String = files
                .iter()
                .filter(|(p, _)| {
                    p.components().any(|c| c.as_os_str() == "sysv")
                        || p.file_stem().is_some_and(|s| s == "sysv")
                })
                .map(|(_, t)| code(t))
                .collect::<Vec<_>>()
                .join(" ");
            for item in SYSV_ITEMS {
                if !sysv.contains(&squash(item)) {
                    problems.push(format!("{krate}: its sysv module has no `{item}`"));
                }
            }
            if !all.contains("impl From<i32> for Key") {
                problems.push(format!("{krate}: no `impl From<i32> for Key`"));
            }
        }
    }
    let arch = fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap_or_default();
    for word in ENUMS
        .iter()
        .flat_map(|(n, vs)| std::iter::once(*n).chain(vs.iter().copied()))
        .chain(["remove_stale", "open_or_create", "persist", "replace_stale", "owner_check"])
    {
        if !arch.contains(word) {
            problems.push(format!(
                "ARCHITECTURE.md: the lifetime model's table does not mention `{word}`"
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::{code, variants};

    #[test]
    fn enum_variants_are_read_through_attributes_and_fields() {
        let src = "/// Doc.\n#[derive(Debug)]\npub enum OwnerCheck {\n    /// Ours.\n    #[default]\n    \
                   SameUid,\n    AnyUid,\n}\npub enum Error { A { x: u32, y: (u8, u8) }, B(i32), C }";
        let c = code(src);
        assert_eq!(variants(&c, "OwnerCheck").unwrap(), ["SameUid", "AnyUid"]);
        assert_eq!(variants(&c, "Error").unwrap(), ["A", "B", "C"]);
        assert!(variants(&c, "Opened").is_none());
    }
}
