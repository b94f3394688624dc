//! Test support shared by the gateway's tests, the benches and the load
//! harness's tests: one way to start a real `nats-server -js` on a free
//! loopback port with its own store, and to stop, kill and restart it; a
//! 3-node JetStream cluster of them ([`NatsCluster`]); and `fencegate serve`
//! processes ([`GatewayProcess`]) for multi-node tests.
//! Before this crate each of those carried its own copy, and the copies had
//! drifted (different readiness waits, one without the install hint).

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A free TCP port on 127.0.0.1 (bound, read, released). Another process
/// may take it before the caller binds it; tests accept that small race.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0 for a free port")
}

/// The `nats-server` binary: on `PATH`, or where Debian's package puts it
/// (`/usr/sbin`, which is not on a normal user's `PATH`).
///
/// # Panics
/// When it is not installed, with the command that installs it.
pub fn nats_server_binary() -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    for dir in path
        .split(':')
        .chain(["/usr/sbin", "/usr/bin", "/usr/local/bin"])
    {
        let p = Path::new(dir).join("nats-server");
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "nats-server is not installed: the JetStream tests and benches need it. Run the tests \
         with `bash .ci/test` (it installs Debian's nats-server) or `apt-get install nats-server`"
    );
}

/// A `nats-server -js` child process on 127.0.0.1 with its store in a
/// folder the caller owns. Dropping it kills the server.
pub struct NatsServer {
    /// The client port.
    pub port: u16,
    /// The JetStream store folder (`-sd`).
    pub store: PathBuf,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a server with its JetStream store in `store` and waits until
    /// it accepts connections.
    ///
    /// # Panics
    /// When the binary is missing or the server does not listen within 5 s.
    pub fn start(store: &Path) -> Self {
        // Port 0 until the first start: the server picks a free one itself
        // (`-p -1`) and names it in its ports file. A port picked here and
        // passed on could be taken by another test's server in between;
        // the readiness probe then reached that server, and this test
        // failed with "connection refused" once it stopped.
        let mut s = Self {
            port: 0,
            store: store.to_owned(),
            child: None,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "nats-server is already running");
        // A restart keeps its port (clients reconnect to it).
        let port = if self.port == 0 {
            "-1".to_owned()
        } else {
            self.port.to_string()
        };
        let ports_dir = self.store.join("ports");
        let _ = std::fs::remove_dir_all(&ports_dir);
        std::fs::create_dir_all(&ports_dir).expect("create the ports file folder");
        let child = Command::new(nats_server_binary())
            .args(["-js", "-a", "127.0.0.1", "-p", &port])
            .arg("--ports_file_dir")
            .arg(&ports_dir)
            .arg("-sd")
            .arg(&self.store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        // Ready once its ports file names the client port (written when it
        // listens) and that port accepts TCP (the store may take a moment
        // to recover after a kill).
        for _ in 0..200 {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("nats-server exited at start: {status}");
            }
            if let Some(port) = listed_port(&ports_dir) {
                self.port = port;
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!(
            "nats-server did not listen on 127.0.0.1:{} within 5 s",
            self.port
        );
    }

    /// The client URL, `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The server's process id while it runs (benches read its CPU time
    /// from `/proc/<pid>/stat`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the server gracefully (SIGTERM) and waits for it to exit
    /// (SIGKILL after 5 s).
    pub fn stop(&mut self) {
        if let Some(c) = self.child.take() {
            terminate(c, Duration::from_secs(5));
        }
    }

    /// Kills the server without warning (SIGKILL), like a power cut of its
    /// process.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port with the same store.
    pub fn restart(&mut self) {
        self.spawn();
    }
}

/// The client port a `nats-server` names in its ports file in `dir`
/// (`{"nats":["nats://127.0.0.1:PORT"]}`), once written.
fn listed_port(dir: &Path) -> Option<u16> {
    listed(dir, "nats")
}

/// The port of the first URL under `key` (`nats`, `monitoring`,
/// `cluster`) in the ports file a `nats-server` wrote in `dir`, once
/// written.
fn listed(dir: &Path, key: &str) -> Option<u16> {
    std::fs::read_dir(dir).ok()?.flatten().find_map(|entry| {
        let text = std::fs::read_to_string(entry.path()).ok()?;
        let at = text.find(&format!("\"{key}\":[\""))?;
        let url = &text[at..];
        let host = &url[url.find("://")? + "://".len()..];
        let port: String = host
            .split(':')
            .nth(1)?
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        port.parse().ok()
    })
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends `c` SIGTERM and waits up to `within` for it to exit, then kills it.
fn terminate(mut c: Child, within: Duration) {
    // Our child is not reaped yet, so its pid cannot have been reused.
    let _ = Command::new("kill")
        .args(["-TERM", &c.id().to_string()])
        .status();
    let step = Duration::from_millis(25);
    for _ in 0..(within.as_millis() / step.as_millis()).max(1) {
        if matches!(c.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(step);
    }
    let _ = c.kill();
    let _ = c.wait();
}

/// Where a cluster node started from `config` writes its log.
fn node_log(config: &Path) -> PathBuf {
    config.with_file_name("nats-server.log")
}

/// The last `n` lines of the log of the cluster node started from `config`.
fn log_tail(config: &Path, n: usize) -> Vec<String> {
    let log = std::fs::read_to_string(node_log(config)).unwrap_or_default();
    let mut tail: Vec<String> = log.lines().rev().take(n).map(str::to_owned).collect();
    tail.reverse();
    tail
}

/// One node of a [`NatsCluster`]: a server started from its own config file.
struct ClusterNode {
    dir: PathBuf,
    config: PathBuf,
    /// Client and monitoring ports: 0 until the node's first start names
    /// them in its ports file (it picks them itself), then kept for
    /// restarts.
    port: u16,
    monitor: u16,
    /// The route port, picked here: every node's config lists every route.
    route: u16,
    child: Option<Child>,
}

/// A JetStream cluster of `n` `nats-server` processes on loopback (routes
/// between them on free ports), each with its own store. Dropping it kills
/// every node.
pub struct NatsCluster {
    nodes: Vec<ClusterNode>,
}

/// How many times [`NatsCluster::start`] picks fresh route ports when a
/// node could not bind the one it was given.
const CLUSTER_START_TRIES: usize = 3;

impl NatsCluster {
    /// Starts `n` (3 or more for replicated streams) clustered servers under
    /// `dir` and waits until every one reports JetStream healthy (a meta
    /// leader elected, its stores current).
    ///
    /// Each node picks its own client and monitoring ports (`-1`) and names
    /// them in its ports file: a port picked here and released could be
    /// taken by another test's server before this one binds it, and a
    /// health probe would then reach that server. Route ports cannot be
    /// left to the nodes (a JetStream cluster needs its routes in every
    /// config), so they are picked here; a node that cannot bind its route
    /// exits at once, and the cluster starts again on fresh ones.
    ///
    /// # Panics
    /// When the binary is missing, no start binds its ports in
    /// [`CLUSTER_START_TRIES`] tries, or the cluster is not healthy within
    /// 45 s.
    pub fn start(dir: &Path, n: usize) -> Self {
        Self::start_with(dir, n, free_port)
    }

    /// [`start`](Self::start) with route ports from `pick` (a test hands
    /// out a taken one first).
    fn start_with(dir: &Path, n: usize, mut pick: impl FnMut() -> u16) -> Self {
        let mut failures = Vec::new();
        for attempt in 0..CLUSTER_START_TRIES {
            let mut c = Self::configure(&dir.join(format!("try{attempt}")), n, &mut pick);
            for i in 0..n {
                c.spawn(i);
            }
            // Three servers electing a meta leader on a loaded 2-core CI
            // machine took longer than 20 s once (2026-12-03).
            match (0..n).try_for_each(|i| c.wait_ready(i, Duration::from_secs(45))) {
                Ok(()) => {
                    // Restarts reuse the ports the nodes picked.
                    for i in 0..n {
                        c.write_config(i);
                    }
                    return c;
                }
                Err(e) => failures.push(e),
            }
            // Drop kills the nodes of the failed try.
        }
        panic!(
            "a {n}-node nats-server cluster did not start in {CLUSTER_START_TRIES} tries:\n{}",
            failures.join("\n")
        );
    }

    /// Nodes with fresh route ports and their config files under `dir`,
    /// none started.
    fn configure(dir: &Path, n: usize, pick: &mut impl FnMut() -> u16) -> Self {
        let nodes = (0..n)
            .map(|i| {
                let node_dir = dir.join(format!("n{i}"));
                std::fs::create_dir_all(&node_dir).expect("create the node's folder");
                ClusterNode {
                    config: node_dir.join("nats-server.conf"),
                    dir: node_dir,
                    port: 0,
                    monitor: 0,
                    route: pick(),
                    child: None,
                }
            })
            .collect();
        let c = Self { nodes };
        for i in 0..n {
            c.write_config(i);
        }
        c
    }

    /// Writes node `i`'s config: its ports (`-1` where not known yet),
    /// every node's route, its store and its ports file folder.
    fn write_config(&self, i: usize) {
        let routes = self
            .nodes
            .iter()
            .map(|n| format!("nats-route://127.0.0.1:{}", n.route))
            .collect::<Vec<_>>()
            .join(", ");
        let node = &self.nodes[i];
        let or_any = |p: u16| {
            if p == 0 {
                "-1".to_owned()
            } else {
                p.to_string()
            }
        };
        std::fs::write(
            &node.config,
            format!(
                "server_name: n{i}\nlisten: 127.0.0.1:{port}\nhttp: 127.0.0.1:{monitor}\n\
                 ports_file_dir: \"{ports}\"\n\
                 jetstream {{ store_dir: \"{store}\" }}\n\
                 cluster {{ name: fencegate-test, listen: 127.0.0.1:{route}, routes: [{routes}] }}\n",
                port = or_any(node.port),
                monitor = or_any(node.monitor),
                route = node.route,
                ports = node.dir.join("ports").display(),
                store = node.dir.join("js").display(),
            ),
        )
        .expect("write the node's config");
    }

    fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        assert!(node.child.is_none(), "node n{i} is already running");
        let ports = node.dir.join("ports");
        let _ = std::fs::remove_dir_all(&ports);
        std::fs::create_dir_all(&ports).expect("create the ports file folder");
        // The server's own log, appended across restarts: what a test
        // that finds a node unhealthy shows (a port taken meanwhile, a
        // slow election).
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node_log(&node.config))
            .expect("open the node's log");
        node.child = Some(
            Command::new(nats_server_binary())
                .arg("-c")
                .arg(&node.config)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("nats-server starts"),
        );
    }

    /// Waits until node `i` names its client and monitoring ports in its
    /// ports file, records them, and waits until it answers `/healthz`
    /// with 200. An error, with the end of its log, when it exits first (a
    /// route port taken: the server may name its client port before it
    /// fails to bind its route) or is not healthy within `within`.
    fn wait_ready(&mut self, i: usize, within: Duration) -> Result<(), String> {
        let ports = self.nodes[i].dir.join("ports");
        let step = Duration::from_millis(25);
        for _ in 0..(within.as_millis() / step.as_millis()).max(1) {
            let node = &mut self.nodes[i];
            if let Some(c) = node.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                node.child = None;
                return Err(format!(
                    "node n{i} exited at start ({status}): {}",
                    log_tail(&node.config, 5).join(" | ")
                ));
            }
            if node.monitor == 0
                && let (Some(port), Some(monitor)) =
                    (listed(&ports, "nats"), listed(&ports, "monitoring"))
            {
                node.port = port;
                node.monitor = monitor;
            }
            if node.monitor != 0 && http_status(node.monitor, "/healthz") == Some(200) {
                return Ok(());
            }
            std::thread::sleep(step);
        }
        Err(format!(
            "node n{i} was not healthy within {within:?}: {}",
            log_tail(&self.nodes[i].config, 30).join("\n")
        ))
    }

    /// Waits until node `i` answers `/healthz` with 200 (JetStream ready).
    ///
    /// # Panics
    /// When it does not within `within`.
    pub fn wait_healthy(&self, i: usize, within: Duration) {
        let deadline = std::time::Duration::from_millis(50);
        let tries = (within.as_millis() / deadline.as_millis()).max(1);
        for _ in 0..tries {
            if http_status(self.nodes[i].monitor, "/healthz") == Some(200) {
                return;
            }
            std::thread::sleep(deadline);
        }
        panic!(
            "nats-server n{i} was not healthy within {within:?}; the end of its log:\n{}",
            log_tail(&self.nodes[i].config, 30).join("\n")
        );
    }

    /// The client URLs of every node, comma-separated (what a client or a
    /// fencegate sink `url` takes for a cluster).
    pub fn urls(&self) -> String {
        (0..self.nodes.len())
            .map(|i| self.url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The client URL of node `i`.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].port)
    }

    /// Kills node `i` without warning (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts node `i` again with its store and waits until it is healthy.
    pub fn restart(&mut self, i: usize) {
        self.spawn(i);
        self.wait_healthy(i, Duration::from_secs(20));
    }

    /// Stops node `i` gracefully (SIGTERM: it flushes its store first) and
    /// waits for it, killing it after 10 s.
    pub fn stop(&mut self, i: usize) {
        if let Some(c) = self.nodes[i].child.take() {
            terminate(c, Duration::from_secs(10));
        }
    }

    /// Starts every node that is not running, all at once, and waits until
    /// each is healthy. A cluster that was wholly down needs this: one node
    /// restarted alone waits for a quorum that is not back yet.
    ///
    /// # Panics
    /// When a node is not healthy within 30 s.
    pub fn start_stopped(&mut self) {
        let stopped: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].child.is_none())
            .collect();
        for &i in &stopped {
            self.spawn(i);
        }
        for &i in &stopped {
            self.wait_healthy(i, Duration::from_secs(30));
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// The status code of `GET path` on 127.0.0.1:`port`, or `None` when
/// nothing answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut head = [0u8; 32];
    let n = s.read(&mut head).ok()?;
    std::str::from_utf8(&head[..n])
        .ok()?
        .split(' ')
        .nth(1)?
        .parse()
        .ok()
}

/// The folder of PostgreSQL's server programs (`initdb`, `postgres`):
/// Debian keeps them in `/usr/lib/postgresql/<major>/bin`, off `PATH`.
///
/// # Panics
/// When no server is installed, with the command that installs it.
pub fn postgres_bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").is_file())
        .collect();
    // The newest major version first.
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop().unwrap_or_else(|| {
        panic!(
            "PostgreSQL is not installed: the PostgreSQL tests need it. Run the tests with \
             `bash .ci/test` (it installs Debian's postgresql) or `apt-get install postgresql`"
        )
    })
}

/// A throwaway PostgreSQL server: its own cluster in a folder the caller
/// owns, on a free loopback port, trust authentication for the `postgres`
/// role, no fsync (a test database need not survive a power cut). Stopped
/// (fast shutdown) when dropped.
///
/// PostgreSQL refuses to run as root; when the tests run as root the server
/// runs as the `postgres` system user (Debian's package creates it), and
/// the folder is handed to that user.
pub struct Postgres {
    /// The port on 127.0.0.1.
    pub port: u16,
    data: PathBuf,
    bin: PathBuf,
    as_user: Option<&'static str>,
    child: Option<Child>,
}

impl Postgres {
    /// `initdb` a cluster in `dir` and start it; returns once it accepts
    /// connections.
    ///
    /// # Panics
    /// When PostgreSQL is missing or does not start within 20 s.
    pub fn start(dir: &Path) -> Self {
        let bin = postgres_bin_dir();
        let data = dir.join("pgdata");
        let as_root = std::env::var("USER").map(|u| u == "root").unwrap_or(false)
            || std::fs::metadata("/proc/self")
                .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
                .unwrap_or(false);
        let as_user = as_root.then_some("postgres");
        std::fs::create_dir_all(dir).expect("create the PostgreSQL folder");
        if let Some(u) = as_user {
            let ok = Command::new("chown")
                .args(["-R", &format!("{u}:{u}")])
                .arg(dir)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chown {} to {u}", dir.display());
        }
        let run = |cmd: &Path| -> Command {
            match as_user {
                Some(u) => {
                    let mut c = Command::new("runuser");
                    c.args(["-u", u, "--"]).arg(cmd);
                    c
                }
                None => Command::new(cmd),
            }
        };
        let out = run(&bin.join("initdb"))
            .args(["-D"])
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"])
            .output()
            .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let child = run(&bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-k", ""])
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=50"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("postgres starts");
        let mut pg = Self {
            port,
            data,
            bin,
            as_user,
            child: Some(child),
        };
        for _ in 0..400 {
            if pg.ready() {
                return pg;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        pg.stop();
        panic!("PostgreSQL did not accept connections on 127.0.0.1:{port} within 20 s");
    }

    /// Whether the server accepts connections (`pg_isready`).
    fn ready(&self) -> bool {
        Command::new(self.bin.join("pg_isready"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
            .status()
            .is_ok_and(|s| s.success())
    }

    /// A connection URL for the `postgres` database and role.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Creates the database `name` and returns its connection URL: for a
    /// test that needs two stores side by side (an oracle and the store
    /// under test) on one server.
    ///
    /// # Panics
    /// When `createdb` fails (the name exists, the server is down).
    pub fn database(&self, name: &str) -> String {
        let out = Command::new(self.bin.join("createdb"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", name])
            .output()
            .expect("createdb runs");
        assert!(
            out.status.success(),
            "createdb {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Stops the server (fast shutdown) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let mut cmd = match self.as_user {
                Some(u) => {
                    let mut c = Command::new("runuser");
                    c.args(["-u", u, "--"]).arg(self.bin.join("pg_ctl"));
                    c
                }
                None => Command::new(self.bin.join("pg_ctl")),
            };
            let stopped = cmd
                .arg("-D")
                .arg(&self.data)
                .args(["stop", "-m", "fast", "-w", "-t", "10"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !stopped {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A `fencegate serve` process, started from a config file, with the
/// addresses and certificate fingerprint its start-up banner prints.
/// Dropping it kills the process.
pub struct GatewayProcess {
    child: Option<Child>,
    /// The QUIC address devices connect to.
    pub quic: SocketAddr,
    /// The admin API address.
    pub admin: SocketAddr,
    /// The served certificate's SHA-256 fingerprint (hex), for pinning.
    pub fingerprint: String,
}

impl GatewayProcess {
    /// Starts `bin serve --config config` (with `env` added) and reads the
    /// banner. Tests pass `env!("CARGO_BIN_EXE_fencegate")` as `bin`.
    ///
    /// # Panics
    /// When the process exits before printing its banner.
    pub fn spawn(bin: &Path, config: &Path, env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(bin);
        cmd.args(["serve", "--config"])
            .arg(config)
            .env("FENCEGATE_LOG", "warn")
            .stderr(Stdio::piped())
            .stdout(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("fencegate serve starts");
        let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
        let (mut quic, mut admin, mut fp) = (None, None, None);
        let mut seen = Vec::new();
        for line in lines.by_ref() {
            let line = line.expect("banner is UTF-8");
            let t = line.trim();
            if let Some(rest) = t.strip_prefix("QUIC") {
                quic = rest.split_whitespace().next().and_then(|a| a.parse().ok());
            }
            if let Some(rest) = t.strip_prefix("admin  http://") {
                admin = rest.trim().parse().ok();
            }
            if let Some(rest) = t.strip_prefix("certificate SHA-256 ") {
                fp = Some(rest.trim().to_owned());
            }
            if line.starts_with("Issue a device token") {
                break;
            }
            seen.push(line);
        }
        // Keep draining stderr so the process never blocks on a full pipe.
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                if std::env::var_os("FG_DEBUG_GW").is_some() {
                    eprintln!("gw: {l}");
                }
            }
        });
        let (Some(quic), Some(admin), Some(fingerprint)) = (quic, admin, fp) else {
            let _ = child.kill();
            panic!(
                "fencegate serve --config {} did not print its banner:\n{}",
                config.display(),
                seen.join("\n")
            );
        };
        Self {
            child: Some(child),
            quic,
            admin,
            fingerprint,
        }
    }

    /// Kills the process without warning (SIGKILL), like a crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops it gracefully (SIGTERM: the drain) and waits up to 30 s.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            for _ in 0..1200 {
                if matches!(c.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three clustered nodes come up healthy; one killed and restarted
    /// comes back healthy.
    #[test]
    fn a_three_node_cluster_survives_a_node_kill() {
        let dir = std::env::temp_dir().join(format!("fg-testkit-cluster-{}", std::process::id()));
        let mut c = NatsCluster::start(&dir, 3);
        assert_eq!(c.urls().split(',').count(), 3);
        c.kill(1);
        assert!(http_status(c.nodes[1].monitor, "/healthz").is_none());
        c.restart(1);
        // The whole cluster stopped, then started together.
        for i in 0..3 {
            c.stop(i);
        }
        assert!((0..3).all(|i| http_status(c.nodes[i].monitor, "/healthz").is_none()));
        c.start_stopped();
        assert!((0..3).all(|i| http_status(c.nodes[i].monitor, "/healthz") == Some(200)));
        drop(c);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A route port another process holds makes its node exit at start;
    /// the cluster starts again on fresh ports instead of failing (or
    /// probing someone else's server). Red without the retry: the first
    /// try's node never names its ports.
    #[test]
    fn a_taken_route_port_is_retried_on_fresh_ports() {
        let dir = std::env::temp_dir().join(format!("fg-testkit-taken-{}", std::process::id()));
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken_port = taken.local_addr().unwrap().port();
        let mut first = true;
        let c = NatsCluster::start_with(&dir, 3, || {
            if std::mem::take(&mut first) {
                taken_port
            } else {
                free_port()
            }
        });
        assert!((0..3).all(|i| http_status(c.nodes[i].monitor, "/healthz") == Some(200)));
        assert!(c.nodes.iter().all(|n| n.route != taken_port));
        let log = std::fs::read_to_string(dir.join("try0/n0/nats-server.log")).unwrap();
        assert!(log.contains(&taken_port.to_string()), "{log}");
        drop(c);
        drop(taken);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A throwaway PostgreSQL accepts connections, and its port closes
    /// when it is dropped.
    #[test]
    fn postgres_starts_and_stops() {
        let dir = std::env::temp_dir().join(format!("fg-testkit-pg-{}", std::process::id()));
        let pg = Postgres::start(&dir);
        let port = pg.port;
        assert!(pg.url().ends_with("/postgres"));
        assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
        let out = Command::new(postgres_bin_dir().join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "postgres",
                "-tAc",
                "select 6*7",
            ])
            .output();
        // psql lives in /usr/bin on Debian, not beside the server programs.
        let out = match out {
            Ok(o) => o,
            Err(_) => Command::new("psql")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-U",
                    "postgres",
                    "-tAc",
                    "select 6*7",
                ])
                .output()
                .expect("psql runs"),
        };
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
        drop(pg);
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Start, stop (the port closes), restart on the same port, kill.
    #[test]
    fn starts_stops_and_restarts_on_the_same_port() {
        let dir = std::env::temp_dir().join(format!("fg-testkit-{}", std::process::id()));
        let mut s = NatsServer::start(&dir);
        assert!(TcpStream::connect(("127.0.0.1", s.port)).is_ok());
        assert!(s.pid().is_some());
        s.stop();
        assert!(s.pid().is_none());
        assert!(TcpStream::connect(("127.0.0.1", s.port)).is_err());
        s.restart();
        assert!(TcpStream::connect(("127.0.0.1", s.port)).is_ok());
        s.kill();
        assert!(TcpStream::connect(("127.0.0.1", s.port)).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }
}
