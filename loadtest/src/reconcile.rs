//! Where the fleet's datagrams went: what the devices sent, reconciled
//! with what the gateway counted over the run (`/metrics` deltas).
//!
//! Every datagram handed to QUIC is, in order: dropped by the harness's
//! own send buffer, or put on the wire; on the wire, lost before the
//! gateway's quinn saw it (the kernel's socket buffer, counted as
//! `kernel`), or received; received, dropped from quinn's full buffer
//! (`buffer_full`) or read; read, dropped over the device's rate
//! (`rate_limit`), refused by validation, or processed by the pipeline
//! (its fixes in `fencegate_pings_total`). Processed batches the log could
//! not take (`shed`, `log_busy`) lost their records, not their fixes'
//! processing. What no counter explains is `unexplained`, and a report
//! with a non-zero `unexplained` says so.

use serde::Serialize;

use crate::fleet::FleetOutcomes;
use crate::probe::GatewayCounts;

/// The fleet's datagrams, stage by stage, and what no counter explains.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Reconciliation {
    /// Fixes per datagram.
    pub batch: u32,
    /// Datagrams the devices handed to QUIC.
    pub handed_to_quic: u64,
    /// Dropped by the harness's own QUIC send buffers (handed − on wire).
    pub harness_send_buffer: u64,
    /// DATAGRAM frames the devices' connections sent.
    pub on_wire: u64,
    /// DATAGRAM frames the gateway's quinn received.
    pub gateway_received: u64,
    /// On the wire and never received (on wire − received): the kernel's
    /// socket buffers (or the network, for a remote gateway).
    pub lost_before_quinn: u64,
    /// The gateway's `kernel` drop counter over the run: UDP datagrams
    /// (several QUIC datagrams when the sender batched them with GSO, and
    /// any connection's), so it explains `lost_before_quinn` up to itself.
    pub kernel_counted: u64,
    /// `buffer_full`: dropped from quinn's full per-connection buffer.
    pub buffer_full: u64,
    /// Received and read by the connection tasks (received − buffer_full).
    pub read: u64,
    /// `rate_limit`: over the device's datagram rate.
    pub rate_limit: u64,
    /// Refused by validation (`fencegate_refused_total{channel="datagram"}`).
    pub refused: u64,
    /// Datagrams processed by the pipeline (its fixes ÷ batch).
    pub processed: u64,
    /// Processed, but the log shed the records (`shed`).
    pub records_shed: u64,
    /// Processed, but the log could not take the records (`log_busy`).
    pub records_log_busy: u64,
    /// Datagrams no counter explains: lost before quinn beyond the kernel
    /// count, plus read but neither dropped, refused nor processed (or
    /// processed beyond what was read: other traffic on the gateway).
    pub unexplained: u64,
    /// Every datagram lost after the harness handed it to QUIC, by cause,
    /// as a share of those handed: harness send buffer, kernel,
    /// buffer_full, rate_limit, refused (what the ramp's 1 % applies to).
    pub drop_share: f64,
}

impl Reconciliation {
    /// Reconciles what the fleet `sent` with the gateway's counts `g`;
    /// `None` when the gateway does not export its received count.
    pub fn new(batch: u32, sent: &FleetOutcomes, g: &GatewayCounts) -> Option<Self> {
        let received = g.datagrams_received?;
        let drop = |r: &str| g.datagram_drops.get(r).copied().unwrap_or(0);
        let buffer_full = drop("buffer_full");
        let read = received.saturating_sub(buffer_full);
        let batch = batch.max(1);
        let processed = (g.pings_processed as f64 / f64::from(batch)).round() as u64;
        let lost_before_quinn = sent.datagrams_on_wire.saturating_sub(received);
        let kernel = drop("kernel");
        let (rate_limit, refused) = (drop("rate_limit"), g.datagrams_refused);
        let read_explained = rate_limit + refused + processed;
        let unexplained = lost_before_quinn.saturating_sub(kernel)
            + read.abs_diff(read_explained)
            // More received than sent: someone else's datagrams.
            + received.saturating_sub(sent.datagrams_on_wire);
        let harness = sent.datagrams_sent.saturating_sub(sent.datagrams_on_wire);
        let lost = harness + lost_before_quinn + buffer_full + rate_limit + refused;
        Some(Self {
            batch,
            handed_to_quic: sent.datagrams_sent,
            harness_send_buffer: harness,
            on_wire: sent.datagrams_on_wire,
            gateway_received: received,
            lost_before_quinn,
            kernel_counted: kernel,
            buffer_full,
            read,
            rate_limit,
            refused,
            processed,
            records_shed: drop("shed"),
            records_log_busy: drop("log_busy"),
            unexplained,
            drop_share: if sent.datagrams_sent > 0 {
                lost as f64 / sent.datagrams_sent as f64
            } else {
                0.0
            },
        })
    }

    /// One line for the terminal summary.
    pub fn line(&self) -> String {
        format!(
            "{} handed to QUIC = {} harness send buffer + {} on the wire; = {} lost before quinn (kernel counted {}) + {} received; = {} buffer_full + {} read; = {} rate_limit + {} refused + {} processed ({} shed, {} log_busy after processing); drops {:.2} %; unexplained {}{}",
            self.handed_to_quic,
            self.harness_send_buffer,
            self.on_wire,
            self.lost_before_quinn,
            self.kernel_counted,
            self.gateway_received,
            self.buffer_full,
            self.read,
            self.rate_limit,
            self.refused,
            self.processed,
            self.records_shed,
            self.records_log_busy,
            self.drop_share * 100.0,
            self.unexplained,
            if self.unexplained == 0 {
                ""
            } else {
                " (NOT BALANCED: no gateway counter explains these datagrams; with kernel drops, UDP GRO makes the kernel's count low, docs/OPERATIONS.md \"Datagram drops\")"
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(handed: u64, on_wire: u64) -> FleetOutcomes {
        FleetOutcomes {
            datagrams_sent: handed,
            datagrams_on_wire: on_wire,
            ..FleetOutcomes::default()
        }
    }

    fn gateway(received: u64, fixes: u64, drops: &[(&str, u64)]) -> GatewayCounts {
        GatewayCounts {
            datagrams_received: Some(received),
            pings_processed: fixes,
            datagram_drops: drops.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
            ..GatewayCounts::default()
        }
    }

    #[test]
    fn every_stage_accounted_balances() {
        // 1000 handed, 990 on the wire, 980 received (10 kernel), 30
        // buffer full, 950 read: 5 over the rate, 945 processed.
        let g = gateway(
            980,
            945 * 64,
            &[("kernel", 10), ("buffer_full", 30), ("rate_limit", 5)],
        );
        let r = Reconciliation::new(64, &sent(1_000, 990), &g).unwrap();
        assert_eq!(r.unexplained, 0, "{}", r.line());
        assert_eq!(r.read, 950);
        assert_eq!(r.processed, 945);
        assert!((r.drop_share - 0.055).abs() < 1e-9, "{}", r.drop_share);
    }

    #[test]
    fn uncounted_losses_are_unexplained() {
        // 20 datagrams vanished before quinn with only 5 kernel drops
        // counted, and 3 read datagrams reached no counter.
        let g = gateway(980, 977 * 8, &[("kernel", 5)]);
        let r = Reconciliation::new(8, &sent(1_000, 1_000), &g).unwrap();
        assert_eq!(r.unexplained, 15 + 3, "{}", r.line());
        assert!(r.line().contains("NOT BALANCED"));
    }

    #[test]
    fn needs_the_received_count() {
        let mut g = gateway(1, 1, &[]);
        g.datagrams_received = None;
        assert!(Reconciliation::new(1, &sent(1, 1), &g).is_none());
    }
}
