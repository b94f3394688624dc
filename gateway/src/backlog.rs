//! The backlog stream's framing (docs/PROTOCOL.md): a unidirectional QUIC
//! stream carries ping-batch frames, each behind a 4-byte little-endian
//! length, and ends with the stream's FIN on a frame boundary.
//!
//! The edge reads the stream piece by piece ([`frame_len`] is the one
//! decision it takes on the untrusted prefix); [`split_backlog`] applies the
//! same rules to a stream that has arrived whole, so the fuzzers and tests
//! can drive the framing without a QUIC connection.

use fencegate_schema::Reason;

/// Bytes of the length prefix in front of every backlog frame.
pub const LEN_PREFIX: usize = 4;

/// The length a frame's prefix announces, or `Oversize` when it is above
/// `max` (`Limits::max_backlog_frame_bytes`). Checked before any of the
/// frame is read, so a hostile prefix never makes the edge allocate more
/// than `max` bytes.
///
/// # Errors
///
/// [`Reason::Oversize`] when the announced length exceeds `max`.
pub fn frame_len(prefix: [u8; LEN_PREFIX], max: usize) -> Result<usize, Reason> {
    let len = u32::from_le_bytes(prefix) as usize;
    if len > max {
        Err(Reason::Oversize)
    } else {
        Ok(len)
    }
}

/// Appends `frame` to `out` behind its length prefix: the encoding
/// [`split_backlog`] undoes.
///
/// # Panics
///
/// When `frame` is longer than `u32::MAX` bytes, which no frame the
/// protocol allows can be.
pub fn push_frame(out: &mut Vec<u8>, frame: &[u8]) {
    let len = u32::try_from(frame.len()).expect("a backlog frame fits a u32 length");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(frame);
}

/// Splits a whole backlog stream into its frames, with the edge's rules:
/// the stream may end only on a frame boundary, a prefix cut short or a
/// frame shorter than its prefix says is `Malformed`, and a prefix above
/// `max` is `Oversize`. After the first error the iterator ends, as the
/// edge stops reading the stream there.
pub fn split_backlog(stream: &[u8], max: usize) -> SplitBacklog<'_> {
    SplitBacklog {
        rest: stream,
        max,
        done: false,
    }
}

/// The iterator [`split_backlog`] returns: each item is one frame's bytes
/// (the prefix stripped) or the reason the stream was refused.
#[derive(Debug, Clone)]
pub struct SplitBacklog<'a> {
    rest: &'a [u8],
    max: usize,
    done: bool,
}

impl<'a> SplitBacklog<'a> {
    /// The bytes not consumed yet (after an error: from the frame that
    /// failed on).
    pub fn rest(&self) -> &'a [u8] {
        self.rest
    }
}

impl<'a> Iterator for SplitBacklog<'a> {
    type Item = Result<&'a [u8], Reason>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.rest.is_empty() {
            return None;
        }
        let fail = |s: &mut Self, r: Reason| {
            s.done = true;
            Some(Err(r))
        };
        let Some((prefix, body)) = self.rest.split_first_chunk::<LEN_PREFIX>() else {
            return fail(self, Reason::Malformed);
        };
        let len = match frame_len(*prefix, self.max) {
            Ok(len) => len,
            Err(r) => return fail(self, r),
        };
        let Some((frame, rest)) = body.split_at_checked(len) else {
            return fail(self, Reason::Malformed);
        };
        self.rest = rest;
        Some(Ok(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_back_out_of_their_encoding() {
        let mut s = Vec::new();
        for f in [&b"abc"[..], b"", b"0123456789"] {
            push_frame(&mut s, f);
        }
        let got: Vec<_> = split_backlog(&s, 10).collect();
        assert_eq!(got, vec![Ok(&b"abc"[..]), Ok(b""), Ok(b"0123456789")]);
    }

    #[test]
    fn a_stream_must_end_on_a_frame_boundary() {
        let mut s = Vec::new();
        push_frame(&mut s, b"abc");
        // A cut prefix and a cut body are both malformed.
        for extra in [&[1u8][..], &[5, 0, 0, 0, b'x']] {
            let mut t = s.clone();
            t.extend_from_slice(extra);
            let got: Vec<_> = split_backlog(&t, 10).collect();
            assert_eq!(got, vec![Ok(&b"abc"[..]), Err(Reason::Malformed)]);
        }
    }

    #[test]
    fn an_oversize_prefix_ends_the_stream() {
        let mut s = Vec::new();
        push_frame(&mut s, b"01234567890");
        push_frame(&mut s, b"a");
        let got: Vec<_> = split_backlog(&s, 10).collect();
        assert_eq!(got, vec![Err(Reason::Oversize)]);
        assert_eq!(frame_len([0xff; 4], usize::MAX), Ok(u32::MAX as usize));
    }
}
