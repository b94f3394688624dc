//! `fencegate locate`: batch-evaluate points against a fence file on every core, for admins
//! checking a fence file against real positions and for backtests.
//!
//! Input is CSV `id,lat,lon` (with that header); output is CSV `id,fence_id`, one row per
//! (point, containing fence); a point inside no fence has no row. Without `--tenant` every
//! tenant's fences are tested; fence ids are unique only per tenant, so add `--with-tenant`
//! to tell same-named fences of different tenants apart. Output is written only once every
//! line has been read and checked. A regular `--out` file (or a new one) is replaced
//! atomically: written beside it, then renamed over it. A device (`/dev/null`), FIFO or
//! symlink is written through and survives; `-` is stdout (see `crate::persist`).

use std::io::Write;
use std::ops::Range;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use fencegate_spatial::{
    FenceIndex, FenceKey, FenceSet, IndexOptions, LoadOptions, Point, TenantKey,
};
use rayon::prelude::*;

/// Arguments of `fencegate locate`.
#[derive(Debug, clap::Args)]
pub struct LocateArgs {
    /// The fence file (GeoJSON FeatureCollection).
    #[arg(long)]
    pub fences: PathBuf,
    /// Points to locate: CSV with the header `id,lat,lon`.
    #[arg(long)]
    pub points: PathBuf,
    /// Where to write `id,fence_id` rows (stdout if omitted or `-`). A regular file is
    /// replaced atomically; a device, FIFO or symlink is written through.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Only this tenant's fences (every tenant's if omitted).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Add a `tenant` column (fence ids are unique only within a tenant).
    #[arg(long)]
    pub with_tenant: bool,
    /// Smallest circle radius accepted in the fence file, in metres.
    #[arg(long, default_value_t = LoadOptions::default().min_radius_m)]
    pub min_radius_m: f64,
    /// Largest circle radius accepted in the fence file, in metres.
    #[arg(long, default_value_t = LoadOptions::default().max_radius_m)]
    pub max_radius_m: f64,
}

/// What a `locate` run did, also printed to stderr.
#[derive(Clone, Debug, PartialEq)]
pub struct LocateSummary {
    /// Fences loaded.
    pub fences: usize,
    /// Points read.
    pub points: usize,
    /// Output rows (point × containing fence).
    pub matches: usize,
    /// Time to read, validate and index the fences.
    pub index_time: Duration,
    /// Time to read, parse, locate and write the points.
    pub points_time: Duration,
}

impl LocateSummary {
    /// Points per second over the points phase (CSV in, lookups, CSV out).
    pub fn points_per_sec(&self) -> f64 {
        self.points as f64 / self.points_time.as_secs_f64().max(1e-9)
    }
}

fn now() -> Instant {
    crate::clock::instant()
}

/// Runs `fencegate locate` and prints the summary to stderr.
pub fn locate(args: &LocateArgs) -> anyhow::Result<LocateSummary> {
    let start = now();
    let text = std::fs::read_to_string(&args.fences)
        .with_context(|| format!("reading fence file {}", args.fences.display()))?;
    let opts = LoadOptions {
        min_radius_m: args.min_radius_m,
        max_radius_m: args.max_radius_m,
    };
    let set = FenceSet::from_geojson_str(&text, &opts)
        .with_context(|| format!("fence file {}", args.fences.display()))?;
    drop(text);
    let opts = IndexOptions {
        // Without --tenant every point is matched against every tenant's fences.
        all_tenant_lists: args.tenant.is_none(),
        ..IndexOptions::default()
    };
    let index = FenceIndex::build(set, &opts);
    let tenant = match &args.tenant {
        None => None,
        Some(t) => Some(index.tenant(t).with_context(|| {
            format!(
                "tenant '{t}' has no fences in {} (tenants: {})",
                args.fences.display(),
                index.tenants().join(", ")
            )
        })?),
    };
    let index_time = start.elapsed();

    let start = now();
    let input = std::fs::read(&args.points)
        .with_context(|| format!("reading points file {}", args.points.display()))?;
    let name = args.points.display().to_string();
    let located = locate_csv(&index, tenant, args.with_tenant, &input)
        .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    match &args.out {
        Some(path) => crate::persist::write_output(path, &located.csv)
            .with_context(|| format!("writing --out {}", path.display()))?,
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(&located.csv)?;
            out.flush()?;
        }
    }
    let summary = LocateSummary {
        fences: index.len(),
        points: located.points,
        matches: located.matches,
        index_time,
        points_time: start.elapsed(),
    };
    eprintln!(
        "located {} points against {} fences ({}): {} matches; fences indexed in {:.2} s, points in {:.2} s ({:.2} M points/s)",
        summary.points,
        summary.fences,
        args.tenant
            .as_deref()
            .map_or("all tenants".to_owned(), |t| format!("tenant {t}")),
        summary.matches,
        summary.index_time.as_secs_f64(),
        summary.points_time.as_secs_f64(),
        summary.points_per_sec() / 1e6
    );
    Ok(summary)
}

/// The output of [`locate_csv`].
#[derive(Debug)]
pub struct Located {
    /// The output CSV, header included.
    pub csv: Vec<u8>,
    /// Points read.
    pub points: usize,
    /// Rows written.
    pub matches: usize,
}

/// A malformed input line (1-based line number, as an editor shows it).
#[derive(Debug, PartialEq, thiserror::Error)]
#[error("line {line}: {msg}")]
pub struct LineError {
    /// The line.
    pub line: u64,
    /// What is wrong with it.
    pub msg: String,
}

/// Locates every point of an `id,lat,lon` CSV on all cores and returns the `id,fence_id` CSV.
/// Fails on the first malformed line (the lowest line number when several are).
pub fn locate_csv(
    index: &FenceIndex,
    tenant: Option<TenantKey>,
    with_tenant: bool,
    input: &[u8],
) -> Result<Located, LineError> {
    let header_end = memchr_nl(input, 0).unwrap_or(input.len());
    let header = trim_cr(&input[..header_end]);
    let header = header.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(header);
    if header != b"id,lat,lon" {
        return Err(LineError {
            line: 1,
            msg: format!(
                "the header must be `id,lat,lon`, found `{}`",
                String::from_utf8_lossy(header)
            ),
        });
    }
    // Fence ids as CSV fields, escaped once.
    let ids: Vec<Vec<u8>> = index
        .fences()
        .iter()
        .map(|f| {
            let mut v = Vec::new();
            push_field(&mut v, f.id().as_bytes());
            if with_tenant {
                v.push(b',');
                push_field(&mut v, f.tenant_name().as_bytes());
            }
            v
        })
        .collect();
    let mut csv = Vec::with_capacity(input.len() / 2 + 32);
    csv.extend_from_slice(if with_tenant {
        b"id,fence_id,tenant\n"
    } else {
        b"id,fence_id\n"
    });
    let body_start = (header_end + 1).min(input.len());
    let body = &input[body_start..];
    let chunks: Vec<Chunk> = if body.contains(&b'"') {
        // Quoted fields may hide newlines: let the csv crate find the records.
        quoted_records(index, tenant, &ids, input)?
    } else {
        plain_chunks(body)
            .into_par_iter()
            .map(|(range, first_line)| {
                let mut ids_in: Vec<&[u8]> = Vec::new();
                let mut queries: Vec<(Point, Option<TenantKey>)> = Vec::new();
                for (line, raw) in (first_line..).zip(body[range].split(|&b| b == b'\n')) {
                    let raw = trim_cr(raw);
                    if !raw.is_empty() {
                        let (id, p) = parse_line(raw).map_err(|msg| LineError { line, msg })?;
                        ids_in.push(id);
                        queries.push((p, tenant));
                    }
                }
                let mut chunk = Chunk::default();
                chunk.emit_batch(index, &ids, &ids_in, &queries);
                Ok(chunk)
            })
            .collect::<Result<Vec<_>, LineError>>()?
    };
    let mut located = Located {
        csv,
        points: 0,
        matches: 0,
    };
    for c in chunks {
        located.csv.extend_from_slice(&c.out);
        located.points += c.points;
        located.matches += c.matches;
    }
    Ok(located)
}

#[derive(Default)]
struct Chunk {
    out: Vec<u8>,
    points: usize,
    matches: usize,
}

impl Chunk {
    /// Locates a run of points with [`FenceIndex::locate_batch`] and appends their rows.
    fn emit_batch(
        &mut self,
        index: &FenceIndex,
        ids: &[Vec<u8>],
        point_ids: &[&[u8]],
        queries: &[(Point, Option<TenantKey>)],
    ) {
        self.points += queries.len();
        let out = &mut self.out;
        let mut matches = 0;
        index.locate_batch(queries, |i, k| {
            push_field(out, point_ids[i]);
            out.push(b',');
            out.extend_from_slice(&ids[k.index()]);
            out.push(b'\n');
            matches += 1;
        });
        self.matches += matches;
    }

    #[inline]
    fn emit(
        &mut self,
        index: &FenceIndex,
        tenant: Option<TenantKey>,
        ids: &[Vec<u8>],
        id: &[u8],
        p: Point,
        keys: &mut Vec<FenceKey>,
    ) {
        index.locate(p, tenant, keys);
        self.points += 1;
        for k in keys.iter() {
            push_field(&mut self.out, id);
            self.out.push(b',');
            self.out.extend_from_slice(&ids[k.index()]);
            self.out.push(b'\n');
        }
        self.matches += keys.len();
    }
}

/// Splits the body into newline-aligned chunks (several per core, for balance), each with the
/// line number of its first line.
fn plain_chunks(body: &[u8]) -> Vec<(Range<usize>, u64)> {
    let pieces = rayon::current_num_threads() * 8;
    let target = (body.len() / pieces).max(64 * 1024);
    let mut out = Vec::new();
    let mut start = 0;
    let mut line = 2; // the header is line 1
    while start < body.len() {
        let end = match memchr_nl(body, (start + target).min(body.len())) {
            Some(nl) => nl + 1,
            None => body.len(),
        };
        out.push((start..end, line));
        line += body[start..end].iter().filter(|&&b| b == b'\n').count() as u64;
        start = end;
    }
    out
}

fn quoted_records(
    index: &FenceIndex,
    tenant: Option<TenantKey>,
    ids: &[Vec<u8>],
    input: &[u8],
) -> Result<Vec<Chunk>, LineError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(input);
    let mut rows: Vec<(Vec<u8>, Point)> = Vec::new();
    for rec in reader.byte_records() {
        let rec = rec.map_err(|e| LineError {
            line: e.position().map_or(0, |p| p.line()),
            msg: e.to_string(),
        })?;
        let line = rec.position().map_or(0, |p| p.line());
        let err = |msg| LineError { line, msg };
        if rec.len() != 3 {
            return Err(err(format!(
                "expected 3 fields (id,lat,lon), found {}",
                rec.len()
            )));
        }
        let p = parse_point(&rec[1], &rec[2]).map_err(err)?;
        if rec[0].is_empty() {
            return Err(err("the id is empty".into()));
        }
        rows.push((rec[0].to_vec(), p));
    }
    Ok(rows
        .par_chunks(16 * 1024)
        .map(|rows| {
            let mut chunk = Chunk::default();
            let mut keys = Vec::with_capacity(8);
            for (id, p) in rows {
                chunk.emit(index, tenant, ids, id, *p, &mut keys);
            }
            chunk
        })
        .collect())
}

#[inline]
fn parse_line(raw: &[u8]) -> Result<(&[u8], Point), String> {
    let mut fields = raw.splitn(4, |&b| b == b',');
    let (Some(id), Some(lat), Some(lon), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        let n = raw.split(|&b| b == b',').count();
        return Err(format!("expected 3 fields (id,lat,lon), found {n}"));
    };
    if id.is_empty() {
        return Err("the id is empty".into());
    }
    Ok((id, parse_point(lat, lon)?))
}

#[inline]
fn parse_point(lat: &[u8], lon: &[u8]) -> Result<Point, String> {
    let num = |what: &str, b: &[u8]| {
        std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok())
            .ok_or_else(|| format!("{what} `{}` is not a number", String::from_utf8_lossy(b)))
    };
    let (lat, lon) = (num("lat", lat)?, num("lon", lon)?);
    Point::new(lat, lon).map_err(|e| e.to_string())
}

#[inline]
fn trim_cr(b: &[u8]) -> &[u8] {
    b.strip_suffix(b"\r").unwrap_or(b)
}

fn memchr_nl(b: &[u8], from: usize) -> Option<usize> {
    b[from..].iter().position(|&c| c == b'\n').map(|i| i + from)
}

/// Appends `field` as a CSV field, quoting it only when it needs quotes.
fn push_field(out: &mut Vec<u8>, field: &[u8]) {
    if field
        .iter()
        .any(|&b| matches!(b, b',' | b'"' | b'\n' | b'\r'))
    {
        out.push(b'"');
        for &b in field {
            if b == b'"' {
                out.push(b'"');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(field);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_index() -> FenceIndex {
        let set = FenceSet::from_geojson_str(
            include_str!("../../../config/fences.geojson"),
            &LoadOptions::default(),
        )
        .unwrap();
        FenceIndex::build(set, &IndexOptions::default())
    }

    fn run(
        input: &str,
        tenant: Option<&str>,
        with_tenant: bool,
    ) -> Result<(String, usize, usize), LineError> {
        let idx = sample_index();
        let t = tenant.map(|t| idx.tenant(t).unwrap());
        locate_csv(&idx, t, with_tenant, input.as_bytes())
            .map(|l| (String::from_utf8(l.csv).unwrap(), l.points, l.matches))
    }

    #[test]
    fn locates_rows_per_matching_fence() {
        let input = "id,lat,lon\r\np1,31.2304,121.4737\r\np2,0,0\n\np3,52.5251,13.3695\n";
        let (csv, points, matches) = run(input, None, false).unwrap();
        assert_eq!(csv, "id,fence_id\np1,hq-north\np3,hq-north\n");
        assert_eq!((points, matches), (3, 2));
        let (csv, _, _) = run(input, None, true).unwrap();
        assert_eq!(
            csv,
            "id,fence_id,tenant\np1,hq-north,acme\np3,hq-north,globex\n"
        );
        let (csv, _, _) = run(input, Some("globex"), false).unwrap();
        assert_eq!(csv, "id,fence_id\np3,hq-north\n");
    }

    #[test]
    fn quoted_ids_round_trip() {
        let input = "id,lat,lon\n\"a,\"\"b\"\"\",31.2304,121.4737\n";
        let (csv, _, _) = run(input, None, false).unwrap();
        assert_eq!(csv, "id,fence_id\n\"a,\"\"b\"\"\",hq-north\n");
    }

    #[test]
    fn bad_lines_are_named() {
        let e = |input: &str| run(input, None, false).unwrap_err().to_string();
        assert_eq!(
            e("lat,lon,id\n"),
            "line 1: the header must be `id,lat,lon`, found `lat,lon,id`"
        );
        assert_eq!(
            e("id,lat,lon\np1,1,2\np2,abc,2\n"),
            "line 3: lat `abc` is not a number"
        );
        assert_eq!(
            e("id,lat,lon\np1,1,2\n\np2,1\n"),
            "line 4: expected 3 fields (id,lat,lon), found 2"
        );
        assert_eq!(
            e("id,lat,lon\np1,91,2\n"),
            "line 2: latitude 91 is outside -90..=90 degrees"
        );
        assert_eq!(e("id,lat,lon\n,1,2\n"), "line 2: the id is empty");
        assert_eq!(
            e("id,lat,lon\n\"p1\",1,2,3\n"),
            "line 2: expected 3 fields (id,lat,lon), found 4"
        );
    }

    #[test]
    fn many_chunks_keep_order_and_line_numbers() {
        let mut input = String::from("id,lat,lon\n");
        for i in 0..200_000 {
            input.push_str(&format!("p{i},31.2304,121.4737\n"));
        }
        let (csv, points, matches) = run(&input, Some("acme"), false).unwrap();
        assert_eq!((points, matches), (200_000, 200_000));
        assert!(
            csv.lines()
                .skip(1)
                .enumerate()
                .all(|(i, l)| l == format!("p{i},hq-north"))
        );
        input.push_str("bad\n");
        assert_eq!(run(&input, None, false).unwrap_err().line, 200_002);
    }

    #[test]
    fn output_is_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let fences = dir.path().join("f.geojson");
        std::fs::write(&fences, include_str!("../../../config/fences.geojson")).unwrap();
        let points = dir.path().join("p.csv");
        let out = dir.path().join("out.csv");
        let args = LocateArgs {
            fences: fences.clone(),
            points: points.clone(),
            out: Some(out.clone()),
            tenant: None,
            with_tenant: false,
            min_radius_m: 50.0,
            max_radius_m: 5000.0,
        };
        std::fs::write(&points, "id,lat,lon\np1,31.2304,121.4737\n").unwrap();
        let s = locate(&args).unwrap();
        assert_eq!((s.fences, s.points, s.matches), (8, 1, 1));
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "id,fence_id\np1,hq-north\n"
        );
        // A bad line leaves the previous output untouched and no temporary file behind.
        std::fs::write(&points, "id,lat,lon\np1,31.2304,121.4737\np2,x,1\n").unwrap();
        let err = locate(&args).unwrap_err().to_string();
        assert!(
            err.ends_with("p.csv: line 3: lat `x` is not a number"),
            "{err}"
        );
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "id,fence_id\np1,hq-north\n"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
        // Bad fences name the feature; an unknown tenant names the known ones.
        std::fs::write(&fences, r#"{"type":"FeatureCollection","features":[{"type":"Feature","geometry":{"type":"Point","coordinates":[1,1]},"properties":{"id":"x","tenant":"t","radius_m":1}}]}"#).unwrap();
        let err = format!("{:#}", locate(&args).unwrap_err());
        assert!(
            err.contains("feature 0 (fence 'x'): radius 1 m is below the minimum 50 m"),
            "{err}"
        );
        std::fs::write(&fences, include_str!("../../../config/fences.geojson")).unwrap();
        let err = locate(&LocateArgs {
            tenant: Some("initech".into()),
            ..args
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("tenant 'initech' has no fences") && err.contains("acme, globex"),
            "{err}"
        );
    }
}
