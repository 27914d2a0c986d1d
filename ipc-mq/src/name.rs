//! POSIX queue names, validated before any system call.

use std::ffi::CString;

use crate::error::{Error, Result};

/// The longest name after the leading `/` (Linux `NAME_MAX`).
pub const NAME_MAX: usize = 255;

/// The reason given for a name over [`NAME_MAX`] (and for the kernel's `ENAMETOOLONG`).
pub(crate) const TOO_LONG: &str = "it is longer than 255 bytes after the leading `/` (NAME_MAX)";

/// What is wrong with `name`, if anything.
fn problem(name: &str) -> Option<&'static str> {
    let Some(rest) = name.strip_prefix('/') else {
        return Some("it must start with `/`");
    };
    if rest.is_empty() {
        Some("it needs at least one byte after the `/`")
    } else if rest.len() > NAME_MAX {
        Some(TOO_LONG)
    } else if rest.contains('/') {
        Some("it may contain no `/` after the first")
    } else if rest.contains('\0') {
        Some("it may contain no NUL byte")
    } else if rest == "." || rest == ".." {
        Some("`/.` and `/..` are not queue names")
    } else {
        None
    }
}

/// Checks a POSIX queue name and returns it NUL-terminated.
///
/// A valid name is `/` followed by 1..=[`NAME_MAX`] bytes containing no `/` and no NUL, and not
/// `.` or `..`. Anything else is [`Error::InvalidName`], found without a system call (the kernel
/// would report a slash inside the name as a misleading `EACCES`).
pub(crate) fn validate(name: &str) -> Result<CString> {
    if let Some(reason) = problem(name) {
        return Err(Error::InvalidName {
            name: name.to_owned(),
            reason,
        });
    }
    CString::new(name).map_err(|_| Error::InvalidName {
        name: name.to_owned(),
        reason: "it may contain no NUL byte",
    })
}

/// Whether `name` is a valid POSIX message queue name (see [`MessageQueue`](crate::MessageQueue)).
///
/// ```
/// assert!(ipc_mq::is_valid_name("/jobs"));
/// assert!(!ipc_mq::is_valid_name("jobs"));
/// assert!(!ipc_mq::is_valid_name("/a/b"));
/// ```
pub fn is_valid_name(name: &str) -> bool {
    problem(name).is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate("/a").is_ok());
        assert!(validate(&format!("/{}", "x".repeat(255))).is_ok());
        for bad in ["", "/", "a", "/a/b", "//x", "/.", "/..", "/a\0b"] {
            assert!(validate(bad).is_err(), "{bad:?}");
            assert!(!is_valid_name(bad), "{bad:?}");
        }
        let long = format!("/{}", "x".repeat(256));
        match validate(&long) {
            Err(Error::InvalidName { name, reason }) => {
                assert_eq!((name.as_str(), reason), (long.as_str(), TOO_LONG));
            }
            other => panic!("{other:?}"),
        }
    }
}
