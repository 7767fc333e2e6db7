//! The record codecs of a v2 batch, one file each (`gzip`, `snappy`, `lz4`,
//! `zstd`), behind one interface: [`Compression`], the codec attribute bits
//! 0-2 name, compresses, decompresses and streams a batch's records by
//! dispatching once per batch to the codec's `Codec` implementation; the
//! loops over bytes stay inside each codec. Every failure is a
//! [`CodecError`].
//!
//! Decompression is bounded by [`MAX_UNCOMPRESSED_BYTES`], and
//! re-compression writes what Kafka's Java producer writes (its default
//! levels, LZ4 frame and snappy framing), so a tagged batch reads like one
//! a client made.

mod gzip;
mod lz4;
mod snappy;
mod zstd;

use std::fmt;
use std::io::{self, BufRead, Read};

/// Attribute bits 0-2.
const COMPRESSION_MASK: i16 = 0x07;

/// The codec named by attribute bits 0-2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    pub const ALL: [Compression; 5] =
        [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd];

    /// The codec of a batch's `attributes`.
    pub fn from_attributes(attributes: i16) -> Result<Compression, CodecError> {
        Ok(match attributes & COMPRESSION_MASK {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            n => return Err(CodecError::Unknown(n)),
        })
    }

    /// The value of attribute bits 0-2 for this codec.
    pub fn attribute_bits(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    /// Kafka's name for the codec (`compression.type`).
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How snappy data is framed. Java clients (xerial snappy-java) write a
/// 16-byte stream header and chunks of `[int32 length][raw snappy block]`;
/// librdkafka and brokers also accept (and librdkafka may write) one raw
/// snappy block. Re-compression keeps whichever the input used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SnappyFraming {
    #[default]
    Xerial,
    Raw,
}

impl SnappyFraming {
    /// The framing of snappy-compressed `data`.
    pub fn of(data: &[u8]) -> SnappyFraming {
        snappy::framing(data)
    }
}

/// Upper bound on the decompressed size of one batch's records. Kafka itself
/// streams and has no such limit, but the proxy holds a batch in memory to
/// tag it; this stops a few hundred bytes of hostile zstd from asking for
/// gigabytes. Far above any batch a client writes with the default
/// `max.request.size` (1 MiB compressed).
pub const MAX_UNCOMPRESSED_BYTES: usize = 256 << 20;

/// What went wrong in a codec. Converts into the `RecordError` the batch
/// functions return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodecError {
    /// The codec could not decode (or encode) the data: the codec's own
    /// words.
    Failed { codec: Compression, detail: String },
    /// Decompressing would exceed `limit` ([`MAX_UNCOMPRESSED_BYTES`]).
    TooLarge { codec: Compression, limit: usize },
    /// A codec's framing ended `need` bytes into `what`, which had only
    /// `have` left.
    Truncated { what: &'static str, need: usize, have: usize },
    /// Attribute bits 0-2 name no codec.
    Unknown(i16),
}

impl CodecError {
    /// `codec` failed, for the reason `detail` gives.
    pub(super) fn failed(codec: Compression, detail: impl fmt::Display) -> CodecError {
        CodecError::Failed { codec, detail: detail.to_string() }
    }

    fn too_large(codec: Compression) -> CodecError {
        CodecError::TooLarge { codec, limit: MAX_UNCOMPRESSED_BYTES }
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::Failed { codec, detail } => write!(f, "{codec}: {detail}"),
            CodecError::TooLarge { codec, limit } => write!(f, "{codec} records decompress to more than {limit} bytes"),
            CodecError::Truncated { what, need, have } => {
                write!(f, "{what} truncated: needed {need} bytes, {have} left")
            }
            CodecError::Unknown(n) => write!(f, "unknown compression type {n} in attributes"),
        }
    }
}

impl std::error::Error for CodecError {}

/// Code that reads decompressed records as a stream, handed a reader by
/// [`Compression::stream`]. Generic in the reader, so each codec's reader
/// is compiled in: no dynamic dispatch per byte read.
pub trait ReadStream {
    type Output;
    fn read<R: BufRead>(self, records: R) -> Self::Output;
}

/// What each codec file implements. [`Compression`] picks the
/// implementation from the batch's attribute bits, once per batch.
trait Codec {
    const KIND: Compression;

    /// Append `data`, compressed, to `out`; `framing` matters to snappy
    /// only.
    fn compress_into(data: &[u8], framing: SnappyFraming, out: &mut Vec<u8>) -> Result<(), CodecError>;

    /// Append the contents of `data` to `out`, at most `room` bytes
    /// (`CodecError::TooLarge` beyond). Returns the snappy framing seen
    /// (`Xerial` for the other codecs, which have none).
    fn decompress_into(data: &[u8], out: &mut Vec<u8>, room: usize) -> Result<SnappyFraming, CodecError>;

    /// Run `reader` over the contents of `data`, decompressing only as far
    /// as it reads where the codec allows.
    fn stream<S: ReadStream>(data: &[u8], reader: S) -> Result<S::Output, CodecError>;
}

impl Compression {
    /// Compress `data`, appending to `out`.
    pub fn compress_into(self, framing: SnappyFraming, data: &[u8], out: &mut Vec<u8>) -> Result<(), CodecError> {
        match self {
            Compression::None => {
                out.extend_from_slice(data);
                Ok(())
            }
            Compression::Gzip => gzip::Gzip::compress_into(data, framing, out),
            Compression::Snappy => snappy::Snappy::compress_into(data, framing, out),
            Compression::Lz4 => lz4::Lz4::compress_into(data, framing, out),
            Compression::Zstd => self::zstd::Zstd::compress_into(data, framing, out),
        }
    }

    /// Decompress a batch's records, appending them to `out`, which holds
    /// no more than [`MAX_UNCOMPRESSED_BYTES`] afterwards. Returns the
    /// snappy framing seen (meaningless for the other codecs).
    pub fn decompress_into(self, data: &[u8], out: &mut Vec<u8>) -> Result<SnappyFraming, CodecError> {
        let room = MAX_UNCOMPRESSED_BYTES.saturating_sub(out.len());
        match self {
            Compression::None => {
                out.extend_from_slice(data);
                Ok(SnappyFraming::Xerial)
            }
            Compression::Gzip => gzip::Gzip::decompress_into(data, out, room),
            Compression::Snappy => snappy::Snappy::decompress_into(data, out, room),
            Compression::Lz4 => lz4::Lz4::decompress_into(data, out, room),
            Compression::Zstd => self::zstd::Zstd::decompress_into(data, out, room),
        }
    }

    /// Run `reader` over a batch's records, decompressed as it reads them:
    /// the streaming codecs stop where it stops, xerial snappy decodes only
    /// the chunks it reaches, raw snappy decodes the whole block first.
    pub fn stream<S: ReadStream>(self, data: &[u8], reader: S) -> Result<S::Output, CodecError> {
        match self {
            Compression::None => Ok(reader.read(data)),
            Compression::Gzip => gzip::Gzip::stream(data, reader),
            Compression::Snappy => snappy::Snappy::stream(data, reader),
            Compression::Lz4 => lz4::Lz4::stream(data, reader),
            Compression::Zstd => self::zstd::Zstd::stream(data, reader),
        }
    }
}

/// Buffer size for the streaming decoders that do not buffer themselves.
const STREAM_BUFFER: usize = 4096;

/// Read all of `r` into `out`, failing once more than `room` bytes arrive.
fn read_bounded(codec: Compression, r: impl Read, out: &mut Vec<u8>, room: usize) -> Result<(), CodecError> {
    let room = room as u64;
    let got = r.take(room + 1).read_to_end(out).map_err(|e| CodecError::failed(codec, e))?;
    if got as u64 > room {
        return Err(CodecError::too_large(codec));
    }
    Ok(())
}

/// An I/O error of `codec`'s decoder as a `CodecError`.
fn io_error(codec: Compression) -> impl Fn(io::Error) -> CodecError {
    move |e| CodecError::failed(codec, e)
}
