//! `[cluster]`: whether this node shares claims and configuration with
//! other nodes through NATS JetStream, and how (docs/OPERATIONS.md,
//! "Cluster"). Off by default: a single node needs no NATS.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// What a punch gets when the claims bucket does not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnUnreachable {
    /// Accept the punch as a lone node would, mark its record
    /// (`CLAIM_UNCHECKED` in `anomaly_flags`) and count it in
    /// `fencegate_claims_unreachable_total`: a repeat on another node in
    /// that spell may be accepted twice.
    #[default]
    FailOpen,
    /// Answer `Busy` with `busy_retry_after_ms`: the device keeps the punch
    /// and retries; nothing is accepted that the cluster did not claim.
    Busy,
}

/// Where a cluster node's day results come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ResultsFrom {
    /// The JetStream stream every node forwards to, through one durable
    /// consumer (a shared PostgreSQL store: one leader consumes) or one per
    /// node (each node's own SQLite store): every node answers alike.
    #[default]
    Stream,
    /// This node's own log only: each node's results cover the punches it
    /// took (a node per site, say). Not with a shared PostgreSQL store.
    Log,
}

/// `[cluster]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCluster {
    /// Share claims and configuration with other nodes.
    ///
    /// `false` unless set.
    pub enabled: bool,
    /// NATS servers. Empty: the first `type = "nats"` sink's `url` (and its
    /// `credentials_file` or `token_env`).
    pub urls: Vec<String>,
    /// Environment variable holding a NATS token (with `urls`).
    pub token_env: Option<String>,
    /// NATS `.creds` file (with `urls`).
    pub credentials_file: Option<PathBuf>,
    /// Bucket name prefix: `<prefix>_punch_ids`, `<prefix>_repeats`,
    /// `<prefix>_config`. Nodes of one cluster use the same.
    ///
    /// `"fencegate"` unless set.
    pub prefix: String,
    /// Replicas of the buckets (3 on a 3-node JetStream cluster).
    ///
    /// `1` unless set.
    pub replicas: usize,
    /// Claim punch ids and repeat windows across nodes before a punch is
    /// appended and acknowledged.
    ///
    /// `true` unless set.
    pub claims: bool,
    /// Keep fences and rules in the `<prefix>_config` bucket: an admin
    /// change through any node is served by every node.
    ///
    /// `true` unless set.
    pub shared_config: bool,
    /// How long a claim may take before it counts as unreachable.
    ///
    /// `500` unless set.
    pub timeout_ms: u64,
    /// What a punch gets when the claims do not answer in time.
    ///
    /// `"fail_open"` unless set.
    pub on_unreachable: OnUnreachable,
    /// The retry-after of `Busy` under `on_unreachable = "busy"`.
    ///
    /// `1000` unless set.
    pub busy_retry_after_ms: u32,
    /// A punch id claimed by another node and still in flight after this
    /// long (its node died before writing the record) is taken over by the
    /// resend. Longer than a log commit and a claim together.
    ///
    /// `5000` unless set.
    pub takeover_ms: u64,
    /// Where day results come from: `"stream"` (every node's records) or
    /// `"log"` (this node's own).
    ///
    /// `"stream"` unless set.
    pub results: ResultsFrom,
    /// Per-tenant overrides (`[cluster.tenants.acme]`).
    pub tenants: BTreeMap<String, RawClusterTenant>,
}

impl Default for RawCluster {
    fn default() -> Self {
        Self {
            enabled: false,
            urls: Vec::new(),
            token_env: None,
            credentials_file: None,
            prefix: "fencegate".into(),
            replicas: 1,
            claims: true,
            shared_config: true,
            timeout_ms: 500,
            on_unreachable: OnUnreachable::FailOpen,
            busy_retry_after_ms: 1_000,
            takeover_ms: 5_000,
            results: ResultsFrom::Stream,
            tenants: BTreeMap::new(),
        }
    }
}

/// `[cluster.tenants.<id>]`: one tenant's overrides.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawClusterTenant {
    /// See [`RawCluster::on_unreachable`].
    pub on_unreachable: Option<OnUnreachable>,
}

/// `[cluster]` compiled: only present when enabled.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// NATS servers.
    pub urls: Vec<String>,
    /// Environment variable with a token.
    pub token_env: Option<String>,
    /// `.creds` file.
    pub credentials_file: Option<PathBuf>,
    /// Bucket prefix.
    pub prefix: String,
    /// Bucket replicas.
    pub replicas: usize,
    /// Claims on.
    pub claims: bool,
    /// Shared fences and rules on.
    pub shared_config: bool,
    /// Claim timeout.
    pub timeout: Duration,
    /// The node-wide policy.
    pub on_unreachable: OnUnreachable,
    /// Per-tenant policies that differ from it.
    pub tenants: Vec<(String, OnUnreachable)>,
    /// Busy retry-after.
    pub busy_retry_after_ms: u32,
    /// In-flight take-over age.
    pub takeover_ms: i64,
    /// The stream day results are materialized from; `None` with
    /// `results = "log"`.
    pub results: Option<crate::results::StreamSource>,
}

/// Validates `[cluster]`, reporting problems into `p`; `None` when off.
///
/// `node` is the node's name, `shared_results` whether the results store
/// is PostgreSQL (which nodes share).
pub fn compile(
    raw: &RawCluster,
    tenants: &[String],
    sinks: &[crate::sink::SinkConfig],
    node: &str,
    shared_results: bool,
    p: &mut Vec<String>,
) -> Option<ClusterSettings> {
    for id in raw.tenants.keys() {
        if !tenants.contains(id) {
            p.push(format!(
                "cluster.tenants.{id}: no [[tenants]] block has id {id:?}; add one or remove the override"
            ));
        }
    }
    if !raw.enabled {
        return None;
    }
    let nats_sink = sinks.iter().find_map(|s| match &s.target {
        crate::sink::SinkTarget::Nats(n) => Some((s.name.as_str(), n)),
        _ => None,
    });
    let results = match (raw.results, nats_sink) {
        (ResultsFrom::Log, _) => {
            if shared_results {
                p.push(
                    "cluster.results = \"log\" with a PostgreSQL attendance.results: every node would materialize its own log into the one store, each over the others' position; set cluster.results = \"stream\" (one consumer of the stream every node forwards to) or give each node its own SQLite file".into(),
                );
            }
            None
        }
        (ResultsFrom::Stream, None) => {
            p.push(
                "cluster.results = \"stream\" reads the stream a [[sinks]] block with type = \"nats\" forwards to; add one, or set cluster.results = \"log\" (each node's results cover its own punches)".into(),
            );
            None
        }
        (ResultsFrom::Stream, Some((name, n))) => {
            if n.encoding != crate::sink::config::Encoding::FlatBuffers {
                p.push(format!(
                    "sinks {name:?}: encoding = \"json\", but cluster.results = \"stream\" reads FlatBuffers records from the stream; remove the encoding setting (FlatBuffers) or set cluster.results = \"log\""
                ));
            }
            Some(crate::results::StreamSource::new(
                &n.stream,
                &n.subject_prefix,
                node,
                shared_results,
            ))
        }
    };
    let nats_sink = nats_sink.map(|(_, n)| n);
    let (urls, token_env, credentials_file) = match (raw.urls.is_empty(), nats_sink) {
        (false, _) => (
            raw.urls.clone(),
            raw.token_env.clone(),
            raw.credentials_file.clone(),
        ),
        (true, Some(n)) => (
            n.urls.clone(),
            n.token_env.clone(),
            n.credentials_file.clone(),
        ),
        (true, None) => {
            p.push(
                "cluster.enabled = true needs NATS: set cluster.urls = [\"nats://host:4222\"] or add a [[sinks]] block with type = \"nats\"".into(),
            );
            (Vec::new(), None, None)
        }
    };
    if raw.token_env.is_some() && raw.credentials_file.is_some() {
        p.push("cluster: set at most one of credentials_file or token_env".into());
    }
    if raw.prefix.is_empty()
        || raw.prefix.len() > 32
        || !raw
            .prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        p.push(format!(
            "cluster.prefix = {:?} must be 1 to 32 characters of A-Z, a-z, 0-9, '_' or '-' (it names JetStream buckets)",
            raw.prefix
        ));
    }
    if !(1..=5).contains(&raw.replicas) {
        p.push(format!(
            "cluster.replicas = {} is out of range; use 1 to 5 (3 on a 3-node JetStream cluster)",
            raw.replicas
        ));
    }
    if !(1..=10_000).contains(&raw.timeout_ms) {
        p.push(format!(
            "cluster.timeout_ms = {} is out of range; use 1 to 10000 (default 500)",
            raw.timeout_ms
        ));
    }
    if raw.takeover_ms < 2 * raw.timeout_ms || raw.takeover_ms > 600_000 {
        p.push(format!(
            "cluster.takeover_ms = {} must be at least twice cluster.timeout_ms ({}) and at most 600000, or a live node's punch in flight would be taken over",
            raw.takeover_ms, raw.timeout_ms
        ));
    }
    Some(ClusterSettings {
        urls,
        token_env,
        credentials_file,
        prefix: raw.prefix.clone(),
        replicas: raw.replicas,
        claims: raw.claims,
        shared_config: raw.shared_config,
        timeout: Duration::from_millis(raw.timeout_ms),
        on_unreachable: raw.on_unreachable,
        tenants: raw
            .tenants
            .iter()
            .filter_map(|(id, t)| Some((id.clone(), t.on_unreachable?)))
            .collect(),
        busy_retry_after_ms: raw.busy_retry_after_ms,
        takeover_ms: raw.takeover_ms as i64,
        results,
    })
}

/// Connects to the cluster's NATS servers without waiting for them: the
/// client keeps trying in the background, so a node starts (and answers
/// punches by its unreachable policy) while NATS is down.
pub async fn connect(s: &ClusterSettings, node: &str) -> anyhow::Result<async_nats::Client> {
    let addrs: Vec<async_nats::ServerAddr> = s
        .urls
        .iter()
        .map(|u| {
            u.parse()
                .map_err(|e| anyhow::anyhow!("cluster: NATS url {u:?}: {e}"))
        })
        .collect::<anyhow::Result<_>>()?;
    let mut opts = async_nats::ConnectOptions::new()
        .name(format!("fencegate {node} cluster"))
        .retry_on_initial_connect()
        .connection_timeout(s.timeout.max(Duration::from_secs(1)))
        .request_timeout(Some(s.timeout.max(Duration::from_secs(1))))
        .reconnect_delay_callback(|n| {
            Duration::from_millis((n as u64).saturating_mul(100).min(2_000))
        });
    if let Some(var) = &s.token_env {
        let t = std::env::var(var)
            .map_err(|_| anyhow::anyhow!("cluster: environment variable {var} is not set"))?;
        opts = opts.token(t);
    }
    if let Some(f) = &s.credentials_file {
        let c = std::fs::read_to_string(f).map_err(|e| {
            anyhow::anyhow!(
                "cluster: credentials_file {}: cannot read it: {e}",
                f.display()
            )
        })?;
        opts = opts
            .credentials(&c)
            .map_err(|e| anyhow::anyhow!("cluster: credentials_file {}: {e}", f.display()))?;
    }
    opts.connect(addrs)
        .await
        .map_err(|e| anyhow::anyhow!("cluster: NATS {}: {e}", s.urls.join(",")))
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const TENANTS: &str = "[[tenants]]\nid = \"acme\"\n[[tenants]]\nid = \"globex\"\n";

    #[test]
    fn the_commented_example_in_the_sample_config_compiles() {
        let text = include_str!("../../../config/fencegate.toml");
        let from = text.find("# [cluster]\n").expect("the [cluster] example");
        let to = text[from..].find("\n\n").map_or(text.len(), |n| from + n);
        let example: String = text[from..to]
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| l.starts_with('[') || l.contains(" = "))
            .map(|l| format!("{l}\n"))
            .collect();
        let sink = "[[sinks]]\nname = \"js\"\ntype = \"nats\"\nurl = \"nats://n1:4222\"\n";
        let cfg = Config::parse(&format!("{TENANTS}{sink}{example}"), "sample").unwrap();
        let c = cfg.cluster.expect("enabled in the example");
        assert_eq!(c.replicas, 3);
        assert_eq!(c.tenants, [("acme".to_owned(), super::OnUnreachable::Busy)]);
    }

    #[test]
    fn off_by_default_and_errors_name_the_setting_and_fix() {
        assert!(Config::parse(TENANTS, "t").unwrap().cluster.is_none());
        // Enabled without NATS anywhere.
        let e = Config::parse(&format!("{TENANTS}[cluster]\nenabled = true\n"), "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("cluster.urls"), "{e}");
        // The first NATS sink's servers are used.
        let c = Config::parse(
            &format!(
                "{TENANTS}[cluster]\nenabled = true\n[[sinks]]\nname = \"js\"\ntype = \"nats\"\nurl = \"nats://a:4222,nats://b:4222\"\n"
            ),
            "t",
        )
        .unwrap()
        .cluster
        .unwrap();
        assert_eq!(c.urls.len(), 2);
        let e = Config::parse(
            &format!(
                "{TENANTS}[cluster]\nenabled = true\nurls = [\"nats://a:4222\"]\ntimeout_ms = 20000\ntakeover_ms = 10\nprefix = \"a.b\"\n[cluster.tenants.initech]\non_unreachable = \"busy\"\n"
            ),
            "t",
        )
        .unwrap_err()
        .to_string();
        for needle in [
            "timeout_ms",
            "takeover_ms",
            "cluster.prefix",
            "cluster.tenants.initech",
        ] {
            assert!(e.contains(needle), "missing {needle}: {e}");
        }
    }
}
