//! POSIX queue names, validated before any system call.

use std::ffi::CString;

use crate::error::{Error, Result};

/// The longest name after the leading `/` (Linux `NAME_MAX`).
pub const NAME_MAX: usize = 255;

/// Checks a POSIX queue name and returns it NUL-terminated.
///
/// A valid name is `/` followed by 1..=[`NAME_MAX`] bytes containing no `/` and no NUL, and not
/// `.` or `..`. Anything else is [`Error::InvalidName`], found without a system call (the kernel
/// would report a slash inside the name as a misleading `EACCES`).
pub(crate) fn validate(name: &str) -> Result<CString> {
    let rest = name.strip_prefix('/').ok_or(Error::InvalidName)?;
    if rest.is_empty()
        || rest.len() > NAME_MAX
        || rest.bytes().any(|b| b == b'/' || b == 0)
        || rest == "."
        || rest == ".."
    {
        return Err(Error::InvalidName);
    }
    CString::new(name).map_err(|_| Error::InvalidName)
}

/// Whether `name` is a valid POSIX message queue name (see [`MessageQueue`](crate::MessageQueue)).
///
/// ```
/// assert!(ipc_mq::is_valid_name("/jobs"));
/// assert!(!ipc_mq::is_valid_name("jobs"));
/// assert!(!ipc_mq::is_valid_name("/a/b"));
/// ```
pub fn is_valid_name(name: &str) -> bool {
    validate(name).is_ok()
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
        }
        assert!(validate(&format!("/{}", "x".repeat(256))).is_err());
    }
}
