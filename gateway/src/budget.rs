//! Per-device and per-tenant punch budgets: rate limits, and each tenant's
//! share of the node's memory.
//!
//! A rate limit is a token bucket written as GCRA (the generic cell rate
//! algorithm): the whole bucket is one number, the "theoretical arrival
//! time" of the next punch, so a tenant's bucket is one atomic shared by
//! every connection (no lock), and a device's is one `i64` inside its map
//! entry. Like the rest of the pipeline it is handed `now`; it reads no
//! clock.
//!
//! The defaults, the shares and what a client sees are in
//! `docs/OPERATIONS.md` ("Budgets") and `docs/PROTOCOL.md` (§10).

use std::sync::atomic::{AtomicI64, Ordering};

use serde::Deserialize;

/// A sustained rate with a burst: `burst` punches at once, refilled at
/// `per_s` a second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Punches a second, sustained. Must be positive.
    pub per_s: f64,
    /// Punches allowed at once after a quiet spell (at least 1).
    pub burst: u32,
}

impl Rate {
    /// Microseconds one token takes to refill.
    fn interval_us(self) -> i64 {
        ((1e6 / self.per_s).ceil() as i64).max(1)
    }

    /// How far ahead of `now` the bucket may run before it refuses: the
    /// burst less the one token the punch itself takes.
    fn tolerance_us(self) -> i64 {
        self.interval_us()
            .saturating_mul(i64::from(self.burst.max(1) - 1))
    }

    /// Milliseconds an empty bucket takes to refill completely. A bucket
    /// left alone this long is full again, so forgetting it (to bound the
    /// map of device buckets) loses nothing.
    pub fn refill_ms(self) -> i64 {
        (self
            .interval_us()
            .saturating_mul(i64::from(self.burst.max(1)))
            / 1_000)
            .max(1)
    }
}

/// Takes one token at `now_ms` from the bucket whose theoretical arrival
/// time is `tat_us`: `Ok(new tat)` or `Err(milliseconds until a token is
/// available)`. A `tat_us` further ahead than any accepted punch can leave
/// it means the wall clock stepped back; the bucket restarts from `now`
/// rather than refusing for the length of the step.
fn gcra(tat_us: i64, rate: Rate, now_ms: i64) -> Result<i64, u32> {
    let now_us = now_ms.saturating_mul(1_000);
    let interval = rate.interval_us();
    let tolerance = rate.tolerance_us();
    let mut tat = tat_us.max(now_us);
    if tat - now_us > tolerance + interval {
        tat = now_us;
    }
    if tat - now_us > tolerance {
        let wait_us = tat - now_us - tolerance;
        return Err(((wait_us + 999) / 1_000).clamp(1, i64::from(u32::MAX)) as u32);
    }
    Ok(tat + interval)
}

/// A device's bucket, kept in the pipeline's map of device buckets and
/// changed under that entry's lock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceBucket {
    tat_us: i64,
}

impl DeviceBucket {
    /// Takes one punch's token at `now_ms`, or says how many milliseconds
    /// until the next one is available.
    pub fn take(&mut self, rate: Rate, now_ms: i64) -> Result<(), u32> {
        let tat = if self.tat_us == 0 {
            i64::MIN / 2
        } else {
            self.tat_us
        };
        self.tat_us = gcra(tat, rate, now_ms)?;
        Ok(())
    }
}

/// A tenant's bucket, shared by every connection of the tenant: one atomic,
/// changed by compare-and-swap.
#[derive(Debug)]
pub struct SharedBucket {
    tat_us: AtomicI64,
}

impl Default for SharedBucket {
    fn default() -> Self {
        Self {
            tat_us: AtomicI64::new(i64::MIN / 2),
        }
    }
}

impl SharedBucket {
    /// Takes one punch's token at `now_ms`, or says how many milliseconds
    /// until the next one is available.
    pub fn take(&self, rate: Rate, now_ms: i64) -> Result<(), u32> {
        let mut cur = self.tat_us.load(Ordering::Relaxed);
        loop {
            let next = gcra(cur, rate, now_ms)?;
            match self
                .tat_us
                .compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(seen) => cur = seen,
            }
        }
    }
}

/// One tenant's budgets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TenantBudget {
    /// Punch ids the tenant's idempotency window holds (and, separately,
    /// repeat keys). When full, the tenant's new punches are answered
    /// `Busy`; no other tenant's are.
    pub max_punch_keys: usize,
    /// Employees (and, separately, QR code uses) the tenant's anti-cheat
    /// memory holds. When full, the least recently seen entry of this
    /// tenant is forgotten; nothing is refused.
    pub max_employees: usize,
    /// The tenant's punch rate, all its devices together; `None`: no limit.
    pub rate: Option<Rate>,
}

/// The budgets a pipeline applies: every tenant's share, and the device
/// rate.
#[derive(Debug, Clone, PartialEq)]
pub struct Budgets {
    /// The budget of a tenant with no entry in `tenants`.
    pub tenant: TenantBudget,
    /// Tenants with their own budget, by tenant id.
    pub tenants: Vec<(String, TenantBudget)>,
    /// Each device's punch rate, over all its connections; `None`: no limit.
    pub device_rate: Option<Rate>,
}

/// Splits the node's memory among the tenants (see [`compile`]).
fn shares(
    b: &RawBudgets,
    tenant_ids: &[String],
    max_punch_keys: usize,
    max_employees: usize,
) -> Budgets {
    let rate = |per_s: f64, burst: u32| (per_s > 0.0).then_some(Rate { per_s, burst });
    let tenant_rate = rate(b.tenant_punches_per_s, b.tenant_punch_burst);
    let share = |node: usize, own: &dyn Fn(&RawBudgetTenant) -> Option<usize>| {
        let mut fixed = 0usize;
        let mut others = 0usize;
        for id in tenant_ids {
            match b.tenants.get(id).and_then(own) {
                Some(n) => fixed = fixed.saturating_add(n),
                None => others += 1,
            }
        }
        (node.saturating_sub(fixed) / others.max(1)).max(1)
    };
    let keys = share(max_punch_keys, &|t| t.max_punch_keys);
    let employees = share(max_employees, &|t| t.max_employees);
    let default = TenantBudget {
        max_punch_keys: keys,
        max_employees: employees,
        rate: tenant_rate,
    };
    let tenants = b
        .tenants
        .iter()
        .map(|(id, t)| {
            let r = t.punches_per_s.unwrap_or(b.tenant_punches_per_s);
            let burst = t.punch_burst.unwrap_or(b.tenant_punch_burst);
            (
                id.clone(),
                TenantBudget {
                    max_punch_keys: t.max_punch_keys.unwrap_or(keys),
                    max_employees: t.max_employees.unwrap_or(employees),
                    rate: rate(r, burst),
                },
            )
        })
        .collect();
    Budgets {
        tenant: default,
        tenants,
        device_rate: rate(b.device_punches_per_s, b.device_punch_burst),
    }
}

/// `[budgets]`: punch rate limits per device and per tenant, and per-tenant
/// shares of `dedup.max_punch_keys` and `dedup.max_employees`. A punch over
/// a rate is answered `Busy` with the milliseconds until the bucket has a
/// token, and counted in `fencegate_refused_total{channel="punch"}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawBudgets {
    /// Punches a second one device may send, over all its connections
    /// (0 = no limit). A phone punches a few times a day and a door
    /// terminal about once a second at the peak at most.
    ///
    /// `10` unless set.
    pub device_punches_per_s: f64,
    /// Punches one device may send at once after a quiet spell (a terminal
    /// uploading punches it held offline).
    ///
    /// `100` unless set.
    pub device_punch_burst: u32,
    /// Punches a second one tenant may send, all its devices together
    /// (0 = no limit): caps the share of a node one tenant can take.
    ///
    /// `1000` unless set.
    pub tenant_punches_per_s: f64,
    /// Punches one tenant may send at once (the 9:00 spike).
    ///
    /// `10000` unless set.
    pub tenant_punch_burst: u32,
    /// Per-tenant budgets (`[budgets.tenants.acme]`). A tenant without
    /// `max_punch_keys` (or `max_employees`) gets an even share of what
    /// the node's `dedup` value leaves after the tenants that set one.
    pub tenants: std::collections::BTreeMap<String, RawBudgetTenant>,
}

impl Default for RawBudgets {
    fn default() -> Self {
        Self {
            device_punches_per_s: 10.0,
            device_punch_burst: 100,
            tenant_punches_per_s: 1_000.0,
            tenant_punch_burst: 10_000,
            tenants: std::collections::BTreeMap::new(),
        }
    }
}

/// `[budgets.tenants.<id>]`: one tenant's own budgets.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawBudgetTenant {
    /// Punch ids (and repeat keys) this tenant's idempotency window holds.
    pub max_punch_keys: Option<usize>,
    /// Employees (and QR uses) this tenant's anti-cheat memory holds.
    pub max_employees: Option<usize>,
    /// See [`RawBudgets::tenant_punches_per_s`].
    pub punches_per_s: Option<f64>,
    /// See [`RawBudgets::tenant_punch_burst`].
    pub punch_burst: Option<u32>,
}

/// Compiles `[budgets]`: checks every rate and share (each problem into
/// `p`) and divides the node's `max_punch_keys` and `max_employees` among
/// the tenants `tenant_ids` names: a tenant with its own value
/// (`[budgets.tenants.<id>]`) gets it, and the rest is divided evenly
/// among the others, so the shares never add up to more than the node
/// holds and no tenant's window can be filled by another.
pub(crate) fn compile(
    b: &RawBudgets,
    tenant_ids: &[String],
    max_punch_keys: usize,
    max_employees: usize,
    p: &mut Vec<String>,
) -> Budgets {
    let rate = |p: &mut Vec<String>, at: &str, per_s: f64, burst: u32| {
        if !(per_s.is_finite() && (0.0..=1_000_000.0).contains(&per_s)) {
            p.push(format!(
                "{at}punches_per_s = {per_s} is out of range; use 0 (no limit) to 1000000"
            ));
        }
        if per_s > 0.0 && burst == 0 {
            p.push(format!(
                "{at}punch_burst = 0 would refuse every punch; use at least 1"
            ));
        }
    };
    rate(
        p,
        "budgets.device_",
        b.device_punches_per_s,
        b.device_punch_burst,
    );
    rate(
        p,
        "budgets.tenant_",
        b.tenant_punches_per_s,
        b.tenant_punch_burst,
    );
    let (mut keys, mut employees) = (0usize, 0usize);
    for (id, t) in &b.tenants {
        let at = format!("budgets.tenants.{id}.");
        if !tenant_ids.iter().any(|k| k == id) {
            p.push(format!(
                "budgets.tenants.{id}: no [[tenants]] block has id {id:?}; add one or remove the override"
            ));
        }
        rate(
            p,
            &at,
            t.punches_per_s.unwrap_or(b.tenant_punches_per_s),
            t.punch_burst.unwrap_or(b.tenant_punch_burst),
        );
        keys = keys.saturating_add(t.max_punch_keys.unwrap_or(0));
        employees = employees.saturating_add(t.max_employees.unwrap_or(0));
        if t.max_punch_keys == Some(0) || t.max_employees == Some(0) {
            p.push(format!(
                "{at}max_punch_keys and max_employees must be at least 1"
            ));
        }
    }
    if keys > max_punch_keys {
        p.push(format!(
            "budgets.tenants.*.max_punch_keys add up to {keys}, more than dedup.max_punch_keys = {max_punch_keys}; the node total bounds memory, so raise it or lower the tenants' shares"
        ));
    }
    if employees > max_employees {
        p.push(format!(
            "budgets.tenants.*.max_employees add up to {employees}, more than dedup.max_employees = {max_employees}; the node total bounds memory, so raise it or lower the tenants' shares"
        ));
    }
    shares(b, tenant_ids, max_punch_keys, max_employees)
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: Rate = Rate {
        per_s: 2.0,
        burst: 5,
    };

    #[test]
    fn device_bucket_lets_the_burst_through_then_the_rate() {
        let mut b = DeviceBucket::default();
        let t = 1_790_000_000_000;
        assert_eq!((0..100).filter(|_| b.take(R, t).is_ok()).count(), 5);
        // Refused with the wait until the next token: half a second.
        assert_eq!(b.take(R, t), Err(500));
        assert_eq!(b.take(R, t + 499), Err(1));
        assert!(b.take(R, t + 500).is_ok());
        assert!(b.take(R, t + 500).is_err());
        // A long silence refills the burst, never more.
        assert_eq!(
            (0..100)
                .filter(|_| b.take(R, t + 3_600_000).is_ok())
                .count(),
            5
        );
    }

    #[test]
    fn a_wall_clock_step_back_does_not_lock_the_bucket() {
        let mut b = DeviceBucket::default();
        let t = 1_790_000_000_000;
        for _ in 0..5 {
            b.take(R, t).unwrap();
        }
        // An hour back: without the reset this waits an hour.
        assert!(b.take(R, t - 3_600_000).is_ok());
    }

    #[test]
    fn shared_bucket_counts_across_threads() {
        let b = SharedBucket::default();
        let rate = Rate {
            per_s: 1.0,
            burst: 1_000,
        };
        let ok = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..500 {
                        if b.take(rate, 0).is_ok() {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(ok.load(Ordering::Relaxed), 1_000, "exactly the burst");
    }

    #[test]
    fn shares_split_the_node_among_tenants_without_their_own() {
        let base = "[[tenants]]\nid = \"acme\"\n[[tenants]]\nid = \"globex\"\n[[tenants]]\nid = \"initech\"\n";
        let c = crate::config::Config::parse(
            &format!(
                "[dedup]\nmax_punch_keys = 10000\nmax_employees = 3000\n[budgets]\ndevice_punches_per_s = 0\n[budgets.tenants.acme]\nmax_punch_keys = 6000\npunches_per_s = 5\n{base}"
            ),
            "t.toml",
        )
        .unwrap();
        let b = c.budgets.clone();
        // globex and initech split what acme leaves; everyone splits the
        // employees evenly.
        assert_eq!(
            (b.tenant.max_punch_keys, b.tenant.max_employees),
            (2_000, 1_000)
        );
        assert_eq!(
            b.tenant.rate,
            Some(Rate {
                per_s: 1_000.0,
                burst: 10_000
            })
        );
        assert_eq!(b.device_rate, None, "0 turns it off");
        let (id, acme) = &b.tenants[0];
        assert_eq!(id, "acme");
        assert_eq!((acme.max_punch_keys, acme.max_employees), (6_000, 1_000));
        assert_eq!(acme.rate.map(|r| (r.per_s, r.burst)), Some((5.0, 10_000)));

        let err = crate::config::Config::parse(
            &format!(
                "[budgets]\ndevice_punch_burst = 0\n[budgets.tenants.acme]\nmax_punch_keys = 3000000\n[budgets.tenants.umbrella]\npunches_per_s = -1.0\n{base}"
            ),
            "t.toml",
        )
        .unwrap_err();
        let all = err.problems.join("\n");
        for needle in [
            "budgets.device_punch_burst = 0 would refuse every punch",
            "add up to 3000000, more than dedup.max_punch_keys = 2000000",
            "budgets.tenants.umbrella: no [[tenants]] block",
            "budgets.tenants.umbrella.punches_per_s = -1 is out of range",
        ] {
            assert!(all.contains(needle), "missing {needle} in:\n{all}");
        }
    }

    #[test]
    fn refill_time_covers_the_burst() {
        assert_eq!(R.refill_ms(), 2_500);
    }
}
