//! POSIX names, validated before any system call, and where they live.
//!
//! The crate opens `/dev/shm/NAME` itself, as glibc's `shm_open` does (`O_NOFOLLOW |
//! O_CLOEXEC`), so the one limit is the file system's: 255 bytes after the slash, the same for
//! create, open, unlink and `remove_stale`.

use crate::error::{Error, Result};

/// The longest name after the leading `/` (NAME_MAX, a file name in `/dev/shm`).
pub(crate) const NAME_MAX: usize = 255;

/// Where POSIX shared memory lives on Linux.
pub(crate) const SHM_DIR: &str = "/dev/shm/";

/// Checks that `name` is `/` + 1..=255 bytes without `/` or NUL, and not `/.` or `/..`, and
/// returns the path of the object.
pub(crate) fn validate(name: &str) -> Result<String> {
    let bad = |reason| Error::InvalidName {
        name: name.to_owned(),
        reason,
    };
    let rest = name
        .strip_prefix('/')
        .ok_or_else(|| bad("a POSIX name starts with `/`"))?;
    if rest.is_empty() {
        return Err(bad("nothing after the `/`"));
    }
    if rest.len() > NAME_MAX {
        return Err(bad("longer than 255 bytes after the `/`"));
    }
    if rest.contains('/') {
        return Err(bad("a `/` after the first"));
    }
    if rest.contains('\0') {
        return Err(bad("a NUL byte"));
    }
    if rest == "." || rest == ".." {
        return Err(bad("`.` and `..` are not names"));
    }
    Ok(format!("{SHM_DIR}{rest}"))
}

#[cfg(test)]
mod tests {
    use super::validate;

    #[test]
    fn names() {
        assert_eq!(validate("/a").unwrap(), "/dev/shm/a");
        for bad in ["", "/", "a", "/a/b", "/.", "/..", "/a\0", "//a"] {
            assert!(validate(bad).is_err(), "{bad:?}");
        }
        assert!(validate(&format!("/{}", "x".repeat(255))).is_ok());
        assert!(validate(&format!("/{}", "x".repeat(256))).is_err());
    }
}
