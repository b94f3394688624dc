//! What the pipeline remembers about an employee between punches, for the
//! checks that compare a punch with earlier ones:
//!
//! - impossible speed between consecutive GPS fixes of the employee;
//! - coordinates repeated exactly with zero accuracy (a spoofing tool's
//!   signature: real fixes jitter and never report 0 m);
//! - the minimum interval between clock-in and clock-out;
//! - dual verification (the first factor's time and record).
//!
//! The state is a small fixed-size value per employee, kept in a
//! [`WindowMap`](crate::dedup::WindowMap) by the pipeline and changed under
//! the entry's lock, so concurrent punches of one employee see each other.

use fencegate_schema::{PunchKind, PunchMethod, TerminalAuth, anomaly};
use fencegate_spatial::{Point, haversine_m};

use super::{DualRule, TenantRules};

/// How long an employee's state is remembered without a punch: longer than
/// any minimum interval or dual-verification gap the rules accept (12 h),
/// and long enough to compare a morning fix with the evening's.
pub const EMPLOYEE_MEMORY_MS: i64 = 24 * 3_600_000;

/// A GPS fix of a punch.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LastFix {
    /// Attendance time of the punch.
    pub at_ms: i64,
    /// Latitude, degrees.
    pub lat: f64,
    /// Longitude, degrees.
    pub lon: f64,
    /// Accuracy radius, metres.
    pub accuracy_m: f32,
}

/// A remembered punch: its attendance time and its record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mark {
    /// Attendance time.
    pub at_ms: i64,
    /// The punch's own record id.
    pub record_id: [u8; 16],
}

/// One employee's memory.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EmployeeState {
    /// The last GPS punch's fix.
    pub last_fix: Option<LastFix>,
    /// The last accepted clock-in.
    pub last_in: Option<Mark>,
    /// The last first-factor punch of dual verification, per kind (in, out).
    pub first_factor: [Option<Mark>; 2],
}

/// A punch as [`EmployeeState::observe`] sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observed {
    /// Attendance time.
    pub at_ms: i64,
    /// In or out.
    pub kind: PunchKind,
    /// Method.
    pub method: PunchMethod,
    /// Terminal identification.
    pub auth: TerminalAuth,
    /// Position, for GPS punches.
    pub fix: Option<(f64, f64, f32)>,
    /// The punch's own record id.
    pub record_id: [u8; 16],
}

/// What the memory adds to a punch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Observation {
    /// Anomaly flags (impossible speed, zero-accuracy repeat, dual gap).
    pub flags: u64,
    /// A clock-out within the minimum interval: merged into this clock-in.
    pub merged_into: Option<[u8; 16]>,
    /// Dual verification: the first factor's record.
    pub paired_with: Option<[u8; 16]>,
}

fn kind_slot(kind: PunchKind) -> usize {
    usize::from(kind == PunchKind::Out)
}

impl EmployeeState {
    /// Compares an accepted punch with the memory and updates it: [`check`]
    /// then [`remember`]. Used where the punch is already durable (replay).
    ///
    /// [`check`]: Self::check
    /// [`remember`]: Self::remember
    pub fn observe(
        &mut self,
        rules: &TenantRules,
        dual: Option<DualRule>,
        p: &Observed,
        counts: bool,
    ) -> Observation {
        let o = self.check(rules, dual, p);
        self.remember(dual, p, counts);
        o
    }

    /// Makes a punch part of the memory, once its record is durable (so a
    /// punch the log refused never becomes the reference for later ones).
    /// `counts` is false for a punch merged as a repeat: it does not become
    /// the reference for later punches.
    pub fn remember(&mut self, dual: Option<DualRule>, p: &Observed, counts: bool) {
        if !counts {
            return;
        }
        if let Some((lat, lon, acc)) = p.fix {
            self.last_fix = Some(LastFix {
                at_ms: p.at_ms,
                lat,
                lon,
                accuracy_m: acc,
            });
        }
        if let Some(d) = dual {
            if !d.second.matches(p.method, p.auth) && d.first.matches(p.method, p.auth) {
                self.first_factor[kind_slot(p.kind)] = Some(Mark {
                    at_ms: p.at_ms,
                    record_id: p.record_id,
                });
            }
        }
        if p.kind == PunchKind::In {
            self.last_in = Some(Mark {
                at_ms: p.at_ms,
                record_id: p.record_id,
            });
        }
    }

    /// Compares a punch with the memory, changing nothing. `dual` is the
    /// employee's group's rule.
    pub fn check(&self, rules: &TenantRules, dual: Option<DualRule>, p: &Observed) -> Observation {
        let mut o = Observation::default();
        if let Some((lat, lon, acc)) = p.fix {
            if let Some(prev) = self.last_fix {
                if acc == 0.0
                    && prev.accuracy_m == 0.0
                    && prev.lat.to_bits() == lat.to_bits()
                    && prev.lon.to_bits() == lon.to_bits()
                {
                    o.flags |= anomaly::ZERO_ACCURACY_REPEAT;
                }
                if rules.impossible_speed_mps > 0.0 {
                    if let (Ok(a), Ok(b)) = (Point::new(prev.lat, prev.lon), Point::new(lat, lon)) {
                        let metres = haversine_m(a, b);
                        // Fixes within each other's accuracy are not a move.
                        let slack = f64::from(acc.max(0.0) + prev.accuracy_m.max(0.0));
                        let moved = (metres - slack).max(0.0);
                        let secs = (p.at_ms - prev.at_ms).abs() as f64 / 1_000.0;
                        if moved > 0.0 && moved > rules.impossible_speed_mps * secs.max(1.0) {
                            o.flags |= anomaly::IMPOSSIBLE_SPEED;
                        }
                    }
                }
            }
        }
        if p.kind == PunchKind::Out && rules.min_interval_ms > 0 {
            if let Some(m) = self.last_in {
                if p.at_ms >= m.at_ms && p.at_ms - m.at_ms < rules.min_interval_ms {
                    o.merged_into = Some(m.record_id);
                }
            }
        }
        if let Some(d) = dual {
            let slot = kind_slot(p.kind);
            if d.second.matches(p.method, p.auth) {
                match self.first_factor[slot] {
                    Some(m) if p.at_ms >= m.at_ms && p.at_ms - m.at_ms <= d.within_ms => {
                        o.paired_with = Some(m.record_id);
                    }
                    Some(m) if p.at_ms >= m.at_ms && p.at_ms - m.at_ms <= 12 * 3_600_000 => {
                        // Too far apart: linked, so a supervisor sees both, and flagged.
                        o.paired_with = Some(m.record_id);
                        o.flags |= anomaly::DUAL_VERIFICATION_GAP;
                    }
                    _ => o.flags |= anomaly::DUAL_VERIFICATION_GAP,
                }
            }
        }
        o
    }
}

/// Key of one QR use: tenant, employee, site and step.
pub type QrUseKey = (u64, u64, u64, i64);
