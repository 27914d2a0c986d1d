//! POSIX name validation, before any syscall.

use crate::error::{Error, Result};

/// The longest name after the leading `/` (NAME_MAX).
pub(crate) const NAME_MAX: usize = 255;

/// Checks that `name` is `/` + 1..=255 bytes without `/` or NUL, and not `/.` or `/..`.
pub(crate) fn validate(name: &str) -> Result<()> {
    let rest = name.strip_prefix('/').ok_or(Error::InvalidName)?;
    if rest.is_empty()
        || rest.len() > NAME_MAX
        || rest == "."
        || rest == ".."
        || rest.bytes().any(|b| b == b'/' || b == 0)
    {
        return Err(Error::InvalidName);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::validate;

    #[test]
    fn names() {
        assert!(validate("/a").is_ok());
        for bad in ["", "/", "a", "/a/b", "/.", "/..", "/a\0"] {
            assert!(validate(bad).is_err(), "{bad:?}");
        }
        assert!(validate(&format!("/{}", "x".repeat(255))).is_ok());
        assert!(validate(&format!("/{}", "x".repeat(256))).is_err());
    }
}
