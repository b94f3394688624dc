//! Writing files without destroying what is there: the one place the gateway
//! decides between replacing a file by rename and writing through to it.
//!
//! Two kinds of files are written:
//!
//! - **CLI outputs** (`locate --out`, `export --output`), through [`Output`]
//!   and [`write_output`]. A regular file, or a path that does not exist yet,
//!   is written to a temporary file beside it and renamed over it once the
//!   whole output is ready, so a reader never sees half of it and a failed run
//!   leaves the old file. Anything else is *written through*: `-` is stdout;
//!   a character device (`/dev/null`), a FIFO or a socket is opened and
//!   written, because renaming over it would replace the device node or pipe
//!   (as root, `--out /dev/null` used to leave a regular file at /dev/null);
//!   a symlink is followed and its target written, so the link survives.
//! - **State files** (rules, fences, cursors, keys, tokens), through
//!   [`atomic_replace`] and [`create_new`]: temporary file, fsync, rename
//!   (or link, when the file must not exist yet), fsync of the folder. After a
//!   crash the file holds the old or the new bytes, never a mix, and the
//!   rename itself is durable. A symlinked state file (a Kubernetes ConfigMap,
//!   a file managed elsewhere) has its target replaced, not the link.
//!
//! The temporary files are named `.<name>.<random>.tmp`, and are removed when
//! a write fails.

use std::fs::{File, Metadata};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

/// File mode of state files that hold secrets (keys, tokens): owner only.
pub const PRIVATE: u32 = 0o600;
/// File mode of state files anyone on the host may read (rules, fences).
pub const SHARED: u32 = 0o644;

/// Where an output goes, decided from what is at the path today.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `-`: standard output.
    Stdout,
    /// A device, FIFO, socket or symlink: opened and written in place.
    WriteThrough(PathBuf),
    /// A regular file or a new path: staged beside it and renamed over it.
    Replace(PathBuf),
}

impl Target {
    /// Classifies `path` by what is there now (`-` is stdout). A folder is
    /// refused: there is nothing sensible to write to.
    pub fn of(path: &Path) -> io::Result<Self> {
        if path.as_os_str() == "-" {
            return Ok(Self::Stdout);
        }
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Self::Replace(path.to_owned())),
            Err(e) => Err(e),
            Ok(m) if m.file_type().is_symlink() => Ok(Self::WriteThrough(path.to_owned())),
            Ok(m) if m.is_dir() => Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                format!("{} is a folder; name a file in it", path.display()),
            )),
            Ok(m) if m.is_file() => Ok(Self::Replace(path.to_owned())),
            Ok(_) => Ok(Self::WriteThrough(path.to_owned())),
        }
    }
}

/// An open CLI output: write to it, then [`Output::commit`]. Dropped without
/// a commit, a staged output is discarded and the old file stays.
#[derive(Debug)]
pub struct Output {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Stdout(io::Stdout),
    Through(File),
    Staged { tmp: NamedTempFile, dest: PathBuf },
}

impl Output {
    /// Opens `path` as described in the module docs.
    pub fn create(path: &Path) -> io::Result<Self> {
        let inner = match Target::of(path)? {
            Target::Stdout => Inner::Stdout(io::stdout()),
            // No create: a dangling symlink or a vanished FIFO is an error, not
            // a new regular file somewhere unexpected. No truncate either:
            // devices and FIFOs ignore it, and a symlink's target is truncated
            // below once it is known to be a regular file.
            Target::WriteThrough(p) => {
                let f = std::fs::OpenOptions::new().write(true).open(&p)?;
                if f.metadata()?.is_file() {
                    f.set_len(0)?;
                }
                Inner::Through(f)
            }
            Target::Replace(dest) => {
                // A replaced file keeps its mode; a new one gets 0666 less the
                // umask, like any file a shell redirect creates.
                Inner::Staged {
                    tmp: staging_file(&dest, mode_of(&dest))?,
                    dest,
                }
            }
        };
        Ok(Self { inner })
    }

    /// Finishes the output: flushes it, and for a staged file syncs it,
    /// renames it over the destination and syncs the folder.
    pub fn commit(self) -> io::Result<()> {
        match self.inner {
            Inner::Stdout(mut s) => s.flush(),
            Inner::Through(mut f) => f.flush(),
            Inner::Staged { tmp, dest } => finish(tmp, &dest, false).map(|_| ()),
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.inner {
            Inner::Stdout(s) => s.write(buf),
            Inner::Through(f) => f.write(buf),
            Inner::Staged { tmp, .. } => tmp.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            Inner::Stdout(s) => s.flush(),
            Inner::Through(f) => f.flush(),
            Inner::Staged { tmp, .. } => tmp.flush(),
        }
    }
}

/// Writes a whole CLI output to `path` (see [`Output`]).
pub fn write_output(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut out = Output::create(path)?;
    out.write_all(data)?;
    out.commit()
}

/// Replaces the state file `path` with `data` atomically and durably:
/// temporary file with `mode`, fsync, rename, fsync of the folder. Creates
/// the folder if needed. A symlink is followed and its target replaced; a
/// device or FIFO is refused, as a state file must be a regular file.
pub fn atomic_replace(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let dest = state_destination(path)?;
    let mut tmp = staging_file(&dest, Some(mode))?;
    tmp.write_all(data)?;
    finish(tmp, &dest, false).map(|_| ())
}

/// Creates the state file `path` with `data` unless it exists: written and
/// synced under a temporary name, then linked into place, so a concurrent
/// reader sees no file or the whole file, never an empty one. Returns
/// `false` (and leaves the file alone) when `path` already exists, which is
/// how two processes creating the same key agree on the first one's.
pub fn create_new(path: &Path, data: &[u8], mode: u32) -> io::Result<bool> {
    let mut tmp = staging_file(path, Some(mode))?;
    tmp.write_all(data)?;
    finish(tmp, path, true)
}

/// Replaces a text state file (fences, rules) atomically and durably,
/// keeping the mode the operator gave it (new files are [`SHARED`]).
pub fn replace_text(path: &Path, text: &str) -> io::Result<()> {
    let mode = mode_of(path).unwrap_or(SHARED);
    atomic_replace(path, text.as_bytes(), mode)
}

/// The file mode of an existing file (`None` when it does not exist).
pub fn mode_of(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(path)
            .ok()
            .map(|m: Metadata| m.permissions().mode() & 0o7777)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Where a state file is actually replaced: the path, or a symlink's target.
fn state_destination(path: &Path) -> io::Result<PathBuf> {
    let meta = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(path.to_owned()),
        r => r?,
    };
    let (dest, meta) = if meta.file_type().is_symlink() {
        let target = std::fs::canonicalize(path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "{} is a symlink whose target cannot be resolved ({e}); point it at a regular file",
                    path.display()
                ),
            )
        })?;
        let meta = std::fs::metadata(&target)?;
        (target, meta)
    } else {
        (path.to_owned(), meta)
    };
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is not a regular file; state files are replaced by rename, so point the setting at a regular file",
                dest.display()
            ),
        ));
    }
    Ok(dest)
}

/// The folder of `path`, `.` for a bare file name.
fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// A temporary file in `dest`'s folder (created if missing), so the final
/// rename stays within one file system. Its mode is exactly `mode`, or 0666
/// less the umask when `None`.
fn staging_file(dest: &Path, mode: Option<u32>) -> io::Result<NamedTempFile> {
    let dir = folder_of(dest);
    std::fs::create_dir_all(dir)?;
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} does not name a file", dest.display()),
            )
        })?;
    let prefix = format!(".{name}.");
    let mut b = tempfile::Builder::new();
    b.prefix(&prefix).suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        // Created owner-only (a secret is never readable, even briefly), then
        // widened to exactly `mode`; the creation mode is subject to the umask.
        b.permissions(std::fs::Permissions::from_mode(if mode.is_some() {
            0o600
        } else {
            0o666
        }));
        let tmp = b.tempfile_in(dir)?;
        if let Some(m) = mode {
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(m))?;
        }
        Ok(tmp)
    }
    #[cfg(not(unix))]
    {
        let _ = mode;
        b.tempfile_in(dir)
    }
}

/// Syncs `tmp`, moves it to `dest` (rename, or link when `no_clobber`), and
/// syncs the folder so the new name survives a crash. `Ok(false)`: with
/// `no_clobber`, `dest` existed and was left alone. The temporary file is
/// removed on every failure.
fn finish(tmp: NamedTempFile, dest: &Path, no_clobber: bool) -> io::Result<bool> {
    tmp.as_file().sync_all()?;
    let moved = if no_clobber {
        tmp.persist_noclobber(dest)
    } else {
        tmp.persist(dest)
    };
    match moved {
        Ok(_) => {}
        Err(e) if no_clobber && e.error.kind() == io::ErrorKind::AlreadyExists => {
            return Ok(false);
        }
        Err(e) => return Err(e.error),
    }
    sync_dir(folder_of(dest))?;
    Ok(true)
}

/// Makes a folder's entries (a rename, a new name) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_classified_by_what_is_there() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        assert_eq!(Target::of(Path::new("-")).unwrap(), Target::Stdout);
        assert_eq!(Target::of(&file).unwrap(), Target::Replace(file.clone()));
        let new = dir.path().join("new");
        assert_eq!(Target::of(&new).unwrap(), Target::Replace(new.clone()));
        assert!(Target::of(dir.path()).is_err());
        #[cfg(unix)]
        {
            let link = dir.path().join("l");
            std::os::unix::fs::symlink(&file, &link).unwrap();
            assert_eq!(Target::of(&link).unwrap(), Target::WriteThrough(link));
            let null = Path::new("/dev/null");
            assert_eq!(Target::of(null).unwrap(), Target::WriteThrough(null.into()));
        }
    }

    #[test]
    fn atomic_replace_leaves_only_the_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.toml");
        atomic_replace(&path, b"one", SHARED).unwrap();
        atomic_replace(&path, b"two", PRIVATE).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        #[cfg(unix)]
        assert_eq!(mode_of(&path), Some(PRIVATE));
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state.toml"], "no temporary file is left");
    }

    #[cfg(unix)]
    #[test]
    fn atomic_replace_keeps_a_symlink_and_refuses_devices() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("real.toml");
        let link = dir.path().join("link.toml");
        std::fs::write(&target, "old").unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();
        atomic_replace(&link, b"new", SHARED).unwrap();
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        let err = atomic_replace(Path::new("/dev/null"), b"x", SHARED).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    #[test]
    fn create_new_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        assert!(create_new(&path, b"first", PRIVATE).unwrap());
        assert!(!create_new(&path, b"second", PRIVATE).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn an_uncommitted_output_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv");
        std::fs::write(&path, "old").unwrap();
        {
            let mut o = Output::create(&path).unwrap();
            o.write_all(b"half").unwrap();
        }
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        write_output(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
    }
}
