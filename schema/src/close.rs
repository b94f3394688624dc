//! QUIC application close codes (`CONNECTION_CLOSE` frames of type 0x1d).
//!
//! The gateway closes a connection with one of these; the reason phrase is
//! informational only. What a client should do for each is in
//! docs/PROTOCOL.md, "Connection close codes".

/// Orderly close: the client or the gateway is done with the connection.
pub const NORMAL: u32 = 0x00;
/// The Hello token is not valid (bad signature, malformed). Do not reconnect
/// with the same token; obtain a new one.
pub const BAD_TOKEN: u32 = 0x10;
/// The Hello token has expired. Obtain a fresh token, then reconnect.
pub const TOKEN_EXPIRED: u32 = 0x11;
/// The token's tenant is unknown or disabled on this gateway.
pub const WRONG_TENANT: u32 = 0x12;
/// No Hello arrived within 5 seconds of the handshake.
pub const AUTH_TIMEOUT: u32 = 0x13;
/// A stream or datagram other than the Hello stream arrived before HelloAck.
pub const NOT_AUTHENTICATED: u32 = 0x14;
/// The client broke the framing rules (a second Hello, a reply-type message,
/// a unidirectional stream with a bad length prefix, ...).
pub const PROTOCOL_VIOLATION: u32 = 0x20;
/// The gateway is shutting down; reconnect (to another node) after a delay.
pub const SHUTTING_DOWN: u32 = 0x30;
/// The gateway sheds this connection under overload; reconnect after a
/// delay with jitter.
pub const OVERLOADED: u32 = 0x31;

/// Every close code with its name, for logs and docs.
pub const ALL: &[(u32, &str)] = &[
    (NORMAL, "NORMAL"),
    (BAD_TOKEN, "BAD_TOKEN"),
    (TOKEN_EXPIRED, "TOKEN_EXPIRED"),
    (WRONG_TENANT, "WRONG_TENANT"),
    (AUTH_TIMEOUT, "AUTH_TIMEOUT"),
    (NOT_AUTHENTICATED, "NOT_AUTHENTICATED"),
    (PROTOCOL_VIOLATION, "PROTOCOL_VIOLATION"),
    (SHUTTING_DOWN, "SHUTTING_DOWN"),
    (OVERLOADED, "OVERLOADED"),
];

/// The name of a close code, or `None` for a code this version does not
/// define (treat an unknown code like `PROTOCOL_VIOLATION`).
#[must_use]
pub fn name(code: u64) -> Option<&'static str> {
    ALL.iter()
        .find(|(c, _)| u64::from(*c) == code)
        .map(|(_, n)| *n)
}
