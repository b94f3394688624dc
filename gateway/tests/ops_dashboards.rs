//! The SRE files under `ops/` that read the gateway's metrics: the Grafana
//! dashboard (`ops/grafana/fencegate.json`) and the alert rules
//! (`ops/prometheus/alerts.yml`). Every query must parse as PromQL
//! (`promtool`) and every metric it names must be one a running node
//! actually exports: a renamed metric or a histogram rendered as a summary
//! turns a panel silently empty or an alert silently dead, and this test
//! red. The alerts pass their promtool unit tests, and they and the runbook
//! in docs/OPERATIONS.md cover each other.

mod common;
mod sink_rig;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{HQ, Node, punch};
use fencegate::client::PunchReply;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("gateway/ has a parent")
        .to_path_buf()
}

fn promtool() -> PathBuf {
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/bin", "/usr/local/bin"])
    {
        let p = Path::new(dir).join("promtool");
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "promtool is not installed: run the tests with `bash .ci/test` (it installs Debian's \
         prometheus package) or `apt-get install prometheus`"
    );
}

/// Every PromQL expression of the dashboard's panels.
fn dashboard_exprs() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("ops/grafana/fencegate.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut out = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                p["title"].as_str().unwrap_or("?").to_string(),
                t["expr"]
                    .as_str()
                    .expect("a target has an expr")
                    .to_string(),
            ));
        }
    }
    // The node variable's query names a metric too.
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        if let Some(q) = v["query"].as_str() {
            if q.contains("fencegate_") {
                out.push(("variable".into(), q.to_string()));
            }
        }
    }
    out
}

/// Every alert of `ops/prometheus/alerts.yml`: (name, expr, summary,
/// runbook_url). The file is written one field per line, which promtool
/// checks; this reads it without a YAML dependency.
fn alerts() -> Vec<(String, String, String, String)> {
    let text = std::fs::read_to_string(root().join("ops/prometheus/alerts.yml")).unwrap();
    let mut out: Vec<(String, String, String, String)> = Vec::new();
    let field = |l: &str, k: &str| -> Option<String> {
        let v = l.trim().strip_prefix(k)?.trim();
        Some(serde_json::from_str::<String>(v).unwrap_or_else(|_| v.to_string()))
    };
    for l in text.lines() {
        if let Some(n) = field(l, "- alert:") {
            out.push((n, String::new(), String::new(), String::new()));
        } else if let Some(last) = out.last_mut() {
            if let Some(v) = field(l, "expr:") {
                last.1 = v;
            } else if let Some(v) = field(l, "summary:") {
                last.2 = v;
            } else if let Some(v) = field(l, "runbook_url:") {
                last.3 = v;
            }
        }
    }
    out
}

/// Runbook rows with no metric to alert on yet, named so the gap is seen.
const RUNBOOK_WITHOUT_ALERT: &[&str] = &[
    // The log's results materializer (one node) exports no lag metric yet.
    "rb-results-behind",
];

#[test]
fn alerts_pass_promtool_check_and_unit_tests() {
    for args in [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts.test.yml"],
    ] {
        let out = Command::new(promtool())
            .args(args)
            .current_dir(root().join("ops/prometheus"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn every_alert_links_a_runbook_entry_and_every_entry_has_an_alert() {
    let ops = std::fs::read_to_string(root().join("docs/OPERATIONS.md")).unwrap();
    let runbook = &ops[ops.find("## Runbook").expect("a Runbook section")..];
    let anchors: BTreeSet<String> = runbook
        .split("<a id=\"")
        .skip(1)
        .filter_map(|r| r.split('"').next())
        .map(str::to_string)
        .collect();
    let rows = runbook
        .lines()
        .skip_while(|l| !l.starts_with("|---"))
        .skip(1)
        .take_while(|l| l.starts_with('|'))
        .count();
    assert_eq!(anchors.len(), rows, "every runbook row has an anchor");
    let alerts = alerts();
    assert!(alerts.len() >= 15, "{} alerts", alerts.len());
    let mut linked = BTreeSet::new();
    for (name, expr, summary, url) in &alerts {
        assert!(
            !expr.is_empty() && !summary.is_empty(),
            "{name}: expr and summary"
        );
        let anchor = url
            .split_once("docs/OPERATIONS.md#")
            .map(|(_, a)| a.to_string())
            .unwrap_or_else(|| panic!("{name}: runbook_url {url:?} is not a runbook anchor"));
        assert!(
            anchors.contains(&anchor),
            "{name}: no runbook entry #{anchor}"
        );
        linked.insert(anchor);
    }
    let unlinked: Vec<_> = anchors
        .iter()
        .filter(|a| !linked.contains(*a) && !RUNBOOK_WITHOUT_ALERT.contains(&a.as_str()))
        .collect();
    assert!(
        unlinked.is_empty(),
        "runbook entries no alert points at: {unlinked:?}"
    );
}

/// The `fencegate_*` names in an expression, histogram suffixes included.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("fencegate_") {
        let start = i + at;
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
            end += 1;
        }
        out.insert(expr[start..end].to_string());
        i = end;
    }
    out
}

#[test]
fn dashboard_queries_are_valid_promql() {
    let exprs = dashboard_exprs();
    assert!(exprs.len() >= 15, "only {} queries", exprs.len());
    // promtool checks PromQL inside rule files: one recording rule per
    // query, with Grafana's variables replaced by what they expand to.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (_, e)) in exprs.iter().enumerate() {
        if e.starts_with("label_values(") {
            continue;
        }
        let e = e
            .replace("$__rate_interval", "5m")
            .replace("$instance", ".*");
        rules.push_str(&format!(
            "      - record: dashboard:q{i}\n        expr: {}\n",
            serde_json::to_string(&e).unwrap()
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dashboard-rules.yml");
    std::fs::write(&path, rules).unwrap();
    let out = Command::new(promtool())
        .args(["check", "rules"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool check rules on the dashboard's queries:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_alerts_read_is_exported() {
    // A node with sinks, so the per-sink metrics are exported too, and in
    // a one-server `[cluster]` whose day results come from the stream, so
    // the claims' and the stream materializer's are.
    let dir = tempfile::tempdir().unwrap();
    let nats_dir = tempfile::tempdir().unwrap();
    let nats = fencegate_testkit::NatsServer::start(nats_dir.path());
    let sink = fencegate::sink::RawSink {
        name: "files".into(),
        kind: "jsonl".into(),
        path: Some(dir.path().join("out.jsonl")),
        ..fencegate::sink::RawSink::default()
    };
    let sinks = vec![sink, sink_rig::nats_sink("js", &nats.url())];
    let cfg = sink_rig::config_with(dir.path(), sinks, |raw| {
        raw.cluster = fencegate::cluster::RawCluster {
            enabled: true,
            urls: vec![nats.url()],
            replicas: 1,
            ..fencegate::cluster::RawCluster::default()
        };
    });
    let node = Node::start_with(dir, cfg).await;
    // Exercise the punch path once so its histograms have samples.
    let c = node.client("acme", "phone-1").await;
    let r = c.punch(&punch(1, "E1", HQ)).await.unwrap();
    assert!(matches!(r, PunchReply::Ack(_)), "{r:?}");
    let text = reqwest::get(format!("http://{}/metrics", node.running.admin_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let exported: BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let mut missing = Vec::new();
    let queries = dashboard_exprs().into_iter().chain(
        alerts()
            .into_iter()
            .map(|(n, e, _, _)| (format!("alert {n}"), e)),
    );
    for (title, e) in queries {
        for m in metric_names(&e) {
            if !exported.contains(m.as_str()) {
                missing.push(format!("{m} (panel '{title}')"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "the dashboard or the alerts read metrics the gateway does not export:\n  {}\nexported: {exported:?}",
        missing.join("\n  ")
    );
}

#[test]
fn the_name_scan_finds_histogram_series() {
    let names = metric_names(
        "histogram_quantile(0.99, sum by (le) (rate(fencegate_punch_ack_seconds_bucket{a=\"b\"}[5m])))",
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["fencegate_punch_ack_seconds_bucket"]
    );
}
