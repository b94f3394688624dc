//! `fencegate health`: ask a running node's admin API whether it is alive
//! (`/healthz`) or ready (`/readyz`), and exit 0 or 1. Container health
//! checks and scripts use it where no HTTP client is installed (the runtime
//! image holds only the binary).

use std::net::{SocketAddr, ToSocketAddrs as _};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

use crate::config::Config;

/// Arguments of `fencegate health`.
#[derive(Debug, clap::Args)]
pub struct HealthArgs {
    /// Configuration file whose `admin.listen` to ask (embedded defaults if
    /// omitted and no --admin is given).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The admin address to ask, `host:port` (overrides --config).
    #[arg(long)]
    pub admin: Option<String>,
    /// Ask `/readyz` (log writable, sinks keeping up) instead of `/healthz`
    /// (the process answers).
    #[arg(long)]
    pub ready: bool,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 3)]
    pub timeout_s: u64,
}

/// Asks the node; `Ok(true)` when it answered 200, `Ok(false)` on any other
/// status, an error when it could not be asked at all.
pub fn health(args: &HealthArgs) -> anyhow::Result<bool> {
    let addr = match &args.admin {
        Some(a) => a.clone(),
        None => {
            let cfg = match &args.config {
                Some(p) => Config::load(p)?,
                None => Config::embedded_defaults(),
            };
            cfg.admin_listen.to_string()
        }
    };
    let path = if args.ready { "/readyz" } else { "/healthz" };
    let status = get_status(&addr, path, Duration::from_secs(args.timeout_s.max(1)))?;
    println!("{path} on {addr}: HTTP {status}");
    Ok(status == 200)
}

/// One GET with reqwest (already the webhook sink's client) on a
/// current-thread runtime; returns the status code.
fn get_status(addr: &str, path: &str, timeout: Duration) -> anyhow::Result<u16> {
    let sock: SocketAddr = addr
        .to_socket_addrs()
        .with_context(|| {
            format!("admin address {addr:?}: write it as host:port, e.g. 127.0.0.1:9464")
        })?
        .next()
        .with_context(|| format!("admin address {addr:?} resolves to nothing"))?;
    // An unspecified listen address (0.0.0.0) is reached on loopback.
    let sock = if sock.ip().is_unspecified() {
        let ip: std::net::IpAddr = if sock.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        SocketAddr::new(ip, sock.port())
    } else {
        sock
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = reqwest::Client::builder().timeout(timeout).build()?;
        let answer = client
            .get(format!("http://{sock}{path}"))
            .send()
            .await
            .with_context(|| {
                format!(
                    "cannot reach the admin API at {sock}: is the node running, and is admin.listen {addr}?"
                )
            })?;
        Ok(answer.status().as_u16())
    })
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};

    use super::*;

    /// A one-shot server answering `status_line`; returns its address.
    fn answer_once(status_line: &'static str) -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut buf = [0u8; 256];
            let _ = c.read(&mut buf);
            let _ = c.write_all(status_line.as_bytes());
        });
        addr
    }

    fn args(admin: String, ready: bool) -> HealthArgs {
        HealthArgs {
            config: None,
            admin: Some(admin),
            ready,
            timeout_s: 2,
        }
    }

    #[test]
    fn ok_only_on_200() {
        assert!(health(&args(answer_once("HTTP/1.1 200 OK\r\n\r\nok"), false)).unwrap());
        assert!(
            !health(&args(
                answer_once("HTTP/1.1 503 Service Unavailable\r\n\r\n"),
                true
            ))
            .unwrap()
        );
    }

    #[test]
    fn unreachable_is_an_error_naming_the_address() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = health(&args(format!("127.0.0.1:{port}"), false)).unwrap_err();
        assert!(
            format!("{err:#}").contains("cannot reach the admin API"),
            "{err:#}"
        );
    }
}
