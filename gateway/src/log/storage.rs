//! Where the log's segment files live: the local file system in
//! production ([`FsStorage`]), or a simulated disk ([`super::sim::SimDisk`])
//! that can lose power, so tests can prove what `fdatasync` guarantees.
//!
//! The trait covers the segment files and the folder holding them. The
//! `LOCK` file and the cursors stay on the local file system: the lock is a
//! process-level concern and the cursors have their own atomic-write helper.
//!
//! Calls go through `dyn` on purpose: the writer makes one `append` and one
//! `sync_data` call per batch (not per record), and readers one `read` per
//! 256 KiB chunk, so a virtual call costs nothing measurable while keeping
//! [`super::LogHandle`] and [`super::LogReader`] free of type parameters.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

/// An open segment file. The writer appends to it; readers read it from
/// the start.
pub trait StorageFile: Send + Sync {
    /// Appends all of `buf` at the end of the file (not durable until
    /// [`StorageFile::sync_data`] returns).
    fn append(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Makes every byte appended so far, and the file length, durable
    /// (`fdatasync`).
    fn sync_data(&mut self) -> io::Result<()>;
    /// Reads from the current position, like [`std::io::Read::read`].
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Whether `path` now names a different file than this open one (a
    /// restarted writer replaced an empty segment). `false` when unknown.
    fn replaced_at(&self, path: &Path) -> bool;
}

/// The file operations the log performs on its segments and their folder.
/// Errors are plain [`io::Error`]s; callers attach the operation and path.
pub trait Storage: Send + Sync + 'static {
    /// Names of the entries in `dir` (not sorted). `NotFound` if `dir`
    /// does not exist.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Creates `path` (truncating an existing file), writes `contents`,
    /// syncs the file and closes it. Not durable in the folder until
    /// [`Storage::sync_dir`].
    fn create_synced(&self, path: &Path, contents: &[u8]) -> io::Result<()>;
    /// Opens an existing file for appending.
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn StorageFile>>;
    /// Opens an existing file for reading from its start.
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn StorageFile>>;
    /// Replaces `buf` with the whole contents of `path`.
    fn read_all(&self, path: &Path, buf: &mut Vec<u8>) -> io::Result<()>;
    /// Cuts `path` to `len` bytes and syncs it.
    fn truncate_synced(&self, path: &Path, len: u64) -> io::Result<()>;
    /// Renames `from` to `to`, replacing `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes the file at `path`.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes creations, renames and removals in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Whether a file exists at `path`.
    fn exists(&self, path: &Path) -> bool;
    /// Length of the file at `path` in bytes. Recovery compares it with a
    /// sealed segment's footer instead of reading the segment.
    fn file_len(&self, path: &Path) -> io::Result<u64>;
}

/// The production storage: plain files, `fdatasync`, folder `fsync`.
#[derive(Debug, Clone, Copy, Default)]
pub struct FsStorage;

impl StorageFile for File {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        self.write_all(buf)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        File::sync_data(self)
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Read::read(self, buf)
    }

    fn replaced_at(&self, path: &Path) -> bool {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            match (self.metadata(), fs::metadata(path)) {
                (Ok(a), Ok(b)) => a.ino() != b.ino() || a.dev() != b.dev(),
                _ => false,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = path;
            false
        }
    }
}

impl Storage for FsStorage {
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for ent in fs::read_dir(dir)? {
            // Names that are not UTF-8 are never log files.
            if let Ok(name) = ent?.file_name().into_string() {
                out.push(name);
            }
        }
        Ok(out)
    }

    fn create_synced(&self, path: &Path, contents: &[u8]) -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        f.write_all(contents)?;
        f.sync_all()
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        Ok(Box::new(OpenOptions::new().append(true).open(path)?))
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        Ok(Box::new(File::open(path)?))
    }

    fn read_all(&self, path: &Path, buf: &mut Vec<u8>) -> io::Result<()> {
        buf.clear();
        File::open(path)?.read_to_end(buf).map(|_| ())
    }

    fn truncate_synced(&self, path: &Path, len: u64) -> io::Result<()> {
        let f = OpenOptions::new().write(true).open(path)?;
        f.set_len(len)?;
        f.sync_all()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        Ok(fs::metadata(path)?.len())
    }
}
