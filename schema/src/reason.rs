//! What a [`Reason`] means and what a client should do about it.
//!
//! `Reason` itself is generated from `common.fbs` (a `u16` newtype, so a
//! value from a newer gateway is still representable). The numbering is
//! grouped so that a client can act on a code it does not know by its range:
//!
//! | range   | [`ClientAction`]                 |
//! |---------|----------------------------------|
//! | 0       | [`ClientAction::Nothing`]        |
//! | 1–99    | [`ClientAction::Fix`]            |
//! | 100–199 | [`ClientAction::Reauthenticate`] |
//! | 200–299 | [`ClientAction::InformUser`]     |
//! | 300–399 | [`ClientAction::RetrySame`]      |
//!
//! [`Reason::PARSER_REASONS`] are produced by [`parse_frame`](crate::parse_frame)
//! (each has a test in `schema/tests/reasons.rs`);
//! [`Reason::GATEWAY_REASONS`] are produced by the gateway's pipeline and
//! edge, and tested there.

use crate::Reason;

/// What a device should do when it receives a reason code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientAction {
    /// Nothing went wrong.
    Nothing,
    /// The request is invalid: fix the client (or its input) and do not
    /// resend the same bytes; they will be refused again.
    Fix,
    /// The connection's credentials are not accepted: obtain a new token and
    /// reconnect with a new Hello.
    Reauthenticate,
    /// A well-formed punch got a policy verdict: show it to the user. A new
    /// punch (new punch id) may follow once the cause is fixed.
    InformUser,
    /// The gateway could not take the request now: resend the same request
    /// (same punch id) after the retry-after delay, with jitter.
    RetrySame,
}

impl Reason {
    /// Reasons [`parse_frame`](crate::parse_frame) can return.
    pub const PARSER_REASONS: &'static [Reason] = &[
        Reason::Malformed,
        Reason::UnknownBody,
        Reason::WrongChannel,
        Reason::Oversize,
        Reason::MissingField,
        Reason::FieldTooLong,
        Reason::BatchTooLarge,
        Reason::EmptyBatch,
        Reason::NotFinite,
        Reason::LatitudeOutOfRange,
        Reason::LongitudeOutOfRange,
        Reason::NegativeAccuracy,
        Reason::FutureTimestamp,
        Reason::StaleTimestamp,
        Reason::InvalidPunchId,
        Reason::UnknownEnumValue,
        Reason::PositionRequired,
    ];

    /// Reasons only the gateway (authentication, pipeline, edge) produces.
    pub const GATEWAY_REASONS: &'static [Reason] = &[
        Reason::NotAuthenticated,
        Reason::BadToken,
        Reason::TokenExpired,
        Reason::WrongTenant,
        Reason::UnknownDevice,
        Reason::NoFences,
        Reason::OutOfRange,
        Reason::QrInvalid,
        Reason::QrExpired,
        Reason::QrReplay,
        Reason::WifiUnknown,
        Reason::TerminalUntrusted,
        Reason::OfflineTooOld,
        Reason::AccuracyTooLow,
        Reason::Overloaded,
        Reason::LogFull,
        Reason::ShuttingDown,
        Reason::InternalError,
        Reason::RateLimited,
    ];

    /// What a client should do about this reason; codes this version does
    /// not know are classified by their range.
    #[must_use]
    pub fn action(self) -> ClientAction {
        match self.0 {
            0 => ClientAction::Nothing,
            1..=99 => ClientAction::Fix,
            100..=199 => ClientAction::Reauthenticate,
            200..=299 => ClientAction::InformUser,
            300..=399 => ClientAction::RetrySame,
            // Unassigned ranges: treat as a request the gateway will not take.
            _ => ClientAction::Fix,
        }
    }

    /// One line for logs and error messages: what was wrong and what to do.
    #[must_use]
    pub fn describe(self) -> &'static str {
        match self {
            Reason::None => "no error",
            Reason::Malformed => {
                "frame is not a valid FlatBuffer with identifier FGD1 (verifier failed); fix the encoder"
            }
            Reason::UnknownBody => {
                "frame has no body or a body type this gateway does not know; send Hello, Punch or PingBatch"
            }
            Reason::WrongChannel => {
                "message type not allowed here: Hello and Punch go on bidirectional streams, PingBatch in datagrams or backlog streams"
            }
            Reason::Oversize => {
                "frame is larger than allowed on this channel (stream 4096, datagram 1452, backlog frame 65536 bytes)"
            }
            Reason::MissingField => {
                "a required field is absent or empty (punch_id, employee_id, token, device_id, fixes, bssids for Wifi, qr_payload for Qr)"
            }
            Reason::FieldTooLong => {
                "a string or list is too long (ids 128 bytes, token 1024, qr_payload 512, bssids 32 entries)"
            }
            Reason::BatchTooLarge => {
                "ping batch has too many fixes (64 per datagram, 4096 per backlog frame); split it"
            }
            Reason::EmptyBatch => "ping batch has no fixes; send at least one",
            Reason::NotFinite => "a coordinate or accuracy is NaN or infinite",
            Reason::LatitudeOutOfRange => "latitude is outside [-90, 90] degrees",
            Reason::LongitudeOutOfRange => "longitude is outside [-180, 180] degrees",
            Reason::NegativeAccuracy => "accuracy is negative; send the radius in metres, >= 0",
            Reason::FutureTimestamp => {
                "device time is more than the allowed skew (5 min) ahead of the gateway; fix the device clock"
            }
            Reason::StaleTimestamp => {
                "device time is before 2020-01-01 (clock never set); fix the device clock"
            }
            Reason::InvalidPunchId => {
                "punch_id is all zero; generate a random 128-bit id per punch"
            }
            Reason::UnknownEnumValue => {
                "kind, method or terminal_auth holds a value this gateway does not know"
            }
            Reason::PositionRequired => "a Gps punch needs a position",
            Reason::NotAuthenticated => "no HelloAck yet on this connection; send Hello first",
            Reason::BadToken => "the token is not valid; obtain a new one",
            Reason::TokenExpired => "the token has expired; obtain a fresh one and reconnect",
            Reason::WrongTenant => {
                "the tenant is unknown or disabled, or the data belongs to another tenant"
            }
            Reason::UnknownDevice => "the device is not registered for this tenant",
            Reason::NoFences => "the tenant has no fences to check a GPS punch against",
            Reason::OutOfRange => "the position is outside every fence; pending approval",
            Reason::QrInvalid => "the QR payload is not a code this tenant issued",
            Reason::QrExpired => "the QR code has expired; scan the current one",
            Reason::QrReplay => "the QR code was already used by another punch",
            Reason::WifiUnknown => "none of the BSSIDs belongs to the tenant's offices",
            Reason::TerminalUntrusted => "the terminal is not registered as trusted",
            Reason::OfflineTooOld => "the offline punch is older than the tenant accepts",
            Reason::AccuracyTooLow => "the position's accuracy radius is too large to decide",
            Reason::Overloaded => "the gateway is overloaded; retry the same request later",
            Reason::LogFull => "the gateway's durable log is full; retry the same request later",
            Reason::ShuttingDown => "the gateway is shutting down; retry on a new connection",
            Reason::InternalError => "the gateway failed internally; retry the same request later",
            Reason::RateLimited => {
                "the device or its tenant is over its punch rate; retry the same request later"
            }
            _ => "reason code not known to this version",
        }
    }
}

impl core::fmt::Display for Reason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.variant_name() {
            Some(name) => write!(f, "{name} ({}): {}", self.0, self.describe()),
            None => write!(f, "reason {}: {}", self.0, self.describe()),
        }
    }
}

impl std::error::Error for Reason {}
