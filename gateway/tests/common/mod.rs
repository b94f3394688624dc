//! A gateway node on loopback with its own temporary data dir, for the
//! end-to-end tests.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the rig"
)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use fencegate::client::{Client, Connector};
use fencegate::config::{Config, RawConfig, RawTenant};
use fencegate::edge::tls::Trust;
use fencegate::log::{LogReader, Lsn};
use fencegate::serve::Running;
use fencegate_schema::{
    Position, PunchKind, PunchMethod, PunchMsg, RecordMsg, TerminalAuth, parse_record,
};

/// acme's 200 m circle at People's Square, Shanghai; globex's 300 m circle 2 km east.
pub const HQ: (f64, f64) = (31.2304, 121.4737);
pub const GLOBEX: (f64, f64) = (31.2304, 121.4947);

pub const FENCES: &str = r#"{"type":"FeatureCollection","features":[
 {"type":"Feature","geometry":{"type":"Point","coordinates":[121.4737,31.2304]},"properties":{"id":"hq-north","tenant":"acme","site":"sh","radius_m":200}},
 {"type":"Feature","geometry":{"type":"Point","coordinates":[121.4947,31.2304]},"properties":{"id":"globex-1","tenant":"globex","radius_m":300}}
]}"#;

pub fn config(dir: &Path) -> Config {
    std::fs::write(dir.join("fences.geojson"), FENCES).unwrap();
    let mut raw = RawConfig::default();
    raw.node.data_dir = dir.join("data");
    raw.quic.listen = "127.0.0.1:0".into();
    raw.admin.listen = "127.0.0.1:0".into();
    raw.fences.path = dir.join("fences.geojson");
    raw.tenants = ["acme", "globex"]
        .into_iter()
        .map(|id| RawTenant {
            id: id.into(),
            key_file: None,
        })
        .collect();
    Config::compile(raw, "test").unwrap()
}

pub struct Node {
    pub dir: tempfile::TempDir,
    pub cfg: Config,
    pub running: Running,
    pub connector: Connector,
}

impl Node {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        Self::start_with(dir, cfg).await
    }

    pub async fn start_with(dir: tempfile::TempDir, cfg: Config) -> Self {
        let running = fencegate::serve::start(&cfg).await.unwrap();
        let connector = Connector::new(
            running.quic_addr,
            "localhost",
            Trust::Pinned(running.fingerprint.clone()),
            true,
        )
        .unwrap();
        Self {
            dir,
            cfg,
            running,
            connector,
        }
    }

    pub fn token(&self, tenant: &str, device: &str) -> String {
        let ring = fencegate::serve::keyring(&self.cfg).unwrap();
        ring.issue(tenant, device, now_ms() / 1000 + 3600).unwrap()
    }

    pub async fn client(&self, tenant: &str, device: &str) -> Client {
        self.connector
            .connect(&self.token(tenant, device), device)
            .await
            .unwrap()
    }

    pub fn log_dir(&self) -> PathBuf {
        self.cfg.log.dir.clone()
    }

    /// Every record committed so far.
    pub fn records(&self) -> Vec<RecordMsg> {
        read_records(&self.log_dir())
    }

    /// Waits until at least `n` records are committed (datagrams are async).
    pub async fn wait_records(&self, n: usize) -> Vec<RecordMsg> {
        for _ in 0..100 {
            let r = self.records();
            if r.len() >= n {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.records()
    }
}

/// Starts a 0-RTT connection as soon as the connector holds a ticket
/// allowing early data. A ticket arrives after the handshake that issues
/// it completes, so keep that connection open until this returns; waits up
/// to 5 s (a loaded CI machine) instead of guessing a sleep.
pub async fn connect_0rtt(node: &Node) -> (Client, quinn::ZeroRttAccepted) {
    for _ in 0..250 {
        if let Ok(started) = node.connector.connect_0rtt() {
            return started;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no session ticket allowing 0-RTT from the gateway within 5 s");
}

pub fn read_records(dir: &Path) -> Vec<RecordMsg> {
    let mut reader = LogReader::open_dir(dir, Lsn(0), Duration::from_millis(10)).unwrap();
    let mut out = Vec::new();
    while let Some(e) = reader.next_entry().unwrap() {
        out.push(parse_record(e.payload).unwrap().to_msg());
    }
    out
}

pub fn now_ms() -> i64 {
    fencegate::clock::unix_ms()
}

pub fn punch(id: u128, employee: &str, at: (f64, f64)) -> PunchMsg {
    PunchMsg {
        punch_id: id.to_be_bytes(),
        employee_id: employee.into(),
        kind: PunchKind::In,
        method: PunchMethod::Gps,
        device_time_ms: now_ms(),
        position: Some(Position::new(at.0, at.1, 8.0)),
        bssids: vec![],
        ssid: None,
        qr_payload: None,
        terminal_auth: TerminalAuth::None,
        offline: false,
        mock_location: false,
    }
}

/// The body of a `Transfer-Encoding: chunked` HTTP/1.1 answer (the admin
/// API streams records answers), for the tests' minimal HTTP clients.
pub fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
    out
}

/// The real `fencegate serve`, started by a test, with what its banner
/// said.
pub struct Served {
    pub child: std::process::Child,
    pub quic: std::net::SocketAddr,
    pub admin: std::net::SocketAddr,
    pub fingerprint: String,
}

/// Starts the binary with `config` and reads its addresses and certificate
/// fingerprint from the banner, printed once every lane is up; stderr is
/// drained afterwards so the child never blocks on a full pipe.
pub fn serve_binary(config: &Path) -> Served {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_fencegate"))
        .args(["serve", "--config"])
        .arg(config)
        .env("FENCEGATE_LOG", "warn")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (mut quic, mut admin, mut fp) = (None, None, None);
    for line in lines.by_ref() {
        let line = line.unwrap();
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("QUIC") {
            quic = rest.split_whitespace().next().map(|a| a.parse().unwrap());
        }
        if let Some(rest) = t.strip_prefix("admin  http://") {
            admin = Some(rest.trim().parse().unwrap());
        }
        if let Some(rest) = t.strip_prefix("certificate SHA-256 ") {
            fp = Some(rest.trim().to_owned());
        }
        if line.starts_with("Issue a device token") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Served {
        child,
        quic: quic.expect("banner names the QUIC address"),
        admin: admin.expect("banner names the admin address"),
        fingerprint: fp.expect("banner names the fingerprint"),
    }
}
