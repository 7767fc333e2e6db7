//! gzip (attribute value 1): flate2's encoder and multi-member decoder, as
//! Java's `GZIPInputStream` reads concatenated members too.

use super::{io_error, read_bounded, Codec, CodecError, Compression, ReadStream, SnappyFraming, STREAM_BUFFER};
use flate2::bufread::MultiGzDecoder;
use std::io::{BufReader, Write};

/// gzip level used when re-compressing: Java's `Deflater.DEFAULT_COMPRESSION`
/// (6), which is what Kafka's `compression.gzip.level` defaults to.
const GZIP_LEVEL: u32 = 6;

pub(super) struct Gzip;

impl Codec for Gzip {
    const KIND: Compression = Compression::Gzip;

    fn compress_into(data: &[u8], _: SnappyFraming, out: &mut Vec<u8>) -> Result<(), CodecError> {
        let err = io_error(Self::KIND);
        let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::new(GZIP_LEVEL));
        enc.write_all(data).map_err(&err)?;
        enc.finish().map_err(&err)?;
        Ok(())
    }

    fn decompress_into(data: &[u8], out: &mut Vec<u8>, room: usize) -> Result<SnappyFraming, CodecError> {
        read_bounded(Self::KIND, MultiGzDecoder::new(data), out, room)?;
        Ok(SnappyFraming::Xerial)
    }

    fn stream<S: ReadStream>(data: &[u8], reader: S) -> Result<S::Output, CodecError> {
        Ok(reader.read(BufReader::with_capacity(STREAM_BUFFER, MultiGzDecoder::new(data))))
    }
}
