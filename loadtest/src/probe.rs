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

    /// This scrape and `other` summed series by series: several nodes'
    /// counters as one deployment's.
    pub fn plus(mut self, other: &Scrape) -> Self {
        for (k, v) in &other.0 {
            *self.0.entry(k.clone()).or_insert(0.0) += v;
        }
        self
    }

    /// A series' value, 0 when absent.
    pub fn get(&self, series: &str) -> f64 {
        self.0.get(series).copied().unwrap_or(0.0)
    }

    /// The sum of every series of metric `name` whose labels include
    /// `label` (written `key="value"`).
    pub fn sum_with(&self, name: &str, label: &str) -> f64 {
        let prefix = format!("{name}{{");
        self.0
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix) && k.contains(label))
            .map(|(_, v)| v)
            .sum()
    }

    /// The upper bound of the bucket holding quantile `q` (0..1) of
    /// histogram `name`, summed over its other labels, for the
    /// observations between `before` and this scrape; `None` when there
    /// were none, `f64::INFINITY` when it lies past the last finite bound.
    /// A bucket bound, not an interpolation: a p99 of "0.1" says 99 % of
    /// the observations took at most 0.1 s.
    pub fn quantile_le(&self, before: &Scrape, name: &str, q: f64) -> Option<f64> {
        let now = self.by_label(&format!("{name}_bucket"), "le");
        let was = before.by_label(&format!("{name}_bucket"), "le");
        let mut buckets: Vec<(f64, f64)> = now
            .iter()
            .filter_map(|(le, v)| {
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((bound, v - was.get(le).copied().unwrap_or(0.0)))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let total = buckets.last()?.1;
        if total <= 0.0 {
            return None;
        }
        // Prometheus buckets are cumulative: the first whose count reaches
        // q of the total holds the quantile.
        buckets
            .iter()
            .find(|(_, c)| *c >= q * total)
            .map(|(le, _)| *le)
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
    /// Datagrams dropped by reason (`kernel`, `buffer_full`, `rate_limit`,
    /// `shed`, `log_busy`).
    pub datagram_drops: BTreeMap<String, u64>,
    /// QUIC DATAGRAM frames the gateway's quinn received
    /// (`fencegate_datagrams_received_total`; `None` from a gateway that
    /// does not export it).
    pub datagrams_received: Option<u64>,
    /// Datagrams refused by validation (`fencegate_refused_total{channel="datagram"}`).
    pub datagrams_refused: u64,
    /// Streams answered `Busy`.
    pub busy: u64,
    /// Handshakes by kind (`full` counts every accepted connection,
    /// `resumed` those that came back with a ticket, `failed`).
    pub handshakes: BTreeMap<String, u64>,
    /// Open connections at the second scrape.
    pub connections: u64,
    /// The node's own set-up time of the connections it admitted (first
    /// packet it accepted → authenticated Hello,
    /// `fencegate_connection_setup_seconds`), milliseconds: `p50_le` and
    /// `p99_le`, each the upper bound of the histogram bucket that holds
    /// it. A connection whose first Initials were shed silently is timed
    /// from the copy the node admitted, so this is the node's queueing
    /// without the client's resend wait, which the client-side
    /// `admitted_latency_ms` includes. Empty when no connection was set up;
    /// a quantile past the last bucket (2.5 s) is infinite (`null` in JSON).
    pub setup_ms: BTreeMap<String, f64>,
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
            // Summed over `reason` (log_busy, rate_limit, buffer_full).
            datagrams_dropped: by("fencegate_datagrams_dropped_total", "reason")
                .values()
                .sum(),
            datagram_drops: by("fencegate_datagrams_dropped_total", "reason"),
            datagrams_received: after
                .0
                .contains_key("fencegate_datagrams_received_total")
                .then(|| d("fencegate_datagrams_received_total")),
            datagrams_refused: (after.sum_with("fencegate_refused_total", "channel=\"datagram\"")
                - before.sum_with("fencegate_refused_total", "channel=\"datagram\""))
            .max(0.0) as u64,
            busy: d("fencegate_busy_total"),
            handshakes: by("fencegate_handshakes_total", "kind"),
            connections: after.get("fencegate_connections").max(0.0) as u64,
            setup_ms: [("p50_le", 0.5), ("p99_le", 0.99)]
                .into_iter()
                .filter_map(|(k, q)| {
                    let le = after.quantile_le(before, "fencegate_connection_setup_seconds", q)?;
                    Some((k.to_owned(), le * 1_000.0))
                })
                .collect(),
        }
    }
}

/// CPU time (user + system) the gateway has used so far, seconds (Linux
/// `/proc`): process `pid`'s, or with `None` the built-in gateway's threads
/// in this process (its runtime's `gateway` threads and the log writer's
/// `fencegate-log`, not the harness's). `None` elsewhere.
pub fn gateway_cpu_s(pid: Option<u32>) -> Option<f64> {
    match pid {
        Some(p) => stat_cpu_s(&std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?),
        None => {
            let mut total = 0.0;
            for t in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
                let Ok(text) = std::fs::read_to_string(t.path().join("stat")) else {
                    continue;
                };
                let comm = text
                    .split_once('(')
                    .and_then(|(_, r)| r.rsplit_once(')'))
                    .map_or("", |(c, _)| c);
                if comm.starts_with("gateway") || comm.starts_with("fencegate-log") {
                    total += stat_cpu_s(&text).unwrap_or(0.0);
                }
            }
            Some(total)
        }
    }
}

/// utime + stime of one `/proc/…/stat` line, seconds (USER_HZ is 100 on
/// Linux whatever the kernel's own tick rate).
fn stat_cpu_s(text: &str) -> Option<f64> {
    // Fields after the command (which may hold spaces), counted from
    // `state` (field 3): utime and stime are fields 14 and 15.
    let rest = text.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
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

    /// Only the run's own observations count (after minus before), the
    /// lanes are summed, and the answer is the bound of the bucket that
    /// reaches the quantile.
    #[test]
    fn set_up_quantiles_come_from_the_runs_own_buckets() {
        let series = |lane: &str, counts: [u32; 4]| {
            ["0.05", "0.1", "0.25", "+Inf"]
                .iter()
                .zip(counts)
                .map(|(le, c)| {
                    format!("fencegate_connection_setup_seconds_bucket{{lane=\"{lane}\",le=\"{le}\"}} {c}\n")
                })
                .collect::<String>()
        };
        // Before the run: 1,000 slow set-ups, which must not count.
        let before = Scrape::parse(&series("punch", [0, 0, 0, 1_000]));
        // During it: 90 under 50 ms, 9 under 100 ms, 1 under 250 ms,
        // split across two lanes.
        let after = Scrape::parse(&format!(
            "{}{}",
            series("punch", [60, 66, 67, 1_067]),
            series("shared", [30, 33, 33, 33])
        ));
        let c = GatewayCounts::between(&before, &after);
        assert_eq!(c.setup_ms["p50_le"], 50.0);
        assert_eq!(c.setup_ms["p99_le"], 100.0);
        let none = GatewayCounts::between(&before, &before);
        assert!(none.setup_ms.is_empty());
        let slow = Scrape::parse(&series("punch", [0, 0, 0, 1_100]));
        let c = GatewayCounts::between(&before, &slow);
        assert_eq!(c.setup_ms["p99_le"], f64::INFINITY);
    }

    #[test]
    fn reads_cpu_time_from_a_stat_line() {
        let line = "4242 (fence gate) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 8 0 100 0 0";
        assert_eq!(stat_cpu_s(line), Some(3.0));
        if cfg!(target_os = "linux") {
            assert!(gateway_cpu_s(Some(std::process::id())).is_some());
        }
    }

    #[test]
    fn counts_datagram_drops_by_reason_and_refusals_by_channel() {
        let before = Scrape::parse(
            "fencegate_datagrams_received_total 5\nfencegate_refused_total{channel=\"datagram\",reason=\"Malformed\"} 1\n",
        );
        let after = Scrape::parse(
            "fencegate_datagrams_received_total 105\nfencegate_datagrams_dropped_total{reason=\"buffer_full\"} 7\nfencegate_datagrams_dropped_total{reason=\"kernel\"} 2\nfencegate_refused_total{channel=\"datagram\",reason=\"Malformed\"} 4\nfencegate_refused_total{channel=\"punch\",reason=\"Malformed\"} 9\n",
        );
        let c = GatewayCounts::between(&before, &after);
        assert_eq!(c.datagrams_received, Some(100));
        assert_eq!(c.datagram_drops["buffer_full"], 7);
        assert_eq!(c.datagram_drops["kernel"], 2);
        assert_eq!(c.datagrams_refused, 3, "punch refusals are not datagrams");
        let old = GatewayCounts::between(&Scrape::default(), &Scrape::default());
        assert_eq!(old.datagrams_received, None);
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
