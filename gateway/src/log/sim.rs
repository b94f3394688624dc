//! A simulated disk that can lose power, for the deterministic power-loss
//! test (`gateway/tests/log_power_loss.rs`). Not for production: hidden
//! from the docs, public only so integration tests can reach it.
//!
//! A `SIGKILL` leaves the page cache intact, so crash tests with real files
//! pass even if the log acknowledged before `fdatasync`. [`SimDisk`] keeps,
//! per file, which bytes were synced, and per folder, which entries were
//! made durable by a folder sync. At a power loss it keeps only those:
//! every unsynced byte is dropped, except that (depending on the seed) the
//! unsynced tail of a file may survive in part, possibly with garbage, as a
//! torn write does on a real disk. Creations, renames and removals not yet
//! followed by a folder sync are undone.
//!
//! Everything is deterministic for a given seed and sequence of calls.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::storage::{Storage, StorageFile};

/// A seeded in-memory disk with power-loss semantics; see the module docs.
/// Clones share the same disk.
#[derive(Clone)]
pub struct SimDisk {
    st: Arc<Mutex<State>>,
}

impl std::fmt::Debug for SimDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.lock();
        f.debug_struct("SimDisk")
            .field("ops", &st.ops)
            .field("powered", &st.image.is_none())
            .field("names", &st.names)
            .finish_non_exhaustive()
    }
}

struct SimFile {
    data: Vec<u8>,
    /// `data[..synced]` survives a power loss.
    synced: usize,
}

struct State {
    rng: u64,
    /// Every file ever created, by id. Removed files stay here, because an
    /// un-synced removal comes back after a power loss.
    files: Vec<SimFile>,
    /// Folder entries as the running system sees them.
    names: BTreeMap<PathBuf, usize>,
    /// Folder entries as of each folder's last sync.
    durable_names: BTreeMap<PathBuf, usize>,
    /// Operations performed (the power-loss clock).
    ops: u64,
    /// Power fails just before this operation.
    cut_at: Option<u64>,
    /// What survived the power loss, once it happened.
    image: Option<BTreeMap<PathBuf, Vec<u8>>>,
}

fn power_lost() -> io::Error {
    io::Error::other("simulated power loss")
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("no such file: {}", path.display()),
    )
}

/// splitmix64: tiny, seedable and good enough to pick tear points.
fn next(rng: &mut u64) -> u64 {
    *rng = rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *rng;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl State {
    /// Counts one operation; fails it if the power is (or just went) out.
    fn op(&mut self) -> io::Result<()> {
        if self.image.is_some() {
            return Err(power_lost());
        }
        self.ops += 1;
        if self.cut_at.is_some_and(|c| self.ops >= c) {
            self.cut();
            return Err(power_lost());
        }
        Ok(())
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (next(&mut self.rng) % n as u64) as usize
        }
    }

    /// Takes the crash image: durable folder entries with their synced
    /// bytes, each un-synced tail torn according to the seed.
    fn cut(&mut self) {
        if self.image.is_some() {
            return;
        }
        let mut image = BTreeMap::new();
        let entries: Vec<(PathBuf, usize)> = self
            .durable_names
            .iter()
            .map(|(p, &id)| (p.clone(), id))
            .collect();
        for (path, id) in entries {
            let (synced, len) = (self.files[id].synced, self.files[id].data.len());
            let mut bytes = self.files[id].data[..synced].to_vec();
            let unsynced = len - synced;
            if unsynced > 0 {
                let keep = self.below(unsynced + 1);
                let start = bytes.len();
                bytes.extend_from_slice(&self.files[id].data[synced..synced + keep]);
                match self.below(4) {
                    // The whole un-synced tail is lost or partly written.
                    0 => bytes.truncate(start),
                    1 => {}
                    // A partly written sector: garbage after the prefix.
                    2 => {
                        for _ in 0..1 + self.below(64) {
                            bytes.push(next(&mut self.rng) as u8);
                        }
                    }
                    // Sectors written out of order: a hole inside the tail.
                    _ => {
                        if keep > 0 {
                            let at = start + self.below(keep);
                            let n = (1 + self.below(64)).min(bytes.len() - at);
                            let zero = self.below(2) == 0;
                            for b in &mut bytes[at..at + n] {
                                *b = if zero { 0 } else { next(&mut self.rng) as u8 };
                            }
                        }
                    }
                }
            }
            image.insert(path, bytes);
        }
        self.image = Some(image);
    }

    fn file_mut(&mut self, path: &Path) -> io::Result<&mut SimFile> {
        let id = *self.names.get(path).ok_or_else(|| not_found(path))?;
        Ok(&mut self.files[id])
    }
}

impl SimDisk {
    /// An empty disk; `seed` drives how un-synced tails are torn.
    pub fn new(seed: u64) -> Self {
        Self::from_image(seed, BTreeMap::new())
    }

    fn from_image(seed: u64, image: BTreeMap<PathBuf, Vec<u8>>) -> Self {
        let mut files = Vec::with_capacity(image.len());
        let mut names = BTreeMap::new();
        for (path, data) in image {
            names.insert(path, files.len());
            files.push(SimFile {
                synced: data.len(),
                data,
            });
        }
        Self {
            st: Arc::new(Mutex::new(State {
                rng: seed,
                files,
                durable_names: names.clone(),
                names,
                ops: 0,
                cut_at: None,
                image: None,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread leaves a consistent state (each operation
        // is applied under one lock), so keep going.
        self.st.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Operations performed so far (each storage call counts one).
    pub fn ops(&self) -> u64 {
        self.lock().ops
    }

    /// Makes the power fail just before operation number `op` (counting
    /// from 1): that operation and all later ones fail.
    pub fn cut_power_at_op(&self, op: u64) {
        self.lock().cut_at = Some(op);
    }

    /// Cuts the power now, if it is still on.
    pub fn cut_power(&self) {
        self.lock().cut();
    }

    /// Whether the power went out.
    pub fn power_lost(&self) -> bool {
        self.lock().image.is_some()
    }

    /// The disk as found after the power loss, powered again: every file
    /// holds what survived, all of it durable. `seed` drives later tears.
    ///
    /// # Panics
    ///
    /// If the power was never cut.
    pub fn reboot(&self, seed: u64) -> SimDisk {
        let image = self.lock().image.clone();
        Self::from_image(seed, image.expect("reboot: the power was never cut"))
    }

    /// Paths and sizes of the files the running system sees.
    pub fn files(&self) -> Vec<(PathBuf, usize)> {
        let st = self.lock();
        st.names
            .iter()
            .map(|(p, &id)| (p.clone(), st.files[id].data.len()))
            .collect()
    }
}

/// An open file on a [`SimDisk`].
struct SimHandle {
    disk: SimDisk,
    id: usize,
    pos: usize,
}

impl StorageFile for SimHandle {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut st = self.disk.lock();
        st.op()?;
        st.files[self.id].data.extend_from_slice(buf);
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let mut st = self.disk.lock();
        st.op()?;
        let f = &mut st.files[self.id];
        f.synced = f.data.len();
        Ok(())
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut st = self.disk.lock();
        st.op()?;
        let data = &st.files[self.id].data;
        let n = buf.len().min(data.len().saturating_sub(self.pos));
        buf[..n].copy_from_slice(&data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }

    fn replaced_at(&self, path: &Path) -> bool {
        self.disk
            .lock()
            .names
            .get(path)
            .is_some_and(|&id| id != self.id)
    }
}

impl Storage for SimDisk {
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut st = self.lock();
        st.op()?;
        Ok(st
            .names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn create_synced(&self, path: &Path, contents: &[u8]) -> io::Result<()> {
        let mut st = self.lock();
        st.op()?;
        let id = st.files.len();
        st.files.push(SimFile {
            data: contents.to_vec(),
            synced: contents.len(),
        });
        st.names.insert(path.to_path_buf(), id);
        Ok(())
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        self.open_read(path)
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let mut st = self.lock();
        st.op()?;
        let id = *st.names.get(path).ok_or_else(|| not_found(path))?;
        Ok(Box::new(SimHandle {
            disk: self.clone(),
            id,
            pos: 0,
        }))
    }

    fn read_all(&self, path: &Path, buf: &mut Vec<u8>) -> io::Result<()> {
        let mut st = self.lock();
        st.op()?;
        buf.clear();
        buf.extend_from_slice(&st.file_mut(path)?.data);
        Ok(())
    }

    fn truncate_synced(&self, path: &Path, len: u64) -> io::Result<()> {
        let mut st = self.lock();
        st.op()?;
        let f = st.file_mut(path)?;
        f.data.truncate(len as usize);
        f.synced = f.data.len();
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.op()?;
        let id = st.names.remove(from).ok_or_else(|| not_found(from))?;
        st.names.insert(to.to_path_buf(), id);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.op()?;
        st.names.remove(path).ok_or_else(|| not_found(path))?;
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.op()?;
        let st = &mut *st;
        st.durable_names.retain(|p, _| p.parent() != Some(dir));
        for (p, &id) in &st.names {
            if p.parent() == Some(dir) {
                st.durable_names.insert(p.clone(), id);
            }
        }
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        self.lock().names.contains_key(path)
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        let mut st = self.lock();
        st.op()?;
        Ok(st.file_mut(path)?.data.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_loss_keeps_synced_bytes_and_synced_names_only() {
        let dir = Path::new("/d");
        let disk = SimDisk::new(7);
        disk.create_synced(&dir.join("a"), b"head").unwrap();
        // Not in the folder durably yet: gone after a power loss.
        disk.cut_power();
        assert!(disk.reboot(1).files().is_empty());

        let disk = SimDisk::new(7);
        disk.create_synced(&dir.join("a"), b"head").unwrap();
        disk.sync_dir(dir).unwrap();
        let mut f = disk.open_append(&dir.join("a")).unwrap();
        f.append(b"+synced").unwrap();
        f.sync_data().unwrap();
        f.append(b"+lost").unwrap();
        disk.create_synced(&dir.join("b"), b"new").unwrap();
        disk.remove(&dir.join("a")).unwrap();
        disk.cut_power();
        assert!(f.append(b"x").is_err(), "no writes after the power is out");
        let after = disk.reboot(1);
        let mut buf = Vec::new();
        after.read_all(&dir.join("a"), &mut buf).unwrap();
        assert!(buf.starts_with(b"head+synced"), "{buf:?}");
        assert!(!after.exists(&dir.join("b")));
    }

    #[test]
    fn cut_at_op_fails_that_op_and_later_ones() {
        let disk = SimDisk::new(1);
        disk.cut_power_at_op(2);
        disk.create_synced(Path::new("/d/a"), b"x").unwrap();
        assert!(disk.sync_dir(Path::new("/d")).is_err());
        assert!(disk.power_lost());
        assert!(disk.list(Path::new("/d")).is_err());
    }

    #[test]
    fn tears_vary_with_the_seed_but_repeat_for_one_seed() {
        let tail = |seed: u64| {
            let disk = SimDisk::new(seed);
            let p = Path::new("/d/a");
            disk.create_synced(p, b"").unwrap();
            disk.sync_dir(Path::new("/d")).unwrap();
            let mut f = disk.open_append(p).unwrap();
            f.append(&[0xAA; 100]).unwrap();
            disk.cut_power();
            let mut buf = Vec::new();
            disk.reboot(0).read_all(p, &mut buf).unwrap();
            buf
        };
        let tails: Vec<Vec<u8>> = (0..32).map(tail).collect();
        assert_eq!(tails[5], tail(5));
        assert!(tails.iter().any(Vec::is_empty));
        assert!(
            tails
                .iter()
                .any(|t| !t.is_empty() && t.iter().all(|&b| b == 0xAA))
        );
        assert!(tails.iter().any(|t| t.iter().any(|&b| b != 0xAA)));
    }
}
