//! The verify-once frame parser: untrusted bytes in, verified views out.
//!
//! [`parse_frame`] runs the flatbuffers verifier once with bounded options
//! and then the semantic checks listed in docs/PROTOCOL.md ("Validation").
//! The views it returns wrap the generated tables; their getters read the
//! buffer without checking again.

use flatbuffers::{InvalidFlatbuffer, Vector};

use crate::generated::{
    Body, Bssid, FRAME_IDENTIFIER, Fix, Frame, Hello, PingBatch, Punch, PunchKind, PunchMethod,
    Reason, TerminalAuth, root_as_frame_with_opts,
};
use crate::limits::{Channel, Limits};

/// Bounds for `Fix::lat_e7`: ±90 degrees in 1e-7 degree units.
pub const LAT_E7_MAX: i32 = 900_000_000;
/// Bounds for `Fix::lon_e7`: ±180 degrees in 1e-7 degree units.
pub const LON_E7_MAX: i32 = 1_800_000_000;

/// A verified device frame.
#[derive(Debug, Clone, Copy)]
pub enum Request<'a> {
    /// Connection authentication (first bidirectional stream).
    Hello(HelloView<'a>),
    /// A clock-in or clock-out.
    Punch(PunchView<'a>),
    /// Positions from one device.
    PingBatch(PingBatchView<'a>),
}

/// Parses and verifies one device frame received on `channel`.
///
/// `now_ms` is the gateway's clock (unix milliseconds), handed in so the
/// parser never reads a clock. Every failure maps to exactly one
/// [`Reason`] (one of [`Reason::PARSER_REASONS`]); the checks run in the
/// order documented in docs/PROTOCOL.md, and the first failing one wins.
/// Never panics, whatever `buf` holds.
///
/// # Errors
///
/// The [`Reason`] for the first check the frame fails.
pub fn parse_frame<'a>(
    buf: &'a [u8],
    channel: Channel,
    now_ms: i64,
    limits: &Limits,
) -> Result<Request<'a>, Reason> {
    if buf.len() > limits.max_bytes(channel) {
        return Err(Reason::Oversize);
    }
    check_identifier(buf, FRAME_IDENTIFIER)?;
    let frame: Frame<'a> =
        root_as_frame_with_opts(&limits.verifier_options(), buf).map_err(verifier_reason)?;
    match frame.body_type() {
        Body::Hello => {
            if channel != Channel::Stream {
                return Err(Reason::WrongChannel);
            }
            let hello = frame.body_as_hello().ok_or(Reason::Malformed)?;
            check_hello(hello, limits)?;
            Ok(Request::Hello(HelloView(hello)))
        }
        Body::Punch => {
            if channel != Channel::Stream {
                return Err(Reason::WrongChannel);
            }
            let punch = frame.body_as_punch().ok_or(Reason::Malformed)?;
            check_punch(punch, now_ms, limits)?;
            Ok(Request::Punch(PunchView(punch)))
        }
        Body::PingBatch => {
            if channel == Channel::Stream {
                return Err(Reason::WrongChannel);
            }
            let batch = frame.body_as_ping_batch().ok_or(Reason::Malformed)?;
            check_ping_batch(batch, limits.max_fixes(channel), now_ms, limits)?;
            Ok(Request::PingBatch(PingBatchView(batch)))
        }
        _ => Err(Reason::UnknownBody),
    }
}

/// The punch id of a punch frame that [`parse_frame`] refused, for the
/// `PunchAck` of the rejection: `Some` whenever the frame passes the
/// structural checks (size, identifier, verifier: `punch_id` and
/// `employee_id` are present) and its body is a `Punch` with a non-zero id,
/// whatever semantic check it failed afterwards. `None` for `Oversize`,
/// `Malformed`, `MissingField` from the verifier, `UnknownBody`,
/// non-punch bodies and `InvalidPunchId`.
///
/// Runs the verifier again; it is meant for the (rare) rejection path, so
/// the accepted path pays nothing for it.
#[must_use]
pub fn punch_id_of(buf: &[u8], limits: &Limits) -> Option<[u8; 16]> {
    if buf.len() > limits.max_bytes(Channel::Stream) {
        return None;
    }
    check_identifier(buf, FRAME_IDENTIFIER).ok()?;
    let frame = root_as_frame_with_opts(&limits.verifier_options(), buf).ok()?;
    let id = frame.body_as_punch()?.punch_id().0;
    (id != [0; 16]).then_some(id)
}

/// Checks the 4-byte file identifier after the root offset. The flatbuffers
/// helper for this asserts on short input, so it is done by hand.
pub(crate) fn check_identifier(buf: &[u8], ident: &str) -> Result<(), Reason> {
    if buf.get(4..8) == Some(ident.as_bytes()) {
        Ok(())
    } else {
        Err(Reason::Malformed)
    }
}

/// Maps a verifier failure to its reason: a missing `(required)` field is
/// `MissingField`, everything else is `Malformed`.
pub(crate) fn verifier_reason(err: InvalidFlatbuffer) -> Reason {
    match err {
        InvalidFlatbuffer::MissingRequiredField { .. } => Reason::MissingField,
        _ => Reason::Malformed,
    }
}

fn check_str(s: &str, max: usize) -> Result<(), Reason> {
    if s.is_empty() {
        Err(Reason::MissingField)
    } else if s.len() > max {
        Err(Reason::FieldTooLong)
    } else {
        Ok(())
    }
}

fn check_opt_str(s: Option<&str>, max: usize) -> Result<(), Reason> {
    match s {
        Some(s) if s.len() > max => Err(Reason::FieldTooLong),
        _ => Ok(()),
    }
}

fn check_time(time_ms: i64, now_ms: i64, limits: &Limits) -> Result<(), Reason> {
    if time_ms < limits.min_time_ms {
        Err(Reason::StaleTimestamp)
    } else if time_ms > now_ms.saturating_add(limits.max_future_skew_ms) {
        Err(Reason::FutureTimestamp)
    } else {
        Ok(())
    }
}

fn check_hello(hello: Hello<'_>, limits: &Limits) -> Result<(), Reason> {
    check_str(hello.token(), limits.max_token_len)?;
    check_str(hello.device_id(), limits.max_string_len)?;
    check_opt_str(hello.client(), limits.max_string_len)
}

fn check_punch(punch: Punch<'_>, now_ms: i64, limits: &Limits) -> Result<(), Reason> {
    if punch.punch_id().0 == [0; 16] {
        return Err(Reason::InvalidPunchId);
    }
    check_str(punch.employee_id(), limits.max_string_len)?;
    let method = punch.method();
    let known = punch.kind().variant_name().is_some()
        && method.variant_name().is_some()
        && punch.terminal_auth().variant_name().is_some();
    if !known {
        return Err(Reason::UnknownEnumValue);
    }
    check_time(punch.device_time_ms(), now_ms, limits)?;
    match punch.position() {
        Some(p) => {
            let (lat, lon, acc) = (p.lat(), p.lon(), p.accuracy_m());
            if !(lat.is_finite() && lon.is_finite() && acc.is_finite()) {
                return Err(Reason::NotFinite);
            }
            if !(-90.0..=90.0).contains(&lat) {
                return Err(Reason::LatitudeOutOfRange);
            }
            if !(-180.0..=180.0).contains(&lon) {
                return Err(Reason::LongitudeOutOfRange);
            }
            if acc < 0.0 {
                return Err(Reason::NegativeAccuracy);
            }
        }
        None if method == PunchMethod::Gps => return Err(Reason::PositionRequired),
        None => {}
    }
    let bssids = punch.bssids().map_or(0, |v| v.len());
    if bssids > limits.max_bssids {
        return Err(Reason::FieldTooLong);
    }
    if method == PunchMethod::Wifi && bssids == 0 {
        return Err(Reason::MissingField);
    }
    check_opt_str(punch.ssid(), limits.max_string_len)?;
    check_opt_str(punch.qr_payload(), limits.max_qr_len)?;
    if method == PunchMethod::Qr && punch.qr_payload().is_none_or(str::is_empty) {
        return Err(Reason::MissingField);
    }
    Ok(())
}

fn check_ping_batch(
    batch: PingBatch<'_>,
    max_fixes: usize,
    now_ms: i64,
    limits: &Limits,
) -> Result<(), Reason> {
    let fixes = batch.fixes();
    if fixes.is_empty() {
        return Err(Reason::EmptyBatch);
    }
    if fixes.len() > max_fixes {
        return Err(Reason::BatchTooLarge);
    }
    let base = batch.base_time_ms();
    if base < limits.min_time_ms {
        return Err(Reason::StaleTimestamp);
    }
    // One pass over the raw 16-byte fixes, no early exit, so the loop stays
    // branch-free; the failing reason is picked afterwards (latitude first).
    let mut lat_bad = false;
    let mut lon_bad = false;
    let mut max_offset = 0u32;
    for fix in fixes.bytes().chunks_exact(size_of::<Fix>()) {
        let lat = i32::from_le_bytes([fix[0], fix[1], fix[2], fix[3]]);
        let lon = i32::from_le_bytes([fix[4], fix[5], fix[6], fix[7]]);
        let offset = u32::from_le_bytes([fix[8], fix[9], fix[10], fix[11]]);
        lat_bad |= !(-LAT_E7_MAX..=LAT_E7_MAX).contains(&lat);
        lon_bad |= !(-LON_E7_MAX..=LON_E7_MAX).contains(&lon);
        max_offset = max_offset.max(offset);
    }
    if lat_bad {
        return Err(Reason::LatitudeOutOfRange);
    }
    if lon_bad {
        return Err(Reason::LongitudeOutOfRange);
    }
    match base.checked_add(i64::from(max_offset)) {
        Some(last) if last <= now_ms.saturating_add(limits.max_future_skew_ms) => Ok(()),
        _ => Err(Reason::FutureTimestamp),
    }
}

/// A verified `Hello`.
#[derive(Debug, Clone, Copy)]
pub struct HelloView<'a>(Hello<'a>);

impl<'a> HelloView<'a> {
    /// The opaque credential, 1..=`max_token_len` bytes.
    #[must_use]
    pub fn token(&self) -> &'a str {
        self.0.token()
    }
    /// The device's id, 1..=`max_string_len` bytes.
    #[must_use]
    pub fn device_id(&self) -> &'a str {
        self.0.device_id()
    }
    /// App name and version, if sent.
    #[must_use]
    pub fn client(&self) -> Option<&'a str> {
        self.0.client()
    }
    /// The generated table, for fields this view has no getter for.
    #[must_use]
    pub fn raw(&self) -> Hello<'a> {
        self.0
    }
}

/// A verified `Punch`: its id is non-zero, its enums are known, its
/// position (if any) is finite and in range, its time is plausible.
#[derive(Debug, Clone, Copy)]
pub struct PunchView<'a>(Punch<'a>);

impl<'a> PunchView<'a> {
    /// The client-generated punch id (never all zero).
    #[must_use]
    pub fn punch_id(&self) -> [u8; 16] {
        self.0.punch_id().0
    }
    /// The employee within the tenant, 1..=`max_string_len` bytes.
    #[must_use]
    pub fn employee_id(&self) -> &'a str {
        self.0.employee_id()
    }
    /// In or out (a known value).
    #[must_use]
    pub fn kind(&self) -> PunchKind {
        self.0.kind()
    }
    /// How the punch was made (a known value).
    #[must_use]
    pub fn method(&self) -> PunchMethod {
        self.0.method()
    }
    /// Device clock at the punch, unix ms, within the accepted window.
    #[must_use]
    pub fn device_time_ms(&self) -> i64 {
        self.0.device_time_ms()
    }
    /// `(lat, lon, accuracy_m)`: finite, in range, accuracy >= 0. Always
    /// present for a `Gps` punch.
    #[must_use]
    pub fn position(&self) -> Option<(f64, f64, f32)> {
        self.0
            .position()
            .map(|p| (p.lat(), p.lon(), p.accuracy_m()))
    }
    /// The BSSIDs seen, at most `max_bssids`; non-empty for a `Wifi` punch.
    pub fn bssids(&self) -> impl ExactSizeIterator<Item = [u8; 6]> + 'a {
        self.0
            .bssids()
            .unwrap_or_default()
            .bytes()
            .chunks_exact(size_of::<Bssid>())
            .map(|b| [b[0], b[1], b[2], b[3], b[4], b[5]])
    }
    /// Network name, informational only.
    #[must_use]
    pub fn ssid(&self) -> Option<&'a str> {
        self.0.ssid()
    }
    /// Scanned QR payload; non-empty for a `Qr` punch.
    #[must_use]
    pub fn qr_payload(&self) -> Option<&'a str> {
        self.0.qr_payload()
    }
    /// How a terminal identified the employee (a known value).
    #[must_use]
    pub fn terminal_auth(&self) -> TerminalAuth {
        self.0.terminal_auth()
    }
    /// Taken offline and uploaded later.
    #[must_use]
    pub fn offline(&self) -> bool {
        self.0.offline()
    }
    /// The OS reported a mock location provider.
    #[must_use]
    pub fn mock_location(&self) -> bool {
        self.0.mock_location()
    }
    /// The generated table, for fields this view has no getter for.
    #[must_use]
    pub fn raw(&self) -> Punch<'a> {
        self.0
    }
}

/// A verified `PingBatch`: 1..=limit fixes, all in range, none in the
/// future.
#[derive(Debug, Clone, Copy)]
pub struct PingBatchView<'a>(PingBatch<'a>);

impl<'a> PingBatchView<'a> {
    /// Per-device batch sequence number; 0 when the device does not number
    /// its batches.
    #[must_use]
    pub fn device_seq(&self) -> u64 {
        self.0.device_seq()
    }
    /// Unix ms that every fix's `offset_ms` is added to.
    #[must_use]
    pub fn base_time_ms(&self) -> i64 {
        self.0.base_time_ms()
    }
    /// Number of fixes, at least 1.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.fixes().len()
    }
    /// Always false for a verified batch; present for API symmetry with `len`.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.fixes().is_empty()
    }
    /// The fixes, decoded to degrees, metres and absolute times.
    #[must_use]
    pub fn fixes(&self) -> FixIter<'a> {
        FixIter {
            chunks: self.0.fixes().bytes().chunks_exact(size_of::<Fix>()),
            base_time_ms: self.0.base_time_ms(),
        }
    }
    /// The fixes as stored on the wire.
    #[must_use]
    pub fn raw_fixes(&self) -> Vector<'a, Fix> {
        self.0.fixes()
    }
    /// The generated table, for fields this view has no getter for.
    #[must_use]
    pub fn raw(&self) -> PingBatch<'a> {
        self.0
    }
}

/// One position of a verified ping batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FixReading {
    /// Latitude, degrees.
    pub lat: f64,
    /// Longitude, degrees.
    pub lon: f64,
    /// Accuracy radius, metres (decimetre resolution on the wire).
    pub accuracy_m: f32,
    /// Absolute time, unix ms (`base_time_ms + offset_ms`).
    pub time_ms: i64,
    /// The OS flagged this fix as mock.
    pub mock_location: bool,
}

/// Flag bit in `Fix::flags`: mock location.
pub const FIX_FLAG_MOCK: u16 = 1;

/// Iterator over a verified batch's fixes; allocation-free.
#[derive(Debug, Clone)]
pub struct FixIter<'a> {
    chunks: core::slice::ChunksExact<'a, u8>,
    base_time_ms: i64,
}

impl Iterator for FixIter<'_> {
    type Item = FixReading;

    #[inline]
    fn next(&mut self) -> Option<FixReading> {
        let f = self.chunks.next()?;
        let lat_e7 = i32::from_le_bytes([f[0], f[1], f[2], f[3]]);
        let lon_e7 = i32::from_le_bytes([f[4], f[5], f[6], f[7]]);
        let offset = u32::from_le_bytes([f[8], f[9], f[10], f[11]]);
        let accuracy_dm = u16::from_le_bytes([f[12], f[13]]);
        let flags = u16::from_le_bytes([f[14], f[15]]);
        Some(FixReading {
            lat: f64::from(lat_e7) * 1e-7,
            lon: f64::from(lon_e7) * 1e-7,
            accuracy_m: f32::from(accuracy_dm) * 0.1,
            // The parser checked that base + max offset does not overflow.
            time_ms: self.base_time_ms.saturating_add(i64::from(offset)),
            mock_location: flags & FIX_FLAG_MOCK != 0,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.chunks.size_hint()
    }
}

impl ExactSizeIterator for FixIter<'_> {}
