//! Paths and names, checked before any system call.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result, parent_of};

/// The longest file name (one path component) Linux file systems accept, in bytes.
pub(crate) const NAME_MAX: usize = 255;
/// The kernel's limit on a path, including its terminating NUL: paths are at most 4095 bytes.
pub(crate) const PATH_MAX: usize = 4096;

fn invalid(path: &Path, reason: &'static str) -> Error {
    Error::InvalidName {
        path: path.to_owned(),
        reason,
    }
}

/// Checks a path before any system call: not empty, no NUL byte, no component longer than
/// `NAME_MAX`, shorter than `PATH_MAX`.
pub(crate) fn check_path(path: &Path) -> Result<()> {
    let bytes = path.as_os_str().as_bytes();
    if bytes.is_empty() {
        return Err(invalid(path, "the path is empty"));
    }
    if bytes.contains(&0) {
        return Err(invalid(path, "the path contains a NUL byte"));
    }
    if bytes.len() >= PATH_MAX {
        return Err(invalid(
            path,
            "the path is longer than PATH_MAX allows (4095 bytes)",
        ));
    }
    if bytes.split(|&b| b == b'/').any(|c| c.len() > NAME_MAX) {
        return Err(invalid(
            path,
            "a path component is longer than NAME_MAX (255 bytes)",
        ));
    }
    Ok(())
}

/// A checked path that ends in a file name, split into its directory and that name.
#[derive(Debug)]
pub(crate) struct Named<'a> {
    pub(crate) path: &'a Path,
    pub(crate) dir: &'a Path,
    pub(crate) name: &'a OsStr,
}

impl Named<'_> {
    pub(crate) fn name_owned(&self) -> OsString {
        self.name.to_owned()
    }
}

/// Checks `path` ([`check_path`]) and that it ends in a file name: not `/`, not `.` or `..`,
/// no trailing slash (which would ask for a directory).
pub(crate) fn named(path: &Path) -> Result<Named<'_>> {
    check_path(path)?;
    let bytes = path.as_os_str().as_bytes();
    let last = bytes.rsplit(|&b| b == b'/').next().unwrap_or_default();
    if last.is_empty() || last == b"." || last == b".." {
        return Err(invalid(
            path,
            "the path must end in a file name (not `/`, `.`, `..` or a trailing slash)",
        ));
    }
    Ok(Named {
        path,
        dir: parent_of(path),
        name: OsStr::from_bytes(last),
    })
}

/// Checks a single path component (a name inside a directory, a prefix): not empty, not `.`
/// or `..`, no `/` or NUL, at most `NAME_MAX` bytes.
pub(crate) fn check_component(name: &OsStr) -> Result<()> {
    let b = name.as_bytes();
    let path = || PathBuf::from(name);
    let reason = if b.is_empty() {
        "the name is empty"
    } else if b == b"." || b == b".." {
        "the name is `.` or `..`"
    } else if b.contains(&b'/') {
        "the name contains `/`: it must be a single path component"
    } else if b.contains(&0) {
        "the name contains a NUL byte"
    } else if b.len() > NAME_MAX {
        "the name is longer than NAME_MAX (255 bytes)"
    } else {
        return Ok(());
    };
    Err(Error::InvalidName {
        path: path(),
        reason,
    })
}
