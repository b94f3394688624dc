//! A sink's handle on its named, persisted read position (the positions
//! themselves are kept by `cursors.rs`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::cursors::{CursorEntry, check_name, lock, write_atomic};
use super::reader::LogReader;
use super::shared::Shared;
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
