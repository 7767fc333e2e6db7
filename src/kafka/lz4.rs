//! LZ4 frames the way Kafka clients write them: 64 KiB independent blocks,
//! no checksums, no content size (the Java producer's
//! `KafkaLZ4BlockOutputStream`, and librdkafka, which writes the same
//! descriptor). The blocks themselves are lz4_flex's.
//!
//! Why not lz4_flex's `FrameEncoder`/`FrameDecoder` for every batch: each
//! one allocates and zeroes a hash table and two 64 KiB buffers, and copies
//! the input into one of them. For the small batches a client writing many
//! partitions sends (often a few KiB), that costs more than the compression
//! itself. Here the hash table and the block buffer live once per thread.
//! Frames with any other descriptor (checksums, linked blocks, larger
//! blocks, a content size, several frames) are left to `FrameDecoder`.

use std::cell::RefCell;

use lz4_flex::block::{self, CompressTable};

const MAGIC: [u8; 4] = [0x04, 0x22, 0x4d, 0x18];
/// FLG (version 01, independent blocks, no checksums, no content size, no
/// dictionary), BD (64 KiB blocks), and the header checksum of those two
/// (second byte of their xxHash32), fixed since the descriptor is.
const KAFKA_DESCRIPTOR: [u8; 3] = [0x60, 0x40, 0x82];
const BLOCK: usize = 64 * 1024;
/// Set in a block's size when the block is stored, not compressed.
const STORED: u32 = 1 << 31;
const END_MARK: [u8; 4] = [0; 4];

struct Scratch {
    table: CompressTable,
    /// Room for one compressed or decompressed block; zeroed once.
    block: Vec<u8>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch {
        table: CompressTable::default(),
        block: vec![0; block::get_maximum_output_size(BLOCK)],
    });
}

/// Append `data` to `out` as one Kafka LZ4 frame. A block that does not
/// shrink is stored, as lz4's own frame writers do.
pub fn compress_into(data: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    out.reserve(MAGIC.len() + KAFKA_DESCRIPTOR.len() + data.len() + data.len() / 255 + 16);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&KAFKA_DESCRIPTOR);
    SCRATCH.with(|cell| {
        let scratch = &mut *cell.borrow_mut();
        for chunk in data.chunks(BLOCK) {
            let n = block::compress_into_with_table(chunk, &mut scratch.block, &mut scratch.table)
                .map_err(|e| format!("lz4: {e}"))?;
            if n < chunk.len() {
                out.extend_from_slice(&(n as u32).to_le_bytes());
                out.extend_from_slice(&scratch.block[..n]);
            } else {
                out.extend_from_slice(&(chunk.len() as u32 | STORED).to_le_bytes());
                out.extend_from_slice(chunk);
            }
        }
        Ok::<(), String>(())
    })?;
    out.extend_from_slice(&END_MARK);
    Ok(())
}

/// Append the contents of a Kafka LZ4 frame to `out`, at most `room`
/// bytes. `false` (and `out` as it was) when `data` is not exactly one such
/// frame, or is damaged, or holds more than `room`: the caller then reads
/// it with a general decoder, which also names what is wrong.
pub fn decompress_into(data: &[u8], out: &mut Vec<u8>, room: usize) -> bool {
    let start = out.len();
    let done = SCRATCH.with(|cell| blocks_into(data, out, room, &mut cell.borrow_mut().block));
    if done.is_none() {
        out.truncate(start);
    }
    done.is_some()
}

fn blocks_into(data: &[u8], out: &mut Vec<u8>, room: usize, scratch: &mut [u8]) -> Option<()> {
    let header = MAGIC.len() + KAFKA_DESCRIPTOR.len();
    if data.get(..MAGIC.len())? != MAGIC || data.get(MAGIC.len()..header)? != KAFKA_DESCRIPTOR {
        return None;
    }
    let limit = out.len().checked_add(room)?;
    let mut rest = &data[header..];
    loop {
        let (size, tail) = rest.split_first_chunk::<4>()?;
        let size = u32::from_le_bytes(*size);
        if size == 0 {
            // One frame, nothing after it: anything else goes the long way.
            return tail.is_empty().then_some(());
        }
        let len = (size & !STORED) as usize;
        if len > BLOCK || len > tail.len() {
            return None;
        }
        let (bytes, tail) = tail.split_at(len);
        let plain = if size & STORED != 0 {
            bytes
        } else {
            let n = block::decompress_into(bytes, &mut scratch[..BLOCK]).ok()?;
            &scratch[..n]
        };
        if out.len() + plain.len() > limit {
            return None;
        }
        out.extend_from_slice(plain);
        rest = tail;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lz4_flex::frame::{BlockMode, BlockSize, FrameDecoder, FrameEncoder, FrameInfo};
    use proptest::prelude::*;
    use std::io::{Read, Write};

    fn reference_frame(data: &[u8]) -> Vec<u8> {
        let info = FrameInfo::new().block_size(BlockSize::Max64KB).block_mode(BlockMode::Independent);
        let mut enc = FrameEncoder::with_frame_info(info, Vec::new());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn reference_read(frame: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        FrameDecoder::new(frame).read_to_end(&mut out).unwrap();
        out
    }

    fn ours(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        compress_into(data, &mut out).unwrap();
        out
    }

    /// Text-like input that compresses, of any length.
    fn texty(len: usize, seed: u64) -> Vec<u8> {
        let words: [&[u8]; 6] = [b"kafka ", b"partition ", b"virtual ", b"offset ", b"42 ", b"batch "];
        let mut x = seed | 1;
        let mut out = Vec::with_capacity(len + 16);
        while out.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.extend_from_slice(words[(x % 6) as usize]);
        }
        out.truncate(len);
        out
    }

    /// The descriptor constant is what lz4_flex writes for Kafka's frame
    /// settings, header checksum included.
    #[test]
    fn descriptor_matches_the_reference_encoder() {
        let frame = reference_frame(b"");
        assert_eq!(&frame[..4], &MAGIC);
        assert_eq!(&frame[4..7], &KAFKA_DESCRIPTOR);
        assert_eq!(ours(b""), frame);
    }

    /// Up to one block plus a stored one. Later blocks may differ: the
    /// reference keeps its hash table across independent blocks, and
    /// stale entries change which matches it finds (both decode the same).
    #[test]
    fn frames_equal_the_reference_encoder_byte_for_byte() {
        for len in [1, 100, 4096, BLOCK - 1, BLOCK, BLOCK + 1] {
            let data = texty(len, len as u64);
            assert_eq!(ours(&data), reference_frame(&data), "{len} bytes");
        }
    }

    #[test]
    fn incompressible_blocks_are_stored() {
        let mut x = 0x9e3779b97f4a7c15u64;
        let noise: Vec<u8> = (0..BLOCK + 500)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let frame = ours(&noise);
        let first = u32::from_le_bytes(frame[7..11].try_into().unwrap());
        assert_eq!(first, BLOCK as u32 | STORED);
        assert_eq!(reference_read(&frame), noise);
        let mut back = Vec::new();
        assert!(decompress_into(&frame, &mut back, usize::MAX));
        assert_eq!(back, noise);
    }

    #[test]
    fn other_frames_are_left_to_the_general_decoder() {
        let data = texty(1000, 7);
        let mut with_checksum = Vec::new();
        let info = FrameInfo::new().block_size(BlockSize::Max64KB).content_checksum(true);
        let mut enc = FrameEncoder::with_frame_info(info, &mut with_checksum);
        enc.write_all(&data).unwrap();
        enc.finish().unwrap();
        let good = ours(&data);
        let mut two_frames = good.clone();
        two_frames.extend_from_slice(&good);
        let mut truncated = good.clone();
        truncated.truncate(good.len() - 6);
        let mut damaged = good.clone();
        damaged[12] ^= 0xff;
        let mut big_block = good.clone();
        big_block[7..11].copy_from_slice(&(BLOCK as u32 + 1).to_le_bytes());

        for (what, frame) in [
            ("content checksum", &with_checksum),
            ("two frames", &two_frames),
            ("truncated", &truncated),
            ("block over 64 KiB", &big_block),
            ("not lz4", &data),
        ] {
            let mut out = b"kept".to_vec();
            assert!(!decompress_into(frame, &mut out, usize::MAX), "{what}");
            assert_eq!(out, b"kept", "{what}: out restored");
        }
        // A damaged block either fails or decodes to something else; it is
        // never taken as the original.
        let mut out = Vec::new();
        assert!(!decompress_into(&damaged, &mut out, usize::MAX) || out != data);
    }

    #[test]
    fn room_is_a_hard_limit() {
        let data = texty(3 * BLOCK, 3);
        let frame = ours(&data);
        let mut out = b"ab".to_vec();
        assert!(!decompress_into(&frame, &mut out, data.len() - 1));
        assert_eq!(out, b"ab");
        assert!(decompress_into(&frame, &mut out, data.len()));
        assert_eq!(&out[2..], &data[..]);
    }

    proptest! {
        /// Any input: our frame decodes with lz4_flex's decoder, and the
        /// reference frame decodes with ours, both to the input.
        #[test]
        fn frames_round_trip_both_ways(len in 0usize..200_000, seed in any::<u64>(), noisy in any::<bool>()) {
            let data = if noisy {
                let mut x = seed | 1;
                (0..len).map(|_| { x ^= x << 13; x ^= x >> 7; x ^= x << 17; x as u8 }).collect()
            } else {
                texty(len, seed)
            };
            let frame = ours(&data);
            prop_assert_eq!(reference_read(&frame), data.clone());
            let mut back = Vec::new();
            prop_assert!(decompress_into(&reference_frame(&data), &mut back, usize::MAX));
            prop_assert_eq!(back, data);
        }
    }
}
