//! Named, persisted read positions: one per sink.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::handle::Shared;
use super::reader::LogReader;
use super::segment;
use super::{LogError, Lsn};

/// Where a new cursor starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CursorStart {
    /// At the oldest stored entry: the sink gets everything still in the log.
    Oldest,
    /// At the end: the sink gets only entries appended from now on.
    Latest,
    /// At this LSN (between the oldest stored and the committed end).
    At(Lsn),
}

/// A sink's persisted position in the log: the LSN of the next entry it
/// still has to deliver. Everything below it was confirmed downstream.
/// Retention never deletes an entry at or after any cursor.
#[derive(Clone)]
pub struct Cursor {
    shared: Arc<Shared>,
    entry: Arc<CursorEntry>,
}

pub(crate) struct CursorEntry {
    name: String,
    path: PathBuf,
    pos: AtomicU64,
    removed: AtomicBool,
    /// Serialises stores of this cursor (file replace + position update).
    persist: Mutex<()>,
}

impl std::fmt::Debug for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cursor")
            .field("name", &self.entry.name)
            .field("position", &self.position())
            .finish()
    }
}

impl Cursor {
    /// The cursor's name.
    pub fn name(&self) -> &str {
        &self.entry.name
    }

    /// The next LSN the sink has to deliver.
    pub fn position(&self) -> Lsn {
        Lsn(self.entry.pos.load(Ordering::Acquire))
    }

    /// A reader starting at the cursor's position.
    pub fn reader(&self) -> Result<LogReader, LogError> {
        LogReader::in_process(self.shared.clone(), self.position())
    }

    /// Persists `next` (the LSN after the last entry the downstream
    /// confirmed) atomically, then lets retention act on it. It may move
    /// back (to redeliver), but not below the oldest stored entry, and not
    /// past the committed end. Blocking (several fsyncs): from async code
    /// use [`Cursor::store_async`] or a blocking task.
    pub fn store(&self, next: Lsn) -> Result<(), LogError> {
        let e = &self.entry;
        let _g = lock(&e.persist);
        if e.removed.load(Ordering::Acquire) {
            return Err(LogError::CursorRemoved(e.name.clone()));
        }
        let committed = *self.shared.committed.borrow();
        if next > committed {
            return Err(LogError::CursorOutOfRange {
                name: e.name.clone(),
                position: next,
                oldest: None,
                committed,
            });
        }
        if next.0 >= e.pos.load(Ordering::Acquire) {
            // Moving forward never lets retention delete something the
            // persisted position still needs, so only persist-then-publish.
            write_atomic(&e.path, next)?;
            e.pos.store(next.0, Ordering::Release);
            return Ok(());
        }
        // Moving back: hold the segment list so retention cannot delete the
        // segments between the check and the publish.
        let segs = self.shared.lock_segments();
        let oldest = segs.first().map_or(committed, |s| s.first_lsn);
        if next < oldest {
            return Err(LogError::CursorOutOfRange {
                name: e.name.clone(),
                position: next,
                oldest: Some(oldest),
                committed,
            });
        }
        write_atomic(&e.path, next)?;
        e.pos.store(next.0, Ordering::Release);
        drop(segs);
        Ok(())
    }

    /// [`Cursor::store`] on tokio's blocking pool.
    pub async fn store_async(&self, next: Lsn) -> Result<(), LogError> {
        let c = self.clone();
        match tokio::task::spawn_blocking(move || c.store(next)).await {
            Ok(r) => r,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}

/// Every cursor of the log.
pub(crate) struct Cursors {
    dir: PathBuf,
    table: Mutex<HashMap<String, Arc<CursorEntry>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
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

/// Returns the cursor `name`, creating it at `start` if new.
pub(crate) fn register(
    shared: &Arc<Shared>,
    name: &str,
    start: CursorStart,
) -> Result<Cursor, LogError> {
    check_name(name)?;
    let mut table = shared.cursors.lock_table();
    if let Some(e) = table.get(name) {
        return Ok(Cursor {
            shared: shared.clone(),
            entry: e.clone(),
        });
    }
    // Hold the segment list so retention cannot delete the start position
    // before the cursor is in the table.
    let segs = shared.lock_segments();
    let committed = *shared.committed.borrow();
    let oldest = segs.first().map_or(committed, |s| s.first_lsn);
    let pos = match start {
        CursorStart::Oldest => oldest,
        CursorStart::Latest => committed,
        CursorStart::At(l) if l >= oldest && l <= committed => l,
        CursorStart::At(l) => {
            return Err(LogError::CursorOutOfRange {
                name: name.to_owned(),
                position: l,
                oldest: Some(oldest),
                committed,
            });
        }
    };
    let path = shared.cursors.dir.join(name);
    write_atomic(&path, pos)?;
    let entry = Arc::new(CursorEntry {
        name: name.to_owned(),
        path,
        pos: AtomicU64::new(pos.0),
        removed: AtomicBool::new(false),
        persist: Mutex::new(()),
    });
    drop(segs);
    table.insert(name.to_owned(), entry.clone());
    Ok(Cursor {
        shared: shared.clone(),
        entry,
    })
}

fn check_name(name: &str) -> Result<(), LogError> {
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
fn write_atomic(path: &Path, pos: Lsn) -> Result<(), LogError> {
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
