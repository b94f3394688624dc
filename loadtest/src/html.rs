//! `--html FILE`: one self-contained page (inline CSS and SVG, no scripts,
//! no external files) with the summary and three charts per load:
//! throughput over time, latency percentiles over time, and the latency
//! distribution. Made to be attached to a capacity review.

use std::fmt::Write as _;

use crate::report::Report;
use crate::stats::{Bucket, SeriesReport};

const W: f64 = 760.0;
const H: f64 = 280.0;
const ML: f64 = 64.0;
const MR: f64 = 16.0;
const MT: f64 = 30.0;
const MB: f64 = 40.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A line of a chart.
struct Line<'a> {
    name: &'a str,
    color: &'a str,
    points: Vec<(f64, f64)>,
}

/// "Nice" tick step for a range.
fn step(range: f64, ticks: f64) -> f64 {
    if range <= 0.0 || !range.is_finite() {
        return 1.0;
    }
    let raw = range / ticks;
    let mag = 10f64.powf(raw.log10().floor());
    let n = raw / mag;
    mag * if n < 1.5 {
        1.0
    } else if n < 3.0 {
        2.0
    } else if n < 7.0 {
        5.0
    } else {
        10.0
    }
}

fn fmt_num(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 10_000.0 {
        format!("{:.0}k", v / 1_000.0)
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    lines: &[Line<'_>],
    log_y: bool,
) -> String {
    let pts = lines.iter().flat_map(|l| l.points.iter());
    let (mut xmax, mut ymin, mut ymax) = (1.0f64, f64::INFINITY, 0.0f64);
    for &(x, y) in pts {
        xmax = xmax.max(x);
        if y > 0.0 {
            ymin = ymin.min(y);
        }
        ymax = ymax.max(y);
    }
    if ymax <= 0.0 {
        ymax = 1.0;
    }
    let (pw, ph) = (W - ML - MR, H - MT - MB);
    let (ylo, yhi) = if log_y {
        let lo = 10f64.powf(ymin.min(ymax).max(1e-3).log10().floor());
        let hi = 10f64.powf(ymax.log10().ceil()).max(lo * 10.0);
        (lo, hi)
    } else {
        let s = step(ymax, 5.0);
        (0.0, (ymax / s).ceil() * s)
    };
    let ty = |y: f64| -> f64 {
        let f = if log_y {
            (y.max(ylo).log10() - ylo.log10()) / (yhi.log10() - ylo.log10())
        } else {
            (y - ylo) / (yhi - ylo)
        };
        MT + ph * (1.0 - f.clamp(0.0, 1.0))
    };
    let tx = |x: f64| ML + pw * (x / xmax);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{t}"><text x="{ML}" y="18" class="t">{t}</text>"#,
        t = esc(title)
    );
    // Y grid and labels.
    if log_y {
        let mut v = ylo;
        while v <= yhi * 1.0001 {
            let y = ty(v);
            let _ = write!(
                s,
                r#"<line x1="{ML}" x2="{x2}" y1="{y:.1}" y2="{y:.1}" class="g"/><text x="{lx}" y="{ly:.1}" class="a" text-anchor="end">{l}</text>"#,
                x2 = W - MR,
                lx = ML - 6.0,
                ly = y + 4.0,
                l = fmt_num(v)
            );
            v *= 10.0;
        }
    } else {
        let st = step(yhi, 5.0);
        let mut v = 0.0;
        while v <= yhi * 1.0001 {
            let y = ty(v);
            let _ = write!(
                s,
                r#"<line x1="{ML}" x2="{x2}" y1="{y:.1}" y2="{y:.1}" class="g"/><text x="{lx}" y="{ly:.1}" class="a" text-anchor="end">{l}</text>"#,
                x2 = W - MR,
                lx = ML - 6.0,
                ly = y + 4.0,
                l = fmt_num(v)
            );
            v += st;
        }
    }
    // X labels.
    let st = step(xmax, 8.0);
    let mut v = 0.0;
    while v <= xmax * 1.0001 {
        let x = tx(v);
        let _ = write!(
            s,
            r#"<text x="{x:.1}" y="{y}" class="a" text-anchor="middle">{l}</text>"#,
            y = H - MB + 16.0,
            l = fmt_num(v)
        );
        v += st;
    }
    let _ = write!(
        s,
        r#"<text x="{x}" y="{y}" class="a" text-anchor="middle">{xl}</text><text x="14" y="{ym}" class="a" transform="rotate(-90 14 {ym})" text-anchor="middle">{yl}</text>"#,
        x = ML + pw / 2.0,
        y = H - 6.0,
        xl = esc(x_label),
        ym = MT + ph / 2.0,
        yl = esc(y_label)
    );
    let _ = write!(
        s,
        r#"<rect x="{ML}" y="{MT}" width="{pw}" height="{ph}" class="f"/>"#
    );
    for (i, l) in lines.iter().enumerate() {
        if l.points.is_empty() {
            continue;
        }
        let d: Vec<String> = l
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", tx(x), ty(y)))
            .collect();
        let _ = write!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{c}" stroke-width="1.8"/>"#,
            d.join(" "),
            c = l.color
        );
        let lx = ML + 10.0 + 130.0 * i as f64;
        let _ = write!(
            s,
            r#"<rect x="{lx}" y="{y}" width="10" height="10" fill="{c}"/><text x="{tx}" y="{ty}" class="a">{n}</text>"#,
            y = MT + 6.0,
            c = l.color,
            tx = lx + 14.0,
            ty = MT + 15.0,
            n = esc(l.name)
        );
    }
    s.push_str("</svg>");
    s
}

fn bar_chart(title: &str, buckets: &[Bucket]) -> String {
    let (pw, ph) = (W - ML - MR, H - MT - MB);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{t}"><text x="{ML}" y="18" class="t">{t}</text><rect x="{ML}" y="{MT}" width="{pw}" height="{ph}" class="f"/>"#,
        t = esc(title)
    );
    if buckets.is_empty() {
        s.push_str("</svg>");
        return s;
    }
    let total: u64 = buckets.iter().map(|b| b.count).sum::<u64>().max(1);
    let max = buckets.iter().map(|b| b.count).max().unwrap_or(1).max(1) as f64;
    let bw = pw / buckets.len() as f64;
    let mut cum = 0u64;
    for (i, b) in buckets.iter().enumerate() {
        cum += b.count;
        let h = ph * b.count as f64 / max;
        let x = ML + bw * i as f64;
        let _ = write!(
            s,
            r##"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="#4878a8"><title>≤ {le} ms: {n} ({p:.2} %, cumulative {c:.2} %)</title></rect>"##,
            y = MT + ph - h,
            w = (bw - 2.0).max(1.0),
            le = fmt_num(b.le_ms),
            n = b.count,
            p = 100.0 * b.count as f64 / total as f64,
            c = 100.0 * cum as f64 / total as f64
        );
        if buckets.len() <= 16 || i % 2 == 0 {
            let _ = write!(
                s,
                r#"<text x="{x:.1}" y="{y}" class="a" text-anchor="middle">{l}</text>"#,
                x = x + bw / 2.0,
                y = H - MB + 16.0,
                l = fmt_num(b.le_ms)
            );
        }
    }
    let _ = write!(
        s,
        r#"<text x="{x}" y="{y}" class="a" text-anchor="middle">latency bucket upper bound, ms (log scale; hover for counts)</text></svg>"#,
        x = ML + pw / 2.0,
        y = H - 6.0
    );
    s
}

fn series_charts(out: &mut String, name: &str, done_label: &str, s: &SeriesReport) {
    let offered: Vec<(f64, f64)> = s
        .timeline
        .iter()
        .map(|p| (f64::from(p.t), p.offered as f64))
        .collect();
    let done: Vec<(f64, f64)> = s
        .timeline
        .iter()
        .map(|p| (f64::from(p.t), p.done as f64))
        .collect();
    let errors: Vec<(f64, f64)> = s
        .timeline
        .iter()
        .map(|p| (f64::from(p.t), p.errors as f64))
        .collect();
    out.push_str(&line_chart(
        &format!("{name}: throughput per second"),
        "seconds since start",
        "per second",
        &[
            Line {
                name: "offered",
                color: "#999",
                points: offered,
            },
            Line {
                name: done_label,
                color: "#2a7",
                points: done,
            },
            Line {
                name: "errors",
                color: "#d33",
                points: errors,
            },
        ],
        false,
    ));
    let pick = |f: fn(&crate::stats::Latency) -> f64| -> Vec<(f64, f64)> {
        s.timeline
            .iter()
            .filter_map(|p| p.latency_ms.as_ref().map(|l| (f64::from(p.t), f(l))))
            .collect()
    };
    out.push_str(&line_chart(
        &format!("{name}: latency percentiles per second (from intended send)"),
        "seconds since start",
        "ms (log scale)",
        &[
            Line {
                name: "p50",
                color: "#2a7",
                points: pick(|l| l.p50),
            },
            Line {
                name: "p90",
                color: "#48a",
                points: pick(|l| l.p90),
            },
            Line {
                name: "p99",
                color: "#e80",
                points: pick(|l| l.p99),
            },
            Line {
                name: "max",
                color: "#d33",
                points: pick(|l| l.max),
            },
        ],
        true,
    ));
    out.push_str(&bar_chart(
        &format!("{name}: latency distribution"),
        &s.distribution,
    ));
}

fn row(out: &mut String, k: &str, v: &str) {
    let _ = write!(out, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(v));
}

/// The page for `r`.
pub fn render(r: &Report) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>fencegate-load · {s}</title><style>
body{{font:14px/1.4 system-ui,sans-serif;margin:2em auto;max-width:820px;color:#222}}
h1{{font-size:1.5em}} h2{{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}}
table{{border-collapse:collapse;margin:.5em 0}} th,td{{padding:2px 10px;text-align:left;border-bottom:1px solid #eee;vertical-align:top}}
th{{font-weight:600;color:#555}} td.n{{text-align:right;font-variant-numeric:tabular-nums}}
.pass{{color:#080;font-weight:700}} .fail{{color:#c00;font-weight:700}}
svg{{display:block;margin:1em 0}} .t{{font:600 13px system-ui}} .a{{font:11px system-ui;fill:#555}}
.g{{stroke:#eee}} .f{{fill:none;stroke:#bbb}} pre{{background:#f6f6f6;padding:8px;overflow:auto;font-size:12px}}
</style></head><body><h1>fencegate-load · {s}</h1><p>{d}</p>"#,
        s = esc(&r.scenario),
        d = esc(&r.description)
    );
    o.push_str("<table>");
    row(&mut o, "target", &r.target);
    row(&mut o, "run", &format!("{} · seed {}", r.run_id, r.seed));
    row(
        &mut o,
        "machine",
        &format!(
            "{} · {} cores · {} client endpoint(s) · {}",
            r.machine.os, r.machine.cores, r.machine.client_endpoints, r.machine.harness
        ),
    );
    row(
        &mut o,
        "measured",
        &format!("{:.1} s of {}", r.duration_s, r.primary),
    );
    row(
        &mut o,
        "offered / acked",
        &format!("{} / {} ({})", r.offered, r.acked, r.acked_basis),
    );
    row(
        &mut o,
        "achieved rate",
        &format!("{:.1} /s", r.achieved_rate),
    );
    let l = &r.latency_ms;
    row(
        &mut o,
        "latency (ms)",
        &format!(
            "p50 {:.2} · p90 {:.2} · p99 {:.2} · p99.9 {:.2} · max {:.2}",
            l.p50, l.p90, l.p99, l.p999, l.max
        ),
    );
    if let Some(b) = &r.baseline {
        row(
            &mut o,
            "raw UDP baseline",
            &format!(
                "{:.0} datagrams/s of {} B; gateway at {}",
                b.datagrams_per_s,
                b.datagram_bytes,
                r.baseline_ratio
                    .map_or("-".into(), |x| format!("{x:.4} of it"))
            ),
        );
    }
    if let Some(m) = &r.memory {
        row(
            &mut o,
            "memory per connection",
            &format!(
                "{:.1} KB over {} connections ({})",
                m.per_connection_bytes / 1_024.0,
                m.connections,
                m.source
            ),
        );
    }
    o.push_str("</table>");
    if r.audit.is_none() && r.audit_jetstream.is_none() {
        o.push_str("<h2>Audit</h2><p>Not run (<code>--audit</code>).</p>");
    }
    for a in r.audit.iter().chain(r.audit_jetstream.iter()) {
        {
            let _ = write!(
                o,
                r#"<h2>Audit</h2><p class="{c}">{v}</p><table>"#,
                c = if a.passed() { "pass" } else { "fail" },
                v = if a.passed() { "PASSED" } else { "FAILED" }
            );
            for (k, v) in [
                ("acknowledged punches", a.acked_punches),
                ("of which refused (no record allowed)", a.refused_punches),
                ("lost", a.lost),
                ("duplicated", a.duplicated),
                ("mismatched", a.mismatched),
                ("punch records", a.punch_records),
                ("ping records", a.ping_records),
                ("enter/exit events", a.fence_events),
                ("records scanned", a.records_scanned),
            ] {
                let _ = write!(o, r#"<tr><th>{k}</th><td class="n">{v}</td></tr>"#);
            }
            o.push_str("</table>");
            for e in &a.examples {
                let _ = write!(o, "<p><code>{}</code></p>", esc(e));
            }
            let _ = write!(o, "<p>{}</p>", esc(&a.source));
        }
    }
    if let Some(p) = &r.punches {
        let _ = write!(
            o,
            "<h2>Punches</h2><p>{} offered, {} acked in {:.1} s ({:.1}/s), curve ×{:.1}, {} handshakes. Verdicts: {}.</p>",
            p.offered,
            p.acked,
            p.absorbed_s,
            p.achieved_rate,
            p.speed,
            esc(&p.handshake),
            esc(&p
                .outcomes
                .verdicts
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", "))
        );
        series_charts(&mut o, "punches", "acked", &p.series);
    }
    if let Some(p) = &r.pings {
        let _ = write!(
            o,
            "<h2>Pings</h2><p>{}/{} devices, {:.0} fixes/s offered for {:.1} s in datagrams of {:.0} B; gateway processed {}; {} ping records and {} enter/exit events logged.</p>",
            p.sent.connected,
            p.sent.devices,
            p.offered_rate,
            p.ping_s,
            p.sent.datagram_bytes,
            p.gateway_processed.map_or("?".into(), |n| n.to_string()),
            p.logged.map_or("?".into(), |n| n.to_string()),
            p.fence_events.map_or("?".into(), |n| n.to_string())
        );
        series_charts(&mut o, "pings", "logged", &p.series);
    }
    if let Some(p) = &r.pings {
        if let Some(c) = &p.reconciliation {
            let _ = write!(
                o,
                r#"<h2>Where the datagrams went</h2><p class="{}">{}</p>"#,
                if c.unexplained == 0 { "pass" } else { "fail" },
                esc(&c.line())
            );
        }
    }
    if let Some(rp) = &r.ramp {
        o.push_str("<h2>Saturation ramp</h2><table><tr><th>step</th><th>interval s</th><th>offered fixes/s</th><th>sent/s</th><th>processed/s</th><th>datagrams/s</th><th>drops %</th><th>p99 ms</th><th>harness late p99 ms</th><th>CPU cores</th><th>unexplained</th><th></th></tr>");
        for st in &rp.steps {
            let _ = write!(
                o,
                r#"<tr><td class="n">{}</td><td class="n">{:.3}</td><td class="n">{:.0}</td><td class="n">{:.0}</td><td class="n">{:.0}</td><td class="n">{:.0}</td><td class="n">{:.2}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td>{}</td></tr>"#,
                st.label(),
                st.ping_interval_s,
                st.offered_fixes_per_s,
                st.sent_fixes_per_s,
                st.processed_fixes_per_s,
                st.datagrams_per_s,
                st.drop_share * 100.0,
                st.p99_ms.map_or("-".into(), |l| format!("{l:.1}")),
                st.send_late_p99_ms
                    .map_or("-".into(), |l| format!("{l:.1}")),
                st.gateway_cpu_cores
                    .map_or("-".into(), |c| format!("{c:.2}")),
                st.unexplained.map_or("-".into(), |u| u.to_string()),
                if st.passed { "ok".into() } else { esc(&st.why) }
            );
        }
        let knee = rp.summary();
        let _ = write!(
            o,
            "</table><p>{}</p>",
            esc(knee.lines().last().unwrap_or_default())
        );
    }
    if r.targets.len() > 1 {
        o.push_str("<h2>Targets</h2><table><tr><th>target</th><th>punches offered</th><th>acked</th><th>failed attempts</th><th>moved in</th><th>devices</th><th>datagrams</th></tr>");
        for t in &r.targets {
            let _ = write!(
                o,
                r#"<tr><td>{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td></tr>"#,
                esc(&t.target),
                t.punches_offered,
                t.punches_acked,
                t.punch_errors,
                t.punches_moved_in,
                t.devices_connected,
                t.datagrams_sent
            );
        }
        o.push_str("</table>");
    }
    o.push_str("<h2>Errors</h2>");
    if r.errors.is_empty() {
        o.push_str("<p>None.</p>");
    } else {
        o.push_str("<table>");
        for (k, n) in &r.errors {
            let _ = write!(o, r#"<tr><td class="n">{n}</td><td>{}</td></tr>"#, esc(k));
        }
        o.push_str("</table>");
    }
    if let Some(g) = &r.gateway {
        let _ = write!(
            o,
            "<h2>Gateway counters</h2><pre>{}</pre>",
            esc(&serde_json::to_string_pretty(g).unwrap_or_default())
        );
    }
    let _ = writeln!(
        o,
        "<h2>Scenario as run</h2><pre>{}</pre></body></html>",
        esc(&toml::to_string(&r.settings).unwrap_or_default())
    );
    o
}
