//! The ping datagram rate, per device across all of its connections.
//!
//! `quic.ping_datagrams_per_s` and `ping_burst` bound what one device may
//! send (docs/PROTOCOL.md §10). A bucket per connection let a device with
//! several connections (a reconnect racing the old connection's idle
//! timeout, or a hostile client opening many with one token) multiply its
//! rate; here a device's connections share one bucket. The map holds an
//! entry only while the device has a connection, so it is bounded by
//! `quic.max_connections` without any eviction.

use dashmap::DashMap;

use super::PingBucket;

/// A device's shared bucket and how many of its connections are open.
#[derive(Debug)]
struct Entry {
    bucket: PingBucket,
    connections: u32,
}

/// Ping token buckets keyed by (tenant, device) hash.
#[derive(Debug, Default)]
pub struct DeviceBuckets {
    map: DashMap<(u64, u64), Entry>,
}

impl DeviceBuckets {
    /// A connection of `device` opened: the device's bucket (a full one if
    /// it had no connection) now counts it.
    pub fn open(&self, device: (u64, u64), per_s: u32, burst: u32, now_ms: i64) {
        self.map
            .entry(device)
            .or_insert_with(|| Entry {
                bucket: PingBucket::new(per_s, burst, now_ms),
                connections: 0,
            })
            .connections += 1;
    }

    /// A connection of `device` closed; the bucket goes with the last one.
    pub fn close(&self, device: (u64, u64)) {
        self.map.remove_if_mut(&device, |_, e| {
            e.connections = e.connections.saturating_sub(1);
            e.connections == 0
        });
    }

    /// Takes one datagram's token from `device`'s bucket; false when over
    /// the rate. A device with no open connection (never: the caller holds
    /// one) is let through.
    pub fn take(&self, device: (u64, u64), now_ms: i64) -> bool {
        self.map
            .get_mut(&device)
            .is_none_or(|mut e| e.bucket.take(now_ms))
    }

    /// Devices with a bucket (for tests and memory accounting).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no device has a bucket.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_connections_of_one_device_share_its_rate() {
        let b = DeviceBuckets::default();
        let dev = (1, 2);
        b.open(dev, 1, 10, 0);
        b.open(dev, 1, 10, 0);
        // The burst is the device's, not each connection's: 10 in all.
        let passed = (0..40).filter(|_| b.take(dev, 0)).count();
        assert_eq!(passed, 10);
        // Another device is not affected.
        b.open((1, 3), 1, 10, 0);
        assert!(b.take((1, 3), 0));
    }

    #[test]
    fn the_bucket_lives_while_any_connection_does() {
        let b = DeviceBuckets::default();
        let dev = (1, 2);
        b.open(dev, 1, 1, 0);
        b.open(dev, 1, 1, 0);
        assert!(b.take(dev, 0));
        b.close(dev);
        // Still one connection: the drained bucket stays drained, so
        // reconnecting does not refill it.
        assert!(!b.take(dev, 0));
        assert_eq!(b.len(), 1);
        b.close(dev);
        assert!(b.is_empty(), "the map is bounded by open connections");
    }
}
