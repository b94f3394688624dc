//! The registry of cursors: every named read position of the log, each
//! persisted in its own file under `cursors/`. It knows files and numbers,
//! nothing of segments being read, so the log's shared state can hold it
//! without a way back (`cursor.rs` is the handle sinks use).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::segment;
use super::{LogError, Lsn};

/// One cursor's persisted position and file.
pub(crate) struct CursorEntry {
    pub(super) name: String,
    pub(super) path: PathBuf,
    pub(super) pos: AtomicU64,
    pub(super) removed: AtomicBool,
    /// Serialises stores of this cursor (file replace + position update).
    pub(super) persist: Mutex<()>,
}

/// Every cursor of the log.
pub(crate) struct Cursors {
    pub(super) dir: PathBuf,
    table: Mutex<HashMap<String, Arc<CursorEntry>>>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Cursors {
    /// Loads every persisted cursor; one past `end` is an error (the log
    /// was replaced or lost synced data).
    pub(crate) fn load(log_dir: &Path, end: Lsn) -> Result<Self, LogError> {
        let dir = log_dir.join("cursors");
        let mut table = HashMap::new();
        let rd = fs::read_dir(&dir).map_err(|e| LogError::io("list", &dir, e))?;
        for ent in rd {
            let ent = ent.map_err(|e| LogError::io("list", &dir, e))?;
            let Some(name) = ent.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if check_name(&name).is_err() {
                continue;
            }
            let path = ent.path();
            let text =
                fs::read_to_string(&path).map_err(|e| LogError::io("read cursor", &path, e))?;
            let pos = text.trim_end().parse::<u64>().map_err(|_| LogError::Corrupt {
                path: path.clone(),
                offset: 0,
                reason: format!("cursor file does not hold a decimal LSN (found {:?}); delete it to restart the sink from the oldest record", text.trim_end()),
            })?;
            if pos > end.0 {
                return Err(LogError::CursorAhead {
                    name,
                    position: Lsn(pos),
                    end,
                    path,
                });
            }
            let entry = CursorEntry {
                name: name.clone(),
                path,
                pos: AtomicU64::new(pos),
                removed: AtomicBool::new(false),
                persist: Mutex::new(()),
            };
            table.insert(name, Arc::new(entry));
        }
        Ok(Self {
            dir,
            table: Mutex::new(table),
        })
    }

    pub(crate) fn lock_table(&self) -> MutexGuard<'_, HashMap<String, Arc<CursorEntry>>> {
        lock(&self.table)
    }

    /// The lowest cursor position and its name, if any cursor exists.
    pub(crate) fn min(table: &HashMap<String, Arc<CursorEntry>>) -> Option<(Lsn, &str)> {
        table
            .values()
            .map(|e| (Lsn(e.pos.load(Ordering::Acquire)), e.name.as_str()))
            .min()
    }

    pub(crate) fn list(&self) -> Vec<(String, Lsn)> {
        let mut v: Vec<_> = self
            .lock_table()
            .values()
            .map(|e| (e.name.clone(), Lsn(e.pos.load(Ordering::Acquire))))
            .collect();
        v.sort();
        v
    }

    pub(crate) fn remove(&self, name: &str) -> Result<bool, LogError> {
        check_name(name)?;
        let Some(e) = self.lock_table().remove(name) else {
            return Ok(false);
        };
        let _g = lock(&e.persist);
        e.removed.store(true, Ordering::Release);
        fs::remove_file(&e.path).map_err(|err| LogError::io("remove cursor", &e.path, err))?;
        segment::sync_dir(&self.dir)?;
        Ok(true)
    }
}

pub(super) fn check_name(name: &str) -> Result<(), LogError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(LogError::InvalidCursorName(name.to_owned()))
    }
}

/// Replaces the cursor file atomically: temp file, fsync, rename, folder
/// fsync. A crash leaves the old or the new position, never a torn one.
pub(super) fn write_atomic(path: &Path, pos: Lsn) -> Result<(), LogError> {
    crate::persist::atomic_replace(
        path,
        format!("{}\n", pos.0).as_bytes(),
        crate::persist::SHARED,
    )
    .map_err(|e| LogError::io("replace cursor", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_names() {
        for ok in ["nats", "webhook-erp", "jsonl_1", "a.b"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".hidden", "a/b", "../x", "sp ace", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
