//! Time-windowed maps for the five-minute contract: punch-id idempotency,
//! repeat merging, and ping repeat suppression.
//!
//! Expiry uses rotating generations, never per-entry scans. A [`WindowMap`]
//! keeps three generations of one window each; entries go into the current
//! one and lookups read the current and the previous one, checking each
//! entry's own timestamp, so an entry is found for at least one full window
//! after it was written. [`WindowMap::rotate`] (called from the edge's
//! housekeeping tick, off the hot path) advances the generation and then
//! clears the one that just fell two windows behind, which no reader or
//! writer looks at any more. Memory therefore holds between one and two windows of
//! keys, and is capped by `max_keys`.

use std::hash::Hash;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;

const GENERATIONS: usize = 3;

/// The map is at its configured key limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the dedup window is full ({0} keys); raise dedup.max_punch_keys or add nodes")]
pub struct Full(pub usize);

/// A concurrent map whose entries live for at least one window, expired by
/// rotating whole generations.
pub struct WindowMap<K, V> {
    gens: [DashMap<K, V>; GENERATIONS],
    /// The generation number (`now / window`) the map was last rotated to.
    current: AtomicI64,
    window_ms: i64,
    max_keys: usize,
    len: AtomicUsize,
    rotating: Mutex<()>,
}

impl<K: Eq + Hash + Clone, V: Clone> WindowMap<K, V> {
    /// An empty map whose entries live at least `window_ms`, holding at most
    /// `max_keys` keys, starting at time `now_ms`.
    pub fn new(window_ms: i64, max_keys: usize, now_ms: i64) -> Self {
        assert!(window_ms > 0, "window must be positive");
        Self {
            gens: std::array::from_fn(|_| DashMap::new()),
            current: AtomicI64::new(now_ms.div_euclid(window_ms)),
            window_ms,
            max_keys,
            len: AtomicUsize::new(0),
            rotating: Mutex::new(()),
        }
    }

    fn slot(g: i64) -> usize {
        g.rem_euclid(GENERATIONS as i64) as usize
    }

    /// Looks `key` up in the live generations; `f` gets the value and
    /// decides (typically by comparing the stored time) what it means.
    pub fn get<R>(&self, key: &K, f: impl Fn(&V) -> Option<R>) -> Option<R> {
        let g = self.current.load(Ordering::Acquire);
        for generation in [g, g - 1] {
            if let Some(v) = self.gens[Self::slot(generation)].get(key) {
                if let Some(r) = f(&v) {
                    return Some(r);
                }
            }
        }
        None
    }

    /// Inserts or replaces `key` in the current generation. A key already in
    /// the previous generation is moved, so it is counted once.
    pub fn insert(&self, key: K, value: V) -> Result<(), Full> {
        let g = self.current.load(Ordering::Acquire);
        let prev = &self.gens[Self::slot(g - 1)];
        let moved = prev.remove(&key).is_some();
        match self.gens[Self::slot(g)].entry(key) {
            Entry::Occupied(mut o) => {
                o.insert(value);
                if moved {
                    self.len.fetch_sub(1, Ordering::Relaxed);
                }
            }
            Entry::Vacant(v) => {
                if !moved && self.len.load(Ordering::Relaxed) >= self.max_keys {
                    return Err(Full(self.max_keys));
                }
                v.insert(value);
                if !moved {
                    self.len.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Ok(())
    }

    /// Inserts `value` only if no live entry for `key` is accepted by
    /// `is_live`; otherwise returns the existing value. Atomic per key within
    /// the current generation, which is what makes two concurrent first
    /// sends of one punch id produce one record.
    pub fn get_or_insert(
        &self,
        key: K,
        is_live: impl Fn(&V) -> bool,
        value: impl FnOnce() -> V,
    ) -> Result<Result<(), V>, Full> {
        let g = self.current.load(Ordering::Acquire);
        if let Some(v) = self.gens[Self::slot(g - 1)].get(&key) {
            if is_live(&v) {
                return Ok(Err(v.clone()));
            }
        }
        match self.gens[Self::slot(g)].entry(key) {
            Entry::Occupied(mut o) => {
                if is_live(o.get()) {
                    Ok(Err(o.get().clone()))
                } else {
                    o.insert(value());
                    Ok(Ok(()))
                }
            }
            Entry::Vacant(v) => {
                if self.len.load(Ordering::Relaxed) >= self.max_keys {
                    return Err(Full(self.max_keys));
                }
                v.insert(value());
                self.len.fetch_add(1, Ordering::Relaxed);
                Ok(Ok(()))
            }
        }
    }

    /// Changes a live entry in place; returns whether it was found.
    pub fn update(&self, key: &K, f: impl FnOnce(&mut V)) -> bool {
        let g = self.current.load(Ordering::Acquire);
        for generation in [g, g - 1] {
            if let Some(mut v) = self.gens[Self::slot(generation)].get_mut(key) {
                f(&mut v);
                return true;
            }
        }
        false
    }

    /// Runs `f` on the live value of `key` under its entry lock (a value
    /// in the previous generation is moved into the current one first, so
    /// an active key outlives rotation). `f` may fill, change or empty the
    /// slot. Fails with [`Full`] when the key is new and the map is full.
    pub fn with<R>(&self, key: K, f: impl FnOnce(&mut Option<V>) -> R) -> Result<R, Full>
    where
        V: Default,
    {
        let g = self.current.load(Ordering::Acquire);
        match self.gens[Self::slot(g)].entry(key) {
            Entry::Occupied(mut o) => {
                let mut slot = Some(std::mem::take(o.get_mut()));
                let r = f(&mut slot);
                match slot {
                    Some(v) => *o.get_mut() = v,
                    None => {
                        o.remove();
                        self.len.fetch_sub(1, Ordering::Relaxed);
                    }
                }
                Ok(r)
            }
            Entry::Vacant(v) => {
                let mut slot = self.gens[Self::slot(g - 1)]
                    .remove(v.key())
                    .map(|(_, old)| old);
                let moved = slot.is_some();
                if !moved && self.len.load(Ordering::Relaxed) >= self.max_keys {
                    return Err(Full(self.max_keys));
                }
                let r = f(&mut slot);
                match (slot, moved) {
                    (Some(val), false) => {
                        v.insert(val);
                        self.len.fetch_add(1, Ordering::Relaxed);
                    }
                    (Some(val), true) => {
                        v.insert(val);
                    }
                    (None, true) => {
                        self.len.fetch_sub(1, Ordering::Relaxed);
                    }
                    (None, false) => {}
                }
                Ok(r)
            }
        }
    }

    /// Removes one key the map has not seen since its last rotation (one
    /// of the previous generation; of the current one only when that is
    /// empty): a best-effort "least recently seen" for a map that should
    /// make room rather than refuse (the ping-suppression memory). Costs a
    /// scan for a non-empty shard, so call it only when the map is full.
    /// Returns whether a key was removed.
    pub fn evict_one(&self) -> bool {
        let g = self.current.load(Ordering::Acquire);
        for generation in [g - 1, g] {
            let map = &self.gens[Self::slot(generation)];
            let key = map.iter().next().map(|e| e.key().clone());
            if let Some(k) = key {
                if map.remove(&k).is_some() {
                    self.len.fetch_sub(1, Ordering::Relaxed);
                    return true;
                }
            }
        }
        false
    }

    /// Removes `key` if its live value satisfies `pred`.
    pub fn remove_if(&self, key: &K, pred: impl Fn(&V) -> bool) {
        let g = self.current.load(Ordering::Acquire);
        for generation in [g, g - 1] {
            if self.gens[Self::slot(generation)]
                .remove_if(key, |_, v| pred(v))
                .is_some()
            {
                self.len.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Removes `key` from the live generations.
    pub fn remove(&self, key: &K) {
        let g = self.current.load(Ordering::Acquire);
        for generation in [g, g - 1] {
            if self.gens[Self::slot(generation)].remove(key).is_some() {
                self.len.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Advances to the generation of `now_ms`, dropping generations more than
    /// one window old. Cheap when nothing is due; call it about once a second.
    pub fn rotate(&self, now_ms: i64) {
        let target = now_ms.div_euclid(self.window_ms);
        if target <= self.current.load(Ordering::Acquire) {
            return;
        }
        let Ok(_guard) = self.rotating.try_lock() else {
            return; // another thread is rotating
        };
        let mut g = self.current.load(Ordering::Acquire);
        while g < target {
            g += 1;
            self.current.store(g, Ordering::Release);
            // Generation g-2 is now dead: readers look at g and g-1 only.
            // Free it at once (its slot is the next current one), so memory
            // holds one to two windows of keys, never three.
            let dead = &self.gens[Self::slot(g + 1)];
            let dropped = dead.len();
            dead.clear();
            self.len.fetch_sub(dropped, Ordering::Relaxed);
            if target - g >= GENERATIONS as i64 {
                // A long pause: everything is older than a window; clear all.
                for generation in &self.gens {
                    let n = generation.len();
                    generation.clear();
                    self.len.fetch_sub(n, Ordering::Relaxed);
                }
                self.current.store(target, Ordering::Release);
                break;
            }
        }
    }

    /// Keys currently held (live or awaiting rotation).
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether the map holds no keys.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The key limit.
    pub fn capacity(&self) -> usize {
        self.max_keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: i64 = 300_000;

    fn live(now: i64) -> impl Fn(&i64) -> Option<i64> {
        move |t| (now - *t < W).then_some(*t)
    }

    #[test]
    fn entry_is_found_for_a_full_window_then_expires() {
        let m = WindowMap::new(W, 100, 0);
        // Inserted late in generation 0: must survive until t + W.
        let t = W - 1;
        m.insert(1u64, t).unwrap();
        for now in [t, t + 1, t + W / 2, t + W - 1] {
            m.rotate(now);
            assert_eq!(m.get(&1, live(now)), Some(t), "at {now}");
        }
        m.rotate(t + W);
        assert_eq!(m.get(&1, live(t + W)), None);
        // Two windows on, the generation is gone altogether.
        m.rotate(t + 2 * W + 1);
        assert_eq!(m.len(), 0);
    }

    #[test]
    fn rotation_after_a_long_pause_clears_everything() {
        let m = WindowMap::new(W, 100, 0);
        for k in 0..10u64 {
            m.insert(k, 0).unwrap();
        }
        m.rotate(100 * W);
        assert!(m.is_empty());
        m.insert(1, 100 * W).unwrap();
        assert_eq!(m.get(&1, live(100 * W)), Some(100 * W));
    }

    #[test]
    fn full_map_refuses_new_keys_but_updates_existing() {
        let m = WindowMap::new(W, 2, 0);
        m.insert(1u64, 0).unwrap();
        m.insert(2, 0).unwrap();
        assert_eq!(m.insert(3, 0), Err(Full(2)));
        m.insert(1, 5).unwrap();
        assert_eq!(m.get(&1, live(5)), Some(5));
        // Rotation frees room.
        m.rotate(2 * W + 1);
        m.rotate(3 * W);
        m.insert(3, 3 * W).unwrap();
    }

    #[test]
    fn key_moved_from_previous_generation_is_counted_once() {
        let m = WindowMap::new(W, 10, 0);
        m.insert(1u64, 0).unwrap();
        m.rotate(W);
        m.insert(1, W).unwrap();
        assert_eq!(m.len(), 1);
        m.remove(&1);
        assert_eq!(m.len(), 0);
    }

    #[test]
    fn get_or_insert_keeps_the_first_value() {
        let m = WindowMap::new(W, 10, 0);
        let is_live = |t: &i64| 100 - *t < W;
        assert_eq!(m.get_or_insert(7u64, is_live, || 1), Ok(Ok(())));
        assert_eq!(m.get_or_insert(7u64, is_live, || 2), Ok(Err(1)));
        m.rotate(W);
        assert_eq!(m.get_or_insert(7u64, is_live, || 3), Ok(Err(1)));
    }

    #[test]
    fn with_moves_active_keys_forward_so_they_survive_rotation() {
        let m: WindowMap<u64, i64> = WindowMap::new(W, 10, 0);
        m.with(1, |s| *s = Some(1)).unwrap();
        m.rotate(W);
        // Touched in generation 1: moved out of generation 0.
        m.with(1, |s| *s.as_mut().unwrap() += 1).unwrap();
        m.rotate(2 * W);
        assert_eq!(m.get(&1, |v| Some(*v)), Some(2));
        assert_eq!(m.len(), 1);
        m.with(1, |s| *s = None).unwrap();
        assert!(m.is_empty());
        m.remove_if(&1, |_| true);
        assert!(m.is_empty());
    }

    #[test]
    fn with_on_a_full_map_refuses_new_keys_only() {
        let m: WindowMap<u64, i64> = WindowMap::new(W, 1, 0);
        m.with(1, |s| *s = Some(1)).unwrap();
        assert_eq!(m.with(2, |s| *s = Some(2)), Err(Full(1)));
        assert_eq!(m.with(1, |s| s.map(|v| v + 1)), Ok(Some(2)));
    }

    #[test]
    fn evict_one_takes_a_key_not_seen_since_the_last_rotation() {
        let m: WindowMap<u32, i64> = WindowMap::new(1_000, 2, 0);
        m.insert(1, 0).unwrap();
        m.rotate(1_000);
        // Key 2 is seen in the new window, key 1 was not.
        m.insert(2, 1_000).unwrap();
        assert_eq!(m.insert(3, 1_000), Err(Full(2)));
        assert!(m.evict_one());
        assert_eq!(m.get(&1, live(1_000)), None, "the stale key went");
        assert_eq!(m.get(&2, live(1_000)), Some(1_000), "the fresh key stayed");
        m.insert(3, 1_000).unwrap();
        assert_eq!(m.len(), 2);
        // With no stale key, a current one goes rather than nothing.
        assert!(m.evict_one());
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn update_changes_in_place() {
        let m = WindowMap::new(W, 10, 0);
        m.insert(1u64, 0).unwrap();
        assert!(m.update(&1, |v| *v = 42));
        assert!(!m.update(&2, |v| *v = 42));
        assert_eq!(m.get(&1, |v| Some(*v)), Some(42));
    }
}
