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
//!
//! Writing the Java producer's frame matters as well: every Kafka client
//! can read it, while Java's `KafkaLZ4BlockInputStream` cannot follow
//! linked blocks.

use std::cell::RefCell;

use super::{read_bounded, Codec, CodecError, Compression, ReadStream, SnappyFraming};
use lz4_flex::block::{self, CompressTable};
use lz4_flex::frame::FrameDecoder;

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
fn write_kafka_frame(data: &[u8], out: &mut Vec<u8>) -> Result<(), CodecError> {
    out.reserve(MAGIC.len() + KAFKA_DESCRIPTOR.len() + data.len() + data.len() / 255 + 16);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&KAFKA_DESCRIPTOR);
    SCRATCH.with(|cell| {
        let scratch = &mut *cell.borrow_mut();
        for chunk in data.chunks(BLOCK) {
            let n = block::compress_into_with_table(chunk, &mut scratch.block, &mut scratch.table)
                .map_err(|e| CodecError::failed(Compression::Lz4, e))?;
            if n < chunk.len() {
                out.extend_from_slice(&(n as u32).to_le_bytes());
                out.extend_from_slice(&scratch.block[..n]);
            } else {
                out.extend_from_slice(&(chunk.len() as u32 | STORED).to_le_bytes());
                out.extend_from_slice(chunk);
            }
        }
        Ok::<(), CodecError>(())
    })?;
    out.extend_from_slice(&END_MARK);
    Ok(())
}

/// What [`read_kafka_frame`] made of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decoded {
    /// The contents were appended to `out`.
    Read,
    /// The contents exceed `room`; `out` is as it was. Refused here rather
    /// than handed on, so that a bomb is not decompressed twice.
    TooLarge,
    /// Not exactly one Kafka LZ4 frame, or damaged; `out` is as it was.
    /// The caller reads it with a general decoder, which also names what
    /// is wrong.
    NotKafkaFrame,
}

/// Append the contents of a Kafka LZ4 frame to `out`, at most `room`
/// bytes.
fn read_kafka_frame(data: &[u8], out: &mut Vec<u8>, room: usize) -> Decoded {
    let start = out.len();
    let decoded = SCRATCH.with(|cell| blocks_into(data, out, room, &mut cell.borrow_mut().block));
    if decoded != Decoded::Read {
        out.truncate(start);
    }
    decoded
}

fn blocks_into(data: &[u8], out: &mut Vec<u8>, room: usize, scratch: &mut [u8]) -> Decoded {
    use Decoded::*;
    let header = MAGIC.len() + KAFKA_DESCRIPTOR.len();
    if data.get(..MAGIC.len()) != Some(&MAGIC[..]) || data.get(MAGIC.len()..header) != Some(&KAFKA_DESCRIPTOR[..]) {
        return NotKafkaFrame;
    }
    let limit = out.len().saturating_add(room);
    let mut rest = &data[header..];
    loop {
        let Some((size, tail)) = rest.split_first_chunk::<4>() else { return NotKafkaFrame };
        let size = u32::from_le_bytes(*size);
        if size == 0 {
            // One frame, nothing after it: anything else goes the long way.
            return if tail.is_empty() { Read } else { NotKafkaFrame };
        }
        let len = (size & !STORED) as usize;
        if len > BLOCK || len > tail.len() {
            return NotKafkaFrame;
        }
        let (bytes, tail) = tail.split_at(len);
        let plain = if size & STORED != 0 {
            bytes
        } else {
            match block::decompress_into(bytes, &mut scratch[..BLOCK]) {
                Ok(n) => &scratch[..n],
                Err(_) => return NotKafkaFrame,
            }
        };
        // An empty block ends the stream for lz4_flex's reader (and Java's
        // reads a stored size of 0 as the end mark): let the general
        // decoder decide what such a frame holds.
        if plain.is_empty() {
            return NotKafkaFrame;
        }
        // The general decoder reads the same blocks in the same order, so
        // it would stop at this same block.
        if out.len() + plain.len() > limit {
            return TooLarge;
        }
        out.extend_from_slice(plain);
        rest = tail;
    }
}

pub(super) struct Lz4;

impl Codec for Lz4 {
    const KIND: Compression = Compression::Lz4;

    fn compress_into(data: &[u8], _: SnappyFraming, out: &mut Vec<u8>) -> Result<(), CodecError> {
        write_kafka_frame(data, out)
    }

    fn decompress_into(data: &[u8], out: &mut Vec<u8>, room: usize) -> Result<SnappyFraming, CodecError> {
        match read_kafka_frame(data, out, room) {
            Decoded::Read => {}
            Decoded::TooLarge => return Err(CodecError::too_large(Self::KIND)),
            Decoded::NotKafkaFrame => read_bounded(Self::KIND, FrameDecoder::new(data), out, room)?,
        }
        Ok(SnappyFraming::Xerial)
    }

    fn stream<S: ReadStream>(data: &[u8], reader: S) -> Result<S::Output, CodecError> {
        Ok(reader.read(FrameDecoder::new(data)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::records::MAX_UNCOMPRESSED_BYTES;
    use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};
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
        write_kafka_frame(data, &mut out).unwrap();
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
        assert_eq!(read_kafka_frame(&frame, &mut back, usize::MAX), Decoded::Read);
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
            assert_eq!(read_kafka_frame(frame, &mut out, usize::MAX), Decoded::NotKafkaFrame, "{what}");
            assert_eq!(out, b"kept", "{what}: out restored");
        }
        // A damaged block either fails or decodes to something else; it is
        // never taken as the original.
        let mut out = Vec::new();
        assert!(read_kafka_frame(&damaged, &mut out, usize::MAX) != Decoded::Read || out != data);
    }

    /// An empty block (stored size 0, or a compressed block decoding to
    /// nothing) ends what lz4_flex's reader returns; such frames take the
    /// general decoder, so the proxy reads what clients read.
    #[test]
    fn empty_blocks_are_left_to_the_general_decoder() {
        let head = [&MAGIC[..], &KAFKA_DESCRIPTOR[..]].concat();
        let abc = [&(3 | STORED).to_le_bytes()[..], b"abc"].concat();
        for empty in [&STORED.to_le_bytes()[..], &[1, 0, 0, 0, 0][..]] {
            let frame = [&head[..], empty, &abc, &END_MARK].concat();
            let mut out = Vec::new();
            assert_eq!(read_kafka_frame(&frame, &mut out, usize::MAX), Decoded::NotKafkaFrame, "{empty:?}");
            assert!(out.is_empty());
        }
    }

    #[test]
    fn room_is_a_hard_limit() {
        let data = texty(3 * BLOCK, 3);
        let frame = ours(&data);
        let mut out = b"ab".to_vec();
        assert_eq!(read_kafka_frame(&frame, &mut out, data.len() - 1), Decoded::TooLarge);
        assert_eq!(out, b"ab");
        assert_eq!(read_kafka_frame(&frame, &mut out, data.len()), Decoded::Read);
        assert_eq!(&out[2..], &data[..]);
    }

    #[test]
    fn lz4_bomb_is_refused_as_too_large() {
        // One compressed 64 KiB block of zeros, repeated past the limit, in
        // the frame Kafka clients write.
        let mut block = Vec::new();
        write_kafka_frame(&vec![0; 64 << 10], &mut block).unwrap();
        let (head, body) = block.split_at(7);
        let one = &body[..body.len() - 4]; // without the end mark
        let mut frame = head.to_vec();
        for _ in 0..=(MAX_UNCOMPRESSED_BYTES >> 16) {
            frame.extend_from_slice(one);
        }
        frame.extend_from_slice(&[0; 4]);
        let mut out = Vec::new();
        match Compression::Lz4.decompress_into(&frame, &mut out) {
            Err(CodecError::TooLarge { codec: Compression::Lz4, limit }) => assert_eq!(limit, MAX_UNCOMPRESSED_BYTES),
            other => panic!("expected TooLarge, got {:?}", other.map(|_| out.len())),
        }
        assert!(out.is_empty());
    }

    /// What lz4_flex's reader makes of `frame`, as `Lz4::decompress_into`
    /// reads it; `None` on an error.
    fn general_read(frame: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        FrameDecoder::new(frame).read_to_end(&mut out).ok().map(|_| out)
    }

    proptest! {
        /// Any damage to a valid frame: whenever the fast path accepts the
        /// result, the general decoder reads exactly the same bytes.
        #[test]
        fn accepted_frames_read_as_the_general_decoder_reads_them(
            len in 0usize..140_000,
            seed in any::<u64>(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            cut in proptest::option::of(any::<prop::sample::Index>()),
        ) {
            let mut frame = ours(&texty(len, seed));
            for (at, byte) in edits {
                let i = at.index(frame.len());
                frame[i] = byte;
            }
            if let Some(at) = cut {
                frame.truncate(at.index(frame.len() + 1));
            }
            let mut fast = Vec::new();
            if read_kafka_frame(&frame, &mut fast, usize::MAX) == Decoded::Read {
                prop_assert_eq!(Some(fast), general_read(&frame));
            }
        }

        /// Frames built block by block, with empty, stored and tiny blocks
        /// anywhere: the same rule.
        #[test]
        fn built_frames_read_as_the_general_decoder_reads_them(
            blocks in proptest::collection::vec((prop_oneof![Just(0usize), 1usize..300], any::<bool>(), any::<u64>()), 0..6),
            end_mark in any::<bool>(),
        ) {
            let mut frame = [&MAGIC[..], &KAFKA_DESCRIPTOR[..]].concat();
            for (len, stored, seed) in blocks {
                let plain = texty(len, seed);
                if stored {
                    frame.extend_from_slice(&(len as u32 | STORED).to_le_bytes());
                    frame.extend_from_slice(&plain);
                } else {
                    let packed = block::compress(&plain);
                    frame.extend_from_slice(&(packed.len() as u32).to_le_bytes());
                    frame.extend_from_slice(&packed);
                }
            }
            if end_mark {
                frame.extend_from_slice(&END_MARK);
            }
            let mut fast = Vec::new();
            if read_kafka_frame(&frame, &mut fast, usize::MAX) == Decoded::Read {
                prop_assert_eq!(Some(fast), general_read(&frame));
            }
        }

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
            prop_assert_eq!(read_kafka_frame(&reference_frame(&data), &mut back, usize::MAX), Decoded::Read);
            prop_assert_eq!(back, data);
        }
    }
}
