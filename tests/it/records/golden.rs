//! Golden bytes written out field by field from the spec, and CRC-32C checked against a bitwise one.

use super::*;

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
