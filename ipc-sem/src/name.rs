//! POSIX names, validated before any syscall, and the files in `/dev/shm` they stand for.

use std::ffi::CString;

use crate::error::{Error, Result};
use crate::file::SHM_DIR;

/// The longest POSIX semaphore name after the leading slash: `NAME_MAX` (255) minus the
/// `sem.` prefix glibc puts in front of the file in `/dev/shm`.
pub const NAME_MAX: usize = 251;

/// The longest name of a [`NamedMutex`](crate::NamedMutex) after the slash: `NAME_MAX`, as for
/// every POSIX shared-memory object.
pub(crate) const SHM_NAME_MAX: usize = 255;

/// Checks `name` (`/` + 1..=`max` bytes, no `/` or NUL, not `.`/`..`); returns the part after
/// the slash.
fn validate(name: &str, max: usize) -> Result<&str> {
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
    if rest.len() > max {
        return bad(if max == NAME_MAX {
            "longer than 251 bytes after '/'"
        } else {
            "longer than 255 bytes after '/'"
        });
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
    Ok(rest)
}

fn path(file: String) -> CString {
    // Validated names hold no NUL.
    CString::new(file).unwrap_or_default()
}

/// The file glibc keeps a named semaphore in: `/dev/shm/sem.NAME`.
pub(crate) fn sem_path(name: &str) -> Result<CString> {
    let rest = validate(name, NAME_MAX)?;
    Ok(path(format!("{SHM_DIR}/sem.{rest}")))
}

/// The file of a POSIX shared-memory object (`shm_open`): `/dev/shm/NAME`.
pub(crate) fn shm_path(name: &str) -> Result<CString> {
    let rest = validate(name, SHM_NAME_MAX)?;
    Ok(path(format!("{SHM_DIR}/{rest}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        assert!(sem_path("/a").is_ok());
        assert_eq!(sem_path("/a").unwrap().to_str().unwrap(), "/dev/shm/sem.a");
        assert!(sem_path(&format!("/{}", "x".repeat(251))).is_ok());
        assert!(shm_path(&format!("/{}", "x".repeat(255))).is_ok());
        for bad in ["", "a", "/", "/a/b", "/.", "/..", "/a\0b"] {
            assert!(
                matches!(sem_path(bad), Err(Error::InvalidName { .. })),
                "{bad:?}"
            );
            assert!(matches!(shm_path(bad), Err(Error::InvalidName { .. })));
        }
        assert!(sem_path(&format!("/{}", "x".repeat(252))).is_err());
        assert!(shm_path(&format!("/{}", "x".repeat(256))).is_err());
    }
}
