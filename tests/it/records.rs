//! Tests of `kafka::records`: golden bytes built by hand from the spec,
//! batches captured from real clients (tests/golden/batches, made by
//! tests/golden/capture_batches.py), round trips through every codec,
//! hostile input, and a property test that tagging then classifying puts
//! every record in exactly one virtual partition.

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

// ---------------------------------------------------------------------------
// Golden bytes

#[test]
fn bitwise_crc32c_matches_the_standard_check_value() {
    // The check value of CRC-32C (RFC 3720 B.4, and every CRC catalogue).
    assert_eq!(crc32c_bitwise(b"123456789"), 0xE306_9283);
}

/// One batch with one record, written out field by field from the spec.
fn hand_built_batch() -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&5i64.to_be_bytes()); // baseOffset = 5
    b.extend_from_slice(&62i32.to_be_bytes()); // batchLength = 49 header bytes after this field + 13 record bytes
    b.extend_from_slice(&9i32.to_be_bytes()); // partitionLeaderEpoch = 9
    b.push(2); // magic = 2
    b.extend_from_slice(&0x4CC0_8B8Du32.to_be_bytes()); // crc, computed with a separate (Python, bitwise) CRC-32C
    b.extend_from_slice(&0i16.to_be_bytes()); // attributes: no compression, CreateTime, not transactional, not control
    b.extend_from_slice(&0i32.to_be_bytes()); // lastOffsetDelta = 0 (one record)
    b.extend_from_slice(&1_700_000_000_000i64.to_be_bytes()); // baseTimestamp
    b.extend_from_slice(&1_700_000_000_000i64.to_be_bytes()); // maxTimestamp
    b.extend_from_slice(&1000i64.to_be_bytes()); // producerId = 1000
    b.extend_from_slice(&2i16.to_be_bytes()); // producerEpoch = 2
    b.extend_from_slice(&7i32.to_be_bytes()); // baseSequence = 7
    b.extend_from_slice(&1i32.to_be_bytes()); // recordsCount = 1

    // The record. Varints are zig-zag: n is written as 2n (n >= 0).
    b.extend_from_slice(&[
        0x18, // length = 12 bytes follow
        0x00, // attributes
        0x00, // timestampDelta = 0 (varlong)
        0x00, // offsetDelta = 0
        0x02, b'k', // keyLength = 1, key "k"
        0x02, b'v', // valueLength = 1, value "v"
        0x02, // headersCount = 1
        0x02, b'h', // headerKeyLength = 1, "h"
        0x02, b'x', // headerValueLength = 1, "x"
    ]);
    b
}

#[test]
fn golden_hand_built_batch_parses_and_its_crc_verifies() {
    let bytes = hand_built_batch();
    assert_eq!(bytes.len(), 74);
    assert_eq!(first_magic(&bytes), Some(2));
    let batch = parse_one(&bytes);
    assert_eq!(
        batch.header,
        BatchHeader {
            base_offset: 5,
            batch_length: 62,
            partition_leader_epoch: 9,
            magic: 2,
            crc: 0x4CC0_8B8D,
            attributes: 0,
            last_offset_delta: 0,
            base_timestamp: 1_700_000_000_000,
            max_timestamp: 1_700_000_000_000,
            producer_id: 1000,
            producer_epoch: 2,
            base_sequence: 7,
            records_count: 1,
        }
    );
    assert_eq!(batch.header.compression(), Ok(Compression::None));
    assert!(!batch.header.is_transactional() && !batch.header.is_control());
    assert_eq!(batch.header.last_offset(), 5);
    assert_eq!(batch.header.next_offset(), 6);
    assert!(verify_crc(&batch));
    assert_eq!(crc32c_bitwise(&bytes[21..]), 0x4CC0_8B8D);
    assert_eq!(
        records(&batch).unwrap(),
        vec![RecordData {
            key: Some(b"k".to_vec()),
            value: Some(b"v".to_vec()),
            headers: vec![("h".into(), Some(b"x".to_vec()))],
            timestamp_delta: 0,
            offset_delta: 0,
        }]
    );
    assert_eq!(first_record_header(&batch, "h").unwrap(), Some(b"x".to_vec()));
    assert_eq!(first_record_header(&batch, TAG_HEADER).unwrap(), None);

    // The builder writes the same bytes from the same fields.
    let built = build_batch(
        &records(&batch).unwrap(),
        &BuildOptions {
            base_offset: 5,
            partition_leader_epoch: 9,
            base_timestamp: 1_700_000_000_000,
            producer_id: 1000,
            producer_epoch: 2,
            base_sequence: 7,
            ..Default::default()
        },
    );
    assert_eq!(built, bytes);

    // A flipped bit anywhere the CRC covers is detected; the partition
    // leader epoch is not covered (brokers set it without re-computing).
    let mut bad = bytes.clone();
    bad[70] ^= 0x01;
    let b = parse_one(&bad);
    assert!(!verify_crc(&b));
    assert!(matches!(check_crc(&b), Err(RecordError::Crc { stored: 0x4CC0_8B8D, .. })));
    let mut epoch = bytes.clone();
    epoch[15] = 10;
    assert!(verify_crc(&parse_one(&epoch)));
}

#[test]
fn builder_crc_matches_the_bitwise_crc_for_every_codec() {
    for (codec, framing) in all_codecs() {
        let bytes = build_batch(&sample_records(30, 50), &opts(codec, framing));
        let batch = parse_one(&bytes);
        assert_eq!(batch.header.crc, crc32c_bitwise(&bytes[21..]), "{codec} {framing:?}");
        assert!(verify_crc(&batch));
        assert_eq!(batch.header.batch_length as usize, bytes.len() - 12);
    }
}

#[test]
fn tagging_the_hand_built_batch_gives_the_expected_bytes() {
    let bytes = hand_built_batch();
    let tagged = tag_batch(&parse_one(&bytes), TAG_HEADER, b"15", Some((77, 3))).unwrap();
    // Header: batchLength grows by the 10 header bytes (06 "kpr.vp" 04 "15"),
    // producer id and epoch replaced, CRC recomputed; the record's length
    // goes 12 -> 22 and its header count 1 -> 2.
    let mut want = bytes[..61].to_vec();
    want[8..12].copy_from_slice(&72i32.to_be_bytes());
    want[43..51].copy_from_slice(&77i64.to_be_bytes());
    want[51..53].copy_from_slice(&3i16.to_be_bytes());
    want.extend_from_slice(&[0x2c, 0x00, 0x00, 0x00, 0x02, b'k', 0x02, b'v', 0x04, 0x02, b'h', 0x02, b'x']);
    want.extend_from_slice(&[0x0c, b'k', b'p', b'r', b'.', b'v', b'p', 0x04, b'1', b'5']);
    let crc = crc32c_bitwise(&want[21..]);
    want[17..21].copy_from_slice(&crc.to_be_bytes());
    assert_eq!(tagged, want);
}

// ---------------------------------------------------------------------------
// Round trips

#[test]
fn every_codec_round_trips_build_and_tag() {
    for (codec, framing) in all_codecs() {
        let input = sample_records(57, 120);
        let o = opts(codec, framing);
        let bytes = build_batch(&input, &o);
        let batch = parse_one(&bytes);
        assert_eq!(batch.header.compression(), Ok(codec));
        assert_eq!(snappy_framing(&batch), (codec == Compression::Snappy).then_some(framing));
        assert_eq!(records(&batch).unwrap(), input, "{codec} {framing:?}");
        assert_eq!(batch.header.last_offset_delta, 56);
        assert_eq!(batch.header.max_timestamp, o.base_timestamp + 56 * 3);

        for producer in [None, Some((9_000_000_001i64, 7i16))] {
            let tagged = tag_batch(&batch, TAG_HEADER, b"23", producer).unwrap();
            let t = parse_one(&tagged);
            assert!(verify_crc(&t), "{codec}: tagged CRC");
            let h = &t.header;
            let (pid, epoch) = producer.unwrap_or((o.producer_id, o.producer_epoch));
            assert_eq!((h.producer_id, h.producer_epoch), (pid, epoch));
            // Everything else in the header is kept.
            let mut same = batch.header.clone();
            same.batch_length = h.batch_length;
            same.crc = h.crc;
            same.producer_id = pid;
            same.producer_epoch = epoch;
            assert_eq!(*h, same);
            assert_eq!(t.bytes.len(), h.batch_length as usize + 12);
            assert_eq!(snappy_framing(&t), snappy_framing(&batch), "same snappy framing");
            assert_eq!(records(&t).unwrap(), with_tag(input.clone(), b"23"), "{codec} {framing:?}");
            assert_eq!(first_record_header(&t, TAG_HEADER).unwrap(), Some(b"23".to_vec()));
        }
    }
}

#[test]
fn tag_batch_into_appends_and_leaves_the_buffer_alone_on_error() {
    let bytes = build_batch(&sample_records(3, 10), &opts(Compression::Lz4, SnappyFraming::Xerial));
    let batch = parse_one(&bytes);
    let mut out = b"prefix".to_vec();
    tag_batch_into(&batch, TAG_HEADER, b"8", None, &mut out).unwrap();
    assert_eq!(&out[..6], b"prefix");
    assert_eq!(out[6..], tag_batch(&batch, TAG_HEADER, b"8", None).unwrap()[..]);

    // A record count the data does not hold fails after the header was
    // written out.
    let mut broken = bytes.clone();
    broken[57..61].copy_from_slice(&4i32.to_be_bytes());
    let b = parse_one(&broken);
    let mut out = b"prefix".to_vec();
    assert!(matches!(tag_batch_into(&b, TAG_HEADER, b"8", None, &mut out), Err(RecordError::Crc { .. })));
    assert_eq!(out, b"prefix");
    let broken = resealed(broken);
    let b = parse_one(&broken);
    assert!(matches!(tag_batch_into(&b, TAG_HEADER, b"8", None, &mut out), Err(RecordError::Truncated { .. })));
    assert_eq!(out, b"prefix");
}

#[test]
fn rewrites_refuse_batches_whose_crc_fails() {
    // Both rewrites seal their output with a fresh CRC-32C: given a damaged
    // batch they would make it look sound to every reader after them.
    for (codec, framing) in all_codecs() {
        let clean = build_batch(&sample_records(4, 20), &opts(codec, framing));
        let stored = parse_one(&clean).header.crc;
        for at in [18, clean.len() - 1] {
            let mut bad = clean.clone();
            bad[at] ^= 0x10;
            let b = parse_one(&bad);
            let computed = kpr_proxy::kafka::records::compute_crc(&bad);
            let want = RecordError::Crc { stored: b.header.crc, computed };
            assert_eq!(tag_batch(&b, TAG_HEADER, b"3", None), Err(want.clone()), "{codec} byte {at}");
            let mut out = b"kept".to_vec();
            assert_eq!(tag_batch_into(&b, TAG_HEADER, b"3", None, &mut out), Err(want.clone()), "{codec} byte {at}");
            assert_eq!(out, b"kept", "{codec} byte {at}: nothing appended");
            assert_eq!(subset_batch(&b, &|i| i % 2 == 0), Err(want.clone()), "{codec} byte {at}");
            if at == 18 {
                assert_ne!(b.header.crc, stored);
            }
        }
        let b = parse_one(&clean);
        assert!(tag_batch(&b, TAG_HEADER, b"3", None).is_ok(), "{codec}: the sound batch is tagged");
        assert!(subset_batch(&b, &|i| i % 2 == 0).is_ok(), "{codec}: the sound batch is split");
    }
}

#[test]
fn control_and_empty_batches() {
    let control = build_batch(
        &[RecordData { key: Some(vec![0, 0, 0, 1]), value: Some(vec![0, 0, 0, 0, 0, 0]), ..Default::default() }],
        &BuildOptions { control: true, transactional: true, producer_id: 5, ..Default::default() },
    );
    let c = parse_one(&control);
    assert!(c.header.is_control() && c.header.is_transactional());
    assert_eq!(first_record_header(&c, TAG_HEADER).unwrap(), None);
    assert!(matches!(tag_batch(&c, TAG_HEADER, b"1", None), Err(RecordError::Corrupt(_))));

    let none = build_batch(&[], &opts(Compression::Zstd, SnappyFraming::Xerial));
    let b = parse_one(&none);
    assert_eq!(records(&b).unwrap(), vec![]);
    assert_eq!(first_record_header(&b, TAG_HEADER).unwrap(), None);
}

#[test]
fn existing_tag_is_overridden_by_the_appended_one() {
    // A record that already carries kpr.vp (mirrored from a consumer of the
    // proxy) and is produced to another VP: the appended tag is the last
    // one, and the last one decides.
    let input = vec![RecordData {
        value: Some(b"v".to_vec()),
        headers: vec![(TAG_HEADER.into(), Some(b"3".to_vec())), ("x".into(), None)],
        ..Default::default()
    }];
    for (codec, framing) in all_codecs() {
        let bytes = build_batch(&input, &opts(codec, framing));
        let b = parse_one(&bytes);
        assert_eq!(first_record_header(&b, TAG_HEADER).unwrap(), Some(b"3".to_vec()));
        let tagged = tag_batch(&b, TAG_HEADER, b"11", None).unwrap();
        let t = parse_one(&tagged);
        assert_eq!(first_record_header(&t, TAG_HEADER).unwrap(), Some(b"11".to_vec()));
        assert_eq!(records(&t).unwrap()[0].headers.len(), 3, "existing headers kept");
    }
}

#[test]
fn may_carry_header_finds_a_tag_in_any_record_and_any_codec() {
    for (codec, framing) in all_codecs() {
        let untagged = sample_records(40, 300);
        let bytes = build_batch(&untagged, &opts(codec, framing));
        assert!(!may_carry_header(&parse_one(&bytes), TAG_HEADER).unwrap(), "{codec}: no record is tagged");

        // Only the last record carries the tag: found past the first record
        // and, compressed, past the first block or chunk.
        let mut last_tagged = sample_records(40, 3000);
        last_tagged[39].headers.push((TAG_HEADER.into(), Some(b"4".to_vec())));
        let bytes = build_batch(&last_tagged, &opts(codec, framing));
        assert!(may_carry_header(&parse_one(&bytes), TAG_HEADER).unwrap(), "{codec}: the last record is tagged");

        // The name alone in a value is not the header as records encode it
        // (its length varint precedes it); with that varint it is a
        // candidate, which record_owners then settles.
        let mut in_value = sample_records(3, 10);
        in_value[1].value = Some(b"xxkpr.vpxx".to_vec());
        let bytes = build_batch(&in_value, &opts(codec, framing));
        assert!(!may_carry_header(&parse_one(&bytes), TAG_HEADER).unwrap(), "{codec}: bare name in a value");
        in_value[1].value = Some(b"x\x0ckpr.vpx".to_vec());
        let bytes = build_batch(&in_value, &opts(codec, framing));
        let b = parse_one(&bytes);
        assert!(may_carry_header(&b, TAG_HEADER).unwrap(), "{codec}: encoded name in a value");
        assert_eq!(record_owners(&b, TAG_HEADER, &|t| t.map_or(-1, |_| 1)).unwrap(), vec![-1, -1, -1]);
    }
}

// ---------------------------------------------------------------------------
// first_record_header

#[test]
fn first_record_header_for_every_codec_and_untagged_batches() {
    for (codec, framing) in all_codecs() {
        let bytes = build_batch(&sample_records(10, 30), &opts(codec, framing));
        let b = parse_one(&bytes);
        assert_eq!(first_record_header(&b, TAG_HEADER).unwrap(), None, "{codec}: untagged");
        // Record 0 has no headers; make the first one carry some.
        let mut recs = sample_records(10, 30);
        recs.rotate_left(2);
        let bytes = build_batch(&recs, &opts(codec, framing));
        let b = parse_one(&bytes);
        assert_eq!(first_record_header(&b, "b").unwrap(), Some(b"bee".to_vec()));
        assert_eq!(first_record_header(&b, "a").unwrap(), Some(vec![]));
        assert_eq!(first_record_header(&b, "ab").unwrap(), None);
        assert_eq!(first_record_header(&b, "").unwrap(), None);
        let tagged = tag_batch(&b, TAG_HEADER, b"123456", None).unwrap();
        let t = parse_one(&tagged);
        assert_eq!(first_record_header(&t, TAG_HEADER).unwrap(), Some(b"123456".to_vec()), "{codec}");
        assert_eq!(first_record_header(&t, "b").unwrap(), Some(b"bee".to_vec()));
    }
}

#[test]
fn first_record_header_with_a_first_record_over_64k() {
    for (codec, framing) in all_codecs() {
        let mut recs = sample_records(4, 20);
        recs[0].key = Some(random_bytes(1, 70_000)); // past lz4's 64 KiB block, xerial's 32 KiB chunk
        recs[0].value = Some(random_bytes(2, 200_000));
        recs[0].headers = vec![("big".into(), Some(random_bytes(3, 100_000)))];
        let bytes = build_batch(&recs, &opts(codec, framing));
        let tagged = tag_batch(&parse_one(&bytes), TAG_HEADER, b"99", None).unwrap();
        let t = parse_one(&tagged);
        assert_eq!(first_record_header(&t, TAG_HEADER).unwrap(), Some(b"99".to_vec()), "{codec} {framing:?}");
        assert_eq!(first_record_header(&t, "big").unwrap(), Some(random_bytes(3, 100_000)));
        assert_eq!(records(&t).unwrap(), with_tag(recs, b"99"));
    }
}

#[test]
fn first_record_header_stops_after_the_first_record() {
    // Corrupt the compressed stream well after the first record: records()
    // fails, first_record_header does not, so it cannot have read that far.
    for (codec, framing) in all_codecs() {
        if codec == Compression::None || framing == SnappyFraming::Raw {
            continue; // nothing to stream / one block that must be decoded whole
        }
        let recs: Vec<RecordData> = (0..40)
            .map(|i| RecordData {
                value: Some(random_bytes(i + 10, 20_000)),
                headers: vec![(TAG_HEADER.into(), Some(b"5".to_vec()))],
                offset_delta: i as i32,
                ..Default::default()
            })
            .collect();
        let bytes = build_batch(&recs, &opts(codec, framing));
        let mut broken = bytes.clone();
        let n = broken.len();
        for b in &mut broken[n - 5000..n - 4000] {
            *b ^= 0x5a;
        }
        let header = parse_one(&bytes).header;
        let b = Batch { header, bytes: &broken };
        // (lz4, snappy and zstd without checksums may decode flipped
        // literals without noticing; either way the data is not the input.)
        assert_ne!(records(&b).ok(), Some(recs.clone()), "{codec}: a full decode reads the damage");
        assert_eq!(first_record_header(&b, TAG_HEADER).unwrap(), Some(b"5".to_vec()), "{codec}");
        // Cut off instead of corrupted: same.
        let b = Batch { header: parse_one(&bytes).header, bytes: &bytes[..n - 4000] };
        assert_eq!(first_record_header(&b, TAG_HEADER).unwrap(), Some(b"5".to_vec()), "{codec}");
    }
}

// ---------------------------------------------------------------------------
// empty_batch

#[test]
fn empty_batch_spans_the_offsets_with_a_valid_crc() {
    let bytes = empty_batch(1_000_000, 41, 7, 1_600_000_000_000, 1_600_000_000_500);
    assert_eq!(bytes.len(), BATCH_OVERHEAD);
    let b = parse_one(&bytes);
    assert_eq!(
        b.header,
        BatchHeader {
            base_offset: 1_000_000,
            batch_length: 49,
            partition_leader_epoch: 7,
            magic: 2,
            crc: crc32c_bitwise(&bytes[21..]),
            attributes: 0,
            last_offset_delta: 41,
            base_timestamp: 1_600_000_000_000,
            max_timestamp: 1_600_000_000_500,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            records_count: 0,
        }
    );
    assert!(verify_crc(&b));
    assert_eq!(b.header.last_offset(), 1_000_041);
    assert_eq!(b.header.next_offset(), 1_000_042);
    assert_eq!(records(&b).unwrap(), vec![]);
    assert_eq!(first_record_header(&b, TAG_HEADER).unwrap(), None);
}

// ---------------------------------------------------------------------------
// batches()

#[test]
fn concatenated_batches_and_a_cut_tail() {
    let a = build_batch(&sample_records(3, 10), &opts(Compression::None, SnappyFraming::Xerial));
    let b = empty_batch(1003, 4, 4, 0, 0);
    let c = build_batch(&sample_records(5, 10), &opts(Compression::Gzip, SnappyFraming::Xerial));
    let d = build_batch(&sample_records(5, 10), &opts(Compression::Zstd, SnappyFraming::Xerial));
    let mut all = [a.clone(), b.clone(), c.clone()].concat();
    all.extend_from_slice(&d[..d.len() - 1]);
    let items: Vec<_> = batches(&all).collect::<Result<_, _>>().unwrap();
    assert_eq!(items.len(), 4);
    for (item, want) in items.iter().zip([&a, &b, &c]) {
        match item {
            Item::Batch(batch) => {
                assert_eq!(batch.bytes, &want[..]);
                assert!(verify_crc(batch));
            }
            other => panic!("expected a batch, got {other:?}"),
        }
    }
    assert_eq!(items[3], Item::Partial(&d[..d.len() - 1]));

    // Cut at every length: whole batches, then at most one Partial.
    for cut in 0..=all.len() {
        let items: Vec<_> = batches(&all[..cut]).collect::<Result<_, _>>().unwrap();
        let whole = items.iter().filter(|i| matches!(i, Item::Batch(_))).count();
        let partial = items.iter().filter(|i| matches!(i, Item::Partial(_))).count();
        assert!(partial <= 1 && (partial == 0 || matches!(items.last(), Some(Item::Partial(_)))));
        let ends = [a.len(), a.len() + b.len(), a.len() + b.len() + c.len()];
        assert_eq!(whole, ends.iter().filter(|&&e| e <= cut).count(), "cut at {cut}");
        assert_eq!(partial, usize::from(!ends.contains(&cut) && cut != 0), "cut at {cut}");
    }
    assert_eq!(batches(&[]).count(), 0);
}

/// A v0 or v1 message set entry: offset, size, crc, magic, attributes,
/// (timestamp,) key, value.
fn legacy_message(magic: u8) -> Vec<u8> {
    let mut m = vec![0u8; 4]; // crc (CRC-32, not checked here)
    m.push(magic);
    m.push(0); // attributes
    if magic == 1 {
        m.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
    }
    m.extend_from_slice(&(-1i32).to_be_bytes()); // null key
    m.extend_from_slice(&3i32.to_be_bytes());
    m.extend_from_slice(b"old");
    let mut e = 0i64.to_be_bytes().to_vec();
    e.extend_from_slice(&(m.len() as i32).to_be_bytes());
    e.extend_from_slice(&m);
    e
}

#[test]
fn legacy_message_sets_are_detected_and_refused() {
    for magic in [0u8, 1] {
        let set = [legacy_message(magic), legacy_message(magic)].concat();
        assert_eq!(first_magic(&set), Some(magic as i8));
        let items: Vec<_> = batches(&set).collect();
        assert_eq!(items, vec![Err(RecordError::Magic(magic as i8))]);
        assert!(RecordError::Magic(magic as i8).to_string().contains("magic"));
        // After a good v2 batch, the legacy entry is the error.
        let mixed = [empty_batch(0, 0, 0, 0, 0), legacy_message(magic)].concat();
        let items: Vec<_> = batches(&mixed).collect();
        assert!(matches!(items[0], Ok(Item::Batch(_))));
        assert_eq!(items[1], Err(RecordError::Magic(magic as i8)));
        assert_eq!(items.len(), 2);
    }
    assert_eq!(first_magic(&[0; 16]), None);
    let mut unknown = empty_batch(0, 0, 0, 0, 0);
    unknown[16] = 3;
    assert_eq!(batches(&unknown).collect::<Vec<_>>(), vec![Err(RecordError::Magic(3))]);
}

#[test]
fn corrupt_lengths_are_errors() {
    let mut b = empty_batch(0, 0, 0, 0, 0);
    b[8..12].copy_from_slice(&(-1i32).to_be_bytes());
    assert!(matches!(batches(&b).next(), Some(Err(RecordError::Corrupt(_)))));
    b[8..12].copy_from_slice(&30i32.to_be_bytes()); // below the v2 header
    assert!(matches!(batches(&b).next(), Some(Err(RecordError::Corrupt(_)))));
    b[8..12].copy_from_slice(&i32::MAX.to_be_bytes()); // announces more than there is
    assert!(matches!(batches(&b).next(), Some(Ok(Item::Partial(_)))));

    // records count larger than the bytes can hold
    let mut r = build_batch(&sample_records(3, 5), &BuildOptions::default());
    r[57..61].copy_from_slice(&1_000_000i32.to_be_bytes());
    let r = resealed(r);
    let batch = parse_one(&r);
    assert!(matches!(records(&batch), Err(RecordError::Corrupt(_))));
    assert!(matches!(tag_batch(&batch, TAG_HEADER, b"1", None), Err(RecordError::Corrupt(_))));
    // fewer records declared than present
    let mut r = r.clone();
    r[57..61].copy_from_slice(&2i32.to_be_bytes());
    let r = resealed(r);
    let batch = parse_one(&r);
    assert!(matches!(records(&batch), Err(RecordError::Corrupt(_))));
    assert!(matches!(tag_batch(&batch, TAG_HEADER, b"1", None), Err(RecordError::Corrupt(_))));
    // unknown codec
    let mut u = build_batch(&sample_records(3, 5), &BuildOptions::default());
    u[22] |= 0x07;
    assert!(matches!(records(&parse_one(&u)), Err(RecordError::Compression(_))));
}

#[test]
fn decompression_bombs_are_refused() {
    // One zstd frame of a record holding 8 MiB of zeros is a few hundred
    // bytes; 40 frames in a row (the decoder reads concatenated frames)
    // decompress to 320 MiB, past MAX_UNCOMPRESSED_BYTES.
    let rec = RecordData { value: Some(vec![0u8; 8 << 20]), ..Default::default() };
    let one = build_batch(&[rec], &opts(Compression::Zstd, SnappyFraming::Xerial));
    let frame = &one[BATCH_OVERHEAD..];
    assert!(frame.len() < 4096);
    let mut b = one[..BATCH_OVERHEAD].to_vec();
    b[57..61].copy_from_slice(&40i32.to_be_bytes());
    for _ in 0..40 {
        b.extend_from_slice(frame);
    }
    let len = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    let b = resealed(b);
    let batch = parse_one(&b);
    assert!(matches!(records(&batch), Err(RecordError::TooLarge { .. })));
    assert!(matches!(tag_batch(&batch, TAG_HEADER, b"1", None), Err(RecordError::TooLarge { .. })));
    // The first record alone is fine: only it is decompressed.
    assert_eq!(first_record_header(&batch, TAG_HEADER).unwrap(), None);

    // A record claiming a length beyond the limit is refused before reading.
    let mut huge = vec![0xfe, 0xff, 0xff, 0xff, 0x0f]; // varint i32::MAX
    huge.extend_from_slice(&[0; 16]);
    let mut h = empty_batch(0, 0, 0, 0, 0);
    h[57..61].copy_from_slice(&1i32.to_be_bytes());
    h.extend_from_slice(&huge);
    let len = (h.len() - 12) as i32;
    h[8..12].copy_from_slice(&len.to_be_bytes());
    let hb = parse_one(&h);
    assert!(first_record_header(&hb, TAG_HEADER).is_err());
    assert!(records(&hb).is_err());
}

// ---------------------------------------------------------------------------
// Hostile input: nothing panics

struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Run everything on `bytes`; only panics matter (the test harness reports
/// them), results are ignored.
fn exercise(bytes: &[u8]) {
    let _ = first_magic(bytes);
    for item in batches(bytes) {
        if let Ok(Item::Batch(b)) = item {
            let _ = verify_crc(&b);
            let _ = b.header.compression();
            let _ = b.header.next_offset();
            let _ = records(&b);
            let _ = first_record_header(&b, TAG_HEADER);
            if let Ok(t) = tag_batch(&b, TAG_HEADER, b"7", Some((1, 1))) {
                let tb = Batch::parse(&t).expect("tag_batch output parses");
                assert!(verify_crc(&tb));
            }
        }
    }
}

#[test]
fn fuzz_random_bytes_truncations_and_flips_never_panic() {
    let mut rng = XorShift(0x1234_5678_9abc_def1);
    for _ in 0..3000 {
        let n = rng.below(200);
        let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
        exercise(&bytes);
        // Random bytes behind a plausible header.
        let mut b = empty_batch(0, 3, 0, 0, 0);
        b[22] = rng.below(8) as u8;
        b[57..61].copy_from_slice(&(rng.below(5) as i32).to_be_bytes());
        b.extend_from_slice(&bytes);
        let len = (b.len() - 12) as i32;
        b[8..12].copy_from_slice(&len.to_be_bytes());
        exercise(&b);
    }
    let mut valid = Vec::new();
    for (codec, framing) in all_codecs() {
        valid.push(build_batch(&sample_records(6, 40), &opts(codec, framing)));
    }
    for dir in ["confluent_lz4.bin", "kafkapython_snappy.bin", "kafkapython_lz4.bin", "confluent_zstd.bin"] {
        valid.push(std::fs::read(golden_dir().join(dir)).unwrap());
    }
    for v in &valid {
        for _ in 0..1500 {
            let mut m = v.clone();
            match rng.below(4) {
                0 => m.truncate(rng.below(m.len())),
                1 => {
                    for _ in 0..1 + rng.below(4) {
                        let i = rng.below(m.len());
                        m[i] ^= 1 << rng.below(8);
                    }
                }
                2 => {
                    // Flip a bit in the records section only: the framing
                    // stays valid and the codecs and record parser go deep
                    // (none of them looks at the CRC first).
                    let i = BATCH_OVERHEAD + rng.below(m.len() - BATCH_OVERHEAD);
                    m[i] ^= 1 << rng.below(8);
                }
                _ => {
                    let i = rng.below(m.len());
                    m[i] = rng.next() as u8;
                    m.truncate(m.len() - rng.below(m.len() - i));
                    let len = m.len().saturating_sub(12) as i32;
                    if m.len() >= 12 {
                        m[8..12].copy_from_slice(&len.to_be_bytes());
                    }
                }
            }
            exercise(&m);
        }
    }
}

// ---------------------------------------------------------------------------
// Real client bytes

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/batches")
}

/// Key, value and headers of a record.
type Kvh = (Option<Vec<u8>>, Option<Vec<u8>>, Vec<(String, Option<Vec<u8>>)>);

/// The records capture_batches.py produces.
fn captured_records(large: bool) -> Vec<Kvh> {
    let first = if large { vec![b'L'; 100 * 1024] } else { b"first value ".repeat(8) };
    let h = |k: &str, v: &[u8]| (k.to_string(), Some(v.to_vec()));
    vec![
        (Some(b"key-0".to_vec()), Some(first), vec![h("h1", b"v1"), h("h2", b"")]),
        (None, Some(b"second value ".repeat(8)), vec![h("only", b"header")]),
        (Some(b"key-2".to_vec()), None, vec![]),
        (Some(b"key-3".to_vec()), Some(b"fourth value ".repeat(8)), vec![h("h1", b"again")]),
    ]
}

fn golden_files() -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(golden_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .map(|p| (p.file_stem().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect();
    v.sort();
    v
}

#[test]
fn real_client_batches_parse_decode_and_tag() {
    let files = golden_files();
    let clients = files.iter().filter(|(n, _)| !n.starts_with("variant_")).count();
    assert_eq!(clients, 18, "2 clients x (5 codecs + 4 large)");
    for (name, bytes) in &files {
        let codec_name = name.split('_').nth(1).unwrap();
        let large = name.ends_with("_large") || name.starts_with("variant_");
        let mut decoded = Vec::new();
        for item in batches(bytes) {
            let Item::Batch(batch) = item.unwrap_or_else(|e| panic!("{name}: {e}")) else {
                panic!("{name}: partial batch")
            };
            check_crc(&batch).unwrap_or_else(|e| panic!("{name}: {e}"));
            let codec = batch.header.compression().unwrap();
            assert_eq!(codec.name(), codec_name, "{name}");
            let recs = records(&batch).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(recs.len(), batch.header.records_count as usize);
            assert_eq!(first_record_header(&batch, TAG_HEADER).unwrap(), None, "{name}");
            let first_h1 = recs[0].headers.iter().rev().find(|(k, _)| k == "h1").and_then(|(_, v)| v.clone());
            assert_eq!(first_record_header(&batch, "h1").unwrap(), first_h1, "{name}");

            let tagged =
                tag_batch(&batch, TAG_HEADER, b"42", Some((77, 3))).unwrap_or_else(|e| panic!("{name}: tag: {e}"));
            let t = parse_one(&tagged);
            check_crc(&t).unwrap();
            assert_eq!(t.header.compression().unwrap(), codec);
            assert_eq!(snappy_framing(&t), snappy_framing(&batch), "{name}");
            assert_eq!((t.header.producer_id, t.header.producer_epoch), (77, 3));
            assert_eq!(t.header.base_sequence, batch.header.base_sequence);
            assert_eq!(t.header.last_offset_delta, batch.header.last_offset_delta);
            assert_eq!(t.header.base_timestamp, batch.header.base_timestamp);
            assert_eq!(t.header.max_timestamp, batch.header.max_timestamp);
            assert_eq!(records(&t).unwrap(), with_tag(recs.clone(), b"42"), "{name}");
            assert_eq!(first_record_header(&t, TAG_HEADER).unwrap(), Some(b"42".to_vec()), "{name}");
            decoded.extend(recs);
        }
        let want = captured_records(large);
        let got: Vec<_> = decoded.into_iter().map(|r| (r.key, r.value, r.headers)).collect();
        assert_eq!(got, want, "{name}: the records the client produced");
    }
}

#[test]
fn snappy_framing_of_real_clients() {
    // librdkafka writes a raw snappy block, kafka-python (like the Java
    // client) xerial framing; tagging keeps each.
    let f = |n: &str| std::fs::read(golden_dir().join(n)).unwrap();
    let c = f("confluent_snappy.bin");
    assert_eq!(snappy_framing(&parse_one(&c)), Some(SnappyFraming::Raw));
    let k = f("kafkapython_snappy.bin");
    assert_eq!(snappy_framing(&parse_one(&k)), Some(SnappyFraming::Xerial));
}

/// With KPR_TAGGED_OUT=dir, write each golden batch tagged (kpr.vp = its
/// file name) for tests/golden/check_tagged_with_clients.py, which feeds
/// them to a broker and reads them back with real consumers.
#[test]
fn write_tagged_batches_for_client_check() {
    let Some(dir) = std::env::var_os("KPR_TAGGED_OUT") else { return };
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in golden_files() {
        let mut out = Vec::new();
        for item in batches(&bytes) {
            let Ok(Item::Batch(b)) = item else { panic!("{name}") };
            // Producer id -1: the checking broker never issued the
            // idempotent ids kafka-python's batches carry.
            out.extend(tag_batch(&b, TAG_HEADER, name.as_bytes(), Some((-1, -1))).unwrap());
        }
        std::fs::write(PathBuf::from(&dir).join(format!("{name}.bin")), out).unwrap();
    }
}

// ---------------------------------------------------------------------------
// Property: tagging then classifying is lossless and exclusive

/// One produced batch: codec, number of records, the VP it is tagged for
/// (None: a k = 0 VP, forwarded untagged), and whether its records already
/// carry a stale tag (mirrored data).
#[derive(Debug, Clone)]
struct Produced {
    codec: (Compression, SnappyFraming),
    count: usize,
    vp: Option<u32>,
    stale_tag: bool,
    value_len: usize,
}

fn produced() -> impl Strategy<Value = Produced> {
    (0usize..6, 1usize..25, prop::option::of(8u32..1000), any::<bool>(), 0usize..300).prop_map(
        |(c, count, vp, stale_tag, value_len)| Produced {
            codec: all_codecs()[c],
            count,
            vp,
            stale_tag: stale_tag && vp.is_some(),
            value_len,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn tagging_then_classifying_puts_each_record_in_exactly_one_vp(plan in prop::collection::vec(produced(), 1..12)) {
        const DEFAULT_VP: u32 = 3; // the PP's own VP (k = 0)
        let mut log = Vec::new();
        let mut offset = 0i64;
        let mut want: BTreeMap<u64, u32> = BTreeMap::new();
        let mut id = 0u64;
        for p in &plan {
            let recs: Vec<RecordData> = (0..p.count)
                .map(|i| {
                    id += 1;
                    want.insert(id, p.vp.unwrap_or(DEFAULT_VP));
                    let mut headers = vec![];
                    if p.stale_tag {
                        headers.push((TAG_HEADER.to_string(), Some(b"5".to_vec())));
                    }
                    let mut value = id.to_be_bytes().to_vec();
                    value.extend(value_bytes(id, p.value_len));
                    RecordData { value: Some(value), headers, offset_delta: i as i32, timestamp_delta: i as i64, ..Default::default() }
                })
                .collect();
            let mut o = opts(p.codec.0, p.codec.1);
            o.base_offset = offset;
            let built = build_batch(&recs, &o);
            let batch = match p.vp {
                Some(vp) => tag_batch(&parse_one(&built), TAG_HEADER, vp.to_string().as_bytes(), None).unwrap(),
                None => built,
            };
            offset += p.count as i64;
            log.extend(batch);
        }

        // Classify as the fetch path does: by the first record's tag only.
        let mut got: BTreeMap<u64, u32> = BTreeMap::new();
        let mut next_offset = 0;
        for item in batches(&log) {
            let Item::Batch(b) = item.unwrap() else { panic!("partial") };
            prop_assert!(verify_crc(&b));
            prop_assert_eq!(b.header.base_offset, next_offset);
            next_offset = b.header.next_offset();
            let vp = match first_record_header(&b, TAG_HEADER).unwrap() {
                Some(v) => std::str::from_utf8(&v).unwrap().parse::<u32>().unwrap(),
                None => DEFAULT_VP,
            };
            for r in records(&b).unwrap() {
                let rid = u64::from_be_bytes(r.value.unwrap()[..8].try_into().unwrap());
                // Every record of the batch carries the batch's tag last.
                let last = r.headers.iter().rev().find(|(k, _)| k == TAG_HEADER).map(|(_, v)| v.clone().unwrap());
                prop_assert_eq!(last.map(|v| String::from_utf8(v).unwrap().parse::<u32>().unwrap()).unwrap_or(DEFAULT_VP), vp);
                prop_assert!(got.insert(rid, vp).is_none(), "record {} classified twice", rid);
            }
        }
        prop_assert_eq!(next_offset, offset);
        prop_assert_eq!(got, want);
    }
}
