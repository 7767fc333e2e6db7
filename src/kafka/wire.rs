//! Kafka's primitive wire types: fixed-width big-endian integers, varints and
//! the length prefixes of strings, bytes and arrays in both the classic and
//! the compact ("flexible version") encodings.

use byteorder::{BigEndian, ByteOrder};
use std::fmt;

/// Why bytes could not be decoded. Each variant says enough to find the
/// offending byte in a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The input ended `need` bytes into a field that had only `have` left.
    Truncated { at: usize, need: usize, have: usize },
    /// A length, varint or enum value that no valid message carries.
    Invalid { at: usize, what: String },
    /// The message is well-formed but this API version is not one the proxy
    /// decodes.
    UnsupportedVersion { api_key: i16, version: i16 },
    /// Bytes were left over after the message ended.
    TrailingBytes { at: usize, left: usize },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated { at, need, have } => {
                write!(f, "truncated at byte {at}: needed {need} more bytes, {have} left")
            }
            DecodeError::Invalid { at, what } => write!(f, "invalid data at byte {at}: {what}"),
            DecodeError::UnsupportedVersion { api_key, version } => {
                write!(f, "unsupported version {version} of API key {api_key}")
            }
            DecodeError::TrailingBytes { at, left } => {
                write!(f, "{left} unexpected trailing bytes at byte {at}")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

pub type DecodeResult<T> = Result<T, DecodeError>;

/// A cursor over a byte slice. Every read checks bounds and reports where it
/// failed; nothing here panics on hostile input.
#[derive(Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The bytes not yet read.
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    pub fn invalid<T>(&self, what: impl Into<String>) -> DecodeResult<T> {
        Err(DecodeError::Invalid { at: self.pos, what: what.into() })
    }

    pub fn take(&mut self, n: usize) -> DecodeResult<&'a [u8]> {
        if n > self.remaining() {
            return Err(DecodeError::Truncated { at: self.pos, need: n, have: self.remaining() });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub fn i8(&mut self) -> DecodeResult<i8> {
        Ok(self.take(1)?[0] as i8)
    }
    pub fn i16(&mut self) -> DecodeResult<i16> {
        Ok(BigEndian::read_i16(self.take(2)?))
    }
    pub fn u16(&mut self) -> DecodeResult<u16> {
        Ok(BigEndian::read_u16(self.take(2)?))
    }
    pub fn i32(&mut self) -> DecodeResult<i32> {
        Ok(BigEndian::read_i32(self.take(4)?))
    }
    pub fn u32(&mut self) -> DecodeResult<u32> {
        Ok(BigEndian::read_u32(self.take(4)?))
    }
    pub fn i64(&mut self) -> DecodeResult<i64> {
        Ok(BigEndian::read_i64(self.take(8)?))
    }
    pub fn f64(&mut self) -> DecodeResult<f64> {
        Ok(BigEndian::read_f64(self.take(8)?))
    }

    /// Unsigned LEB128 varint of at most 32 bits (Kafka's "UNSIGNED_VARINT").
    pub fn uvarint(&mut self) -> DecodeResult<u32> {
        let start = self.pos;
        let mut value: u32 = 0;
        for i in 0..5 {
            let b = self.take(1)?[0];
            value |= ((b & 0x7f) as u32) << (7 * i);
            if b & 0x80 == 0 {
                if i == 4 && b > 0x0f {
                    break;
                }
                return Ok(value);
            }
        }
        Err(DecodeError::Invalid { at: start, what: "unsigned varint longer than 32 bits".into() })
    }

    /// Unsigned LEB128 varint of at most 64 bits.
    pub fn uvarlong(&mut self) -> DecodeResult<u64> {
        let start = self.pos;
        let mut value: u64 = 0;
        for i in 0..10 {
            let b = self.take(1)?[0];
            value |= ((b & 0x7f) as u64) << (7 * i);
            if b & 0x80 == 0 {
                if i == 9 && b > 0x01 {
                    break;
                }
                return Ok(value);
            }
        }
        Err(DecodeError::Invalid { at: start, what: "varint longer than 64 bits".into() })
    }

    /// Zig-zag signed varint (record fields).
    pub fn varint(&mut self) -> DecodeResult<i32> {
        let u = self.uvarint()?;
        Ok(((u >> 1) as i32) ^ -((u & 1) as i32))
    }

    /// Zig-zag signed varlong (record fields).
    pub fn varlong(&mut self) -> DecodeResult<i64> {
        let u = self.uvarlong()?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }

    /// Length of a compact string/bytes/array: `None` for null.
    pub fn compact_len(&mut self) -> DecodeResult<Option<usize>> {
        let n = self.uvarint()?;
        Ok(if n == 0 { None } else { Some(n as usize - 1) })
    }

    /// Length prefix of a classic nullable string (int16, -1 = null).
    pub fn i16_len(&mut self) -> DecodeResult<Option<usize>> {
        let at = self.pos;
        match self.i16()? {
            -1 => Ok(None),
            n if n >= 0 => Ok(Some(n as usize)),
            n => Err(DecodeError::Invalid { at, what: format!("negative length {n}") }),
        }
    }

    /// Length prefix of classic bytes or arrays (int32, -1 = null).
    pub fn i32_len(&mut self) -> DecodeResult<Option<usize>> {
        let at = self.pos;
        match self.i32()? {
            -1 => Ok(None),
            n if n >= 0 => Ok(Some(n as usize)),
            n => Err(DecodeError::Invalid { at, what: format!("negative length {n}") }),
        }
    }

    pub fn string_bytes(&mut self, len: usize) -> DecodeResult<&'a str> {
        let at = self.pos;
        let raw = self.take(len)?;
        std::str::from_utf8(raw)
            .map_err(|_| DecodeError::Invalid { at, what: "string is not valid UTF-8".into() })
    }

    /// A classic non-nullable string (int16 length).
    pub fn string(&mut self) -> DecodeResult<&'a str> {
        match self.i16_len()? {
            Some(n) => self.string_bytes(n),
            None => self.invalid("null where a string is required"),
        }
    }

    /// A classic nullable string (int16 length).
    pub fn nullable_string(&mut self) -> DecodeResult<Option<&'a str>> {
        match self.i16_len()? {
            Some(n) => self.string_bytes(n).map(Some),
            None => Ok(None),
        }
    }

    /// An array length that is checked against the bytes left: every element
    /// takes at least one byte, so a larger count is corrupt and must not be
    /// allowed to drive a huge allocation.
    pub fn checked_count(&self, n: usize, at: usize) -> DecodeResult<usize> {
        if n > self.remaining() {
            return Err(DecodeError::Invalid {
                at,
                what: format!("array of {n} elements in {} bytes", self.remaining()),
            });
        }
        Ok(n)
    }
}

pub fn put_i8(out: &mut Vec<u8>, v: i8) {
    out.push(v as u8);
}
pub fn put_i16(out: &mut Vec<u8>, v: i16) {
    out.extend_from_slice(&v.to_be_bytes());
}
pub fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}
pub fn put_i32(out: &mut Vec<u8>, v: i32) {
    out.extend_from_slice(&v.to_be_bytes());
}
pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}
pub fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_be_bytes());
}
pub fn put_f64(out: &mut Vec<u8>, v: f64) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub fn put_uvarint(out: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn put_uvarlong(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn put_varint(out: &mut Vec<u8>, v: i32) {
    put_uvarint(out, ((v << 1) ^ (v >> 31)) as u32);
}

pub fn put_varlong(out: &mut Vec<u8>, v: i64) {
    put_uvarlong(out, ((v << 1) ^ (v >> 63)) as u64);
}

/// Number of bytes `put_varint` writes for `v`.
pub fn varint_len(v: i32) -> usize {
    let mut u = ((v << 1) ^ (v >> 31)) as u32;
    let mut n = 1;
    while u >= 0x80 {
        u >>= 7;
        n += 1;
    }
    n
}

/// Compact length: `None` (null) is 0, otherwise len + 1.
pub fn put_compact_len(out: &mut Vec<u8>, len: Option<usize>) {
    put_uvarint(out, len.map_or(0, |n| n as u32 + 1));
}

pub fn put_string(out: &mut Vec<u8>, s: &str) {
    put_i16(out, s.len() as i16);
    out.extend_from_slice(s.as_bytes());
}

pub fn put_nullable_string(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => put_string(out, s),
        None => put_i16(out, -1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uvarint_round_trip_and_known_bytes() {
        for (v, bytes) in [
            (0u32, vec![0x00]),
            (1, vec![0x01]),
            (127, vec![0x7f]),
            (128, vec![0x80, 0x01]),
            (300, vec![0xac, 0x02]),
            (u32::MAX, vec![0xff, 0xff, 0xff, 0xff, 0x0f]),
        ] {
            let mut out = Vec::new();
            put_uvarint(&mut out, v);
            assert_eq!(out, bytes, "encoding {v}");
            assert_eq!(Reader::new(&bytes).uvarint().unwrap(), v);
        }
    }

    #[test]
    fn zigzag_varints_match_kafka() {
        // Values from Kafka's ByteUtilsTest.
        for (v, bytes) in [(0i32, vec![0x00]), (-1, vec![0x01]), (1, vec![0x02]), (-64, vec![0x7f]), (64, vec![0x80, 0x01])] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out, bytes);
            assert_eq!(varint_len(v), bytes.len());
            assert_eq!(Reader::new(&bytes).varint().unwrap(), v);
        }
        for v in [i64::MIN, -1, 0, 1, i64::MAX, 1 << 40] {
            let mut out = Vec::new();
            put_varlong(&mut out, v);
            assert_eq!(Reader::new(&out).varlong().unwrap(), v);
        }
    }

    #[test]
    fn overlong_varint_is_an_error_not_a_panic() {
        let bytes = [0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert!(matches!(Reader::new(&bytes).uvarint(), Err(DecodeError::Invalid { .. })));
        let bytes = [0xffu8; 11];
        assert!(matches!(Reader::new(&bytes).uvarlong(), Err(DecodeError::Invalid { .. })));
    }

    #[test]
    fn truncation_reports_position() {
        let mut r = Reader::new(&[0, 1, 2]);
        r.i16().unwrap();
        assert_eq!(r.i32(), Err(DecodeError::Truncated { at: 2, need: 4, have: 1 }));
    }

    #[test]
    fn negative_lengths_other_than_null_are_invalid() {
        assert!(Reader::new(&[0xff, 0xfe]).i16_len().is_err());
        assert_eq!(Reader::new(&[0xff, 0xff]).i16_len().unwrap(), None);
    }
}
