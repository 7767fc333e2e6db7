//! Shared by the codec targets: reading a codec's stream to its end, and
//! checking it against decompressing whole.

use std::io::{self, BufRead, Read};

use kpr_proxy::kafka::records::compression::ReadStream;
use kpr_proxy::kafka::records::{Compression, MAX_UNCOMPRESSED_BYTES};

/// Reads the decompressed stream to its end (at most the batch limit).
pub struct ReadAll;

impl ReadStream for ReadAll {
    type Output = io::Result<Vec<u8>>;
    fn read<R: BufRead>(self, records: R) -> Self::Output {
        let mut out = Vec::new();
        records.take(MAX_UNCOMPRESSED_BYTES as u64).read_to_end(&mut out)?;
        Ok(out)
    }
}

/// Decompress `data` whole and streamed; when both succeed they agree.
pub fn decompress_both_ways(codec: Compression, data: &[u8]) {
    let mut whole = Vec::new();
    let whole = codec.decompress_into(data, &mut whole).map(|_| whole);
    let streamed = codec.stream(data, ReadAll);
    if let (Ok(whole), Ok(Ok(streamed))) = (whole, streamed) {
        assert!(whole == streamed, "{}: whole and streamed differ ({} and {} bytes)", codec.name(), whole.len(), streamed.len());
    }
}
