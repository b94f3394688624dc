//! Byte layout of segment headers and entries (see the module docs of
//! [`crate::log`] for the table). Everything here is pure: no I/O.

use super::Lsn;

/// Magic bytes opening every segment file.
pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"FGLOGSEG";
/// On-disk format version written into segment headers.
pub(crate) const FORMAT_VERSION: u16 = 1;
/// Size of the segment header.
pub(crate) const SEGMENT_HEADER_LEN: usize = 32;
/// Size of the header in front of every entry's payload.
pub(crate) const ENTRY_HEADER_LEN: usize = 24;
/// Largest payload the format accepts, whatever the configuration says.
/// Recovery and readers use it to reject garbage lengths early.
pub(crate) const HARD_MAX_RECORD_BYTES: usize = 16 << 20;
/// Largest write batch the format accepts (the header stores it as `u32`).
pub(crate) const HARD_MAX_BATCH_BYTES: usize = 256 << 20;

/// Decoded segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    /// LSN of the first entry in the segment (also its file name).
    pub first_lsn: Lsn,
    /// The largest number of bytes the writer of this segment ever left
    /// un-synced; recovery uses it to tell a torn tail from corruption.
    pub max_unsynced: u32,
}

impl SegmentHeader {
    /// Encodes the header, CRC included.
    pub(crate) fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut b = [0u8; SEGMENT_HEADER_LEN];
        b[0..8].copy_from_slice(&SEGMENT_MAGIC);
        b[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        // 10..12 flags, 24..28 reserved: zero.
        b[12..16].copy_from_slice(&self.max_unsynced.to_le_bytes());
        b[16..24].copy_from_slice(&self.first_lsn.0.to_le_bytes());
        let crc = crc32c::crc32c(&b[0..28]);
        b[28..32].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks a header; the error says what is wrong.
    pub(crate) fn decode(b: &[u8]) -> Result<Self, &'static str> {
        if b.len() < SEGMENT_HEADER_LEN {
            return Err("segment header is shorter than 32 bytes");
        }
        if b[0..8] != SEGMENT_MAGIC {
            return Err("segment header has the wrong magic (not a fencegate log segment)");
        }
        if le_u32(b, 28) != crc32c::crc32c(&b[0..28]) {
            return Err("segment header CRC mismatch");
        }
        let version = u16::from_le_bytes([b[8], b[9]]);
        if version != FORMAT_VERSION {
            return Err("segment format version is not supported by this build");
        }
        Ok(Self {
            max_unsynced: le_u32(b, 12),
            first_lsn: Lsn(le_u64(b, 16)),
        })
    }
}

/// Magic bytes opening every segment footer file.
pub(crate) const FOOTER_MAGIC: [u8; 8] = *b"FGLOGFTR";
/// Size of a segment footer file.
pub(crate) const FOOTER_LEN: usize = 64;

/// The footer of a sealed segment, kept in the sidecar file
/// `<first LSN>.seg.footer`. It is written (synced, renamed, folder synced)
/// after the segment's last entry is synced and before the next segment is
/// created, so recovery can trust a sealed segment by reading 64 bytes
/// instead of the whole segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentFooter {
    /// LSN of the segment's first entry (also its file name).
    pub first_lsn: Lsn,
    /// LSN after its last entry; the entry count is `end_lsn - first_lsn`.
    pub end_lsn: Lsn,
    /// Length of the segment file in bytes, header included.
    pub seg_len: u64,
    /// Smallest entry time (ms since the Unix epoch).
    pub min_time_ms: u64,
    /// Largest entry time; age retention uses it.
    pub max_time_ms: u64,
    /// CRC32C of every byte after the segment header (all entries), so a
    /// scrub can check the whole segment against one number.
    pub entries_crc: u32,
}

impl SegmentFooter {
    /// Encodes the footer, CRC included.
    pub(crate) fn encode(&self) -> [u8; FOOTER_LEN] {
        let mut b = [0u8; FOOTER_LEN];
        b[0..8].copy_from_slice(&FOOTER_MAGIC);
        b[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        // 10..12 flags, 12..16 reserved: zero.
        b[16..24].copy_from_slice(&self.first_lsn.0.to_le_bytes());
        b[24..32].copy_from_slice(&self.end_lsn.0.to_le_bytes());
        b[32..40].copy_from_slice(&self.seg_len.to_le_bytes());
        b[40..48].copy_from_slice(&self.min_time_ms.to_le_bytes());
        b[48..56].copy_from_slice(&self.max_time_ms.to_le_bytes());
        b[56..60].copy_from_slice(&self.entries_crc.to_le_bytes());
        let crc = crc32c::crc32c(&b[0..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks a footer; the error says what is wrong.
    pub(crate) fn decode(b: &[u8]) -> Result<Self, &'static str> {
        if b.len() != FOOTER_LEN {
            return Err("segment footer is not 64 bytes long");
        }
        if b[0..8] != FOOTER_MAGIC {
            return Err("segment footer has the wrong magic");
        }
        if le_u32(b, 60) != crc32c::crc32c(&b[0..60]) {
            return Err("segment footer CRC mismatch");
        }
        if u16::from_le_bytes([b[8], b[9]]) != FORMAT_VERSION {
            return Err("segment footer version is not supported by this build");
        }
        let f = Self {
            first_lsn: Lsn(le_u64(b, 16)),
            end_lsn: Lsn(le_u64(b, 24)),
            seg_len: le_u64(b, 32),
            min_time_ms: le_u64(b, 40),
            max_time_ms: le_u64(b, 48),
            entries_crc: le_u32(b, 56),
        };
        if f.end_lsn <= f.first_lsn || f.seg_len <= SEGMENT_HEADER_LEN as u64 {
            return Err(
                "segment footer describes an empty segment (footers are only written for sealed segments with entries)",
            );
        }
        Ok(f)
    }
}

/// Decoded entry header (the payload follows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EntryHeader {
    /// CRC32C stored in the entry.
    pub crc: u32,
    /// Payload length in bytes.
    pub len: u32,
    /// Entry's log sequence number.
    pub lsn: Lsn,
    /// Caller-supplied time, milliseconds since the Unix epoch.
    pub time_ms: u64,
}

impl EntryHeader {
    /// Reads the header fields; `b` must hold at least [`ENTRY_HEADER_LEN`] bytes.
    pub(crate) fn read(b: &[u8]) -> Self {
        Self {
            crc: le_u32(b, 0),
            len: le_u32(b, 4),
            lsn: Lsn(le_u64(b, 8)),
            time_ms: le_u64(b, 16),
        }
    }

    /// Total size of the entry on disk.
    pub(crate) fn entry_len(&self) -> usize {
        ENTRY_HEADER_LEN + self.len as usize
    }
}

/// CRC of a whole encoded entry (`b` = header + payload): covers every byte
/// after the CRC field, so length, LSN and time are protected too.
pub(crate) fn entry_crc(b: &[u8]) -> u32 {
    crc32c::crc32c(&b[4..])
}

/// Appends an entry with LSN and CRC left zero; the writer stamps them.
pub(crate) fn push_unstamped(buf: &mut Vec<u8>, payload: &[u8], time_ms: u64) {
    buf.extend_from_slice(&0u32.to_le_bytes());
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&0u64.to_le_bytes());
    buf.extend_from_slice(&time_ms.to_le_bytes());
    buf.extend_from_slice(payload);
}

/// Writes `lsn` and the CRC into the entry at the start of `b` and returns
/// the entry's length and time.
pub(crate) fn stamp(b: &mut [u8], lsn: Lsn) -> (usize, u64) {
    let h = EntryHeader::read(b);
    let len = h.entry_len();
    b[8..16].copy_from_slice(&lsn.0.to_le_bytes());
    let crc = entry_crc(&b[..len]);
    b[0..4].copy_from_slice(&crc.to_le_bytes());
    (len, h.time_ms)
}

/// Outcome of checking the bytes at one offset of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    /// A complete entry with a good CRC and the expected LSN.
    Ok(EntryHeader),
    /// The bytes end before the entry does (header or payload cut short).
    Incomplete,
    /// The entry is complete but wrong; the reason says how.
    Bad(&'static str),
}

/// Checks the entry at the start of `b`, expecting LSN `expect`.
pub(crate) fn check_entry(b: &[u8], expect: Lsn) -> Check {
    if b.len() < ENTRY_HEADER_LEN {
        return Check::Incomplete;
    }
    let h = EntryHeader::read(b);
    if h.len as usize > HARD_MAX_RECORD_BYTES {
        return Check::Bad("entry length exceeds the 16 MiB format limit");
    }
    if b.len() < h.entry_len() {
        return Check::Incomplete;
    }
    if entry_crc(&b[..h.entry_len()]) != h.crc {
        return Check::Bad("entry CRC mismatch");
    }
    if h.lsn != expect {
        return Check::Bad("entry LSN is out of sequence");
    }
    Check::Ok(h)
}

pub(crate) fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(crate) fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_damage() {
        let h = SegmentHeader {
            first_lsn: Lsn(42),
            max_unsynced: 1 << 20,
        };
        let mut b = h.encode();
        assert_eq!(SegmentHeader::decode(&b), Ok(h));
        b[17] ^= 1;
        assert_eq!(
            SegmentHeader::decode(&b),
            Err("segment header CRC mismatch")
        );
        assert!(SegmentHeader::decode(&b[..31]).is_err());
    }

    #[test]
    fn footer_round_trip_and_damage() {
        let f = SegmentFooter {
            first_lsn: Lsn(10),
            end_lsn: Lsn(20),
            seg_len: 4096,
            min_time_ms: 5,
            max_time_ms: 9,
            entries_crc: 0xdead_beef,
        };
        let mut b = f.encode();
        assert_eq!(SegmentFooter::decode(&b), Ok(f));
        b[30] ^= 1;
        assert_eq!(
            SegmentFooter::decode(&b),
            Err("segment footer CRC mismatch")
        );
        assert!(SegmentFooter::decode(&b[..63]).is_err());
        let empty = SegmentFooter {
            end_lsn: Lsn(10),
            ..f
        }
        .encode();
        assert!(SegmentFooter::decode(&empty).is_err());
    }

    #[test]
    fn entry_stamp_then_check() {
        let mut buf = Vec::new();
        push_unstamped(&mut buf, b"hello", 7);
        assert_eq!(stamp(&mut buf, Lsn(9)), (ENTRY_HEADER_LEN + 5, 7));
        match check_entry(&buf, Lsn(9)) {
            Check::Ok(h) => assert_eq!((h.len, h.lsn, h.time_ms), (5, Lsn(9), 7)),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            check_entry(&buf, Lsn(10)),
            Check::Bad("entry LSN is out of sequence")
        );
        assert_eq!(
            check_entry(&buf[..buf.len() - 1], Lsn(9)),
            Check::Incomplete
        );
        let last = buf.len() - 1;
        buf[last] ^= 0x40;
        assert_eq!(check_entry(&buf, Lsn(9)), Check::Bad("entry CRC mismatch"));
    }
}
