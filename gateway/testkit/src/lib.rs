//! Test support shared by the gateway's tests, the benches and the load
//! harness's tests: one way to start a real `nats-server -js` on a free
//! loopback port with its own store, and to stop, kill and restart it.
//! Before this crate each of those carried its own copy, and the copies had
//! drifted (different readiness waits, one without the install hint).

use std::net::{TcpListener, TcpStream};
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
        let mut s = Self {
            port: free_port(),
            store: store.to_owned(),
            child: None,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "nats-server is already running");
        let child = Command::new(nats_server_binary())
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-sd")
            .arg(&self.store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        // Ready once it accepts TCP (the store may take a moment to recover
        // after a kill).
        for _ in 0..200 {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
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
        if let Some(mut c) = self.child.take() {
            // Our child is not reaped yet, so its pid cannot have been reused.
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            for _ in 0..200 {
                if matches!(c.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            let _ = c.kill();
            let _ = c.wait();
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

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
