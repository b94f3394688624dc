//! Size, count and time limits the frame parser enforces.

use flatbuffers::VerifierOptions;

/// Which transport a frame arrived on; it decides the size limits and which
/// message types are allowed (see docs/PROTOCOL.md, "Channels").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// A bidirectional stream: one `Hello` or one `Punch`, framed by the
    /// stream's end.
    Stream,
    /// A QUIC datagram: one `PingBatch`, no prefix.
    Datagram,
    /// A frame from an offline backlog on a unidirectional stream (the u32
    /// length prefix already removed): one `PingBatch`.
    Backlog,
}

/// Limits for [`parse_frame`](crate::parse_frame). `Limits::default()` holds
/// the values documented in docs/PROTOCOL.md; a gateway may tighten them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame on a bidirectional stream (Hello, Punch), in bytes.
    ///
    /// 4096 unless set.
    pub max_frame_bytes: usize,
    /// Largest ping-batch datagram, in bytes.
    ///
    /// 1452 unless set: an IPv4 path with a 1500-byte MTU minus the IP, UDP
    /// and short-header QUIC overhead.
    pub max_datagram_bytes: usize,
    /// Largest single frame on a backlog unidirectional stream, in bytes.
    ///
    /// 65536 unless set.
    pub max_backlog_frame_bytes: usize,
    /// Longest identifier string (employee_id, device_id, client, ssid), in
    /// bytes of UTF-8.
    ///
    /// 128 unless set.
    pub max_string_len: usize,
    /// Longest Hello token, in bytes.
    ///
    /// 1024 unless set.
    pub max_token_len: usize,
    /// Longest punch QR payload, in bytes.
    ///
    /// 512 unless set.
    pub max_qr_len: usize,
    /// Most BSSIDs in one punch.
    ///
    /// 32 unless set.
    pub max_bssids: usize,
    /// Most fixes in one datagram ping batch.
    ///
    /// 64 unless set (64 fixes encode to about 1.1 KB).
    pub max_batch_fixes: usize,
    /// Most fixes in one backlog frame. `max_backlog_frame_bytes` applies
    /// too, and binds first: 65536 bytes hold about 4090 fixes.
    ///
    /// 4096 unless set.
    pub max_backlog_fixes: usize,
    /// How far a device time (punch `device_time_ms`, or a batch's last fix)
    /// may be ahead of the gateway's `now`, in milliseconds.
    ///
    /// Five minutes unless set.
    pub max_future_skew_ms: i64,
    /// Earliest device time accepted, unix milliseconds. Earlier times come
    /// from a clock that was never set (1970) and are refused as stale.
    ///
    /// 2020-01-01T00:00:00Z unless set.
    pub min_time_ms: i64,
    /// Verifier: deepest table nesting. Valid frames nest 2 deep.
    ///
    /// 16 unless set.
    pub max_depth: usize,
    /// Verifier: most tables in one buffer. Valid device frames hold 2.
    ///
    /// 64 unless set.
    pub max_tables: usize,
    /// Verifier: most bytes the verifier may visit, counting shared data
    /// once per reference; bounds the work one frame can cause.
    ///
    /// 131072 (twice `max_backlog_frame_bytes`) unless set.
    pub max_apparent_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: 4096,
            max_datagram_bytes: 1452,
            max_backlog_frame_bytes: 65536,
            max_string_len: 128,
            max_token_len: 1024,
            max_qr_len: 512,
            max_bssids: 32,
            max_batch_fixes: 64,
            max_backlog_fixes: 4096,
            max_future_skew_ms: 300_000,
            min_time_ms: 1_577_836_800_000,
            max_depth: 16,
            max_tables: 64,
            max_apparent_size: 131_072,
        }
    }
}

impl Limits {
    /// The largest frame accepted on `channel`, in bytes.
    #[must_use]
    pub fn max_bytes(&self, channel: Channel) -> usize {
        match channel {
            Channel::Stream => self.max_frame_bytes,
            Channel::Datagram => self.max_datagram_bytes,
            Channel::Backlog => self.max_backlog_frame_bytes,
        }
    }

    /// The most fixes one ping batch may carry on `channel` (0: ping batches
    /// are not allowed there).
    #[must_use]
    pub fn max_fixes(&self, channel: Channel) -> usize {
        match channel {
            Channel::Stream => 0,
            Channel::Datagram => self.max_batch_fixes,
            Channel::Backlog => self.max_backlog_fixes,
        }
    }

    /// The bounded flatbuffers verifier options these limits imply.
    #[must_use]
    pub fn verifier_options(&self) -> VerifierOptions {
        VerifierOptions {
            max_depth: self.max_depth,
            max_tables: self.max_tables,
            max_apparent_size: self.max_apparent_size,
            ignore_missing_null_terminator: false,
        }
    }
}
