//! POSIX semaphore names, validated before any syscall.

use std::ffi::CString;

use crate::error::{Error, Result};

/// The longest POSIX semaphore name after the leading slash: `NAME_MAX` (255) minus the
/// `sem.` prefix glibc puts in front of the file in `/dev/shm`.
pub const NAME_MAX: usize = 251;

/// Checks `name` and returns it NUL-terminated.
pub(crate) fn validate(name: &str) -> Result<CString> {
    let bad = |reason| {
        Err(Error::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    let Some(rest) = name.strip_prefix('/') else {
        return bad("must start with '/'");
    };
    if rest.is_empty() {
        return bad("must have at least one byte after '/'");
    }
    if rest.len() > NAME_MAX {
        return bad("longer than 251 bytes after '/'");
    }
    if rest.contains('/') {
        return bad("must not contain '/' after the first byte");
    }
    if rest.contains('\0') {
        return bad("must not contain NUL");
    }
    if rest == "." || rest == ".." {
        return bad("must not be '.' or '..'");
    }
    CString::new(name).or_else(|_| bad("must not contain NUL"))
}

/// The file glibc keeps a named semaphore in: `/dev/shm/sem.NAME`.
pub(crate) fn dev_shm_path(name: &str) -> String {
    format!("/dev/shm/sem.{}", &name[1..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        assert!(validate("/a").is_ok());
        assert!(validate(&format!("/{}", "x".repeat(251))).is_ok());
        for bad in ["", "a", "/", "/a/b", "/.", "/..", "/a\0b"] {
            assert!(
                matches!(validate(bad), Err(Error::InvalidName { .. })),
                "{bad:?}"
            );
        }
        assert!(validate(&format!("/{}", "x".repeat(252))).is_err());
    }
}
