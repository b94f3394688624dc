//! Connections shed silently, remembered so that their resent Initials get
//! in before new arrivals (docs/OPERATIONS.md, "Overload").
//!
//! A silent shed (`quic.shed_connections = "silent"`) leaves the client's
//! connection attempt alive: its QUIC stack resends the same Initial, with
//! the same original destination connection id, at doubling intervals.
//! Without a memory every copy competes with the new arrivals on equal
//! terms, so at three times capacity an attempt could lose five draws in a
//! row, time out and start over with a new key share (20,000–25,000 of
//! 72,000 did). Counting how often each attempt was shed lets the ones that
//! have waited longest in first: newcomers get half the set-up limit,
//! attempts shed once three quarters, attempts shed twice or more all of
//! it. The caps apply only while a crowd waits (a shed in the last
//! [`CROWD_MEMORY`]); a node that sheds nothing admits up to the limit.
//!
//! The memory is a fixed table of atomic words indexed by a hash of the
//! connection id: lossy (a collision overwrites, and the attempt it held
//! loses its place, nothing else), no lock, no allocation after start.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long after the last silent shed newcomers still yield to the
/// attempts that were shed: longer than the resend interval of most of
/// them (0.45–1.5 s for the first resend with the reference client).
pub const CROWD_MEMORY: Duration = Duration::from_secs(2);

/// Slots in a lane's table: room for a crowd of this many attempts at
/// once (a 3× peak left about 50,000 waiting) for 1 MiB.
const SLOTS: usize = 1 << 17;

/// The low byte of a slot holds the shed count; the rest is the tag.
const COUNT_BITS: u64 = 0xFF;

/// Silently shed connection attempts of one lane and how often each was
/// shed.
#[derive(Debug)]
pub struct ShedMemory {
    slots: Box<[AtomicU64]>,
    hasher: std::hash::RandomState,
    epoch: Instant,
    /// When the last silent shed happened, µs after `epoch` (0: never).
    last_shed_us: AtomicU64,
}

impl ShedMemory {
    /// An empty memory; `now` is its time base.
    pub fn new(now: Instant) -> Self {
        Self {
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            hasher: std::hash::RandomState::new(),
            epoch: now,
            last_shed_us: AtomicU64::new(0),
        }
    }

    /// The slot and tag of connection id `cid` (the tag is never 0, which
    /// marks an empty slot).
    fn place(&self, cid: &[u8]) -> (usize, u64) {
        let h = self.hasher.hash_one(cid);
        ((h as usize) & (SLOTS - 1), (h & !COUNT_BITS) | 0x100)
    }

    /// How often the attempt with original destination connection id `cid`
    /// was shed so far (0: a new arrival, or one the table lost).
    pub fn sheds(&self, cid: &[u8]) -> u8 {
        let (i, tag) = self.place(cid);
        let v = self.slots[i].load(Ordering::Relaxed);
        if v & !COUNT_BITS == tag {
            (v & COUNT_BITS) as u8
        } else {
            0
        }
    }

    /// Notes that the attempt `cid` was shed silently at `now`.
    pub fn shed(&self, cid: &[u8], now: Instant) {
        let (i, tag) = self.place(cid);
        let _ = self.slots[i].fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
            Some(if v & !COUNT_BITS == tag {
                tag | (v & COUNT_BITS).saturating_add(1).min(COUNT_BITS)
            } else {
                tag | 1
            })
        });
        self.last_shed_us
            .fetch_max(self.micros(now).max(1), Ordering::Relaxed);
    }

    /// Forgets the attempt `cid` (it was admitted).
    pub fn forget(&self, cid: &[u8]) {
        let (i, tag) = self.place(cid);
        let _ = self.slots[i].fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
            (v & !COUNT_BITS == tag).then_some(0)
        });
    }

    /// Whether a crowd is waiting: an attempt was shed within
    /// [`CROWD_MEMORY`] of `now`.
    pub fn crowd_waiting(&self, now: Instant) -> bool {
        let last = self.last_shed_us.load(Ordering::Relaxed);
        last != 0 && self.micros(now).saturating_sub(last) < CROWD_MEMORY.as_micros() as u64
    }

    fn micros(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_micros()).unwrap_or(u64::MAX)
    }
}

/// The share of the set-up `limit` an attempt shed `sheds` times may fill
/// while a crowd waits: a half for a newcomer, three quarters after one
/// shed, all of it after two.
pub fn cap(limit: usize, sheds: u8) -> usize {
    (limit * (2 + usize::from(sheds.min(2))) / 4).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attempt_is_counted_per_shed_and_forgotten_when_admitted() {
        let t0 = crate::clock::instant();
        let m = ShedMemory::new(t0);
        let (a, b) = (b"attempt-a".as_slice(), b"attempt-b".as_slice());
        assert_eq!(m.sheds(a), 0);
        m.shed(a, t0);
        m.shed(a, t0);
        assert_eq!(m.sheds(a), 2);
        assert_eq!(m.sheds(b), 0, "another attempt is a newcomer");
        m.forget(b);
        assert_eq!(m.sheds(a), 2, "forgetting another leaves it");
        m.forget(a);
        assert_eq!(m.sheds(a), 0);
        for _ in 0..300 {
            m.shed(b, t0);
        }
        assert_eq!(m.sheds(b), 255, "the count saturates");
    }

    #[test]
    fn the_caps_hold_only_while_a_crowd_waits() {
        let t0 = crate::clock::instant();
        let m = ShedMemory::new(t0);
        assert!(!m.crowd_waiting(t0), "nothing shed yet");
        m.shed(b"x", t0 + Duration::from_millis(10));
        assert!(m.crowd_waiting(t0 + Duration::from_millis(10)));
        assert!(m.crowd_waiting(t0 + CROWD_MEMORY));
        assert!(!m.crowd_waiting(t0 + CROWD_MEMORY + Duration::from_millis(20)));
    }

    #[test]
    fn newcomers_get_half_the_limit_and_twice_shed_attempts_all_of_it() {
        assert_eq!(cap(128, 0), 64);
        assert_eq!(cap(128, 1), 96);
        assert_eq!(cap(128, 2), 128);
        assert_eq!(cap(128, 200), 128);
        assert_eq!(cap(1, 0), 1, "never 0");
    }
}
