//! The fleet live view's memory: each tenant's last enter/exit events,
//! kept by the pipeline as it emits them (docs/DASHBOARD.md, "Fleet live
//! view"). Device positions are not copied here: they are read from the
//! pipeline's device state when someone asks
//! ([`crate::pipeline::Pipeline::live_devices`]).
//!
//! Events are transitions only (a device crossing a fence's edge), so they
//! are rare next to fixes: a short lock per event is cheap, and nothing
//! here runs per fix. The view is this node's: a device connected to
//! another node shows there.

use std::collections::VecDeque;
use std::sync::Arc;

use dashmap::DashMap;
use fencegate_schema::Transition;

/// Events kept per tenant, newest last.
pub const EVENTS_PER_TENANT: usize = 50;

/// One enter or exit, as the live view lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveEvent {
    /// The device.
    pub device: Arc<str>,
    /// The fence it entered or left.
    pub fence: Arc<str>,
    /// `enter` or `exit`.
    pub transition: &'static str,
    /// The fix's time, unix ms.
    pub time_ms: i64,
    /// The fix's latitude.
    pub lat: f64,
    /// The fix's longitude.
    pub lon: f64,
}

/// A device's newest live fix, as the live view draws it.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveDevice {
    /// The device.
    pub device: String,
    /// Latitude of its newest fix.
    pub lat: f64,
    /// Longitude of its newest fix.
    pub lon: f64,
    /// Time of its newest fix, unix ms.
    pub time_ms: i64,
    /// The fences downstream was told it is in (after dwell and exit
    /// margin), sorted.
    pub fences: Vec<String>,
}

/// Each tenant's ring of its last [`EVENTS_PER_TENANT`] enter/exit events.
#[derive(Debug, Default)]
pub struct LiveEvents {
    rings: DashMap<Arc<str>, VecDeque<LiveEvent>>,
}

impl LiveEvents {
    /// Notes an event the pipeline emitted. `Inside` (a device's starting
    /// state after first contact or a restart, not a crossing) is not kept:
    /// after a restart it would push every real crossing out of the ring.
    /// `fix` is the `(time_ms, lat, lon)` of the fix that crossed.
    pub fn note(
        &self,
        tenant: &Arc<str>,
        device: &Arc<str>,
        fence: &Arc<str>,
        transition: Transition,
        fix: (i64, f64, f64),
    ) {
        let (time_ms, lat, lon) = fix;
        let transition = match transition {
            Transition::Enter => "enter",
            Transition::Exit => "exit",
            _ => return,
        };
        let event = LiveEvent {
            device: device.clone(),
            fence: fence.clone(),
            transition,
            time_ms,
            lat,
            lon,
        };
        let mut ring = match self.rings.get_mut(&**tenant) {
            Some(r) => r,
            None => self.rings.entry(tenant.clone()).or_default(),
        };
        if ring.len() == EVENTS_PER_TENANT {
            ring.pop_front();
        }
        ring.push_back(event);
    }

    /// `tenant`'s kept events, newest first.
    pub fn of(&self, tenant: &str) -> Vec<LiveEvent> {
        self.rings
            .get(tenant)
            .map(|r| r.iter().rev().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_keeps_the_newest_crossings_of_its_tenant_only() {
        let live = LiveEvents::default();
        let (acme, globex): (Arc<str>, Arc<str>) = ("acme".into(), "globex".into());
        let (d, f): (Arc<str>, Arc<str>) = ("truck-1".into(), "depot".into());
        for i in 0..(EVENTS_PER_TENANT as i64 + 5) {
            let t = if i % 2 == 0 {
                Transition::Enter
            } else {
                Transition::Exit
            };
            live.note(&acme, &d, &f, t, (i, 31.2, 121.4));
        }
        live.note(&acme, &d, &f, Transition::Inside, (999, 31.2, 121.4));
        live.note(&globex, &d, &f, Transition::Enter, (7, 31.2, 121.4));
        let kept = live.of("acme");
        assert_eq!(kept.len(), EVENTS_PER_TENANT);
        assert_eq!(
            kept[0].time_ms,
            EVENTS_PER_TENANT as i64 + 4,
            "newest first"
        );
        assert!(kept.iter().all(|e| e.time_ms != 999), "Inside is not kept");
        assert_eq!(live.of("globex").len(), 1);
        assert!(live.of("initech").is_empty());
    }
}
