//! Several targets (`--target` given more than once, the nodes of one
//! deployment): which node each employee and device uses, and what each
//! node was given.
//!
//! An employee or a device sticks to one target, picked by a hash of its
//! index and the seed: a load balancer keeps a connection on one node, and
//! a run that kept each phone on one node makes each node's figures its
//! own. With `move_share`, that share of the employees send their later
//! punches (the repeat a few minutes on, and the resend after a lost ack)
//! to another target than their first: the cross-node repeats and resends
//! that only the `[cluster]` claims turn into one record (docs/SCALING.md).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use fencegate::client::Connector;
use serde::Serialize;

use crate::rng::Rng;
use crate::target::Issuer;
use crate::world::stream;

/// Which target each employee and device uses.
#[derive(Debug, Clone, Copy)]
pub struct Spread {
    targets: u64,
    seed: u64,
    move_share: f64,
}

impl Spread {
    /// A spread over `targets` targets for the world of `seed`; a share
    /// `move_share` (0 to 1) of the employees move for their later punches.
    pub fn new(targets: usize, seed: u64, move_share: f64) -> Self {
        Self {
            targets: targets.max(1) as u64,
            seed,
            move_share: move_share.clamp(0.0, 1.0),
        }
    }

    /// The target of employee `i`'s first punch.
    pub fn employee(&self, i: u64) -> usize {
        Rng::derive(self.seed, stream::SPREAD_EMPLOYEE, i).below(self.targets) as usize
    }

    /// The other target employee `i` moves to for its later punches, if it
    /// is one of the movers.
    pub fn moved(&self, i: u64) -> Option<usize> {
        if self.targets < 2 {
            return None;
        }
        let mut r = Rng::derive(self.seed, stream::SPREAD_MOVE, i);
        if !r.chance(self.move_share) {
            return None;
        }
        let step = 1 + r.below(self.targets - 1);
        Some(((self.employee(i) as u64 + step) % self.targets) as usize)
    }

    /// The target of fleet device `d`.
    pub fn device(&self, d: u64) -> usize {
        Rng::derive(self.seed, stream::SPREAD_DEVICE, d).below(self.targets) as usize
    }
}

/// How the harness reaches one target, and what it gave that target.
#[derive(Debug)]
pub struct Link {
    /// The target's address, for the report.
    pub name: String,
    /// Client endpoints to it, used round-robin.
    pub connectors: Vec<Connector>,
    /// Client endpoints to its punch-only address (its own client sockets,
    /// as the phones that punch are other devices than the fleet's); the
    /// same as `connectors` when it has none.
    pub punch_connectors: Vec<Connector>,
    /// Device tokens for its tenant.
    pub issuer: Arc<Issuer>,
    /// Counts kept while the loads run.
    pub counts: LinkCounts,
}

impl Link {
    /// The connector for device `i`'s pings and backlogs.
    pub fn connector(&self, i: u64) -> &Connector {
        &self.connectors[i as usize % self.connectors.len()]
    }

    /// The connector for employee `i`'s punches.
    pub fn punch_connector(&self, i: u64) -> &Connector {
        &self.punch_connectors[i as usize % self.punch_connectors.len()]
    }
}

/// What one target was given; atomics, bumped once per punch or datagram
/// outcome (not per byte).
#[derive(Debug, Default)]
pub struct LinkCounts {
    /// Punches offered here first (an employee's first punch, or a moved
    /// employee's later ones).
    pub punches_offered: AtomicU64,
    /// Final acks this target gave.
    pub punches_acked: AtomicU64,
    /// Failed attempts against it (connect, send, `Busy`).
    pub punch_errors: AtomicU64,
    /// Of the offered punches, those of employees who started elsewhere.
    pub punches_moved_in: AtomicU64,
    /// Fleet devices connected to it.
    pub devices_connected: AtomicU64,
    /// Ping datagrams handed to QUIC for it.
    pub datagrams_sent: AtomicU64,
}

impl LinkCounts {
    /// Adds one to `c`.
    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// What one target was given, in the report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TargetReport {
    /// The target's address.
    pub target: String,
    /// Punches offered to it.
    pub punches_offered: u64,
    /// Final acks it gave.
    pub punches_acked: u64,
    /// Failed attempts against it.
    pub punch_errors: u64,
    /// Punches of employees who started on another target (`--move-share`).
    pub punches_moved_in: u64,
    /// Fleet devices connected to it.
    pub devices_connected: u64,
    /// Ping datagrams sent to it.
    pub datagrams_sent: u64,
}

impl TargetReport {
    /// The counts of `link` so far.
    pub fn of(link: &Link) -> Self {
        let c = &link.counts;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Self {
            target: link.name.clone(),
            punches_offered: get(&c.punches_offered),
            punches_acked: get(&c.punches_acked),
            punch_errors: get(&c.punch_errors),
            punches_moved_in: get(&c.punches_moved_in),
            devices_connected: get(&c.devices_connected),
            datagrams_sent: get(&c.datagrams_sent),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn employees_and_devices_spread_over_every_target_and_movers_leave_home() {
        let s = Spread::new(3, 42, 0.5);
        let mut homes = [0u32; 3];
        let mut movers = 0;
        for i in 0..3_000 {
            let home = s.employee(i);
            homes[home] += 1;
            assert_eq!(s.employee(i), home, "sticky");
            if let Some(away) = s.moved(i) {
                assert_ne!(away, home, "a mover moves to another target");
                assert!(away < 3);
                movers += 1;
            }
        }
        for n in homes {
            assert!((900..=1_100).contains(&n), "{homes:?}");
        }
        assert!((1_350..=1_650).contains(&movers), "{movers}");
        let mut devices = [0u32; 3];
        for d in 0..3_000 {
            devices[s.device(d)] += 1;
        }
        assert!(
            devices.iter().all(|n| (900..=1_100).contains(n)),
            "{devices:?}"
        );
        // One target: nobody moves.
        let one = Spread::new(1, 42, 1.0);
        assert!((0..100).all(|i| one.employee(i) == 0 && one.moved(i).is_none()));
    }
}
