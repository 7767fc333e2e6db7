//! Tests of `kafka::records`: golden bytes built by hand from the spec,
//! batches captured from real clients (tests/golden/batches, made by
//! tests/golden/capture_batches.py), round trips through every codec,
//! hostile input, and a property test that tagging then classifying puts
//! every record in exactly one virtual partition.

mod clients;
mod golden;
mod hostile;
mod property;
mod reading;
mod round_trips;

use kpr_proxy::kafka::records::{
    batches, build_batch, check_crc, empty_batch, first_magic, first_record_header, may_carry_header, record_owners,
    records, snappy_framing, subset_batch, tag_batch, tag_batch_into, verify_crc, Batch, BatchHeader, BuildOptions, Compression, Item,
    RecordData, RecordError, SnappyFraming, BATCH_OVERHEAD, TAG_HEADER,
};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// CRC-32C written out bit by bit from its definition (reflected Castagnoli
/// polynomial 0x82F63B78, initial value and final xor all ones), to check
/// the crate's hardware-accelerated one against.
fn crc32c_bitwise(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0x82F6_3B78 } else { c >> 1 };
        }
    }
    !c
}

fn parse_one(bytes: &[u8]) -> Batch<'_> {
    Batch::parse(bytes).expect("one whole batch")
}

/// A batch edited by hand, with its CRC-32C made to match again: tagging
/// refuses a batch whose CRC fails before it reads anything else, so tests
/// of the checks behind it give them sound CRCs.
fn resealed(mut bytes: Vec<u8>) -> Vec<u8> {
    let crc = kpr_proxy::kafka::records::compute_crc(&bytes);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    bytes
}

/// The codecs, with snappy in both framings.
fn all_codecs() -> Vec<(Compression, SnappyFraming)> {
    let mut v: Vec<_> = Compression::ALL.iter().map(|&c| (c, SnappyFraming::Xerial)).collect();
    v.push((Compression::Snappy, SnappyFraming::Raw));
    v
}

/// Records covering the shapes the format allows: null and empty keys and
/// values, headers with null and empty values, negative deltas.
fn sample_records(n: i32, value_len: usize) -> Vec<RecordData> {
    (0..n)
        .map(|i| RecordData {
            key: match i % 3 {
                0 => None,
                1 => Some(Vec::new()),
                _ => Some(format!("key-{i}").into_bytes()),
            },
            value: if i % 5 == 4 { None } else { Some(value_bytes(i as u64, value_len)) },
            headers: match i % 4 {
                0 => vec![],
                1 => vec![("a".into(), None)],
                2 => vec![("a".into(), Some(vec![])), ("b".into(), Some(b"bee".to_vec()))],
                _ => vec![("trace".into(), Some(vec![i as u8; 40]))],
            },
            timestamp_delta: if i == 1 { -5 } else { i as i64 * 3 },
            offset_delta: i,
        })
        .collect()
}

/// Compressible but not trivial bytes.
fn value_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|i| {
            if i % 4 == 0 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
            }
            b"abcdefgh"[(x >> (i % 4 * 8)) as usize & 7]
        })
        .collect()
}

/// Incompressible bytes.
fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn with_tag(mut recs: Vec<RecordData>, value: &[u8]) -> Vec<RecordData> {
    for r in &mut recs {
        r.headers.push((TAG_HEADER.to_string(), Some(value.to_vec())));
    }
    recs
}

fn opts(compression: Compression, framing: SnappyFraming) -> BuildOptions {
    BuildOptions {
        base_offset: 1000,
        partition_leader_epoch: 4,
        compression,
        snappy_framing: framing,
        base_timestamp: 1_700_000_000_000,
        producer_id: 42,
        producer_epoch: 1,
        base_sequence: 17,
        ..Default::default()
    }
}
