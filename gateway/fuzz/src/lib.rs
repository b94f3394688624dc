//! The bodies of the gateway's fuzz targets, one function per decoder of
//! untrusted bytes. Each takes the fuzzer's input, runs the decoder the
//! gateway runs, and panics when an invariant breaks, so a crash is either a
//! panic in the decoder or a broken promise.
//!
//! The same file is compiled into `gateway/tests/fuzz_corpus.rs` (through
//! `#[path]`), so CI runs exactly these bodies over the committed seeds and
//! random inputs without cargo-fuzz. It therefore uses only the gateway's
//! own dependencies and no crate-level attributes.

use std::sync::OnceLock;

use fencegate::auth::{AuthError, Keyring, TenantKey, parse_ttl};
use fencegate::backlog::{self, split_backlog};
use fencegate::log::query::{parse_status, parse_time};
use fencegate::rules::config::{CompileContext, compile_text, fixed_qr_keys};
use fencegate::rules::holidays::Calendars;
use fencegate::rules::qr::{self, QrKey};
use fencegate::rules::store::{merge_tenant_section, tenant_section, tenants_changed};
use fencegate::rules::{AttendanceSettings, load::SAMPLE_HOLIDAYS, load::SAMPLE_RULES};
use fencegate_schema::{Channel, Fix, Limits, PingBatchMsg, Reason, Request, parse_frame};
use fencegate_spatial::{FenceSet, IndexOptions, LoadError, LoadOptions, Shape};

/// The gateway clock every target runs at: mid 2025, unix ms.
pub const NOW_MS: i64 = 1_750_000_000_000;
/// [`NOW_MS`] in seconds, for tokens.
pub const NOW_S: i64 = NOW_MS / 1_000;

/// Splits off the first byte, which every target uses to pick a mode.
fn mode(data: &[u8]) -> Option<(u8, &[u8])> {
    data.split_first().map(|(m, r)| (*m, r))
}

/// Applies the rest of the input to `buf` as (position, xor) pairs; an odd
/// trailing byte cuts the buffer. This reaches deep into a format from one
/// valid encoding without needing a seed corpus for it.
fn mutate(buf: &mut Vec<u8>, edits: &[u8]) {
    for pair in edits.chunks_exact(2) {
        if buf.is_empty() {
            break;
        }
        let len = buf.len();
        buf[usize::from(pair[0]) % len] ^= pair[1];
    }
    if edits.len() % 2 == 1 {
        let cut = usize::from(edits[edits.len() - 1]) % (buf.len() + 1);
        buf.truncate(cut);
    }
}

// ---------------------------------------------------------------- backlog

/// A valid backlog stream of three ping batches, the base the structured
/// mode mutates.
fn backlog_base() -> Vec<u8> {
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    let mut out = Vec::new();
    for (seq, n) in [(1u64, 1i32), (2, 4), (3, 0)] {
        let batch = PingBatchMsg {
            device_seq: seq,
            base_time_ms: NOW_MS - 60_000,
            fixes: (0..n)
                .map(|i| Fix::new(312_304_000 + i, 1_214_737_000 - i, 1_000 * i as u32, 8, 1))
                .collect(),
        };
        backlog::push_frame(&mut out, batch.encode_into(&mut fbb));
    }
    out
}

/// The backlog stream: the length-prefixed framing, then `parse_frame` on
/// the backlog channel for each frame, as the edge does. Returns whether a
/// frame parsed as a ping batch.
///
/// Byte 0, bit 0 picks the frame cap: clear is the production limit, set is
/// a cap of `byte0 >> 2`, so `Oversize` is reached. Bit 1 clear: the rest is
/// the stream; set: the rest mutates a valid stream of three batches (see
/// `mutate`). Holds: the frames plus their prefixes re-encode to exactly the
/// bytes consumed; no frame is over the cap; `Oversize` means the prefix
/// really was over the cap, `Malformed` that the stream was cut; a clean end
/// means the whole stream was consumed.
pub fn backlog_stream(data: &[u8]) -> bool {
    let Some((m, rest)) = mode(data) else {
        return false;
    };
    let limits = Limits::default();
    let max = if m & 1 == 0 {
        limits.max_backlog_frame_bytes
    } else {
        usize::from(m >> 2)
    };
    let owned;
    let stream: &[u8] = if m & 2 == 0 {
        rest
    } else {
        let mut base = backlog_base();
        mutate(&mut base, rest);
        owned = base;
        &owned
    };
    let mut accepted = false;
    let mut split = split_backlog(stream, max);
    let mut again = Vec::with_capacity(stream.len());
    let mut error = None;
    for item in split.by_ref() {
        match item {
            Ok(frame) => {
                assert!(frame.len() <= max, "a frame over the cap was accepted");
                backlog::push_frame(&mut again, frame);
                if let Ok(req) = parse_frame(frame, Channel::Backlog, NOW_MS, &limits) {
                    let Request::PingBatch(b) = req else {
                        panic!("the backlog channel carries ping batches only");
                    };
                    assert_eq!(b.fixes().count(), b.len());
                    let _ = req.to_msg();
                    accepted = true;
                }
            }
            Err(r) => {
                assert!(error.is_none(), "the split went on after an error");
                error = Some(r);
            }
        }
    }
    assert_eq!(
        &stream[..again.len()],
        &again[..],
        "the frames do not re-encode to the stream"
    );
    assert_eq!(split.rest(), &stream[again.len()..]);
    match error {
        None => assert_eq!(again.len(), stream.len(), "a clean end left bytes"),
        Some(Reason::Oversize) => {
            let prefix: [u8; 4] = split.rest()[..4].try_into().expect("a whole prefix");
            assert!(u32::from_le_bytes(prefix) as usize > max);
        }
        Some(Reason::Malformed) => {
            // Only a cut prefix or a cut frame is malformed at this layer.
            let rest = split.rest();
            assert!(
                rest.len() < 4
                    || (u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize)
                        > rest.len() - 4
            );
        }
        Some(r) => panic!("the framing returned {r:?}, which it never should"),
    }
    accepted
}

// ------------------------------------------------------------------ token

fn keyring() -> &'static Keyring {
    static RING: OnceLock<Keyring> = OnceLock::new();
    RING.get_or_init(|| {
        let mut r = Keyring::default();
        r.insert("acme", TenantKey::new(vec![7; 32]).expect("32 bytes"));
        r.insert("globex", TenantKey::new(vec![9; 32]).expect("32 bytes"));
        r
    })
}

/// Checks what must hold of any verification: a token that verifies names
/// a tenant the keyring serves, is not expired, belongs to the device asked
/// for, and its identity is the one its payload claims.
fn check_verify(ring: &Keyring, token: &str, device: Option<&str>) -> Option<String> {
    let id = ring.verify(token, device, NOW_S).ok()?;
    assert!(ring.serves(&id.tenant), "verified for an unknown tenant");
    assert!(id.expires_unix_s > NOW_S, "verified an expired token");
    if let Some(d) = device {
        assert_eq!(id.device, d, "verified for another device");
    }
    // The claimed tenant and device are the payload's, byte for byte.
    use base64::Engine as _;
    let payload = token
        .strip_prefix("fg1.")
        .and_then(|r| r.split('.').next())
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        })
        .expect("a verified token has a payload");
    let claimed = format!("{}\n{}\n", id.tenant, id.device);
    assert!(
        payload.starts_with(claimed.as_bytes()),
        "identity differs from the payload's claim"
    );
    Some(token.to_owned())
}

/// Device token verification (`Keyring::verify`, the Hello's token).
///
/// Byte 0, bit 0 clear: the rest is a token as a device would send it,
/// verified with and without a device id. Bit 0 set: a real token is
/// issued for a device named by the next `(byte0 >> 2) % 64` bytes (tenant
/// by bit 1), must verify to exactly that identity, and is then mutated by
/// the remaining bytes: a token that differs from the issued one must never
/// verify (base64 is strict, so there is no second spelling of a token).
/// Returns whether a token verified.
pub fn device_token(data: &[u8]) -> bool {
    let ring = keyring();
    let Some((m, rest)) = mode(data) else {
        return false;
    };
    if m & 1 == 0 {
        let token = String::from_utf8_lossy(rest);
        let verified = check_verify(ring, &token, None).is_some();
        check_verify(ring, &token, Some("phone-1"));
        // The ttl parser sits beside the verifier and is as exposed on the
        // command line; it must refuse, not overflow.
        if let Ok(s) = parse_ttl(&token) {
            assert!(s > 0);
        }
        return verified;
    }
    let tenant = if m & 2 == 0 { "acme" } else { "globex" };
    let n = (usize::from(m >> 2) % 64).min(rest.len());
    let (dev, edits) = rest.split_at(n);
    let device = String::from_utf8_lossy(dev);
    let exp = NOW_S + 3_600;
    let Ok(token) = ring.issue(tenant, &device, exp) else {
        assert!(device.is_empty() || device.contains('\n') || device.len() > 128);
        return false;
    };
    let id = ring
        .verify(&token, Some(&device), NOW_S)
        .expect("an issued token verifies");
    assert_eq!(
        (id.tenant.as_str(), id.device.as_str(), id.expires_unix_s),
        (tenant, &*device, exp)
    );
    assert_eq!(ring.verify(&token, None, exp), Err(AuthError::Expired));
    if device != "x" {
        assert_eq!(
            ring.verify(&token, Some("x"), NOW_S),
            Err(AuthError::DeviceMismatch)
        );
    }
    let mut bytes = token.clone().into_bytes();
    mutate(&mut bytes, edits);
    let changed = String::from_utf8_lossy(&bytes);
    if changed != token {
        assert!(
            check_verify(ring, &changed, None).is_none(),
            "a changed token verified: {changed:?} (issued {token:?})"
        );
    }
    true
}

// --------------------------------------------------------------------- qr

/// A punch's QR payload (`rules::qr::parse`, then the tag check the judge
/// runs), as scanned from a screen and sent by the device.
///
/// Byte 0, bit 0 clear: the rest is the payload. Set: a real code for the
/// site named by the next `(byte0 >> 1) % 32` bytes and step from the
/// following 8 is made, must parse back to exactly its fields and verify,
/// and is then mutated by the rest: a changed code that still verifies must
/// be a respelling of the same site and step, never another one. Returns
/// whether the payload parsed.
pub fn qr_payload(data: &[u8]) -> bool {
    let Some((m, rest)) = mode(data) else {
        return false;
    };
    let key = QrKey::new(&[5; 32]);
    let verifies = |payload: &str| {
        qr::parse(payload).is_some_and(|c| qr::tags_equal(&c.tag, &key.tag("acme", c.site, c.step)))
    };
    if m & 1 == 0 {
        let payload = String::from_utf8_lossy(rest);
        let Some(c) = qr::parse(&payload) else {
            return false;
        };
        assert!(!c.site.is_empty() && !c.site.contains(':'));
        // The canonical spelling of what was scanned reads back the same.
        let canonical = format!(
            "{}:{}:{}:{}",
            qr::PREFIX,
            c.site,
            c.step,
            hex::encode(c.tag)
        );
        assert_eq!(qr::parse(&canonical), Some(c));
        let _ = verifies(&payload);
        return true;
    }
    let n = (usize::from(m >> 1) % 32).min(rest.len());
    let (site, rest) = rest.split_at(n);
    let site = String::from_utf8_lossy(site);
    let (step, edits) = match rest.split_first_chunk::<8>() {
        Some((s, e)) => (i64::from_le_bytes(*s), e),
        None => (0, rest),
    };
    let code = key.code("acme", &site, step);
    let Some(c) = qr::parse(&code) else {
        // Only a site the format cannot carry fails to parse back.
        assert!(site.is_empty() || site.contains(':'), "{code:?}");
        return false;
    };
    assert_eq!((c.site, c.step), (&*site, step));
    assert!(verifies(&code), "a made code does not verify: {code:?}");
    let mut bytes = code.clone().into_bytes();
    mutate(&mut bytes, edits);
    let changed = String::from_utf8_lossy(&bytes);
    if verifies(&changed) {
        // Another spelling of the same code (hex case, surrounding blanks,
        // a `+` or leading zeros in the step) is fine; another site or
        // step with a valid tag would be a forgery.
        let d = qr::parse(&changed).expect("it verified");
        assert_eq!(
            (d.site, d.step),
            (c.site, c.step),
            "a changed code verified: {changed:?} (made {code:?})"
        );
    }
    true
}

// ------------------------------------------------------------------ rules

fn calendars() -> &'static Calendars {
    static CALENDARS: OnceLock<Calendars> = OnceLock::new();
    CALENDARS.get_or_init(|| {
        // The calendars the example rules name, loaded once the way a node
        // loads its calendar folder; a PUT only reads them.
        let dir = tempfile::tempdir().expect("a temporary folder");
        for (name, text) in SAMPLE_HOLIDAYS {
            std::fs::write(dir.path().join(name), text).expect("write a calendar");
        }
        Calendars::load(dir.path())
    })
}

/// Compiles rules text as `PUT /v1/rules` does (`RulesSource::compile`
/// minus its disk reads: calendars are loaded once, QR keys are derived).
fn compile(text: &str) -> bool {
    let mut keys = fixed_qr_keys(1);
    let mut ctx = CompileContext {
        calendars: calendars().clone(),
        settings: AttendanceSettings::default(),
        qr_key: &mut keys,
    };
    if let Ok(rules) = compile_text(text, "fuzz", &["acme", "globex"], &mut ctx) {
        let _ = rules.memory_ms();
        for t in ["acme", "globex", "initech"] {
            let _ = rules.tenant(t);
        }
        return true;
    }
    false
}

/// Rules TOML as a tenant PUTs it: `merge_tenant_section` into the example
/// rules for tenant `acme`, then the compile the handler runs; and the same
/// text as a super admin's whole file. Holds: a merge that succeeds yields
/// TOML in which the other tenant's section (the end of the example file)
/// is still there byte for byte; when the merged file compiles, the audit's
/// `tenants_changed` names no tenant but `acme`; the tenant's section still
/// reads back (`GET /v1/rules`). Returns whether the merged rules compiled.
pub fn tenant_rules(data: &[u8]) -> bool {
    // axum's `String` body refuses what is not UTF-8 before the handler.
    let Ok(body) = std::str::from_utf8(data) else {
        return false;
    };
    let mut accepted = false;
    if let Ok(merged) = merge_tenant_section(SAMPLE_RULES, body, "acme") {
        assert!(
            merged.parse::<toml_edit::DocumentMut>().is_ok(),
            "a merge produced text that is not TOML"
        );
        let globex = &SAMPLE_RULES[SAMPLE_RULES
            .find("[tenants.globex]")
            .expect("the example rules have a globex section")..];
        assert!(
            merged.contains(globex.trim_end()),
            "a tenant PUT rewrote another tenant's section:\n{body}\n---\n{merged}"
        );
        let _ = tenant_section(&merged, "acme");
        accepted = compile(&merged);
        if accepted {
            // Only meaningful for a file that compiles: the handler refuses
            // any other before it audits, and `tenants_changed` reads an
            // unparseable file as empty.
            let changed = tenants_changed(SAMPLE_RULES, &merged);
            assert!(
                changed.iter().all(|t| t == "acme"),
                "a tenant PUT changed {changed:?}:\n{body}"
            );
        }
    }
    compile(body);
    accepted
}

// ----------------------------------------------------------------- fences

/// Loads fence GeoJSON as `PUT /v1/fences` and `fences check` do. Holds:
/// `check_geojson_str` and `from_geojson_str` agree (same problems, or the
/// same fences), the index holds every valid fence, and every circle fence
/// is found at its own centre. Returns whether any fence loaded.
fn load_fences(text: &str) -> bool {
    let opts = LoadOptions::default();
    let report = FenceSet::check_geojson_str(text, &opts);
    let strict = FenceSet::from_geojson_str(text, &opts);
    let set = match (report, strict) {
        (Ok(r), Ok(set)) => {
            assert!(r.errors.is_empty());
            assert_eq!(r.set.len(), set.len());
            assert!(set.len() <= r.features);
            set
        }
        (Ok(r), Err(LoadError::Invalid(errors))) => {
            assert_eq!(r.errors, errors, "check and load disagree");
            assert!(!errors.is_empty());
            return false;
        }
        (Err(_), Err(LoadError::Invalid(_))) | (Ok(_), Err(_)) | (Err(_), Ok(_)) => {
            panic!("check and load disagree on whether the file is a collection")
        }
        (Err(_), Err(_)) => return false,
    };
    let index = fencegate_spatial::FenceIndex::build(set, &IndexOptions::default());
    let mut out = Vec::new();
    for f in index.fences() {
        if let Shape::Circle(c) = f.shape() {
            let centre = c.center();
            assert!(f.contains(centre), "a circle misses its centre");
            index.locate(centre, Some(f.tenant()), &mut out);
            assert!(
                out.iter().any(|k| index.fence(*k).id() == f.id()),
                "the index misses circle {} at its centre",
                f.id()
            );
        }
    }
    !index.is_empty()
}

/// A small cursor over the fuzzer's bytes for building structured input.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }

    fn coord(&mut self) -> Option<f64> {
        let (b, rest) = self.0.split_first_chunk::<2>()?;
        self.0 = rest;
        // Mostly small offsets around a city, sometimes the world's edges.
        let v = i16::from_le_bytes(*b);
        Some(match v & 3 {
            0 => f64::from(v) * 1e-5,
            1 => f64::from(v) * 1e-2,
            2 => f64::from(v) / 32767.0 * 200.0,
            _ => f64::from(v >> 2),
        })
    }
}

/// Most features `geojson_from` builds. A feature takes a few input bytes
/// and gives ~150 bytes of JSON, so grown corpus inputs made files of up
/// to 500 features and 75 KB (a tenth of them over 30 KB), each written
/// and parsed twice: the long tail of slow executions held the target near
/// 900 a second, repeating paths that eight features already reach (ids
/// repeat after eight). 64 still gives duplicate ids, every shape kind and
/// every tenant in one file.
const MAX_BUILT_FEATURES: usize = 64;

/// Builds a FeatureCollection from the fuzzer's bytes: circles, polygons
/// with holes and multipolygons of a few points each, around one place, so
/// the validation (rings, orientation, self-intersection, radii, ids) is
/// reached far more often than by raw JSON mutation. At most
/// [`MAX_BUILT_FEATURES`] features.
fn geojson_from(bytes: &[u8]) -> String {
    use serde_json::{Value, json};
    let mut b = Bytes(bytes);
    let mut features = Vec::new();
    let (lon0, lat0) = (121.47, 31.23);
    while features.len() < MAX_BUILT_FEATURES
        && let Some(kind) = b.byte()
    {
        let tenant = ["acme", "globex", ""][usize::from(kind >> 6) % 3];
        let id = format!("f{}", kind & 7);
        let ring = |b: &mut Bytes<'_>| -> Vec<Value> {
            let n = usize::from(b.byte().unwrap_or(0) % 8);
            let mut pts: Vec<Value> = (0..n)
                .map_while(|_| Some(json!([lon0 + b.coord()?, lat0 + b.coord()?])))
                .collect();
            if let Some(first) = pts.first().cloned() {
                if kind & 8 == 0 {
                    pts.push(first);
                }
            }
            pts
        };
        let geometry = match (kind >> 4) & 3 {
            0 => {
                json!({ "type": "Point", "coordinates": [lon0 + b.coord().unwrap_or(0.0), lat0 + b.coord().unwrap_or(0.0)] })
            }
            1 => json!({ "type": "Polygon", "coordinates": [ring(&mut b)] }),
            2 => json!({ "type": "Polygon", "coordinates": [ring(&mut b), ring(&mut b)] }),
            _ => json!({ "type": "MultiPolygon", "coordinates": [[ring(&mut b)], [ring(&mut b)]] }),
        };
        let radius = f64::from(b.byte().unwrap_or(0)) * 25.0;
        features.push(json!({
            "type": "Feature",
            "geometry": geometry,
            "properties": { "id": id, "tenant": tenant, "radius_m": radius },
        }));
    }
    json!({ "type": "FeatureCollection", "features": features }).to_string()
}

/// Fence GeoJSON (`FenceSet::from_geojson_str` / `check_geojson_str`, then
/// the index build the admin PUT runs). Byte 0 bit 0 clear: the rest is the
/// file's text; set: the rest builds a collection (see `geojson_from`).
/// Returns whether any fence loaded.
pub fn fences_geojson(data: &[u8]) -> bool {
    let Some((m, rest)) = mode(data) else {
        return false;
    };
    if m & 1 == 0 {
        std::str::from_utf8(rest).is_ok_and(load_fences)
    } else {
        load_fences(&geojson_from(rest))
    }
}

// ---------------------------------------------------------------- records

fn zones() -> &'static [jiff::tz::TimeZone] {
    static ZONES: OnceLock<Vec<jiff::tz::TimeZone>> = OnceLock::new();
    ZONES.get_or_init(|| {
        let db = jiff::tz::TimeZoneDatabase::bundled();
        // UTC, a fixed offset, DST both ways, a half hour, and the zone
        // that skipped a whole day (2011-12-30 never happened in Apia).
        [
            "UTC",
            "Asia/Shanghai",
            "Europe/Berlin",
            "America/St_Johns",
            "Pacific/Apia",
        ]
        .iter()
        .map(|n| db.get(n).expect("a bundled zone"))
        .collect()
    })
}

/// The hand-parsed `GET /v1/records` parameters: `from`/`to`
/// (`parse_time`) and `status` (`parse_status`). Byte 0 picks the tenant's
/// time zone. Holds: an integer is taken as unix ms unchanged, and a bound
/// read as the end of its day is never before the same bound read as its
/// start, nor more than two days after it. Returns whether `s` is a time.
pub fn records_params(data: &[u8]) -> bool {
    let Some((m, rest)) = mode(data) else {
        return false;
    };
    let zones = zones();
    let tz = &zones[usize::from(m) % zones.len()];
    let s = String::from_utf8_lossy(rest);
    let from = parse_time(&s, tz, false);
    let to = parse_time(&s, tz, true);
    if let Ok(ms) = s.parse::<i64>() {
        assert_eq!((from.clone(), to.clone()), (Ok(ms), Ok(ms)));
    }
    let _ = parse_status(&s);
    if let (Ok(a), Ok(b)) = (&from, &to) {
        assert!(
            (0..=2 * 86_400_000).contains(&(b - a)),
            "{s:?}: end of day {b} vs start {a}"
        );
    }
    from.is_ok()
}
