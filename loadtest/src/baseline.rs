//! `--baseline raw-udp`: how many datagrams of a given size one sender
//! thread can push through loopback UDP to one receiver thread. That is the
//! physical ceiling the gateway's rate is compared with ("distance to the
//! physical limit").

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;

use crate::clock;

/// The baseline's result.
#[derive(Debug, Clone, Serialize)]
pub struct RawUdp {
    /// Always `"raw-udp"`.
    pub kind: &'static str,
    /// Payload bytes per datagram.
    pub datagram_bytes: usize,
    /// Seconds measured.
    pub seconds: f64,
    /// Datagrams sent.
    pub sent: u64,
    /// Datagrams received.
    pub received: u64,
    /// Received datagrams per second.
    pub datagrams_per_s: f64,
}

/// Blasts `size`-byte datagrams over loopback for `length` and counts what
/// arrives.
pub fn raw_udp(size: usize, length: Duration) -> anyhow::Result<RawUdp> {
    let rx = UdpSocket::bind("127.0.0.1:0").context("baseline: cannot bind a UDP socket")?;
    rx.set_read_timeout(Some(Duration::from_millis(50)))?;
    let addr = rx.local_addr()?;
    let tx = UdpSocket::bind("127.0.0.1:0")?;
    tx.connect(addr)?;
    let done = Arc::new(AtomicBool::new(false));
    let done2 = done.clone();
    let receiver = std::thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        let mut n = 0u64;
        let mut idle = 0;
        loop {
            match rx.recv(&mut buf) {
                Ok(_) => {
                    n += 1;
                    idle = 0;
                }
                Err(_) => {
                    idle += 1;
                    if done2.load(Ordering::Relaxed) && idle >= 2 {
                        return n;
                    }
                }
            }
        }
    });
    let payload = vec![0x5au8; size];
    let start = clock::now();
    let mut sent = 0u64;
    while start.elapsed() < length {
        // Check the clock every 256 sends, not every send.
        for _ in 0..256 {
            if tx.send(&payload).is_ok() {
                sent += 1;
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let received = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("baseline receiver panicked"))?;
    Ok(RawUdp {
        kind: "raw-udp",
        datagram_bytes: size,
        seconds,
        sent,
        received,
        datagrams_per_s: received as f64 / seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_moves_datagrams() {
        let r = raw_udp(100, Duration::from_millis(100)).unwrap();
        assert!(r.received > 0 && r.received <= r.sent, "{r:?}");
        assert!(r.datagrams_per_s > 0.0);
    }
}
