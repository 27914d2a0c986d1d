//! The README as a user reads it: whole programs (no hidden lines, no crate but this one and
//! std, no intra-doc links), and its tokio example is the program `examples/async_ring.rs`
//! (built and run as a doc test with the `tokio` feature), word for word.

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

/// The code blocks of `text`: (info string, code).
fn blocks(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some(info) = line.strip_prefix("```") {
            let mut code = String::new();
            for l in lines.by_ref() {
                if l.starts_with("```") {
                    break;
                }
                code.push_str(l);
                code.push('\n');
            }
            out.push((info.to_owned(), code));
        }
    }
    out
}

#[test]
fn the_readme_s_examples_are_whole_programs_a_user_can_paste() {
    let text = readme();
    let rust: Vec<_> = blocks(&text)
        .into_iter()
        .filter(|(info, _)| info.is_empty() || info.starts_with("rust"))
        .collect();
    assert!(rust.len() >= 4);
    for (info, code) in &rust {
        assert!(
            code.contains("fn main"),
            "```{info} block without fn main:\n{code}"
        );
        for line in code.lines() {
            assert!(
                !line.starts_with("# ") && line != "#",
                "hidden line {line:?}"
            );
        }
        for dep in ["rustix::", "libc::", "nix::"] {
            assert!(!code.contains(dep), "```{info} block uses {dep}");
        }
        assert!(code.contains("std::process::id()") || !code.contains("Shm::create"));
    }
    // Plain names or full links, never rustdoc's intra-doc links.
    let prose: String = text.split("```").step_by(2).collect::<Vec<_>>().join(" ");
    assert!(
        !prose.contains("[`"),
        "an intra-doc link in the README text"
    );
}

#[test]
fn the_readme_s_tokio_example_is_the_example_program_word_for_word() {
    let text = readme();
    let program = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/async_ring.rs"
    ))
    .unwrap();
    let ignored: Vec<_> = blocks(&text)
        .into_iter()
        .filter(|(info, _)| info == "rust,ignore")
        .collect();
    assert_eq!(ignored.len(), 1, "the only block that is not a doc test");
    assert_eq!(ignored[0].1, program);
}
