//! Counting the datagrams that never reach the gateway's code: those the
//! kernel drops when a QUIC socket's receive buffer overflows.
//!
//! quinn reads the socket; a datagram the kernel could not queue is gone
//! before quinn sees it. Linux counts such drops per socket (the `drops`
//! column of `/proc/net/udp` and `/proc/net/udp6`, found by the socket's
//! inode). The edge registers each socket it binds, and a sampler adds
//! the growth of those counters to
//! `fencegate_datagrams_dropped_total{reason="kernel"}` once a second.
//! The other causes are counted where they happen (docs/OPERATIONS.md,
//! "Datagram drops").

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Sockets registered for kernel drop sampling: inode → the drop count
/// already reported. Shared by every endpoint's sampler, so sampling twice
/// never counts a drop twice.
static SOCKETS: Mutex<Vec<(u64, u64)>> = Mutex::new(Vec::new());

/// The inode of a socket, from `/proc/self/fd/N` (`socket:[12345]`).
/// `None` where there is no procfs (then kernel drops go uncounted, and
/// docs/OPERATIONS.md says so).
#[cfg(unix)]
pub fn socket_inode(sock: &impl std::os::fd::AsRawFd) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/self/fd/{}", sock.as_raw_fd())).ok()?;
    let s = link.to_str()?;
    s.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// Starts counting kernel drops of the socket with inode `inode`, from
/// what it has dropped so far (drops before the gateway owned it are not
/// its own).
pub fn register(inode: u64) {
    let now = read_drops(&[inode]).get(&inode).copied().unwrap_or(0);
    let mut s = SOCKETS.lock().unwrap_or_else(|e| e.into_inner());
    if !s.iter().any(|(i, _)| *i == inode) {
        s.push((inode, now));
    }
}

/// Parses the `drops` column of `/proc/net/udp`-format `text` for the
/// sockets in `inodes`, adding into `out`. Columns: sl, local, remote, st,
/// tx:rx queue, tr:when, retrnsmt, uid, timeout, inode, ref, pointer, drops.
pub fn parse_proc_udp(text: &str, inodes: &[u64], out: &mut HashMap<u64, u64>) {
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 13 {
            continue;
        }
        let (Ok(inode), Ok(drops)) = (cols[9].parse::<u64>(), cols[12].parse::<u64>()) else {
            continue;
        };
        if inodes.contains(&inode) {
            *out.entry(inode).or_default() += drops;
        }
    }
}

fn read_drops(inodes: &[u64]) -> HashMap<u64, u64> {
    let mut out = HashMap::new();
    for path in ["/proc/net/udp", "/proc/net/udp6"] {
        if let Ok(text) = std::fs::read_to_string(path) {
            parse_proc_udp(&text, inodes, &mut out);
        }
    }
    out
}

/// Adds the kernel drops since the last sample of every registered socket
/// to `counter`; returns how many that was.
pub fn sample(counter: &metrics::Counter) -> u64 {
    // Held across the procfs read: with several endpoints, several
    // samplers run, and one applying an older reading after a newer one
    // would move `seen` back and count the difference twice.
    let mut s = SOCKETS.lock().unwrap_or_else(|e| e.into_inner());
    let inodes: Vec<u64> = s.iter().map(|(i, _)| *i).collect();
    if inodes.is_empty() {
        return 0;
    }
    let now = read_drops(&inodes);
    let mut added = 0;
    for (inode, seen) in s.iter_mut() {
        if let Some(&d) = now.get(inode) {
            // A counter that went down belongs to a new socket that reused
            // the inode: start from it.
            added += d.saturating_sub(*seen);
            *seen = d;
        }
    }
    // Sockets closed (gone from procfs) stop being sampled.
    s.retain(|(i, _)| now.contains_key(i));
    counter.increment(added);
    added
}

/// Samples once a second until `shutdown`, then once more.
pub async fn run_sampler(counter: metrics::Counter, shutdown: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => break,
        }
        let c = counter.clone();
        // procfs reads are file I/O: off the async workers.
        let _ = tokio::task::spawn_blocking(move || sample(&c)).await;
    }
    sample(&counter);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_drops_column_of_the_sockets_asked_for() {
        let text = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  123: 0100007F:1F90 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000 17
  124: 0100007F:1F91 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4343 2 0000000000000000 5
  125: 0100007F:1F92 00000000:0000 07 00000000:00040000 00:00000000 00000000     0        0 4242 2 0000000000000000 3
";
        let mut out = HashMap::new();
        parse_proc_udp(text, &[4242], &mut out);
        // Both lines of inode 4242 (one socket in udp and udp6 would be
        // two files, but a line per socket each), not 4343's.
        assert_eq!(out.get(&4242), Some(&20));
        assert_eq!(out.get(&4343), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_bound_socket_is_found_by_its_inode() {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let inode = socket_inode(&sock).expect("procfs names the socket");
        let drops = read_drops(&[inode]);
        assert_eq!(
            drops.get(&inode),
            Some(&0),
            "a fresh socket is listed with 0 drops"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn kernel_drops_of_a_full_socket_are_counted() {
        // A socket with a tiny receive buffer, flooded on loopback and never
        // read: the kernel drops most datagrams and the sampler counts them.
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        sock.bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
        let sock: std::net::UdpSocket = sock.into();
        let inode = socket_inode(&sock).unwrap();
        register(inode);
        let to = sock.local_addr().unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..200 {
            tx.send_to(&[7u8; 1000], to).unwrap();
        }
        let added = sample(&metrics::Counter::noop());
        assert!(added >= 150, "{added} of 200 counted as dropped");
        // Sampling again adds nothing new.
        assert_eq!(sample(&metrics::Counter::noop()), 0);
        drop(sock);
    }
}
