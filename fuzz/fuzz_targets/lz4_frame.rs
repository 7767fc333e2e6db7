//! The lz4 frame reader (Kafka's KAFKA-3160-corrected lz4 framing, linked
//! and independent blocks, checksums): the whole input is one frame,
//! decompressed whole and streamed; both must agree when both succeed.
#![no_main]

use kpr_proxy::kafka::records::Compression;
use libfuzzer_sys::fuzz_target;

#[path = "../src/read_all.rs"]
mod read_all;

fuzz_target!(|data: &[u8]| {
    read_all::decompress_both_ways(Compression::Lz4, data);
});
