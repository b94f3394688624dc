//! `fencegate demo`: a month of realistic synthetic attendance for the
//! sample tenants, so a newcomer sees every chart of `/ui/` populated.
//!
//! **Offline, through the real pipeline, into the real log.** Devices may
//! upload offline punches at most `offline_window_h` (72 h) late, so a month
//! of history cannot be sent over QUIC to a running node: it would be
//! refused as too old. Instead the demo runs the node's own [`Pipeline`]
//! (fence lookup, rules, anti-cheat, repeats) with a simulated clock that
//! walks through the month, and appends each record it decides to the data
//! directory's durable log exactly as the edge would. The node must be
//! stopped (the log is locked while it runs). The demo then materializes
//! the new records into the results store and closes the past days (as
//! `fencegate results rebuild` would, but from the store's own position),
//! so the node's next start shows them at once.
//!
//! **A roster.** Day results mark someone absent only if the rules list
//! them, so the demo adds a roster to the rules file (`D-acme-001`...,
//! `D-globex-001`..., in new departments `rnd` and `sales` besides the
//! sample's), once: a file that already lists `D-acme-001` is left alone.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use fencegate_schema::{
    Channel, Limits, Position, PunchKind, PunchMethod, PunchMsg, Request, TerminalAuth, parse_frame,
};
use flatbuffers::FlatBufferBuilder;
use jiff::civil::Date;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::config::Config;
use crate::fences::{self, Fences};
use crate::log::{LogHandle, Lsn, RecordBatch};
use crate::pipeline::{Pipeline, PipelineConfig, PunchDecision, Scratch, Session};
use crate::results::{Materializer, ResultsStore};

/// `fencegate demo` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Configuration file (embedded defaults when absent, as `serve`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Days of attendance, ending yesterday in each tenant's zone.
    #[arg(long, default_value_t = 31)]
    pub days: u32,
    /// Employees added to each sample tenant's roster.
    #[arg(long, default_value_t = 40)]
    pub employees: u32,
    /// Seed of the synthetic world (the same seed gives the same punches).
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

/// What a run produced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Punches sent through the pipeline.
    pub punches: u64,
    /// Records appended to the log.
    pub records: u64,
    /// Punches the pipeline answered without a record (rate, full).
    pub refused: u64,
    /// Employee days written to the results store.
    pub days: u64,
}

const MIN: i64 = 60_000;

/// One synthetic employee.
#[derive(Debug, Clone)]
struct Person {
    tenant: &'static str,
    id: String,
    kind: Kind,
    /// Chance of a late clock-in on a workday.
    late: f64,
    /// Chance of leaving early.
    early: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// acme office, 09:00-18:00, Shanghai HQ.
    AcmeOffice,
    /// acme guards, night shift at the Baoshan warehouse.
    AcmeGuard,
    /// acme sales, free schedule, mostly out in the city.
    AcmeSales,
    /// globex office, 08:00-16:30, Berlin.
    GlobexOffice,
}

fn roster(n: u32, rng: &mut StdRng) -> Vec<Person> {
    let mut out = Vec::new();
    for i in 1..=n {
        let kind = match i % 10 {
            0 => Kind::AcmeGuard,
            1 | 2 => Kind::AcmeSales,
            _ => Kind::AcmeOffice,
        };
        // A few habitual latecomers make the top-10 lists tell a story.
        let habitual = i % 7 == 3;
        out.push(Person {
            tenant: "acme",
            id: format!("D-acme-{i:03}"),
            kind,
            late: if habitual {
                0.35
            } else {
                rng.random_range(0.0..0.06)
            },
            early: if i % 11 == 5 {
                0.25
            } else {
                rng.random_range(0.0..0.04)
            },
        });
    }
    for i in 1..=n {
        out.push(Person {
            tenant: "globex",
            id: format!("D-globex-{i:03}"),
            kind: Kind::GlobexOffice,
            late: if i % 9 == 4 {
                0.3
            } else {
                rng.random_range(0.0..0.05)
            },
            early: if i % 8 == 2 {
                0.2
            } else {
                rng.random_range(0.0..0.05)
            },
        });
    }
    out
}

fn department(p: &Person, i: usize) -> &'static str {
    match (p.tenant, p.kind) {
        ("acme", Kind::AcmeGuard) => "security",
        ("acme", Kind::AcmeSales) => "sales",
        ("acme", _) => {
            if i % 2 == 0 {
                "ops"
            } else {
                "rnd"
            }
        }
        _ => {
            if i % 3 == 0 {
                "sales"
            } else {
                "ops"
            }
        }
    }
}

/// Adds the demo roster to the rules file unless it is there.
fn add_roster(path: &std::path::Path, people: &[Person]) -> anyhow::Result<bool> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("rules file {}: cannot read it", path.display()))?;
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .with_context(|| format!("rules file {}: not TOML", path.display()))?;
    if doc
        .get("tenants")
        .and_then(|t| t.get("acme"))
        .and_then(|t| t.get("employees"))
        .and_then(|e| e.get("D-acme-001"))
        .is_some()
    {
        return Ok(false);
    }
    let set = |doc: &mut toml_edit::DocumentMut, keys: &[&str], field: &str, value: &str| {
        let mut item = doc.as_item_mut();
        for k in keys {
            let tbl = item.as_table_like_mut().expect("rules sections are tables");
            if tbl.get(k).is_none() {
                let mut t = toml_edit::Table::new();
                t.set_implicit(true);
                tbl.insert(k, toml_edit::Item::Table(t));
            }
            item = tbl.get_mut(k).expect("just inserted");
        }
        item[field] = toml_edit::value(value);
    };
    for (tenant, dept, sup) in [
        ("acme", "rnd", "D-acme-003"),
        ("acme", "sales", "D-acme-001"),
        ("globex", "ops", "D-globex-001"),
        ("globex", "sales", "D-globex-003"),
    ] {
        if doc["tenants"][tenant]
            .get("departments")
            .and_then(|d| d.get(dept))
            .is_none()
        {
            set(
                &mut doc,
                &["tenants", tenant, "departments", dept],
                "supervisor",
                sup,
            );
        }
    }
    for (i, p) in people.iter().enumerate() {
        let keys = ["tenants", p.tenant, "employees", p.id.as_str()];
        set(&mut doc, &keys, "department", department(p, i));
        let group = match p.kind {
            Kind::AcmeGuard => "guards",
            Kind::AcmeSales => "sales",
            _ => "office",
        };
        set(&mut doc, &keys, "group", group);
    }
    crate::persist::atomic_replace(
        path,
        doc.to_string().as_bytes(),
        crate::persist::mode_of(path).unwrap_or(crate::persist::SHARED),
    )
    .with_context(|| {
        format!(
            "rules file {}: cannot write the demo roster",
            path.display()
        )
    })?;
    Ok(true)
}

/// One punch to make at `at_ms`.
#[derive(Debug, Clone)]
struct Planned {
    at_ms: i64,
    tenant: &'static str,
    device: String,
    msg: PunchMsg,
}

fn jitter(rng: &mut StdRng, (lat, lon): (f64, f64), metres: f64) -> (f64, f64) {
    let d = metres * rng.random_range(0.0f64..1.0).sqrt();
    let a = rng.random_range(0.0..std::f64::consts::TAU);
    (
        lat + d * a.sin() / 111_195.0,
        lon + d * a.cos() / (111_195.0 * lat.to_radians().cos()),
    )
}

const HQ: (f64, f64) = (31.2304, 121.4737);
const LUJIAZUI: (f64, f64) = (31.2383, 121.4985);
const BAOSHAN: (f64, f64) = (31.3495, 121.4440);
const BERLIN: (f64, f64) = (52.5096, 13.3760);
const BERLIN_HBF: (f64, f64) = (52.5251, 13.3695);

fn local_ms(date: Date, minute_of_day: i64, tz: &jiff::tz::TimeZone) -> i64 {
    let midnight = date
        .to_zoned(tz.clone())
        .map(|z| z.timestamp().as_millisecond())
        .unwrap_or(0);
    midnight + minute_of_day * MIN
}

/// Plans one employee's punches of one local date.
#[expect(
    clippy::too_many_arguments,
    reason = "a private planner; a struct would only rename the arguments"
)]
fn plan_day(
    p: &Person,
    date: Date,
    tz: &jiff::tz::TimeZone,
    qr: Option<&crate::rules::qr::QrKey>,
    qr_step_ms: i64,
    rng: &mut StdRng,
    seq: &mut u64,
    out: &mut Vec<Planned>,
) {
    let weekday = date.weekday().to_monday_zero_offset();
    let rotation_night = {
        let start = Date::constant(2025, 1, 6);
        (date - start).get_days().rem_euclid(4) < 2
    };
    let (works, start_min, end_min) = match p.kind {
        Kind::AcmeOffice => (weekday < 5, 9 * 60, 18 * 60),
        Kind::AcmeSales => (weekday < 5, 9 * 60 + 30, 17 * 60 + 30),
        Kind::AcmeGuard => (rotation_night, 22 * 60, 30 * 60),
        Kind::GlobexOffice => (weekday < 5, 8 * 60, 16 * 60 + 30),
    };
    // Now and then someone comes in on a weekend: overtime.
    let weekend_shift = !works && p.kind != Kind::AcmeGuard && rng.random_bool(0.03);
    if !works && !weekend_shift {
        return;
    }
    if works && rng.random_bool(0.03) {
        return; // absent
    }
    let late = rng.random_bool(p.late);
    let in_min = if late {
        start_min + rng.random_range(11..75)
    } else {
        start_min - rng.random_range(3..35)
    };
    let early = rng.random_bool(p.early);
    let out_min = if weekend_shift {
        in_min + rng.random_range(180..360)
    } else if early {
        end_min - rng.random_range(10..70)
    } else if rng.random_bool(0.35) {
        end_min + rng.random_range(30..150) // stays late
    } else {
        end_min + rng.random_range(0..20)
    };
    let forgot_out = rng.random_bool(0.03);
    for (kind, minute) in [(PunchKind::In, in_min), (PunchKind::Out, out_min)] {
        if kind == PunchKind::Out && forgot_out {
            continue;
        }
        let at_ms = local_ms(date, minute, tz) + rng.random_range(0..60_000);
        *seq += 1;
        let mut punch_id = [0u8; 16];
        punch_id[..8].copy_from_slice(&seq.to_be_bytes());
        punch_id[8..].copy_from_slice(&0xdead_beef_0000_0001u64.to_be_bytes());
        let mut msg = PunchMsg {
            punch_id,
            employee_id: p.id.clone(),
            kind,
            method: PunchMethod::Gps,
            device_time_ms: at_ms,
            position: None,
            bssids: vec![],
            ssid: None,
            qr_payload: None,
            terminal_auth: TerminalAuth::None,
            offline: false,
            mock_location: false,
        };
        let mut device = format!("phone-{}", p.id.to_ascii_lowercase());
        let roll: f64 = rng.random_range(0.0..1.0);
        let gps = |rng: &mut StdRng, at: (f64, f64), r: f64, acc: f32| {
            let (lat, lon) = jitter(rng, at, r);
            Some(Position::new(lat, lon, acc))
        };
        match p.kind {
            Kind::AcmeOffice if roll < 0.45 => {
                let site = if rng.random_bool(0.25) { LUJIAZUI } else { HQ };
                msg.position = gps(rng, site, 120.0, 15.0);
            }
            Kind::AcmeOffice if roll < 0.50 => {
                // Punched from the metro station or a café: out of range.
                msg.position = gps(rng, (HQ.0 + 0.012, HQ.1 + 0.01), 600.0, 20.0);
            }
            Kind::AcmeOffice if roll < 0.68 => {
                msg.method = PunchMethod::Wifi;
                // One in fifty scans an access point the rules do not know.
                let last = if rng.random_bool(0.02) { 0x99 } else { 0x03 };
                msg.bssids = vec![[0xac, 0x84, 0xc6, 0x01, 0x02, last]];
                msg.ssid = Some("acme-office".into());
            }
            Kind::AcmeOffice if roll < 0.80 && qr.is_some() => {
                msg.method = PunchMethod::Qr;
                let key = qr.expect("checked");
                let step = crate::rules::qr::step_of(at_ms, qr_step_ms);
                msg.qr_payload = Some(key.code("acme", "shanghai", step));
            }
            Kind::AcmeOffice => {
                msg.method = PunchMethod::Terminal;
                msg.terminal_auth = TerminalAuth::Face;
                device = if rng.random_bool(0.7) {
                    "term-sh-lobby".into()
                } else {
                    "term-sh-lab".into()
                };
            }
            Kind::AcmeGuard => msg.position = gps(rng, BAOSHAN, 80.0, 10.0),
            Kind::AcmeSales => {
                msg.position = if roll < 0.4 {
                    gps(rng, HQ, 100.0, 15.0)
                } else {
                    // Customers across the city.
                    let c = (
                        31.2 + rng.random_range(0.0..0.08),
                        121.42 + rng.random_range(0.0..0.1),
                    );
                    gps(rng, c, 300.0, 25.0)
                };
            }
            Kind::GlobexOffice => {
                let (site, r) = if roll < 0.8 {
                    (BERLIN, 60.0)
                } else if roll < 0.9 {
                    (BERLIN_HBF, 40.0)
                } else {
                    ((BERLIN.0 + 0.02, BERLIN.1 - 0.03), 800.0)
                };
                msg.position = gps(rng, site, r, 10.0);
            }
        }
        // A rare mock location provider: an anti-cheat flag.
        msg.mock_location = msg.position.is_some() && rng.random_bool(0.01);
        out.push(Planned {
            at_ms,
            tenant: p.tenant,
            device,
            msg,
        });
    }
}

/// Seeds `days` days ending the day before `today_ms` (in each tenant's
/// zone) for the configuration's data directory. The node must be stopped.
pub fn seed(cfg: &Config, args: &DemoArgs, today_ms: i64) -> anyhow::Result<Summary> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("node.data_dir {}: cannot create it", cfg.data_dir.display()))?;
    if cfg.allow_sample_fences && !cfg.fences.path.exists() {
        if let Some(dir) = cfg.fences.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&cfg.fences.path, fences::SAMPLE_FENCES)
            .with_context(|| format!("cannot seed {}", cfg.fences.path.display()))?;
    }
    let fence_text = std::fs::read_to_string(&cfg.fences.path)
        .with_context(|| format!("fences.path {}: cannot read it", cfg.fences.path.display()))?;
    let load_opts = cfg.fences.load.clone();
    let index = fences::build_index(&fence_text, &load_opts)
        .map_err(|e| anyhow::anyhow!("fences.path {}: {e}", cfg.fences.path.display()))?;
    let fences = Arc::new(Fences::new(index, load_opts));

    let mut rng = StdRng::seed_from_u64(args.seed);
    let people = roster(args.employees, &mut rng);
    // Seeds the sample rules file on embedded defaults, then adds the roster.
    let (_, source) = crate::rules::load::load(cfg)?;
    let Some(path) = &source.path else {
        anyhow::bail!(
            "fencegate demo adds its employees to the rules file, and this configuration has none: set [attendance] rules"
        );
    };
    if add_roster(path, &people)? {
        eprintln!(
            "demo: added {} employees to {}",
            people.len(),
            path.display()
        );
    }
    let (rules, _) = crate::rules::load::load(cfg)?;

    let (log, _) = LogHandle::open(cfg.log.clone()).map_err(|e| {
        anyhow::anyhow!(
            "log {}: {e}; fencegate demo writes the log offline: stop `fencegate serve` first, then start it again to see the results",
            cfg.log.dir.display()
        )
    })?;

    let snapshot = rules.load();
    let qr_step_ms = snapshot.settings.qr_step_ms;
    let acme = snapshot.tenant("acme");
    let qr = acme
        .sites
        .iter()
        .find(|s| &*s.name == "shanghai")
        .and_then(|s| s.qr.as_ref())
        .map(|k| k.0.clone());
    let mut planned = Vec::new();
    let mut seq = args.seed << 32;
    for p in &people {
        let tz = snapshot.tenant(p.tenant).tz.clone();
        let today = jiff::Timestamp::from_millisecond(today_ms)?
            .to_zoned(tz.clone())
            .date();
        for back in (1..=i64::from(args.days)).rev() {
            let date = today.checked_sub(jiff::Span::new().days(back))?;
            plan_day(
                p,
                date,
                &tz,
                qr.as_ref(),
                qr_step_ms,
                &mut rng,
                &mut seq,
                &mut planned,
            );
        }
    }
    drop(snapshot);
    // Only what has happened by now: a guard's shift of yesterday may end
    // this morning, later than now.
    planned.retain(|p| p.at_ms < today_ms);
    planned.sort_by_key(|p| p.at_ms);
    let start = planned.first().map_or(today_ms, |p| p.at_ms);
    let rules_handle = rules.clone();
    let pipeline = Pipeline::with_rules(PipelineConfig::from_config(cfg), fences, rules, start);
    let limits = Limits::default();
    let mut scratch = Scratch::default();
    let mut fbb = FlatBufferBuilder::new();
    let mut batch = RecordBatch::new();
    let mut summary = Summary::default();
    for p in &planned {
        let now = p.at_ms + 800; // the gateway sees it a moment later
        pipeline.tick_at(now, now);
        fbb.reset();
        let bytes = p.msg.encode_into(&mut fbb).to_vec();
        let Ok(Request::Punch(view)) = parse_frame(&bytes, Channel::Stream, now, &limits) else {
            anyhow::bail!(
                "demo punch of {} did not parse: a bug in the demo",
                p.msg.employee_id
            );
        };
        let session = Session::new(p.tenant, &p.device);
        summary.punches += 1;
        match pipeline.punch(now, &session, &view, &mut scratch) {
            PunchDecision::Record {
                record,
                ack,
                pending,
            } => {
                batch.push(record, now as u64);
                pipeline.settle(&pending, crate::pipeline::Settled::Committed(ack.verdict));
                summary.records += 1;
            }
            PunchDecision::Known(_) | PunchDecision::InFlight => {}
            PunchDecision::Full | PunchDecision::RateLimited { .. } => summary.refused += 1,
        }
        // One group commit per few thousand records, not per punch.
        if batch.len() >= 2_048 {
            log.append_batch_blocking(std::mem::take(&mut batch))?
                .wait()?;
        }
    }
    if !batch.is_empty() {
        log.append_batch_blocking(batch)?.wait()?;
    }
    // Materialize now, from the store's own position, and close the
    // month's days, so the first `/ui/` after `serve` shows absentees too
    // (the node's materializer closes days only once a minute).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    summary.days = rt.block_on(async {
        let store = ResultsStore::open(&cfg.attendance.results_url).await?;
        let pos = store.position().await?;
        let mut reader = log.reader(Lsn(pos.max(log.oldest().0)))?;
        let m = Materializer::new(store, rules_handle);
        let applied = m.drain(&mut reader, today_ms).await?;
        let closed = m.close_due(today_ms).await?;
        anyhow::Ok(applied.days as u64 + closed as u64)
    })?;
    Ok(summary)
}

/// Runs `fencegate demo`.
pub fn demo(args: &DemoArgs) -> anyhow::Result<()> {
    let cfg = match &args.config {
        Some(p) => Config::load(p)?,
        None => Config::embedded_defaults(),
    };
    let s = seed(&cfg, args, crate::clock::unix_ms())?;
    eprintln!(
        "demo: {} punches through the pipeline, {} records appended to {} ({} refused), {} employee days in {}; start `fencegate serve` and open http://{}/ui/",
        s.punches,
        s.records,
        cfg.log.dir.display(),
        s.refused,
        s.days,
        cfg.attendance.results_url,
        cfg.admin_listen
    );
    Ok(())
}
