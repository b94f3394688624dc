//! Server-rendered SVG charts: no script, no chart library, the same
//! numbers as the CSV. Every drawn value is a mark carrying `data-label`
//! and `data-v` (the value exactly as the CSV writes it), so a test (or a
//! screen reader's user, through `<title>`) reads the numbers the chart
//! shows. Every string that reaches the markup goes through [`esc`]:
//! employee, department and fence ids are tenant input.
//!
//! Colours are presentation attributes, not `style=`, so the page's CSP
//! needs no `'unsafe-inline'`.

use std::fmt::Write as _;

/// The palette (colour-blind safe, Okabe–Ito).
pub const PALETTE: [&str; 8] = [
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000",
];

/// Escapes text for HTML and SVG content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A number as the CSV and `data-v` write it: integers bare, others with
/// one decimal.
pub fn num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.1}")
    }
}

fn open(out: &mut String, chart: &str, w: u32, h: u32, title: &str) {
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" data-chart="{}" viewBox="0 0 {w} {h}" width="100%" role="img" aria-label="{t}"><title>{t}</title>"#,
        esc(chart),
        t = esc(title)
    );
}

/// The "no data" placeholder, still an SVG so the layout does not jump.
pub fn empty(chart: &str, message: &str) -> String {
    let mut out = String::new();
    open(&mut out, chart, 640, 80, message);
    let _ = write!(
        out,
        r##"<text class="empty" x="320" y="45" text-anchor="middle" fill="#666">{}</text></svg>"##,
        esc(message)
    );
    out
}

/// A line chart of `(label, value)` points, y from 0 to `y_max` (or the
/// largest value).
pub fn line(chart: &str, title: &str, points: &[(String, f64)], y_max: Option<f64>) -> String {
    let (w, h, l, r, t, b) = (640.0, 260.0, 48.0, 16.0, 16.0, 56.0);
    let max = y_max
        .unwrap_or_else(|| points.iter().map(|p| p.1).fold(0.0, f64::max))
        .max(1e-9);
    let n = points.len().max(1);
    let x = |i: usize| {
        if n == 1 {
            l + (w - l - r) / 2.0
        } else {
            l + (w - l - r) * i as f64 / (n - 1) as f64
        }
    };
    let y = |v: f64| t + (h - t - b) * (1.0 - v / max);
    let mut out = String::new();
    open(&mut out, chart, w as u32, h as u32, title);
    // Grid and y labels at 0, 50 and 100 % of the range.
    for k in 0..=2 {
        let v = max * f64::from(k) / 2.0;
        let _ = write!(
            out,
            r##"<line x1="{l}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end" font-size="11" fill="#555">{}</text>"##,
            w - r,
            l - 4.0,
            y(v) + 4.0,
            num((v * 10.0).round() / 10.0),
            y = y(v)
        );
    }
    let path: Vec<String> = points
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{:.1},{:.1}", x(i), y(p.1)))
        .collect();
    let _ = write!(
        out,
        r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
        PALETTE[0],
        path.join(" ")
    );
    let every = n.div_ceil(8);
    for (i, (label, v)) in points.iter().enumerate() {
        let _ = write!(
            out,
            r#"<circle class="mark" data-label="{lab}" data-v="{vv}" cx="{:.1}" cy="{:.1}" r="3.5" fill="{}"><title>{lab}: {vv}</title></circle>"#,
            x(i),
            y(*v),
            PALETTE[0],
            lab = esc(label),
            vv = num(*v)
        );
        if i % every == 0 || i + 1 == n {
            let _ = write!(
                out,
                r##"<text x="{:.1}" y="{}" text-anchor="end" font-size="10" fill="#555" transform="rotate(-35 {:.1} {})">{}</text>"##,
                x(i),
                h - b + 16.0,
                x(i),
                h - b + 16.0,
                esc(label)
            );
        }
    }
    out.push_str("</svg>");
    out
}

/// Horizontal bars of `(label, value)`, longest first as given; `note` is
/// printed after each value (e.g. minutes).
pub fn bars(chart: &str, title: &str, rows: &[(String, f64, String)]) -> String {
    let (w, row_h, l, r) = (640.0, 26.0, 170.0, 90.0);
    let h = 12.0 + row_h * rows.len() as f64;
    let max = rows.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-9);
    let mut out = String::new();
    open(&mut out, chart, w as u32, h as u32, title);
    for (i, (label, v, note)) in rows.iter().enumerate() {
        let y = 6.0 + row_h * i as f64;
        let bw = (w - l - r) * v / max;
        let _ = write!(
            out,
            r##"<text x="{}" y="{:.1}" text-anchor="end" font-size="12" fill="#222">{lab}</text><rect class="mark" data-label="{lab}" data-v="{vv}" x="{l}" y="{y:.1}" width="{bw:.1}" height="{}" fill="{}"><title>{lab}: {vv} {n}</title></rect><text x="{:.1}" y="{:.1}" font-size="11" fill="#333">{vv} {n}</text>"##,
            l - 6.0,
            y + 15.0,
            row_h - 8.0,
            PALETTE[i % 2 * 2],
            l + bw + 4.0,
            y + 15.0,
            lab = esc(label),
            vv = num(*v),
            n = esc(note)
        );
    }
    out.push_str("</svg>");
    out
}

/// A radar: `axes` labels, and per series its name and values already
/// scaled to 0..=1 plus the raw values the marks carry.
pub fn radar(
    chart: &str,
    title: &str,
    axes: &[String],
    series: &[(String, Vec<f64>, Vec<f64>)],
) -> String {
    let (w, h) = (640.0, 380.0);
    let (cx, cy, rad) = (260.0, 190.0, 140.0);
    let n = axes.len().max(3);
    let pt = |i: usize, s: f64| {
        let a = -std::f64::consts::FRAC_PI_2 + std::f64::consts::TAU * i as f64 / n as f64;
        (cx + rad * s * a.cos(), cy + rad * s * a.sin())
    };
    let mut out = String::new();
    open(&mut out, chart, w as u32, h as u32, title);
    for ring in 1..=4 {
        let s = f64::from(ring) / 4.0;
        let ps: Vec<String> = (0..n)
            .map(|i| {
                let (x, y) = pt(i, s);
                format!("{x:.1},{y:.1}")
            })
            .collect();
        let _ = write!(
            out,
            r##"<polygon points="{}" fill="none" stroke="#ddd"/>"##,
            ps.join(" ")
        );
    }
    for (i, a) in axes.iter().enumerate() {
        let (x, y) = pt(i, 1.0);
        let (lx, ly) = pt(i, 1.14);
        let anchor = if (lx - cx).abs() < 5.0 {
            "middle"
        } else if lx > cx {
            "start"
        } else {
            "end"
        };
        let _ = write!(
            out,
            r##"<line x1="{cx}" y1="{cy}" x2="{x:.1}" y2="{y:.1}" stroke="#ccc"/><text x="{lx:.1}" y="{:.1}" text-anchor="{anchor}" font-size="12" fill="#222">{}</text>"##,
            ly + 4.0,
            esc(a)
        );
    }
    for (k, (name, scaled, raw)) in series.iter().enumerate() {
        let colour = PALETTE[k % PALETTE.len()];
        let ps: Vec<String> = scaled
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let (x, y) = pt(i, s.clamp(0.0, 1.0));
                format!("{x:.1},{y:.1}")
            })
            .collect();
        let _ = write!(
            out,
            r#"<polygon class="series" data-label="{}" points="{}" fill="{colour}" fill-opacity="0.12" stroke="{colour}" stroke-width="2"/>"#,
            esc(name),
            ps.join(" ")
        );
        for (i, (s, v)) in scaled.iter().zip(raw).enumerate() {
            let (x, y) = pt(i, s.clamp(0.0, 1.0));
            let axis = axes.get(i).map_or("", String::as_str);
            let _ = write!(
                out,
                r#"<circle class="mark" data-label="{} / {}" data-v="{vv}" cx="{x:.1}" cy="{y:.1}" r="3" fill="{colour}"><title>{} / {}: {vv}</title></circle>"#,
                esc(name),
                esc(axis),
                esc(name),
                esc(axis),
                vv = num(*v)
            );
        }
        let ly = 30.0 + 20.0 * k as f64;
        let _ = write!(
            out,
            r##"<rect x="470" y="{:.1}" width="12" height="12" fill="{colour}"/><text x="488" y="{ly:.1}" font-size="12" fill="#222">{}</text>"##,
            ly - 10.0,
            esc(name)
        );
    }
    out.push_str("</svg>");
    out
}

/// A pie of `(label, value)` slices; zero slices are listed in the legend
/// but not drawn.
pub fn pie(chart: &str, title: &str, slices: &[(String, f64)]) -> String {
    let (w, h) = (640.0, 280.0);
    let (cx, cy, rad) = (140.0, 140.0, 120.0);
    let total: f64 = slices.iter().map(|s| s.1).sum();
    let mut out = String::new();
    open(&mut out, chart, w as u32, h as u32, title);
    let mut a0 = -std::f64::consts::FRAC_PI_2;
    for (i, (label, v)) in slices.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let share = if total > 0.0 { v / total } else { 0.0 };
        let tip = format!("{}: {} ({:.1} %)", esc(label), num(*v), share * 100.0);
        if *v > 0.0 {
            let a1 = a0 + std::f64::consts::TAU * share;
            let shape = if share >= 0.9999 {
                format!(r#"<circle cx="{cx}" cy="{cy}" r="{rad}""#)
            } else {
                let (x0, y0) = (cx + rad * a0.cos(), cy + rad * a0.sin());
                let (x1, y1) = (cx + rad * a1.cos(), cy + rad * a1.sin());
                let large = i32::from(share > 0.5);
                format!(
                    r#"<path d="M{cx},{cy} L{x0:.2},{y0:.2} A{rad},{rad} 0 {large} 1 {x1:.2},{y1:.2} Z""#
                )
            };
            let _ = write!(
                out,
                r#"{shape} class="mark" data-label="{}" data-v="{}" fill="{colour}" stroke="white"><title>{tip}</title>{}"#,
                esc(label),
                num(*v),
                if shape.starts_with("<circle") {
                    "</circle>"
                } else {
                    "</path>"
                }
            );
            a0 = a1;
        }
        let ly = 40.0 + 26.0 * i as f64;
        let _ = write!(
            out,
            r##"<rect x="300" y="{:.1}" width="14" height="14" fill="{colour}"/><text x="322" y="{ly:.1}" font-size="13" fill="#222">{tip}</text>"##,
            ly - 12.0
        );
    }
    out.push_str("</svg>");
    out
}

/// An HTML table (escaped), for the numbers a chart draws and more.
pub fn table(class: &str, head: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!(r#"<table class="{}"><thead><tr>"#, esc(class));
    for h in head {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    for r in rows {
        out.push_str("<tr>");
        for c in r {
            let _ = write!(out, "<td>{}</td>", esc(c));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    out
}

/// A ring of `(lon, lat)` vertices.
pub type Ring = Vec<(f64, f64)>;

/// A fence outline: its id and rings.
pub type Outline = (String, Vec<Ring>);

/// A heatmap hexagon: boundary, punches, out-of-range punches, label (the
/// H3 cell), nearest fence of its out-of-range punches.
pub type Hex = (Ring, i64, i64, String, String);

/// One panel of the location heatmap: a lon/lat box drawn at a local
/// equirectangular scale.
#[derive(Debug, Clone)]
pub struct MapPanel {
    /// Fence outlines.
    pub fences: Vec<Outline>,
    /// Hexagons.
    pub hexes: Vec<Hex>,
}

/// Draws heatmap panels side by side; each hexagon's opacity grows with
/// its punches; hexagons with out-of-range punches get a red outline and
/// name the nearest fence.
pub fn heatmap(chart: &str, title: &str, panels: &[MapPanel], legend: (&str, &str)) -> String {
    let size = 300.0;
    let w = (size + 10.0) * panels.len().max(1) as f64 + 10.0;
    let h = size + 40.0;
    let max = panels
        .iter()
        .flat_map(|p| p.hexes.iter().map(|x| x.1))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let mut out = String::new();
    open(&mut out, chart, w as u32, h as u32, title);
    for (k, p) in panels.iter().enumerate() {
        let pts = p
            .hexes
            .iter()
            .flat_map(|x| x.0.iter())
            .chain(p.fences.iter().flat_map(|f| f.1.iter().flatten()));
        let (mut x0, mut y0, mut x1, mut y1) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
        for &(lon, lat) in pts {
            x0 = x0.min(lon);
            x1 = x1.max(lon);
            y0 = y0.min(lat);
            y1 = y1.max(lat);
        }
        if x0 > x1 {
            continue;
        }
        let kx = ((y0 + y1) / 2.0).to_radians().cos();
        let span = ((x1 - x0) * kx).max(y1 - y0).max(1e-6) * 1.1;
        let (mx, my) = ((x0 + x1) / 2.0, (y0 + y1) / 2.0);
        let ox = 10.0 + (size + 10.0) * k as f64;
        let proj = |(lon, lat): (f64, f64)| {
            (
                ox + size / 2.0 + (lon - mx) * kx / span * size,
                10.0 + size / 2.0 - (lat - my) / span * size,
            )
        };
        let ring_path = |ring: &[(f64, f64)]| {
            let mut d = String::new();
            for (i, &q) in ring.iter().enumerate() {
                let (x, y) = proj(q);
                let _ = write!(d, "{}{x:.1},{y:.1}", if i == 0 { "M" } else { " L" });
            }
            d.push('Z');
            d
        };
        let _ = write!(
            out,
            r##"<rect x="{ox}" y="10" width="{size}" height="{size}" fill="#f7f7f7" stroke="#ccc"/>"##
        );
        for (id, rings) in &p.fences {
            let d: Vec<String> = rings.iter().map(|r| ring_path(r)).collect();
            let _ = write!(
                out,
                r##"<path class="fence" data-label="{id}" d="{}" fill="#009E73" fill-opacity="0.10" fill-rule="evenodd" stroke="#009E73" stroke-width="1.5"><title>{id}</title></path>"##,
                d.join(" "),
                id = esc(id)
            );
        }
        for (ring, n, oor, label, nearest) in &p.hexes {
            let op = 0.25 + 0.75 * (*n as f64 / max);
            let (stroke, sw) = if *oor > 0 {
                ("#D55E00", 2.0)
            } else {
                ("#fff", 0.5)
            };
            let tip = if *oor > 0 {
                format!(
                    "{}: {n} ({}: {oor}, {}: {})",
                    esc(label),
                    esc(legend.0),
                    esc(legend.1),
                    esc(nearest)
                )
            } else {
                format!("{}: {n}", esc(label))
            };
            let _ = write!(
                out,
                r##"<path class="mark hex" data-label="{}" data-v="{n}" data-oor="{oor}" data-nearest="{}" d="{}" fill="#0072B2" fill-opacity="{op:.2}" stroke="{stroke}" stroke-width="{sw}"><title>{tip}</title></path>"##,
                esc(label),
                esc(nearest),
                ring_path(ring)
            );
        }
        // Name the fences at their first vertex, after the hexes so the
        // names stay readable.
        for (id, rings) in &p.fences {
            if let Some(&q) = rings.first().and_then(|r| r.first()) {
                let (x, y) = proj(q);
                let _ = write!(
                    out,
                    r##"<text x="{x:.1}" y="{:.1}" font-size="10" fill="#006644">{}</text>"##,
                    y - 3.0,
                    esc(id)
                );
            }
        }
    }
    let _ = write!(
        out,
        r##"<rect x="10" y="{:.1}" width="14" height="10" fill="#fff" stroke="#D55E00" stroke-width="2"/><text x="30" y="{:.1}" font-size="12" fill="#222">{}</text>"##,
        h - 22.0,
        h - 13.0,
        esc(legend.0)
    );
    out.push_str("</svg>");
    out
}

/// A device on the fleet live view: label (device id), `(lon, lat)`, the
/// fences it is in (empty: outside every fence), and its tooltip.
pub type DeviceDot = (String, (f64, f64), Vec<String>, String);

/// The fleet live view's map: fence outlines and one dot per device, green
/// inside a fence and orange outside. Each dot is a mark whose `data-v`
/// lists its fences (space-separated, as the CSV does).
pub fn live_map(chart: &str, title: &str, fences: &[Outline], devices: &[DeviceDot]) -> String {
    let (w, h) = (640.0, 400.0);
    let pts = devices
        .iter()
        .map(|d| d.1)
        .chain(fences.iter().flat_map(|f| f.1.iter().flatten().copied()));
    let (mut x0, mut y0, mut x1, mut y1) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
    for (lon, lat) in pts {
        x0 = x0.min(lon);
        x1 = x1.max(lon);
        y0 = y0.min(lat);
        y1 = y1.max(lat);
    }
    let mut out = String::new();
    open(&mut out, chart, w as u32, h as u32, title);
    let _ = write!(
        out,
        r##"<rect x="0" y="0" width="{w}" height="{h}" fill="#f7f7f7" stroke="#ccc"/>"##
    );
    if x0 <= x1 {
        let kx = ((y0 + y1) / 2.0).to_radians().cos();
        let scale = ((w - 40.0) / ((x1 - x0) * kx).max(1e-6)).min((h - 40.0) / (y1 - y0).max(1e-6));
        let (mx, my) = ((x0 + x1) / 2.0, (y0 + y1) / 2.0);
        let proj = |(lon, lat): (f64, f64)| {
            (
                w / 2.0 + (lon - mx) * kx * scale,
                h / 2.0 - (lat - my) * scale,
            )
        };
        for (id, rings) in fences {
            let mut d = String::new();
            for ring in rings {
                for (i, &q) in ring.iter().enumerate() {
                    let (x, y) = proj(q);
                    let _ = write!(d, "{}{x:.1},{y:.1}", if i == 0 { "M" } else { " L" });
                }
                d.push_str("Z ");
            }
            let _ = write!(
                out,
                r##"<path class="fence" data-label="{id}" d="{}" fill="#009E73" fill-opacity="0.10" fill-rule="evenodd" stroke="#009E73" stroke-width="1.5"><title>{id}</title></path>"##,
                d.trim_end(),
                id = esc(id)
            );
            if let Some(&q) = rings.first().and_then(|r| r.first()) {
                let (x, y) = proj(q);
                let _ = write!(
                    out,
                    r##"<text x="{x:.1}" y="{:.1}" font-size="10" fill="#006644">{}</text>"##,
                    y - 3.0,
                    esc(id)
                );
            }
        }
        for (label, at, inside, tip) in devices {
            let (x, y) = proj(*at);
            let fill = if inside.is_empty() {
                "#D55E00"
            } else {
                "#009E73"
            };
            let _ = write!(
                out,
                r##"<circle class="mark device" data-label="{l}" data-v="{v}" cx="{x:.1}" cy="{y:.1}" r="5" fill="{fill}" stroke="#fff" stroke-width="1.5"><title>{t}</title></circle><text x="{:.1}" y="{:.1}" font-size="10" fill="#222">{l}</text>"##,
                x + 7.0,
                y + 3.0,
                l = esc(label),
                v = esc(&inside.join(" ")),
                t = esc(tip)
            );
        }
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_strings_are_escaped_everywhere() {
        let evil = r#"<script>alert("x")</script>&'"#;
        let rows = vec![(evil.to_owned(), 3.0, evil.to_owned())];
        for svg in [
            bars("c", evil, &rows),
            line("c", evil, &[(evil.to_owned(), 1.0)], None),
            pie("c", evil, &[(evil.to_owned(), 1.0)]),
            radar(
                "c",
                evil,
                &[evil.to_owned()],
                &[(evil.to_owned(), vec![0.5], vec![1.0])],
            ),
            table(evil, &[evil], &[vec![evil.to_owned()]]),
            live_map(
                "c",
                evil,
                &[(evil.to_owned(), vec![vec![(121.0, 31.0), (121.1, 31.1)]])],
                &[(
                    evil.to_owned(),
                    (121.05, 31.05),
                    vec![evil.to_owned()],
                    evil.to_owned(),
                )],
            ),
        ] {
            assert!(!svg.contains("<script"), "{svg}");
            assert!(!svg.contains("\"x\""), "{svg}");
        }
    }

    #[test]
    fn marks_carry_the_csv_numbers() {
        let svg = line(
            "trend",
            "t",
            &[("a".into(), 97.5), ("b".into(), 100.0)],
            Some(100.0),
        );
        assert!(svg.contains(r#"data-label="a" data-v="97.5""#));
        assert!(svg.contains(r#"data-label="b" data-v="100""#));
    }
}
