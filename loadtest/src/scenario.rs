//! Scenario files (`loadtest/scenarios/*.toml`): parsed raw with serde
//! (`deny_unknown_fields`), overridden from the command line, then checked
//! with every problem reported at once.
//!
//! The doc comments on the fields are the reference for scenario authors;
//! `docs/LOADTEST.md` walks through them.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// One load scenario.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name, reported as `scenario` in every report.
    pub name: String,
    /// One line for the report header.
    #[serde(default)]
    pub description: String,
    /// Seed of the synthetic world (fences, employees, devices, schedule):
    /// the same seed offers the same load.
    ///
    /// `42` unless set.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Wall-clock seconds of offered load. A punch curve without an
    /// explicit `punch.speed` is compressed to fit; the fleet pings this
    /// long once every device is connected.
    pub duration_s: f64,
    /// Seconds after the offered phase that in-flight requests may still
    /// finish in before the run ends (a hard bound on the run's length).
    ///
    /// `30` unless set.
    #[serde(default = "default_drain")]
    pub drain_s: f64,
    /// The synthetic world: tenant and fences.
    #[serde(default)]
    pub world: World,
    /// Employees clocking in (one connection per punch).
    pub punch: Option<PunchLoad>,
    /// Long-lived devices streaming positions.
    pub fleet: Option<FleetLoad>,
    /// Settings for the gateway the harness starts itself when no
    /// `--target` is given; ignored for a remote target.
    #[serde(default)]
    pub gateway: BuiltInGateway,
    /// Saturation mode: run the fleet in steps of rising ping rate until
    /// the gateway saturates, and report the knee.
    pub ramp: Option<Ramp>,
}

/// `[ramp]`: the fleet's ping rate stepped up until the gateway saturates
/// (drops above `max_drop_share` or fix→log p99 above `max_p99_ms`). Each
/// step connects the fleet afresh and pings for `step_s` at
/// `fleet.ping_interval_s ÷ factor^step`; the interval never goes below
/// one millisecond per fix of the batch.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ramp {
    /// Each step's ping rate is this many times the previous step's.
    ///
    /// `1.25` unless set.
    pub factor: f64,
    /// Seconds of pinging per step.
    ///
    /// `4` unless set.
    pub step_s: f64,
    /// Most steps (the run stops earlier at the knee).
    ///
    /// `14` unless set.
    pub max_steps: u32,
    /// A step that loses more than this share of the datagrams sent (every
    /// counted drop, plus the harness's own) is past the knee.
    ///
    /// `0.01` unless set.
    pub max_drop_share: f64,
    /// A step whose fix→log p99 is above this many milliseconds is past
    /// the knee (unchecked when the log cannot be tailed).
    ///
    /// `50` unless set.
    pub max_p99_ms: f64,
    /// Steps run after the ramp stops at a failing step, each at the
    /// geometric middle of the fastest passing and the slowest failing
    /// rate so far: the knee to within `factor^(1/2^refine)` instead of
    /// `factor`. `0` turns it off.
    ///
    /// `2` unless set.
    pub refine: u32,
}

impl Default for Ramp {
    fn default() -> Self {
        Self {
            factor: 1.25,
            step_s: 4.0,
            max_steps: 14,
            max_drop_share: 0.01,
            max_p99_ms: 50.0,
            refine: 2,
        }
    }
}

fn default_seed() -> u64 {
    42
}
fn default_drain() -> f64 {
    30.0
}

/// `[world]`: where the synthetic fences are.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct World {
    /// Tenant the load runs as. With `--target`, the gateway must serve it
    /// and `--tenant-key-file` must hold its key.
    ///
    /// `"loadtest"` unless set.
    pub tenant: String,
    /// Centre of the synthetic city, `[lat, lon]` in degrees.
    ///
    /// `[31.2304, 121.4737]` (Shanghai) unless set.
    pub center: [f64; 2],
    /// Fences are spread within this many kilometres of the centre.
    ///
    /// `15` unless set.
    pub spread_km: f64,
    /// Number of synthetic fences (offices, sites, depots).
    ///
    /// `200` unless set.
    pub fences: usize,
    /// Circle radii are drawn uniformly from this range, metres.
    ///
    /// `[80, 400]` unless set.
    pub radius_m: [f64; 2],
    /// Share of fences that are polygons (rotated rectangles) rather than
    /// circles.
    ///
    /// `0.2` unless set.
    pub polygon_share: f64,
}

impl Default for World {
    fn default() -> Self {
        Self {
            tenant: "loadtest".into(),
            center: [31.2304, 121.4737],
            spread_km: 15.0,
            fences: 200,
            radius_m: [80.0, 400.0],
            polygon_share: 0.2,
        }
    }
}

/// How a phone's connection is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Handshake {
    /// A full TLS 1.3 handshake per connection (no session ticket).
    Full,
    /// Session resumption with a ticket from an earlier connection.
    Resumed,
    /// Resumption, with the Hello sent as 0-RTT data.
    ZeroRtt,
}

/// `[punch]`: employees clocking in.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PunchLoad {
    /// Number of employees; each makes one punch (plus a repeat or a resend
    /// as the mix says).
    pub employees: u64,
    /// Simulated seconds the arrival curve spans (e.g. 1320 = 08:40 to
    /// 09:02).
    pub window_s: f64,
    /// Time compression: the curve runs this many times faster than real
    /// time. Unset, it is `window_s / duration_s`.
    pub speed: Option<f64>,
    /// The arrival curve as a cumulative distribution: `[simulated second,
    /// share of punches so far]` points, from `[0, 0]` to `[window_s, 1]`,
    /// linear in between. Unset, arrivals are uniform over the window.
    #[serde(default)]
    pub cdf: Vec<[f64; 2]>,
    /// Connection setup per punch.
    ///
    /// `"full"` unless set.
    #[serde(default = "default_handshake")]
    pub handshake: Handshake,
    /// Most employees in flight at once; beyond it the schedule waits (and
    /// the wait counts in latency, which is measured from each punch's
    /// intended send time).
    ///
    /// `20000` unless set.
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    /// Seconds after its intended send time that an employee gives up
    /// retrying (connection failures, `Busy`).
    ///
    /// `30` unless set.
    #[serde(default = "default_timeout")]
    pub timeout_s: f64,
    /// What the punches are.
    #[serde(default)]
    pub mix: PunchMix,
}

fn default_handshake() -> Handshake {
    Handshake::Full
}
fn default_in_flight() -> usize {
    20_000
}
fn default_timeout() -> f64 {
    30.0
}

/// `[punch.mix]`: the kinds of punch. `inside + outside + wifi + invalid`
/// must be 1; `repeat` and `lost_ack` apply on top.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PunchMix {
    /// GPS punches inside the employee's office fence (expect `Accepted`).
    pub inside: f64,
    /// GPS punches outside every fence (expect `OutOfRange`).
    pub outside: f64,
    /// Wi-Fi punches with the office's BSSIDs (expect `Accepted`).
    pub wifi: f64,
    /// Frames the gateway must refuse (a clock an hour ahead, a Wi-Fi punch
    /// without BSSIDs): `Rejected`, and no record may exist.
    pub invalid: f64,
    /// Share of employees who punch again (new punch id) 20 to 240
    /// simulated seconds later (expect `RepeatMerged`).
    pub repeat: f64,
    /// Share of punches whose ack is lost: the phone sends, drops the
    /// connection without reading the reply, reconnects 1 to 3 simulated
    /// seconds later and resends the same punch.
    pub lost_ack: f64,
}

impl Default for PunchMix {
    fn default() -> Self {
        Self {
            inside: 0.80,
            outside: 0.08,
            wifi: 0.10,
            invalid: 0.02,
            repeat: 0.05,
            lost_ack: 0.02,
        }
    }
}

/// `[fleet]`: long-lived devices streaming positions.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FleetLoad {
    /// Number of devices, each with one long-lived connection.
    pub devices: u64,
    /// Seconds between a device's datagrams.
    pub ping_interval_s: f64,
    /// Positions per datagram (1 to 64), spread evenly over the interval.
    pub batch: u32,
    /// Share of devices driving back and forth on a route through a fence
    /// (these make enter/exit events); the rest random-walk.
    ///
    /// `0.3` unless set.
    #[serde(default = "default_route_share")]
    pub route_share: f64,
    /// Device speeds are drawn from this range, metres per second.
    ///
    /// `[2, 25]` unless set.
    #[serde(default = "default_speed_mps")]
    pub speed_mps: [f64; 2],
    /// New connections per second while the fleet connects, before pinging
    /// starts.
    ///
    /// `2000` unless set.
    #[serde(default = "default_connect_rate")]
    pub connect_rate: f64,
}

fn default_route_share() -> f64 {
    0.3
}
fn default_speed_mps() -> [f64; 2] {
    [2.0, 25.0]
}
fn default_connect_rate() -> f64 {
    2_000.0
}

/// `[gateway]`: the built-in gateway's settings (only when the harness
/// starts its own). Anything unset keeps the gateway's own default.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BuiltInGateway {
    /// `quic.endpoints`. Unset: one per core.
    pub endpoints: Option<usize>,
    /// `dedup.ping_cell_resolution`.
    pub ping_cell_resolution: Option<u8>,
    /// `log.commit_delay_us`.
    pub commit_delay_us: Option<u64>,
    /// `quic.retry_above_handshakes_per_s`.
    pub retry_above_handshakes_per_s: Option<u32>,
    /// `quic.max_connections`.
    pub max_connections: Option<usize>,
    /// `quic.max_handshakes_in_flight` (the hard bound on connections in
    /// set-up; admission control's limit stays below it).
    pub max_handshakes_in_flight: Option<usize>,
    /// `quic.admission_target_ms` (0 turns admission control off).
    pub admission_target_ms: Option<u64>,
    /// `quic.shed_connections`: `"silent"` or `"refuse"` (how the node
    /// turns away a connection it sheds; compare the two at 3× capacity).
    pub shed_connections: Option<fencegate::config::ShedConnections>,
    /// `quic.ping_datagrams_per_s` (a fleet pinging faster than the
    /// default one datagram a second per device needs it raised).
    pub ping_datagrams_per_s: Option<u32>,
    /// `quic.ping_burst`.
    pub ping_burst: Option<u32>,
    /// `quic.datagram_buffer`, bytes.
    pub datagram_buffer: Option<usize>,
    /// Serve punches on a second, punch-only address (`quic.punch_listen`
    /// on a free loopback port); the harness sends its punches there.
    pub punch_listen: bool,
}

/// Command-line overrides, applied before the scenario is checked.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--duration`.
    pub duration_s: Option<f64>,
    /// `--employees`.
    pub employees: Option<u64>,
    /// `--devices`.
    pub devices: Option<u64>,
    /// `--speed`.
    pub speed: Option<f64>,
    /// `--handshake`.
    pub handshake: Option<Handshake>,
    /// `--seed`.
    pub seed: Option<u64>,
}

/// A scenario file that could not be used, with every problem in it.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("scenario {path}: cannot read it: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML did not parse into a scenario.
    #[error("scenario {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message (names the field).
        message: String,
    },
    /// The scenario parsed but its values do not make a run.
    #[error("scenario {path}: {} problem(s):\n  - {}", problems.len(), problems.join("\n  - "))]
    Invalid {
        /// The file.
        path: String,
        /// One line per problem, naming the field and the fix.
        problems: Vec<String>,
    },
}

impl Scenario {
    /// Reads a scenario file, applies `ov`, and checks it.
    pub fn load(path: &Path, ov: &Overrides) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string(), ov)
    }

    /// Parses scenario text (`source` names it in errors), applies `ov`,
    /// and checks it.
    pub fn parse(text: &str, source: &str, ov: &Overrides) -> Result<Self, ScenarioError> {
        let mut s: Scenario = toml::from_str(text).map_err(|e| ScenarioError::Parse {
            path: source.into(),
            message: e.to_string().trim_end().replace('\n', "\n    "),
        })?;
        s.apply(ov);
        let problems = s.problems();
        if problems.is_empty() {
            Ok(s)
        } else {
            Err(ScenarioError::Invalid {
                path: source.into(),
                problems,
            })
        }
    }

    fn apply(&mut self, ov: &Overrides) {
        if let Some(seed) = ov.seed {
            self.seed = seed;
        }
        if let Some(d) = ov.duration_s {
            self.duration_s = d;
            // "--duration 3" means "run it in 3 s": the curve compresses to
            // fit unless --speed says otherwise.
            if let Some(p) = &mut self.punch {
                p.speed = None;
            }
        }
        if let Some(p) = &mut self.punch {
            if let Some(n) = ov.employees {
                p.employees = n;
            }
            if let Some(s) = ov.speed {
                p.speed = Some(s);
            }
            if let Some(h) = ov.handshake {
                p.handshake = h;
            }
        }
        if let (Some(f), Some(n)) = (&mut self.fleet, ov.devices) {
            f.devices = n;
        }
    }

    /// Every problem with the values, one line each.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let pos = |x: f64| x.is_finite() && x > 0.0;
        if self.name.is_empty() {
            p.push("name must not be empty".into());
        }
        if !pos(self.duration_s) {
            p.push(format!(
                "duration_s = {} must be a positive number of seconds",
                self.duration_s
            ));
        }
        if !(self.drain_s.is_finite() && self.drain_s >= 0.0) {
            p.push(format!("drain_s = {} must be 0 or more", self.drain_s));
        }
        let w = &self.world;
        if !fencegate::config::valid_tenant_id(&w.tenant) {
            p.push(format!(
                "world.tenant = {:?}: use 1 to 64 characters of a-z, 0-9, '-' or '_'",
                w.tenant
            ));
        }
        if !((-80.0..=80.0).contains(&w.center[0]) && (-179.0..=179.0).contains(&w.center[1])) {
            p.push(format!(
                "world.center = {:?}: write [lat, lon] with |lat| ≤ 80 and |lon| ≤ 179",
                w.center
            ));
        }
        if !(pos(w.spread_km) && w.spread_km <= 200.0) {
            p.push(format!(
                "world.spread_km = {} must be in (0, 200]",
                w.spread_km
            ));
        }
        if w.fences == 0 || w.fences > 1_000_000 {
            p.push(format!("world.fences = {} must be 1 to 1000000", w.fences));
        }
        if !(w.radius_m[0] >= 50.0 && w.radius_m[1] >= w.radius_m[0] && w.radius_m[1] <= 5_000.0) {
            p.push(format!(
                "world.radius_m = {:?} must satisfy 50 ≤ min ≤ max ≤ 5000 (the gateway's limits)",
                w.radius_m
            ));
        }
        if !(0.0..=1.0).contains(&w.polygon_share) {
            p.push("world.polygon_share must be in [0, 1]".into());
        }
        if self.punch.is_none() && self.fleet.is_none() {
            p.push("the scenario has neither [punch] nor [fleet]; add at least one".into());
        }
        if let Some(pl) = &self.punch {
            if pl.employees == 0 {
                p.push("punch.employees must be at least 1".into());
            }
            if !pos(pl.window_s) {
                p.push("punch.window_s must be a positive number of seconds".into());
            }
            if let Some(s) = pl.speed {
                if !pos(s) {
                    p.push(format!("punch.speed = {s} must be positive"));
                }
            }
            check_cdf(&pl.cdf, pl.window_s, &mut p);
            if pl.max_in_flight == 0 {
                p.push("punch.max_in_flight must be at least 1".into());
            }
            if !pos(pl.timeout_s) {
                p.push("punch.timeout_s must be positive".into());
            }
            let m = &pl.mix;
            let fr = [
                ("inside", m.inside),
                ("outside", m.outside),
                ("wifi", m.wifi),
                ("invalid", m.invalid),
                ("repeat", m.repeat),
                ("lost_ack", m.lost_ack),
            ];
            for (n, v) in fr {
                if !(0.0..=1.0).contains(&v) {
                    p.push(format!("punch.mix.{n} = {v} must be in [0, 1]"));
                }
            }
            let sum = m.inside + m.outside + m.wifi + m.invalid;
            if (sum - 1.0).abs() > 1e-6 {
                p.push(format!(
                    "punch.mix: inside + outside + wifi + invalid = {sum}; make them sum to 1"
                ));
            }
        }
        if let Some(f) = &self.fleet {
            if f.devices == 0 {
                p.push("fleet.devices must be at least 1".into());
            }
            if !(f.ping_interval_s.is_finite() && f.ping_interval_s >= 0.01) {
                p.push(format!(
                    "fleet.ping_interval_s = {} must be at least 0.01",
                    f.ping_interval_s
                ));
            }
            if !(1..=64).contains(&f.batch) {
                p.push(format!(
                    "fleet.batch = {} must be 1 to 64 (a datagram holds at most 64 positions)",
                    f.batch
                ));
            }
            let ms = (f.ping_interval_s * 1_000.0).round();
            if f.batch > 1 && ms < f64::from(f.batch) {
                p.push(format!(
                    "fleet: {} positions in {} ms leaves less than 1 ms between fixes; lengthen ping_interval_s or shrink batch",
                    f.batch, ms
                ));
            }
            if !(0.0..=1.0).contains(&f.route_share) {
                p.push("fleet.route_share must be in [0, 1]".into());
            }
            if !(f.speed_mps[0] >= 0.0
                && f.speed_mps[1] >= f.speed_mps[0]
                && f.speed_mps[1] < 400.0)
            {
                p.push(format!(
                    "fleet.speed_mps = {:?} must satisfy 0 ≤ min ≤ max < 400",
                    f.speed_mps
                ));
            }
            if !pos(f.connect_rate) {
                p.push("fleet.connect_rate must be positive".into());
            }
        }
        if let Some(r) = &self.ramp {
            if !(r.factor > 1.0 && r.factor <= 4.0) {
                p.push(format!(
                    "ramp.factor = {} must be above 1 and at most 4",
                    r.factor
                ));
            }
            if !pos(r.step_s) {
                p.push("ramp.step_s must be a positive number of seconds".into());
            }
            if !(1..=64).contains(&r.max_steps) {
                p.push(format!("ramp.max_steps = {} must be 1 to 64", r.max_steps));
            }
            if !(r.max_drop_share > 0.0 && r.max_drop_share < 1.0) {
                p.push("ramp.max_drop_share must be between 0 and 1".into());
            }
            if !pos(r.max_p99_ms) {
                p.push("ramp.max_p99_ms must be positive".into());
            }
            if r.refine > 8 {
                p.push(format!("ramp.refine = {} must be 0 to 8", r.refine));
            }
            if self.fleet.is_none() || self.punch.is_some() {
                p.push(
                    "[ramp] steps a fleet's ping rate: give the scenario a [fleet] and no [punch]"
                        .into(),
                );
            }
        }
        let g = &self.gateway;
        if let Some(e) = g.endpoints {
            if !(1..=64).contains(&e) {
                p.push(format!("gateway.endpoints = {e} must be 1 to 64"));
            }
        }
        if let Some(r) = g.ping_cell_resolution {
            if r > 15 {
                p.push(format!(
                    "gateway.ping_cell_resolution = {r} is not an H3 resolution (0 to 15)"
                ));
            }
        }
        p
    }

    /// The punch curve's speed-up: explicit, or whatever fits the curve
    /// into `duration_s`.
    pub fn punch_speed(&self) -> Option<f64> {
        let p = self.punch.as_ref()?;
        Some(p.speed.unwrap_or(p.window_s / self.duration_s))
    }
}

fn check_cdf(cdf: &[[f64; 2]], window: f64, p: &mut Vec<String>) {
    if cdf.is_empty() {
        return;
    }
    if cdf.len() < 2 {
        p.push("punch.cdf needs at least two points, [0, 0] and [window_s, 1]".into());
        return;
    }
    let first = cdf[0];
    let last = cdf[cdf.len() - 1];
    if first != [0.0, 0.0] {
        p.push(format!("punch.cdf must start at [0, 0], not {first:?}"));
    }
    if (last[0] - window).abs() > 1e-9 || (last[1] - 1.0).abs() > 1e-9 {
        p.push(format!(
            "punch.cdf must end at [window_s, 1] = [{window}, 1], not {last:?}"
        ));
    }
    for w in cdf.windows(2) {
        if !(w[1][0] > w[0][0] && w[1][1] >= w[0][1]) {
            p.push(format!(
                "punch.cdf: {:?} then {:?}: times must increase and shares must not decrease",
                w[0], w[1]
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"
        name = "t"
        duration_s = 10
        [punch]
        employees = 100
        window_s = 600
    "#;

    #[test]
    fn minimal_scenario_gets_defaults_and_speed_fits_duration() {
        let s = Scenario::parse(MIN, "t.toml", &Overrides::default()).unwrap();
        assert_eq!(s.seed, 42);
        assert_eq!(s.world.tenant, "loadtest");
        assert_eq!(s.punch_speed(), Some(60.0));
        let ov = Overrides {
            duration_s: Some(2.0),
            employees: Some(5),
            ..Overrides::default()
        };
        let s = Scenario::parse(MIN, "t.toml", &ov).unwrap();
        assert_eq!(s.punch_speed(), Some(300.0));
        assert_eq!(s.punch.unwrap().employees, 5);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = r#"
            name = "bad"
            duration_s = -1
            [world]
            tenant = "Bad Tenant"
            radius_m = [10, 20]
            [punch]
            employees = 0
            window_s = 600
            cdf = [[0, 0], [300, 0.7], [200, 0.9], [600, 1]]
            [punch.mix]
            inside = 0.5
            [fleet]
            devices = 10
            ping_interval_s = 1
            batch = 65
        "#;
        let err = Scenario::parse(text, "bad.toml", &Overrides::default()).unwrap_err();
        let msg = err.to_string();
        for needle in [
            "duration_s",
            "world.tenant",
            "world.radius_m",
            "punch.employees",
            "punch.cdf",
            "sum to 1",
            "fleet.batch",
        ] {
            assert!(msg.contains(needle), "missing {needle} in:\n{msg}");
        }
    }

    #[test]
    fn unknown_fields_are_named() {
        let err = Scenario::parse(
            "name = \"x\"\nduration_s = 1\nemployes = 3\n",
            "x.toml",
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("employes"), "{err}");
    }

    #[test]
    fn bundled_scenarios_are_valid() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios");
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            if path.extension().is_some_and(|x| x == "toml") {
                Scenario::load(&path, &Overrides::default()).unwrap();
                n += 1;
            }
        }
        assert!(n >= 4, "expected the four bundled scenarios, found {n}");
    }
}
