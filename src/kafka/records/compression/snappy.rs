//! snappy (attribute value 2) in both framings Kafka meets: xerial
//! (snappy-java's stream: a 16-byte header, then chunks of `[int32
//! length][raw snappy block]`) and one raw block. The blocks are snap's;
//! decompression checks the size a block declares before allocating it.

use super::{Codec, CodecError, Compression, ReadStream, SnappyFraming, MAX_UNCOMPRESSED_BYTES};
use crate::kafka::wire::put_i32;
use std::io::{self, BufRead, Read};

/// xerial snappy chunk size: `SnappyOutputStream`'s default, which Kafka uses.
const XERIAL_BLOCK: usize = 32 * 1024;
/// xerial snappy stream header: magic, then version 1, compatible version 1.
const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
const XERIAL_HEADER_LEN: usize = 16;

const SNAPPY: Compression = Compression::Snappy;

/// The framing of snappy-compressed `data`.
pub(super) fn framing(data: &[u8]) -> SnappyFraming {
    if is_xerial(data) {
        SnappyFraming::Xerial
    } else {
        SnappyFraming::Raw
    }
}

fn is_xerial(data: &[u8]) -> bool {
    data.len() >= XERIAL_HEADER_LEN && data[..8] == XERIAL_MAGIC
}

/// The decompressed size a raw snappy block declares, refused if it exceeds
/// what `input` can expand to (snappy's densest element, a 3-byte copy of 64
/// bytes, is ~21x) or `room`.
fn declared_len(input: &[u8], room: usize) -> Result<usize, CodecError> {
    let n = snap::raw::decompress_len(input).map_err(|e| CodecError::failed(SNAPPY, e))?;
    if n > room {
        return Err(CodecError::too_large(SNAPPY));
    }
    if n > input.len().saturating_mul(22).saturating_add(64) {
        return Err(CodecError::failed(SNAPPY, format!("block of {} bytes claims {n} decompressed bytes", input.len())));
    }
    Ok(n)
}

/// Decompress one raw snappy block of at most `room` bytes, appending to
/// `out`.
fn raw_into(input: &[u8], out: &mut Vec<u8>, room: usize) -> Result<(), CodecError> {
    let n = declared_len(input, room)?;
    if n == 0 {
        // An empty block is the single byte 0; snap refuses empty input.
        return if input == [0] { Ok(()) } else { Err(CodecError::failed(SNAPPY, "empty block")) };
    }
    let start = out.len();
    out.resize(start + n, 0);
    match snap::raw::Decoder::new().decompress(input, &mut out[start..]) {
        Ok(got) if got == n => Ok(()),
        Ok(got) => Err(CodecError::failed(SNAPPY, format!("block gave {got} bytes, declared {n}"))),
        Err(e) => {
            out.truncate(start);
            Err(CodecError::failed(SNAPPY, e))
        }
    }
}

/// Reads xerial-framed snappy chunk by chunk, so that a caller who needs
/// only the first record decompresses only the chunks it spans.
struct XerialReader<'a> {
    rest: &'a [u8],
    chunk: Vec<u8>,
    pos: usize,
    total: usize,
}

impl<'a> XerialReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        XerialReader { rest: &data[XERIAL_HEADER_LEN..], chunk: Vec::new(), pos: 0, total: 0 }
    }

    /// The next raw snappy block, skipping the stream headers of
    /// concatenated streams (snappy-java reads those); `None` at the end.
    fn next_block(&mut self) -> Result<Option<&'a [u8]>, CodecError> {
        while is_xerial(self.rest) {
            self.rest = &self.rest[XERIAL_HEADER_LEN..];
        }
        if self.rest.is_empty() {
            return Ok(None);
        }
        if self.rest.len() < 4 {
            return Err(CodecError::Truncated { what: "xerial snappy chunk length", need: 4, have: self.rest.len() });
        }
        let len = i32::from_be_bytes([self.rest[0], self.rest[1], self.rest[2], self.rest[3]]);
        let len =
            usize::try_from(len).map_err(|_| CodecError::failed(SNAPPY, format!("negative xerial chunk length {len}")))?;
        let body = self.rest.get(4..4 + len).ok_or(CodecError::Truncated {
            what: "xerial snappy chunk",
            need: len,
            have: self.rest.len() - 4,
        })?;
        self.rest = &self.rest[4 + len..];
        Ok(Some(body))
    }

    /// Decode the next non-empty chunk into `self.chunk`; false at the end.
    fn next_chunk(&mut self) -> Result<bool, CodecError> {
        self.chunk.clear();
        self.pos = 0;
        while let Some(block) = self.next_block()? {
            let room = MAX_UNCOMPRESSED_BYTES.saturating_sub(self.total);
            raw_into(block, &mut self.chunk, room)?;
            if !self.chunk.is_empty() {
                self.total += self.chunk.len();
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Decompress all remaining chunks straight into `out`, at most `room`
    /// bytes.
    fn read_all(mut self, out: &mut Vec<u8>, room: usize) -> Result<(), CodecError> {
        let limit = out.len().saturating_add(room);
        while let Some(block) = self.next_block()? {
            raw_into(block, out, limit.saturating_sub(out.len()))?;
        }
        Ok(())
    }
}

impl Read for XerialReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for XerialReader<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos == self.chunk.len() {
            self.chunk.clear();
            self.pos = 0;
            self.next_chunk().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        }
        Ok(&self.chunk[self.pos..])
    }
    fn consume(&mut self, amt: usize) {
        self.pos = (self.pos + amt).min(self.chunk.len());
    }
}

/// Append one raw snappy block of `chunk` to `out`; returns its length.
fn compress_block(enc: &mut snap::raw::Encoder, chunk: &[u8], out: &mut Vec<u8>) -> Result<usize, CodecError> {
    let start = out.len();
    out.resize(start + snap::raw::max_compress_len(chunk.len()), 0);
    let n = enc.compress(chunk, &mut out[start..]).map_err(|e| CodecError::failed(SNAPPY, e))?;
    out.truncate(start + n);
    Ok(n)
}

pub(super) struct Snappy;

impl Codec for Snappy {
    const KIND: Compression = SNAPPY;

    /// Writes the framing the input had, so that a re-compressed batch
    /// reads like the client's.
    fn compress_into(data: &[u8], framing: SnappyFraming, out: &mut Vec<u8>) -> Result<(), CodecError> {
        let mut enc = snap::raw::Encoder::new();
        match framing {
            SnappyFraming::Raw => {
                compress_block(&mut enc, data, out)?;
            }
            SnappyFraming::Xerial => {
                out.extend_from_slice(&XERIAL_MAGIC);
                put_i32(out, 1);
                put_i32(out, 1);
                for chunk in data.chunks(XERIAL_BLOCK) {
                    let at = out.len();
                    put_i32(out, 0);
                    let n = compress_block(&mut enc, chunk, out)?;
                    out[at..at + 4].copy_from_slice(&(n as i32).to_be_bytes());
                }
            }
        }
        Ok(())
    }

    fn decompress_into(data: &[u8], out: &mut Vec<u8>, room: usize) -> Result<SnappyFraming, CodecError> {
        if is_xerial(data) {
            XerialReader::new(data).read_all(out, room)?;
            return Ok(SnappyFraming::Xerial);
        }
        raw_into(data, out, room)?;
        Ok(SnappyFraming::Raw)
    }

    /// Xerial chunks are decoded as the reader reaches them; a raw block
    /// is decoded whole first.
    fn stream<S: ReadStream>(data: &[u8], reader: S) -> Result<S::Output, CodecError> {
        if is_xerial(data) {
            return Ok(reader.read(XerialReader::new(data)));
        }
        let mut plain = Vec::new();
        raw_into(data, &mut plain, MAX_UNCOMPRESSED_BYTES)?;
        Ok(reader.read(&plain[..]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xerial_reader_streams_chunks() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut c = Vec::new();
        Snappy::compress_into(&data, SnappyFraming::Xerial, &mut c).unwrap();
        let mut x = XerialReader::new(&c);
        let first = x.fill_buf().unwrap().len();
        assert_eq!(first, XERIAL_BLOCK, "only the first chunk is decoded");
        let mut all = Vec::new();
        x.read_to_end(&mut all).unwrap();
        assert_eq!(all, data);
    }

    #[test]
    fn snappy_bomb_is_refused_before_allocating() {
        // A raw block declaring 2^32-1 bytes in 6 bytes of input.
        let bomb = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x00];
        let mut out = Vec::new();
        assert!(raw_into(&bomb, &mut out, MAX_UNCOMPRESSED_BYTES).is_err());
        assert!(out.capacity() < 1 << 20);
    }
}
