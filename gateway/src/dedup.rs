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
//!
//! Best-effort memories (the rules' per-employee anti-cheat state and QR
//! code uses) are an [`LruMap`] instead: bounded like a window, but when
//! full it forgets its least recently seen entry rather than refusing, so
//! filling it can never lock anybody out.

use std::hash::Hash;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;

const GENERATIONS: usize = 3;

/// The map is at its configured key limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the tenant's dedup window is full ({0} keys); raise dedup.max_punch_keys or the tenant's budgets.tenants.<id>.max_punch_keys, or add nodes"
)]
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

    /// Calls `f` with every live entry (the current and the previous
    /// generation), holding one shard's read lock at a time: for an
    /// occasional look at the whole map (the dashboard's fleet live view),
    /// never a hot path. `f` must be quick and must not touch the map.
    pub fn for_each(&self, mut f: impl FnMut(&K, &V)) {
        let g = self.current.load(Ordering::Acquire);
        for generation in [g, g - 1] {
            for e in self.gens[Self::slot(generation)].iter() {
                f(e.key(), e.value());
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

/// No node: the end of a list.
const NIL: u32 = u32::MAX;

/// Below this many entries an [`LruMap`] is one shard, so eviction is
/// exact LRU; above it, 16 shards (approximate LRU: each shard evicts its
/// own least recently seen entry) keep threads from queueing on one lock.
const ONE_SHARD_BELOW: usize = 4_096;
const SHARDS: usize = 16;

struct LruNode<K, V> {
    key: K,
    value: V,
    seen_ms: i64,
    /// Towards the most recently seen entry.
    prev: u32,
    /// Towards the least recently seen entry.
    next: u32,
}

/// Nodes in chunks of a fixed size (a power of two, at most 1024): growing
/// never moves or copies a node, and the slack is under one chunk, where a
/// `Vec` that doubles holds up to twice its nodes and leaves the copies it
/// outgrew to the allocator.
struct Slab<T> {
    chunks: Vec<Vec<T>>,
    shift: u32,
    len: usize,
}

impl<T> Slab<T> {
    fn new(cap: usize) -> Self {
        Self {
            chunks: Vec::new(),
            shift: cap.clamp(1, 1_024).next_power_of_two().trailing_zeros(),
            len: 0,
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn push(&mut self, t: T) {
        if self.len & ((1 << self.shift) - 1) == 0 {
            self.chunks.push(Vec::with_capacity(1 << self.shift));
        }
        if let Some(chunk) = self.chunks.last_mut() {
            chunk.push(t);
        }
        self.len += 1;
    }
}

impl<T> std::ops::Index<usize> for Slab<T> {
    type Output = T;
    fn index(&self, i: usize) -> &T {
        &self.chunks[i >> self.shift][i & ((1 << self.shift) - 1)]
    }
}

impl<T> std::ops::IndexMut<usize> for Slab<T> {
    fn index_mut(&mut self, i: usize) -> &mut T {
        &mut self.chunks[i >> self.shift][i & ((1 << self.shift) - 1)]
    }
}

/// One shard: a hash index into a slab of nodes, threaded on a list from
/// most recently seen (`head`) to least (`tail`). Freed slots are reused,
/// so once the slab has grown a full shard allocates nothing.
struct LruShard<K, V> {
    index: fencegate_spatial::hash::FastMap<K, u32>,
    nodes: Slab<LruNode<K, V>>,
    free: Vec<u32>,
    head: u32,
    tail: u32,
    cap: usize,
}

impl<K: Eq + Hash + Copy, V> LruShard<K, V> {
    fn new(cap: usize) -> Self {
        Self {
            index: Default::default(),
            nodes: Slab::new(cap),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            cap,
        }
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next) = {
            let n = &self.nodes[i as usize];
            (n.prev, n.next)
        };
        match prev {
            NIL => self.head = next,
            p => self.nodes[p as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.nodes[n as usize].prev = prev,
        }
    }

    fn push_front(&mut self, i: u32) {
        let old = self.head;
        {
            let n = &mut self.nodes[i as usize];
            n.prev = NIL;
            n.next = old;
        }
        match old {
            NIL => self.tail = i,
            o => self.nodes[o as usize].prev = i,
        }
        self.head = i;
    }

    /// Marks node `i` seen at `now_ms`: it moves to the front.
    fn touch(&mut self, i: u32, now_ms: i64) {
        self.nodes[i as usize].seen_ms = self.nodes[i as usize].seen_ms.max(now_ms);
        if self.head != i {
            self.unlink(i);
            self.push_front(i);
        }
    }

    /// Removes node `i`, returning its value.
    fn remove_at(&mut self, i: u32) -> V
    where
        V: Default,
    {
        self.unlink(i);
        let n = &mut self.nodes[i as usize];
        self.index.remove(&n.key);
        self.free.push(i);
        std::mem::take(&mut n.value)
    }

    /// Inserts a new key at the front; the caller made room.
    fn insert(&mut self, key: K, value: V, now_ms: i64) {
        let node = LruNode {
            key,
            value,
            seen_ms: now_ms,
            prev: NIL,
            next: NIL,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.nodes[i as usize] = node;
                i
            }
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
        };
        self.index.insert(key, i);
        self.push_front(i);
    }
}

/// A bounded concurrent map that forgets its least recently seen entry
/// when full, and entries not seen for `ttl_ms`: for memories that are
/// best effort, where forgetting is safe and refusing is not.
///
/// "Seen" is any lookup or change of the key. Every operation takes one
/// shard lock; none allocates once the shard has grown to its capacity.
pub struct LruMap<K, V> {
    shards: Box<[Mutex<LruShard<K, V>>]>,
    hasher: fencegate_spatial::hash::FastBuild,
    ttl_ms: i64,
    cap: usize,
    len: AtomicUsize,
    /// Entries forgotten to make room (not by age), not yet reported.
    evicted: AtomicUsize,
}

impl<K: Eq + Hash + Copy, V: Default> LruMap<K, V> {
    /// An empty map holding at most `max_keys` keys (at least one), each
    /// for `ttl_ms` after it was last seen.
    pub fn new(ttl_ms: i64, max_keys: usize) -> Self {
        let cap = max_keys.max(1);
        let n = if cap < ONE_SHARD_BELOW { 1 } else { SHARDS };
        Self {
            shards: (0..n)
                .map(|i| Mutex::new(LruShard::new(cap / n + usize::from(i < cap % n))))
                .collect(),
            hasher: Default::default(),
            ttl_ms,
            cap,
            len: AtomicUsize::new(0),
            evicted: AtomicUsize::new(0),
        }
    }

    fn shard(&self, key: &K) -> std::sync::MutexGuard<'_, LruShard<K, V>> {
        use std::hash::BuildHasher;
        // Middle bits: the shard's own table places keys by the low bits
        // and tags them with the top seven, so neither may be constant
        // within a shard.
        let i = if self.shards.len() == 1 {
            0
        } else {
            (self.hasher.hash_one(key) >> 40) as usize % self.shards.len()
        };
        // A panic under the lock leaves the list consistent (no method
        // panics between unlink and relink), so a poisoned shard is usable.
        self.shards[i]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Looks `key` up and marks it seen at `now_ms`; `f` reads the value.
    pub fn get<R>(&self, key: &K, now_ms: i64, f: impl FnOnce(&V) -> R) -> Option<R> {
        let mut s = self.shard(key);
        let i = *s.index.get(key)?;
        s.touch(i, now_ms);
        Some(f(&s.nodes[i as usize].value))
    }

    /// Runs `f` on the value of `key` (`None` if absent) and marks the key
    /// seen at `now_ms`. `f` may fill, change or empty the slot. A new key
    /// in a full shard first makes room by forgetting the shard's least
    /// recently seen entry (counted, see [`LruMap::take_evicted`]).
    pub fn with<R>(&self, key: K, now_ms: i64, f: impl FnOnce(&mut Option<V>) -> R) -> R {
        let mut s = self.shard(&key);
        if let Some(&i) = s.index.get(&key) {
            let mut slot = Some(std::mem::take(&mut s.nodes[i as usize].value));
            let r = f(&mut slot);
            match slot {
                Some(v) => {
                    s.nodes[i as usize].value = v;
                    s.touch(i, now_ms);
                }
                None => {
                    s.remove_at(i);
                    self.len.fetch_sub(1, Ordering::Relaxed);
                }
            }
            return r;
        }
        let mut slot = None;
        let r = f(&mut slot);
        if let Some(v) = slot {
            if s.index.len() >= s.cap {
                let tail = s.tail;
                s.remove_at(tail);
                self.evicted.fetch_add(1, Ordering::Relaxed);
            } else {
                self.len.fetch_add(1, Ordering::Relaxed);
            }
            s.insert(key, v, now_ms);
        }
        r
    }

    /// Inserts `key` unless it is present; returns whether it was inserted.
    /// Either way the key is marked seen.
    pub fn insert_new(&self, key: K, now_ms: i64, value: V) -> bool {
        self.with(key, now_ms, |slot| {
            if slot.is_some() {
                false
            } else {
                *slot = Some(value);
                true
            }
        })
    }

    /// Forgets `key`.
    pub fn remove(&self, key: &K) {
        let mut s = self.shard(key);
        if let Some(&i) = s.index.get(key) {
            s.remove_at(i);
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Forgets every entry not seen for `ttl_ms` before `now_ms`: the
    /// oldest ones, from the back of each shard, so the cost is the number
    /// forgotten. Call it about once a second (the edge's tick).
    pub fn expire(&self, now_ms: i64) {
        for shard in self.shards.iter() {
            let mut s = shard
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            while s.tail != NIL && now_ms - s.nodes[s.tail as usize].seen_ms >= self.ttl_ms {
                let tail = s.tail;
                s.remove_at(tail);
                self.len.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Entries forgotten to make room since the last call.
    pub fn take_evicted(&self) -> usize {
        self.evicted.swap(0, Ordering::Relaxed)
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether the map holds no keys.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The key limit.
    pub fn capacity(&self) -> usize {
        self.cap
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

#[cfg(test)]
mod lru_tests {
    use super::*;

    #[test]
    fn full_map_forgets_the_least_recently_seen() {
        let m: LruMap<u64, i64> = LruMap::new(1_000_000, 3);
        for k in 1..=3 {
            m.with(k, k as i64, |s| *s = Some(k as i64));
        }
        // Seeing 1 makes 2 the least recently seen.
        assert_eq!(m.get(&1, 10, |v| *v), Some(1));
        m.with(4, 11, |s| *s = Some(4));
        assert_eq!(m.get(&2, 12, |v| *v), None, "2 was evicted");
        for k in [1, 3, 4] {
            assert!(m.get(&k, 12, |_| ()).is_some(), "{k} kept");
        }
        assert_eq!((m.len(), m.take_evicted(), m.take_evicted()), (3, 1, 0));
    }

    #[test]
    fn a_flood_of_new_keys_evicts_only_old_ones_and_never_refuses() {
        let m: LruMap<u64, u8> = LruMap::new(1_000_000, 100);
        for k in 0..10_000u64 {
            assert!(m.insert_new(k, k as i64, 1));
        }
        assert_eq!(m.len(), 100);
        assert_eq!(m.take_evicted(), 9_900);
        assert!((9_900..10_000).all(|k| m.get(&k, 0, |_| ()).is_some()));
    }

    #[test]
    fn entries_expire_after_the_ttl_since_last_seen() {
        let m: LruMap<u64, u8> = LruMap::new(100, 10);
        m.insert_new(1, 0, 1);
        m.insert_new(2, 50, 1);
        m.get(&1, 60, |_| ());
        m.expire(149);
        assert_eq!(
            m.len(),
            2,
            "1 was seen at 60, 2 at 50: both younger than 100"
        );
        m.expire(150);
        assert!(m.get(&2, 150, |_| ()).is_none());
        assert!(m.get(&1, 150, |_| ()).is_some());
        assert_eq!(m.take_evicted(), 0, "expiry is not eviction");
    }

    #[test]
    fn removal_and_reuse_keep_the_list_consistent() {
        let m: LruMap<u64, u64> = LruMap::new(1_000_000, 4);
        for round in 0..50u64 {
            for k in 0..6u64 {
                m.with(k + round, 0, |s| *s = Some(k));
            }
            m.remove(&(round + 2));
            m.with(round + 3, 0, |s| *s = None);
        }
        let s = m.shards[0].lock().unwrap();
        // Walk the list both ways: same length as the index.
        let mut n = 0;
        let mut i = s.head;
        let mut last = NIL;
        while i != NIL {
            assert_eq!(s.nodes[i as usize].prev, last);
            last = i;
            i = s.nodes[i as usize].next;
            n += 1;
        }
        assert_eq!(last, s.tail);
        assert_eq!(n, s.index.len());
        assert_eq!(n, m.len());
    }

    #[test]
    fn large_maps_are_sharded_and_still_bounded() {
        let m: LruMap<(u64, u64), u8> = LruMap::new(1_000_000, 10_000);
        for k in 0..50_000u64 {
            m.insert_new((7, k), 0, 1);
        }
        assert!(m.len() <= 10_000);
        assert_eq!(m.len() + m.take_evicted(), 50_000);
    }
}
