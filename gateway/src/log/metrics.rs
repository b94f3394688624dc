//! Metric handles of the log, registered once when the log opens.

use metrics::{Counter, Gauge, Histogram, Unit};

/// The log's metric handles. [`super::LogHandle::open`] registers them with the
/// global recorder (install the recorder first), and the hot path only
/// touches these handles: at most a few updates per batch, never per record.
#[derive(Clone)]
pub struct LogMetrics {
    /// Seconds from the oldest append of a batch being submitted to the batch
    /// being synced (the worst ack wait in the batch).
    pub commit_latency: Histogram,
    /// Records per synced batch.
    pub batch_records: Histogram,
    /// Seconds spent in `fdatasync` per batch.
    pub fsync_seconds: Histogram,
    /// Bytes written to segments.
    pub bytes_written: Counter,
    /// Records made durable.
    pub records: Counter,
    /// `fdatasync` calls on segments.
    pub fsyncs: Counter,
    /// Segments on disk.
    pub segments: Gauge,
    /// Bytes on disk in segments.
    pub used_bytes: Gauge,
    /// `log.max_bytes`: what `used_bytes` may reach before appends are
    /// refused (alerts compare the two to warn before the log fills).
    pub capacity_bytes: Gauge,
    /// Bytes cut from torn tails at recovery.
    pub truncated_bytes: Counter,
    /// Appends refused because the queue was full.
    pub rejected_busy: Counter,
    /// Appends refused because the log reached its size cap.
    pub rejected_full: Counter,
    /// Segments deleted by retention.
    pub segments_deleted: Counter,
    /// Failed writes or syncs (each stops the writer).
    pub write_errors: Counter,
    /// Segments moved aside at open (damaged, or older than a damaged one).
    pub segments_quarantined: Counter,
}

impl LogMetrics {
    /// Registers (and describes) every log metric once.
    pub fn register() -> Self {
        metrics::describe_histogram!(
            "fencegate_log_commit_latency_seconds",
            Unit::Seconds,
            "Oldest append's wait per synced batch"
        );
        metrics::describe_histogram!(
            "fencegate_log_batch_records",
            Unit::Count,
            "Records per fdatasync"
        );
        metrics::describe_histogram!(
            "fencegate_log_fsync_seconds",
            Unit::Seconds,
            "Time in fdatasync per batch"
        );
        metrics::describe_counter!(
            "fencegate_log_bytes_written_total",
            Unit::Bytes,
            "Bytes written to segments"
        );
        metrics::describe_counter!(
            "fencegate_log_records_total",
            Unit::Count,
            "Records made durable"
        );
        metrics::describe_counter!(
            "fencegate_log_fsyncs_total",
            Unit::Count,
            "fdatasync calls on segments"
        );
        metrics::describe_gauge!("fencegate_log_segments", Unit::Count, "Segments on disk");
        metrics::describe_gauge!(
            "fencegate_log_used_bytes",
            Unit::Bytes,
            "Bytes in segments on disk"
        );
        metrics::describe_gauge!(
            "fencegate_log_capacity_bytes",
            Unit::Bytes,
            "log.max_bytes: the size at which appends are refused"
        );
        metrics::describe_counter!(
            "fencegate_log_truncated_bytes_total",
            Unit::Bytes,
            "Bytes cut from torn tails at recovery"
        );
        metrics::describe_counter!(
            "fencegate_log_rejected_total",
            Unit::Count,
            "Appends refused, by reason"
        );
        metrics::describe_counter!(
            "fencegate_log_segments_deleted_total",
            Unit::Count,
            "Segments deleted by retention"
        );
        metrics::describe_counter!(
            "fencegate_log_write_errors_total",
            Unit::Count,
            "Failed writes or syncs (each stops the writer)"
        );
        metrics::describe_counter!(
            "fencegate_log_segments_quarantined_total",
            Unit::Count,
            "Segments moved aside at open because a sealed segment failed its check after every cursor passed it"
        );
        Self {
            commit_latency: metrics::histogram!("fencegate_log_commit_latency_seconds"),
            batch_records: metrics::histogram!("fencegate_log_batch_records"),
            fsync_seconds: metrics::histogram!("fencegate_log_fsync_seconds"),
            bytes_written: metrics::counter!("fencegate_log_bytes_written_total"),
            records: metrics::counter!("fencegate_log_records_total"),
            fsyncs: metrics::counter!("fencegate_log_fsyncs_total"),
            segments: metrics::gauge!("fencegate_log_segments"),
            used_bytes: metrics::gauge!("fencegate_log_used_bytes"),
            capacity_bytes: metrics::gauge!("fencegate_log_capacity_bytes"),
            truncated_bytes: metrics::counter!("fencegate_log_truncated_bytes_total"),
            rejected_busy: metrics::counter!("fencegate_log_rejected_total", "reason" => "busy"),
            rejected_full: metrics::counter!("fencegate_log_rejected_total", "reason" => "full"),
            segments_deleted: metrics::counter!("fencegate_log_segments_deleted_total"),
            write_errors: metrics::counter!("fencegate_log_write_errors_total"),
            segments_quarantined: metrics::counter!("fencegate_log_segments_quarantined_total"),
        }
    }
}

impl std::fmt::Debug for LogMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogMetrics")
    }
}
