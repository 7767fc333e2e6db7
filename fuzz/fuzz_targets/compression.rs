//! Each codec of a batch's records. The first input byte picks the codec
//! (bits 0-2, as in a batch's attributes), the snappy framing (bit 3) and
//! whether the rest is decompressed (bit 4 clear) or compressed and
//! decompressed back (bit 4 set). Decompressing whole and streaming must
//! agree when both succeed; what is compressed must come back unchanged.
#![no_main]

use kpr_proxy::kafka::records::{Compression, SnappyFraming};
use libfuzzer_sys::fuzz_target;

#[path = "../src/read_all.rs"]
mod read_all;
use read_all::ReadAll;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else { return };
    let Ok(codec) = Compression::from_attributes(i16::from(mode & 0x07)) else { return };
    let framing = if mode & 0x08 == 0 { SnappyFraming::Xerial } else { SnappyFraming::Raw };
    if mode & 0x10 == 0 {
        read_all::decompress_both_ways(codec, body);
        return;
    }
    let mut compressed = Vec::new();
    codec.compress_into(framing, body, &mut compressed).expect("compresses");
    let mut back = Vec::new();
    let seen = codec.decompress_into(&compressed, &mut back).expect("what was compressed decompresses");
    assert_eq!(back, body, "{} round trip", codec.name());
    if codec == Compression::Snappy {
        assert_eq!(seen, framing, "snappy framing");
    }
    let streamed = codec.stream(&compressed, ReadAll).expect("streams").expect("reads");
    assert_eq!(streamed, body, "{} streamed round trip", codec.name());
});
