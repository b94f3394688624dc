//! Gateway-side figures: its Prometheus counters (in-process, or scraped
//! from its admin `/metrics`), and its resident memory (`/proc`).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::target::MetricsSource;

/// One scrape: series (`name{labels}`) → value.
#[derive(Debug, Clone, Default)]
pub struct Scrape(BTreeMap<String, f64>);

impl Scrape {
    /// Parses the Prometheus text format (comments skipped).
    pub fn parse(text: &str) -> Self {
        let mut m = BTreeMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // The value follows the last space outside the labels.
            let split = match line.rfind('}') {
                Some(close) => line[close..].find(' ').map(|i| close + i),
                None => line.find(' '),
            };
            let Some(at) = split else { continue };
            let (series, rest) = line.split_at(at);
            let value = rest.split_whitespace().next().and_then(|v| v.parse().ok());
            if let Some(v) = value {
                m.insert(series.to_owned(), v);
            }
        }
        Self(m)
    }

    /// A series' value, 0 when absent.
    pub fn get(&self, series: &str) -> f64 {
        self.0.get(series).copied().unwrap_or(0.0)
    }

    /// Every series of metric `name` with label `label`, by label value.
    pub fn by_label(&self, name: &str, label: &str) -> BTreeMap<String, f64> {
        let prefix = format!("{name}{{");
        let key = format!("{label}=\"");
        let mut out = BTreeMap::new();
        // Summed: series that differ in another label (the `channel` of
        // `fencegate_refused_total`) share this label's value.
        for (k, v) in self.0.iter().filter(|(k, _)| k.starts_with(&prefix)) {
            let Some(start) = k.find(&key).map(|i| i + key.len()) else {
                continue;
            };
            let Some(end) = k[start..].find('"').map(|i| i + start) else {
                continue;
            };
            *out.entry(k[start..end].to_owned()).or_insert(0.0) += *v;
        }
        out
    }
}

/// Reads the gateway's counters now; `None` when there is no source.
pub async fn scrape(src: &MetricsSource) -> anyhow::Result<Option<Scrape>> {
    match src {
        MetricsSource::None => Ok(None),
        MetricsSource::InProcess => Ok(Some(Scrape::parse(
            &fencegate::serve::prometheus().render(),
        ))),
        MetricsSource::Url(url) => {
            let text = tokio::time::timeout(Duration::from_secs(5), http_get(url))
                .await
                .with_context(|| format!("--metrics-url {url}: no answer within 5 s"))??;
            Ok(Some(Scrape::parse(&text)))
        }
    }
}

/// A minimal HTTP/1.1 GET (the admin API is plain HTTP on a private
/// interface).
async fn http_get(url: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("--metrics-url {url}: write it as http://host:port/metrics"))?;
    let (host, path) = rest.split_once('/').map_or((rest, "/"), |(h, p)| (h, p));
    let path = if path == "/" {
        "/".to_owned()
    } else {
        format!("/{path}")
    };
    let mut s = tokio::net::TcpStream::connect(host)
        .await
        .with_context(|| format!("--metrics-url {url}: cannot connect"))?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("--metrics-url {url}: not an HTTP response"))?;
    anyhow::ensure!(
        head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
        "--metrics-url {url}: {}",
        head.lines().next().unwrap_or_default()
    );
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Ok(dechunk(body));
    }
    Ok(body.to_owned())
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// What the gateway counted during a run (the difference of two scrapes).
#[derive(Debug, Clone, Default, Serialize)]
pub struct GatewayCounts {
    /// Ping fixes by outcome (`forwarded`, `suppressed`, `late`,
    /// `duplicate`, and `untracked`, a subset of `forwarded`).
    pub pings: BTreeMap<String, u64>,
    /// Ping fixes the gateway processed (all outcomes).
    pub pings_processed: u64,
    /// Enter/exit events emitted.
    pub fence_events: u64,
    /// Durable punches by verdict.
    pub punches: BTreeMap<String, u64>,
    /// Refused frames by reason.
    pub refused: BTreeMap<String, u64>,
    /// Datagrams dropped (buffer full or log refused).
    pub datagrams_dropped: u64,
    /// Streams answered `Busy`.
    pub busy: u64,
    /// Handshakes by kind (`full` counts every accepted connection,
    /// `resumed` those that came back with a ticket, `failed`).
    pub handshakes: BTreeMap<String, u64>,
    /// Open connections at the second scrape.
    pub connections: u64,
}

fn diff(a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>) -> BTreeMap<String, u64> {
    b.iter()
        .map(|(k, v)| {
            (
                k.clone(),
                (v - a.get(k).copied().unwrap_or(0.0)).max(0.0) as u64,
            )
        })
        .filter(|(_, v)| *v > 0)
        .collect()
}

impl GatewayCounts {
    /// What happened between `before` and `after`.
    pub fn between(before: &Scrape, after: &Scrape) -> Self {
        let d = |n: &str| (after.get(n) - before.get(n)).max(0.0) as u64;
        let by = |n: &str, l: &str| diff(&before.by_label(n, l), &after.by_label(n, l));
        let pings = by("fencegate_pings_total", "outcome");
        Self {
            // `untracked` fixes are also counted as `forwarded`.
            pings_processed: pings
                .iter()
                .filter(|(k, _)| k.as_str() != "untracked")
                .map(|(_, v)| v)
                .sum(),
            pings,
            fence_events: d("fencegate_fence_events_total"),
            punches: by("fencegate_punches_total", "verdict"),
            refused: by("fencegate_refused_total", "reason"),
            datagrams_dropped: d("fencegate_datagrams_dropped_total"),
            busy: d("fencegate_busy_total"),
            handshakes: by("fencegate_handshakes_total", "kind"),
            connections: after.get("fencegate_connections").max(0.0) as u64,
        }
    }
}

/// Resident memory of a process, bytes (Linux `/proc`); `None` elsewhere.
pub fn rss_bytes(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".to_owned(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1_024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labelled_and_plain_series() {
        let before = Scrape::parse(
            "# TYPE x counter\nfencegate_pings_total{outcome=\"forwarded\"} 10\nfencegate_busy_total 1\n",
        );
        let after = Scrape::parse(
            "fencegate_pings_total{outcome=\"forwarded\"} 25\nfencegate_pings_total{outcome=\"suppressed\"} 5\nfencegate_pings_total{outcome=\"untracked\"} 3\nfencegate_busy_total 4\nfencegate_connections 7\n",
        );
        let c = GatewayCounts::between(&before, &after);
        assert_eq!(c.pings["forwarded"], 15);
        assert_eq!(c.pings["suppressed"], 5);
        // Untracked fixes are part of the forwarded ones, not counted twice.
        assert_eq!(c.pings_processed, 20);
        assert_eq!(c.busy, 3);
        assert_eq!(c.connections, 7);
    }

    #[test]
    fn dechunks_bodies() {
        assert_eq!(
            dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            "hello world"
        );
    }

    #[test]
    fn reads_own_rss() {
        if cfg!(target_os = "linux") {
            assert!(rss_bytes(None).unwrap() > 1 << 20);
        }
    }
}
