//! What the multi-node process tests share: node `i`'s config file (its own
//! data dir, the tenant key every node shares, a NATS sink and `[cluster]`
//! on the given servers) and that key.

#![allow(
    dead_code,
    reason = "each multi-node test binary uses a different part of the rig"
)]

use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

/// Node `i`'s folder under `dir`, with the test fences written in it.
pub fn node_dir(dir: &Path, i: usize) -> PathBuf {
    let d = dir.join(format!("node{i}"));
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("fences.geojson"), crate::common::FENCES).unwrap();
    d
}

/// Writes node `i`'s `fencegate.toml` and returns its path: listeners on
/// free loopback ports, tenant `acme` with `key`, a NATS sink and
/// `[cluster]` (replicas 3) on `nats_urls`, then `extra` (more tables,
/// such as `[attendance]` or `[[admin.tokens]]`).
pub fn write_config(dir: &Path, i: usize, key: &Path, nats_urls: &str, extra: &str) -> PathBuf {
    let d = node_dir(dir, i);
    let cfg = format!(
        r#"
[node]
name = "gw-{i}"
data_dir = "{d}/data"
[quic]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[fences]
path = "{d}/fences.geojson"
[[tenants]]
id = "acme"
key_file = "{key}"
[[sinks]]
name = "js"
type = "nats"
url = "{nats_urls}"
replicas = 3
timeout_ms = 2000
retry_initial_ms = 50
retry_max_ms = 500
[cluster]
enabled = true
replicas = 3
{extra}
"#,
        d = d.display(),
        key = key.display(),
    );
    let path = d.join("fencegate.toml");
    std::fs::write(&path, cfg).unwrap();
    path
}

/// acme's device-token key, shared by every node.
pub fn write_key(dir: &Path) -> PathBuf {
    let key = dir.join("acme.key");
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key)
        .and_then(|mut f| std::io::Write::write_all(&mut f, "5a".repeat(32).as_bytes()))
        .unwrap();
    key
}
