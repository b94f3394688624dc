//! Handshakes are silent at INFO and above: a 9:00 peak of tens of
//! thousands of handshakes must not flood the log. Its own test binary,
//! because it installs the process-wide tracing subscriber (and, through
//! it, the `log` bridge that rustls and quinn write to).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{HQ, Node, punch};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Red if any handshake, full, resumed or with 0-RTT, logs at INFO or
/// above: e.g. rustls's `early_data with stateless resumption is not
/// allowed` warning, which it logged for every ticket while 0-RTT was
/// configured together with stateless tickets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_log_nothing_at_info_or_above() {
    let out = Captured::default();
    let writer = out.clone();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .try_init()
        .expect("the only subscriber of this test binary");
    let node = Node::start().await;
    let started = out.text().len();

    let token = node.token("acme", "phone-1");
    // Connections stay open to the end: each one's ticket comes after its
    // handshake, and each resumption uses one ticket up.
    let first = node.connector.connect(&token, "phone-1").await.unwrap();
    first.punch(&punch(1, "e-1", HQ)).await.unwrap();
    let mut open = vec![first];
    for i in 0..3u128 {
        let (c, accepted) = common::connect_0rtt(&node).await;
        let p = punch(10 + i, "e-1", HQ);
        let (hello, reply) = tokio::join!(c.hello(&token, "phone-1"), c.punch(&p));
        hello.unwrap();
        reply.unwrap();
        assert!(accepted.await, "0-RTT accepted");
        open.push(c);
    }
    // Let the last ticket land too: a warning per ticket issued would show.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let text = out.text();
    let during = &text[started..];
    assert!(
        during.is_empty(),
        "handshakes logged at INFO or above:\n{during}"
    );
    for c in open {
        c.close();
    }
    node.running.shutdown(Duration::from_secs(2)).await;
}
