//! The README as a user reads it: its tokio example is the program `examples/async_server.rs`
//! (built and run as a doc test with the `tokio` feature), word for word.

/// The code of the README's fenced block that opens with `fence`.
fn block<'a>(readme: &'a str, fence: &str) -> &'a str {
    let start = readme.find(fence).expect("the README has the block") + fence.len() + 1;
    let len = readme[start..].find("\n```").expect("the block ends") + 1;
    &readme[start..start + len]
}

#[test]
fn the_readme_s_tokio_example_is_the_example_program_word_for_word() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let program = std::fs::read_to_string(format!("{root}/examples/async_server.rs")).unwrap();
    assert_eq!(block(&readme, "```rust,ignore"), program);
    // The only block that is not a doc test.
    assert_eq!(readme.matches("```rust,ignore").count(), 1);
}
