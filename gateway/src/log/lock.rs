//! Exclusive lock on a log folder, so two writers never interleave.

use std::fs::{File, OpenOptions};
use std::path::Path;

use super::LogError;

/// Holds `flock(LOCK_EX)` on `<dir>/LOCK` until dropped. The kernel drops
/// the lock when the process dies, so a killed gateway never leaves a
/// stale lock behind.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock or fails at once with [`LogError::Locked`].
    pub(crate) fn acquire(dir: &Path) -> Result<Self, LogError> {
        let path = dir.join("LOCK");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| LogError::io("open lock file", &path, e))?;
        try_lock(&file).map_err(|e| {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                LogError::Locked(dir.to_path_buf())
            } else {
                LogError::io("lock", &path, e)
            }
        })?;
        Ok(Self { _file: file })
    }
}

#[cfg(unix)]
fn try_lock(file: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: `file` is an open file owned by the caller for the whole call,
    // so the descriptor is valid; flock takes no pointers. Exercised by
    // `second_open_is_locked_out` in tests/log_recovery.rs.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(unix))]
fn try_lock(_file: &File) -> std::io::Result<()> {
    // Only Unix is supported for serving; elsewhere the lock is advisory-free.
    Ok(())
}
